//! `pitr check` against real PostgreSQL: OK on a fresh repository,
//! WARNING and CRITICAL when archiving stopped, CRITICAL on a gap, the
//! archiver's failures read from a cluster whose archive_command fails,
//! and Prometheus text that a real parser (prometheus_client) reads.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// A repository with a backup and archived WAL over a few segments.
struct Scenario {
    dir: PathBuf,
    repo: PathBuf,
    pitr: PathBuf,
}

static SCENARIO: OnceLock<Scenario> = OnceLock::new();

fn scenario() -> &'static Scenario {
    SCENARIO.get_or_init(|| {
        let dir = process_tempdir("pitr-check-");
        let pitr = shared_pitr_binary(&dir);
        let cluster = cluster_with_markers(&dir);
        let repo = cluster.repo.clone();
        cluster.backup("base", &["-Ft", "-X", "stream"]);
        for id in 1..=3 {
            cluster.insert_marker(id);
            cluster.archive_everything();
        }
        drop(cluster);
        Scenario { dir, repo, pitr }
    })
}

fn pitr(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .env("TZ", "UTC")
        .env_remove("PITR_REPO")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGSERVICE")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A copy of the repository to change.
fn copy_repo(s: &Scenario, name: &str) -> PathBuf {
    let copy = s.dir.join(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&s.repo)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[test]
fn fresh_repository_is_ok() {
    let s = scenario();
    let output = pitr(&s.pitr, &["check", "--repo", &s.repo.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.starts_with("PITR OK: "), "{text}");
    assert!(text.contains("no gaps in the archive"), "{text}");
    assert!(text.contains("| wal_age="), "{text}");
    snapshot("check_ok", &text);

    let output = pitr(
        &s.pitr,
        &["--json", "check", "--repo", &s.repo.to_string_lossy()],
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["state"], "OK");
    assert_eq!(json["figures"]["backups"], 1);
    assert_eq!(json["figures"]["newest_backup"]["name"], "base");
    assert!(
        json["figures"]["newest_wal"]["time"].is_string(),
        "{json:#}"
    );
    assert_eq!(json["figures"]["gaps"].as_array().unwrap().len(), 0);
    assert!(
        json["figures"]["windows"][0]["until"].is_string(),
        "{json:#}"
    );
}

#[test]
fn stopped_archiving_warns_then_is_critical() {
    let s = scenario();
    let repo = copy_repo(s, "stopped");
    // Archiving stopped two hours ago: every archived file is that old.
    let status = Command::new("sh")
        .arg("-c")
        .arg("touch -d '2 hours ago' \"$1\"/wal/*")
        .arg("sh")
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let repo = repo.to_string_lossy().into_owned();
    let warning = pitr(
        &s.pitr,
        &["check", "--repo", &repo, "--max-wal-age", "1h,3h"],
    );
    assert_eq!(warning.status.code(), Some(1), "{}", stdout(&warning));
    assert!(stdout(&warning).starts_with("PITR WARNING: newest WAL "));
    let critical = pitr(&s.pitr, &["check", "--repo", &repo]);
    assert_eq!(critical.status.code(), Some(2), "{}", stdout(&critical));
    let text = stdout(&critical);
    assert!(text.starts_with("PITR CRITICAL: newest WAL "), "{text}");
    assert!(text.contains("archived 2h"), "{text}");
    assert!(text.contains("archiving has stopped"), "{text}");
    snapshot("check_warning", &stdout(&warning));
    snapshot("check_critical_wal", &text);
}

#[test]
fn a_gap_is_critical_and_named() {
    let s = scenario();
    let repo = copy_repo(s, "gap");
    let mut segments: Vec<String> = names_in(&repo.join("wal"))
        .into_iter()
        .filter(|name| name.len() == 24)
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = segments[segments.len() - 2].clone();
    fs::remove_file(repo.join("wal").join(&victim)).unwrap();
    let output = pitr(&s.pitr, &["check", "--repo", &repo.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("PITR CRITICAL: gap in the archive: "),
        "{text}"
    );
    assert!(text.contains(&format!("{victim} is missing")), "{text}");
    assert!(text.contains("missing_segments=1;;0"), "{text}");
    snapshot("check_critical_gap", &text);
}

#[test]
fn archiver_failures_of_a_live_cluster() {
    let s = scenario();
    let dir = process_tempdir("pitr-check-failing-");
    let repo = dir.join("repo");
    fs::create_dir_all(&repo).unwrap();
    // WAL reaches the repository at first (the backup), then archiving
    // breaks: archive_command fails from then on.
    let cluster = Cluster::start(&dir, &repo);
    cluster.backup("base", &["-Ft", "-X", "stream"]);
    cluster.archive_everything();
    cluster.sql("ALTER SYSTEM SET archive_command = 'false'");
    cluster.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    cluster.sql("SELECT pg_logical_emit_message(false, 'pitr-test', 'x')");
    cluster.sql("SELECT pg_switch_wal()");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.sql("SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "archiving never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed: u64 = cluster
        .sql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    let repo_arg = repo.to_string_lossy().into_owned();
    let pgdata = cluster.pgdata.to_string_lossy().into_owned();

    // Through --pgdata.
    let output = pitr(
        &s.pitr,
        &["--json", "check", "--repo", &repo_arg, "--pgdata", &pgdata],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = &json["figures"]["archiver"]["status"];
    assert!(
        status["failed_count"].as_u64().unwrap() >= failed,
        "{json:#}"
    );
    assert_eq!(status["failing"], true);
    assert!(json["status"]
        .as_str()
        .unwrap()
        .starts_with("PITR CRITICAL: archiving fails: "));

    // Through libpq's variables.
    let output = Command::new(&s.pitr)
        .env_remove("PITR_REPO")
        .env("PGHOST", &cluster.dir)
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .args(["check", "--repo", &repo_arg, "--prometheus"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let metrics = parse_prometheus(&stdout(&output));
    assert!(metrics["pitr_archiver_failed_count"][0].1 >= failed as f64);
    assert_eq!(metrics["pitr_archiver_failing"][0].1, 1.0);
    assert_eq!(metrics["pitr_check_status"][0].1, 2.0);
}

#[test]
fn a_check_that_cannot_run_is_unknown() {
    let s = scenario();
    let missing = s.dir.join("no-such-repo");
    let output = pitr(&s.pitr, &["check", "--repo", &missing.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    assert!(
        stdout(&output).starts_with("PITR UNKNOWN: "),
        "{}",
        stdout(&output)
    );
    let repo = s.repo.to_string_lossy().into_owned();
    let output = pitr(
        &s.pitr,
        &["check", "--repo", &repo, "--max-wal-age", "soon"],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(stdout(&output).contains("--max-wal-age: `soon` is not a duration"));
    // A command line clap refuses is UNKNOWN too, not CRITICAL.
    let output = pitr(&s.pitr, &["check", "--repo", &repo, "--no-such-option"]);
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn prometheus_text_parses() {
    let s = scenario();
    let output = pitr(
        &s.pitr,
        &["check", "--repo", &s.repo.to_string_lossy(), "--prometheus"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let metrics = parse_prometheus(&stdout(&output));
    assert_eq!(metrics["pitr_check_status"][0].1, 0.0);
    assert_eq!(metrics["pitr_backups"][0].1, 1.0);
    assert_eq!(metrics["pitr_wal_missing_segments"][0].1, 0.0);
    // The recoverable window of timeline 1, both ends, in order.
    let start = &metrics["pitr_recoverable_window_start_timestamp_seconds"];
    let end = &metrics["pitr_recoverable_window_end_timestamp_seconds"];
    assert_eq!(start[0].0["timeline"], "1");
    assert_eq!(end[0].0["timeline"], "1");
    assert!(start[0].1 > 1.7e9 && start[0].1 < end[0].1);
    assert!(metrics["pitr_wal_newest_age_seconds"][0].1 < 600.0);
}

/// Samples by metric name: (labels, value), as prometheus_client's text
/// parser reads them.
type Metrics = std::collections::HashMap<String, Vec<(serde_json::Value, f64)>>;

fn parse_prometheus(text: &str) -> Metrics {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.setdefault(sample.name, []).append([sample.labels, sample.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client cannot parse:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: std::collections::HashMap<String, Vec<(serde_json::Value, f64)>> =
        serde_json::from_slice(&output.stdout).unwrap();
    parsed
}

/// Snapshots a status line with what varies replaced (ages, segment
/// names, backup ids, temporary paths).
fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in [
        (r"\b[0-9A-F]{24}\b", "[SEGMENT]"),
        (r"=\d+s;", "=[SECS]s;"),
        (r"\b(\d+[dhms])+\b", "[AGE]"),
        (r"=\d+c\b", "=[N]c"),
        (r"/tmp/[^ ]*", "[TMP]"),
    ] {
        settings.add_filter(pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}
