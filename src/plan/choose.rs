//! Choosing the timeline path and the backup: from file-level facts
//! (backup stop times, archive file times), or exactly from the decoded WAL
//! (consistent points, the record the target stops at).

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::facts::{
    find_restore_point, find_xid, full_xid_of, last_transaction_end, time_stop, wal_end, Span,
    StopEvent, WalSource,
};
use crate::wal::timelines::TimelinePath;
use crate::wal::{Lsn, TimelineId, WalSegment};

use super::window::{consistent_time, fixed, precise_utc, utc, window, WindowStart};
use super::{PlanError, PlanRequest, RecoverableWindow};

/// What reading the WAL decides: the backup, the exact window, the record
/// the target stops at, and where the archive's valid WAL ends.
pub(super) struct Precise {
    pub(super) backup: Backup,
    pub(super) reason: String,
    pub(super) window: RecoverableWindow,
    pub(super) stop: Option<StopEvent>,
    pub(super) wal_end: Option<(Lsn, Lsn)>,
    pub(super) notes: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn choose_with_wal(
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

pub(super) fn timeline_path(
    archive: &WalArchive,
    timeline: TimelineId,
) -> Result<TimelinePath, PlanError> {
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
pub(super) fn on_path(backup: &Backup, path: &TimelinePath) -> Result<(), String> {
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

pub(super) fn choose_backup<'a>(
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

pub(super) fn check_backup_reaches(
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
