//! Writing to a repository: its layout, new backup directories, and
//! removing backups and archive files.
//!
//! Only `init`, `backup` and `expire` use this module; a restore never
//! writes the repository. Every change is made so that a reader (`pitr
//! list`, a restore, PostgreSQL's `restore_command`) sees either the old
//! state or the new one: a backup directory appears by a rename once it is
//! complete, and disappears by a rename to a hidden name before it is
//! deleted. The scanner ignores hidden directories under `base/`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use crate::postgres::os_user::OsUser;

/// Directory mode for the repository and its parts: the owner (the
/// PostgreSQL OS user, which archives into `wal/`) writes, its group may
/// read, others get nothing: the WAL and the backups hold all the data.
pub const DIR_MODE: u32 = 0o750;

/// Prefix of a backup being written: hidden, so never taken for a backup.
pub const BACKUP_TEMP_PREFIX: &str = ".pitr-backup-";
/// Prefix of a backup being deleted by `expire`.
pub const EXPIRING_PREFIX: &str = ".pitr-expiring-";

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
            .filter(|name| name != "base" && name != "wal" && !name.starts_with('.'))
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
        let created = create_dir(&dir, owner)?;
        entries.push(LayoutEntry { path: dir, created });
    }
    Ok(entries)
}

fn create_dir(dir: &Path, owner: &OsUser) -> Result<bool> {
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

/// A backup id for a backup started at `time`: `20261124T031500Z`, which
/// sorts by time as text. When that name is taken (two backups in one
/// second), `-2`, `-3`, ... follow, which still sorts before the next
/// second.
pub fn backup_id(time: DateTime<Utc>, taken: impl Fn(&str) -> bool) -> String {
    let base = time.format("%Y%m%dT%H%M%SZ").to_string();
    if !taken(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// True when `backups/<id>` exists.
pub fn id_taken(backups: &Path, id: &str) -> bool {
    backups.join(id).exists()
}

/// Moves a finished backup from its hidden directory to `backups/<id>`,
/// refusing to replace anything there.
pub fn publish(temp: &Path, backups: &Path, id: &str) -> Result<PathBuf> {
    let destination = backups.join(id);
    rename_no_replace(temp, &destination).with_context(|| {
        format!(
            "cannot rename `{}` to `{}`",
            temp.display(),
            destination.display()
        )
    })?;
    sync_dir(backups);
    Ok(destination)
}

/// Removes `backups/<id>`: first renamed to a hidden name, so that no one
/// ever sees a half-deleted backup, then deleted.
pub fn remove_backup(backups: &Path, id: &str) -> Result<()> {
    let dir = backups.join(id);
    let hidden = backups.join(format!("{EXPIRING_PREFIX}{id}"));
    rename_no_replace(&dir, &hidden).with_context(|| {
        format!(
            "cannot rename `{}` to `{}` before deleting it",
            dir.display(),
            hidden.display()
        )
    })?;
    sync_dir(backups);
    fs::remove_dir_all(&hidden).with_context(|| {
        format!(
            "cannot delete `{}` (the backup is already hidden from pitr; delete it by hand)",
            hidden.display()
        )
    })
}

/// Hidden directories an interrupted `expire` left behind: already hidden
/// from every reader, and meant to be deleted.
pub fn leftover_expiring(backups: &Path) -> Vec<PathBuf> {
    hidden_dirs(backups, EXPIRING_PREFIX)
}

/// Backups being written, or left behind by a `pitr backup` that was
/// killed before it could clean up. Which is which cannot be told from
/// here, so they are only ever reported.
pub fn unfinished_backups(backups: &Path) -> Vec<PathBuf> {
    hidden_dirs(backups, BACKUP_TEMP_PREFIX)
}

fn hidden_dirs(backups: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(backups) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    dirs
}

/// Removes one archive file; one already gone is not an error (another
/// `expire` may have run at the same time).
pub fn remove_archive_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot delete `{}`", path.display())),
    }
}

fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
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

/// Makes a rename in `dir` durable; a failure only costs durability after a
/// crash, never correctness, so it is not reported.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn ids_sort_by_time() {
        let id = backup_id(at("2026-11-24T03:15:00.9Z"), |_| false);
        assert_eq!(id, "20261124T031500Z");
        let later = backup_id(at("2026-11-24T03:15:01Z"), |_| false);
        let next_day = backup_id(at("2026-11-25T00:00:00Z"), |_| false);
        let mut ids = vec![next_day.clone(), later.clone(), id.clone()];
        ids.sort();
        assert_eq!(ids, [id, later, next_day]);
        // Local offsets do not matter: the id is in UTC.
        let offset = DateTime::parse_from_rfc3339("2026-11-24T04:15:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(backup_id(offset, |_| false), "20261124T031500Z");
    }

    #[test]
    fn a_taken_id_gets_a_suffix_that_still_sorts() {
        let taken = ["20261124T031500Z", "20261124T031500Z-2"];
        let id = backup_id(at("2026-11-24T03:15:00Z"), |id| taken.contains(&id));
        assert_eq!(id, "20261124T031500Z-3");
        let mut ids = [
            "20261124T031501Z".to_string(),
            id.clone(),
            "20261124T031500Z".to_string(),
        ];
        ids.sort();
        assert_eq!(ids[1], id);
    }

    #[test]
    fn layout_is_created_once_and_strangers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let user = OsUser {
            name: "me".to_string(),
            uid: nix::unistd::Uid::effective(),
            gid: nix::unistd::Gid::effective(),
            switch: false,
        };
        let first = create_layout(&repo, &user).unwrap();
        assert!(first.iter().all(|e| e.created));
        for sub in ["", "base", "wal"] {
            let mode = fs::metadata(repo.join(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{sub}");
        }
        let again = create_layout(&repo, &user).unwrap();
        assert!(again.iter().all(|e| !e.created));

        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("photo.jpg"), b"x").unwrap();
        let error = create_layout(&other, &user).unwrap_err().to_string();
        assert!(error.contains("not a pitr repository"), "{error}");
        assert!(error.contains("`photo.jpg`"), "{error}");
    }

    #[test]
    fn publishing_never_replaces_and_removal_hides_first() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let temp = base.join(".pitr-backup-x");
        fs::create_dir(&temp).unwrap();
        fs::write(temp.join("backup_manifest"), b"{}").unwrap();
        fs::create_dir(base.join("taken")).unwrap();
        assert!(publish(&temp, base, "taken").is_err());
        assert!(temp.exists());
        let published = publish(&temp, base, "b1").unwrap();
        assert!(published.join("backup_manifest").is_file());
        assert!(!temp.exists());

        remove_backup(base, "b1").unwrap();
        assert!(!base.join("b1").exists());
        assert!(leftover_expiring(base).is_empty());
        fs::create_dir(base.join(".pitr-backup-20261124T031500Z-abc")).unwrap();
        assert_eq!(unfinished_backups(base).len(), 1);
        assert!(remove_backup(base, "b1").is_err());
        remove_archive_file(&base.join("never-there")).unwrap();
    }
}
