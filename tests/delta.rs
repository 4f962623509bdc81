//! `pitr restore --delta` (issue 16, points 3 and 4): an existing, stopped
//! data directory brought back to a backup in place, writing only what
//! differs, from a seekable backup (through its index) and from a plain
//! compressed tar (read as a stream). Proven by content (marker rows,
//! exact sums), by what was removed, by the pages counted, and by what
//! PostgreSQL and pitr refuse while a delta restore is unfinished.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A cluster with a backup made by `pitr backup OPTIONS`, the markers and
/// tables the tests read, and the damage done after the target.
struct Scenario {
    dir: tempfile::TempDir,
    binary: PathBuf,
    repo: PathBuf,
    cluster: Cluster,
    id: String,
    /// Between marker 1 and marker 2.
    target: String,
    /// The file of table `calm` (unchanged after the backup).
    calm: String,
}

/// Rows of `big` at the target: 200,000 of them, summing to this.
const BIG: &str = "200000|20000100000";

fn scenario(prefix: &str, backup_options: &[&str]) -> Scenario {
    let dir = shared_tempdir(prefix);
    let cluster = cluster_with_markers(dir.path());
    let repo = cluster.repo.clone();
    // About 7 MiB: several frames, pages in many of them.
    cluster.sql("CREATE TABLE big AS SELECT g FROM generate_series(1, 200000) g");
    cluster.sql("CREATE TABLE victim AS SELECT g FROM generate_series(1, 1000) g");
    cluster.sql(
        "CREATE TABLE calm AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    );
    let binary = shared_pitr_binary(dir.path());
    let output = run(
        pitr(&binary)
            // The programs of the major under test (the newest installed
            // pg_basebackup may be older than the matrix's server).
            .arg("--json")
            .arg("backup")
            .arg("--bin-dir")
            .arg(pg_bin())
            .args(["--fast", "--repo"])
            .arg(&repo)
            .args(backup_options)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres"),
        "pitr backup",
    );
    let id = json(&output)["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    // The incident, after the target: a bad UPDATE and a DROP.
    cluster.sql("UPDATE big SET g = -g WHERE g % 7 = 0");
    cluster.sql("DROP TABLE victim");
    cluster.insert_marker(3);
    cluster.archive_everything();
    cluster.sql("CHECKPOINT");
    let calm = cluster.sql("SELECT pg_relation_filepath('calm')");
    Scenario {
        calm,
        dir,
        binary,
        repo,
        cluster,
        id,
        target: between(&m1, &m2).to_rfc3339(),
    }
}

impl Scenario {
    /// `pitr restore --delta` (or not: `delta` false) of the scenario's
    /// backup to its target over `pgdata`, with `options`.
    fn restore(&self, pgdata: &Path, delta: bool, options: &[&str]) -> Command {
        let mut command = pitr(&self.binary);
        command
            .args(["--json", "--verbose", "restore"])
            .args(if delta { &["--delta"][..] } else { &[][..] })
            .args(options)
            .arg("--repo")
            .arg(&self.repo)
            .args(["--to", &self.target, "--pgdata"])
            .arg(pgdata);
        command
    }

    /// `pitr plan --delta --pgdata` as JSON: the forecast.
    fn plan(&self, pgdata: &Path) -> serde_json::Value {
        json(&run(
            pitr(&self.binary)
                .args(["--json", "plan", "--delta", "--pgdata"])
                .arg(pgdata)
                .arg("--repo")
                .arg(&self.repo)
                .args(["--to", &self.target]),
            "pitr plan --delta",
        ))
    }

    /// Stops the primary: `mode` fast, or immediate (a crash).
    fn stop_primary(&self, mode: &str) {
        pg_ctl(
            &self.cluster.pgdata,
            &self.cluster.dir.join("server.log"),
            &["stop", "-m", mode],
        );
    }
}

/// The restored server holds exactly the rows of the target.
fn assert_exact(summary: &serde_json::Value) {
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(psql(socket, port, "SELECT count(*) FROM markers"), "1");
    assert_eq!(psql(socket, port, "SELECT count(*), sum(g) FROM big"), BIG);
    assert_eq!(
        psql(socket, port, "SELECT count(*), sum(g) FROM victim"),
        "1000|500500"
    );
    assert_eq!(
        psql(
            socket,
            port,
            "SELECT count(*), sum(g), sum(length(pad)) FROM calm"
        ),
        "20000|200010000|4000000"
    );
}

/// Things pg_basebackup leaves out that the damaged directory holds, and a
/// file of nobody's: all must be gone after the delta restore.
fn plant_leftovers(pgdata: &Path) -> Vec<PathBuf> {
    let leftovers = vec![
        pgdata.join("base/1/999999"),
        pgdata.join("pg_wal/0000000100000000000000FE"),
        pgdata.join("stray-dir/inside"),
    ];
    for path in &leftovers {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![1u8; 16384]).unwrap();
    }
    leftovers
}

/// A delta restore interrupted halfway (Ctrl-C, slowed by the test knob
/// `PITR_STAGE_DELAY_MS`): it says how to finish, the directory keeps the
/// marker, PostgreSQL refuses to start on it (no pg_control), and `pitr
/// restore` without `--delta` refuses it. Then the second `--delta`, whose
/// output is returned (the server it started is stopped when the test's
/// guard on the directory drops).
fn interrupted_then_finished(s: &Scenario, pgdata: &Path, options: &[&str]) -> Output {
    // Interrupted halfway (slowed by the test knob), then refused.
    let child = s
        .restore(pgdata, true, options)
        .env("PITR_STAGE_DELAY_MS", "20")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the delta restore to begin",
        Duration::from_secs(60),
        Duration::from_millis(5),
        || {
            pgdata.join("pitr-delta-restore.in-progress").exists()
                && !pgdata.join("global/pg_control").exists()
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("run the same `pitr restore --delta` again"),
        "{}",
        stderr(&output)
    );
    assert!(pgdata.join("pitr-delta-restore.in-progress").exists());
    let started = as_pg_user(pg_bin().join("pg_ctl"))
        .args(["start", "-w", "-t", "20", "-D"])
        .arg(pgdata)
        .arg("-l")
        .arg(s.cluster.dir.join("refused-start.log"))
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.to_path_buf());
    let log = fs::read_to_string(s.cluster.dir.join("refused-start.log")).unwrap_or_default();
    assert!(
        !started.status.success(),
        "PostgreSQL started on a half-restored directory:\n{log}"
    );
    let said = format!("{}{log}", stderr(&started));
    assert!(said.contains("pg_control"), "{said}");
    let plain = s.restore(pgdata, false, &[]).output().unwrap();
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("unfinished delta restore"),
        "{}",
        stderr(&plain)
    );

    drop(_guard);
    s.restore(pgdata, true, options).output().unwrap()
}

