//! Which databases a one-database restore may leave sparse (issue 18,
//! point 2), decided before anything is written, never guessed.
//!
//! A database's relation files can be staged as sparse files of their
//! size (see [`crate::stage::sparse`]) only when replay never reads one of
//! their pages as data. That holds when full-page writes were on over the
//! whole replayed range: the first change of every page after the
//! backup's checkpoint then carries the page's image
//! (scripts/excluded-databases-experiment.sh: exact on 13, 15 and 18 with
//! it on, `WAL contains references to invalid pages` with it off). So:
//!
//! - the databases are read from the backup's own `pg_database`
//!   (`global/1262`); those created by initdb (OID below 16384:
//!   template0, template1, postgres), the chosen one and `postgres` (pitr
//!   connects there) are written in full, and so is `global/` and
//!   everything outside the databases' directories;
//! - the WAL the restore replays is read from the backup's start to the
//!   end of the last planned segment (a superset of what is replayed):
//!   every checkpoint record in it must say `fullPageWrites` and no
//!   `XLOG_FPW_CHANGE` may turn it off; otherwise everything is written;
//! - a `CREATE DATABASE` that copies another database's files
//!   (`XLOG_DBASE_CREATE`, the FILE_COPY strategy: always on 13 and 14,
//!   by choice from 15) reads its source during replay: that source is
//!   written in full.
//!
//! A database renamed within the range is caught after the restore: the
//! extract checks that the database it dumps was written in full.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::plan::Plan;
use crate::progress::{human_bytes, Reporter};
use crate::repo::archive::WalArchive;
use crate::repo::Catalog;
use crate::stage::member::read_backup_file;
use crate::wal::decode::{StartAt, WalDecoder};
use crate::wal::WalSegment;

/// OIDs below this are assigned by initdb (`FirstNormalObjectId`).
const FIRST_NORMAL_OID: u32 = 16384;
/// rmgr ids (src/include/access/rmgrlist.h).
const RM_XLOG_ID: u8 = 0;
const RM_DBASE_ID: u8 = 4;
/// XLOG record kinds (src/include/catalog/pg_control.h, 12–18).
const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
const XLOG_FPW_CHANGE: u8 = 0x80;
/// `CheckPoint.fullPageWrites`: after redo (8), ThisTimeLineID (4) and
/// PrevTimeLineID (4), the same in 12–18.
const CHECKPOINT_FPW_AT: usize = 16;
/// `XLOG_DBASE_CREATE` (13–14) and `XLOG_DBASE_CREATE_FILE_COPY` (15–18)
/// are both 0x00, with `xl_dbase_create_rec` / `xl_dbase_create_file_copy_rec`:
/// db_id, tablespace_id, src_db_id, src_tablespace_id
/// (src/include/commands/dbcommands_xlog.h). The WAL_LOG strategy (0x10)
/// logs every page it copies as an image, reading nothing at replay.
const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
const DBASE_CREATE_SRC_DB_AT: usize = 8;

/// What a one-database restore writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything, and why.
    Whole(String),
    /// The databases left sparse (OID, name), and what was seen on the way.
    Sparse {
        databases: BTreeMap<u32, String>,
        notes: Vec<String>,
    },
}

/// `pitr restore --only-database NAME` (extract's scratch copies): which
/// other databases can be left sparse, read from the backup's catalog
/// and the WAL to replay, and said on the way.
pub fn for_restore(
    name: &str,
    catalog: &Catalog,
    plan: &Plan,
    combined: bool,
    reporter: &Reporter,
) -> Scope {
    if combined {
        return Scope::Whole(
            "an incremental backup's chain is rebuilt whole by pg_combinebackup".to_string(),
        );
    }
    let databases = backup_databases(catalog, plan, reporter);
    let scope = decide(databases.as_deref(), name, || {
        read_wal_facts(plan, &catalog.archive)
    });
    scope.report(name, reporter);
    scope
}

/// The databases of the backup, from its own `pg_database`
/// (`global/1262`); None when it cannot be read (a warning says why).
pub fn backup_databases(
    catalog: &Catalog,
    plan: &Plan,
    reporter: &Reporter,
) -> Option<Vec<(u32, String)>> {
    let heap = read_backup_file(
        catalog.stores.backups.as_ref(),
        &plan.backup,
        "global/1262",
        reporter,
    );
    match heap {
        Ok(Some(heap)) => databases_in_catalog(&heap),
        Ok(None) => None,
        Err(error) => {
            reporter.warn(format!(
                "cannot read the backup's database catalog: {error:#}"
            ));
            None
        }
    }
}

