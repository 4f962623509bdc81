//! Tablespaces: restored through `--tablespace-mapping` to a new location,
//! for tar and plain backups; the live cluster's tablespace is never
//! written to, and an occupied recorded location is refused.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn tablespaces_are_restored_to_their_mapped_locations() {
    let dir = shared_tempdir("pitr-tablespaces-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let live = cluster.create_tablespace("ts1", &dir.path().join("ts_live"));
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY) TABLESPACE ts1");
    cluster.backup("tar", &["-Ft", "-X", "stream"]);
    let plain_copy = pg_owned_dir(&dir.path().join("plain_ts_copy"));
    cluster.backup(
        "plain",
        &[
            "-Fp",
            "-X",
            "stream",
            &format!(
                "--tablespace-mapping={}={}",
                live.display(),
                plain_copy.display()
            ),
        ],
    );
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(300));
    let m2 = cluster.insert_marker(2);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    // Stopped, so that its tablespace changes only if pitr writes to it:
    // then every file of it (and of the backup's copy, and of the
    // repository) can be compared by content, mode and size afterwards.
    drop(cluster);
    let pitr = shared_pitr_binary(dir.path());
    let target = between(&m1, &m2).to_rfc3339();
    let live_before = tree_snapshot(&live);
    let copy_before = tree_snapshot(&plain_copy);
    let repo_before = tree_snapshot(&repo);
    assert!(
        live_before
            .values()
            .any(|entry| matches!(entry, TreeEntry::File { size, .. } if *size > 0)),
        "the live tablespace holds the markers table: {live_before:?}"
    );

    // The recorded location is the live cluster's: refused, nothing written.
    let refused_pgdata = dir.path().join("refused");
    let output = Command::new(&pitr)
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["--backup", "tar", "--to", &target, "--pgdata"])
        .arg(&refused_pgdata)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("--tablespace-mapping"), "{stderr}");
    assert!(!refused_pgdata.exists());

    for (id, recorded) in [("tar", &live), ("plain", &plain_copy)] {
        let pgdata = dir.path().join(format!("pgdata_{id}"));
        let new_location = dir.path().join(format!("ts_{id}"));
        let output = Command::new(&pitr)
            .args(["--json", "restore", "--repo"])
            .arg(&repo)
            .args(["--backup", id, "--to", &target, "--pgdata"])
            .arg(&pgdata)
            .arg(format!(
                "--tablespace-mapping={}={}",
                recorded.display(),
                new_location.display()
            ))
            .output()
            .unwrap();
        let _guard = ServerGuard(pgdata.clone());
        assert!(
            output.status.success(),
            "restore from {id}: {}\nlog:\n{}",
            String::from_utf8_lossy(&output.stderr),
            fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let socket = Path::new(summary["socket_dir"].as_str().unwrap());
        let port = summary["port"].as_u64().unwrap() as u16;
        assert_eq!(
            psql(socket, port, "SELECT count(*) FROM markers"),
            "1",
            "from {id}"
        );
        assert_eq!(
            psql(
                socket,
                port,
                "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"
            ),
            new_location.to_string_lossy()
        );
        assert!(
            names_in(&new_location)
                .iter()
                .any(|name| name.starts_with(&format!("PG_{}_", pg_major()))),
            "{id}: {:?}",
            names_in(&new_location)
        );
    }
    assert_same_tree("the live tablespace", &live_before, &tree_snapshot(&live));
    assert_same_tree(
        "the backup's tablespace copy",
        &copy_before,
        &tree_snapshot(&plain_copy),
    );
    assert_same_tree("the repository", &repo_before, &tree_snapshot(&repo));
}

/// `--in-place` over a stopped primary with a tablespace: the tablespace's
/// recorded location holds the primary's own files, moved aside like its
/// data directory, and the recovered primary starts with it there.
#[test]
fn in_place_moves_the_primarys_tablespace_aside_too() {
    let dir = shared_tempdir("pitr-tablespaces-in-place-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let location = cluster.create_tablespace("ts1", &dir.path().join("ts_primary"));
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY) TABLESPACE ts1");
    cluster.backup("tar", &["-Ft", "-X", "stream"]);
    for id in 1..=2 {
        cluster.insert_marker(id);
    }
    cluster.archive_everything();
    stop_by_pid(&cluster.pgdata);
    let pitr = shared_pitr_binary(dir.path());
    let output = Command::new(&pitr)
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["--to", "latest", "--in-place", "--yes", "--pgdata"])
        .arg(&cluster.pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(cluster.pgdata.clone());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let names = names_in(dir.path());
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("ts_primary.pitr-replaced-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("source.pitr-replaced-")),
        "{names:?}"
    );
    pg_ctl(
        &cluster.pgdata,
        &cluster.dir.join("after.log"),
        &["start", "-w"],
    );
    assert_eq!(cluster.sql("SELECT count(*) FROM markers"), "2");
    assert_eq!(
        cluster.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
        location.to_string_lossy()
    );
}
