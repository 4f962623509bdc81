//! A delta restore from a seekable backup: the existing file's pages are
//! hashed (xxHash3-64, as the index) and compared with the index, and only
//! the frames holding pages that differ are read from the repository
//! (`open_range`), decompressed, and only those pages written, in place.
//! Files are handed to workers, largest first; the main thread creates
//! the directories and checks each finished file against the manifest,
//! over the file's final bytes (kept pages and rewritten ones).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::file::{comparable, ensure_dir, set_mode, DeltaStats, FileOutcome};
use super::{manifest_path, Held, Seen};
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::backup::BackupFile;
use crate::repo::manifest::Checksummer;
use crate::repo::store::StoreRead;
use crate::seekable::index::{Frame, Index, Member};
use crate::seekable::{page_checksum, PAGE_BYTES};
use crate::stage::extract::safe_member_path;
use crate::stage::parallel::Buffers;
use crate::stage::write::{create_new, interrupt_or, simulated_slow_staging, Verify};
use crate::stage::Interrupted;

/// Whether every file's frames start and end on page boundaries of its
/// data (pitr's encoder cuts them so), so that a frame holds whole pages
/// and a differing page is found in exactly one frame. A tar whose index
/// does not is read as a stream instead.
pub fn pages_align(index: &Index) -> bool {
    index.members.iter().filter(|m| m.is_file()).all(|member| {
        let pages = member.size.div_ceil(PAGE_BYTES);
        member.pages.len() as u64 == pages
            && member
                .frames
                .iter()
                .all(|frame| match data_range(member, frame) {
                    None => true,
                    Some((start, end)) => {
                        start % PAGE_BYTES == 0 && (end % PAGE_BYTES == 0 || end == member.size)
                    }
                })
    })
}

/// The part of `member`'s data that `frame` holds, in file offsets.
fn data_range(member: &Member, frame: &Frame) -> Option<(u64, u64)> {
    let start = member.data_offset.max(frame.offset);
    let end = (member.data_offset + member.size).min(frame.offset + frame.len);
    (start < end).then(|| (start - member.data_offset, end - member.data_offset))
}

/// One file for a worker.
struct Job<'a> {
    member: &'a Member,
    target: PathBuf,
    manifest: Option<String>,
    checksummer: Option<Checksummer>,
}

/// What a worker sends back.
type Done = (usize, Result<(FileOutcome, Option<String>)>);

