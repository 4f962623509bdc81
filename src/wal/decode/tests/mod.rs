//! Decoder tests on WAL laid out by [`writer::WalWriter`]: layouts that
//! real WAL shows rarely or never on demand (a header split across pages,
//! a record torn by a crash, a stale page mid-segment), and corruption.

#![allow(clippy::disallowed_methods)] // tests read fixtures from disk

mod fixtures;
mod proptests;
mod writer;

use crate::wal::{Lsn, WalSegment};

use super::{
    DecodeError, EndReason, EventKind, Problem, SegmentEnd, SegmentSummary, StartAt, WalDecoder,
};
use writer::{WalWriter, Written};

/// What decoding some segments produced.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// (start, end, prev, rmid, total_len) of every record.
    pub records: Vec<(Lsn, Lsn, Lsn, u8, u32)>,
    pub events: Vec<super::Event>,
    pub summaries: Vec<SegmentSummary>,
    pub error: Option<DecodeError>,
}

pub(super) fn decode(segments: &[(WalSegment, Vec<u8>)], start: StartAt) -> Outcome {
    let mut decoder = WalDecoder::new(start);
    let mut out = Outcome::default();
    for (segment, bytes) in segments {
        let mut segment_decoder = decoder.segment(*segment, &bytes[..]);
        while let Some(record) = segment_decoder.next_record() {
            match record {
                Ok(r) => {
                    out.records
                        .push((r.start, r.end, r.prev, r.rmid, r.total_len));
                    out.events.extend(r.event.cloned());
                }
                Err(error) => {
                    out.error = Some(error);
                    return out;
                }
            }
        }
        match segment_decoder.finish() {
            Ok(summary) => out.summaries.push(summary),
            Err(error) => {
                out.error = Some(error);
                return out;
            }
        }
    }
    out
}

fn expected(written: &[Written]) -> Vec<(Lsn, Lsn, Lsn, u8, u32)> {
    written
        .iter()
        .map(|w| (w.start, w.end, w.prev, w.rmid, w.total_len))
        .collect()
}

#[test]
fn records_across_pages_and_segments() {
    let mut w = WalWriter::new(1024);
    let mut written = vec![w.push_commit(700, 1_000_000)];
    for len in [100, 1000, 3000, 24, 4100] {
        written.push(w.push_filler(len));
    }
    // Fill up to near the segment end, then one record across it.
    while w.bytes.len() < (1 << 20) - 5000 {
        written.push(w.push_filler(900));
    }
    written.push(w.push_filler(20_000));
    written.push(w.push_commit(701, 2_000_000));
    let segments = w.segments();
    assert_eq!(segments.len(), 2);
    let out = decode(&segments, StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, expected(&written));
    assert_eq!(out.events.len(), 2);
    let [first, second] = &out.summaries[..] else {
        panic!("{:?}", out.summaries)
    };
    assert_eq!(first.records + second.records, written.len() as u64);
    assert_eq!(
        first.end,
        SegmentEnd::Continues {
            record_in_progress: Some(written[written.len() - 2].start)
        }
    );
    assert_eq!(first.commits, 1);
    assert_eq!(second.commits, 1);
    let end = second.end_of_wal().unwrap();
    assert_eq!(end.reason, EndReason::ZeroRecordLength);
    assert_eq!(end.valid_until, Some(written.last().unwrap().end));
    assert_eq!(end.at, written.last().unwrap().end);
}

#[test]
fn record_header_split_across_pages() {
    for gap in [8, 16] {
        let mut w = WalWriter::new(1024);
        let mut written = vec![w.push_filler(100)];
        // Leave exactly `gap` bytes (< 24) on the first page.
        let used = 40 + 104;
        written.push(w.push_filler(1024 - used - gap));
        written.push(w.push_commit(702, 5));
        written.push(w.push_filler(50));
        assert!(written[2].start.value() % 1024 == 1024 - gap as u64);
        let out = decode(&w.segments(), StartAt::SegmentStart);
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.records, expected(&written));
        assert_eq!(out.events.len(), 1);
    }
}

