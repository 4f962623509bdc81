//! Moving a dump out of a scratch copy: into a new file, or straight into
//! a live cluster through `pg_restore`, and the questions asked of that
//! live cluster first.
//!
//! The live cluster is reached as the invoking user with the connection
//! string given (or libpq's `PG*` variables), never as the server's OS
//! user: it is someone else's server. The load is one transaction
//! (`pg_restore --single-transaction --exit-on-error`), so a failure leaves
//! the live cluster as it was; a database pitr created for the load is
//! dropped again when the load fails.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use super::binaries::Binaries;
use crate::cli::DumpFormat;

/// The live cluster `--into` names.
#[derive(Clone, Debug)]
pub struct Live {
    /// The connection string; empty for libpq's `PG*` variables.
    pub conninfo: String,
    /// psql and pg_restore of the backup's major version.
    pub binaries: Binaries,
    /// The database to use when the connection names none (a table goes
    /// back into the database of the same name, not into libpq's default,
    /// the user's name).
    pub fallback_database: Option<String>,
}

/// True when a connection string names a database: a `dbname` keyword, or
/// a URI's path (`postgresql://host/db`) or `dbname` parameter.
pub fn conninfo_names_database(conninfo: &str) -> bool {
    let conninfo = conninfo.trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = conninfo.strip_prefix(scheme) {
            let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
            let path = location.split_once('/').map_or("", |(_, path)| path);
            return !path.is_empty() || query.split('&').any(|pair| pair.starts_with("dbname="));
        }
    }
    let mut rest = conninfo;
    while let Some(at) = rest.find("dbname") {
        let before = &rest[..at];
        let after = rest[at + "dbname".len()..].trim_start();
        if (before.is_empty() || before.ends_with(char::is_whitespace)) && after.starts_with('=') {
            return true;
        }
        rest = &rest[at + "dbname".len()..];
    }
    false
}

impl Live {
    /// The database operations on tables and schemas go to: the
    /// connection's own, else `PGDATABASE`, else the fallback.
    fn database_for_objects(&self) -> Option<&str> {
        let named = conninfo_names_database(&self.conninfo)
            || (self.conninfo.trim().is_empty() && std::env::var_os("PGDATABASE").is_some());
        if named {
            None
        } else {
            self.fallback_database.as_deref()
        }
    }

    /// Where a table or schema is loaded, for people.
    pub fn describe_database(&self) -> String {
        match self.database_for_objects() {
            Some(database) => format!("database {database} of the live cluster"),
            None => "the live cluster's database named by --into".to_string(),
        }
    }

    fn program(&self, name: &str, database: Option<&str>) -> Result<Command> {
        let mut command = Command::new(self.binaries.program(name));
        command.env("PGCONNECT_TIMEOUT", "10").stdin(Stdio::null());
        match (self.conninfo.as_str(), database) {
            ("", None) => {}
            ("", Some(database)) => {
                command.arg("-d").arg(database);
            }
            (conninfo, None) => {
                command.arg("-d").arg(conninfo);
            }
            (conninfo, Some(database)) => {
                if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
                    bail!(
                        "--into is a URI; to load a whole database pitr must connect to the new database by name: give --into as key=value pairs (such as 'host=db1 user=postgres')"
                    );
                }
                // A keyword given twice takes its last value in libpq.
                command
                    .arg("-d")
                    .arg(format!("{conninfo} dbname={}", conninfo_value(database)));
            }
        }
        Ok(command)
    }

    /// Runs SQL in the live cluster's database for tables and schemas;
    /// psql's unaligned output.
    pub fn sql_objects(&self, sql: &str) -> Result<String> {
        self.sql(self.database_for_objects(), sql)
    }

    /// Runs SQL in the live cluster (the connection's database, or
    /// `database`); psql's unaligned output.
    pub fn sql(&self, database: Option<&str>, sql: &str) -> Result<String> {
        let output = self
            .program("psql", database)?
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("cannot run psql against the live cluster")?;
        if !output.status.success() {
            bail!(
                "the live cluster (--into) answered: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Pipes `dump` (pg_dump in custom format on stdout) into pg_restore
    /// connected to the live cluster (`database` when given), in one
    /// transaction.
    pub fn load(&self, dump: Command, database: Option<&str>) -> Result<()> {
        let database = database.or(self.database_for_objects());
        let mut restore = self.program("pg_restore", database)?;
        restore.args(["--single-transaction", "--exit-on-error", "--no-password"]);
        pipe(dump, restore, "pg_restore into the live cluster")
    }
}

/// A value for a libpq key=value connection string.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Refuses, before anything is restored, an `--into-file` that exists or
/// whose directory does not.
pub fn check_new_file(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        bail!(
            "`{}` exists: --into-file writes a new file and never replaces one; choose another name",
            path.display()
        );
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => bail!(
            "cannot write `{}`: its directory `{}` does not exist",
            path.display(),
            parent.display()
        ),
        _ => Ok(()),
    }
}

/// Runs `dump` with its output written to `path`, a file it creates (an
/// existing file is refused, never replaced); a failed dump's file is
/// removed. Returns the bytes written.
pub fn dump_to_file(mut dump: Command, format: DumpFormat, path: &Path) -> Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| match path.try_exists() {
            Ok(true) => format!(
                "`{}` exists: --into-file writes a new file and never replaces one; choose another name",
                path.display()
            ),
            _ => format!("cannot create `{}`", path.display()),
        })?;
    dump.arg(match format {
        DumpFormat::Custom => "--format=custom",
        DumpFormat::Plain => "--format=plain",
    });
    let result = dump
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .output()
        .context("cannot run pg_dump");
    let failed = match &result {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "pg_dump failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("{error:#}")),
    };
    if let Some(failed) = failed {
        let _ = std::fs::remove_file(path);
        bail!("{failed}; `{}` was not written", path.display());
    }
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// Runs `from | to`; both must succeed. `what` names the receiving end.
fn pipe(mut from: Command, mut to: Command, what: &str) -> Result<()> {
    from.arg("--format=custom")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dump = from.spawn().context("cannot run pg_dump")?;
    let Some(stdout) = dump.stdout.take() else {
        bail!("pg_dump's output cannot be read");
    };
    let load = to
        .stdin(Stdio::from(stdout))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"));
    let load = match load {
        Ok(load) => load,
        Err(error) => {
            let _ = dump.kill();
            let _ = dump.wait();
            return Err(error);
        }
    };
    let loaded = load
        .wait_with_output()
        .context("cannot wait for the load")?;
    let dump_status = dump.wait().context("cannot wait for pg_dump")?;
    let dump_errors = read_stderr(&mut dump);
    if !dump_status.success() {
        bail!("pg_dump failed ({dump_status}): {}", dump_errors.trim());
    }
    if !loaded.status.success() {
        bail!(
            "{what} failed ({}): {}",
            loaded.status,
            String::from_utf8_lossy(&loaded.stderr).trim()
        );
    }
    Ok(())
}

fn read_stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_that_name_a_database() {
        for named in [
            "dbname=shop",
            "host=/run/postgresql dbname = 'shop'",
            "postgresql://db1/shop",
            "postgres://user@db1:5433/shop?sslmode=require",
            "postgresql://db1?dbname=shop",
        ] {
            assert!(conninfo_names_database(named), "{named}");
        }
        for unnamed in [
            "",
            "host=/run/postgresql user=postgres",
            "host=mydbname",
            "postgresql://db1",
            "postgresql://db1/",
            "postgresql://db1:5432?sslmode=require",
        ] {
            assert!(!conninfo_names_database(unnamed), "{unnamed}");
        }
    }
}
