//! `pitr drill` against real PostgreSQL: a drill on a healthy repository
//! passes with its evidence (stop point, RTO phases, check results) in the
//! JSON report and in `drills/`; a failing check, a corrupted WAL segment
//! and a broken backup fail at their step, named; the copy and its port are
//! gone afterwards.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

struct Scenario {
    dir: PathBuf,
    repo: PathBuf,
    pitr: PathBuf,
    markers: Vec<Marker>,
}

static SCENARIO: OnceLock<Scenario> = OnceLock::new();

fn scenario() -> &'static Scenario {
    SCENARIO.get_or_init(|| {
        let dir = process_tempdir("pitr-drill-");
        let pitr = shared_pitr_binary(&dir);
        let cluster = cluster_with_markers(&dir);
        let repo = cluster.repo.clone();
        cluster.backup("base", &["-Fp", "-X", "stream"]);
        std::thread::sleep(Duration::from_millis(1200));
        let mut markers = Vec::new();
        for id in 1..=4 {
            markers.push(cluster.insert_marker(id));
            std::thread::sleep(Duration::from_millis(300));
            if id % 2 == 0 {
                cluster.archive_everything();
            }
        }
        cluster.archive_everything();
        drop(cluster);
        Scenario {
            dir,
            repo,
            pitr,
            markers,
        }
    })
}

impl Scenario {
    fn pitr(&self) -> Command {
        let mut command = Command::new(&self.pitr);
        command.env_remove("PITR_REPO").env("TZ", "UTC");
        command
    }

    /// A fresh directory the postgres user may use as --scratch.
    fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        dir
    }

    /// A copy of the whole repository to damage (drills of the others
    /// keep using the original).
    fn copy_repo(&self, name: &str) -> PathBuf {
        let copy = self.dir.join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.repo)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        let _ = fs::remove_dir_all(copy.join("drills"));
        copy
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn drill(s: &Scenario, repo: &Path, scratch: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let output = s
        .pitr()
        .args(["--json", "drill", "--repo"])
        .arg(repo)
        .arg("--scratch")
        .arg(scratch)
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}); status {}, stderr:\n{}",
            output.status,
            stderr(&output)
        )
    });
    (output, report)
}

/// The copy and its server are gone: the scratch directory holds nothing
/// but a failed drill's server log, no process works there, no socket of
/// its port is left.
fn assert_copy_gone(scratch: &Path, report: &serde_json::Value) {
    for entry in fs::read_dir(scratch).unwrap().flatten() {
        let names = names_in(&entry.path());
        assert!(
            names.is_empty() || names == ["server.log"],
            "{} holds {names:?}",
            entry.path().display()
        );
    }
    assert!(processes_working_in(scratch).is_empty());
    if let Some(port) = report["port"].as_u64() {
        let socket = format!(".s.PGSQL.{port}");
        assert!(
            !Path::new(report["scratch"].as_str().unwrap())
                .join("data")
                .join(&socket)
                .exists(),
            "socket {socket} left"
        );
        assert!(std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
    }
}

fn stored_reports(repo: &Path) -> Vec<String> {
    names_in(&repo.join("drills"))
}

#[test]
fn a_healthy_drill_passes_with_its_evidence() {
    let s = scenario();
    let scratch = s.scratch("healthy");
    let check_file = s.dir.join("healthy-checks.sql");
    fs::write(
        &check_file,
        "# the table is there\nSELECT count(*) >= 0 FROM markers\nSELECT count(*) FROM pg_database WHERE datname = 'postgres' -- expect: 1\n",
    )
    .unwrap();
    let (output, report) = drill(
        s,
        &s.repo,
        &scratch,
        &[
            "--seed",
            "42",
            "--check",
            "SELECT true",
            "--check-file",
            &check_file.to_string_lossy(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["failed_step"], serde_json::Value::Null);
    assert_eq!(report["seed"], 42);
    assert_eq!(report["target_requested"], "random");
    // The target lies inside the newest timeline's window.
    let target = chrono::DateTime::parse_from_rfc3339(report["target"].as_str().unwrap()).unwrap();
    let from =
        chrono::DateTime::parse_from_rfc3339(report["window_from"].as_str().unwrap()).unwrap();
    let until =
        chrono::DateTime::parse_from_rfc3339(report["window_until"].as_str().unwrap()).unwrap();
    assert!(from <= target && target < until, "{from} {target} {until}");
    assert_eq!(until, s.markers[3].committed);
    // Exactly the planned stop point, and a promoted copy.
    assert_eq!(report["stop_point_exact"], true);
    assert_eq!(report["promoted"], true);
    assert_eq!(report["archive_mode"], "off");
    assert_eq!(report["planned_stop"]["kind"], "transaction");
    let xid = report["planned_stop"]["xid"].as_u64().unwrap();
    assert!(report["reached_stop"]
        .as_str()
        .unwrap()
        .contains(&format!("transaction {xid},")));
    // The first marker committed after the target is where it stopped.
    let next = s.markers.iter().find(|m| m.committed > target);
    if let Some(next) = next {
        assert_eq!(xid, u64::from(next.xid));
    }
    // RTO phases, measured.
    for phase in ["plan", "staging", "replay", "checks", "total"] {
        assert!(
            report["rto_seconds"][phase].as_f64().unwrap() > 0.0,
            "{phase}: {report:#}"
        );
    }
    assert!(report["data_age_seconds"].as_f64().unwrap() > 0.0);
    // Every step passed, amcheck included, and every check.
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            assert_eq!(step["passed"], true, "{step}");
            step["step"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        [
            "plan",
            "staging",
            "replay",
            "stop_point",
            "amcheck",
            "checks"
        ]
    );
    assert_eq!(report["amcheck"], "clean");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|check| check["passed"] == true));
    assert_eq!(checks[2]["got"], "1");
    // Kept in the repository, listed, and the copy is gone.
    let key = report["server_log_key"].clone();
    assert_eq!(key, serde_json::Value::Null);
    assert!(stored_reports(&s.repo)
        .iter()
        .any(|name| name.ends_with(".json")));
    assert_copy_gone(&scratch, &report);
    assert!(
        fs::read_dir(&scratch).unwrap().next().is_none(),
        "scratch not emptied"
    );
    let listed = s
        .pitr()
        .args(["list", "--drills", "--repo"])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("passed"));
}

