//! What makes a delta restore safe: the directory it rewrites must be a
//! stopped data directory of the backup's own cluster and major version,
//! and while it is half rewritten it must not be startable.
//!
//! Before anything is changed, a marker file records that a delta restore
//! is in progress (and of which cluster), then `global/pg_control` is
//! removed, both durably: PostgreSQL refuses to start without pg_control,
//! and `pitr restore` without `--delta` refuses a directory holding the
//! marker. The backup's pg_control is written last, once everything else is
//! on disk, and only then is the marker removed. An interrupted delta
//! restore is finished by running it again: the marker stands in for the
//! pg_control it removed when the cluster is identified.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::{Failure, FailureKind};
use crate::os_user::OsUser;
use crate::repo::backup::Backup;
use crate::stage::tablespaces::Placement;

/// The marker's name, at the top of the data directory.
pub const MARKER: &str = "pitr-delta-restore.in-progress";

/// Where the backup's pg_control is written before it is renamed into place.
const CONTROL_NEW: &str = "global/pg_control.pitr-new";

/// What the marker records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub backup: String,
    pub system_identifier: Option<u64>,
}

impl Marker {
    fn render(&self) -> String {
        format!(
            "# pitr restore --delta is rewriting this data directory; it cannot be started until it finishes.\n# Run the same `pitr restore --delta` again to finish it.\nbackup={}\nsystem_identifier={}\n",
            self.backup,
            self.system_identifier
                .map_or_else(String::new, |id| id.to_string())
        )
    }

    fn parse(text: &str) -> Marker {
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        Marker {
            backup: value("backup").unwrap_or_default().to_string(),
            system_identifier: value("system_identifier").and_then(|v| v.parse().ok()),
        }
    }
}

/// The marker of an unfinished delta restore in `pgdata`, if there is one.
pub fn read_marker(pgdata: &Path) -> Option<Marker> {
    fs::read_to_string(pgdata.join(MARKER))
        .ok()
        .map(|text| Marker::parse(&text))
}

/// Refuses a plain restore over a directory a delta restore left
/// unfinished: only `--delta` finishes it (or `--force` moves it aside).
pub fn refuse_unfinished(pgdata: &Path, force: bool) -> Result<(), Failure> {
    match read_marker(pgdata) {
        Some(marker) if !force => Err(Failure::msg(
            FailureKind::Staging,
            format!(
                "`{}` holds an unfinished delta restore (of backup {}): it is incomplete and cannot be started; nothing was changed",
                pgdata.display(),
                marker.backup
            ),
        )
        .with_hint("run `pitr restore --delta` with the same --pgdata to finish it, or --force to move it aside and restore from scratch")),
        _ => Ok(()),
    }
}

/// Everything `--delta` refuses before it changes anything: a directory
/// that is not a PostgreSQL data directory, of another major version, or
/// of another cluster (its pg_control, or the marker of an interrupted
/// delta restore, names another system identifier), or one whose cluster
/// cannot be told.
pub fn check_delta_target(pgdata: &Path, backup: &Backup) -> Result<(), Failure> {
    let refuse = |message: String, hint: &str| {
        Err(Failure::msg(
            FailureKind::Staging,
            format!("--delta: {message}; nothing was changed"),
        )
        .with_hint(hint))
    };
    let scratch = "restore without --delta to write a new data directory";
    match fs::symlink_metadata(pgdata) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return refuse(
                format!("`{}` is not a directory", pgdata.display()),
                scratch,
            )
        }
        Err(_) => {
            return refuse(
                format!(
                    "`{}` does not exist; a delta restore rewrites an existing data directory",
                    pgdata.display()
                ),
                scratch,
            )
        }
    }
    let Ok(version) = fs::read_to_string(pgdata.join("PG_VERSION")) else {
        return refuse(
            format!(
                "`{}` is not a PostgreSQL data directory (it has no PG_VERSION)",
                pgdata.display()
            ),
            scratch,
        );
    };
    let version = version.trim();
    if let Some(major) = backup.major_version {
        if version != major.to_string() {
            return refuse(
                format!(
                    "`{}` is a PostgreSQL {version} data directory, and backup {} is of PostgreSQL {major}",
                    pgdata.display(),
                    backup.id
                ),
                "check --pgdata; a delta restore only rewrites a data directory of the backup's own major version",
            );
        }
    }
    let found = match read_marker(pgdata) {
        Some(marker) => marker.system_identifier,
        None => fs::read(pgdata.join("global/pg_control"))
            .ok()
            .and_then(|bytes| crate::repo::pg_control::parse(&bytes).ok())
            .map(|control| control.system_identifier),
    };
    let Some(found) = found else {
        return refuse(
            format!(
                "cannot tell which cluster `{}` belongs to (its global/pg_control is missing or unreadable)",
                pgdata.display()
            ),
            "restore with --force instead: the directory is moved aside and the backup written in full",
        );
    };
    if let Some(expected) = backup.system_identifier {
        if found != expected {
            return refuse(
                format!(
                    "`{}` holds another cluster (system identifier {found}) than backup {} ({expected})",
                    pgdata.display(),
                    backup.id
                ),
                "check --pgdata; a delta restore only rewrites a data directory of the backup's own cluster",
            );
        }
    }
    Ok(())
}

