//! The recoverable window: from the earliest usable backup's consistent
//! point to the end of the archive, as a bound from file times or exactly
//! from decoded WAL, and the other timelines that reach the same moment.

use chrono::{DateTime, FixedOffset};

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::wal::facts::{last_transaction_end, max_transaction_time_before, Span, WalSource};
use crate::wal::timelines::TimelinePath;
use crate::wal::{TimelineId, WalSegment};

use super::choose::on_path;
use super::PlanError;

/// The span of time a restore can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverableWindow {
    /// The earliest backup's consistent point.
    pub from: DateTime<FixedOffset>,
    /// When the newest segment of the timeline was archived: every commit
    /// in the archive is older than this.
    pub until: Option<DateTime<FixedOffset>>,
    /// True when both ends come from decoded WAL (commit times), false
    /// when they are bounds from file times.
    pub exact: bool,
    /// Why `from` is only a bound although the WAL was read: the archive
    /// lacks the segments before the backup that hold its last commit.
    pub from_note: Option<Box<str>>,
}

impl std::fmt::Display for RecoverableWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.until, self.exact) {
            (Some(until), true) => {
                write!(f, "{} to {}", precise_utc(self.from), precise_utc(until))
            }
            (Some(until), false) => write!(f, "{} to about {}", utc(self.from), utc(until)),
            (None, _) => write!(f, "from {}", utc(self.from)),
        }?;
        match &self.from_note {
            Some(note) => write!(f, " ({note})"),
            None => Ok(()),
        }
    }
}

pub(super) fn utc(time: DateTime<FixedOffset>) -> String {
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// `2026-11-23 03:15:40.917311 UTC`: how restorable-from times are shown.
pub fn precise_utc(time: DateTime<FixedOffset>) -> String {
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S%.6f UTC")
        .to_string()
}

pub(super) fn fixed(time: DateTime<chrono::Utc>) -> DateTime<FixedOffset> {
    time.fixed_offset()
}

/// Where a backup's window starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WindowStart {
    pub(super) time: DateTime<FixedOffset>,
    /// Set when `time` is the backup's rounded stop time because the WAL
    /// that would tell the last commit is not in the archive.
    pub(super) fallback: Option<String>,
}

/// The moment from which a backup can restore: the latest commit or abort
/// before its end. A time target before it would stop inside the backup;
/// a target at or after it, up to the backup's end, sees exactly the data
/// at the backup's end, since nothing committed in between (PostgreSQL
/// restores it exactly, stopping at the first commit after the target).
///
/// On a quiet cluster that commit can lie many segments before the backup:
/// the archive is searched backwards for it, segment facts telling cheaply
/// which segments hold no transaction end. Only where a segment on the way
/// is missing does the window fall back to the backup's conservative stop
/// time, and says so.
pub(super) fn consistent_time(
    wal: &dyn WalSource,
    path: &TimelinePath,
    backup: &Backup,
) -> Result<WindowStart, PlanError> {
    let size = wal.segment_size();
    let start = WalSegment::containing(backup.timeline, backup.start_lsn, size).number;
    let stop = WalSegment::containing_end(backup.timeline, backup.stop_lsn, size).number;
    let mut found_in = None;
    for number in (1..=stop).rev() {
        let segment = path.segment(number, size);
        match wal.facts(segment).map_err(PlanError::Wal)? {
            Some(facts) if facts.last_transaction_end.is_some() => {
                let span = Span {
                    first: number,
                    last: number,
                };
                if last_transaction_end(wal, path, span, Some(backup.stop_lsn))
                    .map_err(PlanError::Wal)?
                    .is_some()
                {
                    found_in = Some(number);
                    break;
                }
            }
            Some(_) => {}
            // The backup's own segments may come with the backup only.
            None if number >= start => {}
            None => {
                return Ok(WindowStart {
                    time: backup.consistent_by(),
                    fallback: Some(format!(
                        "backup `{}`'s last commit before its end is not in the archive: WAL segment `{}` is missing, so its window starts at its stop time",
                        backup.id,
                        segment.file_name()
                    )),
                })
            }
        }
    }
    let Some(found_in) = found_in else {
        return Ok(WindowStart {
            time: backup.consistent_by(),
            fallback: Some(format!(
                "the archive holds no commit before backup `{}`'s end, so its window starts at its stop time",
                backup.id
            )),
        });
    };
    // Commit times are stamped before the record is inserted, so they are
    // out of order only among concurrent commits: one segment more covers
    // them.
    let span = Span {
        first: found_in.min(start).saturating_sub(1),
        last: stop,
    };
    let latest =
        max_transaction_time_before(wal, path, span, backup.stop_lsn).map_err(PlanError::Wal)?;
    Ok(WindowStart {
        time: latest.map(fixed).unwrap_or_else(|| backup.consistent_by()),
        fallback: None,
    })
}

/// When `backup` becomes restorable: the earliest time target a restore
/// from it reaches, which is its consistent point as the plan computes it.
/// `pitr backup`, `pitr list` and the plan all show this one value.
pub fn restorable_from(
    wal: &dyn WalSource,
    archive: &WalArchive,
    backup: &Backup,
) -> Result<DateTime<FixedOffset>, PlanError> {
    let path = archive
        .timelines
        .path(backup.timeline)
        .map_err(|source| PlanError::Timeline {
            timeline: backup.timeline,
            source,
        })?;
    consistent_time(wal, &path, backup).map(|start| start.time)
}

