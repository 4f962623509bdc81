//! Choosing the backup and the WAL range that reach a target.
//!
//! Planning is a pure function of the catalog and the request: no I/O, so
//! `pitr plan` shows exactly what `pitr restore` will do, and the rules are
//! tested exhaustively over synthetic catalogs.

use chrono::{DateTime, FixedOffset};

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::{TimelineId, WalSegment};

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub target: Target,
    /// False with `--exclusive`: stop just before the target.
    pub inclusive: bool,
    /// `--backup ID`: use this backup instead of choosing.
    pub backup_id: Option<String>,
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
    pub timeline: TimelineId,
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

fn after_note(last_present: &Option<WalSegment>) -> String {
    match last_present {
        Some(segment) => format!(" (the archive resumes at `{segment}`)"),
        None => String::new(),
    }
}

/// Chooses the backup and WAL range for `request`.
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
                check_backup_reaches(backup, &request.target, &target_text)?;
                (backup, "chosen with --backup".to_string())
            }
            None => choose_backup(backups, archive, &request.target, &target_text, &mut notes)?,
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

    let timeline = backup.timeline;
    let window = window(backups, archive, timeline);
    if let Target::Time(time) = &request.target {
        if let Some(last) = archive.last_segment(timeline) {
            let archived = archive_time(archive, last);
            if archived.is_some_and(|archived| *time >= archived) {
                return Err(PlanError::TargetAfterArchive {
                    target: target_text,
                    timeline,
                    segment: last,
                    archived: archived.map(utc).unwrap_or_default(),
                    window,
                });
            }
        }
    }
    let wal = wal_range(backup, archive, &request.target)?;
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
    Ok(Plan {
        backup: backup.clone(),
        reason,
        timeline,
        target: request.target.clone(),
        inclusive: request.inclusive,
        wal,
        window,
        notes,
    })
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
                None => Err(PlanError::TargetBeforeWindow {
                    target: target_text.to_string(),
                    window: window(backups, archive, backups[0].timeline),
                }),
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
                    // message quotes: `backups` need not be sorted, so
                    // `backups[0]` may be any of them.
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

/// The WAL from the backup's start up to where the target is reached,
/// checked segment by segment.
fn wal_range(
    backup: &Backup,
    archive: &WalArchive,
    target: &Target,
) -> Result<WalRange, PlanError> {
    let size = archive.segment_size;
    let timeline = backup.timeline;
    let first = WalSegment::containing(timeline, backup.start_lsn, size);
    let stop = WalSegment::containing_end(timeline, backup.stop_lsn, size);
    let included_last = backup
        .included_wal
        .iter()
        .filter_map(|name| WalSegment::parse(name, size))
        .filter(|segment| segment.timeline == timeline)
        .map(|segment| segment.number)
        .max();
    let last_number = match target {
        Target::Lsn(lsn) => {
            WalSegment::containing(timeline, (*lsn).max(backup.stop_lsn), size).number
        }
        Target::Immediate => stop.number,
        Target::Time(_) | Target::Xid(_) | Target::Name(_) | Target::Latest => archive
            .last_segment(timeline)
            .map(|segment| segment.number)
            .into_iter()
            .chain(included_last)
            .max()
            .unwrap_or(stop.number)
            .max(stop.number),
    };
    // Replay always reads the segment holding the start LSN. Without this,
    // a stop LSN equal to the start LSN on a segment boundary (only in
    // hand-made or damaged labels: a real backup ends after its start) gave
    // `last` = `first - 1`, skipped every check and underflowed `segments`.
    let last = WalSegment {
        number: last_number.max(first.number),
        ..first
    };
    let mut bytes = 0;
    let mut from_backup = 0;
    let mut segment = first;
    while segment.number <= last.number {
        if let Some(file) = archive.segment(segment) {
            bytes += file.stored_bytes;
        } else if backup.included_wal.contains(&segment.file_name()) {
            bytes += size.bytes();
            from_backup += 1;
        } else {
            let resumes = (segment.number + 1..=last.number)
                .map(|number| WalSegment { number, ..segment })
                .find(|later| archive.segment(*later).is_some());
            return Err(PlanError::MissingWal {
                missing: segment,
                first,
                last,
                last_present: resumes,
            });
        }
        segment = segment.next();
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
