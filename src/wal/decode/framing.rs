//! Framing: from pages to whole records (`XLogDecodeNextRecord` in
//! src/backend/access/transam/xlogreader.c).
//!
//! Records are laid end to end in the WAL byte stream, each starting on an
//! 8-byte boundary (MAXALIGN), and page headers are cut into that stream
//! every `XLOG_BLCKSZ` bytes. A record that does not fit on its page goes
//! on after the next page's header; that page is flagged
//! `XLP_FIRST_IS_CONTRECORD` and its `xlp_rem_len` says how many bytes of
//! the record are still to come, which we cross-check. A record's
//! `xl_tot_len` (its first 4 bytes) is always on its first page, since
//! records and headers are 8-byte aligned; the rest of its header may not be.
//!
//! Records that fit on one page are checked where they lie in the input
//! buffer; only records that cross pages are copied, into one reusable
//! buffer. So memory stays at one input chunk plus the largest record.
//!
//! [`Stream`] is what carries over from one segment to the next (the record
//! in progress, the previous record for `xl_prev`, what the page headers
//! established); [`SegmentRun`] walks one segment.

use std::io::Read;

use crate::wal::{Lsn, WalSegment};

use super::bytes::u32_at;
use super::error::{DecodeError, EndReason, Problem, WalEnd};
use super::event::{Event, EventKind};
use super::input::PageInput;
use super::page::{check_page, PageCheck, PageRules, LONG_HEADER_LEN};
use super::record::{check_crc, check_length, main_data, RecordHeader};
use super::summary::{SegmentEnd, SegmentSummary};
use super::{xact, xlog, StartAt};

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;

fn maxalign(value: u64) -> u64 {
    value.saturating_add(7) & !7
}

/// What the next page is expected to begin with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Decoding starts at this record, somewhere ahead.
    StartAt(Lsn),
    /// Decoding starts at a segment start: skip the tail of any record
    /// that began earlier.
    SkipContinuation,
    /// A record (or the end of WAL) starts right after the page header.
    RecordStart,
    /// The rest of the record in [`Pending`].
    Continuation,
}

/// A record that crosses pages, being assembled.
#[derive(Debug, Default)]
struct Pending {
    start: Lsn,
    total_len: u32,
    bytes: Vec<u8>,
    header_checked: bool,
}

#[derive(Debug)]
enum Status {
    Running,
    Ended(WalEnd),
    Failed { segment: WalSegment, lsn: Lsn },
}

/// Decoding state that carries over from one segment to the next.
#[derive(Debug)]
pub(super) struct Stream {
    start: StartAt,
    /// The segment that must come next (after the first one).
    next_segment: Option<WalSegment>,
    /// A segment admitted but not decoded to its end: the next one cannot
    /// follow it.
    unfinished: Option<WalSegment>,
    rules: PageRules,
    expect: Expect,
    /// Start of the last valid record: the next one's `xl_prev`.
    prev_record: Option<Lsn>,
    /// End of the last valid record.
    valid_until: Option<Lsn>,
    pending: Pending,
    /// Input buffer, reused for every segment.
    chunk: Vec<u8>,
    status: Status,
}

impl Stream {
    pub fn new(start: StartAt) -> Stream {
        Stream {
            start,
            next_segment: None,
            unfinished: None,
            rules: PageRules::default(),
            expect: match start {
                StartAt::SegmentStart => Expect::SkipContinuation,
                StartAt::Record(lsn) => Expect::StartAt(lsn),
            },
            prev_record: None,
            valid_until: None,
            pending: Pending::default(),
            chunk: Vec::new(),
            status: Status::Running,
        }
    }

    pub fn end_of_wal(&self) -> Option<&WalEnd> {
        match &self.status {
            Status::Ended(end) => Some(end),
            _ => None,
        }
    }

    pub fn valid_until(&self) -> Option<Lsn> {
        self.valid_until
    }

    pub fn system_identifier(&self) -> Option<u64> {
        self.rules.system_identifier
    }

    pub fn major_version(&self) -> Option<u32> {
        self.rules.major_version()
    }

    /// The start of a record begun but not finished yet.
    pub fn record_in_progress(&self) -> Option<Lsn> {
        (self.expect == Expect::Continuation).then_some(self.pending.start)
    }

