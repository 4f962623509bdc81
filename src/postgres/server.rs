//! Starting the restored server, following its recovery through the log,
//! and promoting or stopping it.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::binaries::Binaries;
use super::commands::{as_user, shell_word};
use super::log::{parse_line, LogEvent};
use super::os_user::OsUser;
use crate::wal::Lsn;

/// The server log `pitr` starts the restored server with, in its data directory.
pub const LOG_FILE_NAME: &str = "pitr-recovery.log";

/// A PostgreSQL server on a restored data directory.
pub struct Server {
    pub pgdata: PathBuf,
    pub binaries: Binaries,
    pub user: OsUser,
    pub log_path: PathBuf,
    /// Variables the server (and so its restore_command) gets beyond
    /// pitr's own environment, which it inherits.
    pub env: Vec<(String, String)>,
}

impl Server {
    pub fn new(pgdata: &Path, binaries: Binaries, user: OsUser) -> Server {
        Server {
            pgdata: pgdata.to_path_buf(),
            log_path: pgdata.join(LOG_FILE_NAME),
            binaries,
            user,
            env: Vec::new(),
        }
    }

    /// The same server, started with these variables set.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Server {
        self.env = env;
        self
    }

    /// Starts the server detached (it outlives `pitr`), logging to
    /// `log_path`. Returns at once; `LogFollower` tells what happens next.
    pub fn start(&self) -> Result<()> {
        self.pg_ctl_start(&["-W"])
    }

    /// Starts the server and waits until it accepts connections (after a
    /// promoted restore, with its own configuration back).
    pub fn start_and_wait(&self) -> Result<()> {
        self.pg_ctl_start(&["-w", "-t", "300"])
    }

    /// `pg_ctl start` with the given waiting options, logging to `log_path`.
    fn pg_ctl_start(&self, wait: &[&str]) -> Result<()> {
        let output = self
            .pg_ctl()
            .arg("start")
            .args(wait)
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&self.log_path)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl")?;
        if !output.status.success() {
            bail!(
                "pg_ctl could not start the server: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// `pg_ctl <action> -D <pgdata>` as a command line to paste: the full
    /// path of this major's pg_ctl, run as the server's OS user.
    pub fn pg_ctl_command(&self, action: &str) -> String {
        let mut command = format!(
            "{} {action} -D {}",
            shell_word(&self.binaries.program("pg_ctl").to_string_lossy()),
            shell_word(&self.pgdata.to_string_lossy())
        );
        // Started by hand, the server's output needs somewhere to go.
        if action.starts_with("start") {
            command.push_str(&format!(
                " -l {}",
                shell_word(&self.log_path.to_string_lossy())
            ));
        }
        as_user(&self.user.name, &command)
    }

    /// `psql` connecting to this server as its OS user's role, over the
    /// socket it really uses.
    pub fn psql_command(&self, socket_dir: &Path, port: u16) -> String {
        let command = format!(
            "{} -h {} -p {port} -U {} -d postgres",
            shell_word(&self.binaries.program("psql").to_string_lossy()),
            shell_word(&socket_dir.to_string_lossy()),
            shell_word(&self.user.name)
        );
        as_user(&self.user.name, &command)
    }

    /// The postmaster's PID, from the first line of `postmaster.pid`.
    pub fn pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (pid > 0).then(|| Pid::from_raw(pid))
    }

    /// True while the process exists and is not a zombie waiting to be
    /// reaped (the postmaster is not our child, so we cannot reap it).
    pub fn is_running(pid: Pid) -> bool {
        if kill(pid, None).is_err() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    /// Asks the server to end recovery and promote (what `pg_promote()`
    /// does, without needing a database connection). See
    /// [`super::recovery::follow`] for when pitr asks.
    pub fn promote(&self) -> Result<()> {
        let output = self
            .pg_ctl()
            .args(["promote", "-W", "-D"])
            .arg(&self.pgdata)
            .output()
            .context("cannot run pg_ctl promote")?;
        if !output.status.success() {
            bail!(
                "pg_ctl promote failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Fast shutdown, waiting for the server process itself to be gone.
    pub fn stop_fast(&self) -> Result<()> {
        let pid = self.pid();
        let output = self
            .pg_ctl()
            .args(["stop", "-m", "fast", "-w", "-t", "120", "-D"])
            .arg(&self.pgdata)
            .output()
            .context("cannot run pg_ctl stop")?;
        // A server that ended on its own meanwhile (a shutdown at the
        // target) needs no stopping.
        if !output.status.success() && pid.is_some_and(Server::is_running) {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // pg_ctl returns once postmaster.pid is gone; the process exits
        // a moment later.
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Server::is_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn pg_ctl(&self) -> std::process::Command {
        let mut command = self.user.command(&self.binaries.program("pg_ctl"));
        command.current_dir(&self.pgdata);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }
}

/// Reads a log file as it grows, one complete line at a time.
pub struct LogFollower {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    offset: u64,
    partial: String,
    /// Every line seen, for failure reports.
    pub lines: Vec<String>,
}

impl LogFollower {
    /// Follows `path` from its current end (or from the start if absent).
    pub fn new(path: &Path) -> LogFollower {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogFollower {
            path: path.to_path_buf(),
            reader: None,
            offset,
            partial: String::new(),
            lines: Vec::new(),
        }
    }

    /// The events in lines written since the last call.
    pub fn poll(&mut self) -> Vec<LogEvent> {
        if self.reader.is_none() {
            let Ok(mut file) = File::open(&self.path) else {
                return Vec::new();
            };
            if file.seek(SeekFrom::Start(self.offset)).is_err() {
                return Vec::new();
            }
            self.reader = Some(BufReader::new(file));
        }
        let mut events = Vec::new();
        let Some(reader) = self.reader.as_mut() else {
            return events;
        };
        loop {
            let mut chunk = String::new();
            match reader.read_line(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.partial.push_str(&chunk);
                    if self.partial.ends_with('\n') {
                        let line = std::mem::take(&mut self.partial);
                        let line = line.trim_end().to_string();
                        if let Some(event) = parse_line(&line) {
                            events.push(event);
                        }
                        self.lines.push(line);
                    }
                }
            }
        }
        events
    }

    /// The last lines that say something went wrong, or the log's tail.
    pub fn relevant_lines(&self, max: usize) -> Vec<String> {
        let important: Vec<&String> = self
            .lines
            .iter()
            .filter(|line| {
                [
                    "FATAL:",
                    "PANIC:",
                    "ERROR:",
                    "WARNING:",
                    "DETAIL:",
                    "HINT:",
                    "recovery stopping",
                    "redo done",
                    "pitr wal-fetch:",
                ]
                .iter()
                .any(|marker| line.contains(marker))
            })
            .collect();
        let source: Vec<&String> = if important.is_empty() {
            self.lines.iter().collect()
        } else {
            important
        };
        source
            .iter()
            .rev()
            .take(max)
            .rev()
            .map(|line| line.to_string())
            .collect()
    }
}

/// Waits for `postmaster.pid` to name a live process, or for the log to
/// show that the server has already ended: a small restore with
/// `--action shutdown` can reach its target, shut down and remove
/// `postmaster.pid` before pitr first looks, and a recovery that fails at
/// once ends with a FATAL line. Returns the PID (None when the server had
/// already ended) and the events read so far, for
/// [`super::recovery::follow`] to judge.
pub fn wait_for_pid(
    server: &Server,
    follower: &mut LogFollower,
    timeout: Duration,
) -> Result<(Option<Pid>, Vec<LogEvent>)> {
    let started = Instant::now();
    let mut events = Vec::new();
    loop {
        events.extend(follower.poll());
        if let Some(pid) = server.pid() {
            if Server::is_running(pid) {
                return Ok((Some(pid), events));
            }
        }
        if events.iter().any(LogEvent::ends_the_server) {
            // The exit line is the postmaster's last: read what is left.
            events.extend(follower.poll());
            return Ok((None, events));
        }
        if started.elapsed() > timeout {
            bail!("the server did not start within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The LSN at which replay ended, as reported by `redo done at`.
pub type RedoEnd = Option<Lsn>;
