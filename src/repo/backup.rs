//! Base backups made by `pg_basebackup`: what each one is and where it ends.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};

use super::label::{self, BackupHistoryFile, BackupLabel};
use super::manifest::{self, BackupManifest};
use super::pg_control;
use super::store::{read_all, ObjectInfo, StoreRead};
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
    /// Which of the backup's files exist, and its manifest as read once.
    pub files: BackupFiles,
}

/// What a backup holds beyond its label: found once, when it is scanned.
#[derive(Clone, Debug, Default)]
pub struct BackupFiles {
    /// `pg_wal.tar[...]` of a tar backup made with `-X stream` or `fetch`.
    wal_tar: Option<Compression>,
    manifest: Option<Arc<KeptManifest>>,
}

/// `backup_manifest`, parsed once when the backup was scanned.
#[derive(Debug)]
pub struct KeptManifest {
    pub parsed: BackupManifest,
    /// Why the file's own SHA-256 line does not match its contents, if it
    /// does not (the file is damaged or was edited).
    pub damage: Option<String>,
}

/// One file of a backup: its key in the backups store and its
/// compression. Staging, verify and pg_combinebackup's input read it
/// through the store, never by a path.
#[derive(Clone, Debug)]
pub struct BackupFile {
    pub key: String,
    pub compression: Compression,
}

impl Backup {
    fn file(&self, name: &str, compression: Compression) -> BackupFile {
        BackupFile {
            key: format!("{}/{name}", self.id),
            compression,
        }
    }

    /// The prefix of the backup's objects in the backups store
    /// (`<id>/`): a plain backup's tree is listed under it.
    pub fn prefix(&self) -> String {
        format!("{}/", self.id)
    }

    /// `backup_label` of a plain backup.
    pub fn label_file(&self) -> BackupFile {
        self.file(LABEL, Compression::None)
    }

    /// `backup_manifest`, whether or not the backup has one.
    pub fn manifest_file(&self) -> BackupFile {
        self.file(MANIFEST, Compression::None)
    }

    /// The manifest as read when the backup was scanned.
    pub fn manifest(&self) -> Option<&KeptManifest> {
        self.files.manifest.as_deref()
    }

    /// `base.tar[...]` of a tar backup.
    pub fn base_tar(&self) -> Option<BackupFile> {
        match self.format {
            BackupFormat::Tar(compression) => {
                Some(self.file(&base_tar_name(compression), compression))
            }
            BackupFormat::Plain => None,
        }
    }

    /// `pg_wal.tar[...]` of a tar backup that carries its WAL.
    pub fn wal_tar(&self) -> Option<BackupFile> {
        let compression = self.files.wal_tar?;
        Some(self.file(&wal_tar_name(compression), compression))
    }

    /// The archive of tablespace `oid` of a tar backup.
    pub fn tablespace_tar(&self, oid: u32) -> Option<BackupFile> {
        self.tablespaces
            .iter()
            .find(|t| t.oid == oid)
            .and_then(|t| match &t.source {
                tablespace::TablespaceSource::Tar { key, compression } => Some(BackupFile {
                    key: key.clone(),
                    compression: *compression,
                }),
                tablespace::TablespaceSource::Directory(_) => None,
            })
    }

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
    /// Where it is, as the backups store names it (`describe`).
    pub dir: String,
    pub reason: String,
}

