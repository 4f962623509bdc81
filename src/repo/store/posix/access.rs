//! Saying why a path cannot be used: which directory refuses, its owner and
//! mode, and the user pitr runs as, so that a permission problem is never
//! mistaken for a missing file.
//!
//! Part of the posix driver, the one place outside `stage/` and
//! `postgres/` that asks the file system (clippy.toml): it explains why a
//! directory of a repository cannot be read, and staging asks it about
//! `--pgdata`'s parent, the same question about a local directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{access, AccessFlags, Gid, Group, Uid, User};

/// What pitr needs to do with a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// List it and open what is inside.
    Read,
    /// Create and rename entries in it.
    Write,
}

/// What is wrong with using `path`, when something is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Missing,
    NotADirectory,
    /// A permission problem, described in full.
    Denied(String),
}

/// Checks that the directory `path` exists and can be used as `need`
/// says, by the user pitr runs as.
pub fn check_dir(path: &Path, need: Need) -> Result<(), Problem> {
    // Every ancestor must be searchable, or even stat fails with EACCES
    // (which `is_dir` would report as missing).
    let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    for ancestor in ancestors.into_iter().rev() {
        if ancestor.as_os_str().is_empty() || !ancestor.is_dir() {
            continue;
        }
        if access(ancestor, AccessFlags::X_OK).is_err() {
            return Err(Problem::Denied(format!(
                "permission denied: pitr cannot enter `{}` ({}) on the way to `{}`",
                ancestor.display(),
                who_may(ancestor),
                path.display()
            )));
        }
    }
    match fs::metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(Problem::Missing),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Problem::Denied(format!(
                "permission denied on `{}` ({})",
                path.display(),
                who_may(path)
            )))
        }
        Err(_) => return Err(Problem::Missing),
        Ok(metadata) if !metadata.is_dir() => return Err(Problem::NotADirectory),
        Ok(_) => {}
    }
    let (flags, verb) = match need {
        Need::Read => (AccessFlags::R_OK | AccessFlags::X_OK, "read"),
        Need::Write => (AccessFlags::W_OK | AccessFlags::X_OK, "write into"),
    };
    match access(path, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EROFS) => Err(Problem::Denied(format!(
            "`{}` is on a read-only filesystem",
            path.display()
        ))),
        Err(_) => Err(Problem::Denied(format!(
            "permission denied: pitr cannot {verb} `{}` ({})",
            path.display(),
            who_may(path)
        ))),
    }
}

/// `owner postgres:postgres, mode 0700; pitr runs as alice`.
pub fn who_may(path: &Path) -> String {
    let me = current_user();
    match fs::metadata(path) {
        Ok(metadata) => format!(
            "owner {}:{}, mode {:04o}; pitr runs as {me}",
            user_name(metadata.uid()),
            group_name(metadata.gid()),
            metadata.mode() & 0o7777
        ),
        Err(_) => format!("pitr runs as {me}"),
    }
}

/// The name of the effective user, or its uid.
pub fn current_user() -> String {
    user_name(Uid::effective().as_raw())
}

fn user_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
        .unwrap_or_else(|| uid.to_string())
}

fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|group| group.name)
        .unwrap_or_else(|| gid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_and_not_a_directory_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_dir(dir.path(), Need::Write), Ok(()));
        assert_eq!(
            check_dir(&dir.path().join("absent"), Need::Read),
            Err(Problem::Missing)
        );
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert_eq!(check_dir(&file, Need::Read), Err(Problem::NotADirectory));
    }

    #[test]
    fn the_owner_and_mode_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let text = who_may(dir.path());
        assert!(text.contains("mode 0700"), "{text}");
        assert!(
            text.contains(&format!("pitr runs as {}", current_user())),
            "{text}"
        );
    }
}
