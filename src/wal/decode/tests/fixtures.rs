//! The decoder on real PostgreSQL 15 WAL kept in `fixtures/wal/` (two 1 MiB
//! segments; see the README there), against what pg_waldump said of them.

use std::io::Read;
use std::path::PathBuf;

use crate::wal::{Lsn, SegmentSize, WalSegment};

use super::super::{EventKind, SegmentEnd, StartAt, TransactionEnd};
use super::decode;

pub(super) fn fixture_segments() -> Vec<(WalSegment, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/wal");
    let size = SegmentSize::new(1 << 20).unwrap();
    ["000000010000000000000007", "000000010000000000000008"]
        .iter()
        .map(|name| {
            let file = std::fs::File::open(dir.join(format!("{name}.gz"))).unwrap();
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut bytes)
                .unwrap();
            (WalSegment::parse(name, size).unwrap(), bytes)
        })
        .collect()
}

/// (lsn, total length, xid, prev, desc) of each pg_waldump line.
fn waldump() -> Vec<(Lsn, u32, u32, Lsn, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/wal/pg_waldump.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let (head, desc) = line.split_once(", desc: ").unwrap();
            let parts: Vec<&str> = head.split(", ").collect();
            let total = parts[0].rsplit('/').next().unwrap().trim().parse().unwrap();
            let xid = parts[1].trim_start_matches("tx:").trim().parse().unwrap();
            let lsn = parts[2].trim_start_matches("lsn: ").parse().unwrap();
            let prev = parts[3].trim_start_matches("prev ").parse().unwrap();
            (lsn, total, xid, prev, desc.to_string())
        })
        .collect()
}

#[test]
fn every_record_as_pg_waldump_saw_it() {
    let segments = fixture_segments();
    let out = decode(&segments, StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    let dump = waldump();
    assert_eq!(out.records.len(), dump.len());
    for (mine, theirs) in out.records.iter().zip(&dump) {
        assert_eq!((mine.0, mine.4, mine.2), (theirs.0, theirs.1, theirs.3));
    }
    let [first, second] = &out.summaries[..] else {
        panic!()
    };
    assert_eq!(first.records + second.records, 85);
    // The 1.2 MB message crosses into the second segment and counts there.
    assert_eq!(second.records, 6);
    assert_eq!(first.restore_points, ["fixture_rp"]);
    assert_eq!((first.commits, first.aborts), (6, 2));
    assert_eq!((second.commits, second.aborts), (1, 0));
    assert_eq!(
        second.end,
        SegmentEnd::Switch {
            record: "0/83D770".parse().unwrap()
        }
    );
    assert_eq!(second.valid_until, Some("0/83D788".parse().unwrap()));
    let time = |text: &str| {
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
    };
    assert_eq!(
        first.first_transaction_end,
        Some(time("2026-11-24 03:31:29.595960"))
    );
    assert_eq!(
        first.last_transaction_end,
        Some(time("2026-11-24 03:31:29.722380"))
    );
}

#[test]
fn transaction_events() {
    let out = decode(&fixture_segments(), StartAt::SegmentStart);
    let ends: Vec<(&str, &TransactionEnd)> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Commit(end) => Some(("commit", end)),
            EventKind::Abort(end) => Some(("abort", end)),
            _ => None,
        })
        .collect();
    let summary: Vec<(&str, u32, bool)> = ends
        .iter()
        .map(|(kind, end)| (*kind, end.xid.value(), end.two_phase))
        .collect();
    assert_eq!(
        summary,
        [
            ("commit", 726, false),
            ("commit", 727, false),
            ("abort", 728, false),
            ("commit", 729, false),
            ("commit", 732, true),
            ("abort", 733, true),
            ("commit", 734, false),
            ("commit", 735, false),
            ("commit", 736, false),
        ]
    );
    let subxacts: Vec<u32> = ends[3]
        .1
        .subtransactions
        .iter()
        .map(|x| x.value())
        .collect();
    assert_eq!(subxacts, [730, 731]);
    let dropped = &ends[7].1.dropped_relations;
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        (
            dropped[0].tablespace,
            dropped[0].database,
            dropped[0].relation
        ),
        (1663, 5, 16391)
    );
    assert_eq!(
        ends[4].1.time.format("%H:%M:%S%.6f").to_string(),
        "03:31:29.638936"
    );
    let prepares: Vec<(u32, &str)> = out
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Prepare { xid, gid, .. } => Some((xid.value(), gid.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(prepares, [(732, "fx1"), (733, "fx2")]);
}

#[test]
fn identifies_the_cluster_and_version() {
    let segments = fixture_segments();
    let mut decoder = super::super::WalDecoder::new(StartAt::SegmentStart);
    assert_eq!(decoder.major_version(), None);
    decoder
        .segment(segments[0].0, &segments[0].1[..])
        .finish()
        .unwrap();
    assert_eq!(decoder.system_identifier(), Some(7711575468393673288));
    assert_eq!(decoder.major_version(), Some(15));
    assert_eq!(
        decoder.record_in_progress(),
        Some("0/7178F8".parse().unwrap())
    );
}

#[test]
fn second_segment_alone_skips_the_continuation() {
    let segments = fixture_segments();
    let out = decode(&segments[1..], StartAt::SegmentStart);
    assert!(out.error.is_none(), "{:?}", out.error);
    let starts: Vec<String> = out.records.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(
        starts,
        ["0/83D688", "0/83D6C8", "0/83D708", "0/83D748", "0/83D770"]
    );
}
