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

use super::ahead::Ahead;
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

/// Bytes of an existing file compared at a time, in whole frames: read
/// with one `pread` (the kernel reading the next ones meanwhile, see
/// `Ahead`), hashed page by page, then the frames holding differing pages
/// fetched with one ranged read from the first of them to the last (one
/// request on an object store), the frames between read past without being
/// decompressed. Bounds a worker's memory to this plus one frame.
const WINDOW_BYTES: u64 = 4 << 20;

/// One file: compared window by window with the index's page checksums,
/// the frames holding differing pages fetched, those pages written; or,
/// when nothing comparable is there, written in full.
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
    let file = match comparable(&target, member.size)? {
        Some(existing) => {
            set_mode(&existing, &target, member.mode)?;
            existing
        }
        None => {
            let file = create_new(&target, member.mode)?;
            let outcome = write_whole(
                store,
                key,
                member,
                &file,
                &target,
                &mut checksummer,
                buffers,
                stop,
                stored,
            )?;
            return Ok((outcome, checksummer.map(|c| c.finish())));
        }
    };
    let mut outcome = FileOutcome {
        size: member.size,
        ..FileOutcome::default()
    };
    // Frames per window: old backups' 1 MiB frames and smaller ones alike.
    let frame_bytes = member
        .frames
        .iter()
        .map(|f| f.len)
        .max()
        .unwrap_or(1)
        .max(1);
    let per_window = WINDOW_BYTES.div_ceil(frame_bytes).max(1) as usize;
    let mut ahead = Ahead::new(&file, member.size);
    let mut local = Vec::new();
    let mut differing: Vec<u64> = Vec::new();
    let mut needed: Vec<bool> = Vec::new();
    for window in member.frames.chunks(per_window) {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        if stop.load(Ordering::Relaxed) {
            bail!("stopped: another file failed");
        }
        let ranges: Vec<Option<(u64, u64)>> = window
            .iter()
            .map(|frame| data_range(member, frame))
            .collect();
        let (Some(start), Some(end)) = (
            ranges.iter().flatten().map(|r| r.0).min(),
            ranges.iter().flatten().map(|r| r.1).max(),
        ) else {
            // Headers only.
            continue;
        };
        ahead.reading(start);
        local.resize((end - start) as usize, 0);
        file.read_exact_at(&mut local, start)
            .map_err(|e| interrupt_or(e, &target))?;
        // Hash only to compare: every page of the window against the index.
        differing.clear();
        needed.clear();
        for range in &ranges {
            let mut any = false;
            if let Some((from, to)) = range {
                for page in (from / PAGE_BYTES)..to.div_ceil(PAGE_BYTES) {
                    let at = (page * PAGE_BYTES - start) as usize;
                    let upto = (at + PAGE_BYTES as usize).min(local.len());
                    if page_checksum(&local[at..upto]) == member.pages[page as usize] {
                        outcome.pages_kept += 1;
                    } else {
                        differing.push(page);
                        any = true;
                    }
                }
            }
            needed.push(any);
        }
        if let (Some(first), Some(last)) = (
            needed.iter().position(|n| *n),
            needed.iter().rposition(|n| *n),
        ) {
            let mut reader = store
                .open_range(
                    key,
                    window[first].stored_offset..window[last].stored_range().end,
                )
                .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
            for n in first..=last {
                let frame = &window[n];
                stored.fetch_add(frame.stored_len, Ordering::Relaxed);
                let (true, Some((from, to))) = (needed[n], ranges[n]) else {
                    // All its pages are there already: not decompressed.
                    skip(&mut reader, frame.stored_len)
                        .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
                    continue;
                };
                let plain = buffers.frame(&mut reader, store, key, frame)?;
                let skip_header = (member.data_offset + from - frame.offset) as usize;
                let new = &plain[skip_header..skip_header + (to - from) as usize];
                for page in differing
                    .iter()
                    .filter(|p| **p * PAGE_BYTES >= from && **p * PAGE_BYTES < to)
                {
                    let offset = page * PAGE_BYTES;
                    let within = (offset - from) as usize;
                    let len = (PAGE_BYTES as usize).min((to - offset) as usize);
                    let bytes = &new[within..within + len];
                    file.write_all_at(bytes, offset)
                        .map_err(|e| interrupt_or(e, &target))?;
                    let at = (offset - start) as usize;
                    local[at..at + len].copy_from_slice(bytes);
                    outcome.pages_rewritten += 1;
                    outcome.bytes_written += len as u64;
                }
            }
        }
        if let Some(c) = &mut checksummer {
            c.update(&local);
        }
    }
    Ok((outcome, checksummer.map(|c| c.finish())))
}

