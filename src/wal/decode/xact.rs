//! Transaction records (resource manager 1; src/include/access/xact.h,
//! `ParseCommitRecord` / `ParseAbortRecord` / `ParsePrepareRecord` in
//! src/backend/access/rmgrdesc/xactdesc.c).
//!
//! Commit and abort records share one layout, packed without padding:
//! `xact_time` (i64 µs since 2000), then — only if `XLOG_XACT_HAS_INFO` is
//! set in `xl_info` — an `xinfo` word whose bits say which optional parts
//! follow, in this order:
//!
//! | bit | part | layout |
//! |---|---|---|
//! | 0 DBINFO | database | dbId u32, tsId u32 |
//! | 1 SUBXACTS | subtransactions | n i32, n × xid u32 |
//! | 2 RELFILENODES | dropped relations | n i32, n × (spc, db, rel) u32 |
//! | 8 DROPPED_STATS (15+) | dropped stats | n i32, n × 12 bytes (15–17) or 16 bytes (18) |
//! | 3 INVALS (commit only) | invalidations | n i32, n × 16 bytes |
//! | 4 TWOPHASE | prepared xact | xid u32, then if bit 7 GID a NUL-terminated GID |
//! | 5 ORIGIN | replication origin | lsn u64, time i64 (unaligned) |
//!
//! Bit 6 (AE_LOCKS) is a flag only. The parts must account for every byte
//! of the main data: anything left over means we misread the record.

use crate::wal::Lsn;

use super::bytes::Bytes;
use super::event::{timestamp_tz, Origin, RelFileLocator, TransactionEnd, TransactionId};

/// `XLOG_XACT_OPMASK` and the operations we read.
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_PREPARE: u8 = 0x10;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// An xinfo word follows `xact_time`.
const XLOG_XACT_HAS_INFO: u8 = 0x80;

const XINFO_HAS_DBINFO: u32 = 1 << 0;
const XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XINFO_HAS_INVALS: u32 = 1 << 3;
const XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XINFO_HAS_ORIGIN: u32 = 1 << 5;
const XINFO_HAS_GID: u32 = 1 << 7;
const XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// `sizeof(SharedInvalidationMessage)`, the same in 12–18.
const INVAL_MESSAGE_LEN: usize = 16;
/// `sizeof(RelFileNode)` / `sizeof(RelFileLocator)`.
const RELFILE_LEN: usize = 12;

/// What a transaction record says, for the records we report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum XactRecord {
    Commit(TransactionEnd),
    Abort(TransactionEnd),
    Prepare {
        xid: TransactionId,
        gid: String,
        time: chrono::DateTime<chrono::Utc>,
    },
    /// Assignments, invalidations: nothing for recovery targets.
    Other,
}

/// Decodes the main data of a transaction record. `record_xid` is
/// `xl_xid`; `major` the PostgreSQL major version (for the size of a
/// dropped-stats item).
pub(super) fn parse(
    info: u8,
    record_xid: u32,
    data: &[u8],
    major: u32,
) -> Result<XactRecord, String> {
    let op = info & XLOG_XACT_OPMASK;
    let has_info = info & XLOG_XACT_HAS_INFO != 0;
    match op {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => {
            let end = parse_end(data, has_info, true, record_xid, major)?;
            Ok(XactRecord::Commit(TransactionEnd {
                two_phase: op == XLOG_XACT_COMMIT_PREPARED,
                ..end
            }))
        }
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => {
            let end = parse_end(data, has_info, false, record_xid, major)?;
            Ok(XactRecord::Abort(TransactionEnd {
                two_phase: op == XLOG_XACT_ABORT_PREPARED,
                ..end
            }))
        }
        XLOG_XACT_PREPARE => parse_prepare(data, major),
        _ => Ok(XactRecord::Other),
    }
}

fn truncated(part: &str) -> String {
    format!("main data ends inside its {part}")
}

/// Reads a count (an `int32`) and checks that `count × item_len` bytes follow.
fn counted<'a>(data: &mut Bytes<'a>, item_len: usize, part: &str) -> Result<Bytes<'a>, String> {
    let count = data.i32().ok_or_else(|| truncated(part))?;
    let count = usize::try_from(count).map_err(|_| format!("negative {part} count {count}"))?;
    let len = count.checked_mul(item_len).ok_or_else(|| truncated(part))?;
    data.take(len)
        .map(Bytes::new)
        .ok_or_else(|| truncated(part))
}

