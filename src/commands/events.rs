//! `pitr events`: what happened in the WAL — commits, aborts, restore
//! points, and the relations each transaction dropped — so that a DBA can
//! find the `DROP TABLE` and restore to just before it.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::cli::EventsArgs;
use crate::error::{Failure, FailureKind, OrFail};
use crate::plan::{path_end, TimelineChoice};
use crate::progress::Reporter;
use crate::repo::wal_source::ArchiveWal;
use crate::target::{parse_target, Target};
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

pub fn run(args: &EventsArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let catalog = super::load_catalog(&args.repo, &local)?;
    let from = Bound::parse(args.from.as_deref())?;
    let until = Bound::parse(args.until.as_deref())?;
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
    let Some(end) = path_end(archive, &path) else {
        return Err(Failure::msg(
            FailureKind::PlanRefused,
            format!("the archive holds no WAL on timeline {timeline}"),
        ));
    };
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
    drop(wal);

    let mut events = Vec::new();
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
            let reader = file.compression.open(&file.path).map_err(|e| {
                Failure::msg(
                    FailureKind::PlanRefused,
                    format!("cannot open `{}`: {e}", file.path.display()),
                )
            })?;
            for item in decoder.segment(segment, reader) {
                let event = match item {
                    Ok(event) => event,
                    Err(error) => {
                        reporter.warn(format!("stopped reading: {error}"));
                        done = true;
                        break;
                    }
                };
                if let EventKind::Checkpoint(checkpoint) = &event.kind {
                    next_xid = Some(checkpoint.next_xid);
                }
                let full_xid = next_xid
                    .zip(xid_of(&event))
                    .and_then(|(next, xid)| FullXid::widen(next, xid));
                if !matches!(
                    event.kind,
                    EventKind::Commit(_) | EventKind::Abort(_) | EventKind::RestorePoint { .. }
                ) {
                    continue;
                }
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
                events.push(event);
                if last {
                    done = true;
                    break;
                }
            }
            if decoder.end_of_wal().is_some() {
                break;
            }
        }
    }

    if json {
        let items: Vec<Value> = events.iter().map(event_json).collect();
        println!("{:#}", Value::Array(items));
    } else {
        if events.is_empty() {
            println!("no commits, aborts or restore points in that range");
        }
        for event in &events {
            println!("{}", event_text(event, &local));
        }
    }
    Ok(())
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn event_json(event: &Event) -> Value {
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

fn event_text(event: &Event, local: &jiff::tz::TimeZone) -> String {
    let when = |time: DateTime<Utc>| {
        let local_time = jiff::Timestamp::from_microsecond(time.timestamp_micros())
            .map(|ts| {
                ts.to_zoned(local.clone())
                    .strftime("%H:%M:%S%.6f %Z")
                    .to_string()
            })
            .unwrap_or_default();
        format!(
            "{} ({local_time})",
            time.format("%Y-%m-%d %H:%M:%S%.6f UTC")
        )
    };
    match &event.kind {
        EventKind::Commit(t) | EventKind::Abort(t) => {
            let kind = if matches!(event.kind, EventKind::Commit(_)) {
                "commit"
            } else {
                "abort "
            };
            let mut line = format!(
                "{}  {:>12}  {kind}  xid {}",
                when(t.time),
                event.start.to_string(),
                t.xid
            );
            if t.two_phase {
                line.push_str(" (prepared)");
            }
            if !t.dropped_relations.is_empty() {
                let dropped: Vec<String> = t.dropped_relations.iter().map(relation_path).collect();
                line.push_str(&format!("  dropped {}", dropped.join(" ")));
                line.push_str(&format!(
                    "  → to undo: pitr restore --to xid:{} --exclusive",
                    t.xid
                ));
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
