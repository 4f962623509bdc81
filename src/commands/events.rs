//! `pitr events`: what happened in the WAL — commits, aborts, restore
//! points, the WAL each transaction wrote, the relations it wrote and
//! dropped — so that a DBA can find the `DROP TABLE` and restore to just
//! before it.
//!
//! Choices: the size of a transaction is the WAL it wrote (see
//! [`crate::wal::activity`]); relations are shown as their files
//! (`base/<db>/<relfilenode>`), because the only catalog at hand, a live
//! cluster's, no longer knows a dropped table and gives a rewritten one's
//! new file, so names from it would mislead precisely in an incident;
//! files numbered below `FirstNormalObjectId` (initdb's catalogs) are
//! counted apart. Events before the oldest backup started are hidden
//! unless `--all`: no restore can reach them, and initdb's transactions
//! (hundreds of ordinary commits with normal xids, 3 onwards: bootstrap
//! mode itself logs none) are always among them.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};

use crate::cli::{EventKindFilter, EventsArgs};
use crate::error::{Failure, FailureKind, OrFail};
use crate::plan::TimelineChoice;
use crate::progress::{count, human_bytes, Reporter};
use crate::repo::wal_source::ArchiveWal;
use crate::target::{parse_target, Target};
use crate::wal::activity::{is_catalog, Activity, ActivityTracker};
use crate::wal::decode::{Event, EventKind, RelFileLocator, StartAt, WalDecoder};
use crate::wal::facts::{time_stop, Span};
use crate::wal::xid::{FullXid, Xid};
use crate::wal::{Lsn, TimelineId, WalSegment};

/// One end of the range: any `--to` form.
#[derive(Clone, Debug)]
enum Bound {
    Open,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(Xid),
    Name(String),
}

impl Bound {
    fn parse(text: Option<&str>) -> Result<Bound, Failure> {
        let Some(text) = text else {
            return Ok(Bound::Open);
        };
        let target = parse_target(text, &jiff::Zoned::now()).or_fail(FailureKind::Usage)?;
        Ok(match target {
            Target::Time(time) => Bound::Time(time.with_timezone(&Utc)),
            Target::Lsn(lsn) => Bound::Lsn(lsn),
            Target::Xid(xid) => Bound::Xid(xid),
            Target::Name(name) => Bound::Name(name),
            Target::Latest | Target::Immediate => Bound::Open,
        })
    }

    /// True when `event` is at or past this bound. `full_xid` is the
    /// 64-bit ID of the transaction it ends, when the checkpoints read so
    /// far tell its epoch.
    fn reached_by(&self, event: &Event, full_xid: Option<FullXid>) -> bool {
        match self {
            Bound::Open => true,
            Bound::Time(time) => event_time(event).is_some_and(|t| t >= *time),
            Bound::Lsn(lsn) => event.start >= *lsn,
            Bound::Xid(xid) => match (xid_of(event), full_xid) {
                (Some(_), Some(full)) => xid.is(full),
                // No checkpoint read yet: the 32-bit xid, as PostgreSQL.
                (Some(found), None) => found == xid.xid(),
                (None, _) => false,
            },
            Bound::Name(name) => {
                matches!(&event.kind, EventKind::RestorePoint { name: n, .. } if n == name)
            }
        }
    }

    /// True when `event` lies beyond this upper bound.
    fn passed_by(&self, event: &Event) -> bool {
        match self {
            Bound::Open | Bound::Xid(_) | Bound::Name(_) => false,
            Bound::Time(time) => event_time(event).is_some_and(|t| t > *time),
            Bound::Lsn(lsn) => event.start > *lsn,
        }
    }
}

fn event_time(event: &Event) -> Option<DateTime<Utc>> {
    match &event.kind {
        EventKind::Commit(t) | EventKind::Abort(t) => Some(t.time),
        EventKind::RestorePoint { time, .. } => Some(*time),
        _ => None,
    }
}

fn xid_of(event: &Event) -> Option<u32> {
    match &event.kind {
        EventKind::Commit(t) | EventKind::Abort(t) => Some(t.xid.value()),
        _ => None,
    }
}

/// A relation as a path under the data directory, as pg_waldump prints it.
fn relation_path(rel: &RelFileLocator) -> String {
    match rel.tablespace {
        1663 => format!("base/{}/{}", rel.database, rel.relation),
        1664 => format!("global/{}", rel.relation),
        spc => format!("pg_tblspc/{spc}/{}/{}", rel.database, rel.relation),
    }
}

