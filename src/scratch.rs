//! A scratch copy: a cluster restored by `pitr restore` itself into a new
//! temporary directory (or a new directory inside `--scratch DIR`), on a
//! free port with archiving off, queried and dumped as the server's OS
//! user, and stopped by its PID and removed when dropped unless kept.
//!
//! The restore runs as a child process with `--json`: the copy is made by
//! exactly the command a DBA would run, and only its documented report and
//! exit status are read (the report is the contract). Commands that need a
//! point-in-time copy (`extract`, `drill`) share this module.
//!
//! The directory is always new, so dropping a copy never deletes anything
//! pitr did not create. Its files are handled through `tempfile` (which
//! removes the directory) and the server through its PID: this module does
//! not touch the file system itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::os_user::OsUser;
use crate::postgres::binaries::Binaries;
use crate::postgres::cluster::running_postmaster;
use crate::postgres::server::Server;
use crate::progress::Reporter;
use crate::repo::RepoLocation;

/// `pitr restore` ended with an error: its exit status says which kind
/// (the README's table), its last lines what and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RestoreFailed {
    pub exit_code: Option<i32>,
    pub message: String,
    /// Where the copy was left, with its server log, when recovery itself
    /// failed (the evidence of why; stopped by the restore).
    pub kept: Option<PathBuf>,
}

/// `pitr restore`'s exit status when PostgreSQL did not reach the target
/// (its data directory and log are what tells why).
const RECOVERY_FAILED: i32 = 5;

/// What to restore the copy to: the arguments `pitr restore` takes.
#[derive(Clone, Debug)]
pub struct CopyRequest<'a> {
    pub location: &'a RepoLocation,
    /// `--to` as the restore takes it (any target form).
    pub target: String,
    pub exclusive: bool,
    pub backup: Option<String>,
    pub timeline: String,
    /// `--scratch DIR`: where the copy's directory is made (default: the
    /// system's temporary directory).
    pub under: Option<&'a Path>,
    pub bin_dir: Option<&'a Path>,
    pub os_user: &'a str,
    /// Prefix of the copy's directory name (`pitr-extract-`).
    pub prefix: &'a str,
}

/// Where the copy's server listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// A restored, running copy. Dropping it stops the server and removes the
/// directory, unless [`ScratchCopy::keep`] was called.
#[derive(Debug)]
pub struct ScratchCopy {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub pgdata: PathBuf,
    pub endpoint: Endpoint,
    pub binaries: Binaries,
    pub user: OsUser,
    /// `pitr restore --json`'s report.
    pub report: Value,
    /// How long the restore took.
    pub elapsed: Duration,
    keep: bool,
}

impl ScratchCopy {
    /// Restores a copy (see the module's comment). The restore's own
    /// progress lines are shown on stderr, indented, unless quiet.
    pub fn restore(request: &CopyRequest, reporter: &Reporter) -> Result<ScratchCopy> {
        let started = Instant::now();
        let user = OsUser::for_server(request.os_user)?;
        let parent = match request.under {
            Some(dir) => dir.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix(request.prefix)
            .tempdir_in(&parent)
            .with_context(|| {
                format!(
                    "cannot create a scratch directory in `{}`: pass --scratch DIR with an existing directory that has room for a copy of the cluster",
                    parent.display()
                )
            })?;
        let root = dir.path().to_path_buf();
        user.own(&root)?;
        let pgdata = root.join("data");
        let mut copy = ScratchCopy {
            dir: Some(dir),
            root,
            pgdata,
            endpoint: Endpoint {
                socket_dir: PathBuf::new(),
                port: 0,
            },
            binaries: Binaries {
                dir: PathBuf::new(),
                major_version: 0,
            },
            user,
            report: Value::Null,
            elapsed: Duration::ZERO,
            keep: false,
        };
        let report = match run_restore(request, &copy.pgdata, reporter) {
            Ok(report) => report,
            Err(mut failed) => {
                if failed.exit_code == Some(RECOVERY_FAILED) {
                    copy.keep = true;
                    failed.kept = Some(copy.root.clone());
                }
                return Err(failed.into());
            }
        };
        copy.endpoint = Endpoint {
            socket_dir: report["socket_dir"]
                .as_str()
                .map(PathBuf::from)
                .context("pitr restore's report names no socket_dir")?,
            port: report["port"]
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .context("pitr restore's report names no port")?,
        };
        copy.binaries = Binaries {
            dir: report["server"]["bin_dir"]
                .as_str()
                .map(PathBuf::from)
                .context("pitr restore's report names no server bin_dir")?,
            major_version: report["server"]["major_version"]
                .as_u64()
                .and_then(|major| u32::try_from(major).ok())
                .context("pitr restore's report names no server major_version")?,
        };
        copy.report = report;
        copy.elapsed = started.elapsed();
        Ok(copy)
    }

    /// The directory holding the copy (`data/` inside it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A program of the copy's major version, run as the server's OS user
    /// and pointed at the copy (`PGHOST`, `PGPORT`; libpq's other `PG*`
    /// variables are cleared so that they cannot send it elsewhere).
    pub fn program(&self, name: &str) -> Command {
        let mut command = self.user.command(&self.binaries.program(name));
        for variable in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGUSER"] {
            command.env_remove(variable);
        }
        command
            .env("PGHOST", &self.endpoint.socket_dir)
            .env("PGPORT", self.endpoint.port.to_string())
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }

