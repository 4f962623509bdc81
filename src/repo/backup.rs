//! Base backups made by `pg_basebackup`: what each one is and where it ends.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};

use super::label::{self, BackupHistoryFile, BackupLabel};
use super::manifest::{self, BackupManifest};
use super::pg_control;
use super::tablespace::{self, Tablespace};
use crate::compression::Compression;
use crate::wal::segment::is_segment_name;
use crate::wal::{Lsn, TimelineId};

/// How the backup is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "format", content = "compression")]
pub enum BackupFormat {
    /// `pg_basebackup -Fp`: a data directory.
    Plain,
    /// `pg_basebackup -Ft`: `base.tar[.gz|.lz4|.zst]` (+ `pg_wal.tar[.gz]`;
    /// with lz4 or zstd PostgreSQL 15 leaves `pg_wal.tar` uncompressed).
    Tar(Compression),
}

/// Where the backup's stop time comes from, and so how exact it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopTimeSource {
    /// `STOP TIME` of the backup history file: exact to the second.
    BackupHistoryFile,
    /// The time `backup_manifest` was written: a little after the stop.
    ManifestWritten,
    /// A backup from a standby without a manifest: when its pg_control (the
    /// last file copied, holding the stop point) was last written, to the
    /// second.
    PgControl,
}

/// A base backup that `pitr` understood.
#[derive(Clone, Debug)]
pub struct Backup {
    /// The directory name under the backups directory.
    pub id: String,
    pub dir: PathBuf,
    pub format: BackupFormat,
    pub label: BackupLabel,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    /// The end of the backup: recovery is consistent from here on.
    pub stop_lsn: Lsn,
    /// As written by PostgreSQL (whole seconds) or inferred; see `stop_time_source`.
    pub stop_time: DateTime<FixedOffset>,
    pub stop_time_source: StopTimeSource,
    pub system_identifier: Option<u64>,
    pub major_version: Option<u32>,
    /// Names of the WAL segments the backup carries itself (`-X stream`/`fetch`).
    pub included_wal: BTreeSet<String>,
    pub stored_bytes: u64,
    pub has_manifest: bool,
    pub tablespaces: Vec<Tablespace>,
}

impl Backup {
    /// A time at or after which the backup is certainly consistent.
    ///
    /// `STOP TIME` is written after the backup's end record, truncated to the
    /// second, so the true end lies before `STOP TIME + 1 s`. Choosing a
    /// backup only for targets at or after that bound never picks one whose
    /// consistent point is after the target.
    pub fn consistent_by(&self) -> DateTime<FixedOffset> {
        match self.stop_time_source {
            StopTimeSource::BackupHistoryFile | StopTimeSource::PgControl => {
                self.stop_time + chrono::Duration::seconds(1)
            }
            StopTimeSource::ManifestWritten => self.stop_time,
        }
    }
}

/// A directory under the backups directory that could not be understood.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UnreadableBackup {
    pub id: String,
    pub dir: PathBuf,
    pub reason: String,
}

/// Reads one backup directory. Backup history files from the archive give
/// the stop point; without one, `backup_manifest` does.
pub fn read_backup(
    dir: &Path,
    backup_histories: &[BackupHistoryFile],
    local: &jiff::tz::TimeZone,
) -> Result<Backup> {
    let id = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = detect_format(dir)?;
    let label_text = match format {
        BackupFormat::Plain => fs::read_to_string(dir.join("backup_label"))
            .with_context(|| format!("cannot read `{}`", dir.join("backup_label").display()))?,
        BackupFormat::Tar(compression) => {
            let base = dir.join(format!("base.tar{}", compression.suffix()));
            read_tar_member(&base, compression, "backup_label")?.with_context(|| {
                format!(
                    "`{}` holds no backup_label: it is not a base backup",
                    base.display()
                )
            })?
        }
    };
    let label = label::parse_backup_label(&label_text, local)
        .with_context(|| format!("the backup_label of backup `{id}` is malformed"))?;
    // Incremental backups (17+) are kept: repo::incremental checks their
    // chain once every backup is read, and staging combines it.

    let manifest_path = dir.join("backup_manifest");
    let manifest = if manifest_path.is_file() {
        let bytes = fs::read(&manifest_path)
            .with_context(|| format!("cannot read `{}`", manifest_path.display()))?;
        Some(
            manifest::parse(&bytes)
                .with_context(|| format!("`{}` is malformed", manifest_path.display()))?,
        )
    } else {
        None
    };

    let history = own_history(&label, backup_histories);
    let (stop_lsn, stop_time, stop_time_source) = if label.is_from_standby() {
        standby_stop_point(&id, dir, format, manifest.as_ref(), &manifest_path)?
    } else {
        stop_point(&id, history, manifest.as_ref(), &manifest_path)?
    };

    let (system_identifier, major_version) = match format {
        BackupFormat::Plain => plain_identity(dir),
        BackupFormat::Tar(_) => (manifest.as_ref().and_then(|m| m.system_identifier), None),
    };
    let included_wal = included_wal(dir, format)?;
    let tablespaces = match format {
        BackupFormat::Plain => tablespace::plain_tablespaces(dir)?,
        BackupFormat::Tar(compression) => {
            if tablespace::tablespace_tars(dir)?.is_empty() {
                Vec::new()
            } else {
                let base = dir.join(format!("base.tar{}", compression.suffix()));
                let map = read_tar_member(&base, compression, "tablespace_map")?;
                tablespace::tar_tablespaces(dir, map.as_deref())?
            }
        }
    };

    Ok(Backup {
        id,
        dir: dir.to_path_buf(),
        format,
        timeline: label.start_timeline,
        start_lsn: label.start_lsn,
        stop_lsn,
        stop_time,
        stop_time_source,
        system_identifier,
        major_version,
        included_wal,
        stored_bytes: stored_bytes(dir),
        has_manifest: manifest.is_some(),
        tablespaces,
        label,
    })
}

