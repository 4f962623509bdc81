//! Parallel staging of a seekable backup (issue 16, point 2): the tar's
//! members are written by several workers, each fetching its member's
//! frames with ranged reads and decompressing them alone, so that staging
//! uses every core instead of one decompressing thread.
//!
//! The main thread creates the directories, hands files out (largest
//! first, so that no worker is left with a long file at the end), and
//! checks each finished file against the manifest: the same checks as the
//! streaming path, on the same bytes. A worker holds one frame, compressed
//! and decompressed (about 2 MiB), so memory is bounded by the number of
//! workers, whatever the size of the backup. Durability is unchanged: the
//! files are made durable by the one `syncfs` of the staged tree.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::extract::safe_member_path;
use super::sparse::SparseDatabases;
use super::write::{create_new, interrupt_or, simulated_slow_staging, Verify};
use super::Interrupted;
use crate::interrupt;
use crate::progress::{Progress, Reporter};
use crate::repo::backup::{Backup, BackupFile, MANIFEST};
use crate::repo::manifest::Checksummer;
use crate::repo::store::StoreRead;
use crate::seekable::index::{Frame, Index, Member};
use crate::seekable::{read_index, INDEX_SUFFIX};

/// Frames larger than this are refused: a damaged or hostile index must
/// not make a worker allocate without bound (pitr writes 1 MiB of data
/// plus headers and padding per frame).
const FRAME_LIMIT: u64 = 64 << 20;

/// The index of `file` when it is a seekable tar whose index can be used:
/// intact, and made for this backup's manifest. Otherwise `None` (the tar
/// is then read as one stream, as any zstd tar), with a warning when an
/// index exists but cannot be used.
pub fn usable_index(
    store: &dyn StoreRead,
    backup: &Backup,
    file: &BackupFile,
    reporter: &Reporter,
) -> Option<Index> {
    let refuse = |why: String| {
        reporter.warn(format!(
            "{why}: reading `{}` as one stream instead",
            store.describe(&file.key)
        ));
        None
    };
    let manifest = format!("{}{MANIFEST}", backup.prefix());
    let index = match read_index(store, &file.key, &manifest) {
        Ok(Some(index)) => index,
        Ok(None) => return None,
        Err(why) => return refuse(why),
    };
    // Only what pg_basebackup writes: files, directories and tablespace
    // links; anything else goes through the streaming path, which says why
    // it refuses it.
    let plain = index.members.iter().all(|member| {
        member.is_file()
            || member.typeflag == b'5'
            || (member.typeflag == b'2' && member.path.starts_with("pg_tblspc/"))
    });
    let sane = index
        .members
        .iter()
        .flat_map(|member| &member.frames)
        .all(|frame| frame.len <= FRAME_LIMIT && frame.stored_len <= FRAME_LIMIT);
    // Each member's frames follow each other, so one ranged read fetches
    // them all.
    let contiguous = index.members.iter().all(|member| {
        !member.frames.is_empty()
            && member
                .frames
                .windows(2)
                .all(|pair| pair[0].stored_range().end == pair[1].stored_offset)
    });
    if !plain || !sane || !contiguous {
        return refuse(format!(
            "`{}{INDEX_SUFFIX}` cannot be used (it lists members or frames that pitr does not write)",
            store.describe(&file.key)
        ));
    }
    Some(index)
}

/// How many workers stage a seekable backup: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Bytes per unit of work: a large file is cut into parts of 16 MiB
/// written by different workers at their offsets, so that one 1 GiB
/// segment keeps every core busy (a file per worker left one core decoding
/// the largest relation alone, slower than the stream). In whole frames,
/// whatever their size (the index records it).
const UNIT_BYTES: u64 = 16 << 20;

/// Frames per unit for `index`'s frame size.
fn unit_frames(index: &Index) -> usize {
    (UNIT_BYTES / u64::from(index.frame_bytes).max(1)).max(1) as usize
}

