//! The record header (`XLogRecord`, src/include/access/xlogrecord.h), its
//! CRC, and the walk over block references that finds the main data
//! (`DecodeXLogRecord` in src/backend/access/transam/xlogreader.c).
//!
//! A record is a 24-byte header followed by fragment headers and then the
//! fragments' data:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | `xl_tot_len`, the whole record including this header |
//! | 4 | 4 | `xl_xid` |
//! | 8 | 8 | `xl_prev`, the start of the previous record |
//! | 16 | 1 | `xl_info` (high 4 bits: resource-manager specific) |
//! | 17 | 1 | `xl_rmid`, the resource manager |
//! | 20 | 4 | `xl_crc`, CRC-32C of bytes 24.. then of bytes 0..20 |
//!
//! Fragment headers: block references (id 0–32, with an optional image
//! header, relation and block number), a top-level xid (252), a replication
//! origin (253), and last the main-data length (254 long, 255 short). The
//! data follows in the same order — per block its image then its data, then
//! the main data — so the main data is the record's last bytes. We only
//! need the main data, but walk every header so that the lengths are
//! proven to add up to `xl_tot_len`.

use std::ops::Range;

use crate::wal::Lsn;

use super::bytes::{u32_at, u64_at, Bytes};
use super::error::Problem;
use super::event::RelFileLocator;

pub(super) const RECORD_HEADER_LEN: usize = 24;
/// `xl_tot_len` above this cannot be real: PostgreSQL never allocates more
/// than `MaxAllocSize` (1 GiB − 1) for a record.
pub(super) const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;

/// Offset of `xl_crc`: the CRC covers the header up to here.
const CRC_OFFSET: usize = 20;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;

const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;

const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// 12–14: one compression method, one flag.
const BKPIMAGE_IS_COMPRESSED_PRE15: u8 = 0x02;
/// 15+: pglz, lz4 or zstd.
const BKPIMAGE_COMPRESSED_15: u8 = 0x04 | 0x08 | 0x10;

/// The fixed header of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RecordHeader {
    pub total_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    pub info: u8,
    pub rmid: u8,
    pub crc: u32,
}

impl RecordHeader {
    /// Reads the 24-byte header; `None` if fewer bytes are given.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Option<RecordHeader> {
        Some(RecordHeader {
            total_len: u32_at(bytes, 0)?,
            xid: u32_at(bytes, 4)?,
            prev: Lsn::new(u64_at(bytes, 8)?),
            info: *bytes.get(16)?,
            rmid: *bytes.get(17)?,
            crc: u32_at(bytes, 20)?,
        })
    }

    /// The resource-manager specific bits of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.info & 0xF0
    }
}

/// Rejects lengths no record can have. (Zero is the end of WAL, which the
/// caller checks first.)
pub(super) fn check_length(total_len: u32) -> Result<(), Problem> {
    if total_len < RECORD_HEADER_LEN as u32 || total_len > MAX_RECORD_LEN {
        return Err(Problem::BadRecordLength { length: total_len });
    }
    Ok(())
}

