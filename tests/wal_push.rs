//! `pitr wal-push` as PostgreSQL's archive_command: the files it writes are
//! read by the standard tools, a second push of the same file succeeds,
//! different contents are refused without touching the archive, concurrent
//! pushes of one file all succeed with one archived copy, and a cluster
//! archiving through it restores exactly from zstd and lz4 tar backups.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn push(archive: &Path, extra: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pitr"))
        .args(["wal-push", "--wal-archive"])
        .arg(archive)
        .args(extra)
        .arg(path)
        .output()
        .unwrap()
}

/// A 16 MiB file shaped like a segment: pages of records and zeros.
fn fake_segment(seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; 16 << 20];
    for (i, byte) in data.iter_mut().enumerate() {
        if (i / 8192) % 4 != 3 {
            *byte = ((i % 8192) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8;
        }
    }
    data
}

fn archive_files(archive: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(archive)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn standard_tools_read_what_wal_push_writes() {
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    fs::create_dir(&pg_wal).unwrap();
    let data = fake_segment(1);
    let source = pg_wal.join("000000010000000000000007");
    fs::write(&source, &data).unwrap();
    for (compress, suffix, tool) in [
        ("zstd", ".zst", "zstd"),
        ("lz4", ".lz4", "lz4"),
        ("gzip", ".gz", "gzip"),
        ("none", "", "cat"),
    ] {
        let archive = dir.path().join(format!("wal-{compress}"));
        fs::create_dir(&archive).unwrap();
        let output = push(&archive, &["--compress", compress], &source);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(output.stderr.is_empty(), "silent on success");
        let archived = archive.join(format!("000000010000000000000007{suffix}"));
        assert_eq!(
            archive_files(&archive),
            [format!("000000010000000000000007{suffix}")]
        );
        let args: &[&str] = if tool == "cat" { &[] } else { &["-d", "-c"] };
        if !require_tool("standard_tools_read_what_wal_push_writes", tool) {
            continue;
        }
        let output = Command::new(tool)
            .args(args)
            .arg(&archived)
            .output()
            .unwrap();
        assert!(output.status.success(), "{tool}: {}", stderr(&output));
        assert!(output.stdout == data, "{tool} read other bytes");
    }
    // A level is checked before anything is written.
    let archive = dir.path().join("wal-levels");
    fs::create_dir(&archive).unwrap();
    let output = push(&archive, &["--compress", "zstd", "--level", "30"], &source);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = push(&archive, &["--compress", "lz4", "--level", "3"], &source);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = push(&archive, &["--compress", "zstd", "--level", "19"], &source);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(archive_files(&archive), ["000000010000000000000007.zst"]);
}

#[test]
fn idempotent_refuses_conflicts_and_survives_concurrent_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wal");
    let pg_wal = dir.path().join("pg_wal");
    fs::create_dir(&archive).unwrap();
    fs::create_dir(&pg_wal).unwrap();
    let name = "00000001000000000000000A";
    let source = pg_wal.join(name);
    let data = fake_segment(2);
    fs::write(&source, &data).unwrap();

    // Not a WAL file name: refused, nothing written.
    let stray = pg_wal.join("notes.txt");
    fs::write(&stray, b"x").unwrap();
    let output = push(&archive, &[], &stray);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("notes.txt"), "{}", stderr(&output));
    // No archive directory: refused, not created.
    let output = push(&dir.path().join("unmounted"), &[], &source);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(!dir.path().join("unmounted").exists());
    // A missing source file.
    let output = push(&archive, &[], &pg_wal.join("00000001000000000000000F"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(archive_files(&archive).is_empty());

    let output = push(&archive, &[], &source);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let archived = archive.join(format!("{name}.zst"));
    let stored = fs::read(&archived).unwrap();
    assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));

    // The same file again (PostgreSQL retries after a crash): success,
    // nothing written, also when asked for another compression.
    for compress in ["zstd", "gzip"] {
        let output = push(&archive, &["--compress", compress], &source);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("already archived"),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(archive_files(&archive), [format!("{name}.zst")]);

    // Different contents under the same name: refused, the archive unchanged.
    let mut other = data.clone();
    other[12345] ^= 0x40;
    fs::write(&source, &other).unwrap();
    let output = push(&archive, &[], &source);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&source.display().to_string())
            && message.contains(&archived.display().to_string()),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert_eq!(fs::read(&archived).unwrap(), stored);
    assert_eq!(archive_files(&archive), [format!("{name}.zst")]);

    // A plain copy left by `cp` counts as archived too.
    let plain_name = "00000001000000000000000B";
    fs::write(archive.join(plain_name), &data).unwrap();
    let source_b = pg_wal.join(plain_name);
    fs::write(&source_b, &data).unwrap();
    let output = push(&archive, &[], &source_b);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!archive.join(format!("{plain_name}.zst")).exists());

    // Eight pushes of one file at once: all succeed, one copy is archived,
    // no temporary file is left behind.
    for round in 0..3 {
        let name = format!("0000000100000000000000{:02X}", 0x20 + round);
        let source = pg_wal.join(&name);
        fs::write(&source, fake_segment(round as u8 + 3)).unwrap();
        let children: Vec<_> = (0..8)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_pitr"))
                    .args(["wal-push", "--wal-archive"])
                    .arg(&archive)
                    .arg(&source)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut archived_now = 0;
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            if output.stderr.is_empty() {
                archived_now += 1;
            }
        }
        assert!(archived_now >= 1, "one push wrote the file");
        let copies: Vec<String> = archive_files(&archive)
            .into_iter()
            .filter(|file| file.starts_with(&name))
            .collect();
        assert_eq!(copies, [format!("{name}.zst")]);
        assert!(
            archive_files(&archive)
                .iter()
                .all(|file| !file.starts_with('.')),
            "{:?}",
            archive_files(&archive)
        );
        let output = Command::new(env!("CARGO_BIN_EXE_pitr"))
            .args(["wal-fetch", "--wal-archive"])
            .arg(&archive)
            .arg(&name)
            .arg(dir.path().join("fetched"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(fs::read(dir.path().join("fetched")).unwrap() == fs::read(&source).unwrap());
    }
}

