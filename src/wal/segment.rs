//! Timelines, segment sizes and WAL segment file names.
//!
//! A segment file name is 24 upper-case hex digits: the timeline, then the
//! segment number split into `segno / N` and `segno % N`, where `N` is the
//! number of segments in 4 GiB of WAL (256 for the default 16 MiB segments).

use std::fmt;

use super::lsn::Lsn;

/// A PostgreSQL timeline ID (1 for a fresh cluster, +1 at every promotion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TimelineId(u32);

impl TimelineId {
    pub const FIRST: TimelineId = TimelineId(1);

    /// Timeline 0 does not exist; PostgreSQL starts at 1.
    pub fn new(value: u32) -> Option<TimelineId> {
        (value >= 1).then_some(TimelineId(value))
    }

    pub fn value(self) -> u32 {
        self.0
    }

    /// The name of this timeline's history file, such as `00000002.history`.
    pub fn history_file_name(self) -> String {
        format!("{:08X}.history", self.0)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The size of one WAL segment file: a power of two from 1 MiB to 1 GiB
/// (`initdb --wal-segsize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentSize(u32);

impl SegmentSize {
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    pub fn new(bytes: u64) -> Option<SegmentSize> {
        let valid = bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes);
        valid.then_some(SegmentSize(bytes as u32))
    }

    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per 4 GiB of WAL: the radix of the two low name fields.
    fn per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

/// One segment of WAL on one timeline: what a 24-digit file name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalSegment {
    pub timeline: TimelineId,
    /// The segment number: LSN / segment size.
    pub number: u64,
    pub size: SegmentSize,
}

impl WalSegment {
    /// The segment that holds the byte at `lsn`.
    pub fn containing(timeline: TimelineId, lsn: Lsn, size: SegmentSize) -> WalSegment {
        WalSegment {
            timeline,
            number: lsn.value() / size.bytes(),
            size,
        }
    }

    /// The segment that holds the byte just before `end`: the segment a
    /// record ending at `end` lives in (an end on a boundary belongs to the
    /// previous file).
    pub fn containing_end(timeline: TimelineId, end: Lsn, size: SegmentSize) -> WalSegment {
        WalSegment::containing(timeline, Lsn::new(end.value().saturating_sub(1)), size)
    }

    /// Parses a 24-digit segment file name (no suffix).
    pub fn parse(name: &str, size: SegmentSize) -> Option<WalSegment> {
        if name.len() != 24 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
            return None;
        }
        let field = |range: std::ops::Range<usize>| u32::from_str_radix(&name[range], 16).ok();
        let timeline = TimelineId::new(field(0..8)?)?;
        let high = u64::from(field(8..16)?);
        let low = u64::from(field(16..24)?);
        if low >= size.per_xlogid() {
            return None;
        }
        Some(WalSegment {
            timeline,
            number: high * size.per_xlogid() + low,
            size,
        })
    }

    pub fn start_lsn(self) -> Lsn {
        Lsn::new(self.number * self.size.bytes())
    }

    pub fn next(self) -> WalSegment {
        WalSegment {
            number: self.number + 1,
            ..self
        }
    }

    /// The same position of the WAL on another timeline.
    pub fn on_timeline(self, timeline: TimelineId) -> WalSegment {
        WalSegment { timeline, ..self }
    }

    pub fn file_name(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for WalSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.size.per_xlogid();
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline.value(),
            self.number / per,
            self.number % per
        )
    }
}

/// True when `name` looks like a 24-digit segment file name.
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB16: SegmentSize = SegmentSize::DEFAULT;

    #[test]
    fn worked_example_from_postgres() {
        let lsn: Lsn = "0/1201A6D8".parse().unwrap();
        let segment = WalSegment::containing(TimelineId::FIRST, lsn, MIB16);
        assert_eq!(segment.file_name(), "000000010000000000000012");
        assert_eq!(segment.number, 0x12);
    }

    #[test]
    fn end_on_boundary_belongs_to_previous_segment() {
        let end = Lsn::new(0x1300_0000);
        assert_eq!(
            WalSegment::containing_end(TimelineId::FIRST, end, MIB16).file_name(),
            "000000010000000000000012"
        );
    }

    #[test]
    fn names_wrap_into_the_middle_field() {
        let segment = WalSegment::parse("0000000200000001000000FF", MIB16).unwrap();
        assert_eq!(segment.number, 0x1FF);
        assert_eq!(segment.next().file_name(), "000000020000000200000000");
        let big = SegmentSize::new(64 << 20).unwrap();
        assert!(WalSegment::parse("000000010000000000000040", big).is_none());
        assert_eq!(
            WalSegment::parse("00000001000000010000003F", big)
                .unwrap()
                .next()
                .file_name(),
            "000000010000000200000000"
        );
    }

    #[test]
    fn rejects_non_names() {
        for bad in [
            "00000001000000000000001",
            "0000000100000000000000123",
            "00000001000000000000001g",
            "00000001000000000000001a",
            "000000000000000000000001",
            "00000001.history",
        ] {
            assert!(WalSegment::parse(bad, MIB16).is_none(), "{bad}");
        }
    }

    #[test]
    fn segment_sizes() {
        assert!(SegmentSize::new(16 << 20).is_some());
        assert!(SegmentSize::new(1 << 20).is_some());
        assert!(SegmentSize::new(1 << 30).is_some());
        assert!(SegmentSize::new(2 << 30).is_none());
        assert!(SegmentSize::new(3 << 20).is_none());
        assert!(SegmentSize::new(512 << 10).is_none());
    }

    proptest! {
        #[test]
        fn name_round_trips(tli in 1u32.., number in 0u64..(1u64 << 40), shift in 20u32..=30) {
            let size = SegmentSize::new(1 << shift).unwrap();
            let number = number % ((u64::MAX / size.bytes()) >> 8);
            let segment = WalSegment { timeline: TimelineId::new(tli).unwrap(), number, size };
            prop_assert_eq!(WalSegment::parse(&segment.file_name(), size), Some(segment));
        }

        #[test]
        fn lsn_lies_inside_its_segment(value in any::<u64>()) {
            let lsn = Lsn::new(value);
            let segment = WalSegment::containing(TimelineId::FIRST, lsn, MIB16);
            prop_assert!(segment.start_lsn() <= lsn);
            prop_assert!(lsn.value() - segment.start_lsn().value() < MIB16.bytes());
        }
    }
}
