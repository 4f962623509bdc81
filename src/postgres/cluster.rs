//! Reading the settings of an existing cluster: over its socket with `psql`
//! when it runs, with `postgres -C` when it does not.
//!
//! `psql` honours libpq's environment (`PGUSER`, `PGPASSWORD`,
//! `PGPASSFILE`, `PGSSLMODE`, ...); only host and port are given, from the
//! data directory's `postmaster.pid`, because `--pgdata` names the cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::archiving::{ArchiverStatus, Setting, Settings, CHECKED_SETTINGS};
use super::binaries::Binaries;
use super::os_user::OsUser;

/// What `postmaster.pid` says about a running server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postmaster {
    pub pid: i32,
    pub port: u16,
    /// The first of `unix_socket_directories`; `None` when it has none.
    pub socket_dir: Option<PathBuf>,
    /// The first of `listen_addresses`; `None` when it listens on none.
    pub listen: Option<String>,
}

/// Parses `postmaster.pid`: PID, data directory, start time, port, socket
/// directory, listen address, shared memory key, status (see
/// `LOCK_FILE_LINE_*` in src/include/utils/pidfile.h).
pub fn parse_postmaster_pid(text: &str) -> Option<Postmaster> {
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    let port = lines.get(3)?.trim().parse().ok()?;
    let non_empty = |index: usize| {
        lines
            .get(index)
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
    };
    Some(Postmaster {
        pid,
        port,
        socket_dir: non_empty(4).map(PathBuf::from),
        listen: non_empty(5).map(str::to_string),
    })
}

/// The server running on `pgdata`, if any.
pub fn running_postmaster(pgdata: &Path) -> Option<Postmaster> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let postmaster = parse_postmaster_pid(&text)?;
    // A stale file survives a crash; only a live process counts. EPERM
    // means the process exists but belongs to someone else.
    match kill(Pid::from_raw(postmaster.pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(postmaster),
        Err(_) => None,
    }
}

/// The major version of the cluster in `pgdata` (its `PG_VERSION`).
pub fn data_directory_version(pgdata: &Path) -> Result<u32> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "`{}` is not a PostgreSQL data directory: cannot read `{}`",
            pgdata.display(),
            path.display()
        )
    })?;
    text.trim()
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("`{}` holds no version number", path.display()))
}

/// Where the settings came from, for messages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterSettings {
    pub settings: Settings,
    /// `true` when read from the running server, `false` from its files.
    pub running: bool,
    pub source: String,
}

/// Reads [`CHECKED_SETTINGS`] of the cluster in `pgdata`.
pub fn read_settings(
    pgdata: &Path,
    user: &OsUser,
    bin_dir: Option<&Path>,
) -> Result<ClusterSettings> {
    let major = data_directory_version(pgdata)?;
    let binaries = Binaries::find(bin_dir, major)?;
    match running_postmaster(pgdata) {
        Some(postmaster) => query_running(&binaries, &postmaster, user),
        None => read_stopped(&binaries, pgdata, user),
    }
}

/// Asks the running server over its socket (or TCP when it has none).
fn query_running(
    binaries: &Binaries,
    postmaster: &Postmaster,
    user: &OsUser,
) -> Result<ClusterSettings> {
    let names = CHECKED_SETTINGS
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let query =
        format!("SELECT name, setting, pending_restart FROM pg_settings WHERE name IN ({names})");
    let rows = run_query(binaries, postmaster, user, &query, "the settings")?;
    let mut settings = Settings::new();
    for fields in rows {
        if let [name, value, pending] = &fields[..] {
            settings.insert(
                name.to_string(),
                Setting {
                    value: value.to_string(),
                    pending_restart: pending == "t",
                },
            );
        }
    }
    Ok(ClusterSettings {
        settings,
        running: true,
        source: format!(
            "the running server (host `{}`, port {})",
            server_host(postmaster),
            postmaster.port
        ),
    })
}

/// Where psql reaches the server: its socket directory, else its address.
fn server_host(postmaster: &Postmaster) -> String {
    match (&postmaster.socket_dir, &postmaster.listen) {
        (Some(dir), _) => dir.to_string_lossy().into_owned(),
        (None, Some(address)) if address != "*" => address.clone(),
        _ => "localhost".to_string(),
    }
}

/// psql running one query as `user`, unaligned with separators no value
/// holds, stopping at the first error; the server is libpq's choice unless
/// the caller adds `-h`/`-p`. Any database will do for the views read here:
/// `postgres` exists by default, unlike libpq's default of a database
/// named after the user.
fn psql_query(user: &OsUser, psql: &Path, query: &str) -> Command {
    let mut command = user.command(psql);
    command
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-F", "\u{1f}", "-R", "\u{1e}"])
        .args(["-c", query])
        .stdin(Stdio::null());
    if std::env::var_os("PGDATABASE").is_none() {
        command.args(["-d", "postgres"]);
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        command.env("PGCONNECT_TIMEOUT", "10");
    }
    command
}

