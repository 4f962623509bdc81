//! A small WAL writer for tests: lays records out in pages and segments the
//! way PostgreSQL's `CopyXLogRecordToWAL` does (8-byte aligned, page headers
//! cut in, `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` on continuation
//! pages, the rest of a segment left zero after a switch), so that the
//! decoder can be tested on layouts real WAL rarely shows.

use crate::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

use super::super::record::tests::{record, with_main_data};

pub const PG15_MAGIC: u16 = 0xD110;
pub const SYSTEM_ID: u64 = 7_311_541_712_905_306_170;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;

pub struct WalWriter {
    pub first: WalSegment,
    pub page_size: u64,
    pub magic: u16,
    /// The WAL bytes from the start of `first`.
    pub bytes: Vec<u8>,
    /// Where the next record goes (relative to `first`), before alignment.
    pos: u64,
    prev: Lsn,
    /// Flags for the next page header written.
    next_page_flags: u16,
}

/// A record as written: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct Written {
    pub start: Lsn,
    pub end: Lsn,
    pub prev: Lsn,
    pub rmid: u8,
    pub total_len: u32,
}

impl WalWriter {
    /// 1 MiB segments (the smallest) from segment 0x10 of timeline 1.
    pub fn new(page_size: u64) -> WalWriter {
        let size = SegmentSize::new(1 << 20).unwrap();
        let first = WalSegment {
            timeline: TimelineId::FIRST,
            number: 0x10,
            size,
        };
        WalWriter {
            first,
            page_size,
            magic: PG15_MAGIC,
            bytes: Vec::new(),
            pos: 0,
            prev: Lsn::new(first.start_lsn().value() - 0x100),
            next_page_flags: 0,
        }
    }

    fn base(&self) -> u64 {
        self.first.start_lsn().value()
    }

    pub fn lsn(&self, offset: u64) -> Lsn {
        Lsn::new(self.base() + offset)
    }

    fn segment_len(&self) -> u64 {
        self.first.size.bytes()
    }

    fn ensure(&mut self, len: u64) {
        if (self.bytes.len() as u64) < len {
            self.bytes.resize(len as usize, 0);
        }
    }

    fn page_header(&mut self, remaining: u32) {
        let at = self.pos;
        let long = at % self.segment_len() == 0;
        let mut info = self.next_page_flags;
        self.next_page_flags = 0;
        if remaining > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        if long {
            info |= XLP_LONG_HEADER;
        }
        let len = if long { 40 } else { 24 };
        self.ensure(at + len);
        let (address, segment_len) = (self.base() + at, self.segment_len());
        let page = &mut self.bytes[at as usize..(at + len) as usize];
        page[0..2].copy_from_slice(&self.magic.to_le_bytes());
        page[2..4].copy_from_slice(&info.to_le_bytes());
        page[4..8].copy_from_slice(&1u32.to_le_bytes());
        page[8..16].copy_from_slice(&address.to_le_bytes());
        page[16..20].copy_from_slice(&remaining.to_le_bytes());
        if long {
            page[24..32].copy_from_slice(&SYSTEM_ID.to_le_bytes());
            page[32..36].copy_from_slice(&(segment_len as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(self.page_size as u32).to_le_bytes());
        }
        self.pos += len;
    }

    /// Writes raw record bytes at the current position (already aligned),
    /// cutting in page headers; `limit` stops early (a torn record).
    fn put(&mut self, record: &[u8], limit: usize) {
        let mut done = 0;
        while done < limit {
            if self.pos % self.page_size == 0 {
                // Only a continuation page says how much is left; a
                // record starting at a page start was given its header
                // by the caller.
                let remaining = if done > 0 { record.len() - done } else { 0 };
                self.page_header(remaining as u32);
            }
            let space = (self.page_size - self.pos % self.page_size) as usize;
            let take = space.min(limit - done);
            self.ensure(self.pos + take as u64);
            let at = self.pos as usize;
            self.bytes[at..at + take].copy_from_slice(&record[done..done + take]);
            done += take;
            self.pos += take as u64;
        }
    }

    fn align(&mut self) {
        self.pos = (self.pos + 7) & !7;
    }

    /// Appends a record with these fragment headers and data.
    pub fn push(&mut self, rmid: u8, info: u8, xid: u32, after_header: &[u8]) -> Written {
        self.align();
        if self.pos % self.page_size == 0 {
            self.page_header(0);
        }
        let start = self.lsn(self.pos);
        let bytes = record(rmid, info, xid, self.prev.value(), after_header);
        self.put(&bytes, bytes.len());
        let written = Written {
            start,
            end: Lsn::new((self.base() + self.pos + 7) & !7),
            prev: self.prev,
            rmid,
            total_len: bytes.len() as u32,
        };
        self.prev = start;
        written
    }

    /// A record with only main data.
    pub fn push_main(&mut self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> Written {
        self.push(rmid, info, xid, &with_main_data(main))
    }

    /// A heap-like record of `len` bytes in all.
    pub fn push_filler(&mut self, len: usize) -> Written {
        let main = vec![0x5A; len.saturating_sub(24 + 5)];
        self.push_main(10, 0, 7, &main)
    }

    /// A commit of `xid` at `micros` (µs since 2000), no xinfo.
    pub fn push_commit(&mut self, xid: u32, micros: i64) -> Written {
        self.push_main(1, 0x00, xid, &micros.to_le_bytes())
    }

    /// `XLOG_SWITCH`; the rest of the segment stays zero.
    pub fn push_switch(&mut self) -> Written {
        let written = self.push(0, 0x40, 0, &[]);
        let segment = self.segment_len();
        self.align();
        self.pos = self.pos.div_ceil(segment) * segment;
        written
    }

    /// Writes the first `written` bytes of a record that a crash cut
    /// short, and marks the next page as overwriting it (what a server
    /// does when it restarts after such a crash). Returns the torn
    /// record's start.
    pub fn push_torn(&mut self, total_len: usize, written: usize) -> Lsn {
        self.align();
        if self.pos % self.page_size == 0 {
            self.page_header(0);
        }
        let start = self.lsn(self.pos);
        let bytes = record(
            10,
            0,
            7,
            self.prev.value(),
            &with_main_data(&vec![1; total_len - 29]),
        );
        self.put(&bytes, written);
        // WAL goes on at the next page, flagged.
        self.pos = self.pos.div_ceil(self.page_size) * self.page_size;
        self.next_page_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        start
    }

    /// The segments written so far, each padded to full size with zeroes
    /// (unwritten pages).
    pub fn segments(&self) -> Vec<(WalSegment, Vec<u8>)> {
        let len = self.segment_len() as usize;
        let count = self.bytes.len().div_ceil(len).max(1);
        (0..count)
            .map(|i| {
                let mut bytes = self.bytes.get(i * len..).unwrap_or_default().to_vec();
                bytes.truncate(len);
                bytes.resize(len, 0);
                let segment = WalSegment {
                    number: self.first.number + i as u64,
                    ..self.first
                };
                (segment, bytes)
            })
            .collect()
    }
}
