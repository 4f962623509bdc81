//! One entry of the existing directory brought to the backup's: what is
//! there is kept to be compared when it can be (a regular file at least
//! as large as the backup's, truncated to its size first, as pgBackRest
//! does: a relation that grew since the backup keeps its first pages; and
//! not hard-linked elsewhere), else removed and written anew. And what a delta restore counts.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::stage::write::interrupt_or;

/// What happened to one file of the backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOutcome {
    pub size: u64,
    /// Written in full: it was absent, smaller, or not a file.
    pub whole: bool,
    pub pages_kept: u64,
    pub pages_rewritten: u64,
    /// Bytes written into it.
    pub bytes_written: u64,
}

/// What a delta restore did, for its summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeltaStats {
    /// Files found identical to the backup's, kept as they were.
    pub files_kept: u64,
    /// Files compared page by page in which some pages were rewritten.
    pub files_patched: u64,
    /// Files written in full (absent, smaller, or not a regular file).
    pub files_rewritten: u64,
    /// Files and links not in the backup, removed.
    pub files_removed: u64,
    /// Pages found identical, in compared files.
    pub pages_kept: u64,
    /// Pages rewritten in compared files.
    pub pages_rewritten: u64,
    /// Bytes of the backup already on disk, not written.
    pub bytes_kept: u64,
    /// Bytes written (whole files and rewritten pages).
    pub bytes_written: u64,
    pub bytes_removed: u64,
    /// Bytes read from the repository (compressed, as stored).
    pub repository_bytes: u64,
}

impl DeltaStats {
    pub fn add(&mut self, outcome: FileOutcome) {
        self.bytes_written += outcome.bytes_written;
        self.bytes_kept += outcome.size - outcome.bytes_written.min(outcome.size);
        if outcome.whole {
            self.files_rewritten += 1;
            return;
        }
        self.pages_kept += outcome.pages_kept;
        self.pages_rewritten += outcome.pages_rewritten;
        if outcome.pages_rewritten == 0 {
            self.files_kept += 1;
        } else {
            self.files_patched += 1;
        }
    }
}

/// The existing file at `target`, opened for reading and writing and cut
/// to `size`, when it can be compared; otherwise whatever is there is
/// removed (`None`: the file is to be written in full).
pub fn comparable(target: &Path, size: u64) -> Result<Option<File>> {
    let meta = match fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect `{}`", target.display()))
        }
    };
    // A file with other hard links (pg_upgrade --link, a `cp -al` copy)
    // is written anew: writing in place would change the other copies.
    if meta.is_file() && meta.len() >= size && meta.nlink() == 1 {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .map_err(|e| interrupt_or(e, target))?;
        if meta.len() > size {
            file.set_len(size).map_err(|e| interrupt_or(e, target))?;
        }
        return Ok(Some(file));
    }
    remove_entry(target)?;
    Ok(None)
}

/// Gives a kept file the backup's permission bits.
pub fn set_mode(file: &File, target: &Path, mode: u32) -> Result<()> {
    let mode = mode & 0o7777;
    let current = file
        .metadata()
        .with_context(|| format!("cannot inspect `{}`", target.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if current != mode {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of `{}`", target.display()))?;
    }
    Ok(())
}

/// The backup's directory at `target`: an existing directory is kept (and
/// a symlinked `pg_wal`, which PostgreSQL follows), anything else replaced.
pub fn ensure_dir(target: &Path, mode: u32, relative: &Path) -> Result<()> {
    let mode = mode & 0o7777;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o7777 != mode {
                fs::set_permissions(target, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot set the mode of `{}`", target.display()))?;
            }
            return Ok(());
        }
        Ok(meta)
            if meta.file_type().is_symlink()
                && relative == Path::new("pg_wal")
                && target.is_dir() =>
        {
            return Ok(())
        }
        Ok(_) => {
            remove_entry(target)?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect `{}`", target.display()))
        }
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    fs::DirBuilder::new()
        .mode(mode)
        .create(target)
        .map_err(|e| interrupt_or(e, target))
}

/// Removes a file, link or directory tree; returns the bytes of the files
/// removed and how many there were.
pub fn remove_entry(target: &Path) -> Result<(u64, u64)> {
    let meta = fs::symlink_metadata(target)
        .with_context(|| format!("cannot inspect `{}`", target.display()))?;
    if meta.is_dir() {
        let counted = tree_bytes(target);
        fs::remove_dir_all(target)
            .with_context(|| format!("cannot remove `{}`", target.display()))?;
        Ok(counted)
    } else {
        fs::remove_file(target).with_context(|| format!("cannot remove `{}`", target.display()))?;
        Ok((if meta.is_file() { meta.len() } else { 0 }, 1))
    }
}

/// Bytes and number of the files and links under `dir`.
fn tree_bytes(dir: &Path) -> (u64, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .fold((0, 0), |(bytes, files), entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                let (b, f) = tree_bytes(&entry.path());
                (bytes + b, files + f)
            }
            Ok(kind) if kind.is_file() => (
                bytes + entry.metadata().map(|m| m.len()).unwrap_or(0),
                files + 1,
            ),
            _ => (bytes, files + 1),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use super::*;

    #[test]
    fn a_larger_file_is_cut_and_a_hard_linked_one_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let grown = dir.path().join("grown");
        fs::write(&grown, vec![1u8; 3 * 8192]).unwrap();
        let kept = comparable(&grown, 8192).unwrap().unwrap();
        assert_eq!(kept.metadata().unwrap().len(), 8192);
        // Smaller: removed, to be written in full.
        assert!(comparable(&grown, 4 * 8192).unwrap().is_none());
        assert!(!grown.exists());
        // Another directory's copy sharing the inode keeps its bytes.
        let linked = dir.path().join("linked");
        let other = dir.path().join("other-copy");
        fs::write(&linked, vec![2u8; 8192]).unwrap();
        fs::hard_link(&linked, &other).unwrap();
        assert!(comparable(&linked, 8192).unwrap().is_none());
        assert!(!linked.exists());
        assert_eq!(fs::read(&other).unwrap(), vec![2u8; 8192]);
    }
}
