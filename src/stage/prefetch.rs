//! WAL prefetching: from the moment the plan is made (so while the backup
//! is still being extracted) and then while PostgreSQL replays, the next
//! segments of the planned range are decompressed into a spool beside the
//! data directory, a bounded number ahead of replay, and
//! `pitr wal-fetch --spool` moves each into place with a rename. Replay
//! then never waits on the archive or on decompression.
//!
//! Each spooled file is flushed to disk before it is published: PostgreSQL
//! fsyncs every segment it restores (`durable_rename` when it keeps the
//! file), and that fsync would otherwise write 16 MiB while replay waits.
//! A scratch copy (`Durability::Throwaway`) runs with `fsync = off`, so
//! nothing is flushed for it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::compression::Compression;
use crate::os_user::OsUser;
use crate::postgres::settings::Durability;
use crate::repo::archive::ArchivedFile;
use crate::wal::WalSegment;

/// Creates the spool `.<name>.pitr-spool-<pid>` beside `pgdata` (same
/// file system, so wal-fetch can rename from it), given to the server's
/// user, who runs wal-fetch. None when the parent directory does not exist
/// (staging then says so).
pub fn create_spool(pgdata: &Path, user: &OsUser) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    let Some(parent) = pgdata.parent().filter(|p| p.is_dir()) else {
        return Ok(None);
    };
    let Some(name) = pgdata.file_name() else {
        return Ok(None);
    };
    let spool = super::work_dir_beside(parent, &name.to_string_lossy(), "spool");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&spool)
        .with_context(|| {
            format!(
                "cannot create a directory in `{}`, which holds --pgdata ({})",
                parent.display(),
                crate::access::who_may(parent)
            )
        })?;
    user.own(&spool)?;
    Ok(Some(spool))
}

/// A running prefetcher; stop it with [`Prefetcher::finish`].
pub struct Prefetcher {
    stop: Arc<AtomicBool>,
    replayed: Arc<AtomicU64>,
    handle: Option<JoinHandle<PrefetchStats>>,
    spool: PathBuf,
}

/// What the prefetcher did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PrefetchStats {
    pub prefetched: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl Prefetcher {
    /// Starts filling `spool` with `segments` (in replay order), at most
    /// `ahead` beyond the last one replay asked for. Files are given to
    /// `user`, who runs `wal-fetch`; each flushed to disk unless the
    /// restore is a throwaway copy.
    pub fn start(
        segments: Vec<(WalSegment, ArchivedFile)>,
        spool: &Path,
        user: OsUser,
        ahead: u64,
        durability: Durability,
    ) -> Prefetcher {
        let stop = Arc::new(AtomicBool::new(false));
        let replayed = Arc::new(AtomicU64::new(0));
        let first = segments.first().map(|(s, _)| s.number).unwrap_or(0);
        let (thread_stop, thread_replayed, dir) =
            (stop.clone(), replayed.clone(), spool.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut stats = PrefetchStats::default();
            for (segment, file) in segments {
                // Wait while the spool is far enough ahead of replay.
                loop {
                    if thread_stop.load(Ordering::Relaxed) {
                        return stats;
                    }
                    let position = thread_replayed.load(Ordering::Relaxed).max(first);
                    if segment.number < position + ahead {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if segment.number < thread_replayed.load(Ordering::Relaxed) {
                    continue; // replay is already past it
                }
                match spool_one(&dir, segment, &file, &user, durability) {
                    Ok(bytes) => {
                        stats.prefetched += 1;
                        stats.bytes += bytes;
                    }
                    // wal-fetch falls back to the archive for this one.
                    Err(_) => stats.errors += 1,
                }
            }
            stats
        });
        Prefetcher {
            stop,
            replayed,
            handle: Some(handle),
            spool: spool.to_path_buf(),
        }
    }

    /// The directory segments are spooled into.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// Replay asked for this segment: the window moves on.
    pub fn replayed(&self, segment: WalSegment) {
        self.replayed.fetch_max(segment.number, Ordering::Relaxed);
    }

    /// Stops prefetching and removes the spool with whatever is left in it.
    pub fn finish(mut self) -> PrefetchStats {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self
            .handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        let _ = fs::remove_dir_all(&self.spool);
        stats
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let _ = fs::remove_dir_all(&self.spool);
    }
}

/// Delivers a segment the restore prefetched to `destination` by moving it
/// out of the spool (no copy); false when the spool does not have it, and
/// then the archive still does.
pub fn take_spooled(spool: &Path, name: &str, destination: &Path) -> bool {
    fs::rename(spool.join(name), destination).is_ok()
}

/// Decompresses one segment into the spool: temporary name, then rename,
/// so wal-fetch only ever sees complete files.
fn spool_one(
    dir: &Path,
    segment: WalSegment,
    file: &ArchivedFile,
    user: &OsUser,
    durability: Durability,
) -> io::Result<u64> {
    let name = segment.file_name();
    let final_path = dir.join(&name);
    if final_path.exists() {
        return Ok(0);
    }
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut output = File::create(&temp)?;
        let bytes = match file.compression {
            // File to file: the kernel copies (copy_file_range).
            Compression::None => file.download(&mut output)?,
            _ => io::copy(&mut file.open()?, &mut output)?,
        };
        if bytes != segment.size.bytes() {
            return Err(io::Error::other("not a complete segment"));
        }
        if durability == Durability::Durable {
            output.sync_data()?;
        }
        drop(output);
        user.own(&temp).map_err(io::Error::other)?;
        fs::rename(&temp, &final_path)?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
