//! Choosing the backup and the WAL range that reach a target.
//!
//! Planning is a pure function of the catalog and the request: no I/O, so
//! `pitr plan` shows exactly what `pitr restore` will do, and the rules are
//! tested exhaustively over synthetic catalogs.

use chrono::{DateTime, FixedOffset};

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::facts::{
    find_restore_point, find_xid, first_corrupt, full_xid_of, last_transaction_end,
    max_transaction_time_before, time_stop, wal_end, FactsError, Span, StopEvent, WalSource,
};
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
    /// The record recovery stops at (before or after it), when known.
    pub stop: Option<StopEvent>,
    /// The start and end of the last valid record on the path, when known.
    pub wal_end: Option<(Lsn, Lsn)>,
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
    #[error("nothing changed after the last commit in the archive on timeline {timeline}, at {last} (LSN {lsn}), and the target {target} is later: `--to latest` restores the same committed data. pitr refuses this target because PostgreSQL cannot stop at a time no later commit reaches: it would replay everything and fail. Recoverable window: {window}")]
    TargetAfterLastCommit {
        target: String,
        last: String,
        lsn: Lsn,
        timeline: TimelineId,
        window: RecoverableWindow,
    },
    #[error("the archived WAL on timeline {timeline} holds no commit or abort, so no time target can be reached; use `--to latest` or `--to immediate`")]
    NoTransactions { timeline: TimelineId },
    #[error("the target {target} cannot be reached on timeline {timeline}: {why}")]
    TargetNotInWal {
        target: String,
        timeline: TimelineId,
        why: String,
    },
    #[error("WAL segment `{segment}`, which the restore needs, is corrupt: {problem}")]
    CorruptWal {
        segment: WalSegment,
        problem: String,
    },
    #[error("{0}")]
    Wal(FactsError),
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

/// What reading the WAL decides: the backup, the exact window, the record
/// the target stops at, and where the archive's valid WAL ends.
struct Precise {
    backup: Backup,
    reason: String,
    window: RecoverableWindow,
    stop: Option<StopEvent>,
    wal_end: Option<(Lsn, Lsn)>,
    notes: Vec<String>,
}

fn fixed(time: DateTime<chrono::Utc>) -> DateTime<FixedOffset> {
    time.fixed_offset()
}

