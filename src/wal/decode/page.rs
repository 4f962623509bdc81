//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData` in
//! src/include/access/xlog_internal.h) and the checks that tell a valid page
//! from the end of WAL or from corruption.
//!
//! Every `XLOG_BLCKSZ` page (8 KiB unless compiled otherwise) starts with a
//! 24-byte header; the first page of each segment has the 40-byte long form,
//! which adds the system identifier, segment size and page size:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 2 | `xlp_magic` (one value per major version) |
//! | 2 | 2 | `xlp_info` flags |
//! | 4 | 4 | `xlp_tli`, timeline of the page's first record |
//! | 8 | 8 | `xlp_pageaddr`, the LSN of the page itself |
//! | 16 | 4 | `xlp_rem_len`, bytes of a record continued from the previous page |
//! | 24 | 8 | `xlp_sysid` (long header only) |
//! | 32 | 4 | `xlp_seg_size` (long header only) |
//! | 36 | 4 | `xlp_xlog_blcksz` (long header only) |

use crate::wal::page::major_version_of_magic;
use crate::wal::{Lsn, WalSegment};

use super::bytes::{u16_at, u32_at, u64_at};
use super::error::{EndReason, Problem};

pub(super) const SHORT_HEADER_LEN: usize = 24;
pub(super) const LONG_HEADER_LEN: usize = 40;

/// The page starts with the rest of a record begun on an earlier page.
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// The record that the previous page began was abandoned (a crash cut it
/// short) and WAL went on here: the pending record must be dropped.
/// PostgreSQL 14+, 13.5+ and 12.9+.
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// Every flag defined (`XLP_ALL_FLAGS`); other bits mean corruption.
const XLP_ALL_FLAGS: u16 = 0x000F;

/// WAL page sizes PostgreSQL can be built with (`--with-wal-blocksize`).
const MIN_BLOCK_SIZE: u32 = 1024;
const MAX_BLOCK_SIZE: u32 = 65536;

