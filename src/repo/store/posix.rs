//! The posix driver: a store is a directory, a key a relative path.
//!
//! Its guarantees are those the repository always had: a new object is
//! written to a hidden temporary file beside its final name, synced, moved
//! into place with a rename that never replaces (renameat2
//! `RENAME_NOREPLACE`, or link(2) where the file system lacks it), and the
//! directory is synced; a backup appears by renaming its hidden directory
//! and disappears by renaming it to a hidden name before it is deleted.
//!
//! This module and `stage/` and `postgres/` are where the file system is
//! used directly (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

pub mod access;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::os_user::OsUser;
use anyhow::{bail, Context, Result};

use super::{
    check_key, check_prefix, Created, Fill, HiddenGroup, HiddenState, NewObject, ObjectInfo,
    ObjectReader, Staging, StoreRead, StoreWrite, TreeEntry, TreeKind, Version, WriteError,
};

/// Prefix of a group (backup) being deleted: hidden from every listing.
pub const EXPIRING_PREFIX: &str = ".pitr-expiring-";

/// A directory used as a store.
#[derive(Clone, Debug)]
pub struct Posix {
    root: PathBuf,
}

impl Posix {
    /// The store rooted at `root`, which should exist (it is not created:
    /// a missing repository usually means an unmounted volume).
    pub fn new(root: impl Into<PathBuf>) -> Posix {
        Posix { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is a directory.
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn dir_of(&self, prefix: &str) -> io::Result<PathBuf> {
        check_prefix(prefix)?;
        Ok(match prefix.strip_suffix('/') {
            Some(inner) => self.root.join(inner),
            None => self.root.clone(),
        })
    }

    fn info(key: String, metadata: &fs::Metadata) -> ObjectInfo {
        let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
        ObjectInfo {
            key,
            size: metadata.len(),
            modified,
            version: version_of(modified),
        }
    }
}

/// The modification time in nanoseconds: what changes when a file is
/// written again.
fn version_of(modified: SystemTime) -> Version {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Version(nanos.to_string())
}

impl StoreRead for Posix {
    fn describe(&self, key: &str) -> String {
        if key.is_empty() {
            return self.root.display().to_string();
        }
        self.root
            .join(key.trim_end_matches('/'))
            .display()
            .to_string()
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> io::Result<Vec<ObjectInfo>> {
        let dir = self.dir_of(prefix)?;
        let mut objects = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{prefix}{name}");
            if start_after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            // Not followed: a symbolic link is not an object of the store.
            let metadata = entry.metadata()?;
            if metadata.is_file() {
                objects.push(Posix::info(key, &metadata));
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.dir_of(prefix)?;
        let mut names: Vec<String> = fs::read_dir(&dir)?
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn hidden_groups(&self) -> io::Result<Vec<HiddenGroup>> {
        let mut groups = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Staging directories and groups being deleted are the
            // store's hidden directories (`stage`, `delete_group`).
            if !name.starts_with(".pitr-") || !entry.file_type()?.is_dir() {
                continue;
            }
            let state = if name.starts_with(EXPIRING_PREFIX) {
                HiddenState::Expiring
            } else {
                HiddenState::Unfinished
            };
            let since = entry.metadata()?.modified()?;
            groups.push(HiddenGroup { name, state, since });
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    fn tree_level(&self, prefix: &str) -> io::Result<Vec<TreeEntry>> {
        let dir = self.dir_of(prefix)?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{prefix}{name}");
            // Not followed: a link is reported as one.
            let metadata = entry.metadata()?;
            let kind = metadata.file_type();
            let (kind, mode) = if kind.is_symlink() {
                let path = entry.path();
                let target = fs::read_link(&path)?;
                let mode = fs::metadata(&path).ok().map(|m| m.permissions().mode());
                (TreeKind::Link { target }, mode)
            } else if kind.is_dir() {
                (TreeKind::Group, Some(metadata.permissions().mode()))
            } else if kind.is_file() {
                (
                    TreeKind::Object {
                        size: metadata.len(),
                    },
                    Some(metadata.permissions().mode()),
                )
            } else {
                // Sockets, devices, FIFOs are no part of a backup.
                continue;
            };
            entries.push(TreeEntry { key, kind, mode });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    fn stat(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => Ok(Some(Posix::info(key.to_string(), &metadata))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn open(&self, key: &str) -> io::Result<ObjectReader> {
        Ok(Box::new(File::open(self.path(key)?)?))
    }

    fn open_range(&self, key: &str, range: Range<u64>) -> io::Result<ObjectReader> {
        let mut file = File::open(self.path(key)?)?;
        file.seek(SeekFrom::Start(range.start))?;
        Ok(Box::new(file.take(range.end.saturating_sub(range.start))))
    }

    fn download(&self, key: &str, to: &mut File) -> io::Result<u64> {
        // File to file: the kernel copies (copy_file_range).
        io::copy(&mut File::open(self.path(key)?)?, to)
    }

    fn identity(&self) -> String {
        let canonical = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        canonical.to_string_lossy().into_owned()
    }

    fn local_dir(&self, prefix: &str) -> Option<PathBuf> {
        self.dir_of(prefix).ok()
    }
}

impl StoreWrite for Posix {
    fn reader(&self) -> &dyn StoreRead {
        self
    }

    fn create_new(
        &self,
        key: &str,
        options: &NewObject,
        fill: Fill,
    ) -> Result<Created, WriteError> {
        let path = self.path(key).map_err(|e| WriteError::Other(e.into()))?;
        let mut temp = self.temp_file_for(&path, options)?;
        write_synced(temp.as_file_mut(), fill)?;
        // Of two creates of the same key at once, exactly one gets here
        // first; the other compares with the winner's file.
        match temp.persist_noclobber(&path) {
            Ok(_) => {
                sync_dir_strict(parent(&path))?;
                Ok(Created::Created)
            }
            Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
                let mut ours = error.file.reopen().map_err(|e| {
                    WriteError::Other(
                        anyhow::Error::new(e).context("cannot reread a temporary file"),
                    )
                })?;
                let mut theirs = File::open(&path)
                    .with_context(|| format!("cannot open `{}`", path.display()))?;
                let same = same_bytes(&mut ours, &mut theirs)
                    .with_context(|| format!("cannot compare with `{}`", path.display()))?;
                Ok(if same {
                    Created::AlreadyPresentSame
                } else {
                    Created::PresentDifferent
                })
            }
            Err(error) => Err(WriteError::Other(anyhow::Error::new(error.error).context(
                format!(
                    "cannot move the archived copy into place as `{}`",
                    path.display()
                ),
            ))),
        }
    }

    fn write_stream(&self, key: &str, fill: Fill) -> Result<ObjectInfo, WriteError> {
        let path = self.path(key).map_err(|e| WriteError::Other(e.into()))?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        let mut temp = self.temp_file_for(&path, &NewObject::default())?;
        write_synced(temp.as_file_mut(), fill)?;
        temp.persist(&path).map_err(|error| {
            WriteError::Other(anyhow::Error::new(error.error).context(format!(
                "cannot move the new file into place as `{}`",
                path.display()
            )))
        })?;
        sync_dir_strict(parent(&path))?;
        let metadata =
            fs::metadata(&path).with_context(|| format!("cannot read `{}`", path.display()))?;
        Ok(Posix::info(key.to_string(), &metadata))
    }

    fn sync(&self, keys: &[&str]) -> io::Result<()> {
        let mut dirs = Vec::new();
        for key in keys {
            let path = self.path(key)?;
            File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("cannot sync `{}`: {error}", path.display()),
                    )
                })?;
            let dir = parent(&path).to_path_buf();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            File::open(&dir)
                .and_then(|handle| handle.sync_all())
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("cannot sync the directory `{}`: {error}", dir.display()),
                    )
                })?;
        }
        Ok(())
    }

    fn delete(&self, keys: &[&str]) -> io::Result<()> {
        for key in keys {
            let path = self.path(key)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("cannot delete `{}`: {error}", path.display()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn stage(&self, hint: &str) -> io::Result<Staging> {
        // Inside the store, so that publishing is one rename on one file
        // system; hidden, so never taken for a group.
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{hint}-"))
            .tempdir_in(&self.root)?;
        Ok(Staging::new(dir))
    }

    fn publish(&self, staging: Staging, prefix: &str) -> io::Result<()> {
        let destination = self.path(prefix.trim_end_matches('/'))?;
        // On failure `staging` is dropped, which deletes it.
        rename_no_replace(staging.path(), &destination)?;
        staging.moved_away();
        sync_dir(&self.root);
        Ok(())
    }

    fn delete_group(&self, prefix: &str) -> anyhow::Result<()> {
        let name = prefix.trim_end_matches('/');
        let dir = self.path(name)?;
        // Already hidden (left by an interrupted delete): just delete it.
        if name.starts_with('.') {
            return fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot delete `{}`", dir.display()));
        }
        let hidden = self.root.join(format!("{EXPIRING_PREFIX}{name}"));
        rename_no_replace(&dir, &hidden).with_context(|| {
            format!(
                "cannot rename `{}` to `{}` before deleting it",
                dir.display(),
                hidden.display()
            )
        })?;
        sync_dir(&self.root);
        fs::remove_dir_all(&hidden).with_context(|| {
            format!(
                "cannot delete `{}` (the backup is already hidden from pitr; delete it by hand)",
                hidden.display()
            )
        })
    }
}

impl Posix {
    /// A unique hidden temporary file beside `path`, so the final rename
    /// stays on one file system; removed if anything fails before it.
    fn temp_file_for(
        &self,
        path: &Path,
        options: &NewObject,
    ) -> Result<tempfile::NamedTempFile, WriteError> {
        let dir = parent(path);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut builder = tempfile::Builder::new();
        let prefix = format!(".{name}.");
        builder.prefix(&prefix).suffix(".pitr-tmp");
        if let Some(mode) = options.mode {
            builder.permissions(fs::Permissions::from_mode(mode));
        }
        builder
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))
            .map_err(WriteError::Other)
    }
}

/// Directory mode for the repository and its parts: the owner (the
/// PostgreSQL OS user, which archives into `wal/`) writes, its group may
/// read, others get nothing: the WAL and the backups hold all the data.
pub const DIR_MODE: u32 = 0o750;

/// What `create_layout` did to each directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LayoutEntry {
    pub path: PathBuf,
    pub created: bool,
}

/// Creates `repo`, `repo/base` and `repo/wal` where missing, mode 0750, and
/// (as root) owned by the PostgreSQL OS user. Existing directories are left
/// as they are. A non-empty `repo` that is not a repository is refused, so a
/// typo cannot turn some other directory into an archive.
pub fn create_layout(repo: &Path, owner: &OsUser) -> Result<Vec<LayoutEntry>> {
    if repo.exists() && !repo.is_dir() {
        bail!("`{}` exists and is not a directory", repo.display());
    }
    if repo.is_dir() {
        let strangers: Vec<String> = fs::read_dir(repo)
            .with_context(|| format!("cannot read `{}`", repo.display()))?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                name != "base" && name != "wal" && name != "drills" && !name.starts_with('.')
            })
            .collect();
        if !strangers.is_empty() {
            bail!(
                "`{}` is not empty and is not a pitr repository (it holds {}); choose a new or empty directory",
                repo.display(),
                strangers
                    .iter()
                    .take(3)
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut entries = Vec::new();
    for dir in [repo.to_path_buf(), repo.join("base"), repo.join("wal")] {
        let created = create_layout_dir(&dir, owner)?;
        entries.push(LayoutEntry { path: dir, created });
    }
    Ok(entries)
}

fn create_layout_dir(dir: &Path, owner: &OsUser) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            return Ok(false)
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create `{}`", dir.display()))
        }
    }
    // Set explicitly: create_dir's mode is filtered by the umask.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of `{}`", dir.display()))?;
    owner.own(dir)?;
    Ok(true)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes the content through a large buffer and syncs it.
fn write_synced(file: &mut File, fill: Fill) -> Result<(), WriteError> {
    let mut writer = BufWriter::with_capacity(1 << 20, &mut *file);
    fill(&mut writer)
        .and_then(|()| writer.flush())
        .map_err(WriteError::Write)?;
    drop(writer);
    file.sync_all().map_err(WriteError::Write)
}

fn same_bytes(a: &mut File, b: &mut File) -> io::Result<bool> {
    let (la, lb) = (a.metadata()?.len(), b.metadata()?.len());
    if la != lb {
        return Ok(false);
    }
    crate::compression::same_contents(a, b)
}

fn sync_dir_strict(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot sync the directory `{}`", dir.display()))
        .map_err(WriteError::Other)
}

/// Makes a rename in `dir` durable; a failure only costs durability after a
/// crash, never correctness, so it is not reported.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// A rename that never replaces its destination.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            // Some file systems (older NFS) do not know the flag: fall back.
            Err(nix::errno::Errno::EINVAL) => {}
            result => return result.map_err(io::Error::from),
        }
    }
    // Without renameat2 the check and the rename are two steps; rename(2)
    // would silently replace an empty directory, so look first.
    if to.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("`{}` already exists", to.display()),
        ));
    }
    fs::rename(from, to)
}

