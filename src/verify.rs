//! Verifying a repository: every backup against its manifest, every WAL
//! segment's pages and record checksums, and the continuity of every
//! timeline. Each problem names the file; nothing is written.

use std::io::{self, Read};
use std::path::Path;

use crate::compression::Compression;
use crate::repo::archive::WalArchive;
use crate::repo::backup::{Backup, BackupFile, BackupFormat};
use crate::repo::manifest_check::{Hashing, ManifestCheck};
use crate::repo::store::{StoreRead, TreeKind};
use crate::repo::tablespace::TablespaceSource;
use crate::repo::wal_source::ArchiveWal;
use crate::wal::facts::{SegmentEnding, WalSource};
use crate::wal::{TimelineId, WalSegment};

/// What verifying one backup found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    pub id: String,
    pub has_manifest: bool,
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<String>,
}

/// What verifying one timeline's WAL found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TimelineReport {
    pub timeline: TimelineId,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    pub segments_checked: u64,
    pub problems: Vec<String>,
}

/// Checks one backup's files against its manifest, streaming through tars
/// without extracting them.
pub fn verify_backup(backups: &dyn StoreRead, backup: &Backup) -> BackupReport {
    let mut report = BackupReport {
        id: backup.id.clone(),
        has_manifest: backup.has_manifest,
        files_checked: 0,
        bytes_checked: 0,
        problems: Vec::new(),
    };
    if !backup.has_manifest {
        return report;
    }
    let manifest_path = backups.describe(&backup.manifest_file().key);
    let parsed = match backup.manifest() {
        None => Err(format!("cannot read `{manifest_path}`")),
        Some(kept) => match &kept.damage {
            Some(damage) => Err(format!("`{manifest_path}` is damaged: {damage}")),
            None => Ok(&kept.parsed),
        },
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(problem) => {
            report.problems.push(problem);
            return report;
        }
    };
    let mut check = ManifestCheck::new(parsed);
    match backup.format {
        BackupFormat::Plain => walk_plain(
            backups,
            &backup.prefix(),
            &backup.prefix(),
            "",
            &mut check,
            &mut report,
        ),
        BackupFormat::Tar(_) => {
            if let Some(base) = backup.base_tar() {
                stream_tar(backups, &base, "", &mut check, &mut report);
            }
        }
    }
    for tablespace in &backup.tablespaces {
        let prefix = format!("pg_tblspc/{}/", tablespace.oid);
        match &tablespace.source {
            TablespaceSource::Tar { .. } => {
                if let Some(file) = backup.tablespace_tar(tablespace.oid) {
                    stream_tar(backups, &file, &prefix, &mut check, &mut report)
                }
            }
            TablespaceSource::Directory(tree) => walk_plain(
                tree.store.as_ref(),
                "",
                "",
                &prefix,
                &mut check,
                &mut report,
            ),
        }
    }
    // A seekable backup's indexes: intact, and made for this backup.
    let tars = backup.base_tar().into_iter().chain(
        backup
            .tablespaces
            .iter()
            .filter_map(|t| backup.tablespace_tar(t.oid)),
    );
    for tar in tars {
        if let Err(problem) =
            crate::seekable::read_index(backups, &tar.key, &backup.manifest_file().key)
        {
            report.problems.push(problem);
        }
    }
    for missing in check.missing() {
        report.problems.push(format!(
            "`{missing}` is listed in backup_manifest but missing from the backup"
        ));
    }
    report
}

fn checksum_stream(
    reader: &mut dyn Read,
    path: &str,
    check: &mut ManifestCheck,
    report: &mut BackupReport,
) -> Result<(), String> {
    let mut sink = Hashing {
        inner: io::sink(),
        checksummer: check.checksummer(path),
        written: 0,
    };
    io::copy(reader, &mut sink).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    report.files_checked += 1;
    report.bytes_checked += sink.written;
    let digest = sink.checksummer.take().map(|c| c.finish());
    check.record(path, sink.written, digest)
}

/// Checks the tree of objects under `root` (a plain backup, or a plain
/// backup's tablespace directory with its own store) level by level from
/// `level`, in key order, as pg_verifybackup walks a directory.
fn walk_plain(
    store: &dyn StoreRead,
    root: &str,
    level: &str,
    prefix: &str,
    check: &mut ManifestCheck,
    report: &mut BackupReport,
) {
    let entries = match store.tree_level(level) {
        Ok(entries) => entries,
        Err(error) => {
            report
                .problems
                .push(format!("cannot read `{}`: {error}", store.describe(level)));
            return;
        }
    };
    for entry in entries {
        let relative = entry.key.get(root.len()..).unwrap_or_default();
        let manifest_path = format!("{prefix}{relative}");
        match entry.kind {
            TreeKind::Group => walk_plain(
                store,
                root,
                &format!("{}/", entry.key),
                prefix,
                check,
                report,
            ),
            TreeKind::Object { .. } => {
                let result = store
                    .open(&entry.key)
                    .map_err(|e| format!("cannot read `{}`: {e}", store.describe(&entry.key)))
                    .and_then(|mut file| checksum_stream(&mut file, &manifest_path, check, report));
                if let Err(problem) = result {
                    report.problems.push(problem);
                }
            }
            // Tablespace links are followed through the backup's tablespaces.
            TreeKind::Link { .. } => {}
        }
    }
}

