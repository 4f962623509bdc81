//! Writing to a repository: its layout, new backup directories, and
//! removing backups and archive files.
//!
//! Only `init`, `backup` and `expire` use this module; a restore never
//! writes the repository. Every change is made so that a reader (`pitr
//! list`, a restore, PostgreSQL's `restore_command`) sees either the old
//! state or the new one: a backup directory appears by a rename once it is
//! complete, and disappears by a rename to a hidden name before it is
//! deleted. The scanner ignores hidden directories under `base/`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::store::posix::Posix;
use super::store::{Staging, StoreRead, Writable};

pub use super::store::posix::DIR_MODE;

/// Prefix of a backup being written: hidden, so never taken for a backup.
pub const BACKUP_TEMP_PREFIX: &str = ".pitr-backup-";

pub use super::store::posix::{create_layout, LayoutEntry};

/// The repository's stores, to write: for `backup` and `expire` only (a
/// restore and every other reader gets a [`super::RepoRead`] through the
/// catalog, which cannot change anything).
pub fn open_for_writing(location: &super::RepoLocation) -> super::RepoWrite {
    match location {
        super::RepoLocation::Object(object) => super::RepoWrite {
            backups: Writable::from_arc(object.backups.clone()),
            archive: Writable::from_arc(object.archive.clone()),
        },
        super::RepoLocation::Local {
            backups,
            wal_archive,
            ..
        } => super::RepoWrite {
            backups: Writable::new(Posix::new(backups)),
            archive: Writable::new(Posix::new(wal_archive)),
        },
    }
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

/// True when something named `id` is at the top of the backups store.
pub fn id_taken(backups: &dyn StoreRead, id: &str) -> bool {
    backups
        .list_prefixes("")
        .is_ok_and(|names| names.iter().any(|name| name == id))
        || backups.stat(id).is_ok_and(|found| found.is_some())
}

/// A hidden place for pg_basebackup to write backup `id` into: the scanner
/// skips it, and it is removed when dropped, so only a finished backup ever
/// gets its real name.
pub fn stage_backup(backups: &Writable, id: &str) -> std::io::Result<Staging> {
    backups.stage(&format!("{}{id}", &BACKUP_TEMP_PREFIX[1..]))
}

/// Publishes a finished backup as `<id>`, refusing to replace anything
/// there; the staging area is used up either way (see
/// [`StoreWrite::publish`](super::store::StoreWrite::publish)). Returns how
/// the backup is named in messages.
pub fn publish(backups: &Writable, staged: Staging, id: &str) -> Result<PathBuf> {
    let staged_at = staged.path().to_path_buf();
    backups.publish(staged, id).with_context(|| {
        format!(
            "cannot publish the backup staged in `{}` as `{}` (the staged copy was deleted)",
            staged_at.display(),
            backups.describe(id)
        )
    })?;
    Ok(PathBuf::from(backups.describe(id)))
}

/// Removes backup `<id>`: first hidden, so that no one ever sees a
/// half-deleted backup, then deleted.
pub fn remove_backup(backups: &Writable, id: &str) -> Result<()> {
    backups.delete_group(id)
}

/// Removes archive files; one already gone is not an error (another
/// `expire` may have run at the same time).
pub fn remove_archive_files(archive: &Writable, keys: &[&str]) -> Result<()> {
    archive.delete(keys).map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::os_user::OsUser;
    use crate::repo::store::posix::Posix;
    use crate::repo::store::HiddenState;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
        let store = Writable::new(Posix::new(base));
        let staged = stage_backup(&store, "x").unwrap();
        assert!(staged
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(BACKUP_TEMP_PREFIX));
        fs::write(staged.path().join("backup_manifest"), b"{}").unwrap();
        fs::create_dir(base.join("taken")).unwrap();
        assert!(id_taken(store.read().as_ref(), "taken"));
        let staged_path = staged.path().to_path_buf();
        assert!(publish(&store, staged, "taken").is_err());
        assert!(
            !staged_path.exists(),
            "a failed publish deletes the staged backup"
        );

        let staged = stage_backup(&store, "b1").unwrap();
        let staged_path = staged.path().to_path_buf();
        fs::write(staged.path().join("backup_manifest"), b"{}").unwrap();
        let published = publish(&store, staged, "b1").unwrap();
        assert!(published.join("backup_manifest").is_file());
        assert!(!staged_path.exists());

        remove_backup(&store, "b1").unwrap();
        assert!(!base.join("b1").exists());
        assert!(store.read().hidden_groups().unwrap().is_empty());
        fs::create_dir(base.join(".pitr-backup-20261124T031500Z-abc")).unwrap();
        let hidden = store.read().hidden_groups().unwrap();
        assert_eq!(hidden.len(), 1);
        assert_eq!(hidden[0].state, HiddenState::Unfinished);
        assert!(remove_backup(&store, "b1").is_err());
        remove_archive_files(&store, &["never-there"]).unwrap();

        // An expire interrupted between hiding and deleting leaves this.
        fs::create_dir(base.join(".pitr-expiring-b0")).unwrap();
        let leftovers: Vec<_> = store
            .read()
            .hidden_groups()
            .unwrap()
            .into_iter()
            .filter(|group| group.state == HiddenState::Expiring)
            .map(|group| group.name)
            .collect();
        assert_eq!(leftovers, [".pitr-expiring-b0"]);
        remove_backup(&store, &leftovers[0]).unwrap();
        assert!(!base.join(".pitr-expiring-b0").exists());
    }
}