/// Checks the CRC of a whole record (`record.len() == xl_tot_len`).
#[inline]
pub(super) fn check_crc(record: &[u8], header: &RecordHeader) -> Result<(), Problem> {
    let (Some(head), Some(body)) = (record.get(..CRC_OFFSET), record.get(RECORD_HEADER_LEN..))
    else {
        return Err(Problem::BadRecordLength {
            length: header.total_len,
        });
    };
    let computed = crc32c::crc32c_append(crc32c::crc32c(body), head);
    if computed != header.crc {
        return Err(Problem::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Walks the fragment headers of a whole record and returns where its main
/// data lies in it.
/// `major` (the PostgreSQL major version) decides how a compressed image
/// is flagged, which decides whether a hole length follows.
#[inline]
pub(super) fn main_data(record: &[u8], major: u32) -> Result<Range<usize>, Problem> {
    walk_fragments(record, major, |_| {})
}

/// The relations whose blocks a whole record references (its block
/// references' `RelFileNode`/`RelFileLocator`, any fork), each once, in the
/// order of the references: what `pg_waldump` prints as `blkref #N: rel
/// spc/db/rel`.
pub(super) fn block_relations(record: &[u8], major: u32) -> Result<Vec<RelFileLocator>, Problem> {
    let mut relations: Vec<RelFileLocator> = Vec::new();
    walk_fragments(record, major, |relation| {
        if !relations.contains(&relation) {
            relations.push(relation);
        }
    })?;
    Ok(relations)
}

/// The walk behind [`main_data`] and [`block_relations`]: `on_block` gets
/// the relation of every block reference.
#[inline]
fn walk_fragments(
    record: &[u8],
    major: u32,
    mut on_block: impl FnMut(RelFileLocator),
) -> Result<Range<usize>, Problem> {
    let bad = Problem::BadBlockReferences;
    let body = record
        .get(RECORD_HEADER_LEN..)
        .ok_or(bad("record shorter than its header"))?;
    let mut headers = Bytes::new(body);
    let compressed_mask = if major >= 15 {
        BKPIMAGE_COMPRESSED_15
    } else {
        BKPIMAGE_IS_COMPRESSED_PRE15
    };
    let short = || bad("fragment headers run past the end of the record");
    // Bytes of fragment data announced so far; u64 so no sum can overflow.
    let mut data_total: u64 = 0;
    let mut main_len: u64 = 0;
    let mut last_block: Option<u8> = None;
    let mut relation: Option<RelFileLocator> = None;
    while headers.len() as u64 > data_total {
        let id = headers.u8().ok_or_else(short)?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = u64::from(headers.u8().ok_or_else(short)?);
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u64::from(headers.u32().ok_or_else(short)?);
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                headers.u16().ok_or_else(short)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                headers.u32().ok_or_else(short)?;
            }
            0..=XLR_MAX_BLOCK_ID => {
                if last_block.is_some_and(|last| id <= last) {
                    return Err(bad("block ids out of order"));
                }
                last_block = Some(id);
                let fork_flags = headers.u8().ok_or_else(short)?;
                let data_len = headers.u16().ok_or_else(short)?;
                if (fork_flags & BKPBLOCK_HAS_DATA != 0) != (data_len != 0) {
                    return Err(bad("BKPBLOCK_HAS_DATA disagrees with the data length"));
                }
                data_total += u64::from(data_len);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let image_len = headers.u16().ok_or_else(short)?;
                    let _hole_offset = headers.u16().ok_or_else(short)?;
                    let image_info = headers.u8().ok_or_else(short)?;
                    let compressed = image_info & compressed_mask != 0;
                    if compressed && image_info & BKPIMAGE_HAS_HOLE != 0 {
                        let _hole_length = headers.u16().ok_or_else(short)?;
                    }
                    data_total += u64::from(image_len);
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    relation = Some(RelFileLocator {
                        tablespace: headers.u32().ok_or_else(short)?,
                        database: headers.u32().ok_or_else(short)?,
                        relation: headers.u32().ok_or_else(short)?,
                    });
                }
                match relation {
                    Some(relation) => on_block(relation),
                    None => return Err(bad("BKPBLOCK_SAME_REL without an earlier relation")),
                }
                let _block_number = headers.u32().ok_or_else(short)?;
            }
            _ => return Err(bad("invalid block id")),
        }
    }
    let rest = headers.rest();
    if rest.len() as u64 != data_total {
        return Err(bad("fragment lengths do not add up to the record length"));
    }
    // main_len <= data_total == rest.len(), so this cannot underflow.
    Ok(record.len() - main_len as usize..record.len())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Builds a record with a valid CRC: header fields, fragment headers,
    /// fragment data.
    pub fn record(rmid: u8, info: u8, xid: u32, prev: u64, after_header: &[u8]) -> Vec<u8> {
        let total = (RECORD_HEADER_LEN + after_header.len()) as u32;
        let mut bytes = Vec::with_capacity(total as usize);
        bytes.extend_from_slice(&total.to_le_bytes());
        bytes.extend_from_slice(&xid.to_le_bytes());
        bytes.extend_from_slice(&prev.to_le_bytes());
        bytes.extend_from_slice(&[info, rmid, 0, 0]);
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(after_header);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[24..]), &bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Fragment headers and data for a record with only main data.
    pub fn with_main_data(main: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if main.is_empty() {
            return out;
        }
        if main.len() <= 255 {
            out.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        } else {
            out.push(XLR_BLOCK_ID_DATA_LONG);
            out.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(main);
        out
    }

    #[test]
    fn crc_covers_body_then_header() {
        let bytes = record(0, 0x40, 0, 0x1000, &[]);
        let header = RecordHeader::parse(&bytes).unwrap();
        check_crc(&bytes, &header).unwrap();
        let mut bad = bytes.clone();
        bad[17] = 1;
        assert!(matches!(
            check_crc(&bad, &header),
            Err(Problem::CrcMismatch { .. })
        ));
    }

    #[test]
    fn main_data_after_blocks_and_images() {
        let mut fragments = vec![
            // block 0: HAS_IMAGE | HAS_DATA, 3 data bytes, new relation
            0, 0x30, 3, 0, // image: 5 bytes, hole offset 0, compressed (15+) with hole
            5, 0, 0, 0, 0x05, 100, 0,
        ];
        fragments.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]); // relation
        fragments.extend_from_slice(&[7, 0, 0, 0]); // block number
                                                    // block 1: same relation, no data, no image
        fragments.extend_from_slice(&[1, 0x80, 0, 0, 8, 0, 0, 0]);
        // origin, top-level xid, then main data
        fragments.extend_from_slice(&[253, 1, 0, 252, 9, 0, 0, 0, 255, 2]);
        fragments.extend_from_slice(&[0xAA; 5]); // image
        fragments.extend_from_slice(&[0xBB; 3]); // block data
        fragments.extend_from_slice(&[0xCC, 0xDD]); // main data
        let bytes = record(10, 0, 5, 0x100, &fragments);
        assert_eq!(&bytes[main_data(&bytes, 15).unwrap()], &[0xCC, 0xDD]);
        // Both blocks are of one relation, reported once.
        assert_eq!(
            block_relations(&bytes, 15).unwrap(),
            [RelFileLocator {
                tablespace: 1,
                database: 2,
                relation: 3
            }]
        );
        assert!(
            block_relations(&record(1, 0, 1, 0, &with_main_data(&[1])), 15)
                .unwrap()
                .is_empty()
        );
        // In 12–14, 0x05 is "has hole, not compressed": no hole length, so
        // the walk reads two bytes less and the lengths no longer add up.
        {
            let error = main_data(&bytes, 14).unwrap_err().to_string();
            assert!(error.contains("block ids out of order"), "{error}");
        }
    }

    #[test]
    fn lengths_must_add_up() {
        let mut fragments = with_main_data(&[1, 2, 3]);
        fragments.push(0);
        {
            let error = main_data(&record(1, 0, 1, 0, &fragments), 15)
                .unwrap_err()
                .to_string();
            assert!(error.contains("fragment lengths do not add up"), "{error}");
        }
        {
            let error = main_data(&record(1, 0, 1, 0, &[255, 4, 1, 2, 3]), 15)
                .unwrap_err()
                .to_string();
            assert!(error.contains("fragment lengths do not add up"), "{error}");
        }
        {
            let error = main_data(&record(1, 0, 1, 0, &[40, 0, 0, 0]), 15)
                .unwrap_err()
                .to_string();
            assert!(error.contains("invalid block id"), "{error}");
        }
        {
            let error = main_data(&record(1, 0, 1, 0, &[0, 0x80, 0, 0, 0, 0, 0, 0]), 15)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("BKPBLOCK_SAME_REL without an earlier relation"),
                "{error}"
            );
        }
        assert_eq!(main_data(&record(0, 0x40, 0, 0, &[]), 15).unwrap(), 24..24);
    }

    #[test]
    fn record_lengths() {
        {
            let error = check_length(23).unwrap_err().to_string();
            assert!(error.contains("invalid record length 23"), "{error}");
        }
        assert!(check_length(24).is_ok());
        {
            let error = check_length(0x4000_0000).unwrap_err().to_string();
            assert!(
                error.contains("invalid record length 1073741824"),
                "{error}"
            );
        }
    }
}
