//! `pitr backup` into an object store without a local copy: pg_basebackup
//! writes its one tar to stdout (`-D - -Ft -X none`: the WAL archive holds
//! the backup's WAL, and `-X stream` cannot write to stdout), pitr splits it into the layout of a staged backup
//! (`repo::tar_split`), compresses each tar as it goes and uploads it as a
//! multipart upload into a group that stays hidden until its manifest is
//! stored (`StoreWrite::begin_group`). Memory is bounded by a few upload
//! parts; the local disk holds nothing of the backup.
//!
//! pg_basebackup cannot write several tablespaces to stdout; it says so
//! once the backup has started, and the caller then falls back to staging.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::compression::{Compression, Encoder};
use crate::error::{Failure, FailureKind};
use crate::os_user::OsUser;
use crate::repo::backup::MANIFEST;
use crate::repo::store::{GroupUpload, ObjectSink, Writable};
use crate::repo::tar_split::{split_backup_tar, SplitBackup};

/// What pg_basebackup prints when the cluster has more than one
/// tablespace and the backup goes to stdout (PostgreSQL 13 to 18).
const SEVERAL_TABLESPACES: &str = "can only write single tablespace to stdout";

/// How a streamed backup ended, when it did not fail.
pub enum Streamed {
    /// Published under its id.
    Published { data_bytes: u64 },
    /// pg_basebackup refused to write this cluster to stdout (several
    /// tablespaces); nothing was stored: stage it instead.
    NeedsStaging,
}

/// Runs pg_basebackup with `arguments` (which write to stdout) and
/// stores its output as backup `id` in `backups`, compressed with
/// `compression`. Nothing is visible under `id` unless this returns
/// `Published`; on any failure, Ctrl-C included, the uploads are aborted
/// and what was stored is deleted.
pub fn stream_backup(
    backups: &Writable,
    id: &str,
    user: &OsUser,
    program: &Path,
    arguments: &[std::ffi::OsString],
    compression: Compression,
) -> Result<Streamed, Failure> {
    let group = backups
        .begin_group(id)
        .with_context(|| format!("cannot start backup {}", backups.describe(id)))
        .map_err(|e| Failure::new(FailureKind::Backup, e))?
        .ok_or_else(|| {
            Failure::msg(
                FailureKind::Internal,
                format!("{} cannot take a streamed backup", backups.describe(id)),
            )
        })?;
    let mut running = RunningBackup::start(user, program, arguments)
        .map_err(|e| Failure::new(FailureKind::Backup, e))?;
    // Whether pg_basebackup's output ended (EOF or a read error): when the
    // split fails before that, the store failed, not pg_basebackup.
    let input_ended = Arc::new(AtomicBool::new(false));
    let stdout = running.stdout().map(|stdout| WatchedInput {
        inner: stdout,
        ended: input_ended.clone(),
    });
    let split = stdout.and_then(|stdout| {
        split_backup_tar(stdout, |name| {
            let sink = group.object(&format!("{name}{}", compression.suffix()))?;
            compression.encoder(sink, None)
        })
        .context("cannot store the backup")
    });
    // The upload failed while pg_basebackup still writes: stop it (it may
    // have died of the closed pipe already); the store's error is the one.
    let store_failed = split.is_err() && !input_ended.load(Ordering::SeqCst);
    if store_failed {
        running.stop();
    }
    let ended = running.wait();
    // Whatever fails below drops `split` (its uploads are aborted) and
    // then `group` (what was stored is deleted, the marker last).
    let left = format!("nothing was left in `{}`", backups.describe(""));
    if crate::interrupt::requested() {
        return Err(Failure::msg(
            FailureKind::Interrupted,
            format!("the backup was interrupted; its upload was aborted and {left}"),
        ));
    }
    let ended = ended.map_err(|e| Failure::new(FailureKind::Backup, e.context(left.clone())))?;
    if !ended.status.success() && !store_failed {
        if ended.several_tablespaces {
            return Ok(Streamed::NeedsStaging);
        }
        return Err(pg_basebackup_failed(ended.status, &left));
    }
    let split = split.map_err(|error| {
        let left = format!(
            "backup {} was not made; what it uploaded was deleted, or, if the store no longer answers, stays hidden from every reader by `{}{id}`",
            backups.describe(id),
            crate::repo::store::object::PUBLISHING_PREFIX
        );
        Failure::new(FailureKind::Backup, error.context(left)).with_hint(
            "check that the object store is reachable and writable (the message says which request failed), then run the command again",
        )
    })?;
    let data_bytes = split.data_bytes;
    store_objects(group.as_ref(), split)
        .and_then(|()| group.publish().map_err(anyhow::Error::from))
        .with_context(|| format!("cannot complete backup {}; {left}", backups.describe(id)))
        .map_err(|e| Failure::new(FailureKind::Backup, e))?;
    Ok(Streamed::Published { data_bytes })
}

