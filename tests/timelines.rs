//! Restores after earlier point-in-time recoveries: timeline 2 made by a
//! real recovery from timeline 1, timeline 3 from timeline 2, all archiving
//! into the same archive, with marker rows on each branch. Every branch must
//! come back with exactly its own rows.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

impl Restored {
    /// The marker rows of the restored server, in order.
    fn markers(&self) -> Vec<i32> {
        self.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM markers")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }
}

/// `pitr restore --repo REPO ARGS` into `pgdata`, which must succeed.
fn restore_from(binary: &Path, repo: &Path, pgdata: &Path, args: &[&str]) -> Restored {
    let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    restore(pitr(binary), pgdata, all)
}

fn backup_from(restored: &Restored, repo: &Path, id: &str) {
    check(
        as_pg_user(pg_bin().join("pg_basebackup"))
            .arg("-D")
            .arg(repo.join("base").join(id))
            .args([
                "-U", "postgres", "-c", "fast", "-Ft", "-X", "stream", "-l", id, "-h",
            ])
            .arg(restored.socket_dir())
            .args(["-p", &restored.port().to_string()])
            .output()
            .unwrap(),
        "pg_basebackup",
    );
}

#[test]
fn every_branch_comes_back_with_its_own_rows() {
    let dir = shared_tempdir("pitr-timelines-");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    let binary = shared_pitr_binary(dir.path());
    let repo_str = repo.to_str().unwrap();

    // Timeline 1.
    let primary = Cluster::start(dir.path(), &repo);
    primary.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    primary.backup("1-base", &["-Ft", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = primary.insert_marker(1);
    std::thread::sleep(Duration::from_millis(300));
    let m2 = primary.insert_marker(2);
    std::thread::sleep(Duration::from_millis(300));
    primary.archive_everything();

    // Timeline 2: a real recovery to between markers 1 and 2 that keeps
    // archiving into the same archive.
    let tl2 = restore_from(
        &binary,
        &repo,
        &dir.path().join("tl2"),
        &["--to", &between(&m1, &m2).to_rfc3339(), "--keep-archiving"],
    );
    assert_eq!(tl2.summary["new_timeline"], 2);
    insert_marker(&tl2.socket_dir(), tl2.port(), 102);
    backup_from(&tl2, &repo, "2-base");
    std::thread::sleep(Duration::from_millis(1200));
    let m103 = insert_marker(&tl2.socket_dir(), tl2.port(), 103);
    std::thread::sleep(Duration::from_millis(300));
    let m104 = insert_marker(&tl2.socket_dir(), tl2.port(), 104);
    std::thread::sleep(Duration::from_millis(300));
    archive_everything(&tl2.socket_dir(), tl2.port());

    // Timeline 1 goes on after timeline 2 branched off.
    let m3 = primary.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1000));
    primary.archive_everything();

    // Timeline 3, from timeline 2 between markers 103 and 104.
    let tl3 = restore_from(
        &binary,
        &repo,
        &dir.path().join("tl3"),
        &[
            "--to",
            &between(&m103, &m104).to_rfc3339(),
            "--timeline",
            "2",
            "--keep-archiving",
        ],
    );
    assert_eq!(tl3.summary["new_timeline"], 3);
    assert_eq!(tl3.summary["plan"]["backup"]["id"], "2-base");
    insert_marker(&tl3.socket_dir(), tl3.port(), 201);
    std::thread::sleep(Duration::from_millis(1000));
    archive_everything(&tl3.socket_dir(), tl3.port());
    std::thread::sleep(Duration::from_millis(1000));

    // The graph as `pitr list` shows it.
    let listing = run_pitr(&binary, &["list", "--json", "--repo", repo_str]);
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let timelines = listing["timelines"].as_array().unwrap();
    let find = |n: u64| {
        timelines
            .iter()
            .find(|t| t["timeline"] == n)
            .unwrap()
            .clone()
    };
    assert!(find(1)["parent"].is_null());
    assert_eq!(find(2)["parent"], 1);
    assert_eq!(find(3)["parent"], 2);
    assert!(find(3)["branch_lsn"].is_string());
    for n in 1..=3 {
        assert!(
            find(n)["recoverable_from"].is_string(),
            "timeline {n}: {}",
            find(n)
        );
        assert!(
            find(n)["recoverable_until"].is_string(),
            "timeline {n}: {}",
            find(n)
        );
    }
    assert_eq!(find(2)["backups"], serde_json::json!(["2-base"]));
    assert_eq!(listing["backups"].as_array().unwrap().len(), 2);

    // Default `latest`: timeline 3, from the backup taken on timeline 2.
    let latest = restore_from(
        &binary,
        &repo,
        &dir.path().join("latest"),
        &["--to", "latest"],
    );
    assert_eq!(latest.summary["plan"]["timeline"], 3);
    assert_eq!(latest.summary["plan"]["backup"]["id"], "2-base");
    assert!(latest.summary["plan"]["timeline_path"]
        .as_str()
        .unwrap()
        .starts_with("1 → 2 at "));
    assert_eq!(latest.markers(), [1, 102, 103, 201]);
    // Timelines 1–3 exist in the archive: the new one must not collide.
    assert_eq!(latest.summary["new_timeline"], 4);
    drop(latest);

    // Timeline 1 after timeline 2 branched off: only the old branch has marker 3.
    let old_branch = restore_from(
        &binary,
        &repo,
        &dir.path().join("old-branch"),
        &["--to", "latest", "--timeline", "1"],
    );
    assert_eq!(old_branch.summary["plan"]["backup"]["id"], "1-base");
    assert_eq!(old_branch.markers(), [1, 2, 3]);
    drop(old_branch);

    let between_2_and_3 = between(&m2, &m3).to_rfc3339();
    let tl1_time = restore_from(
        &binary,
        &repo,
        &dir.path().join("tl1-time"),
        &["--to", &between_2_and_3, "--timeline", "1"],
    );
    assert_eq!(tl1_time.markers(), [1, 2]);
    drop(tl1_time);

    // Timeline 2 to its end: the rows of timeline 2, not of 3.
    let tl2_end = restore_from(
        &binary,
        &repo,
        &dir.path().join("tl2-end"),
        &["--to", "latest", "--timeline", "2"],
    );
    assert_eq!(tl2_end.markers(), [1, 102, 103, 104]);
    drop(tl2_end);

    // The same moment exists on several branches: the plan says so.
    let plan = run_pitr(
        &binary,
        &[
            "plan",
            "--json",
            "--repo",
            repo_str,
            "--to",
            &between_2_and_3,
        ],
    );
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["timeline"], 3);
    let notes = plan["notes"].to_string();
    assert!(notes.contains("--timeline 1"), "{notes}");

    // Refusals.
    let unknown = run_pitr(
        &binary,
        &[
            "plan",
            "--repo",
            repo_str,
            "--to",
            "latest",
            "--timeline",
            "9",
        ],
    );
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("timeline 9 does not exist"));
    let off_path = run_pitr(
        &binary,
        &[
            "plan",
            "--repo",
            repo_str,
            "--to",
            "latest",
            "--timeline",
            "1",
            "--backup",
            "2-base",
        ],
    );
    assert_eq!(off_path.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&off_path.stderr).contains("not on the path"),
        "{}",
        String::from_utf8_lossy(&off_path.stderr)
    );

    drop(tl3);
    drop(tl2);
    drop(primary);
}
