//! Whole pages from a segment's bytes, read in large chunks.
//!
//! The caller hands us any `Read` (a file, a decompressor); we read it
//! front to back into one reusable buffer and never further than the
//! decoder asks, so decoding that stops early (a switch record, the end of
//! WAL) does not read the rest of the segment.

use std::io::{self, Read};

/// Bytes read at a time: a multiple of every WAL page size (at most 64 KiB)
/// and a divisor of every segment size (at least 1 MiB), so a chunk always
/// holds whole pages and never crosses the end of a segment. Small enough
/// to stay in the CPU cache between the kernel's copy and our CRC pass: on
/// the development machine, reading 192 MiB took 18 ms in 64 KiB reads and
/// 76 ms in 256 KiB reads.
pub(super) const CHUNK_LEN: usize = 64 * 1024;

pub(super) struct PageInput<R> {
    reader: R,
    segment_len: u64,
    /// Bytes consumed from `reader` so far.
    consumed: u64,
    /// Segment offset of `chunk[0]`.
    chunk_offset: u64,
    /// Valid bytes in the chunk.
    filled: usize,
    /// The reader returned end-of-file.
    exhausted: bool,
}

impl<R: Read> PageInput<R> {
    pub fn new(reader: R, segment_len: u64) -> PageInput<R> {
        PageInput {
            reader,
            segment_len,
            consumed: 0,
            chunk_offset: 0,
            filled: 0,
            exhausted: false,
        }
    }

    /// Makes the segment bytes `[offset, offset + len)` available in
    /// `chunk` and returns their index there, or `None` if the input ends
    /// first. Requests go forward through the segment; `len` divides
    /// [`CHUNK_LEN`] and `offset` is a multiple of `len`, or `offset` is 0.
    pub fn get(
        &mut self,
        chunk: &mut Vec<u8>,
        offset: u64,
        len: usize,
    ) -> io::Result<Option<usize>> {
        let end = offset.saturating_add(len as u64);
        if offset >= self.chunk_offset && end <= self.chunk_offset + self.filled as u64 {
            return Ok(Some((offset - self.chunk_offset) as usize));
        }
        if self.exhausted || end > self.segment_len {
            return Ok(None);
        }
        let start = offset - offset % CHUNK_LEN as u64;
        if start < self.consumed {
            // Cannot happen with forward requests; never hand out wrong bytes.
            return Err(io::Error::other("WAL input requested backwards"));
        }
        self.skip_to(start)?;
        if self.exhausted {
            return Ok(None);
        }
        let want = (self.segment_len - start).min(CHUNK_LEN as u64) as usize;
        chunk.resize(CHUNK_LEN, 0);
        self.chunk_offset = start;
        self.filled = 0;
        while self.filled < want {
            match self.reader.read(&mut chunk[self.filled..want]) {
                Ok(0) => {
                    self.exhausted = true;
                    break;
                }
                Ok(n) => self.filled += n.min(want - self.filled),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.consumed = start + self.filled as u64;
        if end <= self.chunk_offset + self.filled as u64 {
            Ok(Some((offset - self.chunk_offset) as usize))
        } else {
            Ok(None)
        }
    }

    /// Reads and discards input up to segment offset `target`.
    fn skip_to(&mut self, target: u64) -> io::Result<()> {
        if target <= self.consumed {
            return Ok(());
        }
        let gap = target - self.consumed;
        let skipped = io::copy(&mut (&mut self.reader).take(gap), &mut io::sink())?;
        self.consumed += skipped;
        if skipped < gap {
            self.exhausted = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_from_chunks_and_short_input_ends() {
        let data: Vec<u8> = (0..(CHUNK_LEN + 9000)).map(|i| (i % 251) as u8).collect();
        let mut input = PageInput::new(&data[..], 1 << 20);
        let mut chunk = Vec::new();
        let at = input.get(&mut chunk, 0, 40).unwrap().unwrap();
        assert_eq!(&chunk[at..at + 3], &data[0..3]);
        let at = input.get(&mut chunk, 8192, 8192).unwrap().unwrap();
        assert_eq!(chunk[at], data[8192]);
        let at = input
            .get(&mut chunk, CHUNK_LEN as u64, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(chunk[at], data[CHUNK_LEN]);
        assert_eq!(
            input
                .get(&mut chunk, CHUNK_LEN as u64 + 8192, 8192)
                .unwrap(),
            None
        );
    }

    #[test]
    fn skips_forward() {
        let data = vec![7u8; 3 * CHUNK_LEN];
        let mut input = PageInput::new(&data[..], 4 * CHUNK_LEN as u64);
        let mut chunk = Vec::new();
        assert!(input
            .get(&mut chunk, 2 * CHUNK_LEN as u64, 8192)
            .unwrap()
            .is_some());
        assert_eq!(
            input.get(&mut chunk, 3 * CHUNK_LEN as u64, 8192).unwrap(),
            None
        );
    }
}