/// One part of one file to write.
struct Unit<'a> {
    file: usize,
    part: usize,
    member: &'a Member,
    frames: &'a [Frame],
    target: &'a Path,
    /// A fresh checksummer for this part's bytes, when the manifest has a
    /// checksum for the file.
    checksummer: Option<Checksummer>,
}

/// What a worker reports for a finished part.
struct Part {
    written: u64,
    checksummer: Option<Checksummer>,
}

/// A file being written: its parts as they come back.
struct FileState {
    /// The member's size, which its parts must add up to.
    size: u64,
    manifest_path: Option<String>,
    parts: Vec<Option<Part>>,
    remaining: usize,
}

impl FileState {
    /// The file's size and checksum once every part is back, in order.
    fn finish(&mut self) -> Result<(u64, Option<String>)> {
        let mut written = 0;
        let mut whole: Option<Checksummer> = None;
        for part in self.parts.drain(..).flatten() {
            written += part.written;
            match (&mut whole, part.checksummer) {
                (None, next) => whole = next,
                (Some(whole), Some(next)) => {
                    if !whole.combine(&next, part.written) {
                        bail!("internal error: a checksum of parts that cannot be combined");
                    }
                }
                (Some(_), None) => {}
            }
        }
        if written != self.size {
            bail!("its index covers {written} of its {} bytes", self.size);
        }
        Ok((written, whole.map(|c| c.finish())))
    }
}

