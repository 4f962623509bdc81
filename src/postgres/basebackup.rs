//! The `pg_basebackup` command line `pitr backup` runs, and finding the
//! program.
//!
//! The backup is always tar format with WAL included and a manifest with
//! checksums: one directory that restores on its own and that
//! `pg_verifybackup` can check. Building the arguments is pure; running
//! the program is the command's job.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::binaries::parse_version_output;

/// How the tar files are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How WAL gets into the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalMethod {
    /// Streamed over a second connection while the files are copied: no
    /// dependence on `wal_keep_size`.
    Stream,
    /// Fetched at the end: one connection, but WAL recycled meanwhile
    /// makes the backup fail.
    Fetch,
    /// None in the backup: the WAL archive holds it (`pitr backup` waits
    /// until it is archived), as pgBackRest's default (`archive-copy=n`).
    None,
}

/// Everything that shapes the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: PathBuf,
    pub label: String,
    pub compression: Compression,
    /// Compress on the server (PostgreSQL 15+) instead of in pg_basebackup.
    pub server_side: bool,
    pub wal_method: WalMethod,
    pub fast_checkpoint: bool,
    pub progress: bool,
    pub verbose: bool,
    /// `-d CONNSTR`; otherwise libpq's `PG*` variables decide.
    pub dbname: Option<String>,
}

/// The arguments for `pg_basebackup` of major version `client_major`.
pub fn arguments(options: &Options, client_major: u32) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = vec!["-D".into(), options.target.clone().into_os_string()];
    args.extend(["--format=tar".into()]);
    args.push(
        match options.wal_method {
            WalMethod::Stream => "--wal-method=stream",
            WalMethod::Fetch => "--wal-method=fetch",
            WalMethod::None => "--wal-method=none",
        }
        .into(),
    );
    args.push(format!("--label={}", options.label).into());
    if client_major >= 13 {
        // CRC32C is the default; named so the manifest's promise is explicit.
        args.push("--manifest-checksums=CRC32C".into());
    }
    if options.fast_checkpoint {
        args.push("--checkpoint=fast".into());
    }
    let location = if options.server_side {
        "server"
    } else {
        "client"
    };
    match (options.compression, client_major >= 15) {
        (Compression::None, _) => {}
        (method, true) => args.push(format!("--compress={location}-{}", method.name()).into()),
        (Compression::Gzip, false) if !options.server_side => args.push("--gzip".into()),
        (method, false) => bail!(
            "pg_basebackup {client_major} cannot compress with {}{}: PostgreSQL 15 and later can; pass --compress gzip or none, or use a newer pg_basebackup (--bin-dir)",
            method.name(),
            if options.server_side { " on the server" } else { "" }
        ),
    }
    if options.progress {
        args.push("--progress".into());
    }
    if options.verbose {
        args.push("--verbose".into());
    }
    if let Some(dbname) = &options.dbname {
        args.push(format!("--dbname={dbname}").into());
    }
    Ok(args)
}

/// `pg_basebackup` and its major version: from `bin_dir`, else the newest
/// of `/usr/lib/postgresql/<N>/bin` (Debian) and `/usr/pgsql-<N>/bin` (RPM),
/// else `PATH`. A newer pg_basebackup backs up older servers, so the newest
/// installed one is the best choice.
pub fn find_pg_basebackup(bin_dir: Option<&Path>) -> Result<(PathBuf, u32)> {
    let program = match bin_dir {
        Some(dir) => {
            let program = dir.join("pg_basebackup");
            if !program.is_file() {
                bail!("`{}` holds no pg_basebackup", dir.display());
            }
            program
        }
        None => newest_versioned("pg_basebackup")
            .or_else(|| on_path("pg_basebackup"))
            .context(
                "pg_basebackup not found in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or PATH; install PostgreSQL's client programs (Debian: apt-get install postgresql-client) or pass --bin-dir",
            )?,
    };
    let output = Command::new(&program)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run `{}`", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let major = parse_version_output(&text).with_context(|| {
        format!(
            "unexpected `{} --version` output: {}",
            program.display(),
            text.trim()
        )
    })?;
    Ok((program, major))
}

fn newest_versioned(name: &str) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for (root, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = dir_name
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let program = entry.path().join("bin").join(name);
            if program.is_file() {
                found.push((version, program));
            }
        }
    }
    found
        .into_iter()
        .max_by_key(|(version, _)| *version)
        .map(|(_, p)| p)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|program| program.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            target: PathBuf::from("/repo/base/.pitr-backup-x"),
            label: "20261124T031500Z".to_string(),
            compression: Compression::Zstd,
            server_side: false,
            wal_method: WalMethod::Stream,
            fast_checkpoint: false,
            progress: false,
            verbose: false,
            dbname: None,
        }
    }

    fn text(args: Vec<OsString>) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn defaults_are_tar_streamed_zstd_with_a_manifest() {
        assert_eq!(
            text(arguments(&options(), 15).unwrap()),
            "-D /repo/base/.pitr-backup-x --format=tar --wal-method=stream --label=20261124T031500Z --manifest-checksums=CRC32C --compress=client-zstd"
        );
    }

    #[test]
    fn every_option_reaches_the_command_line() {
        let options = Options {
            compression: Compression::Lz4,
            server_side: true,
            wal_method: WalMethod::Fetch,
            fast_checkpoint: true,
            progress: true,
            verbose: true,
            dbname: Some("host=db1 user=backup".to_string()),
            ..options()
        };
        assert_eq!(
            text(arguments(&options, 16).unwrap()),
            "-D /repo/base/.pitr-backup-x --format=tar --wal-method=fetch --label=20261124T031500Z --manifest-checksums=CRC32C --checkpoint=fast --compress=server-lz4 --progress --verbose --dbname=host=db1 user=backup"
        );
    }

    #[test]
    fn older_clients_get_what_they_understand() {
        let gzip = Options {
            compression: Compression::Gzip,
            ..options()
        };
        assert!(text(arguments(&gzip, 14).unwrap()).ends_with("--manifest-checksums=CRC32C --gzip"));
        assert!(!text(arguments(&gzip, 12).unwrap()).contains("manifest"));
        let error = arguments(&options(), 14).unwrap_err().to_string();
        assert!(
            error.contains("pg_basebackup 14 cannot compress with zstd"),
            "{error}"
        );
        assert!(error.contains("--compress gzip"), "{error}");
        let server_gzip = Options {
            server_side: true,
            ..gzip
        };
        assert!(arguments(&server_gzip, 14).is_err());
        let none = Options {
            compression: Compression::None,
            ..options()
        };
        assert!(!text(arguments(&none, 15).unwrap()).contains("compress"));
    }
}