/// The bad UPDATE and the DROP undone over the crashed primary itself,
/// from a seekable backup, through an interruption: `pitr plan --delta`
/// forecasts; a delta restore killed halfway leaves a directory that
/// PostgreSQL refuses to start and that `pitr restore` without `--delta`
/// refuses; a second `--delta` finishes it, rows exact at the target;
/// leftovers (stray files, the old WAL) are removed.
#[test]
fn delta_over_the_crashed_primary_from_a_seekable_backup_survives_an_interruption() {
    let s = scenario("pitr-delta-seekable-", &["--seekable"]);
    // Refused while the primary runs, with nothing changed.
    let pgdata = s.cluster.pgdata.clone();
    let before = tree_snapshot(&pgdata.join("global"));
    let refused = s.restore(&pgdata, true, &[]).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is in use"),
        "{}",
        stderr(&refused)
    );
    assert_same_tree(
        "global/ of the live primary",
        &before,
        &tree_snapshot(&pgdata.join("global")),
    );
    assert!(!pgdata.join("pitr-delta-restore.in-progress").exists());

    s.stop_primary("immediate");
    let leftovers = plant_leftovers(&pgdata);
    let plan = s.plan(&pgdata);
    let delta = &plan["delta"];
    assert!(delta["compare"]["files"].as_u64().unwrap() > 500, "{delta}");
    // victim's file is gone (DROP): rewritten in full.
    assert!(delta["rewrite"]["files"].as_u64().unwrap() >= 1, "{delta}");
    assert!(delta["remove"]["files"].as_u64().unwrap() >= 3, "{delta}");

    let output = interrupted_then_finished(&s, &pgdata, &["--jobs", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = json(&output);
    assert_exact(&summary);
    let said = stderr(&output);
    assert!(said.contains("is seekable"), "{said}");
    assert!(!pgdata.join("pitr-delta-restore.in-progress").exists());
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{} survived", leftover.display());
    }
    assert!(!pgdata.join("stray-dir").exists());
    let stats = &summary["delta"];
    // Most of the cluster was already right: far less read than stored.
    assert!(stats["files_kept"].as_u64().unwrap() > 400, "{stats}");
    assert!(stats["repository_bytes"].as_u64().unwrap() > 0, "{stats}");
}

