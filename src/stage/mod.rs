//! Materialising a plan into a data directory.
//!
//! Everything is written into a hidden sibling of `--pgdata` and renamed
//! into place only when complete, so an interrupted or failed restore never
//! leaves a half-written data directory, and an existing directory is never
//! touched unless `--force` (which moves it aside, never deletes it).

// Staging writes a new data directory beside `--pgdata`: local by nature,
// so this module and its children use the file system directly
// (clippy.toml refuses it elsewhere).
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::interrupt;
use crate::os_user::OsUser;
use crate::plan::Plan;
use crate::postgres::settings::RecoverySettings;
use crate::progress::{Reporter, Unit};
use crate::repo::backup::BackupFormat;

pub mod combine;
pub mod destination;
mod durable;
pub mod extract;
pub mod prefetch;
mod readahead;
pub mod tablespaces;

use crate::repo::manifest_check::ManifestCheck;
use durable::sync_filesystem;
pub use extract::safe_member_path;
use extract::{copy_tree, extract_tar, interrupt_or, FileWriter, Verify};

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
/// Everything staging needs, decided before anything is written.
pub struct StageRequest<'a> {
    pub plan: &'a Plan,
    pub pgdata: &'a Path,
    pub destination: &'a Destination,
    pub placements: &'a [tablespaces::Placement],
    pub user: &'a OsUser,
    pub settings: &'a RecoverySettings,
    /// Check files against backup_manifest while writing them.
    pub verify: bool,
    /// An incremental backup's chain, rebuilt with pg_combinebackup.
    pub combine: Option<&'a combine::Combine>,
}

