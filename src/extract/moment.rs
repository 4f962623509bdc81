//! Finding the moment for `--before-drop` and `--before-truncate`: reads
//! the archived WAL from where the window's copy was restored from, feeds
//! every record to one [`Lineage`] per table, and returns the committed
//! transactions that dropped (or truncated) a table, in WAL order.
//!
//! The archive is read through the repository's store, like `pitr
//! events`; a segment missing from the archive ends the search (what
//! follows it could not be restored anyway), and is said.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::TableName;
use crate::repo::archive::WalArchive;
use crate::target::Target;
use crate::wal::decode::{Event, EventKind, RelFileLocator, StartAt, WalDecoder};
use crate::wal::lineage::{created_file, ChangeKind, Lineage};
use crate::wal::timelines::TimelinePath;
use crate::wal::{Lsn, WalSegment};

/// What is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looking {
    Drop,
    Truncate,
}

impl Looking {
    fn matches(self, kind: ChangeKind) -> bool {
        matches!(
            (self, kind),
            (Looking::Drop, ChangeKind::Drop) | (Looking::Truncate, ChangeKind::Truncate)
        )
    }

    pub fn noun(self) -> &'static str {
        match self {
            Looking::Drop => "drop",
            Looking::Truncate => "truncate",
        }
    }
}

/// A transaction that dropped or truncated one of the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub table: TableName,
    pub kind: ChangeKind,
    pub xid: u32,
    pub lsn: Lsn,
    pub time: DateTime<Utc>,
    /// The table's files it removed, as paths under the data directory.
    pub removed: Vec<String>,
}

impl Candidate {
    pub fn json(&self) -> Value {
        json!({
            "table": self.table.to_string(),
            "kind": self.kind,
            "xid": self.xid,
            "lsn": self.lsn,
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "removed_files": self.removed,
        })
    }

    pub fn text(&self) -> String {
        format!(
            "{} of {}: transaction {} committed at {} ({}), removed {}",
            match self.kind {
                ChangeKind::Drop => "DROP",
                ChangeKind::Truncate => "TRUNCATE",
                ChangeKind::Rewrite => "rewrite",
            },
            self.table,
            self.xid,
            self.lsn,
            self.time.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
            self.removed.join(" ")
        )
    }
}

/// One candidate per transaction, in WAL order (several tables may go in
/// one DROP).
pub fn distinct_transactions(found: &[Candidate]) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::new();
    for candidate in found {
        if !candidates.iter().any(|c| c.xid == candidate.xid) {
            candidates.push(candidate.clone());
        }
    }
    candidates
}

/// What `--pick` makes of the candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Chosen(Candidate),
    NoneFound,
    /// Several, and no `--pick`.
    Ambiguous,
    /// `--pick N` beyond the list.
    OutOfRange(u32),
}

/// The one candidate, or the one `pick` (from 1) names.
pub fn choose(candidates: &[Candidate], pick: Option<u32>) -> Choice {
    match (candidates, pick) {
        ([], _) => Choice::NoneFound,
        ([only], None) => Choice::Chosen(only.clone()),
        (_, None) => Choice::Ambiguous,
        (_, Some(pick)) => match pick
            .checked_sub(1)
            .and_then(|index| candidates.get(index as usize))
        {
            Some(candidate) => Choice::Chosen(candidate.clone()),
            None => Choice::OutOfRange(pick),
        },
    }
}