/// pg_basebackup's tar, extracted as it is (GNU tar), then one page of a
/// relation corrupted in place (same size) and a stray file added: the
/// delta restore rewrites exactly that page, keeps every other file, and
/// removes the stray file; rows exact.
fn one_corrupted_page(s: &Scenario, decompress: &str) {
    let backup = s.repo.join("base").join(&s.id);
    let copy = pg_owned_dir(&s.dir.path().join("copy"));
    let base = fs::read_dir(&backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("base.tar") && !name.ends_with(".pitr-index")
        })
        .unwrap();
    let wal = base.with_file_name(
        base.file_name()
            .unwrap()
            .to_string_lossy()
            .replace("base", "pg_wal"),
    );
    run(
        Command::new("tar")
            .args(["-x", decompress, "-f"])
            .arg(&base)
            .arg("-C")
            .arg(&copy),
        &format!("tar -x {} (in {:?})", base.display(), names_in(&backup)),
    );
    if wal.exists() {
        run(
            Command::new("tar")
                .args(["-x", decompress, "-f"])
                .arg(&wal)
                .arg("-C")
                .arg(copy.join("pg_wal")),
            "tar -x pg_wal",
        );
    }
    run(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&copy),
        "chown",
    );
    let file = fs::OpenOptions::new()
        .write(true)
        .open(copy.join(&s.calm))
        .unwrap();
    file.write_all_at(b"damage", 2 * 8192 + 300).unwrap();
    drop(file);
    fs::write(copy.join("base/1/999999"), b"stray").unwrap();

    let plan = s.plan(&copy);
    assert_eq!(plan["delta"]["rewrite"]["files"], 0, "{}", plan["delta"]);
    assert!(
        plan["delta"]["remove"]["files"].as_u64().unwrap() >= 1,
        "{}",
        plan["delta"]
    );

    let output = s.restore(&copy, true, &[]).output().unwrap();
    let _guard = ServerGuard(copy.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = json(&output);
    let stats = &summary["delta"];
    assert_eq!(stats["pages_rewritten"], 1, "{stats}");
    assert_eq!(stats["files_patched"], 1, "{stats}");
    assert_eq!(stats["files_rewritten"], 0, "{stats}");
    assert_eq!(stats["files_removed"], 1, "{stats}");
    assert_eq!(stats["bytes_written"], 8192, "{stats}");
    assert!(!copy.join("base/1/999999").exists());
    assert_exact(&summary);
}

