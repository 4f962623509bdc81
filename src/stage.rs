//! Materialising a plan into a data directory.
//!
//! Everything is written into a hidden sibling of `--pgdata` and renamed
//! into place only when complete, so an interrupted or failed restore never
//! leaves a half-written data directory, and an existing directory is never
//! touched unless `--force` (which moves it aside, never deletes it).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::compression::Compression;
use crate::interrupt;
use crate::plan::Plan;
use crate::postgres::os_user::OsUser;
use crate::postgres::settings::RecoverySettings;
use crate::progress::{Progress, Reporter, Unit};
use crate::repo::backup::BackupFormat;

/// What is at `--pgdata` before the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Absent,
    Empty,
    /// Not empty; allowed only with `--force`, and then moved aside.
    Occupied,
}

/// Looks at `--pgdata` without changing anything.
pub fn inspect_destination(pgdata: &Path, force: bool) -> Result<Destination> {
    match fs::symlink_metadata(pgdata) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Destination::Absent),
        Err(error) => Err(error).with_context(|| format!("cannot inspect `{}`", pgdata.display())),
        Ok(metadata) if !metadata.is_dir() => bail!(
            "`{}` exists and is not a directory; choose another --pgdata",
            pgdata.display()
        ),
        Ok(_) => {
            let mut entries = fs::read_dir(pgdata)
                .with_context(|| format!("cannot read `{}`", pgdata.display()))?;
            if entries.next().is_none() {
                Ok(Destination::Empty)
            } else if force {
                Ok(Destination::Occupied)
            } else {
                bail!(
                    "`{}` is not empty; nothing was changed. Choose an empty or new directory, or pass --force to move the existing one aside",
                    pgdata.display()
                )
            }
        }
    }
}

/// A staging directory that removes itself unless committed.
struct StagingDir {
    path: PathBuf,
    committed: bool,
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The result of staging.
#[derive(Clone, Debug)]
pub struct Staged {
    pub pgdata: PathBuf,
    /// Where a non-empty `--pgdata` was moved (with `--force`).
    pub moved_aside: Option<PathBuf>,
    pub bytes_written: u64,
    pub notes: Vec<String>,
}

/// Extracts the backup, writes the recovery settings, gives everything to
/// the server's OS user and renames the result into place.
pub fn stage(
    plan: &Plan,
    pgdata: &Path,
    destination: &Destination,
    user: &OsUser,
    settings: &RecoverySettings,
    reporter: &Reporter,
) -> Result<Staged> {
    let parent = pgdata
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = pgdata
        .file_name()
        .with_context(|| format!("`{}` has no directory name", pgdata.display()))?
        .to_string_lossy()
        .into_owned();
    if !parent.is_dir() {
        bail!(
            "the parent directory `{}` of --pgdata does not exist; create it first",
            parent.display()
        );
    }
    let staging_path = parent.join(format!(".{name}.pitr-staging-{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging_path)
        .with_context(|| {
            format!(
                "cannot create the staging directory `{}`",
                staging_path.display()
            )
        })?;
    let mut staging = StagingDir {
        path: staging_path.clone(),
        committed: false,
    };
    let mut notes = Vec::new();

    let backup = &plan.backup;
    let bytes_written = match backup.format {
        BackupFormat::Plain => {
            let mut progress = reporter.bar("staging", backup.stored_bytes, Unit::Bytes);
            let written = copy_tree(&backup.dir, &staging_path, Path::new(""), &mut progress)?;
            progress.finish();
            written
        }
        BackupFormat::Tar(compression) => {
            let base = backup.dir.join(format!("base.tar{}", compression.suffix()));
            let wal = Compression::ALL
                .iter()
                .map(|c| (backup.dir.join(format!("pg_wal.tar{}", c.suffix())), *c))
                .find(|(path, _)| path.is_file());
            let total = file_len(&base) + wal.as_ref().map(|(p, _)| file_len(p)).unwrap_or(0);
            let mut progress = reporter.bar("staging", total, Unit::Bytes);
            let mut written = extract_tar(&base, compression, &staging_path, &mut progress)?;
            if let Some((path, compression)) = wal {
                let pg_wal = staging_path.join("pg_wal");
                fs::create_dir_all(&pg_wal)
                    .with_context(|| format!("cannot create `{}`", pg_wal.display()))?;
                written += extract_tar(&path, compression, &pg_wal, &mut progress)?;
            }
            progress.finish();
            written
        }
    };

    prepare_data_directory(&staging_path, plan, settings, &mut notes)?;
    give_tree(&staging_path, user)?;
    fs::set_permissions(&staging_path, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of `{}`", staging_path.display()))?;
    if interrupt::requested() {
        bail!(Interrupted);
    }

    let moved_aside = match destination {
        Destination::Absent | Destination::Empty => None,
        Destination::Occupied => {
            let aside = parent.join(format!(
                "{name}.pitr-replaced-{}",
                chrono::Local::now().format("%Y%m%dT%H%M%S")
            ));
            fs::rename(pgdata, &aside).with_context(|| {
                format!(
                    "cannot move `{}` aside to `{}`",
                    pgdata.display(),
                    aside.display()
                )
            })?;
            Some(aside)
        }
    };
    // rename(2) replaces an empty directory atomically.
    fs::rename(&staging_path, pgdata).with_context(|| {
        format!(
            "cannot rename `{}` to `{}`",
            staging_path.display(),
            pgdata.display()
        )
    })?;
    staging.committed = true;
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(Staged {
        pgdata: pgdata.to_path_buf(),
        moved_aside,
        bytes_written,
        notes,
    })
}

/// The error used when Ctrl-C or SIGTERM arrives during staging.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted while staging; the staging directory was removed and nothing else was changed"
)]
pub struct Interrupted;

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Counts bytes read, for the progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if interrupt::requested() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, Interrupted));
        }
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Checks a tar member name and turns it into a relative path: no absolute
/// paths, no `..`, nothing that could land outside the staging directory.
pub fn safe_member_path(name: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing tar member `{}`: absolute path", name.display())
            }
            Component::ParentDir => {
                bail!("refusing tar member `{}`: it contains `..`", name.display())
            }
        }
    }
    Ok(clean)
}

