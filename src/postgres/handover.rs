//! After pitr promoted a restored server: its working settings leave
//! `postgresql.auto.conf`, and the server is restarted (or stopped) so that
//! what runs is what every later start will run.
//!
//! Why a rewrite of the file and not `ALTER SYSTEM RESET`: the latter needs
//! a connection, which the backup's `pg_hba.conf` may not grant pitr
//! (password or certificate authentication); the rewrite is done the way
//! `ALTER SYSTEM` itself writes the file (see `postgres::auto_conf`), in the
//! moment after promotion, before anyone knows the server is there. Why a
//! restart: the settings that change (`unix_socket_directories`,
//! `logging_collector`, `port`) take effect only at server start, and a
//! server that runs with other settings than its files say would move its
//! socket at the next restart, under the applications.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{Failure, FailureKind, OrFail};
use crate::postgres::auto_conf::{self, configured_value, kept_block, without_working_blocks};
use crate::postgres::live::LockFile;
use crate::postgres::server::Server;

/// What happens to the server once its configuration is clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Restart it, so it runs its own configuration now.
    Restart,
    /// Stop it, ready for its service manager.
    Stop,
}

/// What the user asked for, which stays in `postgresql.auto.conf`.
pub struct Request<'a> {
    pub server: &'a Server,
    /// `--port`, or for a side-by-side restore the free port pitr chose:
    /// the copy must not come back on the backup's port, which is the
    /// production server's. `None` for an in-place restore without
    /// `--port`: the backup's own port.
    pub port: Option<u16>,
    pub keep_archiving: bool,
    /// The socket directory used when the backup's own is not usable.
    pub fallback_socket_dir: &'a Path,
    pub then: Then,
}

/// How the server was handed over.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Handover {
    /// The settings kept in postgresql.auto.conf, as name and value.
    pub kept: Vec<(String, String)>,
    /// The socket directory the server uses (or will use once started).
    pub socket_dir: Option<PathBuf>,
    /// Why that socket directory.
    pub socket_source: String,
    /// The port it listens on (or will listen on).
    pub port: Option<u16>,
    pub running: bool,
}

const KEPT_COMMENT: &str =
    "Kept by pitr restore after promotion: what was asked for (--port, archiving off unless --keep-archiving)";

pub fn hand_over(request: &Request<'_>) -> Result<Handover, Failure> {
    let server = request.server;
    let pgdata = &server.pgdata;
    let path = pgdata.join(auto_conf::FILE_NAME);
    let original = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))
        .or_fail(FailureKind::Recovery)?;
    let clean = without_working_blocks(&original);
    let mut kept: Vec<(String, String)> = Vec::new();
    if let Some(port) = request.port {
        kept.push(("port".to_string(), port.to_string()));
    }
    if !request.keep_archiving {
        kept.push(("archive_mode".to_string(), "off".to_string()));
    }
    let write = |kept: &[(String, String)]| {
        auto_conf::replace(
            pgdata,
            &format!("{clean}{}", kept_block(KEPT_COMMENT, kept)),
            &server.user,
        )
        .or_fail(FailureKind::Recovery)
    };
    write(&kept)?;

    // The backup's own socket directories, as its configuration files now
    // say without pitr's block.
    let configured = configured_value(
        &server.binaries,
        pgdata,
        &server.user,
        "unix_socket_directories",
    )
    .or_fail(FailureKind::Recovery)?;
    let dirs: Vec<&str> = configured
        .split(',')
        .map(str::trim)
        .filter(|dir| !dir.is_empty())
        .collect();
    let unusable = if dirs.is_empty() {
        Some("the backup's configuration has no unix_socket_directories".to_string())
    } else {
        dirs.iter()
            .find(|dir| !usable_by(server, Path::new(dir)))
            .map(|dir| {
                format!(
                    "the backup's socket directory `{dir}` is not usable by OS user `{}`",
                    server.user.name
                )
            })
    };
    let (socket_dir, socket_source) = match unusable {
        None => (
            PathBuf::from(dirs[0]),
            "the backup's own unix_socket_directories".to_string(),
        ),
        Some(why) => {
            let fallback = request.fallback_socket_dir.to_path_buf();
            kept.push((
                "unix_socket_directories".to_string(),
                fallback.to_string_lossy().into_owned(),
            ));
            write(&kept)?;
            (
                fallback,
                format!("{why}, so the socket stays in the data directory"),
            )
        }
    };
    let port = match request.port {
        Some(port) => Some(port),
        None => configured_value(&server.binaries, pgdata, &server.user, "port")
            .ok()
            .and_then(|value| value.parse().ok()),
    };

    server
        .stop_fast()
        .or_fail(FailureKind::Recovery)
        .map_err(|failure| {
            failure.with_hint(format!(
                "postgresql.auto.conf is already clean; stop the server with `{}` and start it again",
                server.pg_ctl_command("stop -m fast")
            ))
        })?;
    if request.then == Then::Stop {
        return Ok(Handover {
            kept,
            socket_dir: Some(socket_dir),
            socket_source,
            port,
            running: false,
        });
    }
    server.start_and_wait().map_err(|error| {
        Failure::msg(
            FailureKind::Recovery,
            format!(
                "the promoted server was stopped to start with its own configuration, and did not start again: {error:#}"
            ),
        )
        .with_hint(format!(
            "the data is promoted and intact; see `{}`, fix the configuration, then `{}`",
            server.log_path.display(),
            server.pg_ctl_command("start")
        ))
    })?;
    // What the server really uses, from its lock file.
    let lock = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()
        .and_then(|text| LockFile::parse(&text));
    Ok(Handover {
        kept,
        socket_dir: lock
            .as_ref()
            .and_then(|l| l.socket_dir.clone())
            .or(Some(socket_dir)),
        socket_source,
        port: lock.and_then(|l| l.port).or(port),
        running: true,
    })
}

/// The server's OS user can create a socket in `dir`.
fn usable_by(server: &Server, dir: &Path) -> bool {
    server
        .user
        .command(Path::new("/bin/sh"))
        .args([
            "-c",
            "test -d \"$1\" && test -w \"$1\" && test -x \"$1\"",
            "sh",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success())
}
