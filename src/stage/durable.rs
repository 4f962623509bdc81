//! Durable writes made cheap.
//!
//! A staged data directory must be on disk before it is renamed into place,
//! or a crash could leave a complete-looking directory with holes in it.
//! An fsync per file would make the disk wait on thousands of small
//! flushes; instead files are written into the page cache, the kernel's
//! background writeback works on them while staging goes on, and one
//! `syncfs` at the end makes everything durable, data and metadata, and
//! reports any write error. PostgreSQL's own flush of the data directory at
//! startup (`recovery_init_sync_method = syncfs`) then finds nothing to do.
//!
//! Starting the writeback of each file ourselves as it is written
//! (`sync_file_range`, bounding what is in flight) was measured and
//! dropped: on the scale-300 benchmark it was never faster than leaving
//! writeback to the kernel and paying the tail in this one `syncfs`, and
//! slower when the bound made the writer wait.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

use super::tablespaces::StagedTablespace;
use crate::progress::Reporter;

/// The durability step: the staged data directory and tablespaces are on
/// disk before anything is renamed into place, so a directory at
/// `--pgdata` is always complete, even after a crash.
pub fn make_durable(
    staging: &Path,
    tablespaces: &[StagedTablespace],
    reporter: &Reporter,
) -> Result<()> {
    let syncing = std::time::Instant::now();
    sync_filesystem(staging)?;
    for staged in tablespaces {
        staged.sync()?;
    }
    reporter.detail(format!(
        "flushed to disk in {:.1}s",
        syncing.elapsed().as_secs_f64()
    ));
    Ok(())
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
    fn syncing_a_directory_succeeds_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"data").unwrap();
        sync_filesystem(dir.path()).unwrap();
        let error = sync_filesystem(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{error:#}").contains("cannot open"), "{error:#}");
    }
}
