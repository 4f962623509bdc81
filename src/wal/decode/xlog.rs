//! XLOG records (resource manager 0; info values and structs in
//! src/include/catalog/pg_control.h and xlog_internal.h):
//!
//! | info | record | main data |
//! |---|---|---|
//! | 0x00 / 0x10 | CHECKPOINT_SHUTDOWN / _ONLINE | `CheckPoint`: redo u64 @0, ThisTimeLineID u32 @8, PrevTimeLineID u32 @12, nextXid u64 (FullTransactionId, 8-aligned after the bool fullPageWrites) @24, …, time i64 (Unix seconds) @64 |
//! | 0x40 | SWITCH | none |
//! | 0x50 | BACKUP_END | the backup's start LSN u64 |
//! | 0x60 | PARAMETER_CHANGE | six i32 settings, then two bools |
//! | 0x70 | RESTORE_POINT | rp_time i64 (µs since 2000), rp_name `char[64]` |
//! | 0x90 | END_OF_RECOVERY | end_time i64, ThisTimeLineID u32, PrevTimeLineID u32 (17+: wal_level i32) |
//!
//! The offsets used are the same in 12–18: 17 put `wal_level` into
//! padding of `CheckPoint` and appended it to `xl_end_of_recovery`.

use chrono::DateTime;

use crate::wal::xid::FullXid;
use crate::wal::{Lsn, TimelineId};

use super::bytes::Bytes;
use super::event::{timestamp_tz, Checkpoint, EventKind, ParameterChange, WalLevel};

const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_BACKUP_END: u8 = 0x50;
const XLOG_PARAMETER_CHANGE: u8 = 0x60;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;

/// `MAXFNAMELEN`: the size of a restore point name, with its NUL.
const RESTORE_POINT_NAME_LEN: usize = 64;
/// Offset of `nextXid` in `CheckPoint`.
const CHECKPOINT_NEXT_XID_AT: usize = 24;
/// Offset of `time` in `CheckPoint`.
const CHECKPOINT_TIME_AT: usize = 64;

/// True for the record after which the rest of the segment is unused.
pub(super) fn is_switch(rmid: u8, rmgr_info: u8) -> bool {
    rmid == 0 && rmgr_info == XLOG_SWITCH
}

fn truncated(what: &str) -> String {
    format!("main data too short for {what}")
}

fn timeline(value: u32) -> Result<TimelineId, String> {
    TimelineId::new(value).ok_or_else(|| "timeline 0".to_string())
}