/// Streams a (compressed) tar into `dest`, refusing hostile members.
fn extract_tar(
    path: &Path,
    compression: Compression,
    dest: &Path,
    progress: &mut Progress,
) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let counting = Counting {
        inner: file,
        progress,
    };
    let decoder = compression
        .decoder(counting)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut archive = tar::Archive::new(decoder);
    let mut written = 0;
    let entries = archive
        .entries()
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| interrupt_or(e, path))?;
        let raw = entry
            .path()
            .with_context(|| format!("`{}` has a member with an unreadable name", path.display()))?
            .into_owned();
        let relative =
            safe_member_path(&raw).with_context(|| format!("in `{}`", path.display()))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // pg_basebackup writes tablespace links as symlinks in
            // pg_tblspc/; the server recreates them from tablespace_map.
            if relative.starts_with("pg_tblspc") {
                continue;
            }
            bail!(
                "refusing tar member `{}` in `{}`: a symbolic link outside pg_tblspc/",
                raw.display(),
                path.display()
            );
        }
        if kind.is_hard_link() {
            let link = entry.link_name().ok().flatten().with_context(|| {
                format!("`{}` has a hard link without a target", path.display())
            })?;
            let source = dest.join(safe_member_path(&link).with_context(|| {
                format!("in `{}`: hard link `{}`", path.display(), raw.display())
            })?);
            fs::hard_link(&source, &target)
                .with_context(|| format!("cannot create hard link `{}`", target.display()))?;
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "refusing tar member `{}` in `{}`: not a file or directory",
                raw.display(),
                path.display()
            );
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        written += entry.header().size().unwrap_or(0);
        entry
            .unpack(&target)
            .map_err(|e| interrupt_or(e, &target))?;
    }
    Ok(written)
}

fn interrupt_or(error: io::Error, path: &Path) -> anyhow::Error {
    if interrupt::requested() {
        anyhow::Error::new(Interrupted)
    } else if error.raw_os_error() == Some(nix::libc::ENOSPC) {
        anyhow::anyhow!("out of disk space while writing `{}`", path.display())
    } else {
        anyhow::Error::new(error).context(format!("cannot extract `{}`", path.display()))
    }
}

/// Copies a plain-format backup. A symlinked `pg_wal` is copied as a real
/// directory; tablespace links are refused for now.
fn copy_tree(source: &Path, dest: &Path, relative: &Path, progress: &mut Progress) -> Result<u64> {
    let mut written = 0;
    let dir = source.join(relative);
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read `{}`", dir.display()))?;
    for entry in entries {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        let entry = entry.with_context(|| format!("cannot read `{}`", dir.display()))?;
        let rel = relative.join(entry.file_name());
        let from = source.join(&rel);
        let to = dest.join(&rel);
        let metadata = fs::symlink_metadata(&from)
            .with_context(|| format!("cannot read `{}`", from.display()))?;
        let metadata = if metadata.file_type().is_symlink() {
            if rel == Path::new("pg_wal") {
                fs::metadata(&from)
                    .with_context(|| format!("cannot follow `{}`", from.display()))?
            } else {
                bail!(
                    "`{}` is a symbolic link; tablespaces and linked directories in plain backups are not supported yet",
                    from.display()
                );
            }
        } else {
            metadata
        };
        if metadata.is_dir() {
            fs::DirBuilder::new()
                .mode(metadata.permissions().mode() & 0o7777)
                .create(&to)
                .with_context(|| format!("cannot create `{}`", to.display()))?;
            written += copy_tree(source, dest, &rel, progress)?;
        } else if metadata.is_file() {
            let copied = fs::copy(&from, &to).map_err(|e| interrupt_or(e, &to))?;
            written += copied;
            progress.add(copied);
        }
    }
    Ok(written)
}

