//! Real files written by PostgreSQL 13 to 18 (fixtures/<major>/, made by
//! scripts/make-version-fixtures.sh), read by pitr's parsers and checked
//! against what each major's own tools said about them: `pg_controldata`
//! (kept beside each pg_control) and the files' cross-references (label,
//! backup history file, manifest WAL range, backup-end record in the WAL).
//! No server is needed.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use pitr::postgres::binaries::parse_version_output;
use pitr::repo::label::{parse_backup_history, parse_backup_label, BackupHistoryFile, BackupLabel};
use pitr::repo::manifest::{self, BackupManifest};
use pitr::repo::pg_control::{self, ControlFile};
use pitr::wal::decode::{Event, EventKind, StartAt, WalDecoder};
use pitr::wal::page::LongPageHeader;
use pitr::wal::{Lsn, SegmentSize, WalSegment};

const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

fn fixture_dir(major: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(major.to_string())
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
}

/// A `Key: value` line of pg_controldata's output.
fn controldata<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("pg_controldata has no `{key}`"))
        .trim()
}

/// The files of one backup (full, or 17+'s incremental) of one major.
struct BackupFixture {
    major: u32,
    dir: PathBuf,
    label: BackupLabel,
    history: BackupHistoryFile,
    manifest: BackupManifest,
    control: ControlFile,
    controldata: String,
}

fn read_backup(major: u32, dir: &Path) -> BackupFixture {
    let utc = TimeZone::UTC;
    let label_text = fs::read_to_string(dir.join("backup_label")).unwrap();
    let label = parse_backup_label(&label_text, &utc)
        .unwrap_or_else(|e| panic!("{major}: backup_label: {e}"));
    let history_path = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "backup"))
        .unwrap_or_else(|| panic!("{major}: no backup history file in {}", dir.display()));
    let history = parse_backup_history(&fs::read_to_string(&history_path).unwrap(), &utc)
        .unwrap_or_else(|e| panic!("{major}: backup history file: {e}"));
    let manifest_bytes = gunzip(&dir.join("backup_manifest.gz"));
    manifest::verify_manifest_checksum(&manifest_bytes)
        .unwrap_or_else(|e| panic!("{major}: manifest checksum: {e}"));
    let manifest =
        manifest::parse(&manifest_bytes).unwrap_or_else(|e| panic!("{major}: manifest: {e}"));
    let control = pg_control::parse(&fs::read(dir.join("pg_control")).unwrap())
        .unwrap_or_else(|e| panic!("{major}: pg_control: {e}"));
    BackupFixture {
        major,
        dir: dir.to_path_buf(),
        label,
        history,
        manifest,
        control,
        controldata: fs::read_to_string(dir.join("pg_controldata.txt")).unwrap(),
    }
}

fn full_backup(major: u32) -> BackupFixture {
    let dir = fixture_dir(major);
    let version = fs::read_to_string(dir.join("VERSION")).unwrap();
    assert_eq!(parse_version_output(&version), Some(major), "{version}");
    read_backup(major, &dir)
}

#[test]
fn backup_labels_and_history_files_of_every_major() {
    for major in MAJORS {
        let b = full_backup(major);
        let label = &b.label;
        assert_eq!(label.label, "fixture-full");
        assert_eq!(label.method, "streamed");
        // 13 still called the primary "master".
        let from = if major <= 13 { "master" } else { "primary" };
        assert_eq!(label.from.as_deref(), Some(from), "{major}");
        assert_eq!(label.incremental_from, None, "{major}");
        assert!(label.start_time.instant.is_some(), "{major}: UTC resolves");
        assert_eq!(label.start_timeline.value(), 1);
        // The history file repeats the label's start and adds the stop.
        assert_eq!(b.history.label, *label, "{major}");
        assert!(b.history.stop_lsn > label.start_lsn, "{major}");
        assert!(b.history.stop_time.instant.is_some());
        assert_eq!(
            b.history.stop_segment, label.start_segment,
            "{major}: a small backup starts and stops in one segment"
        );
    }
}

#[test]
fn manifests_of_every_major_and_the_v2_system_identifier() {
    for major in MAJORS {
        let b = full_backup(major);
        let system_identifier: u64 = controldata(&b.controldata, "Database system identifier")
            .parse()
            .unwrap();
        // Version 2 with System-Identifier from 17 on (reference §2.3).
        if major >= 17 {
            assert_eq!(b.manifest.version, 2, "{major}");
            assert_eq!(b.manifest.system_identifier, Some(system_identifier));
        } else {
            assert_eq!(b.manifest.version, 1, "{major}");
            assert_eq!(b.manifest.system_identifier, None, "{major}");
        }
        assert_eq!(b.manifest.wal_ranges.len(), 1);
        let range = &b.manifest.wal_ranges[0];
        assert_eq!(
            (range.timeline, range.start_lsn, range.end_lsn),
            (
                b.label.start_timeline,
                b.label.start_lsn,
                b.history.stop_lsn
            ),
            "{major}: WAL-Ranges is the backup's start to stop"
        );
        let files: Vec<&str> = b.manifest.files.iter().map(|f| f.path.as_str()).collect();
        for expected in ["backup_label", "PG_VERSION", "global/pg_control"] {
            assert!(files.contains(&expected), "{major}: {expected}");
        }
        let pg_control = b
            .manifest
            .files
            .iter()
            .find(|f| f.path == "global/pg_control")
            .unwrap();
        assert_eq!(pg_control.size, 8192);
        assert!(b.dir.join("pg_control").is_file());
    }
}