impl Scope {
    /// The OIDs of the databases left sparse (none for `Whole`).
    pub fn sparse_oids(&self) -> Vec<u32> {
        match self {
            Scope::Whole(_) => Vec::new(),
            Scope::Sparse { databases, .. } => databases.keys().copied().collect(),
        }
    }

    /// Says the decision on the way.
    pub fn report(&self, name: &str, reporter: &Reporter) {
        match self {
            Scope::Whole(why) => reporter.step(format!(
                "only database {name} is needed, but every database is written: {why}"
            )),
            Scope::Sparse { databases, notes } => {
                reporter.step(format!(
                    "only database {name} is needed: {} left as sparse files (full_page_writes was on over the WAL to replay)",
                    databases.values().cloned().collect::<Vec<_>>().join(", ")
                ));
                for note in notes {
                    reporter.detail(note.clone());
                }
            }
        }
    }

    /// The restore summary's line for `--only-database NAME`, with the
    /// files and bytes staged sparse.
    pub fn summary(&self, name: &str, (files, bytes): (u64, u64)) -> String {
        match self {
            Scope::Whole(why) => format!("only {name} needed, but all written: {why}"),
            Scope::Sparse { databases, .. } => format!(
                "only {name} needed; {} left as {files} sparse files ({} not written)",
                databases.values().cloned().collect::<Vec<_>>().join(", "),
                human_bytes(bytes)
            ),
        }
    }

    /// The same in the restore's `--json` summary.
    pub fn json(&self, name: &str, (files, bytes): (u64, u64)) -> Value {
        match self {
            Scope::Whole(why) => json!({
                "database": name,
                "sparse_databases": [],
                "sparse_files": 0,
                "sparse_bytes": 0,
                "all_written_because": why,
            }),
            Scope::Sparse { databases, notes } => json!({
                "database": name,
                "sparse_databases": databases.iter().map(|(oid, name)| json!({"oid": oid, "name": name})).collect::<Vec<_>>(),
                "sparse_files": files,
                "sparse_bytes": bytes,
                "all_written_because": null,
                "notes": notes,
            }),
        }
    }
}

/// The databases of a `pg_database` heap file (`global/1262`): every
/// tuple's OID and name, dead versions included (a database renamed or
/// dropped and made again appears under each of its names). None when the
/// file is not a heap file of pages this understands.
pub fn databases_in_catalog(heap: &[u8]) -> Option<Vec<(u32, String)>> {
    let u16_at = |page: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(page.get(at..at + 2)?.try_into().ok()?))
    };
    // pd_pagesize_version: the page size in its high byte's bits.
    let page_size = usize::from(u16_at(heap, 18)? & 0xFF00);
    if !page_size.is_power_of_two() || page_size < 1024 || heap.len() % page_size != 0 {
        return None;
    }
    let mut found = Vec::new();
    for page in heap.chunks(page_size) {
        let lower = usize::from(u16_at(page, 12)?);
        if lower == 0 {
            continue; // a new, empty page
        }
        if !(24..=page_size).contains(&lower) {
            return None;
        }
        for slot in (24..lower).step_by(4) {
            let item = u32::from_le_bytes(page.get(slot..slot + 4)?.try_into().ok()?);
            let (offset, flags, len) = (
                (item & 0x7FFF) as usize,
                (item >> 15) & 0x3,
                (item >> 17) as usize,
            );
            // LP_NORMAL: a tuple with storage.
            if flags != 1 || len < 24 {
                continue;
            }
            let tuple = page.get(offset..offset + len)?;
            let data = tuple.get(usize::from(*tuple.get(22)?)..)?;
            // pg_database begins with oid, then datname (NameData, 64 bytes).
            let oid = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
            let name = data.get(4..68)?;
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            found.push((oid, String::from_utf8_lossy(name).into_owned()));
        }
    }
    Some(found)
}

/// The databases that may be left sparse when only `chosen` is needed:
/// those the catalog names (OID 16384 or more) under no name but other
/// ones, `postgres` kept too.
pub fn candidates(catalog: &[(u32, String)], chosen: &str) -> BTreeMap<u32, String> {
    let needed = |name: &str| name == chosen || name == "postgres";
    let kept: Vec<u32> = catalog
        .iter()
        .filter(|(_, name)| needed(name))
        .map(|(oid, _)| *oid)
        .collect();
    catalog
        .iter()
        .filter(|(oid, _)| *oid >= FIRST_NORMAL_OID && !kept.contains(oid))
        .map(|(oid, name)| (*oid, name.clone()))
        .collect()
}

/// What the WAL says about leaving databases sparse.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WalFacts {
    /// Why full-page writes cannot be shown on over the range, if so.
    pub not_proven: Option<String>,
    /// Databases copied by a file-copy `CREATE DATABASE` (their OIDs).
    pub copied_from: Vec<u32>,
}