/// Reads backup `id` of the backups store. Backup history files from the
/// archive give the stop point; without one, `backup_manifest` does.
pub fn read_backup(
    backups: &dyn StoreRead,
    id: &str,
    backup_histories: &[BackupHistoryFile],
    local: &jiff::tz::TimeZone,
) -> Result<Backup> {
    let id = id.to_string();
    let prefix = format!("{id}/");
    let top = backups
        .list(&prefix, None)
        .with_context(|| format!("cannot read `{}`", backups.describe(&id)))?;
    let has = |name: &str| {
        top.iter()
            .find(|o| o.key.strip_prefix(&prefix) == Some(name))
    };
    let format = detect_format(backups, &id, &has)?;
    let label_text = match format {
        BackupFormat::Plain => {
            let key = format!("{prefix}{LABEL}");
            read_all(backups, &key)
                .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other))
                .with_context(|| format!("cannot read `{}`", backups.describe(&key)))?
        }
        BackupFormat::Tar(compression) => {
            let key = format!("{prefix}{}", base_tar_name(compression));
            read_member(backups, &key, compression, "backup_label")?.with_context(|| {
                format!(
                    "`{}` holds no backup_label: it is not a base backup",
                    backups.describe(&key)
                )
            })?
        }
    };
    let label = label::parse_backup_label(&label_text, local)
        .with_context(|| format!("the backup_label of backup `{id}` is malformed"))?;
    // Incremental backups (17+) are kept: repo::incremental checks their
    // chain once every backup is read, and staging combines it.

    let manifest_key = format!("{prefix}{MANIFEST}");
    let manifest_object = has(MANIFEST);
    let manifest = match manifest_object {
        Some(_) => {
            let bytes = read_all(backups, &manifest_key)
                .with_context(|| format!("cannot read `{}`", backups.describe(&manifest_key)))?;
            let parsed = manifest::parse(&bytes)
                .with_context(|| format!("`{}` is malformed", backups.describe(&manifest_key)))?;
            let damage = manifest::verify_manifest_checksum(&bytes)
                .err()
                .map(|error| error.to_string());
            Some(Arc::new(KeptManifest { parsed, damage }))
        }
        None => None,
    };
    let manifest_written =
        manifest_object.map(|object| DateTime::<Utc>::from(object.modified).fixed_offset());

    let history = own_history(&label, backup_histories);
    let (stop_lsn, stop_time, stop_time_source) = if label.is_from_standby() {
        standby_stop_point(
            &id,
            backups,
            &prefix,
            format,
            manifest.as_ref().map(|m| &m.parsed),
            manifest_written,
        )?
    } else {
        stop_point(
            &id,
            history,
            manifest.as_ref().map(|m| &m.parsed),
            manifest_written,
        )?
    };

    let (system_identifier, major_version) = match format {
        BackupFormat::Plain => plain_identity(backups, &prefix),
        BackupFormat::Tar(_) => (
            manifest.as_ref().and_then(|m| m.parsed.system_identifier),
            None,
        ),
    };
    let wal_tar = match format {
        BackupFormat::Plain => None,
        BackupFormat::Tar(_) => Compression::ALL
            .into_iter()
            .find(|compression| has(&wal_tar_name(*compression)).is_some()),
    };
    let included_wal = included_wal(backups, &prefix, format, wal_tar)?;
    let tablespaces = match format {
        BackupFormat::Plain => tablespace::plain_tablespaces(backups, &prefix)?,
        BackupFormat::Tar(compression) => {
            let tars = tablespace::tablespace_tars(&top, &prefix);
            if tars.is_empty() {
                Vec::new()
            } else {
                let key = format!("{prefix}{}", base_tar_name(compression));
                let map = read_member(backups, &key, compression, "tablespace_map")?;
                tablespace::tar_tablespaces(backups, &id, tars, map.as_deref())?
            }
        }
    };

    Ok(Backup {
        id,
        stored_bytes: match format {
            // A tar backup is the files at its top, listed above: no more
            // LIST requests per backup on an object store.
            BackupFormat::Tar(_) => top.iter().map(|object| object.size).sum(),
            BackupFormat::Plain => stored_bytes(backups, &prefix),
        },
        format,
        timeline: label.start_timeline,
        start_lsn: label.start_lsn,
        stop_lsn,
        stop_time,
        stop_time_source,
        system_identifier,
        major_version,
        included_wal,
        has_manifest: manifest.is_some(),
        tablespaces,
        label,
        files: BackupFiles { wal_tar, manifest },
    })
}