    /// Checks that `segment` may be decoded next; on success it becomes
    /// the current one.
    fn admit(&mut self, segment: WalSegment) -> Result<(), DecodeError> {
        let error = |problem| DecodeError::new(segment, segment.start_lsn(), problem);
        if let Status::Failed { segment, lsn } = self.status {
            return Err(DecodeError::new(segment, lsn, Problem::AlreadyFailed));
        }
        if let Some(unfinished) = self.unfinished {
            return Err(error(Problem::UnfinishedSegment { unfinished }));
        }
        match self.next_segment {
            Some(expected) if expected != segment => {
                return Err(error(Problem::UnexpectedSegment { expected }));
            }
            Some(_) => {}
            None => {
                if let StartAt::Record(lsn) = self.start {
                    let expected = WalSegment::containing(segment.timeline, lsn, segment.size);
                    if expected != segment {
                        return Err(error(Problem::StartNotInSegment { expected }));
                    }
                    if lsn.value() % 8 != 0 {
                        return Err(DecodeError::new(segment, lsn, Problem::BadStart));
                    }
                }
            }
        }
        self.next_segment = Some(segment.next());
        self.unfinished = Some(segment);
        Ok(())
    }

    /// The header check every record gets as soon as its header is whole.
    #[inline]
    fn check_prev_link(&self, start: Lsn, header: &RecordHeader) -> Result<(), Problem> {
        match self.prev_record {
            Some(expected) if header.prev != expected => Err(Problem::BadPrevLink {
                expected,
                found: header.prev,
            }),
            // Starting mid-stream, the previous record is unknown; it must
            // at least lie before this one (PostgreSQL's random-access rule).
            None if header.prev >= start => Err(Problem::PrevLinkNotBefore { found: header.prev }),
            _ => Ok(()),
        }
    }
}

/// Where the bytes of the record just decoded are.
#[derive(Clone, Copy, Debug, Default)]
enum Location {
    /// In the input chunk, starting at this index.
    Chunk(usize),
    /// In the pending buffer.
    #[default]
    Assembled,
}

/// The record most recently decoded.
#[derive(Clone, Debug, Default)]
pub(super) struct Decoded {
    pub header: RecordHeader,
    pub start: Lsn,
    pub end: Lsn,
    location: Location,
    main_data: std::ops::Range<usize>,
    pub event: Option<Event>,
}

impl Decoded {
    /// The whole record, header included; valid until the next step. Its
    /// main data is its last bytes, so it ends where the main data ends.
    pub fn bytes<'a>(&self, stream: &'a Stream) -> &'a [u8] {
        match self.location {
            Location::Chunk(at) => stream
                .chunk
                .get(at..at + self.main_data.end)
                .unwrap_or_default(),
            Location::Assembled => &stream.pending.bytes,
        }
    }

    /// The record's main data; valid until the next step.
    pub fn main_data<'a>(&self, stream: &'a Stream) -> &'a [u8] {
        let bytes: &[u8] = match self.location {
            Location::Chunk(at) => stream.chunk.get(at..).unwrap_or_default(),
            Location::Assembled => &stream.pending.bytes,
        };
        bytes.get(self.main_data.clone()).unwrap_or_default()
    }
}

/// The page being read: where it is, and where in it the next record is.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// Offset of the page in the segment.
    page_offset: u64,
    /// Index of the page in the input chunk.
    base: usize,
    /// Offset in the page of the next record.
    pos: usize,
}

enum Loaded {
    /// A page was read (or skipped); go on from the cursor.
    Page,
    /// The page completed the pending record.
    Record,
    /// Nothing more in this segment.
    Finished,
}

/// Decoding of one segment.
pub(super) struct SegmentRun<R> {
    segment: WalSegment,
    input: PageInput<R>,
    /// Offset in the segment of the next page to load.
    next_page: u64,
    cursor: Option<Cursor>,
    summary: SegmentSummary,
    /// An error to report before anything else (a segment out of order).
    refused: Option<DecodeError>,
    /// Where decoding failed, once it has.
    failed: Option<(WalSegment, Lsn)>,
    done: bool,
    /// The record just decoded, if `has_last`. Overwritten in place for
    /// every record rather than rebuilt: this is the hot path.
    last: Decoded,
    has_last: bool,
}

impl<R: Read> SegmentRun<R> {
    pub fn new(stream: &mut Stream, segment: WalSegment, reader: R) -> SegmentRun<R> {
        let mut run = SegmentRun {
            segment,
            input: PageInput::new(reader, segment.size.bytes()),
            next_page: 0,
            cursor: None,
            summary: SegmentSummary::new(segment, stream.valid_until),
            refused: None,
            failed: None,
            done: false,
            last: Decoded::default(),
            has_last: false,
        };
        if let Status::Ended(_) = stream.status {
            run.summary.end = SegmentEnd::AfterEnd;
            run.done = true;
        } else if let Err(error) = stream.admit(segment) {
            run.refused = Some(error);
        }
        run
    }

