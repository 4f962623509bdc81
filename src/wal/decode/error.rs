//! Corruption and end of WAL: the two ways decoding stops early.
//!
//! They are kept apart on purpose. At the end of an archive, or of `pg_wal`
//! after a crash, the valid WAL simply stops: the next record has length
//! zero, the next page was never written, or it is a stale page of a
//! recycled segment. That is [`WalEnd`], a normal outcome that callers
//! inspect. A [`DecodeError`] means bytes that should be WAL are not: a bad
//! CRC, an unknown page magic, lengths that do not add up. Inside a range
//! of WAL that a restore needs, that is fatal.

use std::fmt;
use std::io;

use crate::wal::{Lsn, WalSegment};

/// Why valid WAL ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A record would start here but its `xl_tot_len` is 0 (zero-filled
    /// space after the last record on the last written page).
    ZeroRecordLength,
    /// The page header is all zeroes: the page was never written.
    UnwrittenPage,
    /// The page header belongs to another position in the WAL: a recycled
    /// segment's leftovers, not yet overwritten.
    StalePage { page_address: Lsn },
    /// The segment's bytes ran out before the segment did (a truncated or
    /// still growing file).
    InputEnded,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ZeroRecordLength => write!(f, "record length is zero"),
            EndReason::UnwrittenPage => write!(f, "page was never written (all zeroes)"),
            EndReason::StalePage { page_address } => write!(
                f,
                "page holds stale WAL of {page_address} (a recycled segment)"
            ),
            EndReason::InputEnded => write!(f, "the file ends before the segment does"),
        }
    }
}

/// Where and why the valid WAL ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalEnd {
    /// The segment in which it ends.
    pub segment: WalSegment,
    /// The position that could not be read: where the next record (or the
    /// next piece of an incomplete record) should have been.
    pub at: Lsn,
    pub reason: EndReason,
    /// The end of the last complete, valid record: replay can reach exactly
    /// this far. `None` if no record was decoded at all.
    pub valid_until: Option<Lsn>,
    /// The start of a record that began but never finished (its remaining
    /// pages are missing); it does not count as valid WAL.
    pub incomplete_record: Option<Lsn>,
}

impl fmt::Display for WalEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "end of WAL at {} in segment {}: {}",
            self.at, self.segment, self.reason
        )?;
        if let Some(record) = self.incomplete_record {
            write!(f, " (the record at {record} is incomplete)")?;
        }
        Ok(())
    }
}

/// What is wrong, without the position (see [`DecodeError`]).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("could not read the segment: {0}")]
    Io(io::Error),
    #[error("invalid page magic {magic:#06X} (not PostgreSQL 12 to 18) in page")]
    BadMagic { magic: u16 },
    #[error("page magic {found:#06X} (PostgreSQL {found_version}) differs from {expected:#06X} (PostgreSQL {expected_version}) of the earlier pages in page")]
    MixedMagic {
        expected: u16,
        expected_version: u32,
        found: u16,
        found_version: u32,
    },
    #[error("invalid page info bits {info:#06X} in page")]
    BadPageInfo { info: u16 },
    #[error("the first page of a segment has no long header in page")]
    MissingLongHeader,
    #[error(
        "long page header gives segment size {found} bytes, not {expected} as expected, in page"
    )]
    SegmentSizeMismatch { expected: u64, found: u32 },
    #[error("long page header gives an impossible WAL block size of {found} bytes in page")]
    BadBlockSize { found: u32 },
    #[error("long page header gives WAL block size {found} bytes, but earlier segments have {expected}, in page")]
    BlockSizeMismatch { expected: u32, found: u32 },
    #[error("segment is from a different database system (system identifier {found}, earlier segments {expected}) in page")]
    SystemIdMismatch { expected: u64, found: u64 },
    #[error("timeline {found} in page header is out of sequence (after {latest}, in a segment of timeline {segment_timeline}) in page")]
    TimelineOutOfSequence {
        found: u32,
        latest: u32,
        segment_timeline: u32,
    },
    #[error(
        "page continues a record (XLP_FIRST_IS_CONTRECORD) where a new record should start in page"
    )]
    UnexpectedContinuation,
    #[error("page does not continue the record that began at {record} (no XLP_FIRST_IS_CONTRECORD) in page")]
    MissingContinuation { record: Lsn },
    #[error("page says {found} bytes of the record that began at {record} remain, but {expected} do, in page")]
    ContinuationLengthMismatch {
        record: Lsn,
        expected: u64,
        found: u32,
    },
    #[error(
        "invalid record length {length} (a record has at least 24 bytes, at most 1 GiB) in record"
    )]
    BadRecordLength { length: u32 },
    #[error("record has prev-link {found}, but the previous record is at {expected}, in record")]
    BadPrevLink { expected: Lsn, found: Lsn },
    #[error("record has prev-link {found}, which is not before the record itself, in record")]
    PrevLinkNotBefore { found: Lsn },
    #[error("CRC mismatch (stored {stored:08X}, computed {computed:08X}) in record")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid block references ({0}) in record")]
    BadBlockReferences(&'static str),
    #[error("invalid {rmgr} record data ({detail}) in record")]
    BadRecordData { rmgr: &'static str, detail: String },
    #[error(
        "start position is not a record boundary (not 8-byte aligned or inside a page header) at"
    )]
    BadStart,
    #[error("the start position lies in segment {expected}, but the first segment given is")]
    StartNotInSegment { expected: WalSegment },
    #[error("segments must follow one another on one timeline: expected {expected}, given the one starting")]
    UnexpectedSegment { expected: WalSegment },
    #[error("segment {unfinished} was not decoded to its end, so the next one cannot follow; the segment starting")]
    UnfinishedSegment { unfinished: WalSegment },
    #[error("decoding cannot go on past the earlier error")]
    AlreadyFailed,
}

impl Problem {
    /// True when the bytes themselves are not valid WAL, as opposed to an
    /// I/O failure or segments given in the wrong order.
    pub fn is_corruption(&self) -> bool {
        !matches!(
            self,
            Problem::Io(_)
                | Problem::BadStart
                | Problem::StartNotInSegment { .. }
                | Problem::UnexpectedSegment { .. }
                | Problem::UnfinishedSegment { .. }
                | Problem::AlreadyFailed
        )
    }
}

/// A problem at a place: "CRC mismatch (…) in record at 0/1201A6D8 in
/// segment 000000010000000000000012".
#[derive(Debug, thiserror::Error)]
#[error("{problem} at {lsn} in segment {segment}")]
pub struct DecodeError {
    pub segment: WalSegment,
    /// The record or page where the problem is.
    pub lsn: Lsn,
    pub problem: Problem,
}

impl DecodeError {
    pub(super) fn new(segment: WalSegment, lsn: Lsn, problem: Problem) -> DecodeError {
        DecodeError {
            segment,
            lsn,
            problem,
        }
    }
}