#[test]
fn a_failing_check_fails_the_drill_and_keeps_the_log() {
    let s = scenario();
    let scratch = s.scratch("failing-check");
    let (output, report) = drill(
        s,
        &s.repo,
        &scratch,
        &[
            "--seed",
            "42",
            "--amcheck=off",
            "--check",
            "SELECT count(*) > 1000 FROM markers",
        ],
    );
    assert_eq!(output.status.code(), Some(10), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("drill failed at step `checks`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(report["passed"], false);
    assert_eq!(report["failed_step"], "checks");
    assert_eq!(report["checks"][0]["passed"], false);
    assert_eq!(report["checks"][0]["got"], "f");
    // The same seed drew the same target as the healthy drill's (whose
    // report is in the repository too).
    assert_eq!(report["seed"], 42);
    // The server log stays, on disk and in the repository.
    let log = PathBuf::from(report["server_log"].as_str().unwrap());
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("recovery stopping"));
    let key = report["server_log_key"].as_str().unwrap();
    assert!(s.repo.join(key).is_file(), "{key}");
    assert_copy_gone(&scratch, &report);
}

#[test]
fn a_corrupted_segment_fails_the_drill_naming_it() {
    let s = scenario();
    let repo = s.copy_repo("corrupted-wal");
    let scratch = s.scratch("corrupted-wal-scratch");
    // The newest full segment on timeline 1: replay to `latest` must read
    // it. Overwrite the middle of its first page's records.
    let mut segments: Vec<String> = names_in(&repo.join("wal"))
        .into_iter()
        .filter(|name| name.len() == 24)
        .collect();
    segments.sort();
    let victim = segments[segments.len() - 2].clone();
    let path = repo.join("wal").join(&victim);
    let mut bytes = fs::read(&path).unwrap();
    for byte in &mut bytes[100..8192] {
        *byte ^= 0x5a;
    }
    fs::write(&path, bytes).unwrap();
    let (output, report) = drill(s, &repo, &scratch, &["--to", "latest", "--amcheck=off"]);
    assert_eq!(output.status.code(), Some(10), "{}", stderr(&output));
    // pitr proves the WAL before writing anything: the plan refuses it.
    assert_eq!(report["failed_step"], "plan", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains(&victim), "{error}");
    assert!(stderr(&output).contains(&victim));
    assert_copy_gone(&scratch, &report);
}

#[test]
fn a_broken_backup_fails_at_staging_naming_the_file() {
    let s = scenario();
    let repo = s.copy_repo("broken-backup");
    let scratch = s.scratch("broken-backup-scratch");
    // A catalog file of the backup changes after the manifest recorded
    // its checksum.
    let victim = repo.join("base/base/base/1/1259");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[4000] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    let (output, report) = drill(s, &repo, &scratch, &["--amcheck=off"]);
    assert_eq!(output.status.code(), Some(10), "{}", stderr(&output));
    assert_eq!(report["failed_step"], "staging", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("base/1/1259"), "{error}");
    assert_copy_gone(&scratch, &report);
    // The evidence of the failure is in the damaged repository.
    assert!(stored_reports(&repo)
        .iter()
        .any(|name| name.ends_with(".json")));
}

#[test]
fn the_drill_summary_people_read() {
    let s = scenario();
    let scratch = s.scratch("summary");
    let target = between(&s.markers[1], &s.markers[2]).to_rfc3339();
    let output = s
        .pitr()
        .args(["drill", "--repo"])
        .arg(&s.repo)
        .arg("--scratch")
        .arg(&scratch)
        .args(["--to", &target, "--amcheck=off", "--check"])
        .arg("SELECT count(*) = 2 FROM markers")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    let summary = text[text.find("drill passed").unwrap()..].to_string();
    // And a failed one: the summary names the step, then the error.
    let output = s
        .pitr()
        .args(["drill", "--repo"])
        .arg(&s.repo)
        .arg("--scratch")
        .arg(&scratch)
        .args(["--to", &target, "--amcheck=off", "--check"])
        .arg("SELECT count(*) = 3 FROM markers")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(10), "{}", stderr(&output));
    let text = stderr(&output);
    let failed = text[text.find("drill FAILED").unwrap()..].to_string();
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in [
        (s.dir.to_string_lossy().into_owned(), "[TMP]"),
        (
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z|[+-]\d{2}(:\d{2})?)?"
                .to_string(),
            "[TIME]",
        ),
        (r"transaction \d+".to_string(), "transaction [XID]"),
        (r"timeline \d+".to_string(), "timeline [N]"),
        (r"\b[0-9A-F]{24}\b".to_string(), "[SEGMENT]"),
        (r"\b\d+\.\d+s\b".to_string(), "[SECS]"),
        // Ages (`3s`, `1m12s`): how long the test ran before the drill.
        (r"\b(\d+[dhms])+\b".to_string(), "[AGE]"),
        (r"\d+(\.\d+)? (B|KiB|MiB|GiB)\b".to_string(), "[SIZE]"),
        (r"\d+ files".to_string(), "[N] files"),
        (r"pitr-drill-\w+-\d+".to_string(), "pitr-drill-[N]"),
        (r"drills/[0-9TZ-]+\.json".to_string(), "drills/[TIME].json"),
    ] {
        settings.add_filter(&pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_snapshot!("drill_summary", summary);
        insta::assert_snapshot!("drill_failed_summary", failed);
    });
}