/// Ends both tars' compression and uploads, then stores the manifest
/// (the caller publishes the backup after it).
fn store_objects(
    group: &dyn GroupUpload,
    split: SplitBackup<Encoder<Box<dyn ObjectSink + '_>>>,
) -> anyhow::Result<()> {
    split.base.finish()?.finish()?;
    if let Some(wal) = split.wal {
        wal.finish()?.finish()?;
    }
    if let Some(manifest) = &split.manifest {
        let mut sink = group.object(MANIFEST)?;
        sink.write_all(manifest)?;
        sink.finish()?;
    }
    Ok(())
}

fn pg_basebackup_failed(status: ExitStatus, left: &str) -> Failure {
    Failure::msg(
        FailureKind::Backup,
        format!("pg_basebackup failed ({status}); {left}"),
    )
    .with_hint(
        "its messages are above; check that the server runs and accepts replication connections from this user (pg_hba.conf `replication` lines, max_wal_senders), and the PG* environment variables or -d CONNSTR",
    )
}

/// pg_basebackup running with its stdout to us, its stderr passed on to
/// ours (and read for the one message that makes pitr stage instead), and
/// Ctrl-C or SIGTERM passed on as SIGTERM.
struct RunningBackup {
    child: Child,
    several_tablespaces: Arc<AtomicBool>,
    stderr_copy: Option<std::thread::JoinHandle<()>>,
    watcher_done: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

struct Ended {
    status: ExitStatus,
    several_tablespaces: bool,
}

impl RunningBackup {
    fn start(
        user: &OsUser,
        program: &Path,
        arguments: &[std::ffi::OsString],
    ) -> anyhow::Result<RunningBackup> {
        let mut child = user
            .command(program)
            .args(arguments)
            // The PostgreSQL user may not be able to enter our directory.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{}`", program.display()))?;
        let several_tablespaces = Arc::new(AtomicBool::new(false));
        let stderr_copy = child.stderr.take().map(|stderr| {
            let seen = several_tablespaces.clone();
            std::thread::spawn(move || copy_stderr(stderr, &seen))
        });
        let watcher_done = Arc::new(AtomicBool::new(false));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let done = watcher_done.clone();
        let watcher = std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if crate::interrupt::requested() {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(RunningBackup {
            child,
            several_tablespaces,
            stderr_copy,
            watcher_done,
            watcher: Some(watcher),
        })
    }

    fn stdout(&mut self) -> anyhow::Result<std::process::ChildStdout> {
        self.child
            .stdout
            .take()
            .context("pg_basebackup's output is not connected")
    }

    /// Ends pg_basebackup (the backup is abandoned; the server ends its
    /// side when the connection closes).
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    fn wait(mut self) -> anyhow::Result<Ended> {
        // Its stdout is closed by now (read to the end, or dropped), so
        // pg_basebackup cannot block on it.
        let status = self.child.wait().context("cannot wait for pg_basebackup");
        self.watcher_done.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        if let Some(copy) = self.stderr_copy.take() {
            let _ = copy.join();
        }
        Ok(Ended {
            status: status?,
            several_tablespaces: self.several_tablespaces.load(Ordering::SeqCst),
        })
    }
}

/// pg_basebackup's output, noting when it ends.
struct WatchedInput<R> {
    inner: R,
    ended: Arc<AtomicBool>,
}

impl<R: Read> Read for WatchedInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf);
        if !matches!(read, Ok(n) if n > 0) && !buf.is_empty() {
            self.ended.store(true, Ordering::SeqCst);
        }
        read
    }
}

/// Copies pg_basebackup's messages (and `--progress` lines) to our
/// stderr as they come, noting whether it refused several tablespaces.
fn copy_stderr(mut from: std::process::ChildStderr, several_tablespaces: &AtomicBool) {
    // The message may straddle two reads: the tail of the last one is kept.
    let mut seen = Vec::<u8>::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        seen.extend_from_slice(&buf[..n]);
        if contains(&seen, SEVERAL_TABLESPACES.as_bytes()) {
            several_tablespaces.store(true, Ordering::SeqCst);
        }
        let keep = seen.len().saturating_sub(SEVERAL_TABLESPACES.len());
        seen.drain(..keep);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
