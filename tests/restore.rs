//! End-to-end restores against real PostgreSQL (15 by default; the version
//! matrix runs them for 13 to 18): a source cluster with a
//! `cp` archive_command, two base backups (plain and tar.gz), marker rows
//! with known commit times, and restores that must bring back exactly the
//! rows committed before the target.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use nix::unistd::Pid;

/// The repository and what was committed when; built once per test binary.
struct Scenario {
    dir: PathBuf,
    repo: PathBuf,
    pitr: PathBuf,
    markers: Vec<Marker>,
    /// The LSN right after marker 6 committed.
    lsn_after_m6: String,
    before_everything: chrono::DateTime<chrono::FixedOffset>,
}

static SCENARIO: OnceLock<Scenario> = OnceLock::new();

fn scenario() -> &'static Scenario {
    SCENARIO.get_or_init(|| {
        let dir = process_tempdir("pitr-test-");
        let pitr = shared_pitr_binary(&dir);
        let before_everything = chrono::Utc::now().fixed_offset();
        let cluster = cluster_with_markers(&dir);
        let repo = cluster.repo.clone();
        cluster.backup("a-plain", &["-Fp", "-X", "stream"]);
        std::thread::sleep(Duration::from_millis(1200));
        let mut markers = Vec::new();
        for id in 1..=3 {
            markers.push(cluster.insert_marker(id));
            std::thread::sleep(Duration::from_millis(300));
        }
        cluster.sql("SELECT pg_create_restore_point('after_m3')");
        markers.push(cluster.insert_marker(4));
        cluster.backup("b-tar-gz", &["-Ft", "-z", "-X", "stream"]);
        std::thread::sleep(Duration::from_millis(1200));
        markers.push(cluster.insert_marker(5));
        // A wide gap, so that a relative target with one-second
        // resolution lands between marker 5 and marker 6.
        std::thread::sleep(Duration::from_millis(3000));
        markers.push(cluster.insert_marker(6));
        let lsn_after_m6 = cluster.sql("SELECT pg_current_wal_insert_lsn()");
        std::thread::sleep(Duration::from_millis(300));
        markers.push(cluster.insert_marker(7));
        // Nothing commits after marker 7, and the last segment is archived
        // well after it: a target in between passes the plan but can never
        // be reached.
        std::thread::sleep(Duration::from_millis(1000));
        cluster.archive_everything();
        drop(cluster);
        Scenario {
            dir,
            repo,
            pitr,
            markers,
            lsn_after_m6,
            before_everything,
        }
    })
}

impl Scenario {
    fn marker(&self, id: i32) -> &Marker {
        &self.markers[(id - 1) as usize]
    }

    /// A fresh directory for one restore: `<dir>/<name>/pgdata` is the
    /// data directory; its parent is writable by the PostgreSQL user.
    fn restore_dir(&self, name: &str) -> PathBuf {
        let parent = self.dir.join(name);
        fs::create_dir_all(&parent).unwrap();
        fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        give_to_pg_user(&parent);
        parent
    }

    /// A copy of the WAL archive in `parent/wal` to damage, readable by
    /// the server's OS user as the original is.
    fn copy_archive(&self, parent: &Path) -> PathBuf {
        let wal = parent.join("wal");
        fs::create_dir_all(&wal).unwrap();
        for name in names_in(&self.repo.join("wal")) {
            fs::copy(self.repo.join("wal").join(&name), wal.join(&name)).unwrap();
            give_to_pg_user(&wal.join(&name));
        }
        wal
    }

    fn pitr(&self) -> Command {
        let mut command = Command::new(&self.pitr);
        command.env_remove("PITR_REPO").env("TZ", "UTC");
        command
    }
}