fn detect_format<'a>(
    backups: &dyn StoreRead,
    id: &str,
    has: &dyn Fn(&str) -> Option<&'a ObjectInfo>,
) -> Result<BackupFormat> {
    if has(LABEL).is_some() {
        return Ok(BackupFormat::Plain);
    }
    for compression in Compression::ALL {
        if has(&base_tar_name(compression)).is_some() {
            return Ok(BackupFormat::Tar(compression));
        }
    }
    bail!(
        "`{}` is not a pg_basebackup output: it has neither `backup_label` (plain format) nor `base.tar` with or without a compression suffix (`.gz`, `.lz4`, `.zst`; tar format)",
        backups.describe(id)
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
    backups: &dyn StoreRead,
    prefix: &str,
    format: BackupFormat,
    manifest: Option<&BackupManifest>,
    manifest_written: Option<DateTime<FixedOffset>>,
) -> Result<(Lsn, DateTime<FixedOffset>, StopTimeSource)> {
    let manifest_stop = manifest.and_then(|m| m.wal_ranges.iter().map(|range| range.end_lsn).max());
    if let (Some(stop_lsn), Some(written)) = (manifest_stop, manifest_written) {
        return Ok((stop_lsn, written, StopTimeSource::ManifestWritten));
    }
    let bytes = match format {
        BackupFormat::Plain => {
            let key = format!("{prefix}global/pg_control");
            read_all(backups, &key)
                .with_context(|| format!("cannot read `{}`", backups.describe(&key)))?
        }
        BackupFormat::Tar(compression) => {
            let key = format!("{prefix}{}", base_tar_name(compression));
            read_member_bytes(backups, &key, compression, "global/pg_control")?.with_context(
                || format!("`{}` holds no global/pg_control", backups.describe(&key)),
            )?
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
    manifest_written: Option<DateTime<FixedOffset>>,
) -> Result<(Lsn, DateTime<FixedOffset>, StopTimeSource)> {
    let manifest_stop = manifest.and_then(|m| m.wal_ranges.iter().map(|range| range.end_lsn).max());
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
fn plain_identity(backups: &dyn StoreRead, prefix: &str) -> (Option<u64>, Option<u32>) {
    let system_identifier = read_all(backups, &format!("{prefix}global/pg_control"))
        .ok()
        .and_then(|bytes| pg_control::parse(&bytes).ok())
        .map(|control| control.system_identifier);
    let major_version = read_all(backups, &format!("{prefix}PG_VERSION"))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse().ok());
    (system_identifier, major_version)
}

/// Segments that the backup carries: `pg_wal/` of a plain backup, or the
/// members of `pg_wal.tar`, compressed or not.
fn included_wal(
    backups: &dyn StoreRead,
    prefix: &str,
    format: BackupFormat,
    wal_tar: Option<Compression>,
) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    match format {
        BackupFormat::Plain => {
            let wal_prefix = format!("{prefix}pg_wal/");
            for object in backups.list(&wal_prefix, None).unwrap_or_default() {
                let name = &object.key[wal_prefix.len()..];
                if is_segment_name(name) {
                    names.insert(name.to_string());
                }
            }
        }
        BackupFormat::Tar(_) => {
            if let Some(compression) = wal_tar {
                let key = format!("{prefix}{}", wal_tar_name(compression));
                let described = backups.describe(&key);
                let reader = backups
                    .open(&key)
                    .and_then(|reader| compression.decoder(reader))
                    .with_context(|| format!("cannot open `{described}`"))?;
                let mut archive = tar::Archive::new(reader);
                let entries = archive
                    .entries()
                    .with_context(|| format!("cannot read `{described}`"))?;
                for entry in entries {
                    let entry = entry.with_context(|| format!("`{described}` is corrupt"))?;
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
    Ok(names)
}

/// Reads one small member of a (compressed) tar object as text.
fn read_member(
    backups: &dyn StoreRead,
    key: &str,
    compression: Compression,
    member: &str,
) -> Result<Option<String>> {
    read_member_bytes(backups, key, compression, member)?
        .map(|bytes| {
            String::from_utf8(bytes)
                .with_context(|| format!("`{member}` in `{}` is not text", backups.describe(key)))
        })
        .transpose()
}

/// Reads one small member (up to 1 MiB) of a (compressed) tar object.
fn read_member_bytes(
    backups: &dyn StoreRead,
    key: &str,
    compression: Compression,
    member: &str,
) -> Result<Option<Vec<u8>>> {
    let described = backups.describe(key);
    let reader = backups
        .open(key)
        .and_then(|reader| compression.decoder(reader))
        .with_context(|| format!("cannot open `{described}`"))?;
    tar_member(reader, member, &described)
}

/// Reads one small member of a tar stream, stopping at the first match;
/// `described` names the tar in messages.
fn tar_member(reader: impl Read, member: &str, described: &str) -> Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .with_context(|| format!("cannot read `{described}`"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("`{described}` is corrupt"))?;
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
                .with_context(|| format!("cannot read `{member}` in `{described}`"))?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// The size of everything under `prefix`.
fn stored_bytes(backups: &dyn StoreRead, prefix: &str) -> u64 {
    let files: u64 = backups
        .list(prefix, None)
        .map(|objects| objects.iter().map(|object| object.size).sum())
        .unwrap_or(0);
    let below: u64 = backups
        .list_prefixes(prefix)
        .unwrap_or_default()
        .iter()
        .map(|name| stored_bytes(backups, &format!("{prefix}{name}/")))
        .sum();
    files + below
}

/// The parsed `backup_manifest` of backup `id`, if it has a readable one.
pub fn read_manifest(backups: &dyn StoreRead, id: &str) -> Option<BackupManifest> {
    let bytes = super::store::read_all(backups, &format!("{id}/{MANIFEST}")).ok()?;
    manifest::parse(&bytes).ok()
}

/// The `backup_label` inside the `base.tar` of a tar backup `id`, in any
/// compression pitr reads.
pub fn read_tar_label(backups: &dyn StoreRead, id: &str) -> Option<String> {
    Compression::ALL.into_iter().find_map(|compression| {
        let key = format!("{id}/{}", base_tar_name(compression));
        let reader = backups.open(&key).ok()?;
        let reader = compression.decoder(reader).ok()?;
        tar_member(reader, "backup_label", &backups.describe(&key))
            .ok()
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    })
}

/// The file names of a backup made by pg_basebackup: spelled here only.
pub const LABEL: &str = "backup_label";
pub const MANIFEST: &str = "backup_manifest";

/// `base.tar` with the compression's suffix.
pub fn base_tar_name(compression: Compression) -> String {
    format!("base.tar{}", compression.suffix())
}

/// `pg_wal.tar` with the compression's suffix.
pub fn wal_tar_name(compression: Compression) -> String {
    format!("pg_wal.tar{}", compression.suffix())
}

/// Convenience for messages: a `SystemTime` as local wall time.
pub fn system_time_utc(time: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}

#[cfg(test)]
mod kept_manifest_tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::repo::store::posix::Posix;
    use std::fs;
    use std::path::Path;

    /// A plain backup `b1` made of the PostgreSQL 15 fixture's label and
    /// manifest, the manifest passed through `damage`.
    fn backup_with_manifest(dir: &Path, damage: impl Fn(String) -> String) -> Backup {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/15");
        let backup = dir.join("b1");
        fs::create_dir(&backup).unwrap();
        fs::copy(fixtures.join("backup_label"), backup.join("backup_label")).unwrap();
        let mut manifest = String::new();
        Compression::Gzip
            .decoder(fs::File::open(fixtures.join("backup_manifest.gz")).unwrap())
            .unwrap()
            .read_to_string(&mut manifest)
            .unwrap();
        fs::write(backup.join("backup_manifest"), damage(manifest)).unwrap();
        let store = Posix::new(dir);
        read_backup(&store, "b1", &[], &jiff::tz::TimeZone::UTC).unwrap()
    }

    #[test]
    fn the_manifest_is_read_once_with_its_checksum_result() {
        let dir = tempfile::tempdir().unwrap();
        let backup = backup_with_manifest(dir.path(), |text| text);
        let kept = backup.manifest().unwrap();
        assert!(kept.damage.is_none());
        assert!(kept.parsed.files.iter().any(|f| f.path == "PG_VERSION"));
        assert_eq!(backup.manifest_file().key, "b1/backup_manifest");
        assert_eq!(backup.label_file().key, "b1/backup_label");
        assert!(backup.base_tar().is_none() && backup.wal_tar().is_none());
        // The kept copy is what verify uses: the file is not read again.
        fs::remove_file(dir.path().join("b1/backup_manifest")).unwrap();
        let report = crate::verify::verify_backup(&Posix::new(dir.path()), &backup);
        assert!(
            !report.problems.iter().any(|p| p.contains("cannot read")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn a_damaged_manifest_is_kept_with_its_damage_and_refused_where_used() {
        let dir = tempfile::tempdir().unwrap();
        // Still valid JSON, but no longer what its checksum line covers.
        let backup = backup_with_manifest(dir.path(), |text| {
            text.replacen("\"Size\": 3,", "\"Size\": 4,", 1)
        });
        let kept = backup.manifest().unwrap();
        assert!(kept.damage.is_some());
        let report = crate::verify::verify_backup(&Posix::new(dir.path()), &backup);
        assert!(
            report.problems.iter().any(|p| p.contains("is damaged")),
            "{:?}",
            report.problems
        );
    }
}