pub(super) fn archive_time(
    archive: &WalArchive,
    segment: WalSegment,
) -> Option<DateTime<FixedOffset>> {
    archive
        .segment(segment)
        .map(|file| DateTime::<chrono::Utc>::from(file.modified).fixed_offset())
}

/// From the earliest backup's consistent point to the archive time of the
/// timeline's newest segment.
pub fn window(backups: &[Backup], archive: &WalArchive, timeline: TimelineId) -> RecoverableWindow {
    let from = backups
        .iter()
        .map(|b| b.consistent_by())
        .min()
        .unwrap_or_default();
    let until = archive
        .last_segment(timeline)
        .and_then(|segment| archive_time(archive, segment));
    RecoverableWindow {
        from,
        until,
        exact: false,
        from_note: None,
    }
}

/// The window along a path: from the earliest usable backup to the archive
/// time of the newest segment the path reads.
pub fn window_on_path(
    backups: &[Backup],
    archive: &WalArchive,
    path: &TimelinePath,
) -> RecoverableWindow {
    let from = backups
        .iter()
        .filter(|b| on_path(b, path).is_ok())
        .map(|b| b.consistent_by())
        .min()
        .unwrap_or_default();
    let until = archive
        .last_segment_on(path)
        .and_then(|segment| archive_time(archive, segment));
    RecoverableWindow {
        from,
        until,
        exact: false,
        from_note: None,
    }
}

/// About when step `index` of `path` branched off its parent: no later than
/// the archiving of the parent's segment that holds the switch point (all
/// of the parent's WAL before the switch was written by then), else when the
/// history file was archived.
fn fork_time(
    archive: &WalArchive,
    path: &TimelinePath,
    index: usize,
) -> Option<DateTime<FixedOffset>> {
    let step = path.steps.get(index)?;
    let parent = path.steps.get(index.checked_sub(1)?)?;
    let segment = WalSegment::containing(parent.timeline, step.begins, archive.segment_size);
    archive_time(archive, segment).or_else(|| {
        archive
            .history_time(step.timeline)
            .map(|t| DateTime::<chrono::Utc>::from(t).fixed_offset())
    })
}

/// The exact window along a path: from the earliest usable backup's last
/// commit before its end to the last commit the path's WAL holds.
pub fn exact_window(
    wal: &dyn WalSource,
    archive: &WalArchive,
    path: &TimelinePath,
    backups: &[Backup],
) -> Result<Option<RecoverableWindow>, PlanError> {
    let eligible: Vec<&Backup> = backups
        .iter()
        .filter(|b| on_path(b, path).is_ok())
        .collect();
    let Some(earliest) = eligible.iter().min_by_key(|b| b.stop_lsn) else {
        return Ok(None);
    };
    let size = wal.segment_size();
    let first = WalSegment::containing(earliest.timeline, earliest.start_lsn, size).number;
    let last = archive
        .last_segment_on(path)
        .map(|s| s.number)
        .unwrap_or(first)
        .max(first);
    let until =
        last_transaction_end(wal, path, Span { first, last }, None).map_err(PlanError::Wal)?;
    let start = consistent_time(wal, path, earliest)?;
    Ok(Some(RecoverableWindow {
        from: start.time,
        until: until.map(|e| fixed(e.time)),
        exact: true,
        from_note: start.fallback.map(String::into_boxed_str),
    }))
}

/// Other timelines on which the same moment can be restored, with
/// different contents: the user should know there was a choice.
pub(super) fn other_branches(
    backups: &[Backup],
    archive: &WalArchive,
    chosen: &TimelinePath,
    time: DateTime<FixedOffset>,
) -> Vec<String> {
    let chosen_path = chosen.clone();
    let mut notes = Vec::new();
    for timeline in archive.timelines.timelines() {
        if timeline == chosen.target() {
            continue;
        }
        let Ok(path) = archive.timelines.path(timeline) else {
            continue;
        };
        // Where the two paths part: the first step that differs.
        let diverge = path
            .steps
            .iter()
            .zip(chosen.steps.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(path.steps.len().min(chosen.steps.len()).saturating_sub(1));
        let forked_at = [
            (&path, diverge + 1),
            (&chosen_path, diverge + 1),
            (&path, diverge),
            (&chosen_path, diverge),
        ]
        .into_iter()
        .filter_map(|(p, index)| fork_time(archive, p, index))
        .min();
        let window = window_on_path(backups, archive, &path);
        let reachable = backups
            .iter()
            .any(|b| on_path(b, &path).is_ok() && b.consistent_by() <= time)
            && window.until.is_some_and(|until| time < until)
            && forked_at.is_some_and(|forked| time > forked);
        if reachable {
            notes.push(format!(
                "the target time also exists on timeline {timeline} ({path}), with different contents; pass --timeline {timeline} to follow it"
            ));
        }
    }
    notes
}
