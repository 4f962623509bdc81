//! `pitr events` finds the DROP TABLE, and an exclusive xid restore undoes
//! it with exactly the rows that existed just before.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_drop_is_found_and_undone() {
    let dir = shared_tempdir("pitr-events-");
    let cluster = cluster_with_markers(dir.path());
    let repo = cluster.repo.clone();
    cluster.sql("CREATE TABLE customers (id int PRIMARY KEY, name text)");
    cluster.sql("CREATE TABLE bulk (id int, filler text)");
    let backup_start_lsn = cluster.sql("SELECT pg_current_wal_lsn()");
    cluster.backup("base", &["-Ft", "-z", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));
    cluster.sql("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 10) g");
    let customers_file = cluster.sql("SELECT pg_relation_filepath('customers')");
    cluster.sql("INSERT INTO bulk SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g");
    let bulk_file = cluster.sql("SELECT pg_relation_filepath('bulk')");
    cluster.insert_marker(1);
    cluster.sql("SELECT pg_create_restore_point('before_cleanup')");
    cluster.insert_marker(2);
    let relfilenode = cluster.sql("SELECT pg_relation_filenode('customers')");
    cluster.sql("DROP TABLE customers");
    cluster.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.archive_everything();
    drop(cluster);
    let pitr = shared_pitr_binary(dir.path());

    let output = Command::new(&pitr)
        .args(["events", "--json", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let events = events.as_array().unwrap();
    let drop = events
        .iter()
        .find(|e| {
            e["dropped_relations"].as_array().is_some_and(|rels| {
                rels.iter()
                    .any(|r| r.as_str().unwrap().ends_with(&format!("/{relfilenode}")))
            })
        })
        .unwrap_or_else(|| panic!("no event dropped relation {relfilenode}: {events:?}"));
    assert_eq!(drop["kind"], "commit");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "restore_point" && e["name"] == "before_cleanup"));
    let xid = drop["xid"].as_u64().unwrap();

    // Nothing from before the backup (initdb's transactions, the CREATE
    // TABLEs) unless --all.
    let lsn = |e: &serde_json::Value| {
        e["lsn"]
            .as_str()
            .unwrap()
            .parse::<pitr::wal::Lsn>()
            .unwrap()
    };
    let backup_start: pitr::wal::Lsn = backup_start_lsn.parse().unwrap();
    assert!(events.iter().all(|e| lsn(e) >= backup_start), "{events:?}");
    let everything = events_json(&pitr, &repo, &["--all"]);
    let everything = everything.as_array().unwrap();
    assert!(
        everything.len() > events.len() + 100,
        "initdb's transactions are there with --all: {} vs {}",
        everything.len(),
        events.len()
    );
    assert!(
        everything.iter().any(|e| e["xid"] == 3),
        "initdb's first xid"
    );

    // What each transaction wrote: its WAL and its relation files.
    let wrote = |e: &serde_json::Value, file: &str| {
        e["relations_written"]
            .as_array()
            .is_some_and(|rels| rels.iter().any(|r| r["path"] == file))
    };
    let insert = events
        .iter()
        .find(|e| wrote(e, &customers_file))
        .unwrap_or_else(|| panic!("no transaction wrote {customers_file}: {events:?}"));
    assert_eq!(insert["kind"], "commit");
    assert!(insert["wal_bytes"].as_u64().unwrap() > 10 * 30, "{insert}");
    let bulk = events
        .iter()
        .find(|e| wrote(e, &bulk_file))
        .unwrap_or_else(|| panic!("no transaction wrote {bulk_file}: {events:?}"));
    // 5000 heap inserts of ~130 bytes each.
    assert!(bulk["wal_bytes"].as_u64().unwrap() > 5000 * 100, "{bulk}");
    // The DROP wrote only the catalogs.
    assert!(drop["relations_written"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["catalog"] == true));

    // --min-size keeps the big transaction alone.
    let big = events_json(&pitr, &repo, &["--min-size", "100kB"]);
    assert_eq!(big.as_array().unwrap().len(), 1, "{big}");
    assert_eq!(big[0]["xid"], bulk["xid"]);

    // --kind drop prints the DROP alone, on one line that says how to undo it.
    let drops = events_text(&pitr, &repo, &["--kind", "drop"]);
    let lines: Vec<&str> = drops.lines().collect();
    assert_eq!(lines.len(), 1, "{drops}");
    assert!(lines[0].contains(&format!("xid {xid}")), "{drops}");
    assert!(lines[0].contains(&format!("/{relfilenode}")), "{drops}");
    // Kinds combine, as a list or repeated.
    for kinds in [
        &["--kind", "drop,restore-point"][..],
        &["--kind", "drop", "--kind", "restore-point"],
    ] {
        let text = events_text(&pitr, &repo, kinds);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("restore point \"before_cleanup\""), "{text}");
    }
    let aborts = events_text(&pitr, &repo, &["--kind", "abort"]);
    assert!(!aborts.contains("commit"), "{aborts}");

    // Per minute: the counts add up to the listing's.
    let minutes = events_json(&pitr, &repo, &["--per-minute"]);
    let sum = |field: &str| {
        minutes
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_u64().unwrap())
            .sum::<u64>()
    };
    let commits = events.iter().filter(|e| e["kind"] == "commit").count() as u64;
    assert_eq!(sum("commits"), commits, "{minutes}");
    assert_eq!(sum("drops"), 1, "{minutes}");
    assert_eq!(sum("restore_points"), 1, "{minutes}");
    let bytes: u64 = events.iter().filter_map(|e| e["wal_bytes"].as_u64()).sum();
    assert_eq!(sum("wal_bytes"), bytes);
    let table = events_text(&pitr, &repo, &["--per-minute"]);
    assert!(table.starts_with("minute (UTC)"), "{table}");

    // The human listing says how to undo it.
    let text = Command::new(&pitr)
        .args(["events", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!("pitr restore --to xid:{xid} --exclusive")),
        "{text}"
    );

    let pgdata = dir.path().join("undo");
    let restored = restore_from_repo(
        Command::new(&pitr),
        &pgdata,
        &repo,
        &format!("xid:{xid}"),
        &["--exclusive"],
    );
    assert_eq!(restored.summary["plan"]["stop"]["xid"], xid);
    assert_eq!(restored.sql("SELECT count(*) FROM customers"), "10");
    assert_eq!(
        restored.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM markers"),
        "1,2"
    );

    // An unknown restore point is refused before anything is written.
    let message = plan_refused(&pitr, &repo, "name:no_such_point");
    assert!(message.contains("no restore point named"), "{message}");
    // An xid that never committed, too.
    let message = plan_refused(&pitr, &repo, "xid:999999");
    assert!(
        message.contains("no commit or abort of transaction 999999"),
        "refused for the wrong reason: {message}"
    );
    // An LSN after the end of the WAL.
    let message = plan_refused(&pitr, &repo, "lsn:FF/0");
    assert!(
        message.contains("the target LSN FF/0 cannot be reached")
            && message.contains("ends with the record at"),
        "refused for the wrong reason: {message}"
    );

    // Events in a window of time: only the range asked for.
    let restore_point_time = events
        .iter()
        .find(|e| e["kind"] == "restore_point")
        .unwrap()["time"]
        .as_str()
        .unwrap()
        .to_string();
    let output = Command::new(&pitr)
        .args(["events", "--json", "--repo"])
        .arg(&repo)
        .args(["--from", &restore_point_time])
        .output()
        .unwrap();
    let later: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(later[0]["kind"], "restore_point", "{later}");
    assert!(later.as_array().unwrap().len() < events.len());
}

/// Runs `pitr plan --to TARGET`, which must refuse the target (exit code
/// 3); returns its message.
fn plan_refused(pitr: &std::path::Path, repo: &std::path::Path, target: &str) -> String {
    let output = Command::new(pitr)
        .args(["plan", "--repo"])
        .arg(repo)
        .args(["--to", target])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{message}");
    message
}

fn events_output(
    pitr: &std::path::Path,
    repo: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let output = Command::new(pitr)
        .args(["events", "--repo"])
        .arg(repo)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn events_text(pitr: &std::path::Path, repo: &std::path::Path, extra: &[&str]) -> String {
    String::from_utf8_lossy(&events_output(pitr, repo, extra).stdout).into_owned()
}

fn events_json(
    pitr: &std::path::Path,
    repo: &std::path::Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&events_output(pitr, repo, &args).stdout).unwrap()
}
