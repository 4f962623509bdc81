//! garage, a store that ignores conditional creates (`If-None-Match: *`
//! on PUT), as one node on 127.0.0.1: `pitr init` finds and records that,
//! and `wal-push` then looks, writes and reads back. Optional like the
//! version matrix (garage takes ~41 min to build): it runs when
//! `./scripts/object-stores.sh fetch garage` has installed it (or
//! PITR_TEST_GARAGE names the binary); otherwise it is a visible skip
//! (allowed in .ci/run, where garage is not built).

mod common;

use common::archivers::synthetic_segment as segment;
use common::garage::{self, GarageCluster};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn garage_gets_the_look_write_read_back_fallback() {
    let Some(program) = garage::require("garage_gets_the_look_write_read_back_fallback") else {
        return;
    };
    let garage = GarageCluster::start(&program, 1);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = garage.url("cluster");
    let url = url.as_str();
    let init = garage
        .pitr(&cache)
        .args(["init", "--repo", url])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let said = text(&init.stderr);
    assert!(said.contains("ignores conditional creates"), "{said}");
    assert!(!said.contains(&garage.secret));

    let push = |name: &str, system_identifier: u64, fill: u8| {
        let path = dir.path().join(format!("{fill}")).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, segment(system_identifier, fill)).unwrap();
        garage
            .pitr(&cache)
            .args(["wal-push", "--repo", url])
            .arg(&path)
            .output()
            .unwrap()
    };
    let fetch = |name: &str| {
        let to = dir.path().join("fetched");
        let output = garage
            .pitr(&cache)
            .args(["wal-fetch", "--repo", url, name])
            .arg(&to)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        std::fs::read(&to).unwrap()
    };
    let first = push("000000010000000000000001", 42, 1);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(fetch("000000010000000000000001") == segment(42, 1));
    // The same again: success; other bytes: refused, the archived copy kept.
    assert_eq!(
        push("000000010000000000000001", 42, 1).status.code(),
        Some(0)
    );
    let other = push("000000010000000000000001", 42, 9);
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));
    assert!(fetch("000000010000000000000001") == segment(42, 1));
    // Another cluster: refused, both identifiers named.
    let intruder = push("000000010000000000000002", 43, 2);
    assert_eq!(
        intruder.status.code(),
        Some(3),
        "{}",
        text(&intruder.stderr)
    );
    let message = text(&intruder.stderr);
    assert!(
        message.contains("42") && message.contains("43"),
        "{message}"
    );
    // Two pushers of one new name with different bytes at once: the one
    // whose checksum is read back wins; the other is refused, never both
    // told "archived" with the archive holding only one.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| push("000000010000000000000003", 42, 3));
        let b = scope.spawn(|| push("000000010000000000000003", 42, 4));
        (a.join().unwrap(), b.join().unwrap())
    });
    let stored = fetch("000000010000000000000003");
    let winners = [(&a, 3u8), (&b, 4u8)]
        .iter()
        .filter(|(output, _)| output.status.success())
        .map(|(_, fill)| *fill)
        .collect::<Vec<_>>();
    assert!(
        !winners.is_empty(),
        "{}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    for fill in &winners {
        // Exact interleaving can still let both through (init warns of
        // it); what was told "archived" is what the archive holds.
        if winners.len() == 1 {
            assert!(stored == segment(42, *fill), "the winner's bytes are kept");
        }
    }
}