/// A tablespace location that already holds files is rewritten by a
/// delta restore only when it is this data directory's own tablespace
/// (its `pg_tblspc/<oid>` link points there): never another cluster's.
pub fn check_delta_tablespace(pgdata: &Path, placement: &Placement) -> Result<(), Failure> {
    if !placement.replaces {
        return Ok(());
    }
    let link = pgdata.join("pg_tblspc").join(placement.oid.to_string());
    if fs::read_link(&link).is_ok_and(|to| to == placement.destination) {
        return Ok(());
    }
    Err(Failure::msg(
        FailureKind::Staging,
        format!(
            "--delta: tablespace {} would be rewritten at `{}`, which is not empty and is not `{}`'s own tablespace (`{}` does not point there); nothing was changed",
            placement.oid,
            placement.destination.display(),
            pgdata.display(),
            link.display()
        ),
    )
    .with_hint("map it to an empty or new directory with --tablespace-mapping OLD=NEW"))
}

/// The first step: the marker written and pg_control removed, durably,
/// before any file of the data directory changes.
pub fn begin(pgdata: &Path, marker: &Marker, user: &OsUser) -> Result<()> {
    let path = pgdata.join(MARKER);
    write_durably(&path, marker.render().as_bytes())?;
    user.own(&path)?;
    sync_dir(pgdata)?;
    let control = pgdata.join("global/pg_control");
    match fs::remove_file(&control) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot remove `{}`", control.display()))
        }
    }
    sync_dir(&pgdata.join("global"))
}

/// The last step, once everything else is durable: the backup's
/// pg_control written into place, then the marker removed.
pub fn finish(pgdata: &Path, control: &[u8], user: &OsUser) -> Result<()> {
    let global = pgdata.join("global");
    let new = pgdata.join(CONTROL_NEW);
    let _ = fs::remove_file(&new);
    write_durably(&new, control)?;
    user.own(&new)?;
    let path = global.join("pg_control");
    fs::rename(&new, &path)
        .with_context(|| format!("cannot rename `{}` to `{}`", new.display(), path.display()))?;
    sync_dir(&global)?;
    let marker = pgdata.join(MARKER);
    fs::remove_file(&marker).with_context(|| format!("cannot remove `{}`", marker.display()))?;
    sync_dir(pgdata)
}

/// A new file (mode 0600) with `contents`, on disk before this returns.
fn write_durably(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Makes the entries of `dir` (a creation, removal or rename) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync the directory `{}`", dir.display()))
}

/// `global/pg_control` of `pgdata`.
pub fn control_path(pgdata: &Path) -> PathBuf {
    pgdata.join("global/pg_control")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_reads_back_what_it_records() {
        let marker = Marker {
            backup: "20261206T082437".into(),
            system_identifier: Some(7711567971765019824),
        };
        assert_eq!(Marker::parse(&marker.render()), marker);
        let unknown = Marker {
            backup: "b".into(),
            system_identifier: None,
        };
        assert_eq!(Marker::parse(&unknown.render()), unknown);
    }
}