/// Writes the members of the seekable tar `file` into `dest` with
/// `workers` threads; the members `sparse` covers are given their size
/// and their frames are not read. Returns the bytes written.
#[allow(clippy::too_many_arguments)] // the streaming path's, plus the workers and the sparse databases
pub fn extract_seekable(
    store: &dyn StoreRead,
    file: &BackupFile,
    index: &Index,
    dest: &Path,
    progress: &mut Progress,
    mut verify: Option<&mut Verify<'_>>,
    workers: usize,
    sparse: &mut SparseDatabases,
) -> Result<u64> {
    let described = store.describe(&file.key);
    // Directories and empty files first, on this thread, in tar order.
    let mut files = Vec::new();
    let mut targets = Vec::new();
    for member in &index.members {
        let relative = safe_member_path(Path::new(&member.path))
            .with_context(|| format!("in `{described}`"))?;
        if relative.as_os_str().is_empty() || member.typeflag == b'2' {
            // Tablespace links: the server recreates them from tablespace_map.
            continue;
        }
        let target = dest.join(&relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        if member.typeflag == b'5' {
            match fs::DirBuilder::new()
                .mode(member.mode & 0o7777)
                .create(&target)
            {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(error) => return Err(interrupt_or(error, &target)),
            }
            continue;
        }
        if sparse.covers(&relative) {
            sparse.write(&target, &relative, member.mode, member.size, &mut verify)?;
            continue;
        }
        create_new(&target, member.mode)?;
        let manifest_path = verify
            .as_ref()
            .map(|v| format!("{}{}", v.prefix, relative.to_string_lossy()));
        files.push((member, manifest_path));
        targets.push(target);
    }
    let mut units = Vec::new();
    let mut states = Vec::new();
    for (n, ((member, manifest_path), target)) in files.into_iter().zip(&targets).enumerate() {
        let checksummer = match (&verify, &manifest_path) {
            (Some(v), Some(path)) => v.check.checksummer(path),
            _ => None,
        };
        // A checksum that cannot be combined from parts: one part.
        let per_unit = match &checksummer {
            Some(c) if !c.is_combinable() => member.frames.len().max(1),
            _ => unit_frames(index),
        };
        let chunks: Vec<&[Frame]> = member.frames.chunks(per_unit).collect();
        states.push(FileState {
            size: member.size,
            manifest_path,
            parts: chunks.iter().map(|_| None).collect(),
            remaining: chunks.len(),
        });
        for (part, frames) in chunks.into_iter().enumerate() {
            units.push(Unit {
                file: n,
                part,
                member,
                frames,
                target,
                checksummer: checksummer.clone(),
            });
        }
    }
    // Largest files first, so that no worker is left alone with one at
    // the end.
    units.sort_by_key(|unit| std::cmp::Reverse(unit.member.size));
    let queue = Mutex::new(units.into_iter());
    let stop = AtomicBool::new(false);
    let stored = AtomicU64::new(0);
    let mut reported = 0;
    let mut written = 0;
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel::<(usize, usize, Result<Part>)>();
        for n in 0..workers.max(1) {
            let done = done.clone();
            let (queue, stop, stored) = (&queue, &stop, &stored);
            let key = file.key.as_str();
            let spawned = std::thread::Builder::new()
                .name(format!("stage-{n}"))
                .spawn_scoped(scope, move || {
                    let mut buffers = Buffers::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Some(unit) = queue.lock().ok().and_then(|mut units| units.next())
                        else {
                            return;
                        };
                        let (file, part) = (unit.file, unit.part);
                        let result = write_unit(store, key, unit, &mut buffers, stop, stored);
                        if done.send((file, part, result)).is_err() {
                            return;
                        }
                    }
                });
            if let Err(error) = spawned {
                stop.store(true, Ordering::Relaxed);
                failure = Some(anyhow!("cannot start a staging thread: {error}"));
                break;
            }
        }
        drop(done);
        loop {
            let received = finished.recv_timeout(Duration::from_millis(100));
            let now = stored.load(Ordering::Relaxed);
            progress.add(now.saturating_sub(reported));
            reported = now;
            let (n, part, result) = match received {
                Ok(received) => received,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let checked = result.and_then(|part_done| {
                let state = &mut states[n];
                state.parts[part] = Some(part_done);
                state.remaining -= 1;
                if state.remaining > 0 {
                    return Ok(());
                }
                let (size, digest) = state
                    .finish()
                    .with_context(|| format!("`{}` in `{described}`", targets[n].display()))?;
                written += size;
                match (verify.as_mut(), state.manifest_path.take()) {
                    (Some(verify), Some(path)) => {
                        verify.check.record(&path, size, digest).map_err(|problem| {
                            anyhow!("the backup does not match its manifest: {problem}")
                        })
                    }
                    _ => Ok(()),
                }
            });
            if let Err(error) = checked {
                stop.store(true, Ordering::Relaxed);
                // The first error is the cause; the others are its echoes.
                failure.get_or_insert(error);
            }
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    if interrupt::requested() {
        bail!(Interrupted);
    }
    if let Some(unfinished) = states.iter().position(|state| state.remaining > 0) {
        bail!(
            "internal error: `{}` was not completely written",
            targets[unfinished].display()
        );
    }
    Ok(written)
}

/// One member's data, read from its frames (a small file asked for
/// before staging, see [`super::member`]).
pub fn read_member(store: &dyn StoreRead, key: &str, member: &Member) -> Result<Vec<u8>> {
    let (Some(first), Some(last)) = (member.frames.first(), member.frames.last()) else {
        bail!(
            "the index of `{}` lists `{}` without frames",
            store.describe(key),
            member.path
        );
    };
    let mut stored = store
        .open_range(key, first.stored_offset..last.stored_range().end)
        .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
    let data = member.data_offset..member.data_offset + member.size;
    let mut buffers = Buffers::new();
    let mut bytes = Vec::with_capacity(member.size as usize);
    for frame in &member.frames {
        let plain = buffers
            .frame(&mut stored, store, key, frame)
            .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
        let start = data.start.max(frame.offset);
        let end = data.end.min(frame.offset + frame.len);
        if start < end {
            bytes.extend_from_slice(
                &plain[(start - frame.offset) as usize..(end - frame.offset) as usize],
            );
        }
    }
    if bytes.len() as u64 != member.size {
        bail!(
            "the index of `{}` covers {} of the {} bytes of `{}`",
            store.describe(key),
            bytes.len(),
            member.size,
            member.path
        );
    }
    Ok(bytes)
}

/// A worker's two buffers, reused for every frame.
pub(super) struct Buffers {
    compressed: Vec<u8>,
    plain: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl Buffers {
    pub(super) fn new() -> Buffers {
        Buffers {
            compressed: Vec::new(),
            plain: Vec::new(),
            decompressor: None,
        }
    }

    /// Reads the next frame from `stored` and decompresses it into `plain`.
    pub(super) fn frame(
        &mut self,
        stored: &mut dyn Read,
        store: &dyn StoreRead,
        key: &str,
        frame: &Frame,
    ) -> io::Result<&[u8]> {
        self.compressed.clear();
        stored
            .take(frame.stored_len)
            .read_to_end(&mut self.compressed)?;
        if self.compressed.len() as u64 != frame.stored_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "`{}` ends before its index says (a frame at byte {})",
                    store.describe(key),
                    frame.stored_offset
                ),
            ));
        }
        let decompressor = match &mut self.decompressor {
            Some(decompressor) => decompressor,
            None => self.decompressor.insert(zstd::bulk::Decompressor::new()?),
        };
        self.plain.clear();
        self.plain.reserve(frame.len as usize);
        let n = decompressor.decompress_to_buffer(&self.compressed, &mut self.plain)?;
        if n as u64 != frame.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a frame of `{}` at byte {} holds {n} bytes, but its index says {}",
                    store.describe(key),
                    frame.stored_offset,
                    frame.len
                ),
            ));
        }
        Ok(&self.plain)
    }
}

