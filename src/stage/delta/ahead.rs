//! The existing file read ahead of the comparison. A delta restore's floor
//! is reading the existing directory once; a worker that reads a chunk,
//! then hashes, decompresses and compares it, leaves the disk idle while it
//! computes and its core idle while it waits. Asking the kernel to read the
//! next few MiB (`posix_fadvise(WILLNEED)`, which queues the reads and
//! returns) keeps the disk busy behind the worker, with no thread and no
//! buffer of ours: the pages land in the page cache the next `pread` takes
//! them from.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::libc::off_t;

/// How far ahead of the comparison the kernel is asked to read: a few
/// requests of the disk's in flight per worker, bounded (the page cache
/// holds at most this much per worker before it is compared).
const WINDOW: u64 = 8 << 20;

/// Asked for in steps this large, so that the advice costs one system call
/// per 2 MiB compared, not one per chunk.
const STEP: u64 = 2 << 20;

/// Keeps the kernel reading `file` ahead of a sequential comparison.
pub struct Ahead<'a> {
    file: &'a File,
    size: u64,
    /// Everything before this offset has been asked for.
    asked: u64,
}

impl<'a> Ahead<'a> {
    /// For a file of `size` bytes compared from its start.
    pub fn new(file: &'a File, size: u64) -> Ahead<'a> {
        // Advice only: a filesystem that ignores it reads on demand, as
        // without it, so a failure changes the speed, never the result.
        let _ = posix_fadvise(
            file.as_raw_fd(),
            0,
            0,
            PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        let mut ahead = Ahead {
            file,
            size,
            asked: 0,
        };
        ahead.reading(0);
        ahead
    }

    /// Called before the comparison reads at `offset`: the window after
    /// it is asked for, when it has moved on by a step.
    pub fn reading(&mut self, offset: u64) {
        let wanted = offset.saturating_add(WINDOW).min(self.size);
        if wanted <= self.asked || (wanted < self.size && wanted - self.asked < STEP) {
            return;
        }
        let (Ok(from), Ok(len)) = (
            off_t::try_from(self.asked),
            off_t::try_from(wanted - self.asked),
        ) else {
            return;
        };
        // Advice, as above.
        let _ = posix_fadvise(
            self.file.as_raw_fd(),
            from,
            len,
            PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
        self.asked = wanted;
    }
}