fn parse_end(
    main: &[u8],
    has_info: bool,
    is_commit: bool,
    record_xid: u32,
    major: u32,
) -> Result<TransactionEnd, String> {
    let mut data = Bytes::new(main);
    let micros = data.i64().ok_or_else(|| truncated("xact_time"))?;
    let time = timestamp_tz(micros).ok_or_else(|| format!("xact_time {micros} out of range"))?;
    let xinfo = if has_info {
        data.u32().ok_or_else(|| truncated("xinfo"))?
    } else {
        0
    };
    if xinfo & XINFO_HAS_DBINFO != 0 {
        data.take(8).ok_or_else(|| truncated("dbinfo"))?;
    }
    let mut subtransactions = Vec::new();
    if xinfo & XINFO_HAS_SUBXACTS != 0 {
        let mut items = counted(&mut data, 4, "subxacts")?;
        while let Some(xid) = items.u32() {
            subtransactions.push(TransactionId::new(xid));
        }
    }
    let mut dropped_relations = Vec::new();
    if xinfo & XINFO_HAS_RELFILENODES != 0 {
        let mut items = counted(&mut data, RELFILE_LEN, "relfilenodes")?;
        while let (Some(tablespace), Some(database), Some(relation)) =
            (items.u32(), items.u32(), items.u32())
        {
            dropped_relations.push(RelFileLocator {
                tablespace,
                database,
                relation,
            });
        }
    }
    if xinfo & XINFO_HAS_DROPPED_STATS != 0 {
        // xl_xact_stats_item: kind, dboid, objoid (15–17); 18 widened the
        // object id to objid_lo + objid_hi.
        let item_len = if major >= 18 { 16 } else { 12 };
        counted(&mut data, item_len, "dropped stats")?;
    }
    if is_commit && xinfo & XINFO_HAS_INVALS != 0 {
        counted(&mut data, INVAL_MESSAGE_LEN, "invalidations")?;
    }
    let mut twophase_xid = None;
    let mut gid = None;
    if xinfo & XINFO_HAS_TWOPHASE != 0 {
        twophase_xid = Some(data.u32().ok_or_else(|| truncated("twophase xid"))?);
        if xinfo & XINFO_HAS_GID != 0 {
            let text = data.c_string().ok_or_else(|| truncated("gid"))?;
            gid = Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    let mut origin = None;
    if xinfo & XINFO_HAS_ORIGIN != 0 {
        let lsn = data.u64().ok_or_else(|| truncated("origin"))?;
        let micros = data.i64().ok_or_else(|| truncated("origin"))?;
        let time = timestamp_tz(micros)
            .ok_or_else(|| format!("origin timestamp {micros} out of range"))?;
        origin = Some(Origin {
            lsn: Lsn::new(lsn),
            time,
        });
    }
    if data.len() != 0 {
        return Err(format!(
            "{} bytes left after the parts that xinfo {xinfo:#x} announces",
            data.len()
        ));
    }
    Ok(TransactionEnd {
        // Recovery uses the prepared transaction's xid when there is one.
        xid: TransactionId::new(twophase_xid.unwrap_or(record_xid)),
        time,
        subtransactions,
        dropped_relations,
        two_phase: false,
        gid,
        origin,
    })
}

/// `xl_xact_prepare` (the start of the two-phase state, also logged as the
/// PREPARE record): magic u32 @0, total_len u32 @4, xid u32 @8, database
/// u32 @12, prepared_at i64 @16, … `gidlen` u16 @46 (12–14) or @54 (15+,
/// after the two dropped-stats counts); the GID (gidlen bytes with its NUL)
/// follows the header, MAXALIGNed to 64 (12–14) or 72 bytes (15+).
fn parse_prepare(main: &[u8], major: u32) -> Result<XactRecord, String> {
    let mut data = Bytes::new(main);
    data.take(8).ok_or_else(|| truncated("prepare header"))?;
    let xid = data.u32().ok_or_else(|| truncated("prepare header"))?;
    data.take(4).ok_or_else(|| truncated("prepare header"))?;
    let micros = data.i64().ok_or_else(|| truncated("prepare header"))?;
    let time = timestamp_tz(micros).ok_or_else(|| format!("prepared_at {micros} out of range"))?;
    let (gidlen_at, header_len) = if major >= 15 { (54, 72) } else { (46, 64) };
    let gid_len =
        super::bytes::u16_at(main, gidlen_at).ok_or_else(|| truncated("prepare header"))?;
    let gid = main
        .get(header_len..)
        .and_then(|rest| rest.get(..usize::from(gid_len)))
        .ok_or_else(|| truncated("gid"))?;
    let gid = gid.split(|&b| b == 0).next().unwrap_or_default();
    Ok(XactRecord::Prepare {
        xid: TransactionId::new(xid),
        gid: String::from_utf8_lossy(gid).into_owned(),
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(micros: i64) -> Vec<u8> {
        micros.to_le_bytes().to_vec()
    }

    #[test]
    fn plain_commit_is_just_a_time() {
        let XactRecord::Commit(end) = parse(0x00, 726, &ts(1_000_001), 15).unwrap() else {
            panic!()
        };
        assert_eq!(end.xid, TransactionId::new(726));
        assert_eq!(end.time.timestamp_subsec_micros(), 1);
        assert!(end.subtransactions.is_empty() && !end.two_phase);
    }

    #[test]
    fn every_part_in_order() {
        let mut data = ts(5);
        let xinfo = XINFO_HAS_DBINFO
            | XINFO_HAS_SUBXACTS
            | XINFO_HAS_RELFILENODES
            | XINFO_HAS_DROPPED_STATS
            | XINFO_HAS_INVALS
            | XINFO_HAS_TWOPHASE
            | XINFO_HAS_GID
            | XINFO_HAS_ORIGIN;
        data.extend_from_slice(&xinfo.to_le_bytes());
        data.extend_from_slice(&[5, 0, 0, 0, 0x7F, 6, 0, 0]); // dbinfo
        data.extend_from_slice(&2i32.to_le_bytes());
        data.extend_from_slice(&727u32.to_le_bytes());
        data.extend_from_slice(&728u32.to_le_bytes());
        data.extend_from_slice(&1i32.to_le_bytes());
        for v in [1663u32, 5, 16389] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&1i32.to_le_bytes());
        data.extend_from_slice(&[0; 12]); // one 15–17 stats item
        data.extend_from_slice(&1i32.to_le_bytes());
        data.extend_from_slice(&[0; 16]); // one invalidation
        data.extend_from_slice(&730u32.to_le_bytes());
        data.extend_from_slice(b"gx1\0");
        data.extend_from_slice(&0xAABBCCu64.to_le_bytes());
        data.extend_from_slice(&7i64.to_le_bytes());
        let XactRecord::Commit(end) = parse(0xB0, 0, &data, 15).unwrap() else {
            panic!()
        };
        assert_eq!(end.xid, TransactionId::new(730));
        assert!(end.two_phase);
        assert_eq!(
            end.subtransactions,
            vec![TransactionId::new(727), TransactionId::new(728)]
        );
        assert_eq!(
            end.dropped_relations,
            vec![RelFileLocator {
                tablespace: 1663,
                database: 5,
                relation: 16389
            }]
        );
        assert_eq!(end.gid.as_deref(), Some("gx1"));
        assert_eq!(end.origin.unwrap().lsn, Lsn::new(0xAABBCC));
        // 18's stats items are 16 bytes: the same bytes no longer fit.
        {
            let error = parse(0xB0, 0, &data, 18).unwrap_err().to_string();
            assert!(error.contains("15 bytes left after"), "{error}");
        }
        // An abort has no invalidations: the 20 bytes are left over.
        {
            let error = parse(0xC0, 0, &data, 15).unwrap_err().to_string();
            assert!(error.contains("23 bytes left after"), "{error}");
        }
    }

    #[test]
    fn bad_counts_are_errors_not_panics() {
        let mut data = ts(5);
        data.extend_from_slice(&XINFO_HAS_SUBXACTS.to_le_bytes());
        data.extend_from_slice(&(-1i32).to_le_bytes());
        {
            let error = parse(0x80, 1, &data, 15).unwrap_err().to_string();
            assert!(error.contains("negative subxacts count"), "{error}");
        }
        let mut data = ts(5);
        data.extend_from_slice(&XINFO_HAS_SUBXACTS.to_le_bytes());
        data.extend_from_slice(&i32::MAX.to_le_bytes());
        {
            let error = parse(0x80, 1, &data, 15).unwrap_err().to_string();
            assert!(
                error.contains("main data ends inside its subxacts"),
                "{error}"
            );
        }
        {
            let error = parse(0x00, 1, &[1, 2, 3], 15).unwrap_err().to_string();
            assert!(error.contains("ends inside its xact_time"), "{error}");
        }
        {
            let error = parse(0x00, 1, &i64::MAX.to_le_bytes(), 15)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("xact_time 9223372036854775807 out of range"),
                "{error}"
            );
        }
    }

    #[test]
    fn other_operations_are_skipped() {
        assert_eq!(parse(0x50, 1, &[], 15).unwrap(), XactRecord::Other);
        assert_eq!(parse(0x60, 1, &[], 15).unwrap(), XactRecord::Other);
    }

    #[test]
    fn prepare_reads_xid_time_and_gid() {
        let mut data = vec![0u8; 72];
        data[8..12].copy_from_slice(&730u32.to_le_bytes());
        data[16..24].copy_from_slice(&9i64.to_le_bytes());
        data[54..56].copy_from_slice(&4u16.to_le_bytes());
        data.extend_from_slice(b"gx1\0");
        let XactRecord::Prepare { xid, gid, .. } = parse(0x10, 730, &data, 15).unwrap() else {
            panic!()
        };
        assert_eq!(xid, TransactionId::new(730));
        assert_eq!(gid, "gx1");
        {
            let error = parse(0x10, 730, &data[..60], 15).unwrap_err().to_string();
            assert!(error.contains("ends inside its gid"), "{error}");
        }
    }
}
