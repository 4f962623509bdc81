//! A scratch copy: the cluster restored by `pitr restore` itself into a new
//! directory (in the system's temporary directory, or inside `--scratch
//! DIR`), on a free port with archiving off, as the server's OS user; SQL
//! and the server's programs run against it; its server stopped by PID and
//! the directory removed afterwards unless kept; its server log kept when
//! the work on it failed. `pitr drill` and `pitr extract` share it.
//!
//! The restore runs as a child process with `--json`: the copy is made by
//! exactly the command a DBA would run, and only its documented report,
//! exit status and error lines are read (the report is the contract). The
//! restore's defaults (no `--port`, no `--keep-archiving`) give the copy a
//! free port and archiving off, so it never touches the production port,
//! socket or archive.
//!
//! The directory is always new, so removing a copy never deletes anything
//! pitr did not create. It lives here, in the server driver, because it is
//! the server's files (a data directory, its log) that are moved and
//! removed.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::binaries::Binaries;
use super::cluster::running_postmaster;
use super::server::{Server, LOG_FILE_NAME};
use crate::os_user::OsUser;
use crate::progress::Reporter;

/// The name of the kept server log of a failed copy, in its directory.
pub const KEPT_LOG_NAME: &str = "server.log";

/// `pitr restore`'s exit status when PostgreSQL did not reach the target
/// (its data directory and log are what tells why).
pub const RECOVERY_FAILED: i32 = 5;

/// What to restore the copy to: the arguments `pitr restore` takes.
#[derive(Clone, Debug)]
pub struct RestoreRequest<'a> {
    /// The repository as the user named it (`--repo DIR|URL`, or
    /// `--backups` and `--wal-archive`): `RepoLocation::command_args`.
    pub repo_args: Vec<OsString>,
    /// `--to` as the restore takes it (any target form).
    pub target: String,
    pub exclusive: bool,
    pub backup: Option<String>,
    /// `--timeline`; the restore's own default when absent.
    pub timeline: Option<String>,
    pub bin_dir: Option<&'a Path>,
    pub os_user: &'a str,
    /// `--only-database`: the one database the copy is for (the others
    /// may be left sparse).
    pub only_database: Option<&'a str>,
    /// `--scratch-copy`: the copy is removed after one use, so nothing is
    /// flushed for it and it is not restarted after promotion.
    pub throwaway: bool,
}

/// Where the copy's server listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// The running server of a restored copy, as the restore's report names it.
#[derive(Clone, Debug)]
struct CopyServer {
    endpoint: Endpoint,
    binaries: Binaries,
}

/// What becomes of a copy when it is finished with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Stopped and removed, directory and all.
    Remove,
    /// Stopped and removed, but the directory stays with the server log
    /// moved there by [`ScratchCopy::keep_server_log`].
    RemoveKeepingLog,
    /// Stopped and left in place (`--keep`).
    Keep,
}

/// A scratch directory and, once restored, the copy running in it.
/// Dropping it stops the server and removes the directory unless
/// [`ScratchCopy::keep`] was called; [`ScratchCopy::finish`] does the same
/// and reports what went wrong.
#[derive(Debug)]
pub struct ScratchCopy {
    root: PathBuf,
    user: OsUser,
    server: Option<CopyServer>,
    /// `pitr restore --json`'s report (null until a restore succeeded).
    report: Value,
    keep: bool,
    finished: bool,
}

