//! Why no plan can reach the target: each refusal names what is missing
//! and, where there is one, the recoverable window.

use crate::wal::facts::FactsError;
use crate::wal::timelines::{TimelineError, TimelinePath};
use crate::wal::{Lsn, TimelineId, WalSegment};

use super::RecoverableWindow;

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
