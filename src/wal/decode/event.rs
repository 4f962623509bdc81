//! What the decoder reports: the records that matter for point-in-time
//! recovery, each with its place in the WAL.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::wal::xid::FullXid;
use crate::wal::{Lsn, TimelineId};

/// A PostgreSQL transaction ID (32-bit, wrapping; no epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransactionId(u32);

impl TransactionId {
    pub const fn new(value: u32) -> TransactionId {
        TransactionId(value)
    }

    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A relation's storage: `RelFileNode` (12–15) / `RelFileLocator` (16+).
/// Its main fork is the file `base/<database>/<relation>` for the default
/// tablespace (1663), as pg_waldump prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelFileLocator {
    /// Tablespace OID (`spcOid`).
    pub tablespace: u32,
    /// Database OID (`dbOid`), 0 for shared relations.
    pub database: u32,
    /// `relNumber` (the relfilenode).
    pub relation: u32,
}

/// The replication origin recorded with a transaction's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub lsn: Lsn,
    pub time: DateTime<Utc>,
}

/// A commit or abort: `XLOG_XACT_COMMIT[_PREPARED]` / `XLOG_XACT_ABORT[_PREPARED]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionEnd {
    /// The transaction that ended; for `*_PREPARED` records, the prepared
    /// transaction's xid (the record itself carries xid 0).
    pub xid: TransactionId,
    /// `xact_time`: the commit or abort time recovery targets compare with.
    pub time: DateTime<Utc>,
    pub subtransactions: Vec<TransactionId>,
    /// Relations whose files are removed by this commit or abort.
    pub dropped_relations: Vec<RelFileLocator>,
    /// True for `COMMIT PREPARED` / `ROLLBACK PREPARED`.
    pub two_phase: bool,
    /// The prepared transaction's GID, when logged (wal_level=logical).
    pub gid: Option<String>,
    pub origin: Option<Origin>,
}

/// A checkpoint record (`XLOG_CHECKPOINT_SHUTDOWN` / `_ONLINE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where replay must start to use this checkpoint.
    pub redo: Lsn,
    pub timeline: TimelineId,
    pub prev_timeline: TimelineId,
    /// The checkpoint's time, to the second.
    pub time: DateTime<Utc>,
    /// The next transaction ID to assign, epoch included (`nextXid`, a
    /// `FullTransactionId` since PostgreSQL 12): what tells the epoch of
    /// the 32-bit xids in the WAL around it.
    pub next_xid: FullXid,
    /// False for a shutdown checkpoint (also written at the end of a PITR).
    pub online: bool,
}

/// `wal_level` as PostgreSQL numbers it (`WalLevel` in xlog.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalLevel {
    Minimal,
    Replica,
    Logical,
    Unknown(i32),
}

impl WalLevel {
    pub(super) fn from_raw(value: i32) -> WalLevel {
        match value {
            0 => WalLevel::Minimal,
            1 => WalLevel::Replica,
            2 => WalLevel::Logical,
            other => WalLevel::Unknown(other),
        }
    }
}

/// `XLOG_PARAMETER_CHANGE`: settings a standby or a recovery must match or
/// exceed (`xl_parameter_change`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterChange {
    pub max_connections: i32,
    pub max_worker_processes: i32,
    pub max_wal_senders: i32,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub wal_level: WalLevel,
}

/// What a record means for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Commit(TransactionEnd),
    Abort(TransactionEnd),
    /// `PREPARE TRANSACTION`: the transaction stays in doubt until a
    /// `COMMIT PREPARED` or `ROLLBACK PREPARED` names it.
    Prepare {
        xid: TransactionId,
        gid: String,
        time: DateTime<Utc>,
    },
    /// `pg_create_restore_point(name)`.
    RestorePoint {
        name: String,
        time: DateTime<Utc>,
    },
    /// `XLOG_SWITCH`: the rest of the segment is unused.
    Switch,
    /// The end of a base backup; the record's end is the backup's stop LSN.
    BackupEnd {
        start_lsn: Lsn,
    },
    Checkpoint(Checkpoint),
    /// Written by a promotion (`pg_promote()`) instead of a checkpoint.
    EndOfRecovery {
        time: DateTime<Utc>,
        timeline: TimelineId,
        prev_timeline: TimelineId,
    },
    ParameterChange(ParameterChange),
}

/// One decoded record of interest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Where the record starts (what pg_waldump prints as `lsn:`).
    pub start: Lsn,
    /// Where the next record may start: the end of this record's bytes,
    /// MAXALIGNed (PostgreSQL's `EndRecPtr`, and what `pg_switch_wal()` or
    /// `pg_backup_stop()` return for their records).
    pub end: Lsn,
    pub kind: EventKind,
}

/// Converts a `TimestampTz` (µs since 2000-01-01 00:00 UTC) to UTC, keeping
/// the microseconds; `None` for ±infinity and values chrono cannot hold.
pub(super) fn timestamp_tz(micros: i64) -> Option<DateTime<Utc>> {
    /// Seconds from the Unix epoch to PostgreSQL's epoch.
    const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;
    DateTime::from_timestamp_micros(micros.checked_add(POSTGRES_EPOCH_UNIX_MICROS)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_from_2000_and_keep_microseconds() {
        assert_eq!(
            timestamp_tz(0).unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
        let t = timestamp_tz(848_805_173_941_733).unwrap();
        assert_eq!(
            t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            "2026-11-24 03:12:53.941733"
        );
        assert_eq!(timestamp_tz(i64::MAX), None);
        assert_eq!(timestamp_tz(i64::MIN), None);
    }
}
