//! A streaming decoder for PostgreSQL 12–18 WAL: which transactions
//! committed or aborted when, restore points, switches, checkpoints — and
//! where valid WAL ends.
//!
//! # The format, in brief
//!
//! WAL is one byte stream per timeline, cut into segment files (16 MiB by
//! default) and those into pages (`XLOG_BLCKSZ`, 8 KiB by default). Each
//! page starts with a header — magic, flags, timeline, its own LSN — and
//! the first page of a segment has a long header with the system identifier
//! and both sizes (`page.rs`). Records follow each other 8-byte aligned and
//! run across page and segment boundaries (`framing.rs`, reading through
//! `input.rs`). A record is a 24-byte header with a CRC-32C, fragment
//! headers for block references, and data (`record.rs`); in transaction and
//! XLOG records the "main data" gives commit times, restore point names and
//! so on (`xact.rs`, `xlog.rs`), which become [`Event`]s and feed each
//! segment's [`SegmentSummary`] (`summary.rs`).
//!
//! Valid WAL ends where a record would start but its length is zero, or at
//! a page that was never written or is left over from a recycled segment.
//! That is [`WalEnd`], not an error; [`DecodeError`] is for corruption.
//!
//! # Use
//!
//! Feed the segments of one timeline in order, each as any [`Read`] (the
//! caller opens and decompresses files). Memory does not grow with the
//! number of segments: one input chunk and the largest record.
//!
//! ```no_run
//! use pitr::wal::decode::{StartAt, WalDecoder, WalItem};
//! use pitr::wal::{SegmentSize, WalSegment};
//!
//! let first = WalSegment::parse("000000010000000000000012", SegmentSize::DEFAULT).unwrap();
//! let segments = [first, first.next()]
//!     .map(|segment| (segment, std::fs::File::open(format!("archive/{segment}"))));
//! let mut decode = WalDecoder::new(StartAt::SegmentStart).decode(segments);
//! for item in &mut decode {
//!     match item? {
//!         WalItem::Event(event) => println!("{} {:?}", event.start, event.kind),
//!         WalItem::Segment(summary) => println!("{}: {} records", summary.segment, summary.records),
//!     }
//! }
//! if let Some(end) = decode.end_of_wal() {
//!     println!("{end}");
//! }
//! # Ok::<(), pitr::wal::decode::DecodeError>(())
//! ```
//!
//! [`WalDecoder::segment`] gives finer control: one segment at a time, as
//! events ([`SegmentDecoder`] is an iterator), as every record
//! ([`SegmentDecoder::next_record`]), or just its [`SegmentSummary`].

mod bytes;
mod error;
mod event;
mod framing;
mod input;
mod page;
mod record;
mod summary;
#[cfg(test)]
mod tests;
mod xact;
mod xlog;

use std::io::{self, Read};

use crate::wal::{Lsn, WalSegment};

pub use error::{DecodeError, EndReason, Problem, WalEnd};
pub use event::{
    Checkpoint, Event, EventKind, Origin, ParameterChange, RelFileLocator, TransactionEnd,
    TransactionId, WalLevel,
};
pub use summary::{SegmentEnd, SegmentSummary};

use framing::{SegmentRun, Stream};

/// Where decoding begins, in the first segment given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// At the first record that starts in the segment; the tail of a record
    /// begun in an earlier segment is skipped.
    SegmentStart,
    /// At the record that starts exactly here (for instance a checkpoint's
    /// redo point); records before it are not decoded.
    Record(Lsn),
}

/// Decodes consecutive segments of one timeline; keeps what must carry
/// over between them (a record crossing the boundary, the previous record's
/// position, the page magic and sizes).
#[derive(Debug)]
pub struct WalDecoder {
    stream: Stream,
}

impl WalDecoder {
    pub fn new(start: StartAt) -> WalDecoder {
        WalDecoder {
            stream: Stream::new(start),
        }
    }

    /// Decodes `segment`, whose bytes `input` yields. It must be the segment
    /// after the previous one (the same timeline and size), and that one
    /// must have been decoded to its end; the first one must hold the start
    /// position. Once valid WAL has ended, further segments are not read
    /// (their summary says [`SegmentEnd::AfterEnd`]); once decoding failed,
    /// they only repeat that it did.
    pub fn segment<R: Read>(&mut self, segment: WalSegment, input: R) -> SegmentDecoder<'_, R> {
        let run = SegmentRun::new(&mut self.stream, segment, input);
        SegmentDecoder {
            stream: &mut self.stream,
            run,
        }
    }

    /// Where and why valid WAL ended, once it has.
    pub fn end_of_wal(&self) -> Option<&WalEnd> {
        self.stream.end_of_wal()
    }

    /// The end of the last valid record decoded.
    pub fn valid_until(&self) -> Option<Lsn> {
        self.stream.valid_until()
    }

    /// The system identifier in the long page headers read so far: the
    /// same as pg_control's, so it tells which cluster wrote the WAL.
    pub fn system_identifier(&self) -> Option<u64> {
        self.stream.system_identifier()
    }

    /// The PostgreSQL major version that wrote the WAL, from the page magic.
    pub fn major_version(&self) -> Option<u32> {
        self.stream.major_version()
    }

    /// The start of a record that began in the segments decoded so far and
    /// goes on in the next one.
    pub fn record_in_progress(&self) -> Option<Lsn> {
        self.stream.record_in_progress()
    }

    /// Decodes a whole range of segments, in order: events as they come,
    /// and each segment's summary when it is done. Each segment comes with
    /// its input or the error opening it. Stops after the end of valid WAL
    /// or at the first error.
    pub fn decode<I, R>(self, segments: I) -> Decode<I::IntoIter, R>
    where
        I: IntoIterator<Item = (WalSegment, io::Result<R>)>,
        R: Read,
    {
        Decode {
            stream: self.stream,
            segments: segments.into_iter(),
            current: None,
            stopped: false,
        }
    }
}

