//! Choosing the backup and the WAL range that reach a target.
//!
//! Planning is a pure function of the catalog and the request: the
//! repository's listing and, when given, the archive's decoded WAL facts
//! (read through [`WalSource`]); nothing is written, so `pitr plan` shows
//! exactly what `pitr restore` will do, and the rules are tested
//! exhaustively over synthetic catalogs.
//!
//! - this module: the request, the plan, and [`make_plan`], which puts the
//!   steps together;
//! - [`choose`]: the timeline path and the backup (from file-level facts,
//!   or exactly from the WAL);
//! - [`window`]: the recoverable window, where a backup's window starts,
//!   and other timelines that reach the same moment;
//! - [`wal_range`]: the segments a restore reads, checked one by one;
//! - [`error`]: why no plan can reach the target.

mod choose;
mod error;
mod wal_range;
mod window;

pub use error::PlanError;
pub use wal_range::WalRange;
pub use window::{
    exact_window, precise_utc, restorable_from, window, window_on_path, RecoverableWindow,
};

use choose::{check_backup_reaches, choose_backup, choose_with_wal, on_path, timeline_path};
use wal_range::wal_range;
use window::{archive_time, other_branches, utc};

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::facts::{first_corrupt, Span, StopEvent, WalSource};
use crate::wal::timelines::TimelinePath;
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
    /// The record recovery stops at (before or after it), when known.
    pub stop: Option<StopEvent>,
    /// The start and end of the last valid record on the path, when known.
    pub wal_end: Option<(Lsn, Lsn)>,
    /// Facts the user should know (approximations, choices made for them).
    pub notes: Vec<String>,
}

/// Chooses the timeline path, the backup and the WAL range for `request`.
///
/// With `wal` (the archive's decoded facts), consistent points, the end of
/// the archive and the record the target stops at are exact; without it,
/// only file-level facts are used (backup stop times, archive file times).
pub fn make_plan(
    backups: &[Backup],
    unreadable: usize,
    archive: &WalArchive,
    request: &PlanRequest,
    local: &jiff::tz::TimeZone,
    wal: Option<&dyn WalSource>,
) -> Result<Plan, PlanError> {
    if backups.is_empty() {
        return Err(PlanError::NoBackups { unreadable });
    }
    let target_text = request.target.describe(local);
    let mut notes = Vec::new();

    // With `current` the backup decides the timeline; otherwise the timeline
    // decides which backups can be used.
    let chosen_path = match request.timeline {
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
    let forced = match &request.backup_id {
        Some(id) => Some(backups.iter().find(|b| &b.id == id).ok_or_else(|| {
            PlanError::UnknownBackup {
                id: id.clone(),
                known: backups
                    .iter()
                    .map(|b| b.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?),
        None => None,
    };
    let path = match (chosen_path, forced) {
        (Some(path), _) => path,
        (None, Some(backup)) => timeline_path(archive, backup.timeline)?,
        (None, None) => {
            // `current`: the backup a file-level plan picks decides.
            let (backup, _) = choose_backup(
                backups,
                archive,
                &request.target,
                &target_text,
                &mut Vec::new(),
            )?;
            timeline_path(archive, backup.timeline)?
        }
    };
    let eligible: Vec<Backup> = backups
        .iter()
        .filter(|b| on_path(b, &path).is_ok())
        .cloned()
        .collect();
    if let Some(backup) = forced {
        on_path(backup, &path).map_err(|why| PlanError::BackupNotOnPath {
            id: backup.id.clone(),
            timeline: path.target(),
            path: path.clone(),
            why,
        })?;
    }
    if eligible.is_empty() {
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
    let candidates: Vec<Backup> = match forced {
        Some(backup) => vec![backup.clone()],
        None => eligible.clone(),
    };
    let timeline = path.target();
    let end = archive.last_segment_on(&path);

    let precise = match wal {
        Some(wal) => Some(choose_with_wal(
            wal,
            archive,
            &path,
            &candidates,
            &eligible,
            request,
            &target_text,
            forced.is_some(),
        )?),
        None => None,
    };
    let (backup, reason, window, stop, wal_end) = match precise {
        Some(precise) => {
            notes.extend(precise.notes);
            (
                precise.backup,
                precise.reason,
                precise.window,
                precise.stop,
                precise.wal_end,
            )
        }
        None => {
            let (backup, reason) = match forced {
                Some(backup) => {
                    check_backup_reaches(backup, &request.target, &target_text)?;
                    (backup.clone(), "chosen with --backup".to_string())
                }
                None => {
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
            let window = window_on_path(&eligible, archive, &path);
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
            if matches!(
                request.target,
                Target::Time(_) | Target::Xid(_) | Target::Name(_)
            ) {
                notes.push(format!(
                    "the WAL is checked to the end of timeline {timeline} in the archive, since the stop point is only found while replaying"
                ));
            }
            (backup, reason, window, None, None)
        }
    };

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

    let stop_segment = stop.as_ref().map(|event| {
        path.segment(
            WalSegment::containing_end(timeline, event.end, archive.segment_size).number,
            archive.segment_size,
        )
    });
    let wal_range = wal_range(&backup, archive, &path, end, &request.target, stop_segment)?;
    if let Some(wal) = wal {
        let span = Span {
            first: wal_range.first.number,
            last: wal_range.last.number,
        };
        if let Some((segment, problem)) = first_corrupt(wal, &path, span).map_err(PlanError::Wal)? {
            return Err(PlanError::CorruptWal { segment, problem });
        }
    }
    if backup.stop_time_source == crate::repo::backup::StopTimeSource::ManifestWritten
        && wal.is_none()
    {
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
        wal: wal_range,
        window,
        stop,
        wal_end,
        notes,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod precise_tests;
