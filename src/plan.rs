//! Choosing the backup and the WAL range that reach a target.
//!
//! Planning is a pure function of the catalog and the request: no I/O, so
//! `pitr plan` shows exactly what `pitr restore` will do, and the rules are
//! tested exhaustively over synthetic catalogs.

use chrono::{DateTime, FixedOffset};

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::timelines::{TimelineError, TimelinePath};
use crate::wal::{Lsn, TimelineId, WalSegment};

/// Which timeline to follow (`--timeline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline in the archive (PostgreSQL's default too).
    #[default]
    Latest,
    /// The timeline of the chosen backup.
    Current,
    Id(TimelineId),
}

impl std::str::FromStr for TimelineChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<TimelineChoice, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            number => number
                .parse::<u32>()
                .ok()
                .and_then(TimelineId::new)
                .map(TimelineChoice::Id)
                .ok_or_else(|| {
                    format!(
                        "`{text}` is not a timeline: use `latest`, `current` or a number such as 2"
                    )
                }),
        }
    }
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub target: Target,
    /// False with `--exclusive`: stop just before the target.
    pub inclusive: bool,
    /// `--backup ID`: use this backup instead of choosing.
    pub backup_id: Option<String>,
    pub timeline: TimelineChoice,
}

/// The WAL a restore reads, from the backup's start to the stop point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub first: WalSegment,
    pub last: WalSegment,
    pub segments: u64,
    /// Bytes to read: archived files as stored, plus the backup's own WAL.
    pub bytes: u64,
    /// How many of the segments come with the backup itself.
    pub from_backup: u64,
}

/// The span of time a restore can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverableWindow {
    /// The earliest backup's consistent point.
    pub from: DateTime<FixedOffset>,
    /// When the newest segment of the timeline was archived: every commit
    /// in the archive is older than this.
    pub until: Option<DateTime<FixedOffset>>,
}

impl std::fmt::Display for RecoverableWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.until {
            Some(until) => write!(f, "{} to about {}", utc(self.from), utc(until)),
            None => write!(f, "from {}", utc(self.from)),
        }
    }
}

fn utc(time: DateTime<FixedOffset>) -> String {
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// Everything a restore will do, decided before anything is written.
#[derive(Clone, Debug)]
pub struct Plan {
    pub backup: Backup,
    /// Why this backup, in one sentence.
    pub reason: String,
    /// The timeline recovery follows (always written as a number).
    pub timeline: TimelineId,
    /// The timelines from the first to `timeline`, with switch points.
    pub path: TimelinePath,
    pub target: Target,
    pub inclusive: bool,
    pub wal: WalRange,
    pub window: RecoverableWindow,
    /// Facts the user should know (approximations, choices made for them).
    pub notes: Vec<String>,
}

/// Why no plan can reach the target.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("there is no usable base backup in the repository{}", unreadable_suffix(*.unreadable))]
    NoBackups { unreadable: usize },
    #[error("there is no backup `{id}` in the repository (backups: {known})")]
    UnknownBackup { id: String, known: String },
    #[error("the target {target} is before the earliest consistent point of any backup; the recoverable window is {window}")]
    TargetBeforeWindow {
        target: String,
        window: RecoverableWindow,
    },
    #[error("the target {target} is after the end of the WAL archive: the newest segment on timeline {timeline}, `{segment}`, was archived at {archived}, so no archived commit is that late; the recoverable window is {window}. Use `--to latest` to restore everything archived")]
    TargetAfterArchive {
        target: String,
        timeline: TimelineId,
        segment: WalSegment,
        archived: String,
        window: RecoverableWindow,
    },
    #[error("backup `{id}` cannot reach the target {target}: {why}")]
    BackupCannotReach {
        id: String,
        target: String,
        why: String,
    },
    #[error("WAL segment `{missing}` is missing from the archive: the restore needs every segment from `{first}` to `{last}`{}", after_note(.last_present))]
    MissingWal {
        missing: WalSegment,
        first: WalSegment,
        last: WalSegment,
        last_present: Option<WalSegment>,
    },
    #[error("cannot follow timeline {timeline}: {source}")]
    Timeline {
        timeline: TimelineId,
        source: TimelineError,
    },
    #[error("cannot follow timeline {timeline}: its history file is unreadable: {reason}")]
    BrokenHistory {
        timeline: TimelineId,
        reason: String,
    },
    #[error("no backup lies on the path to timeline {timeline} ({path}){}", list_reasons(.reasons))]
    NoBackupOnPath {
        timeline: TimelineId,
        path: TimelinePath,
        reasons: Vec<String>,
    },
    #[error("backup `{id}` cannot be used for timeline {timeline} ({path}): {why}")]
    BackupNotOnPath {
        id: String,
        timeline: TimelineId,
        path: TimelinePath,
        why: String,
    },
    #[error("backup `{id}` belongs to another cluster (system identifier {backup}) than the WAL archive ({archive})")]
    SystemMismatch {
        id: String,
        backup: u64,
        archive: u64,
    },
}