#[test]
fn pg_control_of_every_major_matches_pg_controldata() {
    for major in MAJORS {
        let b = full_backup(major);
        let c = &b.control;
        let number = |key: &str| -> u64 { controldata(&b.controldata, key).parse().unwrap() };
        assert_eq!(
            u64::from(c.pg_control_version),
            number("pg_control version number"),
            "{major}"
        );
        assert_eq!(
            u64::from(c.catalog_version),
            number("Catalog version number")
        );
        assert_eq!(c.system_identifier, number("Database system identifier"));
        assert_eq!(
            c.checkpoint_lsn,
            controldata(&b.controldata, "Latest checkpoint location")
                .parse::<Lsn>()
                .unwrap()
        );
        // "epoch:xid"; the checkpoint copy's FullTransactionId.
        let next_xid = controldata(&b.controldata, "Latest checkpoint's NextXID");
        let (epoch, xid) = next_xid.split_once(':').unwrap();
        assert_eq!(
            c.next_xid,
            (epoch.parse::<u64>().unwrap() << 32) | xid.parse::<u64>().unwrap(),
            "{major}"
        );
        assert_eq!(
            c.min_recovery_point,
            controldata(&b.controldata, "Minimum recovery ending location")
                .parse::<Lsn>()
                .unwrap(),
            "{major}"
        );
        assert_eq!(
            c.segment_size.bytes(),
            number("Bytes per WAL segment"),
            "{major}"
        );
        assert_eq!(
            u64::from(c.wal_block_size),
            number("WAL block size"),
            "{major}"
        );
        assert_eq!(
            c.state_name(),
            Some(controldata(&b.controldata, "Database cluster state"))
        );
        // The major is told by the catalog version (1300 is 13 to 16).
        assert_eq!(c.major_version(), Some(major), "{major}");
    }
}

/// 18's pg_control has its CRC at byte 292, not 288 (reference §1.1): on the
/// real file the CRC checks out at 292 and not at 288.
#[test]
fn pg18_control_file_has_its_crc_at_292() {
    let bytes = fs::read(fixture_dir(18).join("pg_control")).unwrap();
    let at = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    assert_eq!(at(8), 1800);
    assert_eq!(at(292), crc32c::crc32c(&bytes[..292]));
    assert_ne!(at(288), crc32c::crc32c(&bytes[..288]));
    for major in 13..=17 {
        let bytes = fs::read(fixture_dir(major).join("pg_control")).unwrap();
        let stored = u32::from_le_bytes(bytes[288..292].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&bytes[..288]), "{major}");
    }
}

/// The backup's first WAL segment: its page magic names the major, and the
/// decoder finds the backup's checkpoint and its end record where the label
/// and the history file say they are.
#[test]
fn wal_of_every_major_is_decoded() {
    for major in MAJORS {
        let b = full_backup(major);
        check_start_segment(&b);
    }
}

fn check_start_segment(b: &BackupFixture) {
    let major = b.major;
    let size = SegmentSize::new(1 << 20).unwrap();
    let name = &b.label.start_segment;
    let bytes = gunzip(&b.dir.join("wal").join(format!("{name}.gz")));
    assert_eq!(bytes.len(), 1 << 20, "{major}: a whole 1 MiB segment");
    let header = LongPageHeader::parse(&bytes).unwrap();
    assert_eq!(header.major_version(), Some(major), "{major}: page magic");
    assert_eq!(header.system_identifier, b.control.system_identifier);
    assert_eq!(header.segment_size, size);

    let segment = WalSegment::parse(name, size).unwrap();
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    let mut reader = decoder.segment(segment, &bytes[..]);
    let (mut checkpoint, mut backup_end) = (None, None);
    while let Some(record) = reader.next_record() {
        let record = record.unwrap_or_else(|e| panic!("{major}: {e}"));
        match record.event {
            Some(Event {
                kind: EventKind::Checkpoint(c),
                ..
            }) if record.start == b.label.checkpoint_lsn => {
                // The backup's pg_control holds a copy of this checkpoint.
                assert_eq!(c.next_xid.value(), b.control.next_xid, "{major}");
                checkpoint = Some(c.redo)
            }
            Some(Event {
                kind: EventKind::BackupEnd { start_lsn },
                ..
            }) => backup_end = Some((*start_lsn, record.end)),
            _ => {}
        }
    }
    let summary = reader.finish().unwrap();
    assert_eq!(
        checkpoint,
        Some(b.label.start_lsn),
        "{major}: the backup checkpoint's redo is the backup start"
    );
    assert_eq!(
        backup_end,
        Some((b.label.start_lsn, b.history.stop_lsn)),
        "{major}: the backup-end record names the start and ends at STOP WAL LOCATION"
    );
    assert!(
        summary.ends_with_switch(),
        "{major}: the stop switched segments"
    );
}

/// 17 and 18: an incremental backup on top of the full one. Its label
/// names the full backup's start (`INCREMENTAL FROM LSN`); everything else
/// reads like a full backup.
#[test]
fn incremental_backups_of_17_and_18() {
    for major in [17, 18] {
        let full = full_backup(major);
        let incremental = read_backup(major, &fixture_dir(major).join("incremental"));
        assert_eq!(incremental.label.label, "fixture-incremental");
        assert_eq!(
            incremental.label.incremental_from,
            Some(full.label.start_lsn),
            "{major}"
        );
        assert_eq!(incremental.history.label, incremental.label);
        assert_eq!(incremental.manifest.version, 2);
        assert_eq!(
            incremental.manifest.system_identifier,
            Some(full.control.system_identifier)
        );
        assert!(incremental.label.start_lsn > full.history.stop_lsn);
        check_start_segment(&incremental);
    }
}