/// `pitr restore --json` from the scenario's repository to `target`,
/// which must succeed: the summary, the restored server (stopped when
/// dropped) and its data directory.
fn restore_to(
    s: &Scenario,
    name: &str,
    target: &str,
    extra: &[&str],
    command: Command,
) -> (serde_json::Value, Restored, PathBuf) {
    let pgdata = s.restore_dir(name).join("pgdata");
    let mut args = vec![
        OsStr::new("--repo"),
        s.repo.as_os_str(),
        OsStr::new("--to"),
        OsStr::new(target),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let restored = restore(command, &pgdata, args);
    (restored.summary.clone(), restored, pgdata)
}

fn count_markers(summary: &serde_json::Value) -> i64 {
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    psql(socket, port, "SELECT count(*) FROM markers")
        .parse()
        .unwrap()
}

fn max_marker(summary: &serde_json::Value) -> i64 {
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    psql(socket, port, "SELECT coalesce(max(id), 0) FROM markers")
        .parse()
        .unwrap()
}

#[test]
fn absolute_local_time_in_another_zone_restores_exactly_the_rows_before_it() {
    let s = scenario();
    // A wall-clock time in New York, without an offset: TZ decides.
    let target = between(s.marker(2), s.marker(3));
    let new_york: chrono_tz_free::NewYork = chrono_tz_free::NewYork;
    let text = new_york.wall_time(target);
    let mut command = s.pitr();
    command.env("TZ", "America/New_York");
    let (summary, _guard, _) = restore_to(s, "abs-ny", &text, &[], command);
    assert_eq!(summary["plan"]["backup"]["id"], "a-plain");
    assert_eq!(summary["state"], "promoted");
    assert_eq!(count_markers(&summary), 2);
    assert_eq!(max_marker(&summary), 2);
    assert!(summary["new_timeline"].as_u64().unwrap() >= 2);
}

#[test]
fn relative_target_run_as_the_postgres_user_picks_the_second_backup() {
    let s = scenario();
    let target = between(s.marker(5), s.marker(6));
    let ago = (chrono::Utc::now().fixed_offset() - target).num_milliseconds();
    let seconds = (ago as f64 / 1000.0).round() as i64;
    let mut command = as_pg_user(&s.pitr);
    command.env_remove("PITR_REPO").env("TZ", "UTC");
    let (summary, _guard, pgdata) = restore_to(
        s,
        "relative",
        &format!("{seconds} seconds ago"),
        &[],
        command,
    );
    assert_eq!(summary["plan"]["backup"]["id"], "b-tar-gz");
    assert_eq!(count_markers(&summary), 5);
    // Only root can switch to the postgres user; otherwise the restore
    // above ran as ourselves and the ownership half does not apply.
    if require_root("relative_target_run_as_the_postgres_user_picks_the_second_backup") {
        use std::os::unix::fs::MetadataExt;
        let user = pg_user().expect("root has a postgres user");
        assert_eq!(fs::metadata(&pgdata).unwrap().uid(), user.uid.as_raw());
    }
}

#[test]
fn root_restore_stages_files_owned_by_the_postgres_user() {
    if !require_root("root_restore_stages_files_owned_by_the_postgres_user") {
        return;
    }
    let user = pg_user().expect("root has a postgres user");
    let s = scenario();
    let target = between(s.marker(5), s.marker(6));
    let (summary, _guard, pgdata) = restore_to(s, "as-root", &target.to_rfc3339(), &[], s.pitr());
    assert_eq!(summary["plan"]["backup"]["id"], "b-tar-gz");
    assert_eq!(count_markers(&summary), 5);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let metadata = fs::metadata(&pgdata).unwrap();
    assert_eq!(metadata.uid(), user.uid.as_raw());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(pgdata.join("base")).unwrap().uid(),
        user.uid.as_raw()
    );
}

/// Between the last commit before a backup's end and its one-second STOP
/// TIME: the backup is already consistent there, which only reading the WAL
/// can tell.
#[test]
fn a_target_just_after_the_last_commit_before_a_backup_ends_uses_that_backup() {
    let s = scenario();
    let target = (s.marker(4).committed + chrono::Duration::milliseconds(2)).to_rfc3339();
    let (summary, _guard, _) = restore_to(s, "inside-stop-second", &target, &[], s.pitr());
    assert_eq!(summary["plan"]["backup"]["id"], "b-tar-gz");
    assert_eq!(summary["plan"]["recoverable_window"]["exact"], true);
    assert_eq!(count_markers(&summary), 4);
}

#[test]
fn latest_replays_the_whole_archive() {
    let s = scenario();
    let (summary, _guard, _) = restore_to(s, "latest", "latest", &[], s.pitr());
    assert_eq!(summary["plan"]["backup"]["id"], "b-tar-gz");
    assert_eq!(count_markers(&summary), 7);
}