fn unreadable_suffix(count: usize) -> String {
    match count {
        0 => String::new(),
        n => format!(" ({n} backup directories could not be understood; see `pitr list`)"),
    }
}

fn list_reasons(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    }
}

fn after_note(last_present: &Option<WalSegment>) -> String {
    match last_present {
        Some(segment) => format!(" (the archive resumes at `{segment}`)"),
        None => String::new(),
    }
}

/// Chooses the timeline path, the backup and the WAL range for `request`.
pub fn make_plan(
    backups: &[Backup],
    unreadable: usize,
    archive: &WalArchive,
    request: &PlanRequest,
    local: &jiff::tz::TimeZone,
) -> Result<Plan, PlanError> {
    if backups.is_empty() {
        return Err(PlanError::NoBackups { unreadable });
    }
    let target_text = request.target.describe(local);
    let mut notes = Vec::new();

    // With `current` the backup decides the timeline; otherwise the timeline
    // decides which backups can be used.
    let path = match request.timeline {
        TimelineChoice::Current => None,
        TimelineChoice::Latest => {
            let newest = archive
                .timelines
                .newest()
                .into_iter()
                .chain(backups.iter().map(|b| b.timeline))
                .max()
                .unwrap_or(TimelineId::FIRST);
            Some(timeline_path(archive, newest)?)
        }
        TimelineChoice::Id(timeline) => Some(timeline_path(archive, timeline)?),
    };
    let eligible: Vec<Backup> = match &path {
        Some(path) => backups
            .iter()
            .filter(|b| on_path(b, path).is_ok())
            .cloned()
            .collect(),
        None => backups.to_vec(),
    };

    let (backup, reason) =
        match &request.backup_id {
            Some(id) => {
                let backup = backups.iter().find(|b| &b.id == id).ok_or_else(|| {
                    PlanError::UnknownBackup {
                        id: id.clone(),
                        known: backups
                            .iter()
                            .map(|b| b.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })?;
                if let Some(path) = &path {
                    on_path(backup, path).map_err(|why| PlanError::BackupNotOnPath {
                        id: backup.id.clone(),
                        timeline: path.target(),
                        path: path.clone(),
                        why,
                    })?;
                }
                check_backup_reaches(backup, &request.target, &target_text)?;
                (backup.clone(), "chosen with --backup".to_string())
            }
            None => {
                if eligible.is_empty() {
                    let path = path
                        .clone()
                        .unwrap_or_else(|| TimelinePath { steps: Vec::new() });
                    return Err(PlanError::NoBackupOnPath {
                        timeline: path.target(),
                        reasons: backups
                            .iter()
                            .filter_map(|b| {
                                on_path(b, &path)
                                    .err()
                                    .map(|why| format!("`{}` {why}", b.id))
                            })
                            .collect(),
                        path,
                    });
                }
                let (backup, reason) = choose_backup(
                    &eligible,
                    archive,
                    &request.target,
                    &target_text,
                    &mut notes,
                )?;
                (backup.clone(), reason)
            }
        };
    let path = match path {
        Some(path) => path,
        None => timeline_path(archive, backup.timeline)?,
    };
    let timeline = path.target();

    if let (Some(backup_id), Some(archive_id)) =
        (backup.system_identifier, archive.system_identifier)
    {
        if backup_id != archive_id {
            return Err(PlanError::SystemMismatch {
                id: backup.id.clone(),
                backup: backup_id,
                archive: archive_id,
            });
        }
    }

    let window = window_on_path(&eligible_or(&eligible, &backup), archive, &path);
    let end = path_end(archive, &path);
    if let (Target::Time(time), Some(end)) = (&request.target, end) {
        let archived = archive_time(archive, end);
        if archived.is_some_and(|archived| *time >= archived) {
            return Err(PlanError::TargetAfterArchive {
                target: target_text,
                timeline,
                segment: end,
                archived: archived.map(utc).unwrap_or_default(),
                window,
            });
        }
    }
    let wal = wal_range(&backup, archive, &path, end, &request.target)?;
    if matches!(
        request.target,
        Target::Time(_) | Target::Xid(_) | Target::Name(_)
    ) {
        notes.push(format!(
            "the WAL is checked to the end of timeline {timeline} in the archive, since the stop point is only found while replaying"
        ));
    }
    if backup.stop_time_source == crate::repo::backup::StopTimeSource::ManifestWritten {
        notes.push(format!(
            "the archive has no backup history file for backup `{}`; its end time is taken from when its backup_manifest was written",
            backup.id
        ));
    }
    if let Target::Time(time) = &request.target {
        notes.extend(other_branches(backups, archive, &path, *time));
    }
    Ok(Plan {
        backup,
        reason,
        timeline,
        path,
        target: request.target.clone(),
        inclusive: request.inclusive,
        wal,
        window,
        notes,
    })
}

fn eligible_or(eligible: &[Backup], chosen: &Backup) -> Vec<Backup> {
    if eligible.is_empty() {
        vec![chosen.clone()]
    } else {
        eligible.to_vec()
    }
}

fn timeline_path(archive: &WalArchive, timeline: TimelineId) -> Result<TimelinePath, PlanError> {
    if let Some(reason) = archive.broken_histories.get(&timeline) {
        return Err(PlanError::BrokenHistory {
            timeline,
            reason: reason.clone(),
        });
    }
    archive
        .timelines
        .path(timeline)
        .map_err(|source| PlanError::Timeline { timeline, source })
}

/// A backup can start a restore along `path` if it was taken on a timeline
/// of the path and ended before the path left that timeline.
fn on_path(backup: &Backup, path: &TimelinePath) -> Result<(), String> {
    match path.step(backup.timeline) {
        None => Err(format!(
            "was taken on timeline {}, which is not on the path",
            backup.timeline
        )),
        Some(step) => match step.ends {
            Some(switch) if backup.stop_lsn > switch => Err(format!(
                "ends at {} on timeline {}, after the path branches off it at {switch}",
                backup.stop_lsn, backup.timeline
            )),
            _ => Ok(()),
        },
    }
}

fn choose_backup<'a>(
    backups: &'a [Backup],
    archive: &WalArchive,
    target: &Target,
    target_text: &str,
    notes: &mut Vec<String>,
) -> Result<(&'a Backup, String), PlanError> {
    let newest = || backups.iter().max_by_key(|b| (b.stop_lsn, b.stop_time));
    match target {
        Target::Time(time) => {
            let chosen = backups
                .iter()
                .filter(|b| b.consistent_by() <= *time)
                .max_by_key(|b| (b.consistent_by(), b.stop_lsn));
            match chosen {
                Some(backup) => Ok((
                    backup,
                    format!(
                        "the newest backup consistent before the target (it ended at {})",
                        utc(backup.stop_time)
                    ),
                )),
                None => {
                    let timeline = backups
                        .iter()
                        .map(|b| b.timeline)
                        .max()
                        .unwrap_or(TimelineId::FIRST);
                    Err(PlanError::TargetBeforeWindow {
                        target: target_text.to_string(),
                        window: window(backups, archive, timeline),
                    })
                }
            }
        }
        Target::Lsn(lsn) => {
            let chosen = backups
                .iter()
                .filter(|b| b.stop_lsn <= *lsn)
                .max_by_key(|b| b.stop_lsn);
            match chosen {
                Some(backup) => Ok((
                    backup,
                    format!(
                        "the newest backup that ends before {lsn} (it ends at {})",
                        backup.stop_lsn
                    ),
                )),
                None => {
                    // Name the backup that ends first, whose stop LSN the
                    // message quotes.
                    let earliest = backups
                        .iter()
                        .min_by_key(|b| b.stop_lsn)
                        .unwrap_or(&backups[0]);
                    Err(PlanError::BackupCannotReach {
                        id: earliest.id.clone(),
                        target: target_text.to_string(),
                        why: format!(
                            "every backup ends after it (the earliest ends at {})",
                            earliest.stop_lsn
                        ),
                    })
                }
            }
        }
        Target::Latest | Target::Immediate => newest()
            .map(|b| (b, "the newest backup".to_string()))
            .ok_or(PlanError::NoBackups { unreadable: 0 }),
        Target::Xid(_) | Target::Name(_) => {
            // Where a transaction or restore point lies is only known by
            // reading the WAL; the oldest backup reaches it wherever it is.
            let oldest = backups.iter().min_by_key(|b| (b.stop_lsn, b.stop_time));
            notes.push(
                "transaction and restore point targets are located while replaying, so the oldest backup is used; pass --backup ID to start from a newer one".to_string(),
            );
            oldest
                .map(|b| {
                    (
                        b,
                        "the oldest backup, which reaches the target wherever it lies".to_string(),
                    )
                })
                .ok_or(PlanError::NoBackups { unreadable: 0 })
        }
    }
}

fn check_backup_reaches(
    backup: &Backup,
    target: &Target,
    target_text: &str,
) -> Result<(), PlanError> {
    let why = match target {
        Target::Time(time) if backup.consistent_by() > *time => Some(format!(
            "it is consistent only from {} on",
            utc(backup.consistent_by())
        )),
        Target::Lsn(lsn) if backup.stop_lsn > *lsn => {
            Some(format!("it ends at {}, after the target", backup.stop_lsn))
        }
        _ => None,
    };
    match why {
        Some(why) => Err(PlanError::BackupCannotReach {
            id: backup.id.clone(),
            target: target_text.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The newest segment the archive holds along `path`: the last segment of
/// the newest timeline that has one in the part of the WAL the path reads
/// from it.
pub fn path_end(archive: &WalArchive, path: &TimelinePath) -> Option<WalSegment> {
    let size = archive.segment_size;
    for (index, step) in path.steps.iter().enumerate().rev() {
        let Some(last) = archive.last_segment(step.timeline) else {
            continue;
        };
        let begin = WalSegment::containing(step.timeline, step.begins, size).number;
        // The path reads this timeline's files only until the next timeline
        // begins (the segment of a switch point is the child's).
        let end = path.steps.get(index + 1).map(|next| {
            WalSegment::containing(next.timeline, next.begins, size)
                .number
                .saturating_sub(1)
        });
        let capped = match end {
            Some(end) if last.number > end => WalSegment {
                number: end,
                ..last
            },
            _ => last,
        };
        if capped.number >= begin && archive.segment(capped).is_some() {
            return Some(capped);
        }
    }
    None
}

/// The WAL from the backup's start up to where the target is reached,
/// checked segment by segment along the timeline path.
fn wal_range(
    backup: &Backup,
    archive: &WalArchive,
    path: &TimelinePath,
    end: Option<WalSegment>,
    target: &Target,
) -> Result<WalRange, PlanError> {
    let size = archive.segment_size;
    let first = path.segment(
        WalSegment::containing(backup.timeline, backup.start_lsn, size).number,
        size,
    );
    let stop = WalSegment::containing_end(backup.timeline, backup.stop_lsn, size);
    let included_last = backup
        .included_wal
        .iter()
        .filter_map(|name| WalSegment::parse(name, size))
        .map(|segment| segment.number)
        .max();
    let last_number = match target {
        Target::Lsn(lsn) => {
            WalSegment::containing(backup.timeline, (*lsn).max(backup.stop_lsn), size).number
        }
        Target::Immediate => stop.number,
        Target::Time(_) | Target::Xid(_) | Target::Name(_) | Target::Latest => end
            .map(|segment| segment.number)
            .into_iter()
            .chain(included_last)
            .max()
            .unwrap_or(stop.number)
            .max(stop.number),
    };
    // Replay always reads the segment holding the start LSN, even for a
    // (damaged) label whose stop equals its start on a segment boundary.
    let last = path.segment(last_number.max(first.number), size);
    let mut bytes = 0;
    let mut from_backup = 0;
    for number in first.number..=last.number {
        let segment = path.segment(number, size);
        if let Some(file) = archive.segment(segment) {
            bytes += file.stored_bytes;
        } else if backup.included_wal.contains(&segment.file_name()) {
            bytes += size.bytes();
            from_backup += 1;
        } else {
            let resumes = (number + 1..=last.number)
                .map(|later| path.segment(later, size))
                .find(|later| archive.segment(*later).is_some());
            return Err(PlanError::MissingWal {
                missing: segment,
                first,
                last,
                last_present: resumes,
            });
        }
    }
    Ok(WalRange {
        first,
        last,
        segments: last.number - first.number + 1,
        bytes,
        from_backup,
    })
}

fn archive_time(archive: &WalArchive, segment: WalSegment) -> Option<DateTime<FixedOffset>> {
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
    RecoverableWindow { from, until }
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
    let until = path_end(archive, path).and_then(|segment| archive_time(archive, segment));
    RecoverableWindow { from, until }
}

/// Other timelines on which the same moment can be restored, with
/// different contents: the user should know there was a choice.
fn other_branches(
    backups: &[Backup],
    archive: &WalArchive,
    chosen: &TimelinePath,
    time: DateTime<FixedOffset>,
) -> Vec<String> {
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
            path.steps.get(diverge),
            path.steps.get(diverge + 1),
            chosen.steps.get(diverge),
            chosen.steps.get(diverge + 1),
        ]
        .into_iter()
        .flatten()
        .filter(|step| step.begins != Lsn::ZERO)
        .filter_map(|step| archive.history_time(step.timeline))
        .map(|t| DateTime::<chrono::Utc>::from(t).fixed_offset())
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