/// An event with what its transaction wrote (none for restore points).
struct Shown {
    event: Event,
    activity: Option<Activity>,
}

impl Shown {
    fn is_commit(&self) -> bool {
        matches!(self.event.kind, EventKind::Commit(_))
    }

    /// A commit that removed relation files.
    fn is_drop(&self) -> bool {
        matches!(&self.event.kind, EventKind::Commit(t) if !t.dropped_relations.is_empty())
    }

    fn wal_bytes(&self) -> u64 {
        self.activity.as_ref().map_or(0, |a| a.wal_bytes)
    }
}

/// `--kind` and `--min-size`.
struct Filter {
    kinds: Vec<EventKindFilter>,
    min_size: Option<u64>,
}

impl Filter {
    fn keeps(&self, shown: &Shown) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|kind| match kind {
                EventKindFilter::Drop => shown.is_drop(),
                EventKindFilter::Commit => shown.is_commit(),
                EventKindFilter::Abort => matches!(shown.event.kind, EventKind::Abort(_)),
                EventKindFilter::RestorePoint => {
                    matches!(shown.event.kind, EventKind::RestorePoint { .. })
                }
            });
        // A size selects transactions; a restore point has none.
        let size_ok = match self.min_size {
            None => true,
            Some(min) => shown.activity.is_some() && shown.wal_bytes() >= min,
        };
        kind_ok && size_ok
    }
}

