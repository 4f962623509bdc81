//! Staging and verify need nothing but the read role: a tar backup with a
//! tablespace is scanned, staged and verified from a store that has no
//! local directory and names its objects with something that is no path
//! (as an object store would), so any use of a path fails.

#![allow(clippy::disallowed_methods)] // the test builds its fixtures on disk

use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::*;
use crate::compression::Compression;
use crate::plan::{RecoverableWindow, WalRange};
use crate::repo::backup::{read_backup, BackupFormat};
use crate::repo::manifest::{checksum_hex, ChecksumAlgorithm};
use crate::repo::store::posix::Posix;
use crate::repo::store::{ObjectInfo, ObjectReader};
use crate::target::Target;
use crate::wal::timelines::TimelinePath;
use crate::wal::{SegmentSize, TimelineId, WalSegment};

/// The posix store with its directory hidden: no `local_dir`, keys
/// described as `hidden:<key>`, and the default (object-store) tree
/// listing without modes or links.
#[derive(Debug)]
struct Hidden(Posix);

impl StoreRead for Hidden {
    fn describe(&self, key: &str) -> String {
        format!("hidden:{key}")
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> io::Result<Vec<ObjectInfo>> {
        self.0.list(prefix, start_after)
    }
    fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.0.list_prefixes(prefix)
    }
    fn hidden_groups(&self) -> io::Result<Vec<crate::repo::store::HiddenGroup>> {
        self.0.hidden_groups()
    }
    fn stat(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        self.0.stat(key)
    }
    fn open(&self, key: &str) -> io::Result<ObjectReader> {
        self.0.open(key)
    }
    fn open_range(&self, key: &str, range: Range<u64>) -> io::Result<ObjectReader> {
        self.0.open_range(key, range)
    }
    fn identity(&self) -> String {
        "hidden".to_string()
    }
    fn local_dir(&self, _prefix: &str) -> Option<PathBuf> {
        None
    }
}

const TABLESPACE_FILE: &str = "PG_15_202209061/5/16400";

/// The files of the backup's `base.tar` and of its tablespace's tar.
fn base_files(old_location: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/15");
    vec![
        ("PG_VERSION", b"15\n".to_vec()),
        (
            "backup_label",
            fs::read(fixtures.join("backup_label")).unwrap(),
        ),
        (
            "global/pg_control",
            fs::read(fixtures.join("pg_control")).unwrap(),
        ),
        ("base/5/1259", (0..20_000u32).map(|i| i as u8).collect()),
        (
            "tablespace_map",
            format!("16384 {}\n", old_location.display()).into_bytes(),
        ),
    ]
}

fn tar_of(path: &Path, compression: Compression, files: &[(&str, Vec<u8>)]) {
    let encoder = compression
        .encoder(fs::File::create(path).unwrap(), None)
        .unwrap();
    let mut builder = tar::Builder::new(encoder);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    let mut encoder = builder.into_inner().unwrap();
    encoder.flush().unwrap();
    encoder.finish().unwrap();
}

/// `backup_manifest` listing `files` with SHA-256 checksums.
fn manifest(files: &[(String, &[u8])]) -> String {
    let entries: Vec<String> = files
        .iter()
        .map(|(path, bytes)| {
            format!(
                "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-24 03:57:45 GMT\", \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"{}\" }}",
                bytes.len(),
                checksum_hex(ChecksumAlgorithm::Sha256, bytes)
            )
        })
        .collect();
    let body = format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{}\n],\n\"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"0/700028\", \"End-LSN\": \"0/700100\" }}\n],\n",
        entries.join(",\n")
    );
    let checksum = checksum_hex(ChecksumAlgorithm::Sha256, body.as_bytes());
    format!("{body}\"Manifest-Checksum\": \"{checksum}\"}}\n")
}

#[test]
fn a_tar_backup_is_staged_and_verified_through_a_store_without_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("backups");
    let backup_dir = repo.join("b1");
    fs::create_dir_all(&backup_dir).unwrap();
    let old_location = dir.path().join("old_ts");
    let base = base_files(&old_location);
    let tablespace = vec![(TABLESPACE_FILE, b"tablespace block".to_vec())];
    tar_of(&backup_dir.join("base.tar.gz"), Compression::Gzip, &base);
    tar_of(
        &backup_dir.join("16384.tar"),
        Compression::None,
        &tablespace,
    );
    let mut listed: Vec<(String, &[u8])> = base
        .iter()
        .map(|(name, bytes)| (name.to_string(), &bytes[..]))
        .collect();
    listed.push((
        format!("pg_tblspc/16384/{TABLESPACE_FILE}"),
        &tablespace[0].1[..],
    ));
    fs::write(backup_dir.join("backup_manifest"), manifest(&listed)).unwrap();

    let store = Hidden(Posix::new(&repo));
    let backup = read_backup(&store, "b1", &[], &jiff::tz::TimeZone::UTC).unwrap();
    assert_eq!(backup.format, BackupFormat::Tar(Compression::Gzip));
    assert_eq!(backup.tablespaces.len(), 1);

    let report = crate::verify::verify_backup(&store, &backup);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.files_checked, listed.len() as u64);

    let pgdata = dir.path().join("pgdata");
    let new_location = dir.path().join("new_ts");
    let placements = tablespaces::place(
        &backup.tablespaces,
        &[(old_location.clone(), new_location.clone())],
        &pgdata,
        false,
    )
    .unwrap();
    let segment = WalSegment {
        timeline: TimelineId::FIRST,
        number: 7,
        size: SegmentSize::DEFAULT,
    };
    let plan = Plan {
        reason: "test".to_string(),
        timeline: TimelineId::FIRST,
        path: TimelinePath { steps: Vec::new() },
        target: Target::Latest,
        inclusive: true,
        wal: WalRange {
            first: segment,
            last: segment,
            segments: 1,
            bytes: 0,
            from_backup: 0,
        },
        window: RecoverableWindow {
            from: backup.stop_time,
            until: None,
            exact: false,
            from_note: None,
        },
        stop: None,
        wal_end: None,
        notes: Vec::new(),
        backup,
    };
    let settings = RecoverySettings {
        restore_command: "false".to_string(),
        target: Target::Latest,
        inclusive: true,
        timeline: TimelineId::FIRST,
        action: crate::target::Action::Promote,
        port: 5432,
        socket_dir: "/tmp".to_string(),
        keep_archiving: false,
        major_version: 15,
        durability: crate::postgres::settings::Durability::Durable,
    };
    let user = OsUser {
        name: "test".to_string(),
        uid: nix::unistd::Uid::effective(),
        gid: nix::unistd::Gid::effective(),
        switch: false,
    };
    let staged = stage(
        &StageRequest {
            backups: &store,
            plan: &plan,
            pgdata: &pgdata,
            destination: &Destination::Absent,
            placements: &placements,
            user: &user,
            settings: &settings,
            verify: true,
            combine: None,
            workers: 2,
            sparse_databases: &[],
        },
        &Reporter::new(true),
    )
    .unwrap();
    assert_eq!(staged.pgdata, pgdata);
    for (name, bytes) in &base {
        if *name != "tablespace_map" {
            assert_eq!(&fs::read(pgdata.join(name)).unwrap(), bytes, "{name}");
        }
    }
    assert_eq!(
        fs::read(new_location.join(TABLESPACE_FILE)).unwrap(),
        tablespace[0].1
    );
    // The staged map points at the new location.
    assert_eq!(
        fs::read_to_string(pgdata.join("tablespace_map")).unwrap(),
        format!("16384 {}\n", new_location.display())
    );
    assert!(pgdata.join("recovery.signal").is_file());
}