/// One valid record, as decoded (borrowed until the next one is read).
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub start: Lsn,
    /// See [`Event::end`].
    pub end: Lsn,
    /// `xl_prev`: where the previous record starts.
    pub prev: Lsn,
    /// `xl_xid` (0 when none; also 0 in `*_PREPARED` records).
    pub xid: TransactionId,
    /// `xl_rmid`: the resource manager (0 XLOG, 1 Transaction, 10 Heap…).
    pub rmid: u8,
    /// `xl_info`, all 8 bits.
    pub info: u8,
    /// `xl_tot_len`.
    pub total_len: u32,
    pub main_data: &'a [u8],
    /// What the record means, if it is one of the kinds reported.
    pub event: Option<&'a Event>,
    /// The whole record, for [`Record::relations`].
    bytes: &'a [u8],
    major: u32,
}

impl Record<'_> {
    /// The relations this record's block references name (any fork), each
    /// once: the relation files the record changes. Records without block
    /// references (commits, checkpoints, ...) name none.
    pub fn relations(&self) -> Vec<RelFileLocator> {
        // The walk already succeeded when the record was decoded.
        record::block_relations(self.bytes, self.major).unwrap_or_default()
    }
}

/// Decoding of one segment: an iterator over its events, or over every
/// record with [`SegmentDecoder::next_record`].
pub struct SegmentDecoder<'d, R> {
    stream: &'d mut Stream,
    run: SegmentRun<R>,
}

impl<R: Read> SegmentDecoder<'_, R> {
    /// The next valid record, `None` once the segment is done (see
    /// [`SegmentSummary::end`]).
    pub fn next_record(&mut self) -> Option<Result<Record<'_>, DecodeError>> {
        if let Err(error) = self.run.step(self.stream)? {
            return Some(Err(error));
        }
        let decoded = self.run.last()?;
        Some(Ok(Record {
            start: decoded.start,
            end: decoded.end,
            prev: decoded.header.prev,
            xid: TransactionId::new(decoded.header.xid),
            rmid: decoded.header.rmid,
            info: decoded.header.info,
            total_len: decoded.header.total_len,
            main_data: decoded.main_data(self.stream),
            event: decoded.event.as_ref(),
            bytes: decoded.bytes(self.stream),
            major: self.stream.major_version().unwrap_or_default(),
        }))
    }

    /// The summary so far.
    pub fn summary(&self) -> &SegmentSummary {
        self.run.summary()
    }

    /// Decodes the rest of the segment and returns its summary, or the
    /// error that stopped it.
    pub fn finish(mut self) -> Result<SegmentSummary, DecodeError> {
        while let Some(step) = self.run.step(self.stream) {
            step?;
        }
        self.run
            .into_summary()
            .map_err(|(segment, lsn)| DecodeError::new(segment, lsn, Problem::AlreadyFailed))
    }
}

impl<R: Read> Iterator for SegmentDecoder<'_, R> {
    type Item = Result<Event, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Err(error) = self.run.step(self.stream)? {
                return Some(Err(error));
            }
            if let Some(event) = self.run.take_event() {
                return Some(Ok(event));
            }
        }
    }
}

/// What [`Decode`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalItem {
    Event(Event),
    /// A segment is done.
    Segment(SegmentSummary),
}

/// Decoding of a range of segments; see [`WalDecoder::decode`].
pub struct Decode<I, R> {
    stream: Stream,
    segments: I,
    current: Option<SegmentRun<R>>,
    stopped: bool,
}

impl<I, R> Decode<I, R> {
    /// Where and why valid WAL ended, once it has.
    pub fn end_of_wal(&self) -> Option<&WalEnd> {
        self.stream.end_of_wal()
    }

    /// The end of the last valid record decoded.
    pub fn valid_until(&self) -> Option<Lsn> {
        self.stream.valid_until()
    }
}

impl<I, R> Iterator for Decode<I, R>
where
    I: Iterator<Item = (WalSegment, io::Result<R>)>,
    R: Read,
{
    type Item = Result<WalItem, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stopped {
                return None;
            }
            if let Some(run) = &mut self.current {
                match run.step(&mut self.stream) {
                    Some(Ok(())) => match run.take_event() {
                        Some(event) => return Some(Ok(WalItem::Event(event))),
                        None => continue,
                    },
                    Some(Err(error)) => {
                        self.stopped = true;
                        return Some(Err(error));
                    }
                    None => {
                        let run = self.current.take()?;
                        self.stopped = self.stream.end_of_wal().is_some();
                        return match run.into_summary() {
                            Ok(summary) => Some(Ok(WalItem::Segment(summary))),
                            Err((segment, lsn)) => {
                                self.stopped = true;
                                Some(Err(DecodeError::new(segment, lsn, Problem::AlreadyFailed)))
                            }
                        };
                    }
                }
            }
            let (segment, input) = self.segments.next()?;
            match input {
                Ok(input) => {
                    self.current = Some(SegmentRun::new(&mut self.stream, segment, input));
                }
                Err(error) => {
                    self.stopped = true;
                    let lsn = segment.start_lsn();
                    return Some(Err(DecodeError::new(segment, lsn, Problem::Io(error))));
                }
            }
        }
    }
}
