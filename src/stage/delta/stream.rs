//! A delta restore from a tar read as one stream (a plain pg_basebackup
//! tar, any compression): every byte of the backup is read, but a file
//! already there is compared with it page by page and only the pages that
//! differ are written, in place.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::ahead::Ahead;
use super::file::{comparable, ensure_dir, set_mode, DeltaStats, FileOutcome};
use super::{manifest_path, Held, Seen};
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::backup::BackupFile;
use crate::repo::store::StoreRead;
use crate::seekable::PAGE_BYTES;
use crate::stage::tar_stream::{Member, TarStream};
use crate::stage::write::{
    interrupt_or, simulated_slow_staging, write_checked, FileWriter, Verify,
};
use crate::stage::Interrupted;

/// Pages read and compared at a time: 256 KiB, so that the existing file
/// is read in large sequential reads, not one system call per page.
const CHUNK_PAGES: usize = 32;

/// Brings the tree at `root` to the tar `file`'s, comparing what is there.
#[allow(clippy::too_many_arguments)] // the streaming extraction's, plus what the delta holds and counts
pub fn delta_tar(
    store: &dyn StoreRead,
    file: &BackupFile,
    root: &Path,
    progress: &mut Progress,
    mut verify: Option<&mut Verify<'_>>,
    mut control: Option<&mut Held>,
    seen: &mut Seen,
    stats: &mut DeltaStats,
    writer: &mut FileWriter,
) -> Result<()> {
    let mut tar = TarStream::open(store, file)?;
    let mut members = tar.members(Some(progress))?;
    let path = members.described();
    while let Some(Member {
        mut entry,
        name,
        relative,
    }) = members.next_member()?
    {
        simulated_slow_staging();
        if interrupt::requested() {
            bail!(Interrupted);
        }
        let target = root.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_symlink() && relative.starts_with("pg_tblspc") {
            // The server recreates tablespace links from tablespace_map.
            seen.insert(target);
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "refusing tar member `{}` in `{}`: a delta restore writes only files and directories",
                name.display(),
                path.display()
            );
        }
        let mode = entry.header().mode().unwrap_or(0o600);
        seen.insert(target.clone());
        if kind.is_dir() {
            ensure_dir(&target, mode, &relative)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            ensure_parent(parent)?;
        }
        let manifest = verify.as_ref().map(|v| manifest_path(v, &relative));
        if let Some(held) = control
            .as_deref_mut()
            .filter(|_| relative == Path::new("global/pg_control"))
        {
            // Written last, by the guard; checked now like any file.
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| interrupt_or(e, path))?;
            record(&mut verify, manifest, &bytes, bytes.len() as u64)?;
            *held = Some((bytes, mode));
            continue;
        }
        let size = entry.header().size().unwrap_or(0);
        let outcome = match comparable(&target, size)? {
            None => {
                let written =
                    write_checked(&mut entry, &target, &relative, mode, &mut verify, writer)?;
                FileOutcome {
                    size: written,
                    whole: true,
                    bytes_written: written,
                    ..FileOutcome::default()
                }
            }
            Some(existing) => {
                set_mode(&existing, &target, mode)?;
                let mut checksummer = match (&verify, &manifest) {
                    (Some(v), Some(p)) => v.check.checksummer(p),
                    _ => None,
                };
                let outcome = patch(&mut entry, &existing, &target, size, |bytes| {
                    if let Some(c) = &mut checksummer {
                        c.update(bytes);
                    }
                })?;
                if let (Some(v), Some(p)) = (verify.as_mut(), manifest) {
                    v.check
                        .record(&p, size, checksummer.map(|c| c.finish()))
                        .map_err(|problem| {
                            anyhow::anyhow!("the backup does not match its manifest: {problem}")
                        })?;
                }
                outcome
            }
        };
        stats.add(outcome);
    }
    stats.repository_bytes += members.finish();
    Ok(())
}

/// The parent of a member (pg_basebackup lists directories first, but a
/// tar need not).
fn ensure_parent(parent: &Path) -> Result<()> {
    if !parent.is_dir() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    Ok(())
}

/// Checks a held file against the manifest.
fn record(
    verify: &mut Option<&mut Verify<'_>>,
    manifest: Option<String>,
    bytes: &[u8],
    size: u64,
) -> Result<()> {
    if let (Some(v), Some(p)) = (verify.as_mut(), manifest) {
        let digest = v.check.checksummer(&p).map(|mut c| {
            c.update(bytes);
            c.finish()
        });
        v.check.record(&p, size, digest).map_err(|problem| {
            anyhow::anyhow!("the backup does not match its manifest: {problem}")
        })?;
    }
    Ok(())
}

/// Compares `existing` (already `size` bytes long) with the backup's bytes
/// from `reader`, page by page, and writes the pages that differ in place.
/// `seen` is given every byte of the backup's file, in order.
pub fn patch(
    reader: &mut dyn Read,
    existing: &File,
    target: &Path,
    size: u64,
    mut seen: impl FnMut(&[u8]),
) -> Result<FileOutcome> {
    let page = PAGE_BYTES as usize;
    let mut new = vec![0u8; page * CHUNK_PAGES];
    let mut old = vec![0u8; page * CHUNK_PAGES];
    let mut outcome = FileOutcome {
        size,
        ..FileOutcome::default()
    };
    let mut ahead = Ahead::new(existing, size);
    let mut offset = 0u64;
    while offset < size {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        ahead.reading(offset);
        let n = (size - offset).min(new.len() as u64) as usize;
        read_fully(reader, &mut new[..n]).map_err(|e| interrupt_or(e, target))?;
        existing
            .read_exact_at(&mut old[..n], offset)
            .map_err(|e| interrupt_or(e, target))?;
        seen(&new[..n]);
        for start in (0..n).step_by(page) {
            let end = (start + page).min(n);
            if new[start..end] == old[start..end] {
                outcome.pages_kept += 1;
            } else {
                existing
                    .write_all_at(&new[start..end], offset + start as u64)
                    .map_err(|e| interrupt_or(e, target))?;
                outcome.pages_rewritten += 1;
                outcome.bytes_written += (end - start) as u64;
            }
        }
        offset += n as u64;
    }
    Ok(outcome)
}

/// `read_exact`, retrying a read that a signal interrupted unless it was
/// Ctrl-C.
fn read_fully(reader: &mut dyn Read, mut buffer: &mut [u8]) -> io::Result<()> {
    while !buffer.is_empty() {
        match reader.read(buffer) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buffer = &mut buffer[n..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted && !interrupt::requested() => {
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use super::*;

    #[test]
    fn only_the_pages_that_differ_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rel");
        let backup: Vec<u8> = (0..PAGE_BYTES * 70 + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut damaged = backup.clone();
        damaged[PAGE_BYTES as usize * 3 + 17] ^= 1;
        damaged[PAGE_BYTES as usize * 69 + 5] ^= 1;
        damaged.extend_from_slice(&[7; 9000]);
        std::fs::write(&path, &damaged).unwrap();
        let existing = comparable(&path, backup.len() as u64).unwrap().unwrap();
        let mut all = Vec::new();
        let outcome = patch(
            &mut backup.as_slice(),
            &existing,
            &path,
            backup.len() as u64,
            |b| all.extend_from_slice(b),
        )
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), backup);
        assert_eq!(all, backup);
        assert_eq!(outcome.pages_rewritten, 2);
        assert_eq!(outcome.pages_kept, 69);
        assert_eq!(outcome.bytes_written, 2 * PAGE_BYTES);
    }
}