fn detect_format(dir: &Path) -> Result<BackupFormat> {
    if dir.join("backup_label").is_file() {
        return Ok(BackupFormat::Plain);
    }
    for compression in Compression::ALL {
        if dir
            .join(format!("base.tar{}", compression.suffix()))
            .is_file()
        {
            return Ok(BackupFormat::Tar(compression));
        }
    }
    bail!(
        "`{}` is not a pg_basebackup output: it has neither `backup_label` (plain format) nor `base.tar` with or without a compression suffix (`.gz`, `.lz4`, `.zst`; tar format)",
        dir.display()
    )
}

/// The backup history file this backup wrote when it stopped, if archived.
///
/// Two backups can start at the same LSN (a backup of the primary and one
/// of its standby begin at the same checkpoint and restartpoint), so the
/// start LSN alone proves nothing: the file must repeat this backup's label
/// line for line where a second backup could differ (label, start time,
/// checkpoint, timeline, where it was taken). A standby writes no history
/// file, so a backup taken from one never has one.
fn own_history<'a>(
    label: &BackupLabel,
    backup_histories: &'a [BackupHistoryFile],
) -> Option<&'a BackupHistoryFile> {
    if label.is_from_standby() {
        return None;
    }
    backup_histories.iter().find(|history| {
        let theirs = &history.label;
        theirs.start_lsn == label.start_lsn
            && theirs.checkpoint_lsn == label.checkpoint_lsn
            && theirs.label == label.label
            && theirs.start_time.text == label.start_time.text
            && theirs.start_timeline == label.start_timeline
            && theirs.from == label.from
    })
}

/// Where a backup taken from a standby ends: its manifest's WAL-Ranges
/// End-LSN, else the minimum recovery ending location of its pg_control,
/// which PostgreSQL takes as the stop point of such a backup (pg_control is
/// copied last).
fn standby_stop_point(
    id: &str,
    dir: &Path,
    format: BackupFormat,
    manifest: Option<&BackupManifest>,
    manifest_path: &Path,
) -> Result<(Lsn, DateTime<FixedOffset>, StopTimeSource)> {
    let manifest_stop = manifest.and_then(|m| m.wal_ranges.iter().map(|range| range.end_lsn).max());
    let manifest_written = fs::metadata(manifest_path)
        .and_then(|m| m.modified())
        .ok()
        .map(|time| DateTime::<Utc>::from(time).fixed_offset());
    if let (Some(stop_lsn), Some(written)) = (manifest_stop, manifest_written) {
        return Ok((stop_lsn, written, StopTimeSource::ManifestWritten));
    }
    let bytes = match format {
        BackupFormat::Plain => {
            let path = dir.join("global/pg_control");
            fs::read(&path).with_context(|| format!("cannot read `{}`", path.display()))?
        }
        BackupFormat::Tar(compression) => {
            let base = dir.join(format!("base.tar{}", compression.suffix()));
            read_tar_member_bytes(&base, compression, "global/pg_control")?
                .with_context(|| format!("`{}` holds no global/pg_control", base.display()))?
        }
    };
    let control = pg_control::parse(&bytes)
        .with_context(|| format!("the pg_control of backup `{id}` is unusable"))?;
    let stopped = DateTime::<Utc>::from_timestamp(control.modified, 0);
    match stopped {
        Some(stopped) if control.min_recovery_point != Lsn::ZERO => Ok((
            control.min_recovery_point,
            stopped.fixed_offset(),
            StopTimeSource::PgControl,
        )),
        _ => bail!(
            "cannot tell where backup `{id}` ends: it was taken from a standby (its backup_label says `BACKUP FROM: standby`), it has no backup_manifest, and its pg_control has no minimum recovery ending location"
        ),
    }
}