    pub fn summary(&self) -> &SegmentSummary {
        &self.summary
    }

    /// The summary, or where decoding of this segment failed.
    pub fn into_summary(self) -> Result<SegmentSummary, (WalSegment, Lsn)> {
        match self.failed {
            Some(failure) => Err(failure),
            None => Ok(self.summary),
        }
    }

    pub fn last(&self) -> Option<&Decoded> {
        self.has_last.then_some(&self.last)
    }

    pub fn take_event(&mut self) -> Option<Event> {
        self.last.event.take()
    }

    /// Decodes the next valid record of this segment into [`Self::last`]:
    /// `Some(Ok(()))`, or `None` when the segment is done (see the
    /// summary's `end`), or the error that stops decoding.
    pub fn step(&mut self, stream: &mut Stream) -> Option<Result<(), DecodeError>> {
        if let Some(error) = self.refused.take() {
            self.done = true;
            self.failed = Some((error.segment, error.lsn));
            return Some(Err(error));
        }
        if self.done {
            return None;
        }
        self.has_last = false;
        self.last.event = None;
        match self.advance(stream) {
            Ok(true) => Some(Ok(())),
            Ok(false) => {
                self.done = true;
                stream.unfinished = None;
                None
            }
            Err(error) => {
                self.done = true;
                self.failed = Some((error.segment, error.lsn));
                stream.status = Status::Failed {
                    segment: error.segment,
                    lsn: error.lsn,
                };
                Some(Err(error))
            }
        }
    }

    fn lsn_at(&self, offset: u64) -> Lsn {
        Lsn::new(self.segment.start_lsn().value() + offset)
    }

    fn error(&self, lsn: Lsn, problem: Problem) -> DecodeError {
        DecodeError::new(self.segment, lsn, problem)
    }

    /// True when a record was decoded, false when the segment is done.
    fn advance(&mut self, stream: &mut Stream) -> Result<bool, DecodeError> {
        if matches!(self.summary.end, SegmentEnd::Switch { .. }) {
            return Ok(false);
        }
        loop {
            let Some(cursor) = self.cursor else {
                match self.load_page(stream)? {
                    Loaded::Page => continue,
                    Loaded::Record => return Ok(true),
                    Loaded::Finished => return Ok(false),
                }
            };
            // Page size is known once a page was accepted.
            let page_size = stream.rules.block_size.unwrap_or_default() as usize;
            if cursor.pos >= page_size {
                self.cursor = None;
                continue;
            }
            let page_lsn = self.lsn_at(cursor.page_offset);
            let start = Lsn::new(page_lsn.value() + cursor.pos as u64);
            let page = stream
                .chunk
                .get(cursor.base..cursor.base + page_size)
                .unwrap_or_default();
            let Some(total_len) = u32_at(page, cursor.pos) else {
                // Unreachable: pos is 8-aligned and below the page size.
                return Err(self.error(start, Problem::BadRecordLength { length: 0 }));
            };
            if total_len == 0 {
                self.end_wal(stream, start, EndReason::ZeroRecordLength);
                return Ok(false);
            }
            check_length(total_len).map_err(|p| self.error(start, p))?;
            let space = page_size - cursor.pos;
            if total_len as usize <= space {
                let end_in_page = cursor.pos + total_len as usize;
                let end = Lsn::new(maxalign(page_lsn.value() + end_in_page as u64));
                self.cursor = Some(Cursor {
                    pos: maxalign(end_in_page as u64) as usize,
                    ..cursor
                });
                let at = cursor.base + cursor.pos;
                self.complete(stream, start, end, Location::Chunk(at), total_len as usize)?;
                return Ok(true);
            }
            // The record goes on in the next page(s).
            let first_part = page.get(cursor.pos..).unwrap_or_default();
            stream.pending.start = start;
            stream.pending.total_len = total_len;
            stream.pending.bytes.clear();
            stream.pending.bytes.extend_from_slice(first_part);
            stream.pending.header_checked = false;
            self.check_pending_header(stream)?;
            stream.expect = Expect::Continuation;
            self.cursor = None;
        }
    }