/// Decodes an XLOG record of interest; `Ok(None)` for the others
/// (NEXTOID, FPI, NOOP, …).
pub(super) fn parse(rmgr_info: u8, data: &[u8]) -> Result<Option<EventKind>, String> {
    let mut bytes = Bytes::new(data);
    let kind = match rmgr_info {
        XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
            let what = "a checkpoint";
            let redo = bytes.u64().ok_or_else(|| truncated(what))?;
            let this = bytes.u32().ok_or_else(|| truncated(what))?;
            let prev = bytes.u32().ok_or_else(|| truncated(what))?;
            let mut at_time = Bytes::new(data.get(CHECKPOINT_TIME_AT..).unwrap_or_default());
            let seconds = at_time.i64().ok_or_else(|| truncated(what))?;
            let mut at_next_xid =
                Bytes::new(data.get(CHECKPOINT_NEXT_XID_AT..).unwrap_or_default());
            let next_xid = at_next_xid.u64().ok_or_else(|| truncated(what))?;
            EventKind::Checkpoint(Checkpoint {
                next_xid: FullXid::new(next_xid),
                redo: Lsn::new(redo),
                timeline: timeline(this)?,
                prev_timeline: timeline(prev)?,
                time: DateTime::from_timestamp(seconds, 0)
                    .ok_or_else(|| format!("checkpoint time {seconds} out of range"))?,
                online: rmgr_info == XLOG_CHECKPOINT_ONLINE,
            })
        }
        XLOG_SWITCH => EventKind::Switch,
        XLOG_BACKUP_END => EventKind::BackupEnd {
            start_lsn: Lsn::new(bytes.u64().ok_or_else(|| truncated("a backup end"))?),
        },
        XLOG_PARAMETER_CHANGE => {
            let mut next = || bytes.i32().ok_or_else(|| truncated("a parameter change"));
            EventKind::ParameterChange(ParameterChange {
                max_connections: next()?,
                max_worker_processes: next()?,
                max_wal_senders: next()?,
                max_prepared_xacts: next()?,
                max_locks_per_xact: next()?,
                wal_level: WalLevel::from_raw(next()?),
            })
        }
        XLOG_RESTORE_POINT => {
            let micros = bytes.i64().ok_or_else(|| truncated("a restore point"))?;
            let name = bytes
                .take(RESTORE_POINT_NAME_LEN)
                .ok_or_else(|| truncated("a restore point"))?;
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            EventKind::RestorePoint {
                name: String::from_utf8_lossy(name).into_owned(),
                time: timestamp_tz(micros)
                    .ok_or_else(|| format!("restore point time {micros} out of range"))?,
            }
        }
        XLOG_END_OF_RECOVERY => {
            let what = "an end of recovery";
            let micros = bytes.i64().ok_or_else(|| truncated(what))?;
            let this = bytes.u32().ok_or_else(|| truncated(what))?;
            let prev = bytes.u32().ok_or_else(|| truncated(what))?;
            EventKind::EndOfRecovery {
                time: timestamp_tz(micros)
                    .ok_or_else(|| format!("end of recovery time {micros} out of range"))?,
                timeline: timeline(this)?,
                prev_timeline: timeline(prev)?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_point_name_stops_at_nul() {
        let mut data = 1_000_000i64.to_le_bytes().to_vec();
        let mut name = [0u8; 64];
        name[..3].copy_from_slice(b"rp1");
        data.extend_from_slice(&name);
        let Some(EventKind::RestorePoint { name, time }) = parse(0x70, &data).unwrap() else {
            panic!()
        };
        assert_eq!(name, "rp1");
        assert_eq!(time.to_rfc3339(), "2000-01-01T00:00:01+00:00");
        assert!(parse(0x70, &data[..40]).is_err());
    }

    #[test]
    fn checkpoint_fields() {
        let mut data = vec![0u8; 88];
        data[0..8].copy_from_slice(&0x27C_B5D8u64.to_le_bytes());
        data[8..12].copy_from_slice(&2u32.to_le_bytes());
        data[12..16].copy_from_slice(&1u32.to_le_bytes());
        data[24..32].copy_from_slice(&((1u64 << 32) + 727).to_le_bytes());
        data[64..72].copy_from_slice(&1_700_000_000i64.to_le_bytes());
        let Some(EventKind::Checkpoint(checkpoint)) = parse(0x00, &data).unwrap() else {
            panic!()
        };
        assert_eq!(checkpoint.next_xid, FullXid::new((1 << 32) + 727));
        assert_eq!(checkpoint.redo, Lsn::new(0x27C_B5D8));
        assert_eq!(checkpoint.timeline.value(), 2);
        assert_eq!(checkpoint.prev_timeline.value(), 1);
        assert!(!checkpoint.online);
        assert_eq!(checkpoint.time.timestamp(), 1_700_000_000);
        assert!(parse(0x10, &data[..70]).is_err());
        data[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse(0x10, &data).is_err());
    }

    #[test]
    fn others_are_skipped() {
        assert_eq!(parse(0x30, &[1, 0, 0, 0]).unwrap(), None);
        assert_eq!(parse(0x40, &[]).unwrap(), Some(EventKind::Switch));
        assert!(is_switch(0, 0x40) && !is_switch(1, 0x40));
    }
}
