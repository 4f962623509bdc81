//! `pitr events` finds the DROP TABLE, and an exclusive xid restore undoes
//! it with exactly the rows that existed just before.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_drop_is_found_and_undone() {
    let dir = shared_tempdir("pitr-events-");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    let cluster = Cluster::start(dir.path(), &repo);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.sql("CREATE TABLE customers (id int PRIMARY KEY, name text)");
    cluster.backup("base", &["-Ft", "-z", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));
    cluster.sql("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 10) g");
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
    let output = Command::new(&pitr)
        .args(["--json", "restore", "--repo"])
        .arg(&repo)
        .args(["--to", &format!("xid:{xid}"), "--exclusive", "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["plan"]["stop"]["xid"], xid);
    let socket = std::path::Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(psql(socket, port, "SELECT count(*) FROM customers"), "10");
    assert_eq!(
        psql(
            socket,
            port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM markers"
        ),
        "1,2"
    );

    // An unknown restore point is refused before anything is written.
    let output = Command::new(&pitr)
        .args(["plan", "--repo"])
        .arg(&repo)
        .args(["--to", "name:no_such_point"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("no restore point named"));
    // An xid that never committed, too.
    let output = Command::new(&pitr)
        .args(["plan", "--repo"])
        .arg(&repo)
        .args(["--to", "xid:999999"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains("no commit or abort of transaction 999999"),
        "refused for the wrong reason: {message}"
    );
    // An LSN after the end of the WAL.
    let output = Command::new(&pitr)
        .args(["plan", "--repo"])
        .arg(&repo)
        .args(["--to", "lsn:FF/0"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{message}");
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
