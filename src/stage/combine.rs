//! Staging an incremental backup (PostgreSQL 17+): `pg_combinebackup`
//! rebuilds the full data directory from the chain (full backup first)
//! straight into the staging directory, which then gets the recovery
//! settings like any extracted backup.
//!
//! pg_combinebackup reads its input as local directories: work that is
//! local by nature. Where the backups store is a directory they are used
//! in place (`local_dir`); otherwise each backup of the chain is first
//! downloaded through the store into a hidden temporary directory beside
//! the staging area (same file system as the result, removed when
//! combining ends, whatever the outcome).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::tree::{copy_tree, TreeSource};
use super::write::FileWriter;
use crate::os_user::OsUser;
use crate::postgres::binaries::Binaries;
use crate::progress::{Reporter, Unit};
use crate::repo::backup::Backup;
use crate::repo::store::StoreRead;

/// What combining needs: the chain's backups and the programs of the
/// backup's major (pg_combinebackup of another major refuses the backups).
#[derive(Clone, Debug)]
pub struct Combine {
    /// Oldest (the full backup) first.
    pub chain: Vec<Backup>,
    pub binaries: Binaries,
}

/// Runs `pg_combinebackup -o <output> <chain...>` as the server's OS user
/// (the result must belong to it, and as root the server's user is who
/// PostgreSQL's own tools run as). `output` must exist and be empty.
pub fn combine(
    store: &dyn StoreRead,
    combine: &Combine,
    output: &Path,
    user: &OsUser,
    reporter: &Reporter,
) -> Result<()> {
    let program = combine.binaries.program("pg_combinebackup");
    if !program.is_file() {
        bail!(
            "`{}` does not exist: combining an incremental backup needs pg_combinebackup of PostgreSQL {}",
            program.display(),
            combine.binaries.major_version
        );
    }
    let input = local_input(store, &combine.chain, output, user, reporter)?;
    if user.switch {
        user.own(output)?;
    }
    // --no-sync: the server flushes the whole data directory when it starts
    // recovery (recovery_init_sync_method), so syncing here would do it twice.
    let result = user
        .command(&program)
        .arg("--no-sync")
        .arg("-o")
        .arg(output)
        .args(&input.dirs)
        .output()
        .with_context(|| format!("cannot run `{}`", program.display()))?;
    if !result.status.success() {
        bail!(
            "pg_combinebackup failed ({}), run as OS user `{}` over {}: {}",
            result.status,
            user.name,
            input
                .dirs
                .iter()
                .map(|dir| format!("`{}`", dir.display()))
                .collect::<Vec<_>>()
                .join(", "),
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(())
}

/// The chain as local directories, and the temporary directory holding
/// the downloaded ones (removed when dropped).
struct LocalInput {
    dirs: Vec<PathBuf>,
    _downloaded: Option<tempfile::TempDir>,
}

fn local_input(
    store: &dyn StoreRead,
    chain: &[Backup],
    output: &Path,
    user: &OsUser,
    reporter: &Reporter,
) -> Result<LocalInput> {
    let local: Option<Vec<PathBuf>> = chain
        .iter()
        .map(|backup| store.local_dir(&backup.prefix()))
        .collect();
    if let Some(dirs) = local {
        return Ok(LocalInput {
            dirs,
            _downloaded: None,
        });
    }
    let beside = output.parent().unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".pitr-combine-input-")
        .tempdir_in(beside)
        .with_context(|| format!("cannot create a directory in `{}`", beside.display()))?;
    let total = chain.iter().map(|backup| backup.stored_bytes).sum();
    let mut progress = reporter.bar("download", total, Unit::Bytes);
    let mut writer = FileWriter::default();
    let mut dirs = Vec::new();
    for backup in chain {
        let dir = temp.path().join(&backup.id);
        std::fs::create_dir(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        copy_tree(
            TreeSource {
                store,
                prefix: &backup.prefix(),
            },
            &dir,
            &mut progress,
            &mut None,
            &mut writer,
        )?;
        dirs.push(dir);
    }
    progress.finish();
    // pg_combinebackup runs as the server's user and must read them.
    super::ownership::give_tree(temp.path(), user)?;
    Ok(LocalInput {
        dirs,
        _downloaded: Some(temp),
    })
}