/// Brings the tree at `root` to the seekable tar `file`'s, `workers` files
/// at a time.
#[allow(clippy::too_many_arguments)] // the parallel extraction's, plus what the delta holds and counts
pub fn delta_seekable(
    store: &dyn StoreRead,
    file: &BackupFile,
    index: &Index,
    root: &Path,
    progress: &mut Progress,
    mut verify: Option<&mut Verify<'_>>,
    control: Option<&mut Held>,
    seen: &mut Seen,
    stats: &mut DeltaStats,
    workers: usize,
) -> Result<()> {
    let described = store.describe(&file.key);
    let key = file.key.as_str();
    let stored = AtomicU64::new(0);
    let mut jobs = Vec::new();
    let mut control = control;
    for member in &index.members {
        let relative = safe_member_path(Path::new(&member.path))
            .with_context(|| format!("in `{described}`"))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = root.join(&relative);
        seen.insert(target.clone());
        if member.typeflag == b'2' {
            // The server recreates tablespace links from tablespace_map.
            continue;
        }
        if member.typeflag == b'5' {
            ensure_dir(&target, member.mode, &relative)?;
            continue;
        }
        let manifest = verify.as_ref().map(|v| manifest_path(v, &relative));
        if let Some(held) = control
            .as_deref_mut()
            .filter(|_| relative == Path::new("global/pg_control"))
        {
            let mut buffers = Buffers::new();
            let bytes = read_member(store, key, member, &mut buffers, &stored)?;
            if let (Some(v), Some(p)) = (verify.as_mut(), manifest) {
                let digest = v.check.checksummer(&p).map(|mut c| {
                    c.update(&bytes);
                    c.finish()
                });
                v.check
                    .record(&p, bytes.len() as u64, digest)
                    .map_err(|problem| {
                        anyhow!("the backup does not match its manifest: {problem}")
                    })?;
            }
            *held = Some((bytes, member.mode));
            continue;
        }
        let checksummer = match (&verify, &manifest) {
            (Some(v), Some(p)) => v.check.checksummer(p),
            _ => None,
        };
        jobs.push(Job {
            member,
            target,
            manifest,
            checksummer,
        });
    }
    // Largest first, so that no worker is left alone with one at the end.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|n| std::cmp::Reverse(jobs[*n].member.size));
    let manifests: Vec<Option<String>> = jobs.iter_mut().map(|job| job.manifest.take()).collect();
    let sizes: Vec<u64> = jobs.iter().map(|job| job.member.size).collect();
    let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let queue: Mutex<Vec<(usize, Job)>> = Mutex::new(
        order
            .into_iter()
            .rev()
            .filter_map(|n| slots[n].take().map(|job| (n, job)))
            .collect(),
    );
    let stop = AtomicBool::new(false);
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel::<Done>();
        for n in 0..workers.max(1) {
            let done = done.clone();
            let (queue, stop, stored) = (&queue, &stop, &stored);
            let spawned = std::thread::Builder::new()
                .name(format!("delta-{n}"))
                .spawn_scoped(scope, move || {
                    let mut buffers = Buffers::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Some((n, job)) = queue.lock().ok().and_then(|mut jobs| jobs.pop())
                        else {
                            return;
                        };
                        let result = delta_member(store, key, job, &mut buffers, stop, stored);
                        if done.send((n, result)).is_err() {
                            return;
                        }
                    }
                });
            if let Err(error) = spawned {
                stop.store(true, Ordering::Relaxed);
                failure = Some(anyhow!("cannot start a delta thread: {error}"));
                break;
            }
        }
        drop(done);
        loop {
            let (n, result) = match finished.recv_timeout(Duration::from_millis(100)) {
                Ok(received) => received,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let checked = result.and_then(|(outcome, digest)| {
                progress.add(sizes[n]);
                stats.add(outcome);
                match (verify.as_mut(), &manifests[n]) {
                    (Some(v), Some(path)) => {
                        v.check
                            .record(path, outcome.size, digest)
                            .map_err(|problem| {
                                anyhow!("the backup does not match its manifest: {problem}")
                            })
                    }
                    _ => Ok(()),
                }
            });
            if let Err(error) = checked {
                stop.store(true, Ordering::Relaxed);
                failure.get_or_insert(error);
            }
        }
    });
    stats.repository_bytes += stored.load(Ordering::Relaxed);
    if let Some(error) = failure {
        return Err(error);
    }
    if interrupt::requested() {
        bail!(Interrupted);
    }
    if queue.lock().map(|jobs| !jobs.is_empty()).unwrap_or(true) {
        bail!("internal error: not every file of `{described}` was compared");
    }
    Ok(())
}