/// Reads one record's part in the decision.
fn note_record(
    facts: &mut WalFacts,
    saw_checkpoint: &mut bool,
    rmid: u8,
    info: u8,
    data: &[u8],
    at: impl Fn() -> String,
) {
    let kind = info & 0xF0;
    match (rmid, kind) {
        (RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE) => {
            match data.get(CHECKPOINT_FPW_AT) {
                Some(0) => {
                    facts.not_proven.get_or_insert_with(|| {
                        format!("full_page_writes was off at the checkpoint at {}", at())
                    });
                }
                Some(_) => *saw_checkpoint = true,
                None => {
                    facts.not_proven.get_or_insert_with(|| {
                        format!("the checkpoint record at {} is too short", at())
                    });
                }
            }
        }
        (RM_XLOG_ID, XLOG_FPW_CHANGE) if data.first() != Some(&1) => {
            facts
                .not_proven
                .get_or_insert_with(|| format!("full_page_writes was turned off at {}", at()));
        }
        (RM_DBASE_ID, XLOG_DBASE_CREATE_FILE_COPY) => {
            if let Some(bytes) = data.get(DBASE_CREATE_SRC_DB_AT..DBASE_CREATE_SRC_DB_AT + 4) {
                let source = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                facts.copied_from.push(source);
            }
        }
        _ => {}
    }
}

/// Reads the WAL the plan replays (from the backup's start to the end of
/// its last segment) from the archive.
pub fn read_wal_facts(plan: &Plan, archive: &WalArchive) -> WalFacts {
    let mut facts = WalFacts::default();
    let mut saw_checkpoint = false;
    let size = archive.segment_size;
    let start = plan.backup.start_lsn;
    let (first, last) = (plan.wal.first.number, plan.wal.last.number);
    let mut number = first;
    while number <= last && facts.not_proven.is_none() {
        let timeline = plan.path.timeline_for_segment(number, size);
        let mut decoder = WalDecoder::new(StartAt::SegmentStart);
        while number <= last && plan.path.timeline_for_segment(number, size) == timeline {
            let segment = WalSegment {
                timeline,
                number,
                size,
            };
            number += 1;
            let Some(file) = archive.segment(segment) else {
                facts.not_proven = Some(format!(
                    "segment {segment} is not in the archive, so the WAL could not be read"
                ));
                return facts;
            };
            let reader = match file.open() {
                Ok(reader) => reader,
                Err(error) => {
                    facts.not_proven = Some(format!("cannot read `{}`: {error}", file.describe()));
                    return facts;
                }
            };
            let mut records = decoder.segment(segment, reader);
            while let Some(item) = records.next_record() {
                let record = match item {
                    Ok(record) => record,
                    Err(error) => {
                        facts.not_proven = Some(format!("the WAL could not be read: {error}"));
                        return facts;
                    }
                };
                if record.start < start {
                    continue;
                }
                let at = record.start;
                note_record(
                    &mut facts,
                    &mut saw_checkpoint,
                    record.rmid,
                    record.info,
                    record.main_data,
                    || at.to_string(),
                );
            }
        }
    }
    if facts.not_proven.is_none() && !saw_checkpoint {
        facts.not_proven = Some("the backup's checkpoint record was not found in the WAL".into());
    }
    facts
}