    /// Runs SQL in `database` of the copy; psql's unaligned output (rows on
    /// lines, columns separated by `|`).
    pub fn sql(&self, database: &str, sql: &str) -> Result<String> {
        let output = self
            .program("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(database)
            .arg("-c")
            .arg(sql)
            .output()
            .context("cannot run psql against the scratch copy")?;
        if !output.status.success() {
            bail!(
                "{}",
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .trim_start_matches("psql:")
                    .trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Leaves the copy (stopped) in place when dropped; returns where.
    pub fn keep(&mut self) -> PathBuf {
        self.keep = true;
        self.root.clone()
    }

    /// Stops the server (fast shutdown, by its PID) and waits until its
    /// process, and with it its port and socket, is gone.
    pub fn stop(&self) -> Result<()> {
        let Some(postmaster) = running_postmaster(&self.pgdata) else {
            return Ok(());
        };
        let pid = Pid::from_raw(postmaster.pid);
        kill(pid, Signal::SIGINT)
            .with_context(|| format!("cannot stop the scratch copy's server (PID {pid})"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Server::is_running(pid) {
            if Instant::now() > deadline {
                bail!("the scratch copy's server (PID {pid}) did not stop within 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops and removes the copy now (or only stops it when kept),
    /// reporting what went wrong instead of ignoring it as a drop must.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        self.stop()?;
        let kept = self.keep.then(|| self.root.clone());
        if let Some(dir) = self.dir.take() {
            if self.keep {
                let _ = dir.keep();
            } else {
                dir.close().with_context(|| {
                    format!("cannot remove the scratch copy `{}`", self.root.display())
                })?;
            }
        }
        Ok(kept)
    }
}

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        // Nothing to report to from a drop: `finish` is the path that
        // reports; this one only makes sure no server outlives pitr.
        let _ = self.stop();
        if let Some(dir) = self.dir.take() {
            if self.keep {
                let _ = dir.keep();
            }
        }
    }
}

/// Runs `pitr restore --json` into `pgdata` and returns its report.
fn run_restore(
    request: &CopyRequest,
    pgdata: &Path,
    reporter: &Reporter,
) -> std::result::Result<Value, RestoreFailed> {
    let failed = |message: String| RestoreFailed {
        exit_code: None,
        message,
        kept: None,
    };
    let pitr = std::env::current_exe()
        .map_err(|error| failed(format!("cannot find the pitr executable: {error}")))?;
    let mut command = Command::new(pitr);
    command
        .args(["--json", "restore", "--backups"])
        .arg(&request.location.backups)
        .arg("--wal-archive")
        .arg(&request.location.wal_archive)
        .arg(format!("--to={}", request.target))
        .arg(format!("--timeline={}", request.timeline))
        .arg("--pgdata")
        .arg(pgdata)
        .args(["--os-user", request.os_user]);
    if request.exclusive {
        command.arg("--exclusive");
    }
    if let Some(backup) = &request.backup {
        command.args(["--backup", backup]);
    }
    if let Some(dir) = request.bin_dir {
        command.arg("--bin-dir").arg(dir);
    }
    if reporter.verbose {
        command.arg("--verbose");
    }
    command
        .env_remove("PITR_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    reporter.detail(format!("running {command:?}"));
    let mut child = command
        .spawn()
        .map_err(|error| failed(format!("cannot run pitr restore: {error}")))?;
    let stderr = child.stderr.take();
    let quiet = reporter.quiet;
    let forward = std::thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !quiet {
                    eprintln!("  restore: {line}");
                }
                lines.push(line);
            }
        }
        lines
    });
    let output = child
        .wait_with_output()
        .map_err(|error| failed(format!("cannot wait for pitr restore: {error}")))?;
    let lines = forward.join().unwrap_or_default();
    if !output.status.success() {
        // The restore's own error and hint are its last lines.
        let reason: Vec<&String> = lines
            .iter()
            .filter(|line| line.starts_with("pitr: error:") || line.starts_with("hint:"))
            .collect();
        return Err(RestoreFailed {
            kept: None,
            exit_code: output.status.code(),
            message: format!(
                "the restore of the scratch copy to `{}` failed ({}): {}",
                request.target,
                output
                    .status
                    .code()
                    .map_or("killed".to_string(), |code| format!("exit status {code}")),
                if reason.is_empty() {
                    lines.last().cloned().unwrap_or_default()
                } else {
                    reason
                        .iter()
                        .map(|line| line.trim_start_matches("pitr: error: ").to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            ),
        });
    }
    serde_json::from_slice::<Value>(&output.stdout).map_err(|error| {
        failed(format!(
            "pitr restore succeeded but its JSON report cannot be read: {error}"
        ))
    })
}
