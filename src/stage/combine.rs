//! Staging an incremental backup (PostgreSQL 17+): `pg_combinebackup`
//! rebuilds the full data directory from the chain (full backup first)
//! straight into the staging directory, which then gets the recovery
//! settings like any extracted backup.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::os_user::OsUser;
use crate::postgres::binaries::Binaries;

/// What combining needs: the chain's directories and the programs of the
/// backup's major (pg_combinebackup of another major refuses the backups).
#[derive(Clone, Debug)]
pub struct Combine {
    /// Oldest (the full backup) first.
    pub chain: Vec<PathBuf>,
    pub binaries: Binaries,
}

/// Runs `pg_combinebackup -o <output> <chain...>` as the server's OS user
/// (the result must belong to it, and as root the server's user is who
/// PostgreSQL's own tools run as). `output` must exist and be empty.
pub fn combine(combine: &Combine, output: &Path, user: &OsUser) -> Result<()> {
    let program = combine.binaries.program("pg_combinebackup");
    if !program.is_file() {
        bail!(
            "`{}` does not exist: combining an incremental backup needs pg_combinebackup of PostgreSQL {}",
            program.display(),
            combine.binaries.major_version
        );
    }
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
        .args(&combine.chain)
        .output()
        .with_context(|| format!("cannot run `{}`", program.display()))?;
    if !result.status.success() {
        bail!(
            "pg_combinebackup failed ({}), run as OS user `{}` over {}: {}",
            result.status,
            user.name,
            combine
                .chain
                .iter()
                .map(|dir| format!("`{}`", dir.display()))
                .collect::<Vec<_>>()
                .join(", "),
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(())
}
