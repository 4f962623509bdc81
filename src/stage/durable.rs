//! Durable writes made cheap.
//!
//! A staged data directory must be on disk before it is renamed into place,
//! or a crash could leave a complete-looking directory with holes in it. An
//! fsync per file would make the disk wait on thousands of small flushes; a
//! single `syncfs` at the end is one call, but then gigabytes of dirty page
//! cache are written only at the end, after the kernel has already throttled
//! the writer (PostgreSQL's own startup `syncfs` then waits for the rest).
//!
//! So both: while files are written, [`Flusher`] starts the writeback of
//! each window of data as soon as it is written (`sync_file_range`, which
//! neither waits nor flushes metadata), keeping the disk busy from the first
//! second, and waits for the oldest ranges when too much is in flight, which
//! bounds the dirty page cache. [`sync_filesystem`] at the end is then the one
//! call that makes everything durable, data and metadata, and that reports
//! any write error; by then little is left for it to do.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result};

/// Data written before its writeback is started.
const WINDOW: u64 = 8 << 20;
/// Data whose writeback may be in flight before the writer waits.
const MAX_IN_FLIGHT: u64 = 128 << 20;
/// Files kept open for waiting on, so the descriptors stay few.
const MAX_FILES: usize = 128;

/// Starts writeback as data is written and bounds what is in flight.
#[derive(Default)]
pub struct Flusher {
    queue: VecDeque<Range>,
    in_flight: u64,
}

struct Range {
    file: Rc<File>,
    offset: u64,
    len: u64,
}

impl Flusher {
    /// `len` bytes at `offset` of `file` are written: start their writeback,
    /// and wait for the oldest ranges while too much is in flight.
    fn written(&mut self, file: &Rc<File>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        sync_file_range(file, offset, len, nix::libc::SYNC_FILE_RANGE_WRITE);
        self.queue.push_back(Range {
            file: file.clone(),
            offset,
            len,
        });
        self.in_flight += len;
        while self.in_flight > MAX_IN_FLIGHT || self.queue.len() > MAX_FILES {
            let Some(oldest) = self.queue.pop_front() else {
                break;
            };
            sync_file_range(
                &oldest.file,
                oldest.offset,
                oldest.len,
                nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | nix::libc::SYNC_FILE_RANGE_WRITE
                    | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            self.in_flight -= oldest.len;
        }
    }
}

/// `sync_file_range(2)`. Only a hint for the kernel's writeback: errors are
/// ignored here because [`sync_filesystem`] reports every write error, and
/// some filesystems do not support it.
fn sync_file_range(file: &File, offset: u64, len: u64, flags: std::ffi::c_uint) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` keeps open; it
    // reads no memory of ours.
    unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}

/// A new file being written, its writeback started window by window.
pub struct FlushingFile<'a> {
    file: Rc<File>,
    flusher: &'a mut Flusher,
    written: u64,
    started: u64,
}

impl<'a> FlushingFile<'a> {
    pub fn new(file: File, flusher: &'a mut Flusher) -> FlushingFile<'a> {
        FlushingFile {
            file: Rc::new(file),
            flusher,
            written: 0,
            started: 0,
        }
    }

    /// Starts the writeback of the last, partial window.
    pub fn finish(self) {
        let started = self.started;
        self.flusher
            .written(&self.file, started, self.written - started);
    }
}

impl Write for FlushingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WINDOW {
            let (started, len) = (self.started, self.written - self.started);
            self.flusher.written(&self.file, started, len);
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes everything written to the filesystem holding `path` durable, and
/// reports any error the kernel met writing it back (Linux 5.8 and later
/// report writeback errors through `syncfs`).
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    nix::unistd::syncfs(dir.as_raw_fd()).with_context(|| {
        format!(
            "writing to the filesystem of `{}` failed (syncfs); the data written cannot be trusted",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_written_through_the_flusher_are_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut flusher = Flusher::default();
        // Sizes around the window, and more files than are kept open.
        let sizes: Vec<u64> = [0, 1, WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 17]
            .into_iter()
            .chain(std::iter::repeat_n(4096, MAX_FILES + 10))
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            let file = File::create(dir.path().join(i.to_string())).unwrap();
            let mut writer =
                io::BufWriter::with_capacity(256 * 1024, FlushingFile::new(file, &mut flusher));
            let data: Vec<u8> = (0..*size).map(|b| (b % 253) as u8).collect();
            writer.write_all(&data).unwrap();
            let inner = writer.into_inner().map_err(|e| e.into_error()).unwrap();
            inner.finish();
        }
        assert!(flusher.queue.len() <= MAX_FILES);
        assert!(flusher.in_flight <= MAX_IN_FLIGHT);
        sync_filesystem(dir.path()).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            let data = std::fs::read(dir.path().join(i.to_string())).unwrap();
            assert_eq!(data.len() as u64, *size);
            assert!(data
                .iter()
                .enumerate()
                .all(|(b, v)| *v == (b as u64 % 253) as u8));
        }
    }
}
