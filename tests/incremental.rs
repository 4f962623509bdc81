//! Incremental backups (PostgreSQL 17+): a full backup and two incremental
//! backups chained on it. pitr plans with the newest backup of the chain at
//! or before the target, stages it with pg_combinebackup, and restores
//! exactly; a chain missing its full backup is refused with the reason.
//!
//! Runs on PostgreSQL 17 or later whatever the major under test: the
//! programs under test if they are 17+, else `PITR_TEST_OTHER_PG_BIN`
//! (`make test` sets it to the cached 17), else the newest cached build.
//! Without any, the test is reported `SKIPPED` (a failure in strict mode).

mod common;

use std::fs;
use std::time::Duration;

use common::*;

#[test]
fn a_chain_of_incremental_backups_restores_exactly() {
    let test = "a_chain_of_incremental_backups_restores_exactly";
    if !use_pg_bin_of_major_at_least(test, 17) {
        return;
    }
    assert!(
        pg_major() >= 17,
        "{} is PostgreSQL {}",
        pg_bin().display(),
        pg_major()
    );
    let dir = shared_tempdir("pitr-incremental-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    cluster.sql("ALTER SYSTEM SET summarize_wal = on");
    cluster.sql("SELECT pg_reload_conf()");
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    let base = repo.join("base");
    cluster.backup("1-full", &["-Fp", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    let on_full = format!(
        "--incremental={}",
        base.join("1-full/backup_manifest").display()
    );
    cluster.backup("2-incr", &["-Fp", "-X", "stream", &on_full]);
    std::thread::sleep(Duration::from_millis(1200));
    let m2 = cluster.insert_marker(2);
    let on_incr = format!(
        "--incremental={}",
        base.join("2-incr/backup_manifest").display()
    );
    cluster.backup("3-incr", &["-Fp", "-X", "stream", &on_incr]);
    std::thread::sleep(Duration::from_millis(1200));
    let m3 = cluster.insert_marker(3);
    std::thread::sleep(Duration::from_millis(300));
    let m4 = cluster.insert_marker(4);
    // pg_combinebackup reads plain format only: a tar incremental is
    // reported as unusable, with what to do.
    let on_second = format!(
        "--incremental={}",
        base.join("3-incr/backup_manifest").display()
    );
    cluster.backup("4-incr-tar", &["-Ft", "-X", "stream", &on_second]);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    drop(cluster);
    let binary = shared_pitr_binary(dir.path());
    let repo_str = repo.to_str().unwrap();
    let repo_before = tree_snapshot(&repo);

    // The newest backup at or before each target: the second incremental,
    // then the first; each is combined with the backups below it.
    for (name, target, backup, expected) in [
        ("after-3", between(&m3, &m4), "3-incr", "1,2,3"),
        ("after-1", between(&m1, &m2), "2-incr", "1"),
    ] {
        let pgdata = dir.path().join(name);
        let output = run_pitr(
            &binary,
            &[
                "--json",
                "restore",
                "--repo",
                repo_str,
                "--to",
                &target.to_rfc3339(),
                "--pgdata",
                pgdata.to_str().unwrap(),
                "--bin-dir",
                pg_bin().to_str().unwrap(),
            ],
        );
        let _guard = ServerGuard(pgdata.clone());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{name}: {stderr}\nlog:\n{}",
            fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
        );
        assert!(stderr.contains("pg_combinebackup"), "{stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["plan"]["backup"]["id"], backup, "{name}");
        assert!(summary["plan"]["backup"]["incremental_from"].is_string());
        assert_eq!(restored_marker_ids(&summary), expected, "{name}");
        // The repository is only read: every file of the chain is intact.
        assert_same_tree(
            &format!("{name}: the repository"),
            &repo_before,
            &tree_snapshot(&repo),
        );
    }

    let listing = run_pitr(&binary, &["list", "--json", "--repo", repo_str]);
    let listing: serde_json::Value = serde_json::from_str(&check(listing, "pitr list")).unwrap();
    let unusable = &listing["unreadable_backups"];
    assert_eq!(unusable.as_array().unwrap().len(), 1, "{listing:#}");
    assert_eq!(unusable[0]["id"], "4-incr-tar");
    let reason = unusable[0]["reason"].as_str().unwrap();
    assert!(reason.contains("plain-format"), "{reason}");
    let incremental: Vec<&serde_json::Value> = listing["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["incremental_from"].is_string())
        .collect();
    assert_eq!(incremental.len(), 2, "{listing:#}");

    // Without the full backup the chain is broken: both incrementals are
    // reported with the reason and no plan uses them.
    fs::rename(base.join("1-full"), base.join(".1-full-away")).unwrap();
    let listing = run_pitr(&binary, &["list", "--json", "--repo", repo_str]);
    let listing: serde_json::Value = serde_json::from_str(&check(listing, "pitr list")).unwrap();
    let unusable: Vec<(&str, &str)> = listing["unreadable_backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["reason"].as_str().unwrap()))
        .collect();
    for id in ["2-incr", "3-incr"] {
        let (_, reason) = unusable
            .iter()
            .find(|(unusable, _)| *unusable == id)
            .unwrap_or_else(|| panic!("{id} must be unusable: {listing:#}"));
        assert!(reason.contains("chain"), "{id}: {reason}");
    }
    assert!(
        listing["backups"].as_array().unwrap().is_empty(),
        "{listing:#}"
    );
    let plan = run_pitr(
        &binary,
        &[
            "plan",
            "--repo",
            repo_str,
            "--to",
            &between(&m3, &m4).to_rfc3339(),
        ],
    );
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no usable base backup") && stderr.contains("could not be understood"),
        "the refusal must say that no backup is usable and why: {stderr}"
    );
    fs::rename(base.join(".1-full-away"), base.join("1-full")).unwrap();
}