fn stop_point(
    id: &str,
    history: Option<&BackupHistoryFile>,
    manifest: Option<&BackupManifest>,
    manifest_path: &Path,
) -> Result<(Lsn, DateTime<FixedOffset>, StopTimeSource)> {
    let manifest_stop = manifest.and_then(|m| m.wal_ranges.iter().map(|range| range.end_lsn).max());
    let manifest_written = fs::metadata(manifest_path)
        .and_then(|m| m.modified())
        .ok()
        .map(|time| DateTime::<Utc>::from(time).fixed_offset());
    if let Some(history) = history {
        if let Some(stop_time) = history.stop_time.instant {
            return Ok((
                history.stop_lsn,
                stop_time,
                StopTimeSource::BackupHistoryFile,
            ));
        }
        if let Some(written) = manifest_written {
            return Ok((history.stop_lsn, written, StopTimeSource::ManifestWritten));
        }
        bail!(
            "cannot tell when backup `{id}` ended: its STOP TIME `{}` uses a zone abbreviation other than the local zone's, and it has no backup_manifest",
            history.stop_time.text
        );
    }
    match (manifest_stop, manifest_written) {
        (Some(stop_lsn), Some(written)) => Ok((stop_lsn, written, StopTimeSource::ManifestWritten)),
        _ => bail!(
            "cannot tell where backup `{id}` ends: the WAL archive has no backup history file for it (`<segment>.<offset>.backup`) and it has no backup_manifest"
        ),
    }
}

/// System identifier and major version of a plain backup, from its own files.
fn plain_identity(dir: &Path) -> (Option<u64>, Option<u32>) {
    let system_identifier = fs::read(dir.join("global/pg_control"))
        .ok()
        .and_then(|bytes| pg_control::parse(&bytes).ok())
        .map(|control| control.system_identifier);
    let major_version = fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .and_then(|text| text.trim().parse().ok());
    (system_identifier, major_version)
}

/// Segments that the backup carries: `pg_wal/` of a plain backup, or the
/// members of `pg_wal.tar`, compressed or not.
fn included_wal(dir: &Path, format: BackupFormat) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    match format {
        BackupFormat::Plain => {
            if let Ok(entries) = fs::read_dir(dir.join("pg_wal")) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_segment_name(&name) {
                        names.insert(name);
                    }
                }
            }
        }
        BackupFormat::Tar(_) => {
            for compression in Compression::ALL {
                let path = dir.join(format!("pg_wal.tar{}", compression.suffix()));
                if path.is_file() {
                    let reader = compression
                        .open(&path)
                        .with_context(|| format!("cannot open `{}`", path.display()))?;
                    let mut archive = tar::Archive::new(reader);
                    let entries = archive
                        .entries()
                        .with_context(|| format!("cannot read `{}`", path.display()))?;
                    for entry in entries {
                        let entry =
                            entry.with_context(|| format!("`{}` is corrupt", path.display()))?;
                        let name = entry
                            .path()
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let name = name.trim_start_matches("./");
                        if is_segment_name(name) {
                            names.insert(name.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(names)
}

/// Reads one small member of a tar file as text, stopping at the first match.
pub fn read_tar_member(
    path: &Path,
    compression: Compression,
    member: &str,
) -> Result<Option<String>> {
    read_tar_member_bytes(path, compression, member)?
        .map(|bytes| {
            String::from_utf8(bytes)
                .with_context(|| format!("`{member}` in `{}` is not text", path.display()))
        })
        .transpose()
}

/// Reads one small member of a tar file (up to 1 MiB), stopping at the
/// first match.
pub fn read_tar_member_bytes(
    path: &Path,
    compression: Compression,
    member: &str,
) -> Result<Option<Vec<u8>>> {
    let reader = compression
        .open(path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("`{}` is corrupt", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.trim_start_matches("./") == member {
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read `{member}` in `{}`", path.display()))?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

fn stored_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => walk(&entry.path(), total),
                    Ok(kind) if kind.is_file() => {
                        *total += entry.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                    _ => {}
                }
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total);
    total
}

/// Convenience for messages: a `SystemTime` as local wall time.
pub fn system_time_utc(time: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}