#[test]
fn start_at_segment_skips_the_tail_of_an_earlier_record() {
    let mut w = WalWriter::new(1024);
    while w.bytes.len() < (1 << 20) - 3000 {
        w.push_filler(700);
    }
    // Crosses into the second segment by more than two pages.
    let crossing = w.push_filler(6000);
    let after = [w.push_commit(703, 9), w.push_filler(80)];
    let segments = w.segments();
    let out = decode(&segments[1..], StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, expected(&after));
    assert!(crossing.end > plus(segments[1].0.start_lsn(), 2048));
}

fn plus(lsn: Lsn, bytes: u64) -> Lsn {
    Lsn::new(lsn.value() + bytes)
}

#[test]
fn start_at_a_record() {
    let mut w = WalWriter::new(1024);
    let written: Vec<Written> = (0..50).map(|i| w.push_filler(100 + i * 37)).collect();
    let out = decode(&w.segments(), StartAt::Record(written[20].start));
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, expected(&written[20..]));

    // Not a record start: caught, never a panic.
    for wrong in [
        plus(written[20].start, 8),
        plus(w.first.start_lsn(), 8),
        plus(written[20].start, 3),
    ] {
        let out = decode(&w.segments(), StartAt::Record(wrong));
        assert!(out.error.is_some(), "{wrong}");
    }
    // A start in another segment than the first one given.
    let out = decode(&w.segments(), StartAt::Record(Lsn::new(0x4000_0028)));
    assert!(matches!(
        out.error.unwrap().problem,
        Problem::StartNotInSegment { .. }
    ));
}

#[test]
fn switch_skips_the_rest_of_the_segment() {
    let mut w = WalWriter::new(8192);
    let mut written = vec![w.push_commit(704, 1), w.push_switch()];
    written.push(w.push_commit(705, 2));
    let segments = w.segments();
    let out = decode(&segments, StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, expected(&written));
    assert!(out.summaries[0].ends_with_switch());
    assert_eq!(
        out.summaries[0].end,
        SegmentEnd::Switch {
            record: written[1].start
        }
    );
    assert!(matches!(out.events[1].kind, EventKind::Switch));
    assert_eq!(written[2].start, plus(segments[1].0.start_lsn(), 40));
}

#[test]
fn a_torn_record_is_overwritten() {
    let mut w = WalWriter::new(1024);
    let before = w.push_filler(900);
    let torn = w.push_torn(3000, 1024 - 40 - 904);
    let after = w.push_commit(706, 3);
    assert_eq!(after.prev, before.start);
    let out = decode(&w.segments(), StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.records, expected(&[before, after.clone()]));
    assert_eq!(
        after.start,
        Lsn::new(torn.value() - torn.value() % 1024 + 1024 + 24)
    );
}