/// The candidates numbered as `--pick` counts them, one per line.
pub fn listing(candidates: &[Candidate]) -> String {
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| format!("  {}. {}", i + 1, c.text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The moment found in the WAL, the transactions found, and the one chosen.
pub struct FoundMoment {
    pub candidates: Vec<Candidate>,
    pub chosen: Candidate,
    pub found: Found,
    /// Where the window started, for people.
    pub window: String,
}

/// Where the search starts and ends.
pub struct Search<'a> {
    pub archive: &'a WalArchive,
    pub path: &'a TimelinePath,
    /// A point at or before the window's copy (its backup's start).
    pub start: Lsn,
    pub until: Option<Target>,
    pub looking: Looking,
}

/// What the search found, and how far it read.
pub struct Found {
    pub candidates: Vec<Candidate>,
    /// The other changes of the tables' files met on the way (rewrites,
    /// and truncates when looking for drops), for the report.
    pub followed: Vec<Candidate>,
    pub read_until: Lsn,
    /// Why it stopped before the end of the archive, when it did.
    pub stopped_early: Option<String>,
}

/// A relation file as a path under the data directory (pg_waldump's form).
pub fn relation_path(rel: &RelFileLocator) -> String {
    match rel.tablespace {
        1663 => format!("base/{}/{}", rel.database, rel.relation),
        1664 => format!("global/{}", rel.relation),
        spc => format!("pg_tblspc/{spc}/{}/{}", rel.database, rel.relation),
    }
}

/// Reads the WAL; `tables` pairs each table with its file at the start.
pub fn search(search: &Search, tables: &[(TableName, RelFileLocator)]) -> Found {
    let mut lineages: Vec<(TableName, Lineage)> = tables
        .iter()
        .map(|(name, file)| (name.clone(), Lineage::new(*file)))
        .collect();
    let mut found = Found {
        candidates: Vec::new(),
        followed: Vec::new(),
        read_until: search.start,
        stopped_early: None,
    };
    let archive = search.archive;
    let size = archive.segment_size;
    let Some(end) = archive.last_segment_on(search.path) else {
        found.stopped_early = Some("the archive holds no WAL on this timeline".into());
        return found;
    };
    let mut number = search.start.value() / size.bytes();
    let mut done = false;
    while number <= end.number && !done {
        // One decoder per timeline: a decoder follows one timeline.
        let run_timeline = search.path.timeline_for_segment(number, size);
        let mut decoder = WalDecoder::new(StartAt::SegmentStart);
        while number <= end.number
            && search.path.timeline_for_segment(number, size) == run_timeline
            && !done
        {
            let segment = WalSegment {
                timeline: run_timeline,
                number,
                size,
            };
            number += 1;
            let Some(file) = archive.segment(segment) else {
                found.stopped_early = Some(format!(
                    "segment {segment} is missing from the archive: nothing after it was searched"
                ));
                return found;
            };
            let reader = match file.open() {
                Ok(reader) => reader,
                Err(error) => {
                    found.stopped_early =
                        Some(format!("cannot read `{}`: {error}", file.describe()));
                    return found;
                }
            };
            let mut records = decoder.segment(segment, reader);
            while let Some(item) = records.next_record() {
                let record = match item {
                    Ok(record) => record,
                    Err(error) => {
                        found.stopped_early = Some(format!("stopped reading: {error}"));
                        done = true;
                        break;
                    }
                };
                found.read_until = record.end;
                let xid = record.xid.value();
                if xid != 0 {
                    let creates = created_file(record.rmid, record.info, record.main_data);
                    let writes = record.relations();
                    for (_, lineage) in &mut lineages {
                        lineage.record(xid, creates, &writes);
                    }
                }
                let Some(event) = record.event else {
                    continue;
                };
                if passed(search.until.as_ref(), event) {
                    done = true;
                    break;
                }
                match &event.kind {
                    EventKind::Commit(end) => {
                        for (table, lineage) in &mut lineages {
                            if let Some(change) = lineage.commit(end, event.start) {
                                let candidate = Candidate {
                                    table: table.clone(),
                                    kind: change.kind,
                                    xid: change.xid,
                                    lsn: change.lsn,
                                    time: change.time,
                                    removed: change.removed.iter().map(relation_path).collect(),
                                };
                                if search.looking.matches(change.kind) {
                                    found.candidates.push(candidate);
                                } else {
                                    found.followed.push(candidate);
                                }
                            }
                        }
                    }
                    EventKind::Abort(end) => {
                        for (_, lineage) in &mut lineages {
                            lineage.abort(end);
                        }
                    }
                    _ => {}
                }
                if reached(search.until.as_ref(), event) {
                    done = true;
                    break;
                }
            }
            drop(records);
            if decoder.end_of_wal().is_some() {
                break;
            }
        }
    }
    found
}

/// True when `event` lies beyond `--until` (a time or an LSN).
fn passed(until: Option<&Target>, event: &Event) -> bool {
    match (until, &event.kind) {
        (Some(Target::Lsn(lsn)), _) => event.start > *lsn,
        (Some(Target::Time(time)), EventKind::Commit(end) | EventKind::Abort(end)) => {
            end.time > time.with_timezone(&Utc)
        }
        _ => false,
    }
}

/// True when `event` is `--until` itself (a transaction or a restore
/// point): it is included, and the search ends there.
fn reached(until: Option<&Target>, event: &Event) -> bool {
    match (until, &event.kind) {
        (Some(Target::Xid(xid)), EventKind::Commit(end) | EventKind::Abort(end)) => {
            end.xid.value() == xid.xid()
        }
        (Some(Target::Name(name)), EventKind::RestorePoint { name: found, .. }) => found == name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(xid: u32, table: &str) -> Candidate {
        Candidate {
            table: TableName::parse(table).unwrap(),
            kind: ChangeKind::Drop,
            xid,
            lsn: Lsn::new(u64::from(xid)),
            time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            removed: vec![format!("base/5/{xid}")],
        }
    }

    #[test]
    fn one_moment_per_transaction() {
        let found = [
            candidate(740, "public.a"),
            candidate(740, "public.b"),
            candidate(745, "public.c"),
        ];
        let distinct = distinct_transactions(&found);
        assert_eq!(distinct, [found[0].clone(), found[2].clone()]);
        assert!(listing(&distinct).starts_with("  1. DROP of public.a: transaction 740"));
        assert!(listing(&distinct).contains("\n  2. DROP of public.c: transaction 745"));
    }

    #[test]
    fn picking() {
        let one = [candidate(740, "public.a")];
        let two = [candidate(740, "public.a"), candidate(745, "public.a")];
        assert_eq!(choose(&[], None), Choice::NoneFound);
        assert_eq!(choose(&[], Some(1)), Choice::NoneFound);
        assert_eq!(choose(&one, None), Choice::Chosen(one[0].clone()));
        assert_eq!(choose(&one, Some(1)), Choice::Chosen(one[0].clone()));
        assert_eq!(choose(&one, Some(2)), Choice::OutOfRange(2));
        assert_eq!(choose(&two, None), Choice::Ambiguous);
        assert_eq!(choose(&two, Some(2)), Choice::Chosen(two[1].clone()));
        assert_eq!(choose(&two, Some(3)), Choice::OutOfRange(3));
        assert_eq!(choose(&two, Some(0)), Choice::OutOfRange(0));
    }
}