/// Writes one part of a file from its frames, at its offset,
/// checksumming it for the manifest.
fn write_unit(
    store: &dyn StoreRead,
    key: &str,
    unit: Unit<'_>,
    buffers: &mut Buffers,
    stop: &AtomicBool,
    stored: &AtomicU64,
) -> Result<Part> {
    let Unit {
        member,
        frames,
        target,
        mut checksummer,
        part,
        ..
    } = unit;
    if part == 0 {
        simulated_slow_staging();
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(target)
        .map_err(|e| interrupt_or(e, target))?;
    let data = member.data_offset..member.data_offset + member.size;
    let mut written = 0u64;
    // A part's frames are contiguous: one ranged read for all of them (one
    // request per part on an object store).
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        bail!(
            "the index of `{}` lists `{}` without frames",
            store.describe(key),
            member.path
        );
    };
    let mut stored_bytes = store
        .open_range(key, first.stored_offset..last.stored_range().end)
        .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
    for frame in frames {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        if stop.load(Ordering::Relaxed) {
            bail!("stopped: another file failed");
        }
        let plain = buffers
            .frame(&mut stored_bytes, store, key, frame)
            .with_context(|| format!("cannot read `{}`", store.describe(key)))?;
        stored.fetch_add(frame.stored_len, Ordering::Relaxed);
        // The part of this frame that is the member's data (the first
        // frame begins with headers, the last ends with padding).
        let start = data.start.max(frame.offset);
        let end = data.end.min(frame.offset + frame.len);
        if start >= end {
            continue;
        }
        let bytes = &plain[(start - frame.offset) as usize..(end - frame.offset) as usize];
        if let Some(checksummer) = &mut checksummer {
            checksummer.update(bytes);
        }
        file.write_all_at(bytes, start - data.start)
            .map_err(|e| interrupt_or(e, target))?;
        written += bytes.len() as u64;
    }
    Ok(Part {
        written,
        checksummer,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // the test builds its fixtures on disk

    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    use super::*;
    use crate::compression::Compression;
    use crate::progress::Unit;
    use crate::repo::store::posix::Posix;
    use crate::seekable::encode::encode;
    use crate::seekable::FRAME_BYTES;
    use crate::stage::extract::extract_tar;
    use crate::stage::write::FileWriter;

    /// A tar as pg_basebackup writes one: directories first, files of
    /// every size (empty, small, several frames with a ragged end), a
    /// tablespace link.
    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32, kind: tar::EntryType| {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_entry_type(kind);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/somewhere/else").unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("base", b"", 0o700, tar::EntryType::Directory);
        add("base/1", b"", 0o750, tar::EntryType::Directory);
        add("PG_VERSION", b"15\n", 0o600, tar::EntryType::Regular);
        for n in 0..20u64 {
            let data: Vec<u8> = (0..n * 3000).map(|i| (i * n % 253) as u8).collect();
            add(
                &format!("base/1/{n}"),
                &data,
                0o640,
                tar::EntryType::Regular,
            );
        }
        // Parts written by different workers at their offsets.
        let big: Vec<u8> = (0..(2 * (UNIT_BYTES / FRAME_BYTES) + 3) * FRAME_BYTES + 777)
            .map(|i| (i % 241) as u8)
            .collect();
        add("base/1/16384", &big, 0o600, tar::EntryType::Regular);
        add("pg_tblspc", b"", 0o700, tar::EntryType::Directory);
        add("pg_tblspc/16400", b"", 0o777, tar::EntryType::Symlink);
        builder.into_inner().unwrap()
    }

    fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let mut found = BTreeMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let contents = if meta.is_dir() {
                    pending.push(path.clone());
                    Vec::new()
                } else {
                    fs::read(&path).unwrap()
                };
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                found.insert(relative, (meta.mode() & 0o7777, contents));
            }
        }
        found
    }

    /// A store holding `base.tar.zst` (seekable) and returns it with its index.
    fn seekable_store(dir: &Path) -> (Posix, Index) {
        let tar = sample_tar();
        let mut stored = Vec::new();
        let index = encode(&mut tar.as_slice(), &mut stored, None).unwrap();
        fs::write(dir.join("base.tar.zst"), stored).unwrap();
        (Posix::new(dir), index)
    }

    fn base() -> BackupFile {
        BackupFile {
            key: "base.tar.zst".into(),
            compression: Compression::Zstd,
        }
    }

    fn parallel(store: &Posix, index: &Index, dest: &Path) -> Result<u64> {
        let mut progress = Reporter::new(true).bar("staging", 0, Unit::Bytes);
        extract_seekable(
            store,
            &base(),
            index,
            dest,
            &mut progress,
            None,
            3,
            &mut SparseDatabases::default(),
        )
    }

    #[test]
    fn workers_write_the_same_tree_as_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (store, index) = seekable_store(dir.path());
        let (by_workers, by_stream) = (dir.path().join("workers"), dir.path().join("stream"));
        fs::create_dir(&by_workers).unwrap();
        fs::create_dir(&by_stream).unwrap();
        let written = parallel(&store, &index, &by_workers).unwrap();
        let mut progress = Reporter::new(true).bar("staging", 0, Unit::Bytes);
        let streamed = extract_tar(
            &store,
            &base(),
            &by_stream,
            &mut progress,
            None,
            &mut FileWriter::default(),
        )
        .unwrap();
        assert_eq!(written, streamed);
        let expected = tree(&by_stream);
        assert!(expected.len() > 20, "{expected:?}");
        assert_eq!(tree(&by_workers), expected);
    }

    #[test]
    fn a_damaged_frame_fails_the_staging() {
        let dir = tempfile::tempdir().unwrap();
        let (store, index) = seekable_store(dir.path());
        let big = index
            .members
            .iter()
            .find(|m| m.path == "base/1/16384")
            .unwrap();
        let mut bytes = fs::read(dir.path().join("base.tar.zst")).unwrap();
        let frame = big.frames[(UNIT_BYTES / FRAME_BYTES) as usize + 2];
        bytes[(frame.stored_offset + frame.stored_len / 2) as usize] ^= 0x55;
        fs::write(dir.path().join("base.tar.zst"), bytes).unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let error = parallel(&store, &index, &dest).unwrap_err();
        assert!(format!("{error:#}").contains("base.tar.zst"), "{error:#}");
    }
}
