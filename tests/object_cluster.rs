//! A real distributed store: garage as three nodes on 127.0.0.1 with
//! replication factor 3 (every object on every node; reads and writes need
//! a quorum of two), and a real PostgreSQL 15 archiving into it through
//! `pitr wal-push`.
//!
//! - Archiving carries on while one node is killed (SIGKILL) and after it
//!   comes back: nothing lost (every segment in the store byte-identical to
//!   PostgreSQL's own, none missing), pg_stat_archiver showing at most
//!   retries; a restore to a time between two commits, run while another
//!   node is down, gives exactly the rows before it.
//! - garage ignores conditional creates: `pitr init` records that and
//!   `wal-push` takes the look, write, read back path.
//! - Two archivers racing on the same names, one of them another cluster.
//!
//! Optional: `make test-cluster` runs it (garage built once into the cache,
//! skips turned into failures); elsewhere a visible skip when garage is not
//! built.

mod common;

use std::path::Path;

use common::archivers::{self, Store};
use common::garage::{self, GarageCluster};
use common::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A repository under `prefix` on the garage cluster, reachable by the
/// server's OS user (archive_command, restore_command).
fn store_on(garage: &GarageCluster, binary: &Path, dir: &Path, prefix: &str) -> Store {
    Store {
        binary: binary.to_path_buf(),
        url: garage.url(prefix),
        env: garage.env(),
        cache: pg_owned_dir(&dir.join(format!("cache-{prefix}"))),
    }
}

/// A segment name's position (timeline aside), to find gaps.
fn position(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    log * 0x100 + seg
}