/// Where a backup's window starts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WindowStart {
    time: DateTime<FixedOffset>,
    /// Set when `time` is the backup's rounded stop time because the WAL
    /// that would tell the last commit is not in the archive.
    fallback: Option<String>,
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
fn consistent_time(
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

#[allow(clippy::too_many_arguments)]
fn choose_with_wal(
    wal: &dyn WalSource,
    archive: &WalArchive,
    path: &TimelinePath,
    candidates: &[Backup],
    eligible: &[Backup],
    request: &PlanRequest,
    target_text: &str,
    forced: bool,
) -> Result<Precise, PlanError> {
    let size = wal.segment_size();
    let timeline = path.target();
    let start_of = |b: &Backup| WalSegment::containing(b.timeline, b.start_lsn, size).number;
    let first = eligible.iter().map(start_of).min().unwrap_or(0);
    let last = archive
        .last_segment_on(path)
        .map(|s| s.number)
        .unwrap_or(first)
        .max(first);
    let span = Span { first, last };
    let last_transaction = last_transaction_end(wal, path, span, None).map_err(PlanError::Wal)?;
    let wal_end = wal_end(wal, path, span).map_err(PlanError::Wal)?;
    let earliest = eligible
        .iter()
        .min_by_key(|b| b.stop_lsn)
        .unwrap_or(&candidates[0]);
    let start = consistent_time(wal, path, earliest)?;
    let window = RecoverableWindow {
        from: start.time,
        until: last_transaction.as_ref().map(|e| fixed(e.time)),
        exact: true,
        from_note: start.fallback.map(String::into_boxed_str),
    };
    let mut notes = Vec::new();
    let reason_forced = || "chosen with --backup".to_string();
    let newest_before = |at: Lsn| {
        candidates
            .iter()
            .filter(|b| b.stop_lsn <= at)
            .max_by_key(|b| b.stop_lsn)
            .cloned()
    };
    let mut by_stop: Vec<&Backup> = candidates.iter().collect();
    by_stop.sort_by_key(|b| std::cmp::Reverse(b.stop_lsn));

    // A transaction or restore point found in the WAL: the newest backup
    // consistent before it.
    let located = |found: Option<StopEvent>, not_found: String, what: &str| {
        let found = found.ok_or_else(|| PlanError::TargetNotInWal {
            target: target_text.to_string(),
            timeline,
            why: not_found,
        })?;
        let backup = newest_before(found.start).ok_or_else(|| PlanError::BackupCannotReach {
            id: candidates[0].id.clone(),
            target: target_text.to_string(),
            why: format!("{what} at {}, before the backup is consistent", found.start),
        })?;
        let reason = if forced {
            reason_forced()
        } else {
            format!(
                "the newest backup consistent before {what} at {}",
                found.start
            )
        };
        Ok::<_, PlanError>((backup, reason, Some(found)))
    };
    let (backup, reason, stop) = match &request.target {
        Target::Time(time) => {
            let inclusive = request.inclusive;
            let mut chosen = None;
            for backup in &by_stop {
                let consistent = consistent_time(wal, path, backup)?.time;
                let fits = if inclusive {
                    *time >= consistent
                } else {
                    *time > consistent
                };
                if fits {
                    chosen = Some(((*backup).clone(), consistent));
                    break;
                }
            }
            let Some((backup, consistent)) = chosen else {
                if forced {
                    return Err(PlanError::BackupCannotReach {
                        id: candidates[0].id.clone(),
                        target: target_text.to_string(),
                        why: match consistent_time(wal, path, &candidates[0])? {
                            WindowStart {
                                time,
                                fallback: None,
                            } => format!(
                                "its last commit before it became consistent was at {}",
                                precise_utc(time)
                            ),
                            WindowStart {
                                time,
                                fallback: Some(why),
                            } => {
                                format!("it is consistent only from {} ({why})", precise_utc(time))
                            }
                        },
                    });
                }
                return Err(PlanError::TargetBeforeWindow {
                    target: target_text.to_string(),
                    window,
                });
            };
            let Some(last) = &last_transaction else {
                return Err(PlanError::NoTransactions { timeline });
            };
            let beyond = if inclusive {
                *time >= fixed(last.time)
            } else {
                *time > fixed(last.time)
            };
            if beyond {
                return Err(PlanError::TargetAfterLastCommit {
                    target: target_text.to_string(),
                    last: precise_utc(fixed(last.time)),
                    lsn: last.start,
                    timeline,
                    window,
                });
            }
            let stop = time_stop(
                wal,
                path,
                span,
                backup.stop_lsn,
                time.with_timezone(&chrono::Utc),
                inclusive,
            )
            .map_err(PlanError::Wal)?
            .ok_or_else(|| PlanError::TargetAfterLastCommit {
                target: target_text.to_string(),
                last: precise_utc(fixed(last.time)),
                lsn: last.start,
                timeline,
                window: window.clone(),
            })?;
            let reason = if forced {
                reason_forced()
            } else {
                format!("the newest backup consistent before the target; its last commit before its end was at {}", precise_utc(consistent))
            };
            (backup, reason, Some(stop))
        }
        Target::Xid(xid) => {
            let from = eligible
                .iter()
                .map(|b| b.stop_lsn)
                .min()
                .unwrap_or(Lsn::ZERO);
            let found = find_xid(wal, path, span, from, xid.xid()).map_err(PlanError::Wal)?;
            if let (Some(event), Some(epoch)) = (&found, xid.epoch()) {
                // PostgreSQL stops at the first commit or abort of this
                // 32-bit xid: it must be of the epoch the target names.
                match full_xid_of(wal, path, span.first, event).map_err(PlanError::Wal)? {
                    Some(full) if full.epoch() != epoch => {
                        return Err(PlanError::TargetNotInWal {
                            target: target_text.to_string(),
                            timeline,
                            why: format!(
                                "the first transaction {} in the archived WAL after {from}, where PostgreSQL would stop (it compares 32-bit xids), is {full} of epoch {} (it ends at {}, {}), not of epoch {epoch}: the value comes from another epoch or another cluster. Check it with `pitr events`, or give a time or an lsn: target",
                                xid.xid(),
                                full.epoch(),
                                event.start,
                                precise_utc(fixed(event.time)),
                            ),
                        });
                    }
                    Some(_) => {}
                    None => notes.push(format!(
                        "the epoch of transaction {xid} is not checked: the archive holds no checkpoint record before it on this path"
                    )),
                }
            }
            let why = format!("no commit or abort of transaction {} after {from} in the archived WAL; `pitr events` lists the transactions", xid.xid());
            located(found, why, &format!("transaction {xid} ends"))?
        }
        Target::Name(name) => {
            let from = eligible
                .iter()
                .map(|b| b.start_lsn)
                .min()
                .unwrap_or(Lsn::ZERO);
            let found = find_restore_point(wal, path, span, from, name).map_err(PlanError::Wal)?;
            let why = format!("no restore point named \"{name}\" after {from} in the archived WAL; `pitr events` lists the restore points");
            located(found, why, "the restore point is")?
        }
        Target::Lsn(lsn) => {
            let backup = match newest_before(*lsn) {
                Some(backup) => backup,
                None => {
                    let earliest = candidates
                        .iter()
                        .min_by_key(|b| b.stop_lsn)
                        .unwrap_or(&candidates[0]);
                    return Err(PlanError::BackupCannotReach {
                        id: earliest.id.clone(),
                        target: target_text.to_string(),
                        why: format!(
                            "every backup ends after it (the earliest ends at {})",
                            earliest.stop_lsn
                        ),
                    });
                }
            };
            if let Some((last_start, _)) = wal_end {
                if *lsn > last_start {
                    return Err(PlanError::TargetNotInWal {
                        target: target_text.to_string(),
                        timeline,
                        why: format!(
                            "the archived WAL on this path ends with the record at {last_start}"
                        ),
                    });
                }
            }
            let reason = if forced {
                reason_forced()
            } else {
                format!(
                    "the newest backup that ends before {lsn}; it ends at {}",
                    backup.stop_lsn
                )
            };
            (backup, reason, None)
        }
        Target::Latest | Target::Immediate => {
            let backup = (*by_stop[0]).clone();
            let reason = if forced {
                reason_forced()
            } else {
                "the newest backup".to_string()
            };
            (backup, reason, None)
        }
    };
    Ok(Precise {
        backup,
        reason,
        window,
        stop,
        wal_end,
        notes,
    })
}

/// `2026-11-23 03:15:40.917311 UTC`: how restorable-from times are shown.
pub fn precise_utc(time: DateTime<FixedOffset>) -> String {
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S%.6f UTC")
        .to_string()
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
                        "the newest backup consistent before the target; it ended at {}",
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
                        "the newest backup that ends before {lsn}; it ends at {}",
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

/// The WAL from the backup's start up to where the target is reached,
/// checked segment by segment along the timeline path.
fn wal_range(
    backup: &Backup,
    archive: &WalArchive,
    path: &TimelinePath,
    end: Option<WalSegment>,
    target: &Target,
    stop_at: Option<WalSegment>,
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
        _ if stop_at.is_some() => stop_at
            .map(|s| s.number)
            .unwrap_or(stop.number)
            .max(stop.number),
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
fn other_branches(
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

#[cfg(test)]
mod tests {
    //! The planner over synthetic catalogs: one table row per rule, then a
    //! property over random catalogs.
    //!
    //! The standard catalog, on timeline 1 with 16 MiB segments, segment `n`
    //! archived at 10:00 + `n` minutes (so the newest, 0x18, at 10:24:00):
    //!
    //! | backup | start      | stop       | STOP TIME            | consistent by |
    //! |--------|------------|------------|----------------------|---------------|
    //! | b1     | 0/2000028  | 0/2000138  | 10:02:30 (history)   | 10:02:31      |
    //! | b2     | 0/8000028  | 0/8000138  | 10:08:30 (history)   | 10:08:31      |
    //! | b3     | 0/10000028 | 0/10000138 | 10:16:30 (manifest)  | 10:16:30      |

    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::SystemTime;

    use chrono::{Duration, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::repo::backup::{BackupFormat, StopTimeSource};
    use crate::repo::label::{BackupLabel, LabelTime};
    use crate::wal::{Lsn, SegmentSize};

    const MIB16: SegmentSize = SegmentSize::DEFAULT;
    const MIB: u64 = 1 << 20;
    /// Stored size of every archived segment (as if compressed).
    const STORED: u64 = 1_000;

    fn mib64() -> SegmentSize {
        SegmentSize::new(64 * MIB).unwrap()
    }

    fn tli(value: u32) -> TimelineId {
        TimelineId::new(value).unwrap()
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    /// An RFC 3339 instant.
    fn instant(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    /// `HH:MM:SS[.f]` on 2026-11-23, UTC.
    fn at(hms: &str) -> DateTime<FixedOffset> {
        instant(&format!("2026-11-23T{hms}Z"))
    }

    fn base_time() -> DateTime<FixedOffset> {
        at("10:00:00")
    }

    /// When the synthetic archive received segment `number`: 10:00 + n min.
    fn archived_at(number: u64) -> SystemTime {
        SystemTime::from(base_time() + Duration::minutes(number as i64))
    }

    /// A synthetic base backup; `build` fills the label with plausible values.
    struct BackupBuilder {
        id: String,
        timeline: TimelineId,
        start_lsn: Lsn,
        stop_lsn: Lsn,
        stop_time: DateTime<FixedOffset>,
        source: StopTimeSource,
        included_wal: BTreeSet<String>,
        system_identifier: Option<u64>,
        size: SegmentSize,
    }

    /// A backup whose STOP TIME comes from a backup history file.
    fn backup(
        id: &str,
        start: &str,
        stop: &str,
        stop_time: DateTime<FixedOffset>,
    ) -> BackupBuilder {
        BackupBuilder {
            id: id.to_string(),
            timeline: TimelineId::FIRST,
            start_lsn: lsn(start),
            stop_lsn: lsn(stop),
            stop_time,
            source: StopTimeSource::BackupHistoryFile,
            included_wal: BTreeSet::new(),
            system_identifier: None,
            size: MIB16,
        }
    }

    impl BackupBuilder {
        /// The stop time is when backup_manifest was written.
        fn manifest(mut self) -> Self {
            self.source = StopTimeSource::ManifestWritten;
            self
        }

        fn timeline(mut self, value: u32) -> Self {
            self.timeline = tli(value);
            self
        }

        /// Segment file names carried in the backup's own `pg_wal`.
        fn includes(mut self, names: &[&str]) -> Self {
            self.included_wal = names.iter().map(|name| name.to_string()).collect();
            self
        }

        fn sysid(mut self, value: u64) -> Self {
            self.system_identifier = Some(value);
            self
        }

        /// Only used to name the start segment in the label.
        fn size(mut self, size: SegmentSize) -> Self {
            self.size = size;
            self
        }

        fn build(self) -> Backup {
            let start_time = self.stop_time - Duration::seconds(30);
            let label = BackupLabel {
                start_lsn: self.start_lsn,
                start_segment: WalSegment::containing(self.timeline, self.start_lsn, self.size)
                    .file_name(),
                checkpoint_lsn: Lsn::new(self.start_lsn.value() + 0x38),
                method: "streamed".to_string(),
                from: Some("primary".to_string()),
                start_time: LabelTime {
                    text: start_time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    instant: Some(start_time),
                },
                label: format!("pitr test {}", self.id),
                start_timeline: self.timeline,
                incremental_from: None,
            };
            Backup {
                id: self.id,
                format: BackupFormat::Plain,
                label,
                timeline: self.timeline,
                start_lsn: self.start_lsn,
                stop_lsn: self.stop_lsn,
                stop_time: self.stop_time,
                stop_time_source: self.source,
                system_identifier: self.system_identifier,
                major_version: Some(15),
                included_wal: self.included_wal,
                stored_bytes: 0,
                has_manifest: true,
                files: Default::default(),
                tablespaces: Vec::new(),
            }
        }
    }

    fn b1() -> BackupBuilder {
        backup("b1", "0/2000028", "0/2000138", at("10:02:30"))
    }

    fn b2() -> BackupBuilder {
        backup("b2", "0/8000028", "0/8000138", at("10:08:30"))
    }

    fn b3() -> BackupBuilder {
        backup("b3", "0/10000028", "0/10000138", at("10:16:30")).manifest()
    }

    fn standard() -> Vec<Backup> {
        vec![b1().build(), b2().build(), b3().build()]
    }

    /// Segments `numbers` of timeline `timeline`.
    fn segs(timeline: u32, numbers: std::ops::RangeInclusive<u64>) -> Vec<(u32, u64)> {
        numbers.map(|number| (timeline, number)).collect()
    }

    /// The standard archive: timeline 1, segments 1 to 0x18.
    fn standard_archive() -> Vec<(u32, u64)> {
        segs(1, 1..=0x18)
    }

    fn without(mut segments: Vec<(u32, u64)>, missing: &[u64]) -> Vec<(u32, u64)> {
        segments.retain(|(_, number)| !missing.contains(number));
        segments
    }

    fn time(hms: &str) -> Target {
        Target::Time(at(hms))
    }

    fn lsn_target(text: &str) -> Target {
        Target::Lsn(lsn(text))
    }

    /// What a row expects.
    enum Expect {
        Plan {
            backup: &'static str,
            first: &'static str,
            last: &'static str,
            segments: u64,
            from_backup: u64,
            bytes: u64,
            /// Words that some note must contain, and words no note may contain.
            notes: Vec<&'static str>,
            no_notes: Vec<&'static str>,
            reason: &'static str,
        },
        Error {
            variant: &'static str,
            words: Vec<&'static str>,
            absent: Vec<&'static str>,
        },
    }

    struct Case {
        name: &'static str,
        size: SegmentSize,
        backups: Vec<Backup>,
        unreadable: usize,
        archive: Vec<(u32, u64)>,
        archive_sysid: Option<u64>,
        target: Target,
        inclusive: bool,
        backup_id: Option<&'static str>,
        expect: Expect,
    }

    /// A row with the defaults: 16 MiB segments, inclusive, no `--backup`.
    fn case(
        name: &'static str,
        backups: Vec<Backup>,
        archive: Vec<(u32, u64)>,
        target: Target,
        expect: Expect,
    ) -> Case {
        Case {
            name,
            size: MIB16,
            backups,
            unreadable: 0,
            archive,
            archive_sysid: None,
            target,
            inclusive: true,
            backup_id: None,
            expect,
        }
    }

    impl Case {
        fn with_backup(mut self, id: &'static str) -> Self {
            self.backup_id = Some(id);
            self
        }

        fn exclusive(mut self) -> Self {
            self.inclusive = false;
            self
        }

        fn size(mut self, size: SegmentSize) -> Self {
            self.size = size;
            self
        }

        fn archive_sysid(mut self, value: u64) -> Self {
            self.archive_sysid = Some(value);
            self
        }

        fn unreadable(mut self, count: usize) -> Self {
            self.unreadable = count;
            self
        }
    }

    /// A plan from `backup` over `first..=last`, all archived except
    /// `from_backup` segments carried by the backup.
    fn plan(
        backup: &'static str,
        first: &'static str,
        last: &'static str,
        segments: u64,
        from_backup: u64,
        bytes: u64,
    ) -> Expect {
        Expect::Plan {
            backup,
            first,
            last,
            segments,
            from_backup,
            bytes,
            notes: Vec::new(),
            no_notes: Vec::new(),
            reason: "",
        }
    }

    fn error(variant: &'static str, words: &[&'static str]) -> Expect {
        Expect::Error {
            variant,
            words: words.to_vec(),
            absent: Vec::new(),
        }
    }

    impl Expect {
        fn note(mut self, words: &'static str) -> Self {
            if let Expect::Plan { notes, .. } = &mut self {
                notes.push(words);
            }
            self
        }

        fn no_note(mut self, words: &'static str) -> Self {
            if let Expect::Plan { no_notes, .. } = &mut self {
                no_notes.push(words);
            }
            self
        }

        fn reason(mut self, words: &'static str) -> Self {
            if let Expect::Plan { reason, .. } = &mut self {
                *reason = words;
            }
            self
        }

        fn not_saying(mut self, words: &'static str) -> Self {
            if let Expect::Error { absent, .. } = &mut self {
                absent.push(words);
            }
            self
        }
    }

    fn variant(error: &PlanError) -> &'static str {
        match error {
            PlanError::NoBackups { .. } => "NoBackups",
            PlanError::UnknownBackup { .. } => "UnknownBackup",
            PlanError::TargetBeforeWindow { .. } => "TargetBeforeWindow",
            PlanError::TargetAfterArchive { .. } => "TargetAfterArchive",
            PlanError::BackupCannotReach { .. } => "BackupCannotReach",
            PlanError::MissingWal { .. } => "MissingWal",
            PlanError::SystemMismatch { .. } => "SystemMismatch",
            PlanError::Timeline { .. } => "Timeline",
            PlanError::BrokenHistory { .. } => "BrokenHistory",
            PlanError::NoBackupOnPath { .. } => "NoBackupOnPath",
            PlanError::BackupNotOnPath { .. } => "BackupNotOnPath",
            PlanError::TargetAfterLastCommit { .. } => "TargetAfterLastCommit",
            PlanError::NoTransactions { .. } => "NoTransactions",
            PlanError::TargetNotInWal { .. } => "TargetNotInWal",
            PlanError::CorruptWal { .. } => "CorruptWal",
            PlanError::Wal(_) => "Wal",
        }
    }

    fn archive(size: SegmentSize, segments: &[(u32, u64)], sysid: Option<u64>) -> WalArchive {
        let mut archive = WalArchive::from_listing(
            Path::new("/repo/wal"),
            size,
            segments.iter().map(|&(timeline, number)| {
                let segment = WalSegment {
                    timeline: tli(timeline),
                    number,
                    size,
                };
                (segment, STORED, archived_at(number))
            }),
        );
        archive.system_identifier = sysid;
        archive
    }

    fn cases() -> Vec<Case> {
        let s16 = MIB16.bytes();
        vec![
            // --- time targets -------------------------------------------
            case(
                "time: newest backup consistent before the target",
                standard(),
                standard_archive(),
                time("10:12:00"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                    .note("checked to the end of timeline 1")
                    .reason("the newest backup consistent before the target; it ended at 2026-11-23 10:08:30 UTC"),
            ),
            // A backup of the primary and one of its standby start at the
            // same checkpoint; the standby's ends later. Whatever the
            // names' order, the one consistent after the target is never
            // chosen.
            case(
                "time: same start, the later-ending standby backup sorts first",
                vec![
                    backup("a-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                    backup("b-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                ],
                standard_archive(),
                time("10:09:00"),
                plan("b-primary", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "time: same start, the later-ending standby backup sorts last",
                vec![
                    backup("a-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                    backup("b-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                ],
                standard_archive(),
                time("10:09:00"),
                plan("a-primary", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "time: same start, after both ends the later one",
                vec![
                    backup("a-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                    backup("b-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                ],
                standard_archive(),
                time("10:10:00"),
                plan("b-standby", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "lsn: same start, the later-ending standby backup sorts first",
                vec![
                    backup("a-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                    backup("b-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                ],
                standard_archive(),
                lsn_target("0/9000000"),
                plan("b-primary", "000000010000000000000008", "000000010000000000000009", 2, 0, 2 * STORED),
            ),
            case(
                "time: exactly STOP TIME + 1 s",
                standard(),
                standard_archive(),
                time("10:08:31"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "time: the same boundary written with another offset",
                standard(),
                standard_archive(),
                Target::Time(instant("2026-11-23T15:38:31+05:30")),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "time: 0.5 s after STOP TIME is before the truncated end",
                standard(),
                standard_archive(),
                time("10:08:30.5"),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
            ),
            case(
                "time: 1 µs before STOP TIME + 1 s",
                standard(),
                standard_archive(),
                time("10:08:30.999999"),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
            ),
            case(
                "time: exactly STOP TIME is not enough",
                standard(),
                standard_archive(),
                time("10:08:30"),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
            ),
            case(
                "time: a manifest time is used as is",
                standard(),
                standard_archive(),
                time("10:16:30"),
                plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED)
                    .note("its end time is taken from when its backup_manifest was written"),
            ),
            case(
                "time: 1 µs before a manifest time",
                standard(),
                standard_archive(),
                time("10:16:29.999999"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                    .no_note("backup_manifest"),
            ),
            case(
                "time: the order of the backups does not matter",
                vec![b3().build(), b1().build(), b2().build()],
                standard_archive(),
                time("10:12:00"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "time: 1 µs before the newest segment was archived",
                standard(),
                standard_archive(),
                time("10:23:59.999999"),
                plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
            ),
            case(
                "time: --exclusive is carried into the plan",
                standard(),
                standard_archive(),
                time("10:12:00"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            )
            .exclusive(),
            case(
                "time: 0.5 s after the only reachable STOP TIME",
                standard(),
                standard_archive(),
                time("10:02:30.5"),
                error(
                    "TargetBeforeWindow",
                    &[
                        "the target 2026-11-23 10:02:30.500000 UTC",
                        "before the earliest consistent point of any backup",
                        "the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC",
                    ],
                ),
            ),
            case(
                "time: long before every backup",
                standard(),
                standard_archive(),
                time("09:00:00"),
                error(
                    "TargetBeforeWindow",
                    &["the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC"],
                ),
            ),
            case(
                "time: before every backup, with an empty archive",
                standard(),
                Vec::new(),
                time("09:00:00"),
                error(
                    "TargetBeforeWindow",
                    &["the recoverable window is from 2026-11-23 10:02:31 UTC"],
                )
                .not_saying("about"),
            ),
            case(
                "time: exactly when the newest segment was archived",
                standard(),
                standard_archive(),
                time("10:24:00"),
                error(
                    "TargetAfterArchive",
                    &[
                        "after the end of the WAL archive",
                        "the newest segment on timeline 1, `000000010000000000000018`, was archived at 2026-11-23 10:24:00 UTC",
                        "the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC",
                        "Use `--to latest`",
                    ],
                ),
            ),
            case(
                "time: long after the archive ends",
                standard(),
                standard_archive(),
                time("11:00:00"),
                error("TargetAfterArchive", &["`000000010000000000000018`"]),
            ),
            case(
                "time: the archive end is the chosen timeline's, not another's",
                vec![backup("t2", "0/9000028", "0/9000100", at("10:09:30")).timeline(2).build()],
                [segs(1, 1..=0x30), segs(2, 8..=0x18)].concat(),
                time("10:30:00"),
                error(
                    "TargetAfterArchive",
                    &["the newest segment on timeline 2, `000000020000000000000018`, was archived at 2026-11-23 10:24:00 UTC"],
                ),
            ),
            case(
                "time: a backup on timeline 2 reads timeline 2",
                vec![backup("t2", "0/9000028", "0/9000100", at("10:09:30")).timeline(2).build()],
                [segs(1, 1..=0x30), segs(2, 8..=0x18)].concat(),
                time("10:20:00"),
                plan("t2", "000000020000000000000009", "000000020000000000000018", 16, 0, 16 * STORED)
                    .note("checked to the end of timeline 2"),
            ),
            // --- LSN targets ---------------------------------------------
            case(
                "lsn: newest backup ending at or before the target",
                standard(),
                standard_archive(),
                lsn_target("0/9000000"),
                plan("b2", "000000010000000000000008", "000000010000000000000009", 2, 0, 2 * STORED)
                    .no_note("checked to the end")
                    .reason("ends at 0/8000138"),
            ),
            case(
                "lsn: exactly the stop LSN",
                standard(),
                standard_archive(),
                lsn_target("0/8000138"),
                plan("b2", "000000010000000000000008", "000000010000000000000008", 1, 0, STORED),
            ),
            case(
                "lsn: one byte before the stop LSN",
                standard(),
                standard_archive(),
                lsn_target("0/8000137"),
                plan("b1", "000000010000000000000002", "000000010000000000000008", 7, 0, 7 * STORED),
            ),
            case(
                "lsn: a target on a segment boundary needs that segment",
                standard(),
                standard_archive(),
                lsn_target("0/C000000"),
                plan("b2", "000000010000000000000008", "00000001000000000000000C", 5, 0, 5 * STORED),
            ),
            case(
                "lsn: the last byte of a segment",
                standard(),
                standard_archive(),
                lsn_target("0/BFFFFFF"),
                plan("b2", "000000010000000000000008", "00000001000000000000000B", 4, 0, 4 * STORED),
            ),
            case(
                "lsn: before every backup",
                standard(),
                standard_archive(),
                lsn_target("0/2000137"),
                error(
                    "BackupCannotReach",
                    &[
                        "backup `b1` cannot reach the target LSN 0/2000137",
                        "every backup ends after it (the earliest ends at 0/2000138)",
                    ],
                ),
            ),
            case(
                "lsn: before every backup, backups unsorted, names the earliest",
                vec![b3().build(), b2().build(), b1().build()],
                standard_archive(),
                lsn_target("0/1000000"),
                error(
                    "BackupCannotReach",
                    &["backup `b1` cannot reach", "the earliest ends at 0/2000138"],
                ),
            ),
            case(
                "lsn: a gap after the last needed segment does not matter",
                standard(),
                without(standard_archive(), &[0x0D, 0x0E]),
                lsn_target("0/C000000"),
                plan("b2", "000000010000000000000008", "00000001000000000000000C", 5, 0, 5 * STORED),
            ),
            case(
                "lsn: the segment holding the target is missing",
                standard(),
                without(standard_archive(), &[0x0C]),
                lsn_target("0/C000000"),
                error(
                    "MissingWal",
                    &[
                        "WAL segment `00000001000000000000000C` is missing from the archive",
                        "every segment from `000000010000000000000008` to `00000001000000000000000C`",
                    ],
                )
                .not_saying("resumes"),
            ),
            case(
                "lsn: beyond the end of the archive",
                standard(),
                standard_archive(),
                lsn_target("0/30000000"),
                error(
                    "MissingWal",
                    &[
                        "`000000010000000000000019` is missing",
                        "from `000000010000000000000010` to `000000010000000000000030`",
                    ],
                )
                .not_saying("resumes"),
            ),
            // --- latest, immediate, xid, name -----------------------------
            case(
                "latest: the newest backup, to the end of the archive",
                vec![b3().build(), b1().build(), b2().build()],
                standard_archive(),
                Target::Latest,
                plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED)
                    .reason("the newest backup"),
            ),
            case(
                "immediate: the newest backup, to its stop segment",
                standard(),
                standard_archive(),
                Target::Immediate,
                plan("b3", "000000010000000000000010", "000000010000000000000010", 1, 0, STORED),
            ),
            case(
                "immediate: a stop on a segment boundary ends in the segment before",
                vec![b1().build(), backup("b4", "0/1F000028", "0/20000000", at("10:31:00")).build()],
                segs(1, 1..=0x20),
                Target::Immediate,
                plan("b4", "00000001000000000000001F", "00000001000000000000001F", 1, 0, STORED),
            ),
            case(
                "latest: a stop on a segment boundary, to the end of the archive",
                vec![b1().build(), backup("b4", "0/1F000028", "0/20000000", at("10:31:00")).build()],
                segs(1, 1..=0x20),
                Target::Latest,
                plan("b4", "00000001000000000000001F", "000000010000000000000020", 2, 0, 2 * STORED),
            ),
            case(
                "xid: the oldest backup, with a note",
                vec![b2().build(), b3().build(), b1().build()],
                standard_archive(),
                Target::Xid(crate::wal::xid::Xid::Bare(1234)),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                    .note("the oldest backup is used; pass --backup ID to start from a newer one")
                    .note("checked to the end of timeline 1"),
            ),
            case(
                "name: the oldest backup, with a note",
                standard(),
                standard_archive(),
                Target::Name("before_migration".to_string()),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                    .note("the oldest backup is used"),
            ),
            case(
                "name: --backup starts from a newer one without the note",
                standard(),
                standard_archive(),
                Target::Name("before_migration".to_string()),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                    .no_note("oldest backup")
                    .reason("chosen with --backup"),
            )
            .with_backup("b2"),
            case(
                "immediate: a degenerate backup (stop = start on a boundary) still reads its start segment",
                vec![backup("odd", "0/3000000", "0/3000000", at("10:03:30")).build()],
                standard_archive(),
                Target::Immediate,
                plan("odd", "000000010000000000000003", "000000010000000000000003", 1, 0, STORED),
            ),
            // --- --backup ----------------------------------------------------
            case(
                "--backup: an unknown id lists the known ones",
                standard(),
                standard_archive(),
                time("10:12:00"),
                error(
                    "UnknownBackup",
                    &["there is no backup `b9` in the repository (backups: b1, b2, b3)"],
                ),
            )
            .with_backup("b9"),
            case(
                "--backup: a backup consistent after the time target",
                standard(),
                standard_archive(),
                time("10:12:00"),
                error(
                    "BackupCannotReach",
                    &["backup `b3` cannot reach the target 2026-11-23 10:12:00 UTC", "it is consistent only from 2026-11-23 10:16:30 UTC on"],
                ),
            )
            .with_backup("b3"),
            case(
                "--backup: 0.5 s after its STOP TIME",
                standard(),
                standard_archive(),
                time("10:08:30.5"),
                error(
                    "BackupCannotReach",
                    &["backup `b2`", "consistent only from 2026-11-23 10:08:31 UTC on"],
                ),
            )
            .with_backup("b2"),
            case(
                "--backup: an older backup than needed is accepted",
                standard(),
                standard_archive(),
                time("10:12:00"),
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                    .reason("chosen with --backup"),
            )
            .with_backup("b1"),
            case(
                "--backup: a backup ending after the LSN target",
                standard(),
                standard_archive(),
                lsn_target("0/9000000"),
                error(
                    "BackupCannotReach",
                    &["backup `b3` cannot reach the target LSN 0/9000000: it ends at 0/10000138, after the target"],
                ),
            )
            .with_backup("b3"),
            case(
                "--backup: latest from an older backup",
                standard(),
                standard_archive(),
                Target::Latest,
                plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
            )
            .with_backup("b1"),
            // --- gaps and the backup's own WAL ---------------------------
            case(
                "gap: the first missing segment and where the archive resumes",
                standard(),
                without(standard_archive(), &[0x0C, 0x0D]),
                time("10:12:00"),
                error(
                    "MissingWal",
                    &[
                        "WAL segment `00000001000000000000000C` is missing from the archive",
                        "every segment from `000000010000000000000008` to `000000010000000000000018`",
                        "(the archive resumes at `00000001000000000000000E`)",
                    ],
                )
                .not_saying("00000001000000000000000D"),
            ),
            case(
                "gap: the backup's start segment is missing",
                standard(),
                without(standard_archive(), &[0x08]),
                time("10:12:00"),
                error(
                    "MissingWal",
                    &["`000000010000000000000008` is missing", "resumes at `000000010000000000000009`"],
                ),
            ),
            case(
                "gap: before the chosen backup does not matter",
                standard(),
                without(standard_archive(), &[0x03, 0x04]),
                time("10:12:00"),
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
            ),
            case(
                "gap: a segment carried by the backup fills it",
                vec![
                    b1().build(),
                    b2()
                        .includes(&["000000010000000000000008", "000000010000000000000009"])
                        .build(),
                    b3().build(),
                ],
                without(standard_archive(), &[0x08]),
                time("10:12:00"),
                // 0x09 is archived too: the archive's copy is counted.
                plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 1, 16 * STORED + s16),
            ),
            case(
                "gap: another backup's WAL does not fill it",
                vec![
                    b1().includes(&["000000010000000000000008"]).build(),
                    b2().build(),
                ],
                without(standard_archive(), &[0x08]),
                time("10:12:00"),
                error("MissingWal", &["`000000010000000000000008` is missing"]),
            ),
            case(
                "latest: the backup's own WAL beyond the archive end",
                vec![
                    b1().build(),
                    b3().includes(&[
                        "000000010000000000000010",
                        "000000010000000000000019",
                        "00000001000000000000001A",
                    ])
                    .build(),
                ],
                standard_archive(),
                Target::Latest,
                plan("b3", "000000010000000000000010", "00000001000000000000001A", 11, 2, 9 * STORED + 2 * s16),
            ),
            // --- segment numbering -------------------------------------------
            case(
                "numbering: 0xFF then 0x100 is continuous",
                vec![backup("wrap", "0/FF000028", "0/FF000200", at("14:00:00")).build()],
                segs(1, 0xF0..=0x103),
                lsn_target("1/2000000"),
                plan("wrap", "0000000100000000000000FF", "000000010000000100000002", 4, 0, 4 * STORED),
            ),
            case(
                "numbering: latest across 0xFF → 0x100",
                vec![backup("wrap", "0/FE000028", "0/FF000200", at("14:00:00")).build()],
                segs(1, 0xF0..=0x103),
                Target::Latest,
                plan("wrap", "0000000100000000000000FE", "000000010000000100000003", 6, 0, 6 * STORED),
            ),
            case(
                "numbering: a gap at 0x100 is named by its file name",
                vec![backup("wrap", "0/FF000028", "0/FF000200", at("14:00:00")).build()],
                without(segs(1, 0xF0..=0x103), &[0x100]),
                lsn_target("1/2000000"),
                error(
                    "MissingWal",
                    &[
                        "`000000010000000100000000` is missing",
                        "from `0000000100000000000000FF` to `000000010000000100000002`",
                        "resumes at `000000010000000100000001`",
                    ],
                ),
            ),
            case(
                "64 MiB: LSN target across the 0x3F → 0x40 boundary, own WAL counted",
                vec![backup("big", "0/8000028", "0/8000200", at("10:10:00"))
                    .size(mib64())
                    .includes(&["000000010000000000000002"])
                    .build()],
                without(segs(1, 1..=0x42), &[2]),
                lsn_target("1/4000000"),
                plan("big", "000000010000000000000002", "000000010000000100000001", 64, 1, 63 * STORED + 64 * MIB),
            )
            .size(mib64()),
            case(
                "64 MiB: immediate with a stop on a segment boundary",
                vec![backup("big", "0/FC00028", "0/10000000", at("10:10:00")).size(mib64()).build()],
                segs(1, 1..=0x42),
                Target::Immediate,
                plan("big", "000000010000000000000003", "000000010000000000000003", 1, 0, STORED),
            )
            .size(mib64()),
            case(
                "64 MiB: a time target",
                vec![backup("big", "0/FC00028", "0/10000000", at("10:03:10")).size(mib64()).build()],
                segs(1, 1..=0x10),
                time("10:05:00"),
                plan("big", "000000010000000000000003", "000000010000000000000010", 14, 0, 14 * STORED),
            )
            .size(mib64()),
            // --- identity ------------------------------------------------------
            case(
                "identity: a backup of another cluster",
                vec![b1().sysid(111).build(), b3().sysid(111).build()],
                standard_archive(),
                Target::Latest,
                error(
                    "SystemMismatch",
                    &["backup `b3` belongs to another cluster (system identifier 111) than the WAL archive (222)"],
                ),
            )
            .archive_sysid(222),
            case(
                "identity: the same cluster",
                vec![b1().sysid(222).build(), b3().sysid(222).build()],
                standard_archive(),
                Target::Latest,
                plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
            )
            .archive_sysid(222),
            case(
                "identity: unknown on the backup's side is not a mismatch",
                standard(),
                standard_archive(),
                Target::Latest,
                plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
            )
            .archive_sysid(222),
            case(
                "no backups: says how many could not be read",
                Vec::new(),
                standard_archive(),
                Target::Latest,
                error(
                    "NoBackups",
                    &["there is no usable base backup in the repository (2 backup directories could not be understood; see `pitr list`)"],
                ),
            )
            .unreadable(2),
        ]
    }

    #[test]
    fn table() {
        let mut failures = Vec::new();
        let cases = cases();
        let mut names = BTreeSet::new();
        for case in &cases {
            assert!(
                names.insert(case.name),
                "duplicate case name `{}`",
                case.name
            );
            if let Err(failure) = check(case) {
                failures.push(format!("{}: {failure}", case.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    fn check(case: &Case) -> Result<(), String> {
        let archive = archive(case.size, &case.archive, case.archive_sysid);
        let request = PlanRequest {
            target: case.target.clone(),
            inclusive: case.inclusive,
            backup_id: case.backup_id.map(str::to_string),
            timeline: TimelineChoice::Current,
        };
        let result = make_plan(
            &case.backups,
            case.unreadable,
            &archive,
            &request,
            &jiff::tz::TimeZone::UTC,
            None,
        );
        match (&case.expect, result) {
            (
                Expect::Plan {
                    backup,
                    first,
                    last,
                    segments,
                    from_backup,
                    bytes,
                    notes,
                    no_notes,
                    reason,
                },
                Ok(plan),
            ) => {
                let got = (
                    plan.backup.id.as_str(),
                    plan.wal.first.file_name(),
                    plan.wal.last.file_name(),
                    plan.wal.segments,
                    plan.wal.from_backup,
                    plan.wal.bytes,
                );
                let want = (
                    *backup,
                    first.to_string(),
                    last.to_string(),
                    *segments,
                    *from_backup,
                    *bytes,
                );
                if got != want {
                    return Err(format!(
                        "expected (backup, first, last, segments, from_backup, bytes) = {want:?}, got {got:?}"
                    ));
                }
                if plan.timeline != plan.backup.timeline
                    || plan.target != case.target
                    || plan.inclusive != case.inclusive
                {
                    return Err(format!("the plan does not carry the request: {plan:?}"));
                }
                for words in notes {
                    if !plan.notes.iter().any(|note| note.contains(words)) {
                        return Err(format!("no note says `{words}`: {:?}", plan.notes));
                    }
                }
                for words in no_notes {
                    if plan.notes.iter().any(|note| note.contains(words)) {
                        return Err(format!("a note says `{words}`: {:?}", plan.notes));
                    }
                }
                if !plan.reason.contains(reason) {
                    return Err(format!(
                        "the reason `{}` does not say `{reason}`",
                        plan.reason
                    ));
                }
                Ok(())
            }
            (
                Expect::Error {
                    variant: want,
                    words,
                    absent,
                },
                Err(error),
            ) => {
                let message = error.to_string();
                if variant(&error) != *want {
                    return Err(format!(
                        "expected {want}, got {}: {message}",
                        variant(&error)
                    ));
                }
                for words in words {
                    if !message.contains(words) {
                        return Err(format!("the message does not say `{words}`: {message}"));
                    }
                }
                for words in absent {
                    if message.contains(words) {
                        return Err(format!("the message says `{words}`: {message}"));
                    }
                }
                Ok(())
            }
            (Expect::Plan { backup, .. }, Err(error)) => Err(format!(
                "expected a plan from `{backup}`, got {}: {error}",
                variant(&error)
            )),
            (Expect::Error { variant, .. }, Ok(plan)) => Err(format!(
                "expected {variant}, got a plan from `{}` over {}..={}",
                plan.backup.id, plan.wal.first, plan.wal.last
            )),
        }
    }

    #[test]
    fn missing_wal_fields() {
        // The structured error, not only its message, names the first gap.
        let archive = archive(MIB16, &without(standard_archive(), &[0x0C, 0x0D]), None);
        let request = PlanRequest {
            target: time("10:12:00"),
            inclusive: true,
            backup_id: None,
            timeline: TimelineChoice::Current,
        };
        let error = make_plan(
            &standard(),
            0,
            &archive,
            &request,
            &jiff::tz::TimeZone::UTC,
            None,
        )
        .unwrap_err();
        let PlanError::MissingWal {
            missing,
            first,
            last,
            last_present,
        } = error
        else {
            panic!("expected MissingWal, got {error}");
        };
        let segment = |number| WalSegment {
            timeline: TimelineId::FIRST,
            number,
            size: MIB16,
        };
        assert_eq!(missing, segment(0x0C));
        assert_eq!(first, segment(0x08));
        assert_eq!(last, segment(0x18));
        assert_eq!(last_present, Some(segment(0x0E)));
    }

    /// One random backup: start segment, offset in it, length in bytes,
    /// stop time in ms after 10:00, whether the time is a manifest's, and
    /// which segments after its start it carries.
    type BackupSpec = (u64, u64, u64, i64, bool, BTreeSet<u64>);

    fn backup_spec(max_segment: u64, min_len: u64) -> impl Strategy<Value = BackupSpec> {
        (
            0..max_segment,
            // Segment boundaries are where off-by-one errors live.
            prop_oneof![Just(0), 0..MIB16.bytes()],
            prop_oneof![
                Just(min_len),
                Just(MIB16.bytes()),
                min_len..3 * MIB16.bytes()
            ],
            0i64..3_600_000,
            any::<bool>(),
            prop::collection::btree_set(0u64..4, 0..3),
        )
    }

    fn random_backup(index: usize, spec: &BackupSpec, timeline: u32) -> Backup {
        let (segment, offset, len, ms, manifest, included) = spec;
        let start = segment * MIB16.bytes() + offset;
        // STOP TIME of a backup history file has whole seconds.
        let ms = if *manifest { *ms } else { ms - ms % 1000 };
        let mut builder = backup(
            &format!("r{index}"),
            &Lsn::new(start).to_string(),
            &Lsn::new(start + len).to_string(),
            base_time() + Duration::milliseconds(ms),
        )
        .timeline(timeline);
        if *manifest {
            builder = builder.manifest();
        }
        let names: Vec<String> = included
            .iter()
            .map(|k| {
                WalSegment {
                    timeline: tli(timeline),
                    number: segment + k,
                    size: MIB16,
                }
                .file_name()
            })
            .collect();
        builder
            .includes(&names.iter().map(String::as_str).collect::<Vec<_>>())
            .build()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Over a contiguous archive that covers every backup, a time target
        /// either gets the newest backup consistent by then, or is before
        /// every backup, or after the archive; nothing else.
        #[test]
        fn time_target_picks_newest_consistent_backup(
            specs in prop::collection::vec(backup_spec(300, 1), 1..6),
            lead in 0u64..3,
            tail in 0u64..6,
            target_ms in -600_000i64..20_000_000,
            near_a_stop in proptest::option::of((any::<prop::sample::Index>(), -1500i64..1500)),
        ) {
            // Half the cases aim within 1.5 s of a backup's stop time, where
            // the whole-second rule decides.
            let target_ms = match near_a_stop {
                Some((which, delta)) => specs[which.index(specs.len())].3 + delta,
                None => target_ms,
            };
            let backups: Vec<Backup> = specs
                .iter()
                .enumerate()
                .map(|(index, spec)| random_backup(index, spec, 1))
                .collect();
            let from = specs.iter().map(|spec| spec.0).min().unwrap().saturating_sub(lead);
            // Past every stop and every segment a backup carries.
            let to = backups
                .iter()
                .flat_map(|b| {
                    let carried = b
                        .included_wal
                        .iter()
                        .filter_map(|name| WalSegment::parse(name, MIB16))
                        .map(|segment| segment.number);
                    carried.chain([WalSegment::containing_end(b.timeline, b.stop_lsn, MIB16).number])
                })
                .max()
                .unwrap()
                + tail;
            let archive = archive(MIB16, &segs(1, from..=to), None);
            let archive_end = DateTime::<Utc>::from(archived_at(to)).fixed_offset();
            let target = base_time() + Duration::milliseconds(target_ms);
            let request = PlanRequest {
                target: Target::Time(target),
                inclusive: true,
                backup_id: None,
                timeline: TimelineChoice::Current,
            };
            // The oracle's consistent points, from the generated parts and
            // not from Backup::consistent_by: a backup history file's STOP
            // TIME is truncated to the second, so the backup is certainly
            // consistent only one second later; a manifest's time is exact.
            let consistent: std::collections::BTreeMap<String, DateTime<FixedOffset>> = specs
                .iter()
                .enumerate()
                .map(|(index, (_, _, _, ms, manifest, _))| {
                    let at = if *manifest {
                        base_time() + Duration::milliseconds(*ms)
                    } else {
                        base_time() + Duration::milliseconds(ms - ms % 1000) + Duration::seconds(1)
                    };
                    (format!("r{index}"), at)
                })
                .collect();
            let consistent_by = |b: &Backup| consistent[&b.id];
            let reachable = backups.iter().any(|b| consistent_by(b) <= target);
            match make_plan(&backups, 0, &archive, &request, &jiff::tz::TimeZone::UTC, None) {
                Ok(plan) => {
                    let chosen = consistent_by(&plan.backup);
                    prop_assert!(chosen <= target);
                    for other in &backups {
                        prop_assert!(
                            consistent_by(other) > target || consistent_by(other) <= chosen,
                            "`{}` is consistent by {} <= {target}, later than the chosen `{}` ({chosen})",
                            other.id, consistent_by(other), plan.backup.id
                        );
                    }
                    prop_assert_eq!(
                        plan.wal.first,
                        WalSegment::containing(plan.backup.timeline, plan.backup.start_lsn, MIB16)
                    );
                    prop_assert_eq!(plan.wal.last.number, to);
                    prop_assert_eq!(plan.wal.segments, to - plan.wal.first.number + 1);
                    prop_assert!(target < archive_end);
                }
                Err(PlanError::TargetBeforeWindow { .. }) => prop_assert!(!reachable),
                Err(PlanError::TargetAfterArchive { .. }) => {
                    prop_assert!(reachable);
                    prop_assert!(target >= archive_end);
                }
                Err(error) => prop_assert!(false, "unexpected error: {error}"),
            }
        }

        /// Whatever the catalog (gaps, timelines, identities, degenerate
        /// backups) and the request, `make_plan` returns, and a plan is
        /// self-consistent.
        #[test]
        fn make_plan_never_panics(
            specs in prop::collection::vec(
                (backup_spec(0x120, 0), 1u32..3, prop::option::weighted(0.2, 1u64..3)),
                0..5,
            ),
            // Runs of segments (timeline, first, length), then holes in them.
            runs in prop::collection::vec((1u32..3, 0u64..0x120, 0u64..0x60), 0..4),
            holes in prop::collection::btree_set(0u64..0x180, 0..3),
            archive_sysid in prop::option::weighted(0.2, 1u64..3),
            kind in 0u8..6,
            target_lsn in 0u64..0x130 * MIB16.bytes(),
            target_ms in -600_000i64..20_000_000,
            pick in prop::option::weighted(0.3, 0usize..6),
            inclusive in any::<bool>(),
        ) {
            let backups: Vec<Backup> = specs
                .iter()
                .enumerate()
                .map(|(index, (spec, timeline, sysid))| {
                    let mut backup = random_backup(index, spec, *timeline);
                    backup.system_identifier = *sysid;
                    backup
                })
                .collect();
            let segments: Vec<(u32, u64)> = runs
                .iter()
                .flat_map(|&(timeline, first, len)| segs(timeline, first..=first + len))
                .filter(|(_, number)| !holes.contains(number))
                .collect();
            let archive = archive(MIB16, &segments, archive_sysid);
            let target = match kind {
                0 => Target::Time(base_time() + Duration::milliseconds(target_ms)),
                1 => Target::Lsn(Lsn::new(target_lsn)),
                2 => Target::Latest,
                3 => Target::Immediate,
                4 => Target::Xid(crate::wal::xid::Xid::Bare(1234)),
                _ => Target::Name("point".to_string()),
            };
            let request = PlanRequest {
                target,
                inclusive,
                // Index 5 is never a backup: an unknown id.
                backup_id: pick.map(|index| format!("r{index}")),
                timeline: TimelineChoice::Current,
            };
            match make_plan(&backups, 0, &archive, &request, &jiff::tz::TimeZone::UTC, None) {
                Ok(plan) => {
                    let wal = &plan.wal;
                    prop_assert_eq!(
                        wal.first,
                        WalSegment::containing(plan.backup.timeline, plan.backup.start_lsn, MIB16)
                    );
                    prop_assert!(wal.first.number <= wal.last.number);
                    prop_assert_eq!(wal.last.timeline, plan.backup.timeline);
                    prop_assert_eq!(wal.segments, wal.last.number - wal.first.number + 1);
                    prop_assert!(wal.from_backup <= wal.segments);
                    let archived = wal.segments - wal.from_backup;
                    prop_assert_eq!(wal.bytes, archived * STORED + wal.from_backup * MIB16.bytes());
                }
                Err(error) => {
                    let _ = error.to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod precise_tests {
    //! Planning with decoded WAL (a synthetic source): exact consistent
    //! points, exact archive end, the stop record, xid and name targets.

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::SystemTime;

    use chrono::{Duration, Utc};

    use super::*;
    use crate::repo::backup::{BackupFormat, StopTimeSource};
    use crate::repo::label::{BackupLabel, LabelTime};
    use crate::wal::facts::fake::FakeWal;
    use crate::wal::facts::StopKind;
    use crate::wal::timelines::PathStep;
    use crate::wal::SegmentSize;

    const SEG: u64 = 16 << 20;

    fn at(minutes: i64, seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
            + Duration::seconds(seconds)
    }

    fn backup(id: &str, segment: u64, stop_time: DateTime<Utc>) -> Backup {
        let start_lsn = Lsn::new(segment * SEG + 0x28);
        Backup {
            id: id.to_string(),
            format: BackupFormat::Plain,
            label: BackupLabel {
                start_lsn,
                start_segment: WalSegment::containing(
                    TimelineId::FIRST,
                    start_lsn,
                    SegmentSize::DEFAULT,
                )
                .file_name(),
                checkpoint_lsn: Lsn::new(start_lsn.value() + 0x38),
                method: "streamed".into(),
                from: Some("primary".into()),
                start_time: LabelTime {
                    text: String::new(),
                    instant: None,
                },
                label: id.into(),
                start_timeline: TimelineId::FIRST,
                incremental_from: None,
            },
            timeline: TimelineId::FIRST,
            start_lsn,
            stop_lsn: Lsn::new(segment * SEG + 0x138),
            stop_time: stop_time.fixed_offset(),
            stop_time_source: StopTimeSource::BackupHistoryFile,
            system_identifier: None,
            major_version: Some(15),
            included_wal: Default::default(),
            stored_bytes: 0,
            has_manifest: true,
            files: Default::default(),
            tablespaces: Vec::new(),
        }
    }

    /// Segments 2..=0x18; in each, a commit at offset 0x100 (before a
    /// backup's stop at 0x138) stamped n min 10 s, xid 1000 + n; a restore
    /// point "rp" in segment 0x10.
    fn world() -> (Vec<Backup>, WalArchive, FakeWal) {
        let backups = vec![backup("b1", 2, at(2, 30)), backup("b2", 8, at(8, 30))];
        let mut events = BTreeMap::new();
        for n in 2..=0x18u64 {
            let start = Lsn::new(n * SEG + 0x100);
            let mut list = vec![StopEvent {
                start,
                end: Lsn::new(start.value() + 34),
                time: at(n as i64, 10),
                kind: StopKind::Commit {
                    xid: 1000 + n as u32,
                },
            }];
            if n == 0x10 {
                list.push(StopEvent {
                    start: Lsn::new(n * SEG + 0x4000),
                    end: Lsn::new(n * SEG + 0x4060),
                    time: at(n as i64, 20),
                    kind: StopKind::RestorePoint { name: "rp".into() },
                });
            }
            events.insert(n, list);
        }
        let archive = WalArchive::from_listing(
            Path::new("/repo/wal"),
            SegmentSize::DEFAULT,
            (2..=0x18u64).map(|n| {
                let segment = WalSegment {
                    timeline: TimelineId::FIRST,
                    number: n,
                    size: SegmentSize::DEFAULT,
                };
                (segment, 1000, SystemTime::from(at(n as i64 + 1, 0)))
            }),
        );
        let wal = FakeWal {
            size: SegmentSize::DEFAULT,
            path: TimelinePath {
                steps: vec![PathStep {
                    timeline: TimelineId::FIRST,
                    begins: Lsn::ZERO,
                    ends: None,
                }],
            },
            events,
            present: 2..=0x18,
        };
        (backups, archive, wal)
    }

    fn plan(target: Target, inclusive: bool) -> Result<Plan, PlanError> {
        let (backups, archive, wal) = world();
        let request = PlanRequest {
            target,
            inclusive,
            backup_id: None,
            timeline: TimelineChoice::Latest,
        };
        make_plan(
            &backups,
            0,
            &archive,
            &request,
            &jiff::tz::TimeZone::UTC,
            Some(&wal),
        )
    }

    fn time(t: DateTime<Utc>) -> Target {
        Target::Time(t.fixed_offset())
    }

    #[test]
    fn a_target_between_the_last_commit_and_stop_time_uses_that_backup() {
        // b2's last commit before its end is at 8 min 10 s; its STOP TIME is
        // 8 min 30 s. A file-level plan would need 8 min 31 s.
        let chosen = plan(time(at(8, 20)), true).unwrap();
        assert_eq!(chosen.backup.id, "b2");
        assert!(chosen.window.exact);
        let stop = chosen.stop.unwrap();
        assert_eq!(stop.time, at(9, 10));
        assert_eq!(
            chosen.wal.last.number, 9,
            "the range ends at the stop record's segment"
        );
        // At exactly that commit: inclusive keeps it (b2), exclusive cannot.
        assert_eq!(plan(time(at(8, 10)), true).unwrap().backup.id, "b2");
        assert_eq!(plan(time(at(8, 10)), false).unwrap().backup.id, "b1");
        assert_eq!(plan(time(at(8, 5)), true).unwrap().backup.id, "b1");
    }

    #[test]
    fn the_archive_ends_at_its_last_commit() {
        let error = plan(time(at(0x18, 10)), true).unwrap_err();
        assert!(
            matches!(error, PlanError::TargetAfterLastCommit { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("10:24:10.000000"), "{error}");
        let just_before = plan(time(at(0x18, 9)), true).unwrap();
        assert_eq!(just_before.stop.unwrap().time, at(0x18, 10));
        // Exclusive at exactly the last commit stops before it: reachable.
        let exclusive = plan(time(at(0x18, 10)), false).unwrap();
        assert_eq!(exclusive.backup.id, just_before.backup.id);
        assert_eq!(exclusive.wal.last, just_before.wal.last);
        let early = plan(time(at(1, 0)), true).unwrap_err();
        assert!(
            matches!(early, PlanError::TargetBeforeWindow { .. }),
            "{early}"
        );
    }

    #[test]
    fn xid_and_name_targets_are_located() {
        let xid = plan(Target::Xid(crate::wal::xid::Xid::Bare(1012)), true).unwrap();
        assert_eq!(
            xid.backup.id, "b2",
            "the newest backup that ends before the transaction"
        );
        assert_eq!(xid.wal.last.number, 12);
        let early = plan(Target::Xid(crate::wal::xid::Xid::Bare(1005)), true).unwrap();
        assert_eq!(early.backup.id, "b1");
        assert!(matches!(
            plan(Target::Xid(crate::wal::xid::Xid::Bare(77)), true),
            Err(PlanError::TargetNotInWal { .. })
        ));
        let name = plan(Target::Name("rp".into()), true).unwrap();
        assert_eq!(name.backup.id, "b2");
        assert_eq!(name.wal.last.number, 0x10);
        assert!(matches!(
            plan(Target::Name("nope".into()), true),
            Err(PlanError::TargetNotInWal { .. })
        ));
    }

    fn plan_with(
        backups: &[Backup],
        wal: &dyn WalSource,
        archive: &WalArchive,
        target: Target,
    ) -> Result<Plan, PlanError> {
        let request = PlanRequest {
            target,
            inclusive: true,
            backup_id: None,
            timeline: TimelineChoice::Latest,
        };
        make_plan(
            backups,
            0,
            archive,
            &request,
            &jiff::tz::TimeZone::UTC,
            Some(wal),
        )
    }

    /// A synthetic archive with some segments gone, and checkpoint records
    /// (their next full xid) in some.
    struct Gappy {
        wal: FakeWal,
        missing: Vec<u64>,
        checkpoints: BTreeMap<u64, crate::wal::xid::FullXid>,
    }

    impl WalSource for Gappy {
        fn segment_size(&self) -> SegmentSize {
            self.wal.segment_size()
        }

        fn facts(
            &self,
            segment: WalSegment,
        ) -> Result<Option<crate::wal::facts::SegmentFacts>, crate::wal::facts::FactsError>
        {
            if self.missing.contains(&segment.number) {
                return Ok(None);
            }
            Ok(self.wal.facts(segment)?.map(|mut facts| {
                if let Some(next_xid) = self.checkpoints.get(&segment.number) {
                    facts.add_checkpoint(*next_xid);
                }
                facts
            }))
        }

        fn events(
            &self,
            segment: WalSegment,
        ) -> Result<Vec<StopEvent>, crate::wal::facts::FactsError> {
            self.wal.events(segment)
        }
    }

    /// A quiet cluster: commits in segments 2 and 3, then nothing until the
    /// backup in segment 8 (its stop time 8 min 30 s), then commits again.
    fn quiet_world(missing: &[u64]) -> (Vec<Backup>, WalArchive, Gappy) {
        let (_, _, mut wal) = world();
        for n in 4..=8 {
            wal.events.insert(n, Vec::new());
        }
        let archive = WalArchive::from_listing(
            Path::new("/repo/wal"),
            SegmentSize::DEFAULT,
            (2..=0x18u64).filter(|n| !missing.contains(n)).map(|n| {
                let segment = WalSegment {
                    timeline: TimelineId::FIRST,
                    number: n,
                    size: SegmentSize::DEFAULT,
                };
                (segment, 1000, SystemTime::from(at(n as i64 + 1, 0)))
            }),
        );
        let wal = Gappy {
            wal,
            missing: missing.to_vec(),
            checkpoints: BTreeMap::new(),
        };
        (vec![backup("b", 8, at(8, 30))], archive, wal)
    }

    #[test]
    fn a_quiet_target_before_a_backup_starts_at_its_last_commit_segments_back() {
        let (backups, archive, wal) = quiet_world(&[]);
        // The last commit before the backup's end is in segment 3, at
        // 3 min 10 s: nothing changes from then to the backup's end.
        let chosen = plan_with(&backups, &wal, &archive, time(at(6, 0))).unwrap();
        assert_eq!(chosen.backup.id, "b");
        assert_eq!(chosen.window.from, at(3, 10).fixed_offset());
        assert_eq!(chosen.window.from_note, None);
        assert_eq!(chosen.stop.unwrap().time, at(9, 10));
        // Before that commit the backup cannot reach.
        let early = plan_with(&backups, &wal, &archive, time(at(3, 9))).unwrap_err();
        assert!(
            matches!(early, PlanError::TargetBeforeWindow { .. }),
            "{early}"
        );
        assert!(early.to_string().contains("10:03:10.000000"), "{early}");
    }

    #[test]
    fn a_quiet_target_falls_back_to_the_stop_time_where_segments_are_gone() {
        // Segment 5 is gone: the search cannot see past it.
        let (backups, archive, wal) = quiet_world(&[5]);
        let refused = plan_with(&backups, &wal, &archive, time(at(6, 0))).unwrap_err();
        let message = refused.to_string();
        assert!(
            matches!(refused, PlanError::TargetBeforeWindow { .. }),
            "{message}"
        );
        assert!(
            message.contains("WAL segment `000000010000000000000005` is missing")
                && message.contains("its window starts at its stop time"),
            "{message}"
        );
        // The fallback is the stop time rounded up.
        let chosen = plan_with(&backups, &wal, &archive, time(at(8, 31))).unwrap();
        assert_eq!(chosen.window.from, at(8, 31).fixed_offset());
        assert!(chosen.window.from_note.is_some());
    }

    #[test]
    fn a_64_bit_xid_must_be_of_the_epoch_the_wal_holds() {
        use crate::wal::xid::{FullXid, Xid};
        let (backups, archive, wal) = world();
        let epoch = |e: u64, xid: u64| FullXid::new((e << 32) + xid);
        // The backups' checkpoints: segment 2 in epoch 1 (next xid 1001),
        // segment 8 in epoch 1 (next xid 1007).
        let wal = Gappy {
            wal,
            missing: Vec::new(),
            checkpoints: BTreeMap::from([(2, epoch(1, 1001)), (8, epoch(1, 1007))]),
        };
        let full = |value: u64| Target::Xid(Xid::Full(FullXid::new(value)));
        let right = plan_with(&backups, &wal, &archive, full((1 << 32) + 1012)).unwrap();
        assert_eq!(right.backup.id, "b2");
        assert_eq!(right.stop.unwrap().xid(), Some(1012));
        assert!(
            right.notes.iter().all(|n| !n.contains("epoch")),
            "{:?}",
            right.notes
        );
        // The same 32-bit xid from epoch 2 (or 0: a bare value is any epoch).
        let wrong = plan_with(&backups, &wal, &archive, full((2 << 32) + 1012)).unwrap_err();
        let message = wrong.to_string();
        assert!(
            matches!(wrong, PlanError::TargetNotInWal { .. }),
            "{message}"
        );
        assert!(
            message.contains("is 4294968308 of epoch 1") && message.contains("not of epoch 2"),
            "{message}"
        );
        assert!(plan_with(&backups, &wal, &archive, Target::Xid(Xid::Bare(1012))).is_ok());
        // Without any checkpoint record the epoch cannot be checked: said.
        let (backups, archive, wal) = world();
        let unchecked = plan_with(&backups, &wal, &archive, full((2 << 32) + 1012)).unwrap();
        assert!(
            unchecked
                .notes
                .iter()
                .any(|n| n.contains("epoch of transaction") && n.contains("not checked")),
            "{:?}",
            unchecked.notes
        );
    }

    #[test]
    fn of_two_backups_from_one_checkpoint_the_one_consistent_after_the_target_is_never_chosen() {
        let (_, archive, wal) = world();
        // Same start in segment 8. The primary's backup ends just after
        // the commit at 8 min 10 s, the standby's in segment 9 just after
        // the commit at 9 min 10 s.
        let primary = backup("primary", 8, at(8, 30));
        let mut standby = backup("standby", 8, at(9, 40));
        standby.stop_lsn = Lsn::new(9 * SEG + 0x200);
        standby.stop_time_source = StopTimeSource::ManifestWritten;
        for backups in [
            vec![standby.clone(), primary.clone()],
            vec![primary.clone(), standby.clone()],
        ] {
            let between = plan_with(&backups, &wal, &archive, time(at(9, 0))).unwrap();
            assert_eq!(between.backup.id, "primary");
            let after = plan_with(&backups, &wal, &archive, time(at(9, 20))).unwrap();
            assert_eq!(after.backup.id, "standby");
            let xid = plan_with(
                &backups,
                &wal,
                &archive,
                Target::Xid(crate::wal::xid::Xid::Bare(1009)),
            )
            .unwrap();
            assert_eq!(
                xid.backup.id, "primary",
                "the commit at 9 min 10 s lies before the standby's end"
            );
        }
    }

    #[test]
    fn lsn_targets_must_lie_inside_the_wal() {
        // b2 is the newest backup that ends before segment 0x12 (it ends
        // before 0x10, where the restore point is); the WAL runs to 0x12.
        let inside = plan(Target::Lsn(Lsn::new(0x12 * SEG)), true).unwrap();
        assert_eq!(inside.backup.id, "b2");
        assert_eq!(inside.wal.last.number, 0x12);
        let beyond = plan(Target::Lsn(Lsn::new(0x30 * SEG)), true).unwrap_err();
        assert!(
            matches!(beyond, PlanError::TargetNotInWal { .. }),
            "{beyond}"
        );
    }
}
