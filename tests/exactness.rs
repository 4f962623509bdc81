//! Exact where PostgreSQL is exact: restores that PostgreSQL's own recovery
//! gets right from a backup and its archive (the recovery-target and
//! standby-backup scenarios of its TAP suite), replayed through `pitr` and
//! compared, row for row, with what PostgreSQL alone recovers from the same
//! backup, archive and `recovery_target_*` settings (each test does both).
//!
//! * 64-bit transaction IDs after the epoch was advanced (`pg_resetwal -e`,
//!   as PostgreSQL's tests do): inclusive, exclusive, another epoch refused;
//! * a backup of the primary and one of its streaming standby taken at the
//!   same checkpoint: each with its own end, time targets before, between
//!   and after their consistent points;
//! * a quiet target a few seconds before a backup whose last preceding
//!   commit lies several segments back;
//! * (opt-in, `make test-loops`) many small restores per action, each one
//!   reported as it ended.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use common::*;

/// A directory the PostgreSQL user can write in, for one restore.
fn restore_parent(dir: &Path, name: &str) -> PathBuf {
    let parent = dir.join(name);
    fs::create_dir_all(&parent).unwrap();
    fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    give_to_pg_user(&parent);
    parent
}

/// The marker ids a server holds, in order.
fn rows(socket: &Path, port: u16) -> Vec<i32> {
    psql(
        socket,
        port,
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM markers",
    )
    .split(',')
    .filter(|id| !id.is_empty())
    .map(|id| id.parse().unwrap())
    .collect()
}

/// Commits marker `id` and returns its 64-bit transaction ID
/// (`pg_current_xact_id()`, epoch included) and commit time.
fn insert_full(cluster: &Cluster, id: i32) -> (u64, DateTime<FixedOffset>) {
    let full: u64 = cluster
        .sql(&format!(
            "INSERT INTO markers VALUES ({id}) RETURNING pg_current_xact_id()::text"
        ))
        .parse()
        .unwrap();
    let committed = cluster.sql(&format!(
        "SELECT to_char(pg_xact_commit_timestamp('{}'::xid) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        full & 0xFFFF_FFFF
    ));
    (full, DateTime::parse_from_rfc3339(&committed).unwrap())
}

/// What `pitr restore --json` did: the rows it restored and the backup it
/// chose; the restored server runs until this is dropped.
struct RestoredRows {
    rows: Vec<i32>,
    backup: String,
    restored: Restored,
}