/// The decision, from the backup's catalog and the WAL's facts.
pub fn decide(
    catalog: Option<&[(u32, String)]>,
    chosen: &str,
    facts: impl FnOnce() -> WalFacts,
) -> Scope {
    let Some(catalog) = catalog else {
        return Scope::Whole(
            "the backup's database catalog (global/1262) could not be read".to_string(),
        );
    };
    let mut databases = candidates(catalog, chosen);
    if databases.is_empty() {
        return Scope::Whole("the backup holds no other database".to_string());
    }
    let facts = facts();
    if let Some(why) = facts.not_proven {
        return Scope::Whole(why);
    }
    let mut notes = Vec::new();
    for source in facts.copied_from {
        if let Some(name) = databases.remove(&source) {
            notes.push(format!(
                "database {name} is written in full: a CREATE DATABASE in the WAL copies its files"
            ));
        }
    }
    if databases.is_empty() {
        return Scope::Whole(
            "every other database is the source of a CREATE DATABASE in the WAL".to_string(),
        );
    }
    Scope::Sparse { databases, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap page as PostgreSQL lays one out: header, line pointers,
    /// tuples from the end.
    fn page(tuples: &[(u32, &str)], dead: &[usize]) -> Vec<u8> {
        let mut page = vec![0u8; 8192];
        page[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        let mut upper = 8192;
        for (n, (oid, name)) in tuples.iter().enumerate() {
            let mut tuple = vec![0u8; 24];
            tuple[22] = 24;
            tuple.extend_from_slice(&oid.to_le_bytes());
            let mut datname = [0u8; 64];
            datname[..name.len()].copy_from_slice(name.as_bytes());
            tuple.extend_from_slice(&datname);
            tuple.extend_from_slice(&[0u8; 40]);
            upper -= tuple.len();
            page[upper..upper + tuple.len()].copy_from_slice(&tuple);
            let flags = if dead.contains(&n) { 3 } else { 1 };
            let item = (upper as u32) | (flags << 15) | ((tuple.len() as u32) << 17);
            page[24 + 4 * n..28 + 4 * n].copy_from_slice(&item.to_le_bytes());
        }
        let lower = 24 + 4 * tuples.len();
        page[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        page[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        page
    }

    #[test]
    fn the_catalog_names_every_version_of_every_database() {
        let mut heap = page(
            &[
                (1, "template1"),
                (4, "template0"),
                (5, "postgres"),
                (16390, "shop"),
                (16391, "big"),
                (16392, "gone"),
            ],
            &[5],
        );
        heap.extend(vec![0u8; 8192]);
        heap.extend(page(&[(16391, "huge")], &[]));
        let found = databases_in_catalog(&heap).unwrap();
        assert_eq!(
            found,
            [
                (1, "template1".to_string()),
                (4, "template0".to_string()),
                (5, "postgres".to_string()),
                (16390, "shop".to_string()),
                (16391, "big".to_string()),
                (16391, "huge".to_string()),
            ]
        );
        let sparse = candidates(&found, "shop");
        assert_eq!(sparse.keys().copied().collect::<Vec<_>>(), [16391]);
        // Every name of a database keeps it whole.
        assert!(candidates(&found, "huge").contains_key(&16390));
        assert!(!candidates(&found, "huge").contains_key(&16391));
        assert!(databases_in_catalog(b"not a heap").is_none());
    }

    fn facts_of(records: &[(u8, u8, Vec<u8>)]) -> WalFacts {
        let mut facts = WalFacts::default();
        let mut saw = false;
        for (rmid, info, data) in records {
            note_record(&mut facts, &mut saw, *rmid, *info, data, || {
                "0/1".to_string()
            });
        }
        facts
    }

    fn checkpoint(fpw: u8) -> (u8, u8, Vec<u8>) {
        let mut data = vec![0u8; 88];
        data[CHECKPOINT_FPW_AT] = fpw;
        (RM_XLOG_ID, XLOG_CHECKPOINT_ONLINE, data)
    }

    #[test]
    fn full_page_writes_must_stay_on_and_copied_sources_are_kept() {
        let catalog = vec![
            (5, "postgres".to_string()),
            (16390, "shop".to_string()),
            (16391, "big".to_string()),
            (16392, "tpl".to_string()),
        ];
        let on = || facts_of(&[checkpoint(1)]);
        assert!(
            matches!(decide(Some(&catalog), "shop", on), Scope::Sparse { ref databases, .. } if databases.len() == 2)
        );
        let off = || facts_of(&[checkpoint(0)]);
        assert!(
            matches!(decide(Some(&catalog), "shop", off), Scope::Whole(why) if why.contains("off at the checkpoint"))
        );
        let turned_off = || facts_of(&[checkpoint(1), (RM_XLOG_ID, XLOG_FPW_CHANGE, vec![0])]);
        assert!(
            matches!(decide(Some(&catalog), "shop", turned_off), Scope::Whole(why) if why.contains("turned off"))
        );
        // CREATE DATABASE ... TEMPLATE tpl (file copy): tpl is written.
        let mut create = vec![0u8; 16];
        create[0..4].copy_from_slice(&16400u32.to_le_bytes());
        create[8..12].copy_from_slice(&16392u32.to_le_bytes());
        let copied = || facts_of(&[checkpoint(1), (RM_DBASE_ID, 0x00, create)]);
        let Scope::Sparse { databases, notes } = decide(Some(&catalog), "shop", copied) else {
            panic!("expected sparse");
        };
        assert_eq!(databases.keys().copied().collect::<Vec<_>>(), [16391]);
        assert!(notes[0].contains("tpl"), "{notes:?}");
        assert!(matches!(decide(None, "shop", on), Scope::Whole(_)));
        let alone = vec![(5, "postgres".to_string()), (16390, "shop".to_string())];
        assert!(
            matches!(decide(Some(&alone), "shop", on), Scope::Whole(why) if why.contains("no other"))
        );
    }
}
