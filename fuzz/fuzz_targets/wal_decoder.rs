//! Fuzzes the WAL decoder: arbitrary bytes as one segment, or as the
//! segment that follows a real PostgreSQL 15 segment whose last record
//! (1.2 MB) continues into it, so that continuation across a segment
//! boundary is fuzzed too.
//!
//! The first input byte picks the mode (bit 0) and whether to start at a
//! record given by the next 4 bytes (bit 1); the rest is the segment.
//! The decoder must never panic; errors and ends of WAL are fine.

#![no_main]

use std::io::Read;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pitr::wal::decode::{StartAt, WalDecoder};
use pitr::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

/// `fixtures/wal/000000010000000000000007`, 1 MiB.
fn real_segment() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/wal/000000010000000000000007.gz"
        );
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    })
}

/// Where the last record of the real segment starts.
const CROSSING_RECORD: u64 = 0x7178F8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let size = SegmentSize::new(1 << 20).unwrap();
    let first = WalSegment {
        timeline: TimelineId::FIRST,
        number: 7,
        size,
    };
    if mode & 1 == 0 {
        let (start, bytes) = match (mode & 2 != 0, rest.split_first_chunk::<4>()) {
            (true, Some((offset, bytes))) => {
                let offset = u64::from(u32::from_le_bytes(*offset)) % size.bytes();
                (
                    StartAt::Record(Lsn::new(first.start_lsn().value() + offset)),
                    bytes,
                )
            }
            _ => (StartAt::SegmentStart, rest),
        };
        decode(WalDecoder::new(start), &[(first, bytes)]);
    } else {
        let start = StartAt::Record(Lsn::new(CROSSING_RECORD));
        decode(
            WalDecoder::new(start),
            &[(first, real_segment()), (first.next(), rest)],
        );
    }
});

fn decode(mut decoder: WalDecoder, segments: &[(WalSegment, &[u8])]) {
    for &(segment, bytes) in segments {
        let mut segment_decoder = decoder.segment(segment, bytes);
        while let Some(record) = segment_decoder.next_record() {
            match record {
                Ok(record) => {
                    std::hint::black_box(record.main_data);
                }
                Err(_) => break,
            }
        }
        let _ = std::hint::black_box(segment_decoder.finish());
    }
}