/// Makes the extracted backup ready to start in recovery.
fn prepare_data_directory(
    dir: &Path,
    plan: &Plan,
    settings: &RecoverySettings,
    notes: &mut Vec<String>,
) -> Result<()> {
    if !dir.join("backup_label").is_file() {
        bail!(
            "backup `{}` extracted without a backup_label; it is not a pg_basebackup backup",
            plan.backup.id
        );
    }
    for dir_name in ["pg_wal", "pg_wal/archive_status"] {
        let path = dir.join(dir_name);
        if !path.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("cannot create `{}`", path.display()))?;
        }
    }
    // A backup made with `pg_basebackup -R` would start as a standby.
    for signal in ["standby.signal", "recovery.signal"] {
        let path = dir.join(signal);
        if path.exists() {
            fs::remove_file(&path)
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
            if signal == "standby.signal" {
                notes.push("removed standby.signal (the backup was made with -R)".to_string());
            }
        }
    }
    // The log of an earlier restore, carried by a backup of a restored
    // cluster: the new restore starts its own.
    let old_log = dir.join(crate::postgres::server::LOG_FILE_NAME);
    if old_log.exists() {
        fs::remove_file(&old_log)
            .with_context(|| format!("cannot remove `{}`", old_log.display()))?;
    }
    // Debian keeps postgresql.conf and pg_hba.conf in /etc, outside the
    // data directory, so backups of such clusters have none.
    let conf = dir.join("postgresql.conf");
    if !conf.exists() {
        write_file(
            &conf,
            b"# written by pitr: the backup had no postgresql.conf\n",
        )?;
        notes.push(
            "the backup has no postgresql.conf (as on Debian); an empty one was written"
                .to_string(),
        );
    }
    let hba = dir.join("pg_hba.conf");
    if !hba.exists() {
        write_file(
            &hba,
            b"# written by pitr: the backup had no pg_hba.conf\nlocal all all peer\n",
        )?;
        notes.push(
            "the backup has no pg_hba.conf; one allowing local peer connections was written"
                .to_string(),
        );
    }
    let ident = dir.join("pg_ident.conf");
    if !ident.exists() {
        write_file(&ident, b"")?;
    }
    let auto = dir.join("postgresql.auto.conf");
    let header = format!(
        "Added by pitr restore at {}: backup {}, target {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S %:z"),
        plan.backup.id,
        plan.target.describe(&jiff::tz::TimeZone::system())
    );
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .with_context(|| format!("cannot open `{}`", auto.display()))?;
    file.write_all(settings.render(&header).as_bytes())
        .with_context(|| format!("cannot write `{}`", auto.display()))?;
    write_file(&dir.join("recovery.signal"), b"")?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).map_err(|e| interrupt_or(e, path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}

/// Gives every entry of the tree to the server's OS user (when root).
fn give_tree(dir: &Path, user: &OsUser) -> Result<()> {
    if !user.switch {
        return Ok(());
    }
    user.own(dir)?;
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read `{}`", dir.display()))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            give_tree(&path, user)?;
        } else {
            user.own(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        assert_eq!(
            safe_member_path(Path::new("./pg_wal/x")).unwrap(),
            PathBuf::from("pg_wal/x")
        );
        assert_eq!(
            safe_member_path(Path::new("base/1/123")).unwrap(),
            PathBuf::from("base/1/123")
        );
        assert!(safe_member_path(Path::new("/etc/passwd")).is_err());
        assert!(safe_member_path(Path::new("../../x")).is_err());
        assert!(safe_member_path(Path::new("base/../../x")).is_err());
    }

    #[test]
    fn occupied_destination_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("data");
        fs::create_dir(&pgdata).unwrap();
        assert_eq!(
            inspect_destination(&pgdata, false).unwrap(),
            Destination::Empty
        );
        fs::write(pgdata.join("keep"), b"x").unwrap();
        let error = inspect_destination(&pgdata, false).unwrap_err();
        assert!(format!("{error:#}").contains("is not empty"));
        assert_eq!(fs::read(pgdata.join("keep")).unwrap(), b"x");
        assert_eq!(
            inspect_destination(&pgdata, true).unwrap(),
            Destination::Occupied
        );
        assert_eq!(
            inspect_destination(&dir.path().join("new"), false).unwrap(),
            Destination::Absent
        );
    }
}