/// Creates `dir` where missing, mode 0750, owned like its parent (as root:
/// a directory added to a repository later, `drills/`, belongs to the same
/// user as `base/` and `wal/`). An existing directory is left as it is.
pub fn create_dir_like_parent(dir: &Path) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            return Ok(false)
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create `{}`", dir.display()))
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of `{}`", dir.display()))?;
    if nix::unistd::Uid::effective().is_root() {
        use std::os::unix::fs::MetadataExt;
        let parent = fs::metadata(parent(dir))
            .with_context(|| format!("cannot read `{}`", parent(dir).display()))?;
        std::os::unix::fs::lchown(dir, Some(parent.uid()), Some(parent.gid())).with_context(
            || format!("cannot give `{}` to its repository's owner", dir.display()),
        )?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::contract;
    use super::*;

    /// Each contract test gets a fresh directory, kept alive with the store.
    fn fresh() -> (tempfile::TempDir, Posix) {
        let dir = tempfile::tempdir().unwrap();
        let store = Posix::new(dir.path());
        (dir, store)
    }

    contract::suite!(fresh);

    #[test]
    fn keys_cannot_leave_the_directory() {
        let (_dir, store) = fresh();
        for key in ["../x", "/etc/passwd", "a/../../x", "", "a//b", "./a"] {
            assert_eq!(
                store.stat(key).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{key}"
            );
        }
    }

    #[test]
    fn new_files_keep_the_mode_asked_for_and_leave_no_temporary_file() {
        let (dir, store) = fresh();
        store
            .create_new(
                "a",
                &NewObject { mode: Some(0o600) },
                &mut |w: &mut dyn Write| w.write_all(b"x"),
            )
            .unwrap();
        let mode = fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["a"]);
    }

    /// A plain backup's tree as the copy sees it: modes, and symbolic
    /// links reported (with their target and the mode of what they point
    /// to), never followed.
    #[test]
    fn tree_levels_carry_modes_and_links() {
        let (dir, store) = fresh();
        let wal = dir.path().join("elsewhere");
        fs::create_dir(&wal).unwrap();
        fs::set_permissions(&wal, fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(dir.path().join("b1")).unwrap();
        fs::write(dir.path().join("b1/PG_VERSION"), b"15\n").unwrap();
        fs::set_permissions(
            dir.path().join("b1/PG_VERSION"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink(&wal, dir.path().join("b1/pg_wal")).unwrap();
        let entries = store.tree_level("b1/").unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].key, "b1/PG_VERSION");
        assert_eq!(entries[0].kind, TreeKind::Object { size: 3 });
        assert_eq!(entries[0].mode.map(|m| m & 0o777), Some(0o640));
        assert_eq!(entries[1].key, "b1/pg_wal");
        assert_eq!(entries[1].kind, TreeKind::Link { target: wal });
        assert_eq!(entries[1].mode.map(|m| m & 0o777), Some(0o750));
    }
}