/// The newest segment only as a `.partial` file (as pg_receivewal or a
/// promoted standby leave it): planned as present, served under its
/// segment name, and replayed to the end.
#[test]
fn a_partial_last_segment_is_used() {
    let s = scenario();
    let parent = s.restore_dir("partial");
    let wal = s.copy_archive(&parent);
    let last = names_in(&wal)
        .into_iter()
        .filter(|n| n.len() == 24)
        .max()
        .unwrap();
    fs::rename(wal.join(&last), wal.join(format!("{last}.partial"))).unwrap();
    let pgdata = parent.join("pgdata");
    let output = s
        .pitr()
        .args(["--json", "restore", "--backups"])
        .arg(s.repo.join("base"))
        .arg("--wal-archive")
        .arg(&wal)
        .args(["--to", "latest", "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["plan"]["wal"]["last"], last.as_str());
    assert_eq!(count_markers(&summary), 7);
}

#[test]
fn xid_target_inclusive_and_exclusive() {
    let s = scenario();
    let xid = format!("xid:{}", s.marker(4).xid);
    let (summary, _guard, _) = restore_to(s, "xid", &xid, &[], s.pitr());
    assert_eq!(count_markers(&summary), 4);
    let (summary, _guard2, _) = restore_to(s, "xid-exclusive", &xid, &["--exclusive"], s.pitr());
    assert_eq!(count_markers(&summary), 3);
}

#[test]
fn restore_point_with_pause_leaves_a_read_only_server_at_the_target() {
    let s = scenario();
    let (summary, _guard, _) = restore_to(
        s,
        "name-pause",
        "name:after_m3",
        &["--action", "pause"],
        s.pitr(),
    );
    assert_eq!(summary["state"], "paused");
    assert_eq!(count_markers(&summary), 3);
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(psql(socket, port, "SELECT pg_is_in_recovery()"), "t");
}

#[test]
fn lsn_target_and_shutdown_action() {
    let s = scenario();
    let lsn = format!("lsn:{}", s.lsn_after_m6);
    let (summary, _guard, _) = restore_to(s, "lsn", &lsn, &[], s.pitr());
    assert_eq!(count_markers(&summary), 6);

    let target = between(s.marker(1), s.marker(2));
    let (summary, _guard, pgdata) = restore_to(
        s,
        "shutdown",
        &target.to_rfc3339(),
        &["--action", "shutdown"],
        s.pitr(),
    );
    assert_eq!(summary["state"], "stopped");
    assert!(
        postmaster_pid(&pgdata).is_none(),
        "the server must have stopped"
    );
    let log = fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap();
    assert!(log.contains("shutdown at recovery target"));
}

#[test]
fn plan_json_names_the_backup_and_the_wal_range() {
    let s = scenario();
    let output = s
        .pitr()
        .args(["plan", "--json", "--repo"])
        .arg(&s.repo)
        .args(["--to", &between(s.marker(1), s.marker(2)).to_rfc3339()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["backup"]["id"], "a-plain");
    assert_eq!(plan["timeline"], 1);
    for key in ["start_lsn", "stop_lsn", "stop_time"] {
        assert!(plan["backup"][key].is_string(), "backup.{key}: {plan}");
    }
    // The WAL starts with the segment the backup's own backup_label names
    // (written by PostgreSQL), and the range is contiguous.
    let label = fs::read_to_string(s.repo.join("base/a-plain/backup_label")).unwrap();
    let start_file = label
        .lines()
        .find_map(|line| line.strip_prefix("START WAL LOCATION: "))
        .and_then(|rest| rest.split("(file ").nth(1))
        .map(|rest| rest.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("no START WAL LOCATION in backup_label:\n{label}"));
    let first = plan["wal"]["first"].as_str().unwrap();
    let last = plan["wal"]["last"].as_str().unwrap();
    assert_eq!(first, start_file, "{plan}");
    let segment_number = |name: &str| {
        u64::from_str_radix(&name[8..16], 16).unwrap() * 0x100
            + u64::from_str_radix(&name[16..24], 16).unwrap()
    };
    assert_eq!(
        plan["wal"]["segments"].as_u64().unwrap(),
        segment_number(last) - segment_number(first) + 1,
        "{plan}"
    );
    assert!(plan["wal"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(plan["target"]["kind"], "time");

    // --dry-run is the same plan and writes nothing.
    let pgdata = s.restore_dir("dry-run").join("pgdata");
    let output = s
        .pitr()
        .args(["restore", "--dry-run", "--json", "--repo"])
        .arg(&s.repo)
        .args([
            "--to",
            &between(s.marker(1), s.marker(2)).to_rfc3339(),
            "--pgdata",
        ])
        .arg(&pgdata)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dry: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(dry["backup"]["id"], plan["backup"]["id"]);
    assert_eq!(dry["wal"], plan["wal"]);
    assert!(!pgdata.exists());
}

#[test]
fn a_target_after_the_last_commit_is_refused_with_the_exact_end() {
    let s = scenario();
    let target = (s.marker(7).committed + chrono::Duration::milliseconds(300)).to_rfc3339();
    let pgdata = s.restore_dir("unreachable").join("pgdata");
    let output = s
        .pitr()
        .args(["restore", "--repo"])
        .arg(&s.repo)
        .args(["--to", &target, "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    let last = s
        .marker(7)
        .committed
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    assert!(message.contains("after the last commit"), "{message}");
    assert!(
        message.contains(&last),
        "the message must give the exact end {last}: {message}"
    );
    assert!(!pgdata.exists());
}

/// An archive file PostgreSQL's user cannot read: wal-fetch fails with an
/// error (not "not found"), so PostgreSQL aborts recovery, and pitr reports
/// the failure with the server's log lines and stops the server.
#[test]
fn an_unreadable_archive_file_fails_the_recovery_loudly() {
    // Needs root: the planner (root) reads what the postgres user cannot.
    if !require_root("an_unreadable_archive_file_fails_the_recovery_loudly") {
        return;
    }
    let s = scenario();
    let parent = s.restore_dir("unreadable");
    let wal = s.copy_archive(&parent);
    let plan = s
        .pitr()
        .args(["plan", "--json", "--backups"])
        .arg(s.repo.join("base"))
        .arg("--wal-archive")
        .arg(&wal)
        .args(["--to", &between(s.marker(5), s.marker(6)).to_rfc3339()])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let last = plan["wal"]["last"].as_str().unwrap().to_string();
    fs::set_permissions(
        wal.join(&last),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let pgdata = parent.join("pgdata");
    // Without prefetching: the prefetcher runs as pitr's user (root here),
    // reads the file anyway and hands it over, and the recovery succeeds.
    let output = s
        .pitr()
        .args(["restore", "--no-prefetch", "--backups"])
        .arg(s.repo.join("base"))
        .arg("--wal-archive")
        .arg(&wal)
        .args([
            "--to",
            &between(s.marker(5), s.marker(6)).to_rfc3339(),
            "--pgdata",
        ])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(5), "{message}");
    assert!(message.contains("could not restore file"), "{message}");
    assert!(message.contains("pitr-recovery.log"), "{message}");
    let running = postmaster_pid(&pgdata).is_some_and(process_alive);
    assert!(
        !running,
        "no server may be left running after a failed recovery"
    );
    // Also one whose postmaster.pid is gone: every PostgreSQL process works
    // in its data directory.
    assert_eq!(
        processes_working_in(&pgdata),
        Vec::<Pid>::new(),
        "no server process may be left in the data directory"
    );
}

/// `pitr` runs the server programs of the backup's major: found on PATH
/// (the version matrix puts them first there) or named with --bin-dir.
/// Programs of another major are refused, with the reason, before anything
/// is written: that server could not recover the data directory.
#[test]
fn the_server_programs_must_be_of_the_backups_major() {
    let s = scenario();
    let server_major = |summary: &serde_json::Value| -> u32 {
        let socket = Path::new(summary["socket_dir"].as_str().unwrap());
        let port = summary["port"].as_u64().unwrap() as u16;
        let number: u32 = psql(socket, port, "SHOW server_version_num")
            .parse()
            .unwrap();
        number / 10000
    };
    let bin = pg_bin();
    let xid = format!("xid:{}", s.marker(2).xid);
    let (summary, _guard, _) = restore_to(
        s,
        "bin-dir",
        &xid,
        &["--bin-dir", bin.to_str().unwrap()],
        s.pitr(),
    );
    assert_eq!(count_markers(&summary), 2);
    assert_eq!(summary["server"]["major_version"], pg_major());
    assert_eq!(summary["server"]["bin_dir"], bin.to_str().unwrap());
    assert_eq!(server_major(&summary), pg_major());

    let other = other_pg_bin();
    if !require(
        "the_server_programs_must_be_of_the_backups_major",
        other.is_some(),
        "no server programs of another major here (set PITR_TEST_OTHER_PG_BIN): the refusal is not tested",
    ) {
        return;
    }
    let other = other.expect("checked above");
    let parent = s.restore_dir("wrong-major");
    let before = tree_snapshot(&parent);
    let output = s
        .pitr()
        .args(["restore", "--repo"])
        .arg(&s.repo)
        .args(["--to", &xid, "--bin-dir"])
        .arg(&other)
        .arg("--pgdata")
        .arg(parent.join("pgdata"))
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(
        message.contains(&format!("made by PostgreSQL {}", pg_major()))
            && message.contains(&other.display().to_string()),
        "{message}"
    );
    assert_eq!(
        tree_snapshot(&parent),
        before,
        "a refused restore must write nothing"
    );
}

#[test]
fn refusals_change_nothing() {
    let s = scenario();
    let parent = s.restore_dir("refusals");
    let occupied = parent.join("occupied");
    fs::create_dir_all(&occupied).unwrap();
    fs::write(occupied.join("precious"), b"do not touch").unwrap();
    let before = tree_snapshot(&parent);
    let run = |target: &str, pgdata: &Path, extra: &[&str]| {
        s.pitr()
            .args(["restore", "--repo"])
            .arg(&s.repo)
            .args(["--to", target, "--pgdata"])
            .arg(pgdata)
            .args(extra)
            .output()
            .unwrap()
    };

    // A non-empty data directory.
    let output = run("latest", &occupied, &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is not empty"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fs::read(occupied.join("precious")).unwrap(),
        b"do not touch"
    );
    assert_eq!(names_in(&occupied), ["precious"]);

    // Before the first backup: the window is in the message.
    let early = (s.before_everything - chrono::Duration::seconds(30)).to_rfc3339();
    let output = run(&early, &parent.join("early"), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("recoverable window"),
        "{}",
        stderr(&output)
    );

    // After the end of the archive, in long and in short units: a quiet
    // database is said to be quiet, with the command that gives its data.
    for late in ["1 second ago", "1s ago"] {
        let output = run(late, &parent.join("late"), &[]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("nothing changed after the last commit"),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("`--to latest` restores the same committed data"),
            "{}",
            stderr(&output)
        );
        assert!(!parent.join("late").exists());
    }

    // Pausing or shutting down at `latest`: there is no point to stop at
    // (the text is read once, so its spelling does not matter).
    for (to, action) in [("latest", "pause"), (" LATEST ", "shutdown")] {
        let output = run(to, &parent.join("at-latest"), &["--action", action]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{action}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("need a target point"),
            "{action}: {}",
            stderr(&output)
        );
    }

    // Nonsense targets.
    for nonsense in [
        "banana",
        "5 minuts ago",
        "xid:abc",
        "lsn:zz",
        "name:",
        "tomorrow",
    ] {
        let output = run(nonsense, &parent.join("nonsense"), &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{nonsense}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("accepted forms") || nonsense == "tomorrow",
            "{nonsense}: {}",
            stderr(&output)
        );
    }

    assert_eq!(
        tree_snapshot(&parent),
        before,
        "a refused restore must write nothing"
    );
}

#[test]
fn a_missing_segment_is_named_before_anything_is_written() {
    let s = scenario();
    let parent = s.restore_dir("missing-wal");
    let mut segments: Vec<String> = names_in(&s.repo.join("wal"))
        .into_iter()
        .filter(|name| name.len() == 24)
        .collect();
    segments.sort();
    let wal = s.copy_archive(&parent);
    // Remove a segment in the middle of what backup a-plain needs.
    let victim = &segments[segments.len() - 3];
    fs::remove_file(wal.join(victim)).unwrap();
    let before = tree_snapshot(&parent);
    let target = between(s.marker(2), s.marker(3)).to_rfc3339();
    let output = s
        .pitr()
        .args(["restore", "--backups"])
        .arg(s.repo.join("base"))
        .arg("--wal-archive")
        .arg(&wal)
        .args(["--to", &target, "--pgdata"])
        .arg(parent.join("pgdata"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(victim.as_str()),
        "the message must name {victim}: {}",
        stderr(&output)
    );
    assert_eq!(tree_snapshot(&parent), before);
}

/// Wall-clock formatting in a named zone, through the system's `date`, so
/// the test does not reuse the code under test.
mod chrono_tz_free {
    pub struct NewYork;
    impl NewYork {
        pub fn wall_time(&self, instant: chrono::DateTime<chrono::FixedOffset>) -> String {
            let output = std::process::Command::new("date")
                .env("TZ", "America/New_York")
                .arg("-d")
                .arg(format!(
                    "@{}.{:06}",
                    instant.timestamp(),
                    instant.timestamp_subsec_micros()
                ))
                .arg("+%Y-%m-%d %H:%M:%S.%6N")
                .output()
                .unwrap();
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        }
    }
}