/// Ids and commit times of the markers: one before the backups, the rest
/// after, a target between the second and third.
struct Workload {
    target: String,
}

fn marker_workload(cluster: &Cluster) -> Workload {
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    Workload {
        target: between(&m1, &m2).to_rfc3339(),
    }
}

fn restore_and_count(pitr: &Path, repo: &Path, id: &str, target: &str, pgdata: PathBuf) {
    let output = Command::new(pitr)
        .args(["--json", "restore", "--repo"])
        .arg(repo)
        .args(["--to", target, "--backup", id, "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(
        output.status.success(),
        "restore from {id} failed:\n{}\nlog:\n{}",
        stderr(&output),
        fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["plan"]["backup"]["id"], id);
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(
        psql(
            socket,
            port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM markers"
        ),
        "0,1",
        "restored from {id}"
    );
}

#[test]
fn cluster_archiving_through_wal_push_restores_from_zstd_and_lz4_tar_backups() {
    let dir = shared_tempdir("pitr-walpush-");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    let pitr = shared_pitr_binary(dir.path());
    let archive_command = format!(
        "{} wal-push --repo {} %p",
        shell_quote(&pitr.to_string_lossy()),
        shell_quote(&repo.to_string_lossy())
    );
    let cluster = Cluster::start_archiving(dir.path(), &repo, &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.sql("INSERT INTO markers VALUES (0)");
    cluster.backup(
        "tar-zst-stream",
        &["-Ft", "--compress=zstd", "-X", "stream"],
    );
    cluster.backup("tar-lz4-fetch", &["-Ft", "--compress=lz4", "-X", "fetch"]);
    let workload = marker_workload(&cluster);
    drop(cluster);

    let base = repo.join("base");
    let zst = archive_files(&base.join("tar-zst-stream"));
    assert!(
        zst.contains(&"base.tar.zst".to_string()) && zst.contains(&"pg_wal.tar".to_string()),
        "{zst:?}"
    );
    let lz4 = archive_files(&base.join("tar-lz4-fetch"));
    assert!(lz4.contains(&"base.tar.lz4".to_string()), "{lz4:?}");

    // Everything PostgreSQL archived went through wal-push: zstd segments,
    // zstd backup history files, nothing plain, no temporary files; and
    // the identity the first push recorded (the cluster's system
    // identifier, which later pushes are checked against).
    let mut wal = archive_files(&repo.join("wal"));
    let identity = wal
        .iter()
        .position(|name| name == ".pitr-system-identifier");
    assert!(identity.is_some(), "{wal:?}");
    wal.retain(|name| name != ".pitr-system-identifier");
    assert!(wal.len() >= 4, "{wal:?}");
    assert!(wal.iter().all(|name| name.ends_with(".zst")), "{wal:?}");
    assert!(
        wal.iter().any(|name| name.ends_with(".backup.zst")),
        "{wal:?}"
    );

    for id in ["tar-zst-stream", "tar-lz4-fetch"] {
        restore_and_count(
            &pitr,
            &repo,
            id,
            &workload.target,
            dir.path().join(format!("restore-{id}")),
        );
    }
}