pub fn stage(request: &StageRequest<'_>, reporter: &Reporter) -> Result<Staged> {
    let StageRequest {
        plan,
        pgdata,
        destination,
        placements,
        user,
        settings,
        verify,
        combine,
    } = *request;
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
    let staging_path = work_dir_beside(parent, &name, "staging");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging_path)
        .with_context(|| {
            format!(
                "cannot create a directory in `{}`, which holds --pgdata ({})",
                parent.display(),
                crate::access::who_may(parent)
            )
        })?;
    let mut staging = StagingDir {
        path: staging_path.clone(),
        committed: false,
    };
    let mut notes = Vec::new();

    let backup = &plan.backup;
    // pg_combinebackup checks the chain's manifests itself.
    let mut check = if verify && backup.has_manifest && combine.is_none() {
        Some(load_manifest_check(backup)?)
    } else {
        None
    };
    if verify && !backup.has_manifest {
        notes.push(format!(
            "backup `{}` has no backup_manifest: its files cannot be verified",
            backup.id
        ));
    }
    let mut writer = FileWriter::default();
    let mut base_verify = check.as_mut().map(|check| Verify {
        check,
        prefix: String::new(),
    });
    let bytes_written = match backup.format {
        // An incremental backup: pg_combinebackup rebuilds the data directory.
        _ if combine.is_some() => {
            if let Some(combine) = combine {
                reporter.step(format!(
                    "combining the chain of {} backups with pg_combinebackup",
                    combine.chain.len()
                ));
                combine::combine(combine, &staging_path, user)?;
            }
            tree_len(&staging_path)
        }
        BackupFormat::Plain => {
            let mut progress = reporter.bar("staging", backup.stored_bytes, Unit::Bytes);
            let written = copy_tree(
                &backup.dir,
                &staging_path,
                Path::new(""),
                &mut progress,
                &mut base_verify.as_mut(),
                &mut writer,
            )?;
            progress.finish();
            written
        }
        BackupFormat::Tar(compression) => {
            let base = backup.base_tar().map(|file| file.path).unwrap_or_default();
            let wal = backup.wal_tar().map(|file| (file.path, file.compression));
            let total = file_len(&base) + wal.as_ref().map(|(p, _)| file_len(p)).unwrap_or(0);
            let mut progress = reporter.bar("staging", total, Unit::Bytes);
            let mut written = extract_tar(
                &base,
                compression,
                &staging_path,
                &mut progress,
                base_verify.as_mut(),
                &mut writer,
            )?;
            if let Some((path, compression)) = wal {
                let pg_wal = staging_path.join("pg_wal");
                fs::create_dir_all(&pg_wal)
                    .with_context(|| format!("cannot create `{}`", pg_wal.display()))?;
                written += extract_tar(
                    &path,
                    compression,
                    &pg_wal,
                    &mut progress,
                    None,
                    &mut writer,
                )?;
            }
            progress.finish();
            written
        }
    };

    let mut staged_tablespaces = Vec::new();
    let mut bytes_written = bytes_written;
    if !placements.is_empty() {
        let total = placements.iter().map(|p| source_len(&p.source)).sum();
        let mut progress = reporter.bar("tblspc", total, Unit::Bytes);
        for placement in placements {
            let (staged, written) = tablespaces::stage_tablespace(
                placement,
                user,
                &mut progress,
                check.as_mut(),
                &mut writer,
            )?;
            staged_tablespaces.push(staged);
            bytes_written += written;
        }
        progress.finish();
        let map: Vec<(u32, PathBuf)> = placements
            .iter()
            .map(|p| (p.oid, p.destination.clone()))
            .collect();
        write_file(
            &staging_path.join("tablespace_map"),
            crate::repo::tablespace::render_tablespace_map(&map).as_bytes(),
        )?;
    }

    if let Some(check) = &check {
        let missing = check.missing();
        if let Some(first) = missing.first() {
            bail!(
                "the backup does not match its manifest: {} file(s) listed in backup_manifest are missing from it, the first `{first}`",
                missing.len()
            );
        }
    }

    prepare_data_directory(&staging_path, plan, settings, &mut notes)?;
    give_tree(&staging_path, user)?;
    fs::set_permissions(&staging_path, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of `{}`", staging_path.display()))?;
    if interrupt::requested() {
        bail!(Interrupted);
    }
    // Durable before it is renamed into place: a directory at --pgdata is
    // always complete, even after a crash (see `durable`).
    let syncing = std::time::Instant::now();
    sync_filesystem(&staging_path)?;
    for staged in &staged_tablespaces {
        staged.sync()?;
    }
    reporter.detail(format!(
        "flushed to disk in {:.1}s",
        syncing.elapsed().as_secs_f64()
    ));

    let moved_aside = match destination {
        Destination::Absent | Destination::Empty => None,
        Destination::Occupied => {
            // Checked before staging too; a server may have been started
            // there since (staging takes a while).
            if let Some(server) = crate::postgres::live::server_in_or_around(pgdata, 2) {
                bail!(
                    "`{}` is in use now: {}; it was not moved aside",
                    pgdata.display(),
                    server.describe()
                );
            }
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
    for staged in &mut staged_tablespaces {
        if let Some(aside) = staged.commit()? {
            notes.push(format!(
                "the stopped primary's tablespace was moved aside to `{}`",
                aside.display()
            ));
        }
    }
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

/// `.<name>.pitr-<purpose>-<pid>` in `parent`: where this restore puts
/// what is not finished yet (the staged data directory or tablespace, the
/// WAL spool), hidden, on the same filesystem as its destination so that a
/// rename moves it, and told apart from another restore's by the PID.
pub fn work_dir_beside(parent: &Path, name: &str, purpose: &str) -> PathBuf {
    parent.join(format!(".{name}.pitr-{purpose}-{}", std::process::id()))
}

/// The backup's `backup_manifest`, as read when it was scanned, once its
/// own SHA-256 is known to hold.
fn load_manifest_check(backup: &crate::repo::backup::Backup) -> Result<ManifestCheck> {
    let path = backup.manifest_file().path;
    let Some(kept) = backup.manifest() else {
        bail!("cannot read `{}`", path.display());
    };
    if let Some(damage) = &kept.damage {
        bail!("`{}` is damaged: {damage}", path.display());
    }
    Ok(ManifestCheck::new(&kept.parsed))
}

/// The error used when Ctrl-C or SIGTERM arrives during staging.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted while staging; the staging directory was removed and nothing else was changed"
)]
pub struct Interrupted;

fn source_len(source: &crate::repo::tablespace::TablespaceSource) -> u64 {
    match source {
        crate::repo::tablespace::TablespaceSource::Tar { path, .. } => file_len(path),
        crate::repo::tablespace::TablespaceSource::Directory(dir) => tree_len(dir),
    }
}

fn tree_len(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_len(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
pub(crate) fn give_tree(dir: &Path, user: &OsUser) -> Result<()> {
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