#[test]
fn archiving_and_a_restore_while_a_node_is_down() {
    let test = "archiving_and_a_restore_while_a_node_is_down";
    let Some(program) = garage::require(test) else {
        return;
    };
    if !require_root(test) {
        return;
    }
    let mut garage = GarageCluster::start(&program, 3);
    let dir = shared_tempdir("pitr-garage-cluster");
    let binary = shared_pitr_binary(dir.path());
    let store = store_on(&garage, &binary, dir.path(), "cluster");

    // The store ignores conditional creates: init says so and records it,
    // and every push below takes the fallback.
    let init = store
        .pitr()
        .args(["init", "--repo", &store.url])
        .output()
        .unwrap();
    let said = text(&init.stderr);
    assert!(init.status.success(), "init: {said}");
    assert!(said.contains("ignores conditional creates"), "{said}");
    let record: serde_json::Value =
        serde_json::from_slice(&store.read("wal/.pitr-store.json")).unwrap();
    assert_eq!(
        record["conditional_create_enforced"],
        serde_json::json!(false),
        "{record}"
    );

    let source_dir = dir.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    let cluster = Cluster::start_archiving(
        &source_dir,
        &source_dir.join("unused"),
        &store.archive_command(),
    );
    archivers::keep_wal(&cluster);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    let backup = store
        .pitr()
        .env("PGHOST", &cluster.dir)
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .args(["backup", "--fast", "--repo", &store.url])
        .output()
        .unwrap();
    assert!(backup.status.success(), "backup: {}", text(&backup.stderr));

    let mut markers = vec![cluster.insert_marker(1)];
    cluster.sql("SELECT pg_switch_wal()");
    // Node 3 dies; archiving goes on with two of three.
    let killed = garage.pid(2);
    garage.kill(2);
    eprintln!("garage node 3 (PID {killed:?}) killed with SIGKILL");
    for id in 2..=4 {
        markers.push(cluster.insert_marker(id));
        cluster.sql("SELECT pg_switch_wal()");
    }
    cluster.archive_everything();
    // Back again; the node catches up and archiving goes on.
    garage.restart(2);
    for id in 5..=6 {
        markers.push(cluster.insert_marker(id));
        cluster.sql("SELECT pg_switch_wal()");
    }
    cluster.archive_everything();

    // pg_stat_archiver: whatever failed was retried and archived since.
    let stats = cluster.sql(
        "SELECT archived_count || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '-') \
         || ' ' || last_archived_wal FROM pg_stat_archiver",
    );
    let fields: Vec<&str> = stats.split(' ').collect();
    let (archived, failed, last_failed, last_archived) =
        (fields[0], fields[1], fields[2], fields[3]);
    if last_failed != "-" {
        assert!(
            position(last_failed) <= position(last_archived),
            "a failure not followed by its retry: {stats}"
        );
    }
    // Nothing lost: every segment from the first to the last is in the
    // store, byte-identical to PostgreSQL's.
    let names = garage_checked(&store, &cluster, dir.path());
    eprintln!(
        "archived {archived} files ({failed} failed attempts, all retried) while node 3 was \
         killed and restarted; {names} segments in the store, none missing, all byte-identical"
    );
    drop(cluster);

    // Node 2 dies; a restore to a time between the third and fourth
    // commits reads everything through the two that are left.
    garage.kill(1);
    let target = rfc3339(between(&markers[2], &markers[3]));
    let pgdata = dir.path().join("restored");
    let output = store
        .pitr()
        .args(["--json", "restore", "--repo", &store.url, "--to", &target])
        .args(["--action", "pause", "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(
        output.status.success(),
        "restore with node 2 down failed ({}):\n{}\nlog:\n{}\ngarage:\n{}",
        output.status,
        text(&output.stderr),
        std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default(),
        garage.logs()
    );
    let summary = json(&output);
    assert_eq!(summary_sql(&summary, "SELECT count(*) FROM markers"), "3");
    assert_eq!(restored_marker_ids(&summary), "1,2,3");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(!said.contains(&garage.secret), "a secret in the output");
}

/// Every archived segment byte-identical to the cluster's and none missing
/// between the first and the last; returns how many.
fn garage_checked(store: &Store, cluster: &Cluster, scratch: &Path) -> usize {
    let count = archivers::assert_archive_is_clusters(store, cluster, scratch);
    let names = store.archived_segments();
    let positions: Vec<u64> = names.iter().map(|n| position(n)).collect();
    let (first, last) = (positions[0], positions[positions.len() - 1]);
    assert_eq!(
        positions.len() as u64,
        last - first + 1,
        "a segment is missing between {} and {}: {names:?}",
        names[0],
        names[names.len() - 1]
    );
    count
}

/// Two archivers racing on the same names on the three-node cluster (the
/// fallback path: garage ignores conditional creates), one of them another
/// cluster: zero overwritten, the intruder refused.
#[test]
fn two_archivers_racing_on_the_garage_cluster() {
    let test = "two_archivers_racing_on_the_garage_cluster";
    let Some(program) = garage::require(test) else {
        return;
    };
    if !require_root(test) {
        return;
    }
    let garage = GarageCluster::start(&program, 3);
    let dir = shared_tempdir("pitr-garage-race");
    let binary = shared_pitr_binary(dir.path());
    archivers::two_archivers_racing(
        |prefix| store_on(&garage, &binary, dir.path(), prefix),
        dir.path(),
    );
}

/// Without a quorum (two of the three nodes killed) garage answers every
/// request with 503; `wal-push` retries with backoff and succeeds once
/// the nodes are back, within its budget, so PostgreSQL never sees the
/// outage. The segment is then fetched back byte for byte.
#[test]
fn errors_without_a_quorum_are_retried_until_the_nodes_are_back() {
    let test = "errors_without_a_quorum_are_retried_until_the_nodes_are_back";
    let Some(program) = garage::require(test) else {
        return;
    };
    let mut garage = GarageCluster::start(&program, 3);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = garage.url("quorum");
    let init = garage
        .pitr(&cache)
        .args(["init", "--repo", &url])
        .output()
        .unwrap();
    assert!(init.status.success(), "init: {}", text(&init.stderr));
    let name = "000000010000000000000001";
    let segment = archivers::synthetic_segment(7_123_456_789_012_345_678, 1);
    let source = dir.path().join(name);
    std::fs::write(&source, &segment).unwrap();

    garage.kill(1);
    garage.kill(2);
    let errors_before = garage.node1_log().matches("in response to").count();
    let started = std::time::Instant::now();
    let push = garage
        .pitr(&cache)
        .env("PITR_OBJECT_RETRY_SECONDS", "90")
        .args(["wal-push", "--repo", &url])
        .arg(&source)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Error replies while there is no quorum (each is logged by node 1).
    let deadline = started + std::time::Duration::from_secs(60);
    while garage.node1_log().matches("in response to").count() < errors_before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no error replies without a quorum:\n{}",
            garage.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    garage.restart(1);
    garage.restart(2);
    let output = push.wait_with_output().unwrap();
    let errors: Vec<String> = garage
        .node1_log()
        .lines()
        .filter(|line| line.contains("in response to"))
        .skip(errors_before)
        .map(str::to_string)
        .collect();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        text(&output.stderr),
        garage.logs()
    );
    assert!(
        errors.iter().any(|line| line.contains("error 503")),
        "the store answered 503 without a quorum: {errors:#?}"
    );
    eprintln!(
        "wal-push succeeded after {:.1} s and {} error replies, the first: {}",
        started.elapsed().as_secs_f64(),
        errors.len(),
        errors[0]
    );

    let fetched = dir.path().join("fetched");
    let fetch = garage
        .pitr(&cache)
        .args(["wal-fetch", "--repo", &url, name])
        .arg(&fetched)
        .output()
        .unwrap();
    assert!(fetch.status.success(), "{}", text(&fetch.stderr));
    assert!(std::fs::read(&fetched).unwrap() == segment, "byte for byte");
}
