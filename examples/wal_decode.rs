//! Decodes WAL segment files with `pitr::wal::decode` and prints what it
//! finds — a debugging aid and the throughput benchmark.
//!
//! ```text
//! cargo run --release --example wal_decode -- [--records|--events|--quiet] SEGMENT_FILE...
//! ```
//!
//! `--records` prints every record, `--events` every event; `--quiet`
//! (the benchmark) only collects the commit and abort times, like
//! `pg_waldump -r Transaction`, and prints the segment summaries.
//!
//! The files must be consecutive segments of one timeline; the segment
//! size is read from the first file's long page header.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::time::Instant;

use pitr::wal::decode::{EventKind, StartAt, WalDecoder};
use pitr::wal::page::LongPageHeader;
use pitr::wal::WalSegment;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = "events";
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--records" => mode = "records",
            "--events" => mode = "events",
            "--quiet" => mode = "quiet",
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let first = files.first().ok_or("no segment files given")?;
    let mut head = [0u8; 40];
    File::open(first)?.read_exact(&mut head)?;
    let size = LongPageHeader::parse(&head)
        .ok_or("the first file has no long page header")?
        .segment_size;
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut transaction_ends = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let segment = WalSegment::parse(name, size).ok_or("not a segment file name")?;
        let file = File::open(path)?;
        bytes += file.metadata()?.len();
        let mut segment_decoder = decoder.segment(segment, BufReader::with_capacity(1 << 16, file));
        match mode {
            "records" => {
                while let Some(record) = segment_decoder.next_record() {
                    let r = record?;
                    println!(
                        "rmid {} len {} tx {} lsn {} prev {} end {} info {:#04x}",
                        r.rmid, r.total_len, r.xid, r.start, r.prev, r.end, r.info
                    );
                }
            }
            "events" => {
                for event in &mut segment_decoder {
                    let event = event?;
                    println!("{} {} {:?}", event.start, event.end, event.kind);
                }
            }
            _ => {
                for event in &mut segment_decoder {
                    if let EventKind::Commit(end) | EventKind::Abort(end) = event?.kind {
                        transaction_ends.push((end.xid, end.time));
                    }
                }
            }
        }
        let summary = segment_decoder.finish()?;
        eprintln!(
            "{}: {} records, {} commits, {} aborts, first {:?}, last {:?}, restore points {:?}, valid until {:?}, end {:?}",
            summary.segment,
            summary.records,
            summary.commits,
            summary.aborts,
            summary.first_transaction_end,
            summary.last_transaction_end,
            summary.restore_points,
            summary.valid_until.map(|l| l.to_string()),
            summary.end
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    if mode == "quiet" {
        eprintln!("{} commits and aborts", transaction_ends.len());
    }
    eprintln!(
        "{bytes} bytes in {seconds:.3} s: {:.0} MB/s",
        bytes as f64 / seconds / 1e6
    );
    Ok(())
}