#[test]
fn bad_usage_runs_nothing() {
    let s = scenario();
    let scratch = s.scratch("bad-usage");
    let before = stored_reports(&s.repo);
    for (args, says) in [
        (
            vec!["--check-file", "/nonexistent/checks.sql"],
            "cannot read the check file `/nonexistent/checks.sql`",
        ),
        (vec!["--to", "5 minuts ago"], "5 minuts ago"),
        (vec!["--to", "latest", "--seed", "1"], "--seed"),
    ] {
        let output = s
            .pitr()
            .args(["drill", "--repo"])
            .arg(&s.repo)
            .arg("--scratch")
            .arg(&scratch)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            names_in(&scratch).is_empty(),
            "{args:?} made a scratch copy"
        );
    }
    // No report for drills that never ran (other tests may add theirs
    // meanwhile, so only this test's absence of a failed one is checked).
    let after = stored_reports(&s.repo);
    for name in after.iter().filter(|name| !before.contains(name)) {
        let report: serde_json::Value =
            serde_json::from_slice(&fs::read(s.repo.join("drills").join(name)).unwrap_or_default())
                .unwrap_or_default();
        assert_ne!(
            report["scratch"]
                .as_str()
                .map(|p| p.starts_with(&*scratch.to_string_lossy())),
            Some(true)
        );
    }
}

#[test]
fn keep_leaves_the_copy_stopped() {
    let s = scenario();
    let scratch = s.scratch("keep");
    let target = between(&s.markers[0], &s.markers[1]).to_rfc3339();
    let (output, report) = drill(
        s,
        &s.repo,
        &scratch,
        &["--to", &target, "--amcheck=off", "--keep"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["kept"], true);
    let pgdata = Path::new(report["scratch"].as_str().unwrap()).join("data");
    let _guard = ServerGuard(pgdata.clone());
    // The copy is there, stopped: no server, no socket.
    assert!(pgdata.join("PG_VERSION").is_file());
    assert!(!pgdata.join("postmaster.pid").exists());
    assert!(processes_working_in(&scratch).is_empty());
}