impl ScratchCopy {
    /// Creates `<prefix><time>-<pid>` in `under` (`--scratch`), else in the
    /// system's temporary directory, mode 0700 and owned by the server's
    /// OS user (PostgreSQL must write there).
    pub fn create(under: Option<&Path>, prefix: &str, user: OsUser) -> Result<ScratchCopy> {
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
            "{prefix}{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        // One command may make several copies within a second (extract's
        // copy at the window's start, then at the target).
        let mut attempt = 1;
        let root = loop {
            let root = match attempt {
                1 => parent.join(&name),
                n => parent.join(format!("{name}-{n}")),
            };
            match fs::DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => break root,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!(
                            "cannot create the scratch directory `{}`: pass --scratch DIR with an existing directory that has room for a copy of the cluster",
                            root.display()
                        )
                    })
                }
            }
        };
        let copy = ScratchCopy {
            root,
            user,
            server: None,
            report: Value::Null,
            keep: false,
            finished: false,
        };
        copy.user.own(&copy.root)?;
        Ok(copy)
    }

    /// The directory holding the copy (`data/` inside it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the restore writes the copy.
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Runs `pitr restore --json` into the copy, its progress passed
    /// through to stderr (indented) unless quiet. A restore that ran and
    /// failed is an `Ok` run without a report: its exit status and lines
    /// say why. On success the copy knows its server from the report.
    pub fn restore(&mut self, request: &RestoreRequest, reporter: &Reporter) -> Result<RestoreRun> {
        let run = run_restore(request, &self.pgdata(), reporter)?;
        if let Some(report) = &run.report {
            self.server = server_of(report);
            self.report = report.clone();
        }
        Ok(run)
    }

    /// `pitr restore --json`'s report (null until a restore succeeded).
    pub fn report(&self) -> &Value {
        &self.report
    }

    /// Where the copy's server listens, once restored.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.server.as_ref().map(|server| &server.endpoint)
    }

    /// The programs of the copy's major version, once restored.
    pub fn binaries(&self) -> Option<&Binaries> {
        self.server.as_ref().map(|server| &server.binaries)
    }

    /// A program of the copy's major version, run as the server's OS user
    /// and pointed at the copy (`PGHOST`, `PGPORT`; libpq's other `PG*`
    /// variables that choose a server or user are cleared so that they
    /// cannot send it elsewhere).
    pub fn program(&self, name: &str) -> Result<Command> {
        let Some(server) = &self.server else {
            bail!("the restore's report does not say where the scratch copy's server listens, nor which PostgreSQL programs run it");
        };
        let mut command = self.user.command(&server.binaries.program(name));
        for variable in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGUSER"] {
            command.env_remove(variable);
        }
        command
            .env("PGHOST", &server.endpoint.socket_dir)
            .env("PGPORT", server.endpoint.port.to_string())
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        Ok(command)
    }

    /// Runs SQL in `database` of the copy; psql's unaligned output (rows on
    /// lines, columns separated by `|`), or psql's error.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String> {
        let output = self
            .program("psql")?
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

    /// Runs `pg_amcheck` on every database of the copy (installing the
    /// amcheck extension where missing: the copy is scratch), tables and
    /// B-tree indexes, including that every heap tuple has its index
    /// entries.
    pub fn amcheck(&self) -> Amcheck {
        let Some(binaries) = self.binaries() else {
            return Amcheck::Failed(
                "the restore's report does not say which PostgreSQL programs run the copy"
                    .to_string(),
            );
        };
        let program = binaries.program("pg_amcheck");
        if !program.is_file() {
            return Amcheck::NotInstalled(program);
        }
        let output = self.program("pg_amcheck").and_then(|mut command| {
            command
                .args(["--all", "--install-missing", "--heapallindexed"])
                .output()
                .with_context(|| format!("cannot run `{}`", program.display()))
        });
        match output {
            Err(error) => Amcheck::Failed(format!("{error:#}")),
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

    /// Moves the copy's server log out of the data directory to
    /// `<root>/server.log`, which [`Disposal::RemoveKeepingLog`] leaves,
    /// and returns its path and contents; `None` when the restore got no
    /// server started.
    pub fn keep_server_log(&self) -> Option<(PathBuf, Vec<u8>)> {
        let log = self.pgdata().join(LOG_FILE_NAME);
        let kept = self.root.join(KEPT_LOG_NAME);
        fs::rename(&log, &kept).ok()?;
        let bytes = fs::read(&kept).ok()?;
        Some((kept, bytes))
    }

    /// Leaves the copy (stopped) in place when dropped; returns where.
    pub fn keep(&mut self) -> PathBuf {
        self.keep = true;
        self.root.clone()
    }

    /// Stops the server (fast shutdown, by its PID) and waits until its
    /// process, and with it its port and socket, is gone.
    pub fn stop(&self) -> Result<()> {
        self.stop_with(Signal::SIGINT)
    }

    /// Stops the server with `signal`: SIGINT (fast shutdown, with its
    /// checkpoint) for a copy that is kept, SIGQUIT (immediate shutdown)
    /// for one removed right after, whose checkpoint would only write
    /// files about to be deleted (seconds, for a copy that replayed much).
    fn stop_with(&self, signal: Signal) -> Result<()> {
        let Some(postmaster) = running_postmaster(&self.pgdata()) else {
            return Ok(());
        };
        let pid = Pid::from_raw(postmaster.pid);
        kill(pid, signal)
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

    /// Stops the copy and disposes of it (a copy marked with
    /// [`ScratchCopy::keep`] is kept whatever `disposal` says), reporting
    /// what went wrong instead of ignoring it as a drop must. Returns the
    /// copy's directory when it is kept.
    pub fn finish(mut self, disposal: Disposal) -> Result<Option<PathBuf>> {
        self.finished = true;
        let disposal = if self.keep { Disposal::Keep } else { disposal };
        self.stop_with(match disposal {
            Disposal::Keep => Signal::SIGINT,
            Disposal::Remove | Disposal::RemoveKeepingLog => Signal::SIGQUIT,
        })?;
        match disposal {
            Disposal::Keep => Ok(Some(self.root.clone())),
            Disposal::Remove => remove_any(&self.root).map(|()| None),
            Disposal::RemoveKeepingLog => {
                // Everything but the kept log: the copy, a staging or
                // spool directory a failed restore left.
                for entry in fs::read_dir(&self.root)
                    .with_context(|| format!("cannot read `{}`", self.root.display()))?
                    .flatten()
                {
                    if entry.file_name() != KEPT_LOG_NAME {
                        remove_any(&entry.path())?;
                    }
                }
                Ok(None)
            }
        }
    }
}

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Nothing to report to from a drop (an early return on an error):
        // `finish` is the path that reports; this one only makes sure no
        // server outlives pitr and no copy is left behind unasked.
        let _ = self.stop_with(if self.keep {
            Signal::SIGINT
        } else {
            Signal::SIGQUIT
        });
        if !self.keep {
            let _ = remove_any(&self.root);
        }
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

/// The copy's server as the restore's report names it.
fn server_of(report: &Value) -> Option<CopyServer> {
    let dir = report["server"]["bin_dir"].as_str()?;
    let major = u32::try_from(report["server"]["major_version"].as_u64()?).ok()?;
    Some(CopyServer {
        endpoint: Endpoint {
            socket_dir: PathBuf::from(report["socket_dir"].as_str()?),
            port: u16::try_from(report["port"].as_u64()?).ok()?,
        },
        binaries: Binaries::find(Some(Path::new(dir)), major).ok()?,
    })
}

/// What `pitr restore --json` gave.
#[derive(Debug)]
pub struct RestoreRun {
    pub exit_code: Option<i32>,
    /// Its report, when it succeeded.
    pub report: Option<Value>,
    /// Its stderr lines.
    pub lines: Vec<String>,
}

impl RestoreRun {
    /// The restore's error and hint, as it printed them.
    pub fn error(&self) -> String {
        let start = self.lines.iter().position(|line| {
            line.starts_with("pitr: error: ") || line.starts_with("pitr: interrupted: ")
        });
        match start {
            Some(start) => self.lines[start..]
                .iter()
                .map(|line| {
                    line.trim_start_matches("pitr: error: ")
                        .trim_start_matches("pitr: interrupted: ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
            None => format!(
                "pitr restore ended with exit status {}",
                self.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown (killed)".into())
            ),
        }
    }
}

/// Runs `pitr restore --json` into `pgdata`.
fn run_restore(request: &RestoreRequest, pgdata: &Path, reporter: &Reporter) -> Result<RestoreRun> {
    let pitr = std::env::current_exe().context("cannot find the pitr executable")?;
    let mut command = Command::new(pitr);
    command
        .args(["--json", "restore"])
        .args(&request.repo_args)
        .arg(format!("--to={}", request.target))
        .arg("--pgdata")
        .arg(pgdata)
        .args(["--os-user", request.os_user]);
    if let Some(timeline) = &request.timeline {
        command.arg(format!("--timeline={timeline}"));
    }
    if request.exclusive {
        command.arg("--exclusive");
    }
    if let Some(backup) = &request.backup {
        command.args(["--backup", backup]);
    }
    if let Some(dir) = request.bin_dir {
        command.arg("--bin-dir").arg(dir);
    }
    if let Some(database) = request.only_database {
        command.arg(format!("--only-database={database}"));
    }
    if request.throwaway {
        command.arg("--scratch-copy");
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
    let mut child = command.spawn().context("cannot run pitr restore")?;
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
        .context("cannot wait for pitr restore")?;
    let lines = forward.join().unwrap_or_default();
    let report = if output.status.success() {
        Some(
            serde_json::from_slice::<Value>(&output.stdout)
                .context("pitr restore succeeded but its JSON report cannot be read")?,
        )
    } else {
        None
    };
    Ok(RestoreRun {
        exit_code: output.status.code(),
        report,
        lines,
    })
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

/// Reads a `--check-file` (the user's file, local by nature; kept beside
/// the copy it is run against, where the file system may be used).
pub fn read_check_file(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .with_context(|| format!("cannot read the check file `{}`", path.display()))
}
