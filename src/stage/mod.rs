//! Materialising a plan into a data directory.
//!
//! Everything is written into a hidden sibling of `--pgdata` and renamed
//! into place only when complete, so an interrupted or failed restore never
//! leaves a half-written data directory, and an existing directory is never
//! touched unless `--force` (which moves it aside, never deletes it).
//!
//! [`stage`] is the list of steps, in the manner of pgBackRest's
//! `command/restore/`; each step that is real work has its own file:
//! `destination` (the staging directory), `extract` (the backup's files,
//! read through the backups store; `tree`, `readahead`, `tar_stream`,
//! `write` and `combine` are its mechanics), `tablespaces`, the configuration
//! (`postgres::configure`), `ownership`, `durable` and `commit`.

// Staging writes a new data directory beside `--pgdata`: local by nature,
// so this module and its children use the file system directly
// (clippy.toml refuses it elsewhere). The backup itself is read through
// the backups store only.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::interrupt;
use crate::os_user::OsUser;
use crate::plan::Plan;
use crate::postgres::configure::prepare_data_directory;
use crate::postgres::settings::{Durability, RecoverySettings};
use crate::progress::Reporter;
use crate::repo::manifest_check::ManifestCheck;
use crate::repo::store::StoreRead;

pub mod combine;
mod commit;
pub mod delta;
pub mod destination;
mod durable;
pub mod extract;
pub mod member;
mod ownership;
pub mod parallel;
pub mod prefetch;
mod readahead;
pub mod sparse;
pub mod tablespaces;
mod tar_stream;
mod tree;
mod write;
/// The one write buffer staging reuses (the tar fuzz target builds one too).
pub use write::FileWriter;

use destination::StagingDir;
pub use destination::{inspect_destination, work_dir_beside, Destination};
pub use extract::safe_member_path;
use write::Verify;

/// The result of staging.
#[derive(Clone, Debug)]
pub struct Staged {
    pub pgdata: PathBuf,
    /// Where a non-empty `--pgdata` was moved (with `--force`).
    pub moved_aside: Option<PathBuf>,
    pub bytes_written: u64,
    /// Relation files of other databases written sparse (size only), and
    /// their bytes.
    pub sparse_files: u64,
    pub sparse_bytes: u64,
    pub notes: Vec<String>,
    /// What a delta restore kept, rewrote and removed.
    pub delta: Option<delta::DeltaStats>,
}

/// Everything staging needs, decided before anything is written.
pub struct StageRequest<'a> {
    /// Where the plan's backup is read from: its objects, by key.
    pub backups: &'a dyn StoreRead,
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
    /// Workers that stage a seekable backup's tars.
    pub workers: usize,
    /// Databases (OIDs) whose relation files are written as sparse files
    /// of their size, not extracted ([`sparse`]); empty for a whole
    /// restore.
    pub sparse_databases: &'a [u32],
}

/// Removes a data directory a restore has just staged where nothing was
/// before (`Destination::Absent`, no tablespaces), to stage it again.
pub fn remove_new_data_directory(pgdata: &Path) -> Result<()> {
    std::fs::remove_dir_all(pgdata)
        .with_context(|| format!("cannot remove `{}` to stage it again", pgdata.display()))
}

/// Extracts the backup, writes the recovery settings, gives everything to
/// the server's OS user and renames the result into place.
pub fn stage(request: &StageRequest<'_>, reporter: &Reporter) -> Result<Staged> {
    let mut notes = Vec::new();
    let staging = StagingDir::create(request.pgdata)?;
    let mut check = manifest_check(request, &mut notes)?;
    let mut writer = FileWriter::with_sparse(sparse::SparseDatabases::new(
        request.sparse_databases.iter().copied(),
    ));
    let mut base_verify = check.as_mut().map(|check| Verify {
        check,
        prefix: String::new(),
    });
    let mut bytes_written = extract::extract_backup(
        request,
        staging.path(),
        base_verify.as_mut(),
        &mut writer,
        reporter,
    )?;
    let (mut staged_tablespaces, tablespace_bytes) = tablespaces::stage_tablespaces(
        request,
        staging.path(),
        check.as_mut(),
        &mut writer,
        reporter,
    )?;
    bytes_written += tablespace_bytes;
    refuse_missing_files(check.as_ref())?;
    prepare_data_directory(staging.path(), request.plan, request.settings, &mut notes)?;
    ownership::give_data_directory(staging.path(), request.user)?;
    if interrupt::requested() {
        bail!(Interrupted);
    }
    // A scratch copy is not flushed: it is never used after a crash
    // (`Durability::Throwaway`), and syncfs would also wait for whatever
    // else is dirty on the filesystem.
    if request.settings.durability == Durability::Durable {
        durable::make_durable(staging.path(), &staged_tablespaces, reporter)?;
    }
    let moved_aside = commit::commit(
        staging,
        &mut staged_tablespaces,
        request.destination,
        &mut notes,
    )?;
    Ok(Staged {
        pgdata: request.pgdata.to_path_buf(),
        moved_aside,
        bytes_written,
        sparse_files: writer.sparse.files,
        sparse_bytes: writer.sparse.bytes,
        notes,
        delta: None,
    })
}

/// The backup's `backup_manifest`, as read when it was scanned, once its
/// own SHA-256 is known to hold: files are checked against it as they are
/// written. None when not verifying, when there is no manifest (a note
/// says so), or for a chain pg_combinebackup checks itself.
fn manifest_check(
    request: &StageRequest<'_>,
    notes: &mut Vec<String>,
) -> Result<Option<ManifestCheck>> {
    let backup = &request.plan.backup;
    if request.verify && !backup.has_manifest {
        notes.push(format!(
            "backup `{}` has no backup_manifest: its files cannot be verified",
            backup.id
        ));
    }
    if !request.verify || !backup.has_manifest || request.combine.is_some() {
        return Ok(None);
    }
    let described = request.backups.describe(&backup.manifest_file().key);
    let Some(kept) = backup.manifest() else {
        bail!("cannot read `{described}`");
    };
    if let Some(damage) = &kept.damage {
        bail!("`{described}` is damaged: {damage}");
    }
    Ok(Some(ManifestCheck::new(&kept.parsed)))
}

/// Every file the manifest lists must have been written.
fn refuse_missing_files(check: Option<&ManifestCheck>) -> Result<()> {
    let Some(check) = check else {
        return Ok(());
    };
    let missing = check.missing();
    if let Some(first) = missing.first() {
        bail!(
            "the backup does not match its manifest: {} file(s) listed in backup_manifest are missing from it, the first `{first}`",
            missing.len()
        );
    }
    Ok(())
}

/// The error used when Ctrl-C or SIGTERM arrives during staging.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted while staging; the staging directory was removed and nothing else was changed"
)]
pub struct Interrupted;

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
}

#[cfg(test)]
mod store_tests;
