//! The long page header at the start of every WAL segment file.
//!
//! Reading just these 40 bytes tells which cluster wrote a segment (system
//! identifier), its segment size, and (through the page magic) the major
//! version of PostgreSQL, without decoding any records.

use super::{Lsn, SegmentSize, TimelineId};

/// Bytes in a long page header (`SizeOfXLogLongPHD`).
pub const LONG_HEADER_LEN: usize = 40;

const XLP_LONG_HEADER: u16 = 0x0002;

/// The fields of `XLogLongPageHeaderData` that `pitr` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub timeline: TimelineId,
    pub page_address: Lsn,
    pub system_identifier: u64,
    pub segment_size: SegmentSize,
    pub block_size: u32,
}

impl LongPageHeader {
    /// Parses the first page header of a segment; `None` if the bytes are
    /// not a long header (all zeroes, wrong flags, impossible sizes).
    pub fn parse(bytes: &[u8]) -> Option<LongPageHeader> {
        let header = bytes.get(..LONG_HEADER_LEN)?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return None;
        }
        Some(LongPageHeader {
            magic: u16_at(0),
            timeline: TimelineId::new(u32_at(4))?,
            page_address: Lsn::new(u64_at(8)),
            system_identifier: u64_at(24),
            segment_size: SegmentSize::new(u64::from(u32_at(32)))?,
            block_size: u32_at(36),
        })
    }

    /// The PostgreSQL major version whose WAL carries this page magic.
    pub fn major_version(&self) -> Option<u32> {
        major_version_of_magic(self.magic)
    }
}

/// The PostgreSQL major version whose WAL pages carry `magic`
/// (`XLOG_PAGE_MAGIC` in `src/include/access/xlog_internal.h`, which changes
/// with every major release that changes the WAL format).
pub fn major_version_of_magic(magic: u16) -> Option<u32> {
    match magic {
        0xD101 => Some(12),
        0xD106 => Some(13),
        0xD10D => Some(14),
        0xD110 => Some(15),
        0xD113 => Some(16),
        0xD116 => Some(17),
        0xD118 => Some(18),
        _ => None,
    }
}

/// For tests in the crate: a segment of `len` bytes of `fill` whose first
/// page carries a PostgreSQL 15 long header naming the cluster
/// `system_identifier` (what `wal-push` reads to tell clusters apart).
#[cfg(test)]
pub(crate) fn test_segment(system_identifier: u64, fill: u8, len: usize) -> Vec<u8> {
    let mut bytes = vec![fill; len];
    bytes[..LONG_HEADER_LEN].fill(0);
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    bytes[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    bytes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u16, info: u16, seg: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[0..2].copy_from_slice(&magic.to_le_bytes());
        bytes[2..4].copy_from_slice(&info.to_le_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        bytes[8..16].copy_from_slice(&0x1200_0000u64.to_le_bytes());
        bytes[24..32].copy_from_slice(&7_311_541_712_905_306_170u64.to_le_bytes());
        bytes[32..36].copy_from_slice(&seg.to_le_bytes());
        bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
        bytes
    }

    #[test]
    fn reads_a_pg15_header() {
        let parsed = LongPageHeader::parse(&header(0xD110, 0x0006, 16 << 20)).unwrap();
        assert_eq!(parsed.major_version(), Some(15));
        assert_eq!(parsed.segment_size, SegmentSize::DEFAULT);
        assert_eq!(parsed.page_address, Lsn::new(0x1200_0000));
        assert_eq!(parsed.system_identifier, 7_311_541_712_905_306_170);
    }

    #[test]
    fn refuses_short_or_non_long_headers() {
        assert!(LongPageHeader::parse(&[0u8; 39]).is_none());
        assert!(LongPageHeader::parse(&header(0xD110, 0x0001, 16 << 20)).is_none());
        assert!(LongPageHeader::parse(&header(0xD110, 0x0002, 12345)).is_none());
        assert!(LongPageHeader::parse(&[0u8; 8192]).is_none());
    }
}