/// Streams a tar object of the backups store through the manifest check.
fn stream_tar(
    backups: &dyn StoreRead,
    file: &BackupFile,
    prefix: &str,
    check: &mut ManifestCheck,
    report: &mut BackupReport,
) {
    let described = backups.describe(&file.key);
    let path = Path::new(&described);
    let reader = match backups
        .open(&file.key)
        .and_then(|reader| file.compression.decoder(reader))
    {
        Ok(reader) => reader,
        Err(error) => {
            report
                .problems
                .push(format!("cannot open `{}`: {error}", path.display()));
            return;
        }
    };
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(error) => {
            report
                .problems
                .push(format!("cannot read `{}`: {error}", path.display()));
            return;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                report.problems.push(format!(
                    "`{}` is corrupt or truncated: {error}",
                    path.display()
                ));
                return;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match entry.path() {
            Ok(name) => name.to_string_lossy().trim_start_matches("./").to_string(),
            Err(error) => {
                report.problems.push(format!(
                    "`{}` has an unreadable member name: {error}",
                    path.display()
                ));
                continue;
            }
        };
        let manifest_path = format!("{prefix}{name}");
        if let Err(problem) = checksum_stream(&mut entry, &manifest_path, check, report) {
            let in_file = format!("{problem} (in `{}`)", path.display());
            report.problems.push(in_file);
            if problem.starts_with("cannot read") {
                return;
            }
        }
    }
}

/// Checks every timeline of the archive: each segment the timeline owns is
/// decoded (page headers, record checksums) and the segments along its path
/// must be continuous.
pub fn verify_archive(archive: &WalArchive) -> Vec<TimelineReport> {
    let wal = ArchiveWal::uncached(archive);
    let size = archive.segment_size;
    let mut reports = Vec::new();
    for timeline in archive.timelines.timelines() {
        let mut report = TimelineReport {
            timeline,
            first_segment: None,
            last_segment: None,
            segments_checked: 0,
            problems: Vec::new(),
        };
        if let Some(reason) = archive.broken_histories.get(&timeline) {
            report.problems.push(format!(
                "the history file of timeline {timeline} is unreadable: {reason}"
            ));
        }
        let path = match archive.timelines.path(timeline) {
            Ok(path) => path,
            Err(error) => {
                report.problems.push(error.to_string());
                reports.push(report);
                continue;
            }
        };
        // The segments this timeline's own files hold on its path.
        let Some(last) = archive
            .last_segment_on(&path)
            .filter(|end| end.timeline == timeline)
        else {
            reports.push(report);
            continue;
        };
        let begin = path
            .step(timeline)
            .map(|step| WalSegment::containing(timeline, step.begins, size).number)
            .unwrap_or(0);
        let first = (begin..=last.number)
            .find(|n| {
                archive
                    .segment(WalSegment {
                        timeline,
                        number: *n,
                        size,
                    })
                    .is_some()
            })
            .unwrap_or(last.number);
        report.first_segment = Some(
            WalSegment {
                timeline,
                number: first,
                size,
            }
            .file_name(),
        );
        report.last_segment = Some(last.file_name());
        for number in first..=last.number {
            let segment = WalSegment {
                timeline,
                number,
                size,
            };
            match wal.facts(segment) {
                Ok(None) => report.problems.push(format!(
                    "segment `{segment}` is missing (a gap in timeline {timeline})"
                )),
                Ok(Some(facts)) => {
                    report.segments_checked += 1;
                    match &facts.ending {
                        Some(SegmentEnding::Corrupt { problem }) => {
                            report.problems.push(format!("segment `{segment}` is corrupt: {problem}"))
                        }
                        Some(SegmentEnding::EndOfWal) if number < last.number => report.problems.push(format!(
                            "valid WAL ends inside segment `{segment}` (truncated or damaged), but later segments follow"
                        )),
                        _ => {}
                    }
                    if let Some(file) = archive.segment(segment) {
                        if file.compression == Compression::None
                            && file.stored_bytes != size.bytes()
                        {
                            report.problems.push(format!(
                                "segment `{segment}` has {} bytes instead of {}",
                                file.stored_bytes,
                                size.bytes()
                            ));
                        }
                    }
                }
                Err(error) => report.problems.push(error.to_string()),
            }
        }
        reports.push(report);
    }
    reports
}