/// One file: compared frame by frame with the index's page checksums, the
/// frames holding differing pages fetched, those pages written.
fn delta_member(
    store: &dyn StoreRead,
    key: &str,
    job: Job<'_>,
    buffers: &mut Buffers,
    stop: &AtomicBool,
    stored: &AtomicU64,
) -> Result<(FileOutcome, Option<String>)> {
    let Job {
        member,
        target,
        mut checksummer,
        ..
    } = job;
    simulated_slow_staging();
    let (file, whole) = match comparable(&target, member.size)? {
        Some(existing) => {
            set_mode(&existing, &target, member.mode)?;
            (existing, false)
        }
        None => (create_new(&target, member.mode)?, true),
    };
    let mut outcome = FileOutcome {
        size: member.size,
        whole,
        ..FileOutcome::default()
    };
    // A file written in full needs all its frames: one ranged read for
    // them all (one request on an object store).
    let mut sequential = match (whole, member.frames.first(), member.frames.last()) {
        (true, Some(first), Some(last)) => Some(
            store
                .open_range(key, first.stored_offset..last.stored_range().end)
                .with_context(|| format!("cannot read `{}`", store.describe(key)))?,
        ),
        _ => None,
    };
    let mut local = Vec::new();
    let mut differing = Vec::new();
    for frame in &member.frames {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        if stop.load(Ordering::Relaxed) {
            bail!("stopped: another file failed");
        }
        let Some((start, end)) = data_range(member, frame) else {
            if let Some(reader) = sequential.as_mut() {
                // Headers only; read past them.
                buffers.frame(reader, store, key, frame)?;
                stored.fetch_add(frame.stored_len, Ordering::Relaxed);
            }
            continue;
        };
        let len = (end - start) as usize;
        differing.clear();
        let pages = (start / PAGE_BYTES)..end.div_ceil(PAGE_BYTES);
        if whole {
            differing.extend(pages);
        } else {
            local.resize(len, 0);
            file.read_exact_at(&mut local, start)
                .map_err(|e| interrupt_or(e, &target))?;
            for page in pages {
                let from = (page * PAGE_BYTES - start) as usize;
                let to = (from + PAGE_BYTES as usize).min(len);
                if page_checksum(&local[from..to]) == member.pages[page as usize] {
                    outcome.pages_kept += 1;
                } else {
                    differing.push(page);
                }
            }
        }
        if !differing.is_empty() {
            let plain = match sequential.as_mut() {
                Some(reader) => buffers.frame(reader, store, key, frame)?,
                None => {
                    let mut reader = store
                        .open_range(key, frame.stored_range())
                        .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
                    buffers.frame(&mut reader, store, key, frame)?
                }
            };
            stored.fetch_add(frame.stored_len, Ordering::Relaxed);
            let skip = (member.data_offset + start - frame.offset) as usize;
            let new = &plain[skip..skip + len];
            if whole {
                file.write_all_at(new, start)
                    .map_err(|e| interrupt_or(e, &target))?;
                outcome.bytes_written += len as u64;
                if let Some(c) = &mut checksummer {
                    c.update(new);
                }
                continue;
            }
            for page in &differing {
                let from = (page * PAGE_BYTES - start) as usize;
                let to = (from + PAGE_BYTES as usize).min(len);
                file.write_all_at(&new[from..to], start + from as u64)
                    .map_err(|e| interrupt_or(e, &target))?;
                local[from..to].copy_from_slice(&new[from..to]);
                outcome.pages_rewritten += 1;
                outcome.bytes_written += (to - from) as u64;
            }
        }
        if let Some(c) = &mut checksummer {
            c.update(&local);
        }
    }
    Ok((outcome, checksummer.map(|c| c.finish())))
}

/// The whole data of a (small) member, from its frames.
fn read_member(
    store: &dyn StoreRead,
    key: &str,
    member: &Member,
    buffers: &mut Buffers,
    stored: &AtomicU64,
) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(member.size as usize);
    for frame in &member.frames {
        let mut reader = store
            .open_range(key, frame.stored_range())
            .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
        let plain = buffers.frame(&mut reader, store, key, frame)?;
        stored.fetch_add(frame.stored_len, Ordering::Relaxed);
        if let Some((start, end)) = data_range(member, frame) {
            let skip = (member.data_offset + start - frame.offset) as usize;
            data.extend_from_slice(&plain[skip..skip + (end - start) as usize]);
        }
    }
    if data.len() as u64 != member.size {
        bail!(
            "the index of `{}` covers {} of the {} bytes of `{}`",
            store.describe(key),
            data.len(),
            member.size,
            member.path
        );
    }
    Ok(data)
}
