//! Backups in the shapes pg_basebackup makes them: plain with `-X none`,
//! uncompressed tar with `-X fetch`, tar.gz with `-X stream`; a repository
//! path with spaces and a quote (restore_command quoting); a backup
//! directory that cannot be understood, reported and not used.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn every_wal_method_and_tar_format_restores_exactly() {
    let dir = shared_tempdir("pitr-formats-");
    // Spaces and a quote: restore_command must quote them for the shell
    // and for postgresql.conf.
    let repo = dir.path().join("it's a repo");
    fs::create_dir_all(&repo).unwrap();
    let cluster = Cluster::start(dir.path(), &repo);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.backup("plain-none", &["-Fp", "-X", "none"]);
    cluster.backup("tar-fetch", &["-Ft", "-X", "fetch"]);
    cluster.backup("tar-gz-stream", &["-Ft", "-z", "-X", "stream"]);
    // Not a backup: reported, never used.
    fs::create_dir_all(repo.join("base/notes")).unwrap();
    fs::write(repo.join("base/notes/README"), b"not a backup").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    drop(cluster);

    let pitr = shared_pitr_binary(dir.path());
    let list = Command::new(&pitr)
        .args(["list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let listing = check(list, "pitr list");
    assert!(
        listing.contains("notes") && listing.contains("cannot be used"),
        "{listing}"
    );
    for id in ["plain-none", "tar-fetch", "tar-gz-stream"] {
        assert!(listing.contains(id), "{listing}");
    }

    let target = between(&m1, &m2).to_rfc3339();
    for id in ["plain-none", "tar-fetch", "tar-gz-stream"] {
        let pgdata = dir.path().join(format!("restore {id}"));
        let output = Command::new(&pitr)
            .args(["--json", "restore", "--repo"])
            .arg(&repo)
            .args(["--to", &target, "--backup", id, "--pgdata"])
            .arg(&pgdata)
            .output()
            .unwrap();
        let _guard = ServerGuard(pgdata.clone());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "restore from {id} failed:\n{stderr}\nlog:\n{}",
            fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
        );
        assert!(stderr.contains("backup `notes` cannot be used"), "{stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["plan"]["backup"]["id"], id);
        let auto_conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        assert!(auto_conf.contains("archive_mode = 'off'"), "{auto_conf}");
        // Promoted: pitr's recovery settings are gone (the timeline it
        // wrote, always a number, is checked where it is rendered).
        assert!(!auto_conf.contains("recovery_target"), "{auto_conf}");
        let socket = std::path::Path::new(summary["socket_dir"].as_str().unwrap());
        let port = summary["port"].as_u64().unwrap() as u16;
        assert_eq!(
            psql(socket, port, "SELECT count(*) FROM markers"),
            "1",
            "restored from {id}"
        );
    }
}

/// An archive written by a compressing shell archive_command, as many
/// installations have: every segment and backup history file is `.gz`.
#[test]
fn gzip_archive_command_restores_exactly() {
    let dir = shared_tempdir("pitr-gzarchive-");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    let wal = shell_quote(&repo.join("wal").to_string_lossy());
    let cluster = Cluster::start_archiving(
        dir.path(),
        &repo,
        &format!("test ! -f {wal}/%f.gz && gzip < %p > {wal}/%f.gz"),
    );
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.backup("plain-none", &["-Fp", "-X", "none"]);
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    drop(cluster);

    let names: Vec<String> = fs::read_dir(repo.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".gz")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".backup.gz")), "{names:?}");

    let pitr = shared_pitr_binary(dir.path());
    let pgdata = dir.path().join("restored");
    let output = Command::new(&pitr)
        .args(["--json", "restore", "--repo"])
        .arg(&repo)
        .args(["--to", &between(&m1, &m2).to_rfc3339(), "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(
        output.status.success(),
        "restore failed:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&output.stderr),
        fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The stop time came from the gzipped backup history file.
    assert_eq!(
        summary["plan"]["backup"]["stop_time_source"],
        "backup_history_file"
    );
    let socket = std::path::Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(
        psql(
            socket,
            port,
            "SELECT string_agg(id::text, ',') FROM markers"
        ),
        "1"
    );
}