/// `pitr restore` to `target` (promoting); the rows of the result.
fn pitr_restore(
    bin: &Path,
    repo: &Path,
    parent: &Path,
    target: &str,
    extra: &[&str],
) -> RestoredRows {
    let restored = restore_from_repo(pitr(bin), &parent.join("pgdata"), repo, target, extra);
    RestoredRows {
        rows: rows(&restored.socket_dir(), restored.port()),
        backup: restored.summary["plan"]["backup"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
        restored,
    }
}

/// PostgreSQL alone: a copy of the plain backup, the `cp` restore_command
/// of its documentation, these `recovery_target*` settings and
/// `recovery_target_action = 'pause'`; the rows once replay paused at the
/// target, or the server log if it failed.
fn postgres_alone(
    backup: &Path,
    archive: &Path,
    parent: &Path,
    settings: &[(&str, String)],
) -> Result<Vec<i32>, String> {
    let pgdata = parent.join("alone");
    let run = pg_owned_dir(&parent.join("alone-run"));
    check(
        as_pg_user("cp")
            .arg("-a")
            .arg(backup)
            .arg(&pgdata)
            .output()
            .unwrap(),
        "copying the backup",
    );
    // A backup of a standby made with -R carries standby.signal: this is
    // a point-in-time recovery, not a standby.
    let _ = fs::remove_file(pgdata.join("standby.signal"));
    let port = free_port();
    let mut conf = format!(
        "\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = {}\narchive_mode = off\nprimary_conninfo = ''\nhot_standby = on\nrestore_command = {}\nrecovery_target_action = 'pause'\n",
        conf_quote(&run.to_string_lossy()),
        conf_quote(&format!(
            "cp {}/%f %p",
            shell_quote(&archive.to_string_lossy())
        )),
    );
    for (name, value) in settings {
        conf.push_str(&format!("{name} = {}\n", conf_quote(value)));
    }
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    fs::write(&auto, text).unwrap();
    fs::write(pgdata.join("recovery.signal"), "").unwrap();
    give_to_pg_user(&auto);
    give_to_pg_user(&pgdata.join("recovery.signal"));
    let log = run.join("server.log");
    let _guard = ServerGuard(pgdata.clone());
    let started = as_pg_user(pg_bin().join("pg_ctl"))
        .args(["start", "-w", "-t", "120", "-D"])
        .arg(&pgdata)
        .arg("-l")
        .arg(&log)
        .output()
        .unwrap();
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    if !started.status.success() {
        return Err(read_log());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if psql(&run, port, "SELECT pg_is_wal_replay_paused()") == "t" {
            break;
        }
        if postmaster_pid(&pgdata).is_none_or(|pid| !process_alive(pid)) {
            return Err(read_log());
        }
        assert!(
            Instant::now() < deadline,
            "replay never paused:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_text = read_log();
    assert!(log_text.contains("recovery stopping"), "{log_text}");
    Ok(rows(&run, port))
}

fn time_settings(target: DateTime<FixedOffset>, inclusive: bool) -> Vec<(&'static str, String)> {
    vec![
        (
            "recovery_target_time",
            target
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S%.6f+00")
                .to_string(),
        ),
        (
            "recovery_target_inclusive",
            if inclusive { "on" } else { "off" }.to_string(),
        ),
    ]
}

/// `pg_basebackup -Fp -X none -c fast` with this label from the server at
/// `socket`:`port` into `repo/base/<id>`.
fn basebackup(socket: &Path, port: u16, repo: &Path, id: &str, label: &str) {
    check(
        as_pg_user(pg_bin().join("pg_basebackup"))
            .arg("-D")
            .arg(repo.join("base").join(id))
            .args([
                "-U", "postgres", "-c", "fast", "-Fp", "-X", "none", "-l", label, "-h",
            ])
            .arg(socket)
            .args(["-p", &port.to_string()])
            .output()
            .unwrap(),
        "pg_basebackup",
    );
}

/// The transaction IDs of a cluster whose epoch was advanced to 1: the
/// 64-bit values `pg_current_xact_id()` returns after the first wraparound.
/// `pitr --json events --from xid:FROM --until xid:UNTIL`, to its end.
fn events_between(bin: &Path, repo: &Path, from: u64, until: u64) -> Output {
    pitr(bin)
        .args(["--json", "events", "--repo"])
        .arg(repo)
        .args([
            "--from",
            &format!("xid:{from}"),
            "--until",
            &format!("xid:{until}"),
        ])
        .output()
        .unwrap()
}

/// The transaction ids of the events a `--json events` command listed.
fn xids_listed(events: &Output) -> Vec<u64> {
    let listed: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["xid"].as_u64())
        .collect()
}

#[test]
fn a_64_bit_xid_restores_exactly_and_another_epoch_is_refused() {
    let dir = shared_tempdir("pitr-xid64-");
    let bin = shared_pitr_binary(dir.path());
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    // As PostgreSQL's own tests do: stop, advance the epoch, start again.
    let log = cluster.dir.join("server.log");
    pg_ctl(&cluster.pgdata, &log, &["stop", "-w", "-m", "fast"]);
    check(
        as_pg_user(pg_bin().join("pg_resetwal"))
            .args(["-e", "1", "-D"])
            .arg(&cluster.pgdata)
            .output()
            .unwrap(),
        "pg_resetwal -e 1",
    );
    pg_ctl(&cluster.pgdata, &log, &["start", "-w"]);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    basebackup(&cluster.dir, cluster.port, &repo, "base", "base");
    let (x1, _) = insert_full(&cluster, 1);
    let (x2, _) = insert_full(&cluster, 2);
    let (x3, _) = insert_full(&cluster, 3);
    assert!(x1 >> 32 == 1 && x3 >> 32 == 1, "epoch 1: {x1} {x3}");
    cluster.archive_everything();
    drop(cluster);
    let backup = repo.join("base/base");
    let archive = repo.join("wal");

    for (inclusive, expected) in [(true, vec![1, 2]), (false, vec![1])] {
        let name = if inclusive { "inclusive" } else { "exclusive" };
        let parent = restore_parent(dir.path(), name);
        let extra: &[&str] = if inclusive { &[] } else { &["--exclusive"] };
        let restored = pitr_restore(&bin, &repo, &parent, &format!("xid:{x2}"), extra);
        assert_eq!(restored.restored.summary["plan"]["target"]["value"], x2);
        let alone = postgres_alone(
            &backup,
            &archive,
            &parent,
            &[
                ("recovery_target_xid", x2.to_string()),
                (
                    "recovery_target_inclusive",
                    if inclusive { "on" } else { "off" }.to_string(),
                ),
            ],
        )
        .unwrap_or_else(|log| panic!("PostgreSQL alone failed:\n{log}"));
        assert_eq!(alone, expected, "PostgreSQL alone, {name}");
        assert_eq!(restored.rows, alone, "pitr, {name}");
    }

    // `plan` and `events` read the same form.
    let plan = pitr(&bin)
        .args(["--json", "plan", "--repo"])
        .arg(&repo)
        .args(["--to", &format!("xid:{x3}")])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let events = events_between(&bin, &repo, x1, x2);
    assert!(events.status.success(), "{}", stderr(&events));
    assert_eq!(
        xids_listed(&events),
        vec![x1 & 0xFFFF_FFFF, x2 & 0xFFFF_FFFF]
    );

    // The same 32-bit xid in epoch 2: PostgreSQL alone stops at the
    // transaction of epoch 1 without a word; pitr refuses up front.
    let wrong = x2 + (1 << 32);
    let parent = restore_parent(dir.path(), "wrong-epoch");
    let pgdata = parent.join("pgdata");
    let refused = pitr(&bin)
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["--to", &format!("xid:{wrong}"), "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let message = stderr(&refused);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains(&format!("{x2} of epoch 1")) && message.contains("not of epoch 2"),
        "{message}"
    );
    assert!(!pgdata.exists(), "a refusal writes nothing");
    let alone = postgres_alone(
        &backup,
        &archive,
        &parent,
        &[("recovery_target_xid", wrong.to_string())],
    )
    .unwrap_or_else(|log| panic!("PostgreSQL alone failed:\n{log}"));
    assert_eq!(alone, vec![1, 2], "PostgreSQL matches the 32-bit xid only");
    for (from, until) in [(wrong, wrong), (x1, wrong)] {
        let xids = xids_listed(&events_between(&bin, &repo, from, until));
        if from == wrong {
            assert!(xids.is_empty(), "no transaction of epoch 2: {xids:?}");
        } else {
            // Until a transaction that never comes: to the end.
            assert_eq!(xids.len(), 3, "{xids:?}");
        }
    }
}

/// A streaming standby of `primary`, made and started in the test: its own
/// port and socket directory.
struct Standby {
    pgdata: PathBuf,
    run: PathBuf,
    port: u16,
}

impl Drop for Standby {
    fn drop(&mut self) {
        stop_by_pid(&self.pgdata);
    }
}

fn start_standby(dir: &Path, primary: &Cluster) -> Standby {
    let pgdata = pg_owned_dir(&dir.join("standby"));
    let run = pg_owned_dir(&dir.join("standby-run"));
    check(
        as_pg_user(pg_bin().join("pg_basebackup"))
            .arg("-D")
            .arg(&pgdata)
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-h"])
            .arg(&primary.dir)
            .args(["-p", &primary.port.to_string()])
            .output()
            .unwrap(),
        "pg_basebackup of the standby",
    );
    let port = free_port();
    let conf = format!(
        "\nport = {port}\nunix_socket_directories = {}\nhot_standby = on\n",
        conf_quote(&run.to_string_lossy())
    );
    let path = pgdata.join("postgresql.conf");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(&conf);
    fs::write(&path, text).unwrap();
    // The connection string of our own: the one -R writes names options
    // of the newest libpq (17+ `sslnegotiation`), which a walreceiver
    // linked against an older system libpq (the matrix's relocatable
    // builds) refuses.
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&format!(
        "\nprimary_conninfo = {}\n",
        conf_quote(&format!(
            "host={} port={} user=postgres",
            primary.dir.display(),
            primary.port
        ))
    ));
    fs::write(&auto, text).unwrap();
    let standby = Standby {
        pgdata: pgdata.clone(),
        run: run.clone(),
        port,
    };
    pg_ctl(&pgdata, &run.join("server.log"), &["start", "-w"]);
    standby
}

/// Waits until the standby has replayed the primary's WAL up to `lsn`.
fn wait_for_replay(standby: &Standby, lsn: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(
        &standby.run,
        standby.port,
        &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
    ) != "t"
    {
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {lsn}; its log:\n{}",
            fs::read_to_string(standby.run.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn midpoint(a: DateTime<FixedOffset>, b: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    a + (b - a) / 2
}

#[test]
fn a_standby_backup_has_its_own_end_and_every_target_is_restored_exactly() {
    let dir = shared_tempdir("pitr-standby-");
    let bin = shared_pitr_binary(dir.path());
    let primary = cluster_with_markers(dir.path());
    let repo = primary.repo.clone();
    primary.insert_marker(1);
    let standby = start_standby(dir.path(), &primary);
    std::thread::sleep(Duration::from_millis(1500));
    let before_backups = chrono::Utc::now().fixed_offset();
    std::thread::sleep(Duration::from_millis(1500));

    // The primary's backup first: its checkpoint is the one the standby's
    // backup restarts at. Same label for both, as a nightly job has.
    basebackup(&primary.dir, primary.port, &repo, "b-primary", "nightly");
    std::thread::sleep(Duration::from_millis(1200));
    let between_ends = chrono::Utc::now().fixed_offset();
    std::thread::sleep(Duration::from_millis(1200));
    let m2 = primary.insert_marker(2);
    let after_m2 = primary.sql("SELECT pg_current_wal_insert_lsn()");
    wait_for_replay(&standby, &after_m2);
    // The standby's restartpoint writes out the page marker 2 dirtied, so
    // its minimum recovery point, the backup's end, lies after marker 2.
    // The name sorts first: a plan that took the primary's end for it
    // would choose it for a target it cannot reach.
    basebackup(&standby.run, standby.port, &repo, "a-standby", "nightly");
    std::thread::sleep(Duration::from_millis(1200));
    let m3 = primary.insert_marker(3);
    std::thread::sleep(Duration::from_millis(1200));
    let m4 = primary.insert_marker(4);
    primary.archive_everything();
    drop(standby);
    drop(primary);

    // `list`: each backup with its own end.
    let output = pitr(&bin)
        .args(["--json", "list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let backup = |id: &str| {
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:#}"))
            .clone()
    };
    let (s, p) = (backup("a-standby"), backup("b-primary"));
    assert_eq!(s["backup_from"], "standby", "{s:#}");
    assert_ne!(p["backup_from"], "standby", "{p:#}");
    assert_eq!(
        s["start_lsn"], p["start_lsn"],
        "both backups start at the same checkpoint"
    );
    let lsn = |v: &serde_json::Value| v.as_str().unwrap().parse::<pitr::wal::Lsn>().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("base/a-standby/backup_manifest")).unwrap())
            .unwrap();
    let manifest_end = manifest["WAL-Ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["End-LSN"]
                .as_str()
                .unwrap()
                .parse::<pitr::wal::Lsn>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(lsn(&s["stop_lsn"]), manifest_end, "{s:#}");
    assert!(
        lsn(&s["stop_lsn"]) > lsn(&p["stop_lsn"]),
        "the standby's backup ends after marker 2: {s:#} {p:#}"
    );
    assert!(
        lsn(&s["stop_lsn"]) >= after_m2.parse::<pitr::wal::Lsn>().unwrap(),
        "{s:#} vs {after_m2}"
    );
    let time = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(time(&s["stop_time"]) >= time(&s["start_time"]), "{s:#}");
    // pg_control of that backup holds the same end (the fallback without
    // a manifest reads it there).
    let control = pitr::repo::pg_control::parse(
        &fs::read(repo.join("base/a-standby/global/pg_control")).unwrap(),
    )
    .unwrap();
    assert_eq!(control.min_recovery_point, manifest_end);
    // Without its manifest, the standby's backup still ends there.
    let moved = dir.path().join("a-standby-manifest");
    fs::rename(repo.join("base/a-standby/backup_manifest"), &moved).unwrap();
    let output = pitr(&bin)
        .args(["--json", "list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let without: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let s_without = without["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "a-standby")
        .unwrap()
        .clone();
    assert_eq!(lsn(&s_without["stop_lsn"]), manifest_end, "{s_without:#}");
    fs::rename(&moved, repo.join("base/a-standby/backup_manifest")).unwrap();

    // Time targets before, between and after the two consistent points,
    // without --backup; each compared with PostgreSQL alone from the
    // backup pitr chose.
    let cases = [
        ("before", before_backups, vec![1], "b-primary"),
        ("between", between_ends, vec![1], "b-primary"),
        (
            "at-m2",
            midpoint(m2.committed, m3.committed),
            vec![1, 2],
            "a-standby",
        ),
        (
            "after",
            midpoint(m3.committed, m4.committed),
            vec![1, 2, 3],
            "a-standby",
        ),
    ];
    for (name, target, expected, chosen) in cases {
        let parent = restore_parent(dir.path(), name);
        let restored = pitr_restore(&bin, &repo, &parent, &target.to_rfc3339(), &[]);
        assert_eq!(restored.rows, expected, "pitr, {name} ({target})");
        assert_eq!(restored.backup, chosen, "{name}");
        let alone = postgres_alone(
            &repo.join("base").join(&restored.backup),
            &repo.join("wal"),
            &parent,
            &time_settings(target, true),
        )
        .unwrap_or_else(|log| panic!("PostgreSQL alone failed ({name}):\n{log}"));
        assert_eq!(restored.rows, alone, "pitr vs PostgreSQL alone, {name}");
    }
    // What pitr must not choose: the standby's backup cannot reach a
    // target before its end (PostgreSQL refuses it).
    let parent = restore_parent(dir.path(), "unreachable");
    let failed = postgres_alone(
        &repo.join("base/a-standby"),
        &repo.join("wal"),
        &parent,
        &time_settings(between_ends, true),
    );
    assert!(
        failed
            .as_ref()
            .is_err_and(|log| log.contains("before consistent recovery point")),
        "{failed:?}"
    );
}

#[test]
fn a_quiet_target_before_a_backup_restores_exactly() {
    let dir = shared_tempdir("pitr-quiet-");
    let bin = shared_pitr_binary(dir.path());
    let cluster = cluster_with_markers(dir.path());
    let repo = cluster.repo.clone();
    cluster.insert_marker(1);
    // Several segments without a commit: WAL that counts (a message, no
    // transaction), then a switch, four times.
    let first_quiet = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    for _ in 0..4 {
        cluster.sql("SELECT pg_logical_emit_message(false, 'pitr-test', 'quiet')");
        cluster.sql("SELECT pg_switch_wal()");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let target = chrono::Utc::now().fixed_offset();
    std::thread::sleep(Duration::from_millis(1500));
    basebackup(&cluster.dir, cluster.port, &repo, "only", "only");
    let backup_start = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    std::thread::sleep(Duration::from_millis(1200));
    cluster.insert_marker(2);
    cluster.archive_everything();
    drop(cluster);
    assert!(
        backup_start[16..] > first_quiet[16..],
        "{first_quiet} .. {backup_start}"
    );

    let parent = restore_parent(dir.path(), "quiet");
    let restored = pitr_restore(&bin, &repo, &parent, &target.to_rfc3339(), &[]);
    assert_eq!(restored.rows, vec![1]);
    let alone = postgres_alone(
        &repo.join("base/only"),
        &repo.join("wal"),
        &parent,
        &time_settings(target, true),
    )
    .unwrap_or_else(|log| panic!("PostgreSQL alone failed:\n{log}"));
    assert_eq!(restored.rows, alone);

    // Where a segment between that commit and the backup is gone, the
    // window falls back to the backup's stop time, and says so.
    let wal = repo.join("wal");
    let name = pitr::wal::WalSegment::parse(&first_quiet, pitr::wal::SegmentSize::DEFAULT)
        .unwrap()
        .next()
        .file_name();
    let gone = wal.join(&name);
    fs::remove_file(&gone).unwrap();
    let list = pitr(&bin)
        .args(["list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        text.contains(&format!("WAL segment `{name}` is missing"))
            && text.contains("its window starts at its stop time"),
        "{text}"
    );
    let list = pitr(&bin)
        .args(["--json", "list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let note = listed["timelines"][0]["recoverable_from_note"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains(&name), "{listed:#}");
    let parent = restore_parent(dir.path(), "quiet-gone");
    let refused = pitr(&bin)
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["--to", &target.to_rfc3339(), "--pgdata"])
        .arg(parent.join("pgdata"))
        .output()
        .unwrap();
    let message = stderr(&refused);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains(&format!("WAL segment `{name}` is missing")),
        "{message}"
    );
    assert!(!parent.join("pgdata").exists());
}

/// Small restores reach their target within milliseconds of startup; each
/// one must be reported as it ended, whatever the action. Opt-in
/// (`make test-loops`): 150 restores take minutes.
#[test]
#[ignore = "slow: run with `make test-loops`"]
fn small_restores_are_reported_right_every_time() {
    let rounds: usize = std::env::var("PITR_TEST_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = shared_tempdir("pitr-loops-");
    let bin = shared_pitr_binary(dir.path());
    let cluster = cluster_with_markers(dir.path());
    let repo = cluster.repo.clone();
    basebackup(&cluster.dir, cluster.port, &repo, "small", "small");
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(300));
    let m2 = cluster.insert_marker(2);
    cluster.archive_everything();
    drop(cluster);
    let target = between(&m1, &m2).to_rfc3339();
    for (action, state) in [
        ("shutdown", "stopped"),
        ("pause", "paused"),
        ("promote", "promoted"),
    ] {
        for round in 0..rounds {
            let parent = restore_parent(dir.path(), &format!("{action}-{round}"));
            let pgdata = parent.join("pgdata");
            let restored =
                restore_from_repo(pitr(&bin), &pgdata, &repo, &target, &["--action", action]);
            assert_eq!(restored.summary["state"], state, "{action} round {round}");
            drop(restored);
            fs::remove_dir_all(&parent).unwrap();
        }
    }
}