    /// Checks the pending record's header once all 24 bytes are there.
    fn check_pending_header(&self, stream: &mut Stream) -> Result<(), DecodeError> {
        if stream.pending.header_checked {
            return Ok(());
        }
        let Some(header) = RecordHeader::parse(&stream.pending.bytes) else {
            return Ok(());
        };
        let start = stream.pending.start;
        stream
            .check_prev_link(start, &header)
            .map_err(|p| self.error(start, p))?;
        stream.pending.header_checked = true;
        Ok(())
    }

    /// Reads and checks the next page and handles what it begins with.
    fn load_page(&mut self, stream: &mut Stream) -> Result<Loaded, DecodeError> {
        let segment_len = self.segment.size.bytes();
        if self.next_page >= segment_len {
            self.summary.end = SegmentEnd::Continues {
                record_in_progress: stream.record_in_progress(),
            };
            return Ok(Loaded::Finished);
        }
        let offset = self.next_page;
        let page_lsn = self.lsn_at(offset);
        let segment = self.segment;
        let io_error = move |e| DecodeError::new(segment, page_lsn, Problem::Io(e));
        let (base, check) = match stream.rules.block_size {
            Some(size) => {
                let got = self.input.get(&mut stream.chunk, offset, size as usize);
                let Some(base) = got.map_err(io_error)? else {
                    self.end_wal(stream, page_lsn, EndReason::InputEnded);
                    return Ok(Loaded::Finished);
                };
                let bytes = stream.chunk.get(base..).unwrap_or_default();
                let check = check_page(bytes, page_lsn, self.segment, &mut stream.rules);
                (base, check)
            }
            None => {
                // The very first page: its long header gives the page size.
                let got = self.input.get(&mut stream.chunk, offset, LONG_HEADER_LEN);
                let Some(at) = got.map_err(io_error)? else {
                    self.end_wal(stream, page_lsn, EndReason::InputEnded);
                    return Ok(Loaded::Finished);
                };
                let bytes = stream.chunk.get(at..).unwrap_or_default();
                let check = check_page(bytes, page_lsn, self.segment, &mut stream.rules);
                if let (Ok(PageCheck::Valid(_)), Some(size)) = (&check, stream.rules.block_size) {
                    let got = self.input.get(&mut stream.chunk, offset, size as usize);
                    let Some(base) = got.map_err(io_error)? else {
                        self.end_wal(stream, page_lsn, EndReason::InputEnded);
                        return Ok(Loaded::Finished);
                    };
                    (base, check)
                } else {
                    (at, check)
                }
            }
        };
        let header = match check.map_err(|p| self.error(page_lsn, p))? {
            PageCheck::Valid(header) => header,
            PageCheck::End(reason) => {
                self.end_wal(stream, page_lsn, reason);
                return Ok(Loaded::Finished);
            }
        };
        let page_size = stream.rules.block_size.unwrap_or_default() as usize;
        self.next_page = offset + page_size as u64;
        let header_len = header.len();
        let at = |pos: usize| {
            Some(Cursor {
                page_offset: offset,
                base,
                pos,
            })
        };
        match stream.expect {
            Expect::StartAt(lsn) => {
                let page_end = page_lsn.value() + page_size as u64;
                if lsn.value() >= page_end {
                    return Ok(Loaded::Page); // before the start: skip
                }
                let pos = lsn.value().saturating_sub(page_lsn.value()) as usize;
                let pos = match pos {
                    0 if !header.continues_record() => header_len,
                    0 => return Err(self.error(lsn, Problem::BadStart)),
                    pos if pos < header_len => return Err(self.error(lsn, Problem::BadStart)),
                    pos => pos,
                };
                stream.expect = Expect::RecordStart;
                self.cursor = at(pos);
            }
            Expect::SkipContinuation => {
                if header.continues_record() {
                    let rest = maxalign(u64::from(header.remaining_length));
                    if rest >= (page_size - header_len) as u64 {
                        return Ok(Loaded::Page); // all of this page is the tail
                    }
                    self.cursor = at(header_len + rest as usize);
                } else {
                    self.cursor = at(header_len);
                }
                stream.expect = Expect::RecordStart;
            }
            Expect::RecordStart => {
                if header.continues_record() {
                    return Err(self.error(page_lsn, Problem::UnexpectedContinuation));
                }
                self.cursor = at(header_len);
            }
            Expect::Continuation => {
                if header.overwrites_record() {
                    // The pending record was cut short by a crash and WAL
                    // went on here; it never happened.
                    stream.expect = Expect::RecordStart;
                    self.cursor = at(header_len);
                    return Ok(Loaded::Page);
                }
                let record = stream.pending.start;
                if !header.continues_record() {
                    return Err(self.error(page_lsn, Problem::MissingContinuation { record }));
                }
                let expected = u64::from(stream.pending.total_len)
                    .saturating_sub(stream.pending.bytes.len() as u64);
                let remaining = header.remaining_length;
                if remaining == 0 || u64::from(remaining) != expected {
                    return Err(self.error(
                        page_lsn,
                        Problem::ContinuationLengthMismatch {
                            record,
                            expected,
                            found: remaining,
                        },
                    ));
                }
                let take = (remaining as usize).min(page_size - header_len);
                let piece = stream
                    .chunk
                    .get(base + header_len..base + header_len + take)
                    .unwrap_or_default();
                stream.pending.bytes.extend_from_slice(piece);
                self.check_pending_header(stream)?;
                if stream.pending.bytes.len() < stream.pending.total_len as usize {
                    return Ok(Loaded::Page); // goes on in the next page
                }
                let end_in_page = maxalign((header_len + take) as u64);
                let end = Lsn::new(page_lsn.value() + end_in_page);
                stream.expect = Expect::RecordStart;
                self.cursor = at(end_in_page as usize);
                let len = stream.pending.bytes.len();
                self.complete(stream, record, end, Location::Assembled, len)?;
                return Ok(Loaded::Record);
            }
        }
        Ok(Loaded::Page)
    }