/// From a gzip tar read as a stream: one corrupted page found in an
/// extracted copy, and the damaged primary (stopped) back to the target
/// through an interruption.
#[test]
fn delta_from_a_plain_gzip_tar() {
    let s = scenario("pitr-delta-gzip-", &["--compress", "gzip"]);
    s.stop_primary("fast");
    one_corrupted_page(&s, "-z");
    let pgdata = s.cluster.pgdata.clone();
    let leftovers = plant_leftovers(&pgdata);
    let output = interrupted_then_finished(&s, &pgdata, &[]);
    let _guard = ServerGuard(pgdata.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = json(&output);
    assert_exact(&summary);
    assert!(!stderr(&output).contains("is seekable"));
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{} survived", leftover.display());
    }
    let stats = &summary["delta"];
    assert!(stats["pages_rewritten"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["files_kept"].as_u64().unwrap() > 400, "{stats}");
}

/// From a seekable backup: one corrupted page found through the index.
#[test]
fn delta_from_a_seekable_backup_rewrites_one_corrupted_page() {
    let s = scenario("pitr-delta-page-", &["--seekable"]);
    one_corrupted_page(&s, "--zstd");
}

/// Refused, with nothing changed: another cluster's data directory,
/// another major version, and a directory that is not a data directory.
#[test]
fn delta_refuses_what_is_not_this_clusters_stopped_directory() {
    let s = scenario("pitr-delta-refused-", &["--seekable"]);
    let other_dir = s.dir.path().join("other");
    fs::create_dir_all(&other_dir).unwrap();
    let (other, _, _) = initdb(&other_dir);
    let refuse = |pgdata: &Path, expected: &str| {
        let before = tree_snapshot(pgdata);
        let output = s.restore(pgdata, true, &[]).output().unwrap();
        assert!(!output.status.success());
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("nothing was changed"),
            "{}",
            stderr(&output)
        );
        assert_same_tree("a refused --delta", &before, &tree_snapshot(pgdata));
    };
    refuse(&other, "holds another cluster (system identifier");
    fs::write(other.join("PG_VERSION"), "11\n").unwrap();
    refuse(&other, "is a PostgreSQL 11 data directory");
    let not_pg = s.dir.path().join("not-pg");
    fs::create_dir_all(&not_pg).unwrap();
    fs::write(not_pg.join("notes.txt"), b"mine").unwrap();
    refuse(&not_pg, "is not a PostgreSQL data directory");
}

/// A tablespace is brought back in place too, at its recorded location
/// (the data directory's own `pg_tblspc` link points there): with
/// `--in-place`, the primary is recovered over itself, stray files in the
/// tablespace removed, its rows exact; a mapping to another cluster's
/// non-empty directory is refused.
#[test]
fn delta_in_place_brings_back_a_tablespace() {
    let dir = shared_tempdir("pitr-delta-tblspc-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let location = cluster.create_tablespace("ts1", &dir.path().join("ts_primary"));
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.sql("CREATE TABLE spaced TABLESPACE ts1 AS SELECT g FROM generate_series(1, 50000) g");
    let binary = shared_pitr_binary(dir.path());
    run(
        pitr(&binary)
            .arg("backup")
            .arg("--bin-dir")
            .arg(pg_bin())
            .args(["--seekable", "--fast", "--repo"])
            .arg(&repo)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres"),
        "pitr backup --seekable",
    );
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    cluster.sql("UPDATE spaced SET g = 0 WHERE g % 3 = 0");
    cluster.archive_everything();
    stop_by_pid(&cluster.pgdata);
    let version_dir = location.join(
        names_in(&location)
            .into_iter()
            .find(|n| n.starts_with("PG_"))
            .unwrap(),
    );
    let stray = version_dir.join("stray");
    fs::write(&stray, b"not in the backup").unwrap();
    let target = between(&m1, &m2).to_rfc3339();

    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("precious"), b"x").unwrap();
    let refused = pitr(&binary)
        .args(["restore", "--delta", "--repo"])
        .arg(&repo)
        .args(["--to", &target, "--pgdata"])
        .arg(&cluster.pgdata)
        .arg(format!(
            "--tablespace-mapping={}={}",
            location.display(),
            elsewhere.display()
        ))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not empty"),
        "{}",
        stderr(&refused)
    );
    assert!(cluster.pgdata.join("global/pg_control").exists());
    assert_eq!(names_in(&elsewhere), ["precious"]);

    let output = pitr(&binary)
        .args(["restore", "--delta", "--in-place", "--repo"])
        .arg(&repo)
        .args(["--to", &target, "--pgdata"])
        .arg(&cluster.pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(cluster.pgdata.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stray.exists(), "the stray file in the tablespace survived");
    pg_ctl(
        &cluster.pgdata,
        &cluster.dir.join("after.log"),
        &["start", "-w"],
    );
    assert_eq!(cluster.sql("SELECT count(*) FROM markers"), "1");
    assert_eq!(
        cluster.sql("SELECT count(*), sum(g) FROM spaced"),
        "50000|1250025000"
    );
    assert_eq!(
        cluster.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
        location.to_string_lossy()
    );
}
