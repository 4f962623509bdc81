//! The decoder never panics: random bytes, real segments with bytes
//! flipped or cut off, and random layouts written by the test writer
//! (which must decode to exactly what was written).

use proptest::prelude::*;

use crate::wal::{SegmentSize, TimelineId, WalSegment};

use super::super::StartAt;
use super::fixtures::fixture_segments;
use super::writer::WalWriter;
use super::{decode, expected};

fn segment(number: u64) -> WalSegment {
    WalSegment {
        timeline: TimelineId::FIRST,
        number,
        size: SegmentSize::new(1 << 20).unwrap(),
    }
}

/// Real segments, decoded once per case: kept in memory.
fn real() -> &'static Vec<(WalSegment, Vec<u8>)> {
    static REAL: std::sync::OnceLock<Vec<(WalSegment, Vec<u8>)>> = std::sync::OnceLock::new();
    REAL.get_or_init(fixture_segments)
}

/// The decode of the undamaged real segments: the oracle for what may be
/// reported from a damaged copy.
fn undamaged_decode() -> &'static super::Outcome {
    static UNDAMAGED: std::sync::OnceLock<super::Outcome> = std::sync::OnceLock::new();
    UNDAMAGED.get_or_init(|| {
        let out = decode(real(), StartAt::SegmentStart);
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.records.len() > 10, "{} records", out.records.len());
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        first in proptest::collection::vec(any::<u8>(), 0..4096),
        second in proptest::collection::vec(any::<u8>(), 0..4096),
        at in any::<u64>(),
    ) {
        let segments = vec![(segment(7), first), (segment(8), second)];
        decode(&segments, StartAt::SegmentStart);
        decode(&segments, StartAt::Record(crate::wal::Lsn::new(at)));
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..20_000),
        page_size in prop_oneof![Just(1024u32), Just(8192), Just(65536), any::<u32>()],
    ) {
        let mut bytes = real()[0].1[..40].to_vec();
        bytes[36..40].copy_from_slice(&page_size.to_le_bytes());
        bytes.extend_from_slice(&tail);
        decode(&[(real()[0].0, bytes)], StartAt::SegmentStart);
    }

    #[test]
    fn flipped_bytes_in_real_wal_never_panic(
        flips in proptest::collection::vec((0usize..(2 << 20), any::<u8>()), 1..6),
    ) {
        let mut segments = real().clone();
        let mut first_damage = u64::MAX;
        for (at, value) in flips {
            let (index, offset) = (at >> 20, at & ((1 << 20) - 1));
            // Most of the second segment is zero after the switch; aim
            // where the records are.
            let offset = if index == 1 { offset % 0x3E000 } else { offset };
            segments[index].1[offset] ^= value | 1;
            let (segment, _) = &segments[index];
            first_damage = first_damage.min(segment.number * segment.size.bytes() + offset as u64);
        }
        let out = decode(&segments, StartAt::SegmentStart);
        let undamaged = undamaged_decode();
        // What was reported is exactly what the undamaged WAL holds, from
        // the start: no record was changed, invented or skipped (every
        // record is under its CRC, so damage ends the decode)...
        prop_assert!(out.records.len() <= undamaged.records.len());
        prop_assert_eq!(&out.records[..], &undamaged.records[..out.records.len()]);
        // ...and every record that ends before the damage was reported.
        let intact = undamaged
            .records
            .iter()
            .take_while(|record| record.1.value() < first_damage)
            .count();
        prop_assert!(
            out.records.len() >= intact,
            "{} records before the damage at {:X}, {} reported ({:?})",
            intact, first_damage, out.records.len(), out.error
        );
    }

    #[test]
    fn cut_real_wal_ends_cleanly(len in 0usize..(1 << 20)) {
        let mut segments = real().clone();
        segments[0].1.truncate(len);
        let out = decode(&segments, StartAt::SegmentStart);
        prop_assert!(out.error.is_none(), "{:?}", out.error);
        prop_assert!(out.summaries[0].end_of_wal().is_some() || len == 1 << 20);
    }

    #[test]
    fn written_layouts_decode_exactly(
        page_size in prop_oneof![Just(1024u64), Just(2048), Just(8192)],
        lengths in proptest::collection::vec(24usize..12_000, 1..120),
        switch_after in proptest::option::of(0usize..120),
    ) {
        let mut w = WalWriter::new(page_size);
        let mut written = Vec::new();
        for (i, len) in lengths.iter().enumerate() {
            written.push(if len % 5 == 0 {
                w.push_commit(1000 + i as u32, *len as i64 * 1_000_003)
            } else {
                w.push_filler(*len)
            });
            if switch_after == Some(i) {
                written.push(w.push_switch());
            }
        }
        let segments = w.segments();
        let out = decode(&segments, StartAt::SegmentStart);
        prop_assert!(out.error.is_none(), "{:?}", out.error);
        prop_assert_eq!(&out.records, &expected(&written));
        let counted: u64 = out.summaries.iter().map(|s| s.records).sum();
        prop_assert_eq!(counted, written.len() as u64);
        // Starting at any record gives the rest.
        let from = lengths.len() / 2;
        let first = segments
            .iter()
            .position(|(s, _)| s.number == written[from].start.value() >> 20)
            .unwrap();
        let out = decode(&segments[first..], StartAt::Record(written[from].start));
        prop_assert!(out.error.is_none(), "{:?}", out.error);
        prop_assert_eq!(&out.records, &expected(&written[from..]));
    }
}