    /// Validates a whole record, decodes its event, and accounts for it.
    fn complete(
        &mut self,
        stream: &mut Stream,
        start: Lsn,
        end: Lsn,
        location: Location,
        len: usize,
    ) -> Result<(), DecodeError> {
        let major = stream.rules.major_version().unwrap_or_default();
        let bytes: &[u8] = match location {
            Location::Chunk(at) => stream.chunk.get(at..at + len).unwrap_or_default(),
            Location::Assembled => &stream.pending.bytes,
        };
        let error = |problem| DecodeError::new(self.segment, start, problem);
        let header = RecordHeader::parse(bytes)
            .ok_or_else(|| error(Problem::BadRecordLength { length: 0 }))?;
        if let Location::Chunk(_) = location {
            stream.check_prev_link(start, &header).map_err(error)?;
        }
        check_crc(bytes, &header).map_err(error)?;
        let main = main_data(bytes, major).map_err(error)?;
        // Only XLOG and transaction records carry events; skip the rest
        // without touching the (large) event types.
        if header.rmid <= RM_XACT_ID {
            let data = bytes.get(main.clone()).unwrap_or_default();
            if let Some(kind) = interpret(&header, data, major).map_err(error)? {
                self.last.event = Some(Event { start, end, kind });
            }
        }
        stream.prev_record = Some(start);
        stream.valid_until = Some(end);
        self.summary.add_record(end, self.last.event.as_ref());
        if xlog::is_switch(header.rmid, header.rmgr_info()) {
            // The rest of the segment is unused; the next one starts afresh.
            self.summary.end = SegmentEnd::Switch { record: start };
            stream.expect = Expect::RecordStart;
        }
        self.last.header = header;
        self.last.start = start;
        self.last.end = end;
        self.last.location = location;
        self.last.main_data = main;
        self.has_last = true;
        Ok(())
    }

    fn end_wal(&mut self, stream: &mut Stream, at: Lsn, reason: EndReason) {
        let end = WalEnd {
            segment: self.segment,
            at,
            reason,
            valid_until: stream.valid_until,
            incomplete_record: stream.record_in_progress(),
        };
        self.summary.end = SegmentEnd::EndOfWal(end);
        stream.status = Status::Ended(end);
    }
}

/// The event a valid record stands for, if it is one we report.
fn interpret(header: &RecordHeader, data: &[u8], major: u32) -> Result<Option<EventKind>, Problem> {
    match header.rmid {
        RM_XLOG_ID => {
            xlog::parse(header.rmgr_info(), data).map_err(|detail| Problem::BadRecordData {
                rmgr: "XLOG",
                detail,
            })
        }
        RM_XACT_ID => {
            let parsed = xact::parse(header.info, header.xid, data, major).map_err(|detail| {
                Problem::BadRecordData {
                    rmgr: "Transaction",
                    detail,
                }
            })?;
            Ok(match parsed {
                xact::XactRecord::Commit(end) => Some(EventKind::Commit(end)),
                xact::XactRecord::Abort(end) => Some(EventKind::Abort(end)),
                xact::XactRecord::Prepare { xid, gid, time } => {
                    Some(EventKind::Prepare { xid, gid, time })
                }
                xact::XactRecord::Other => None,
            })
        }
        _ => Ok(None),
    }
}