#[test]
fn stale_and_unwritten_pages_end_the_wal() {
    let mut w = WalWriter::new(1024);
    let written: Vec<Written> = (0..12).map(|_| w.push_filler(500)).collect();
    let mut segments = w.segments();
    // Page 3 holds WAL of an older segment at the same offset.
    let stale = 3 * 1024;
    let old = segments[0].0.start_lsn().value() - (1 << 20) + stale as u64;
    let page = &mut segments[0].1[stale..stale + 24];
    page[0..2].copy_from_slice(&writer::PG15_MAGIC.to_le_bytes());
    page[4..8].copy_from_slice(&1u32.to_le_bytes());
    page[8..16].copy_from_slice(&old.to_le_bytes());
    let out = decode(&segments, StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    let before_page_3: Vec<Written> = written
        .into_iter()
        .filter(|r| r.end.value() % (1 << 20) <= stale as u64)
        .collect();
    assert_eq!(out.records, expected(&before_page_3));
    let end = out.summaries[0].end_of_wal().unwrap();
    assert_eq!(
        end.reason,
        EndReason::StalePage {
            page_address: Lsn::new(old)
        }
    );
    assert_eq!(
        end.at,
        Lsn::new(segments[0].0.start_lsn().value() + stale as u64)
    );

    // A record cut off by an unwritten page: incomplete, not valid.
    let mut w = WalWriter::new(1024);
    let whole = w.push_filler(500);
    let cut = w.push_filler(3000);
    let mut segments = w.segments();
    segments[0].1[2048..3072].fill(0);
    let out = decode(&segments, StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    let end = out.summaries[0].end_of_wal().unwrap();
    assert_eq!(end.reason, EndReason::UnwrittenPage);
    assert_eq!(end.incomplete_record, Some(cut.start));
    assert_eq!(end.valid_until, Some(whole.end));
    assert_eq!(out.records, expected(&[whole]));
}

#[test]
fn short_input_ends_the_wal() {
    let mut w = WalWriter::new(1024);
    let written = [w.push_filler(500), w.push_filler(2000)];
    let segments = w.segments();
    let short = vec![(segments[0].0, segments[0].1[..2500].to_vec())];
    let out = decode(&short, StartAt::SegmentStart);
    assert!(out.error.is_none());
    let end = out.summaries[0].end_of_wal().unwrap();
    assert_eq!(end.reason, EndReason::InputEnded);
    assert_eq!(end.incomplete_record, Some(written[1].start));
    assert_eq!(out.records, expected(&written[..1]));
    let empty = vec![(segments[0].0, Vec::new())];
    let out = decode(&empty, StartAt::SegmentStart);
    assert_eq!(
        out.summaries[0].end_of_wal().unwrap().reason,
        EndReason::InputEnded
    );
}

/// Decodes after `damage` and returns the error, which must exist.
fn damaged(damage: impl FnOnce(&mut Vec<(WalSegment, Vec<u8>)>, &[Written])) -> DecodeError {
    let mut w = WalWriter::new(1024);
    let written: Vec<Written> = (0..30).map(|i| w.push_filler(200 + i * 91)).collect();
    let mut segments = w.segments();
    damage(&mut segments, &written);
    let out = decode(&segments, StartAt::SegmentStart);
    out.error.expect("damage must be reported")
}

#[test]
fn corruption_is_an_error_with_its_place() {
    let mut victim = Lsn::ZERO;
    let crc = damaged(|s, w| {
        victim = w[5].start;
        s[0].1[(w[5].start.value() % (1 << 20)) as usize + 30] ^= 1
    });
    assert!(matches!(crc.problem, Problem::CrcMismatch { .. }));
    assert_eq!(crc.lsn, victim);
    assert!(crc.problem.is_corruption());
    assert!(crc.to_string().starts_with("CRC mismatch (stored"));
    let place = format!(
        "in record at {} in segment 000000010000000000000010",
        crc.lsn
    );
    assert!(crc.to_string().ends_with(&place), "{crc}");

    let prev = damaged(|s, w| {
        let at = (w[7].start.value() % (1 << 20)) as usize + 8;
        s[0].1[at] ^= 8;
    });
    assert!(
        matches!(prev.problem, Problem::BadPrevLink { .. }),
        "{prev}"
    );

    let length = damaged(|s, w| {
        let at = (w[3].start.value() % (1 << 20)) as usize;
        s[0].1[at..at + 4].copy_from_slice(&12u32.to_le_bytes());
    });
    assert!(matches!(
        length.problem,
        Problem::BadRecordLength { length: 12 }
    ));

    let magic = damaged(|s, _| s[0].1[2048] ^= 0x40);
    assert!(matches!(magic.problem, Problem::BadMagic { .. }), "{magic}");
    assert_eq!(magic.lsn, Lsn::new(0x1000800));

    let mixed = damaged(|s, _| s[0].1[2048..2050].copy_from_slice(&0xD113u16.to_le_bytes()));
    assert!(
        matches!(mixed.problem, Problem::MixedMagic { .. }),
        "{mixed}"
    );

    let no_continuation = damaged(|s, w| {
        let page = (w[4].end.value() % (1 << 20)) as usize / 1024 * 1024;
        s[0].1[page + 2] &= !1;
    });
    assert!(
        matches!(no_continuation.problem, Problem::MissingContinuation { .. }),
        "{no_continuation}"
    );

    let rem_len = damaged(|s, w| {
        let page = (w[4].end.value() % (1 << 20)) as usize / 1024 * 1024;
        s[0].1[page + 16] ^= 4;
    });
    assert!(
        matches!(rem_len.problem, Problem::ContinuationLengthMismatch { .. }),
        "{rem_len}"
    );

    let timeline = damaged(|s, _| s[0].1[1024 + 4] = 2);
    assert!(
        matches!(timeline.problem, Problem::TimelineOutOfSequence { .. }),
        "{timeline}"
    );

    // A record that fills the first page exactly: the next page starts
    // with a record, so it may not claim to continue one.
    let mut w = WalWriter::new(1024);
    let fills = w.push_filler(1024 - 40);
    let next = w.push_filler(100);
    assert_eq!(next.start, plus(fills.start, 1024 - 40 + 24));
    let mut segments = w.segments();
    segments[0].1[1024 + 2] |= 1;
    let unexpected = decode(&segments, StartAt::SegmentStart).error.unwrap();
    assert!(
        matches!(unexpected.problem, Problem::UnexpectedContinuation),
        "{unexpected}"
    );

    let block_size = damaged(|s, _| s[0].1[36..40].copy_from_slice(&1000u32.to_le_bytes()));
    assert!(matches!(
        block_size.problem,
        Problem::BadBlockSize { found: 1000 }
    ));

    let no_long = damaged(|s, _| s[0].1[2] &= !2);
    assert!(
        matches!(no_long.problem, Problem::MissingLongHeader),
        "{no_long}"
    );
}

#[test]
fn segments_must_be_consecutive_and_alike() {
    let mut w = WalWriter::new(1024);
    while w.bytes.len() < 3 << 20 {
        w.push_filler(5000);
    }
    let segments = w.segments();
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    decoder
        .segment(segments[0].0, &segments[0].1[..])
        .finish()
        .unwrap();
    let error = decoder
        .segment(segments[2].0, &segments[2].1[..])
        .finish()
        .unwrap_err();
    assert!(matches!(error.problem, Problem::UnexpectedSegment { .. }));
    assert!(!error.problem.is_corruption());
    // A caller's mistake does not stop the decoder.
    let mut second = decoder.segment(segments[1].0, &segments[1].1[..]);
    second.next_record().unwrap().unwrap();
    drop(second);
    // But a segment dropped half-way cannot be followed.
    let error = decoder
        .segment(segments[2].0, &segments[2].1[..])
        .finish()
        .unwrap_err();
    assert!(matches!(error.problem, Problem::UnfinishedSegment { .. }));
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    for (segment, bytes) in &segments[..2] {
        decoder.segment(*segment, &bytes[..]).finish().unwrap();
    }

    // Another system's segment.
    let mut other = segments[2].1.clone();
    other[24] ^= 1;
    let error = decoder
        .segment(segments[2].0, &other[..])
        .finish()
        .unwrap_err();
    assert!(matches!(error.problem, Problem::SystemIdMismatch { .. }));
    // After corruption, nothing more.
    let error = decoder
        .segment(segments[2].0, &segments[2].1[..])
        .finish()
        .unwrap_err();
    assert!(matches!(error.problem, Problem::AlreadyFailed), "{error}");
}

#[test]
fn after_the_end_segments_are_not_read() {
    let mut w = WalWriter::new(1024);
    w.push_filler(100);
    let segments = w.segments();
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    let first = decoder.segment(segments[0].0, &segments[0].1[..]).finish();
    assert!(first.unwrap().end_of_wal().is_some());
    let next = segments[0].0.next();
    let summary = decoder.segment(next, std::io::empty()).finish().unwrap();
    assert_eq!(summary.end, SegmentEnd::AfterEnd);
    assert_eq!(summary.records, 0);
    assert!(decoder.end_of_wal().is_some());
}

#[test]
fn range_iterator_reports_open_errors() {
    let mut w = WalWriter::new(1024);
    while w.bytes.len() < 1 << 20 {
        w.push_filler(5000);
    }
    let segments = w.segments();
    let inputs = vec![
        (segments[0].0, Ok(&segments[0].1[..])),
        (
            segments[1].0,
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone")),
        ),
    ];
    let items: Vec<_> = WalDecoder::new(StartAt::SegmentStart)
        .decode(inputs)
        .collect();
    let error = items.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(error.problem, Problem::Io(_)));
    assert_eq!(error.segment, segments[1].0);
}