/// Reads past `len` bytes of a ranged read.
fn skip(mut reader: &mut dyn std::io::Read, len: u64) -> std::io::Result<()> {
    let copied = std::io::copy(
        &mut std::io::Read::take(&mut reader, len),
        &mut std::io::sink(),
    )?;
    if copied != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A file with nothing comparable there, written in full from all its
/// frames: one ranged read for them all (one request on an object store).
#[allow(clippy::too_many_arguments)] // delta_member's, for the file it created
fn write_whole(
    store: &dyn StoreRead,
    key: &str,
    member: &Member,
    file: &std::fs::File,
    target: &Path,
    checksummer: &mut Option<Checksummer>,
    buffers: &mut Buffers,
    stop: &AtomicBool,
    stored: &AtomicU64,
) -> Result<FileOutcome> {
    let mut outcome = FileOutcome {
        size: member.size,
        whole: true,
        ..FileOutcome::default()
    };
    let (Some(first), Some(last)) = (member.frames.first(), member.frames.last()) else {
        return Ok(outcome);
    };
    let mut reader = store
        .open_range(key, first.stored_offset..last.stored_range().end)
        .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
    for frame in &member.frames {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        if stop.load(Ordering::Relaxed) {
            bail!("stopped: another file failed");
        }
        let plain = buffers.frame(&mut reader, store, key, frame)?;
        stored.fetch_add(frame.stored_len, Ordering::Relaxed);
        let Some((start, end)) = data_range(member, frame) else {
            continue;
        };
        let skip_header = (member.data_offset + start - frame.offset) as usize;
        let new = &plain[skip_header..skip_header + (end - start) as usize];
        file.write_all_at(new, start)
            .map_err(|e| interrupt_or(e, target))?;
        outcome.bytes_written += new.len() as u64;
        if let Some(c) = checksummer {
            c.update(new);
        }
    }
    Ok(outcome)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use super::*;
    use std::fs;

    use crate::repo::store::posix::Posix;
    use crate::seekable::encode::encode;
    use crate::seekable::FRAME_BYTES;

    /// A seven-frame file whose existing copy differs in three pages: in
    /// frames 0 and 3 (one window) and 6 (the next). Exactly those pages
    /// are written; frames 1 and 2 are read past (not decompressed) in the
    /// ranged read of frames 0 to 3, and frames 4 and 5, whose pages all
    /// match, are not read at all.
    #[test]
    fn only_the_frames_holding_differing_pages_are_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..6 * FRAME_BYTES + 5 * PAGE_BYTES + 100)
            .map(|i| (i % 239) as u8)
            .collect();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, "rel", &data[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let mut stored_tar = Vec::new();
        let index = encode(&mut tar.as_slice(), &mut stored_tar, None).unwrap();
        fs::write(dir.path().join("base.tar.zst"), &stored_tar).unwrap();
        let member = &index.members[0];
        assert_eq!(member.frames.len(), 7);
        assert!(pages_align(&index));

        let target = dir.path().join("rel");
        let mut existing = data.clone();
        for page in [2, 3 * 128 + 7, 6 * 128 + 1] {
            existing[page * PAGE_BYTES as usize + 11] ^= 0xff;
        }
        fs::write(&target, &existing).unwrap();

        let store = Posix::new(dir.path());
        let (stop, stored) = (AtomicBool::new(false), AtomicU64::new(0));
        let job = Job {
            member,
            target: target.clone(),
            manifest: None,
            checksummer: None,
        };
        let (outcome, _) = delta_member(
            &store,
            "base.tar.zst",
            job,
            &mut Buffers::new(),
            &stop,
            &stored,
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), data);
        assert_eq!(outcome.pages_rewritten, 3);
        assert_eq!(outcome.bytes_written, 3 * PAGE_BYTES);
        assert!(!outcome.whole);
        // Frames 0-3 (one ranged read, 1 and 2 read past) and frame 6.
        let expected: u64 = [0, 1, 2, 3, 6]
            .iter()
            .map(|n| member.frames[*n].stored_len)
            .sum();
        assert_eq!(stored.load(Ordering::Relaxed), expected);
    }
}
