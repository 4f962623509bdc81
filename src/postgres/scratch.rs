//! A scratch copy for a drill: a fresh directory the restore writes into,
//! queries and `pg_amcheck` run against the server there, and the removal
//! of it all afterwards (the server stopped first, so its port is free).
//!
//! The directory is always new (a temporary directory, or a new
//! subdirectory of `--scratch DIR`), so a drill never deletes anything it
//! did not create.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use super::binaries::Binaries;
use super::cluster::running_postmaster;
use super::server::{Server, LOG_FILE_NAME};
use crate::os_user::OsUser;

/// The name of the kept server log of a failed drill, in the scratch
/// directory.
pub const KEPT_LOG_NAME: &str = "server.log";

/// The scratch directory of one drill.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Creates `pitr-drill-<time>-<pid>` in `under` (`--scratch`), else in
    /// the system's temporary directory, mode 0700 and owned by the
    /// server's OS user (PostgreSQL must write there).
    pub fn create(under: Option<&Path>, user: &OsUser) -> Result<Scratch> {
        let parent = match under {
            Some(dir) => {
                if !dir.is_dir() {
                    bail!(
                        "the scratch directory `{}` does not exist: create it, or leave --scratch out to use a temporary directory",
                        dir.display()
                    );
                }
                dir.to_path_buf()
            }
            None => std::env::temp_dir(),
        };
        let name = format!(
            "pitr-drill-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        let root = parent.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("cannot create the scratch directory `{}`", root.display()))?;
        user.own(&root)?;
        Ok(Scratch { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the restore writes the copy.
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Moves the copy's server log out of the data directory to
    /// `<scratch>/server.log`, which stays when the copy is removed, and
    /// returns its path and contents; `None` when the restore got no
    /// server started.
    pub fn keep_server_log(&self) -> Option<(PathBuf, Vec<u8>)> {
        let log = self.pgdata().join(LOG_FILE_NAME);
        let kept = self.root.join(KEPT_LOG_NAME);
        fs::rename(&log, &kept).ok()?;
        let bytes = fs::read(&kept).ok()?;
        Some((kept, bytes))
    }

    /// Stops a server still running in the copy, then deletes the copy.
    /// With `keep_root`, the scratch directory itself stays (with the kept
    /// server log); otherwise it is removed too.
    pub fn remove(self, binaries: Option<&Binaries>, user: &OsUser, keep_root: bool) -> Result<()> {
        stop_copy(&self.pgdata(), binaries, user)?;
        if keep_root {
            // Everything but the kept log: the copy, a staging or spool
            // directory a failed restore left.
            for entry in fs::read_dir(&self.root)
                .with_context(|| format!("cannot read `{}`", self.root.display()))?
                .flatten()
            {
                if entry.file_name() == KEPT_LOG_NAME {
                    continue;
                }
                remove_any(&entry.path())?;
            }
            return Ok(());
        }
        remove_any(&self.root)
    }

    /// Leaves the copy where it is, its server stopped (`--keep`).
    pub fn keep(self, binaries: Option<&Binaries>, user: &OsUser) -> Result<PathBuf> {
        stop_copy(&self.pgdata(), binaries, user)?;
        Ok(self.root)
    }
}

fn remove_any(path: &Path) -> Result<()> {
    let result = if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.with_context(|| format!("cannot remove `{}`", path.display()))
}

/// Stops the server of the copy when one runs there, waiting until its
/// process is gone (and with it its port and socket).
fn stop_copy(pgdata: &Path, binaries: Option<&Binaries>, user: &OsUser) -> Result<()> {
    if running_postmaster(pgdata).is_none() {
        return Ok(());
    }
    let binaries = match binaries {
        Some(binaries) => binaries.clone(),
        None => Binaries::find(None, super::cluster::data_directory_version(pgdata)?)?,
    };
    Server::new(pgdata, binaries, user.clone()).stop_fast()
}

/// Where the copy's server listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// Runs one query with psql as `user` against the copy; its output (rows
/// on lines, columns separated by `|`), or psql's error.
pub fn query(
    binaries: &Binaries,
    endpoint: &Endpoint,
    user: &OsUser,
    dbname: &str,
    sql: &str,
) -> std::result::Result<String, String> {
    let output = user
        .command(&binaries.program("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(&endpoint.socket_dir)
        .args(["-p", &endpoint.port.to_string(), "-d", dbname, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// What `pg_amcheck` found.
#[derive(Clone, Debug)]
pub enum Amcheck {
    /// `pg_amcheck` is not among the server's programs.
    NotInstalled(PathBuf),
    Clean,
    /// Corruption or an error: its report.
    Failed(String),
}

/// Runs `pg_amcheck` on every database of the copy (installing the amcheck
/// extension where missing: the copy is scratch), tables and B-tree
/// indexes, including that every heap tuple has its index entries.
pub fn amcheck(binaries: &Binaries, endpoint: &Endpoint, user: &OsUser) -> Amcheck {
    let program = binaries.program("pg_amcheck");
    if !program.is_file() {
        return Amcheck::NotInstalled(program);
    }
    let output = user
        .command(&program)
        .args(["--all", "--install-missing", "--heapallindexed"])
        .arg("-h")
        .arg(&endpoint.socket_dir)
        .args(["-p", &endpoint.port.to_string()])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output();
    match output {
        Err(error) => Amcheck::Failed(format!("cannot run `{}`: {error}", program.display())),
        Ok(output) if output.status.success() => Amcheck::Clean,
        Ok(output) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            Amcheck::Failed(format!(
                "pg_amcheck exited with {}: {}",
                output.status,
                lines
                    .iter()
                    .take(20)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" / ")
            ))
        }
    }
}

/// Reads a `--check-file`.
pub fn read_check_file(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .with_context(|| format!("cannot read the check file `{}`", path.display()))
}