pub fn run(args: &EventsArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let catalog = super::load_catalog(&args.repo, &local)?;
    let from = Bound::parse(args.from.as_deref())?;
    let until = Bound::parse(args.until.as_deref())?;
    let filter = Filter {
        kinds: args.kind.clone(),
        min_size: args.min_size,
    };
    let choice: TimelineChoice = args
        .timeline
        .parse()
        .map_err(|message: String| Failure::msg(FailureKind::Usage, message))?;
    let archive = &catalog.archive;
    let timeline = match choice {
        TimelineChoice::Id(timeline) => timeline,
        TimelineChoice::Latest | TimelineChoice::Current => {
            archive.timelines.newest().unwrap_or(TimelineId::FIRST)
        }
    };
    let path = archive
        .timelines
        .path(timeline)
        .map_err(|error| Failure::new(FailureKind::Usage, error))?;
    let size = archive.segment_size;
    let Some(end) = archive.last_segment_on(&path) else {
        return Err(Failure::msg(
            FailureKind::PlanRefused,
            format!("the archive holds no WAL on timeline {timeline}"),
        ));
    };
    // What no restore can reach: before the oldest backup started.
    let oldest_backup = catalog
        .backups
        .iter()
        .min_by_key(|b| b.start_lsn)
        .filter(|_| !args.all);
    let first = (0..=end.number)
        .find(|n| archive.segment(path.segment(*n, size)).is_some())
        .unwrap_or(end.number);
    // Skip ahead with the segment facts when the range starts at a time.
    let wal = ArchiveWal::new(archive);
    let mut start = first;
    if let Bound::Time(time) = &from {
        let span = Span {
            first,
            last: end.number,
        };
        if let Ok(Some(event)) = time_stop(&wal, &path, span, Lsn::ZERO, *time, false) {
            start = (event.start.value() / size.bytes())
                .saturating_sub(1)
                .max(first);
        }
    }
    wal.save();

    let mut shown = Vec::new();
    let mut hidden = 0usize;
    let mut tracker = ActivityTracker::new();
    let mut active = matches!(from, Bound::Open);
    let mut done = false;
    let mut number = start;
    // The next full xid of the last checkpoint read: the epoch of the
    // transactions that follow.
    let mut next_xid: Option<FullXid> = None;
    // One decoder per timeline run: the decoder follows one timeline.
    while number <= end.number && !done {
        let run_timeline = path.timeline_for_segment(number, size);
        let mut decoder = WalDecoder::new(StartAt::SegmentStart);
        while number <= end.number
            && path.timeline_for_segment(number, size) == run_timeline
            && !done
        {
            let segment = WalSegment {
                timeline: run_timeline,
                number,
                size,
            };
            number += 1;
            let Some(file) = archive.segment(segment) else {
                reporter.warn(format!(
                    "segment {segment} is missing from the archive; events in it are not shown"
                ));
                decoder = WalDecoder::new(StartAt::SegmentStart);
                continue;
            };
            let reader = file.open().map_err(|e| {
                Failure::msg(
                    FailureKind::PlanRefused,
                    format!("cannot open `{}`: {e}", file.describe()),
                )
            })?;
            let mut records = decoder.segment(segment, reader);
            while let Some(item) = records.next_record() {
                let record = match item {
                    Ok(record) => record,
                    Err(error) => {
                        reporter.warn(format!("stopped reading: {error}"));
                        done = true;
                        break;
                    }
                };
                if let Some(Event {
                    kind: EventKind::Checkpoint(checkpoint),
                    ..
                }) = record.event
                {
                    next_xid = Some(checkpoint.next_xid);
                }
                let xid = record.xid.value();
                if xid != 0 {
                    tracker.record(xid, record.total_len, &record.relations());
                }
                let Some(event) = record.event.cloned() else {
                    continue;
                };
                let activity = match &event.kind {
                    EventKind::Commit(end) | EventKind::Abort(end) => Some(tracker.finish(end)),
                    EventKind::RestorePoint { .. } => None,
                    _ => continue,
                };
                let full_xid = next_xid
                    .zip(xid_of(&event))
                    .and_then(|(next, xid)| FullXid::widen(next, xid));
                if !active && from.reached_by(&event, full_xid) {
                    active = true;
                }
                if !active {
                    continue;
                }
                if until.passed_by(&event) {
                    done = true;
                    break;
                }
                let last = until.reached_by(&event, full_xid)
                    && !matches!(until, Bound::Open | Bound::Time(_) | Bound::Lsn(_));
                if oldest_backup.is_some_and(|b| event.start < b.start_lsn) {
                    hidden += 1;
                } else {
                    let item = Shown { event, activity };
                    if filter.keeps(&item) {
                        shown.push(item);
                    }
                }
                if last {
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
    if let (Some(backup), true) = (oldest_backup, hidden > 0) {
        reporter.step(format!(
            "{} before the oldest backup ({}, started at {}) not shown: no restore can reach them, and initdb's transactions are among them; --all shows them",
            count(hidden as u64, "event"),
            backup.id,
            backup.start_lsn
        ));
    }

    if args.per_minute {
        let minutes = per_minute(&shown);
        if json {
            println!(
                "{:#}",
                Value::Array(minutes.iter().map(Minute::json).collect())
            );
        } else {
            println!("{}", minutes_text(&minutes));
        }
    } else if json {
        let items: Vec<Value> = shown.iter().map(event_json).collect();
        println!("{:#}", Value::Array(items));
    } else {
        if shown.is_empty() {
            println!("no events in that range match");
        }
        for item in &shown {
            println!("{}", event_text(item, &local));
        }
    }
    Ok(())
}

/// The events of one minute (UTC), for `--per-minute`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Minute {
    start: DateTime<Utc>,
    commits: u64,
    aborts: u64,
    drops: u64,
    restore_points: u64,
    wal_bytes: u64,
}

impl Minute {
    fn json(&self) -> Value {
        json!({
            "minute": rfc3339(self.start),
            "commits": self.commits,
            "aborts": self.aborts,
            "drops": self.drops,
            "restore_points": self.restore_points,
            "wal_bytes": self.wal_bytes,
        })
    }
}

fn per_minute(shown: &[Shown]) -> Vec<Minute> {
    let mut minutes: BTreeMap<DateTime<Utc>, Minute> = BTreeMap::new();
    for item in shown {
        let Some(time) = event_time(&item.event) else {
            continue;
        };
        let Some(start) = time.with_second(0).and_then(|t| t.with_nanosecond(0)) else {
            continue;
        };
        let minute = minutes.entry(start).or_insert_with(|| Minute {
            start,
            ..Minute::default()
        });
        match &item.event.kind {
            EventKind::Commit(_) => minute.commits += 1,
            EventKind::Abort(_) => minute.aborts += 1,
            _ => minute.restore_points += 1,
        }
        if item.is_drop() {
            minute.drops += 1;
        }
        minute.wal_bytes += item.wal_bytes();
    }
    minutes.into_values().collect()
}

fn minutes_text(minutes: &[Minute]) -> String {
    if minutes.is_empty() {
        return "no events in that range match".to_string();
    }
    let mut lines = vec![format!(
        "{:<16}  {:>7}  {:>6}  {:>5}  {:>14}  {:>11}",
        "minute (UTC)", "commits", "aborts", "drops", "restore points", "WAL written"
    )];
    for m in minutes {
        lines.push(format!(
            "{:<16}  {:>7}  {:>6}  {:>5}  {:>14}  {:>11}",
            m.start.format("%Y-%m-%d %H:%M"),
            m.commits,
            m.aborts,
            m.drops,
            m.restore_points,
            human_bytes(m.wal_bytes)
        ));
    }
    lines.join("\n")
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn event_json(item: &Shown) -> Value {
    let event = &item.event;
    match &event.kind {
        EventKind::Commit(t) | EventKind::Abort(t) => {
            let kind = if matches!(event.kind, EventKind::Commit(_)) {
                "commit"
            } else {
                "abort"
            };
            let mut value = json!({
                "kind": kind,
                "time": rfc3339(t.time),
                "lsn": event.start,
                "xid": t.xid.value(),
            });
            if !t.subtransactions.is_empty() {
                value["subtransactions"] = json!(t
                    .subtransactions
                    .iter()
                    .map(|x| x.value())
                    .collect::<Vec<_>>());
            }
            if !t.dropped_relations.is_empty() {
                value["dropped_relations"] = json!(t
                    .dropped_relations
                    .iter()
                    .map(relation_path)
                    .collect::<Vec<_>>());
            }
            if let Some(activity) = &item.activity {
                value["wal_bytes"] = json!(activity.wal_bytes);
                value["relations_written"] = json!(activity
                    .relations
                    .iter()
                    .map(|r| json!({ "path": relation_path(r), "catalog": is_catalog(r) }))
                    .collect::<Vec<_>>());
            }
            if t.two_phase {
                value["two_phase"] = json!(true);
            }
            value
        }
        EventKind::RestorePoint { name, time } => json!({
            "kind": "restore_point",
            "time": rfc3339(*time),
            "lsn": event.start,
            "name": name,
        }),
        _ => Value::Null,
    }
}

/// `wrote base/5/16390, base/5/16393 and 6 catalog files`: the user's
/// relations by file (at most five), initdb's catalogs counted.
fn written_text(activity: &Activity) -> Option<String> {
    const LISTED: usize = 5;
    let (catalogs, user): (Vec<&RelFileLocator>, Vec<&RelFileLocator>) =
        activity.relations.iter().partition(|r| is_catalog(r));
    let mut parts: Vec<String> = user.iter().take(LISTED).map(|r| relation_path(r)).collect();
    if user.len() > LISTED {
        parts.push(format!("{} more", user.len() - LISTED));
    }
    if !catalogs.is_empty() {
        parts.push(count(catalogs.len() as u64, "catalog file"));
    }
    if parts.is_empty() {
        return None;
    }
    let text = match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.join(""),
    };
    Some(format!("wrote {text}"))
}

fn event_text(item: &Shown, local: &jiff::tz::TimeZone) -> String {
    let event = &item.event;
    let when = |time: DateTime<Utc>| {
        let utc = time.format("%Y-%m-%d %H:%M:%S%.6f UTC");
        // Local time only when it is not UTC itself.
        let local_time = jiff::Timestamp::from_microsecond(time.timestamp_micros())
            .ok()
            .map(|ts| ts.to_zoned(local.clone()))
            .filter(|zoned| zoned.offset() != jiff::tz::Offset::UTC)
            .map(|zoned| format!(" ({})", zoned.strftime("%H:%M:%S%.6f %Z")))
            .unwrap_or_default();
        format!("{utc}{local_time}")
    };
    match &event.kind {
        EventKind::Commit(t) | EventKind::Abort(t) => {
            let commit = matches!(event.kind, EventKind::Commit(_));
            let kind = if commit { "commit" } else { "abort " };
            let mut line = format!(
                "{}  {:>12}  {kind}  xid {}",
                when(t.time),
                event.start.to_string(),
                t.xid
            );
            if t.two_phase {
                line.push_str(" (prepared)");
            }
            if let Some(activity) = &item.activity {
                line.push_str(&format!("  {} of WAL", human_bytes(activity.wal_bytes)));
                if let Some(written) = written_text(activity) {
                    line.push_str(&format!("; {written}"));
                }
            }
            if !t.dropped_relations.is_empty() {
                let dropped: Vec<String> = t.dropped_relations.iter().map(relation_path).collect();
                if commit {
                    line.push_str(&format!("; dropped {}", dropped.join(" ")));
                    line.push_str(&format!(
                        "  → to undo: pitr restore --to xid:{} --exclusive",
                        t.xid
                    ));
                } else {
                    // An abort removes the files its transaction created.
                    line.push_str(&format!("; removed its new {}", dropped.join(" ")));
                }
            }
            line
        }
        EventKind::RestorePoint { name, time } => {
            format!(
                "{}  {:>12}  restore point \"{name}\"",
                when(*time),
                event.start.to_string()
            )
        }
        _ => String::new(),
    }
}