/// A parsed page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PageHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub page_address: Lsn,
    pub remaining_length: u32,
    pub long: Option<LongFields>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LongFields {
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl PageHeader {
    /// Reads the header fields; `None` if `bytes` is too short for them.
    pub fn parse(bytes: &[u8]) -> Option<PageHeader> {
        let info = u16_at(bytes, 2)?;
        let long = if info & XLP_LONG_HEADER != 0 {
            Some(LongFields {
                system_identifier: u64_at(bytes, 24)?,
                segment_size: u32_at(bytes, 32)?,
                block_size: u32_at(bytes, 36)?,
            })
        } else {
            None
        };
        Some(PageHeader {
            magic: u16_at(bytes, 0)?,
            info,
            timeline: u32_at(bytes, 4)?,
            page_address: Lsn::new(u64_at(bytes, 8)?),
            remaining_length: u32_at(bytes, 16)?,
            long,
        })
    }

    /// Bytes taken by this header: records or continuation data follow.
    pub fn len(&self) -> usize {
        if self.long.is_some() {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    pub fn continues_record(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    pub fn overwrites_record(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }
}

/// What the pages read so far established, for checking the next one.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PageRules {
    pub magic: Option<u16>,
    pub block_size: Option<u32>,
    pub system_identifier: Option<u64>,
    /// The highest page timeline so far: it never goes down.
    pub latest_timeline: u32,
}

impl PageRules {
    /// The major version of the WAL read so far (from the page magic).
    pub fn major_version(&self) -> Option<u32> {
        self.magic.and_then(major_version_of_magic)
    }
}

/// The verdict on one page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageCheck {
    Valid(PageHeader),
    /// Valid WAL ended before this page.
    End(EndReason),
}

/// Checks the header at the start of `bytes` as the page at `address` of
/// `segment`, in the order that tells end of WAL from corruption: an
/// all-zero header is an unwritten page; an unknown magic is corruption;
/// a known magic with the wrong address is a stale page of a recycled
/// segment (as PostgreSQL's recovery treats it). Accepted pages update
/// `rules`.
pub(super) fn check_page(
    bytes: &[u8],
    address: Lsn,
    segment: WalSegment,
    rules: &mut PageRules,
) -> Result<PageCheck, Problem> {
    let short = bytes.get(..SHORT_HEADER_LEN).unwrap_or(bytes);
    if short.len() == SHORT_HEADER_LEN && short.iter().all(|&b| b == 0) {
        return Ok(PageCheck::End(EndReason::UnwrittenPage));
    }
    let Some(header) = PageHeader::parse(bytes) else {
        return Ok(PageCheck::End(EndReason::InputEnded));
    };
    let Some(version) = major_version_of_magic(header.magic) else {
        return Err(Problem::BadMagic {
            magic: header.magic,
        });
    };
    if header.info & !XLP_ALL_FLAGS != 0 {
        return Err(Problem::BadPageInfo { info: header.info });
    }
    if header.page_address != address {
        return Ok(PageCheck::End(EndReason::StalePage {
            page_address: header.page_address,
        }));
    }
    if let Some(expected) = rules.magic {
        if expected != header.magic {
            return Err(Problem::MixedMagic {
                expected,
                expected_version: major_version_of_magic(expected).unwrap_or(0),
                found: header.magic,
                found_version: version,
            });
        }
    }
    let first_in_segment = address == segment.start_lsn();
    match header.long {
        None if first_in_segment => return Err(Problem::MissingLongHeader),
        None => {}
        Some(long) => check_long_header(long, segment, rules)?,
    }
    let segment_timeline = segment.timeline.value();
    if header.timeline == 0
        || header.timeline < rules.latest_timeline
        || header.timeline > segment_timeline
    {
        return Err(Problem::TimelineOutOfSequence {
            found: header.timeline,
            latest: rules.latest_timeline,
            segment_timeline,
        });
    }
    rules.magic = Some(header.magic);
    rules.latest_timeline = header.timeline;
    if let Some(long) = header.long {
        rules.block_size = Some(long.block_size);
        rules.system_identifier = Some(long.system_identifier);
    }
    Ok(PageCheck::Valid(header))
}

fn check_long_header(
    long: LongFields,
    segment: WalSegment,
    rules: &PageRules,
) -> Result<(), Problem> {
    if u64::from(long.segment_size) != segment.size.bytes() {
        return Err(Problem::SegmentSizeMismatch {
            expected: segment.size.bytes(),
            found: long.segment_size,
        });
    }
    let size = long.block_size;
    if !size.is_power_of_two()
        || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size)
        || u64::from(size) > segment.size.bytes()
    {
        return Err(Problem::BadBlockSize { found: size });
    }
    if let Some(expected) = rules.block_size {
        if expected != size {
            return Err(Problem::BlockSizeMismatch {
                expected,
                found: size,
            });
        }
    }
    if let Some(expected) = rules.system_identifier {
        if expected != long.system_identifier {
            return Err(Problem::SystemIdMismatch {
                expected,
                found: long.system_identifier,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{SegmentSize, TimelineId};

    const SEGMENT: WalSegment = WalSegment {
        timeline: TimelineId::FIRST,
        number: 0x12,
        size: SegmentSize::DEFAULT,
    };

    fn page(magic: u16, info: u16, tli: u32, address: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        bytes[0..2].copy_from_slice(&magic.to_le_bytes());
        bytes[2..4].copy_from_slice(&info.to_le_bytes());
        bytes[4..8].copy_from_slice(&tli.to_le_bytes());
        bytes[8..16].copy_from_slice(&address.to_le_bytes());
        bytes[24..32].copy_from_slice(&42u64.to_le_bytes());
        bytes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
        bytes
    }

    fn check(bytes: &[u8], address: u64, rules: &mut PageRules) -> Result<PageCheck, Problem> {
        check_page(bytes, Lsn::new(address), SEGMENT, rules)
    }

    #[test]
    fn accepts_a_long_then_a_short_header() {
        let mut rules = PageRules::default();
        let first = check(
            &page(0xD110, 0x0002, 1, 0x1200_0000),
            0x1200_0000,
            &mut rules,
        );
        let Ok(PageCheck::Valid(header)) = first else {
            panic!("{first:?}")
        };
        assert_eq!(header.len(), LONG_HEADER_LEN);
        assert_eq!(rules.block_size, Some(8192));
        assert_eq!(rules.major_version(), Some(15));
        let second = check(
            &page(0xD110, 0x0001, 1, 0x1200_2000),
            0x1200_2000,
            &mut rules,
        );
        let Ok(PageCheck::Valid(header)) = second else {
            panic!("{second:?}")
        };
        assert_eq!(header.len(), SHORT_HEADER_LEN);
        assert!(header.continues_record());
    }

    #[test]
    fn zero_and_stale_pages_end_the_wal() {
        let mut rules = PageRules::default();
        assert_eq!(
            check(&[0u8; 8192], 0x1200_2000, &mut rules).unwrap(),
            PageCheck::End(EndReason::UnwrittenPage)
        );
        assert_eq!(
            check(&page(0xD110, 0, 1, 0x0200_2000), 0x1200_2000, &mut rules).unwrap(),
            PageCheck::End(EndReason::StalePage {
                page_address: Lsn::new(0x0200_2000)
            })
        );
    }

    #[test]
    fn corruption_is_an_error() {
        let mut rules = PageRules::default();
        let cases: Vec<(Vec<u8>, u64)> = vec![
            (page(0x1234, 0x0002, 1, 0x1200_0000), 0x1200_0000),
            (page(0xD110, 0x0012, 1, 0x1200_0000), 0x1200_0000),
            (page(0xD110, 0x0000, 1, 0x1200_0000), 0x1200_0000),
            (page(0xD110, 0x0002, 2, 0x1200_0000), 0x1200_0000),
            (page(0xD110, 0x0002, 0, 0x1200_0000), 0x1200_0000),
        ];
        for (bytes, address) in cases {
            {
                let error = check(&bytes, address, &mut rules).unwrap_err().to_string();
                assert!(error.contains(" in page"), "{error}");
            }
        }
        let mut bad_block = page(0xD110, 0x0002, 1, 0x1200_0000);
        bad_block[36..40].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            check(&bad_block, 0x1200_0000, &mut rules),
            Err(Problem::BadBlockSize { found: 1000 })
        ));
    }

    #[test]
    fn magic_may_not_change() {
        let mut rules = PageRules::default();
        check(
            &page(0xD110, 0x0002, 1, 0x1200_0000),
            0x1200_0000,
            &mut rules,
        )
        .unwrap();
        assert!(matches!(
            check(&page(0xD113, 0, 1, 0x1200_2000), 0x1200_2000, &mut rules),
            Err(Problem::MixedMagic { .. })
        ));
    }
}