/// Runs one query with psql as `user` and returns its rows' fields.
fn run_query(
    binaries: &Binaries,
    postmaster: &Postmaster,
    user: &OsUser,
    query: &str,
    what: &str,
) -> Result<Vec<Vec<String>>> {
    let psql = Some(binaries.program("psql"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let host = server_host(postmaster);
    let mut command = psql_query(user, &psql, query);
    command.args(["-h", &host, "-p", &postmaster.port.to_string()]);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{}`", psql.display()))?;
    if !output.status.success() {
        bail!(
            "`{}` could not read {what} of the server (host `{host}`, port {}): {}",
            psql.display(),
            postmaster.port,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .split('\u{1e}')
        .map(|record| record.trim_matches('\n'))
        .filter(|record| !record.is_empty())
        .map(|record| record.split('\u{1f}').map(str::to_string).collect())
        .collect())
}

/// What `pg_stat_archiver` says of the running server in `pgdata`, and how
/// many segments wait in `pg_wal/archive_status`; `None` when no server
/// runs there (a stopped server archives nothing, and its counters are
/// gone with it).
pub fn archiver_status(
    pgdata: &Path,
    user: &OsUser,
    bin_dir: Option<&Path>,
) -> Result<Option<ArchiverStatus>> {
    let Some(postmaster) = running_postmaster(pgdata) else {
        return Ok(None);
    };
    let major = data_directory_version(pgdata)?;
    let binaries = Binaries::find(bin_dir, major)?;
    let rows = run_query(
        &binaries,
        &postmaster,
        user,
        ARCHIVER_QUERY,
        "pg_stat_archiver",
    )?;
    archiver_from_rows(&rows, waiting_segments(pgdata))
        .with_context(|| {
            format!(
                "pg_stat_archiver of the server in `{}` gave no row",
                pgdata.display()
            )
        })
        .map(Some)
}

/// What `pg_stat_archiver` says of the server that libpq's `PG*`
/// environment variables name (`pitr check` without `--pgdata`); psql from
/// `bin_dir`, else from `PATH`. Segments waiting in pg_wal are not known
/// from afar.
pub fn archiver_status_from_environment(
    user: &OsUser,
    bin_dir: Option<&Path>,
) -> Result<ArchiverStatus> {
    let psql = bin_dir
        .map(|dir| dir.join("psql"))
        .unwrap_or_else(|| PathBuf::from("psql"));
    let mut command = psql_query(user, &psql, ARCHIVER_QUERY);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{}`", psql.display()))?;
    if !output.status.success() {
        bail!(
            "`{}` could not read pg_stat_archiver of the server the PG* variables name: {}",
            psql.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Vec<String>> = text
        .split('\u{1e}')
        .map(|record| record.trim_matches('\n'))
        .filter(|record| !record.is_empty())
        .map(|record| record.split('\u{1f}').map(str::to_string).collect())
        .collect();
    archiver_from_rows(&rows, None).context("pg_stat_archiver gave no row")
}

// A standby has no current WAL file of its own to compare with.
const ARCHIVER_QUERY: &str = "SELECT archived_count, coalesce(last_archived_wal, ''), \
     coalesce(to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), ''), \
     failed_count, coalesce(last_failed_wal, ''), \
     coalesce(to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), ''), \
     coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL), \
     CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END \
     FROM pg_stat_archiver";

/// The status from the row of [`ARCHIVER_QUERY`]; `None` without one.
fn archiver_from_rows(rows: &[Vec<String>], waiting: Option<u64>) -> Option<ArchiverStatus> {
    let [archived, last_wal, last_time, failed, failed_wal, failed_time, failing, current] = rows
        .first()
        .and_then(|row| <&[String; 8]>::try_from(&row[..]).ok())?;
    let some = |text: &String| Some(text.clone()).filter(|t| !t.is_empty());
    Some(ArchiverStatus {
        archived_count: archived.parse().unwrap_or(0),
        last_archived_wal: some(last_wal),
        last_archived_time: some(last_time),
        failed_count: failed.parse().unwrap_or(0),
        last_failed_wal: some(failed_wal),
        last_failed_time: some(failed_time),
        failing: failing == "t",
        current_wal: some(current),
        waiting,
    })
}

/// Files PostgreSQL has marked ready for archiving and not yet archived
/// (`pg_wal/archive_status/*.ready`); `None` when the directory cannot be
/// read.
fn waiting_segments(pgdata: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(pgdata.join("pg_wal").join("archive_status")).ok()?;
    Some(
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".ready"))
            .count() as u64,
    )
}

/// Reads the configuration files of a stopped cluster with `postgres -C`.
fn read_stopped(binaries: &Binaries, pgdata: &Path, user: &OsUser) -> Result<ClusterSettings> {
    let mut settings = Settings::new();
    for name in CHECKED_SETTINGS {
        // archive_library exists from PostgreSQL 15 on.
        if name == "archive_library" && binaries.major_version < 15 {
            continue;
        }
        settings.insert(
            name.to_string(),
            Setting {
                value: super::auto_conf::configured_value(binaries, pgdata, user, name)?,
                pending_restart: false,
            },
        );
    }
    Ok(ClusterSettings {
        settings,
        running: false,
        source: format!(
            "the configuration files of `{}` (the server is not running)",
            pgdata.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_pid_lines() {
        let text = "4242\n/srv/pg/data\n1764000000\n5433\n/run/postgresql\nlocalhost\n  1234567     98304\nready   \n";
        assert_eq!(
            parse_postmaster_pid(text),
            Some(Postmaster {
                pid: 4242,
                port: 5433,
                socket_dir: Some(PathBuf::from("/run/postgresql")),
                listen: Some("localhost".to_string()),
            })
        );
        // No socket directories, no TCP.
        let text = "4242\n/srv/pg/data\n1764000000\n5433\n\n\n";
        let postmaster = parse_postmaster_pid(text).unwrap();
        assert_eq!(postmaster.socket_dir, None);
        assert_eq!(postmaster.listen, None);
        assert_eq!(parse_postmaster_pid("garbage"), None);
        assert_eq!(parse_postmaster_pid("1\n/x\n"), None);
    }

    #[test]
    fn a_stale_pid_file_is_not_a_running_server() {
        let dir = tempfile::tempdir().unwrap();
        // PID 2^22 + 1 is above the kernel's maximum: no such process.
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "4194305\n/x\n0\n5432\n/tmp\n\n",
        )
        .unwrap();
        assert_eq!(running_postmaster(dir.path()), None);
    }
}
