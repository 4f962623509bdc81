//! Operating a repository against real PostgreSQL 15: `pitr init` sets up
//! archiving, `pitr backup` takes backups that restore exactly, `pitr
//! expire` removes exactly what no kept backup needs, and a failed backup
//! leaves nothing behind.
//!
//! The repository path holds a space, a quote and a percent sign, so the
//! lines `pitr init` prints are proven to survive postgresql.conf and the
//! shell.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn run_ok(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    output
}

/// `pitr init --repo`, returning the postgresql.conf lines it printed.
fn init_repo(binary: &Path, repo: &Path) -> String {
    let output = run_ok(
        pitr(binary).arg("init").arg("--repo").arg(repo),
        "pitr init",
    );
    stdout(&output)
}

/// `pitr init --repo REPO --pgdata PGDATA`: init for that cluster, whose
/// settings it reads.
fn init_for_cluster(binary: &Path, repo: &Path, pgdata: &Path) -> Command {
    let mut command = pitr(binary);
    command
        .args(["init", "--repo"])
        .arg(repo)
        .arg("--pgdata")
        .arg(pgdata);
    command
}

/// libpq's variables pointing at a test cluster.
fn with_pg_env<'a>(command: &'a mut Command, run_dir: &Path, port: u16) -> &'a mut Command {
    command
        .env("PGHOST", run_dir)
        .env("PGPORT", port.to_string())
        .env("PGUSER", "postgres")
}

/// Names of the files in the archive.
fn archive_names(repo: &Path) -> BTreeSet<String> {
    names_in(&repo.join("wal")).into_iter().collect()
}

/// Entries of `base/`, hidden ones included.
fn base_entries(repo: &Path) -> Vec<String> {
    names_in(&repo.join("base"))
}

/// A backup's start LSN as PostgreSQL recorded it in its backup_manifest
/// (`WAL-Ranges[0].Start-LSN`), independent of pitr's reading of it.
fn manifest_start_lsn(repo: &Path, id: &str) -> String {
    let path = repo.join("base").join(id).join("backup_manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ranges = manifest["WAL-Ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "one timeline: {ranges:?}");
    ranges[0]["Start-LSN"].as_str().unwrap().to_string()
}

/// The segment number (16 MiB segments) of an LSN such as `0/5000028`.
fn segment_number(lsn: &str) -> u64 {
    let (high, low) = lsn.split_once('/').unwrap();
    let value =
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap();
    value / (16 << 20)
}

/// The position of an archived segment file (any compression suffix).
fn archived_segment_number(name: &str) -> Option<u64> {
    let stem = name.get(..24)?;
    let rest = &name[24..];
    let is_segment = stem.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.is_empty() || [".gz", ".zst", ".lz4", ".partial"].contains(&rest));
    is_segment.then(|| {
        u64::from_str_radix(&stem[8..16], 16).unwrap() * 256
            + u64::from_str_radix(&stem[16..24], 16).unwrap()
    })
}

/// Restores `id` to `target` and returns the number of marker rows.
fn restore_count(binary: &Path, repo: &Path, id: &str, target: &str, parent: &Path) -> i64 {
    fs::create_dir_all(parent).unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    give_to_pg_user(parent);
    let restored = restore(
        pitr(binary),
        &parent.join("pgdata"),
        [
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--backup"),
            OsStr::new(id),
            OsStr::new("--to"),
            OsStr::new(target),
        ],
    );
    assert_eq!(restored.summary["plan"]["backup"]["id"], id);
    restored
        .sql("SELECT count(*) FROM markers")
        .parse()
        .unwrap()
}

#[test]
fn init_backup_restore_and_expire_on_a_cluster_set_up_by_init() {
    let dir = shared_tempdir("pitr-ops-");
    let binary = shared_pitr_binary(dir.path());
    let repo = dir.path().join("repo 100% o'brien");

    // 1. `pitr init` makes the layout and prints the settings.
    let conf = init_repo(&binary, &repo);
    assert!(conf.contains("\nwal_level = replica\n"), "{conf}");
    assert!(conf.contains("\narchive_mode = on\n"), "{conf}");
    assert!(conf.contains("wal-push --repo "), "{conf}");
    for sub in ["", "base", "wal"] {
        let metadata = fs::metadata(repo.join(sub)).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o750, "{sub}");
        // As root, init gives the repository to the postgres user.
        if require_root("init_backup_restore_and_expire_on_a_cluster_set_up_by_init") {
            use std::os::unix::fs::MetadataExt;
            let user = pg_user().expect("root has a postgres user");
            assert_eq!(metadata.uid(), user.uid.as_raw(), "{sub}");
        }
    }
    // Running it again changes nothing and prints the same lines.
    assert_eq!(init_repo(&binary, &repo), conf);

    // 2. A cluster with default settings does not archive: init says what
    // is missing (read from the stopped cluster's files).
    let (pgdata, run_dir, port) = initdb(dir.path());
    let output = init_for_cluster(&binary, &repo, &pgdata).output().unwrap();
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    let messages = stderr(&output);
    assert!(
        messages.contains("problem: archive_mode is `off`"),
        "{messages}"
    );
    assert!(
        messages.contains("problem: archive_command is empty"),
        "{messages}"
    );
    assert!(!messages.contains("problem: wal_level"), "{messages}");
    // The repository now belongs to this cluster: its system identifier,
    // from pg_control, is recorded for wal-push to check.
    let control = std::fs::read(pgdata.join("global/pg_control")).unwrap();
    let system_identifier = u64::from_le_bytes(control[..8].try_into().unwrap()).to_string();
    let identity = std::fs::read_to_string(repo.join("wal/.pitr-system-identifier")).unwrap();
    assert!(identity.contains(&system_identifier), "{identity}");
    assert!(messages.contains(&system_identifier), "{messages}");
    // Another cluster cannot take it over.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_pgdata, _, _) = initdb(&other);
    let output = init_for_cluster(&binary, &repo, &other_pgdata)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&system_identifier),
        "{}",
        stderr(&output)
    );

    // 3. The printed lines, appended to postgresql.conf, archive into the
    // repository, through `pitr wal-push` (the command init prints).
    append_conf(&pgdata, &conf);
    pg_ctl(&pgdata, &run_dir.join("server.log"), &["start", "-w"]);
    let _server = ServerGuard(pgdata.clone());
    let output = run_ok(
        &mut init_for_cluster(&binary, &repo, &pgdata),
        "pitr init --pgdata on the running cluster",
    );
    assert!(
        stderr(&output).contains("archives into"),
        "{}",
        stderr(&output)
    );

    // 4. Two backups with markers around them. The first connects through
    // PG* variables, the second through -d; both with the default
    // compression (zstd).
    psql(&run_dir, port, "CREATE TABLE markers (id int PRIMARY KEY)");
    let output = run_ok(
        with_pg_env(&mut pitr(&binary), &run_dir, port)
            .args(["backup", "--fast", "--repo"])
            .arg(&repo),
        "first pitr backup",
    );
    let first = stdout(&output).trim().to_string();
    let first_output = output;
    // The id is the backup's start in UTC, `YYYYMMDDTHHMMSSZ`.
    let started = chrono::NaiveDateTime::parse_from_str(&first, "%Y%m%dT%H%M%SZ")
        .unwrap_or_else(|e| panic!("backup id {first:?} is not a UTC time stamp: {e}"))
        .and_utc();
    let age = chrono::Utc::now() - started;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::minutes(5),
        "backup id {first} is not the time of the backup"
    );
    assert!(
        stderr(&first_output).contains("its WAL is archived"),
        "{}",
        stderr(&first_output)
    );
    std::thread::sleep(Duration::from_millis(1200));
    let mut markers = Vec::new();
    for id in 1..=3 {
        markers.push(insert_marker(&run_dir, port, id));
        std::thread::sleep(Duration::from_millis(300));
    }
    let output = run_ok(
        pitr(&binary)
            .args(["--json", "backup", "--fast", "--repo"])
            .arg(&repo)
            .arg("-d")
            .arg(format!(
                "host='{}' port={port} user=postgres",
                run_dir.display()
            )),
        "second pitr backup",
    );
    let summary = json(&output);
    let second = summary["id"].as_str().unwrap().to_string();
    assert_eq!(summary["wal_archived"], true);
    assert!(second > first, "ids sort by time: {first} {second}");

    // One "restorable from" per backup: `backup` (text and JSON), `list`
    // (table and JSON) and the window's start all give the same instant.
    let first_line = stderr(&first_output);
    let first_from = first_line
        .split("restorable from ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no restorable-from time: {first_line}"))
        .trim_end_matches(" UTC")
        .to_string();
    let listed = json(&run_ok(
        pitr(&binary).args(["--json", "list", "--repo"]).arg(&repo),
        "pitr list --json",
    ));
    let listed_from = |id: &str| {
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()["restorable_from"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        listed_from(&second),
        summary["restorable_from"].as_str().unwrap()
    );
    let first_json = chrono::DateTime::parse_from_rfc3339(&listed_from(&first)).unwrap();
    assert_eq!(
        first_json
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string(),
        first_from
    );
    assert_eq!(
        listed["timelines"][0]["recoverable_from"].as_str().unwrap(),
        listed_from(&first)
    );
    let table = stdout(&run_ok(
        pitr(&binary).args(["list", "--repo"]).arg(&repo),
        "pitr list",
    ));
    let first_row = table.lines().find(|l| l.starts_with(&first)).unwrap();
    assert!(first_row.contains(&first_from), "{table}");
    assert!(
        table.contains(&format!("recoverable {first_from} UTC")),
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    for id in 4..=6 {
        markers.push(insert_marker(&run_dir, port, id));
        std::thread::sleep(Duration::from_millis(300));
    }
    archive_everything(&run_dir, port);
    assert_eq!(base_entries(&repo), [first.clone(), second.clone()]);

    // The backups are what was asked for: tar, compressed, with a manifest.
    let files = names_in(&repo.join("base").join(&first));
    assert!(files.contains(&"base.tar.zst".to_string()), "{files:?}");
    assert!(files.contains(&"backup_manifest".to_string()), "{files:?}");

    // 5. A restore from the first backup is exact.
    let target = rfc3339(between(&markers[1], &markers[2]));
    assert_eq!(
        restore_count(&binary, &repo, &first, &target, &dir.path().join("r1")),
        2
    );

    // 6. expire --keep 1: the dry run lists what a real run removes.
    let before = archive_names(&repo);
    let dry = json(&run_ok(
        pitr(&binary)
            .args(["--json", "expire", "--keep", "1", "--dry-run", "--repo"])
            .arg(&repo),
        "expire --dry-run",
    ));
    assert_eq!(archive_names(&repo), before, "a dry run removes nothing");
    assert_eq!(base_entries(&repo), [first.clone(), second.clone()]);
    let would_remove: BTreeSet<String> = dry["wal"]["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let backups = dry["backups"].as_array().unwrap();
    let decisions: Vec<(&str, bool)> = backups
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["keep"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        decisions,
        [(first.as_str(), false), (second.as_str(), true)]
    );
    // The expectation comes from PostgreSQL's own files, not from pitr's
    // catalog: each backup's start LSN is in the backup_manifest the server
    // wrote (`WAL-Ranges`), and its history file in the archive is named
    // after that LSN by the server.
    let first_start = manifest_start_lsn(&repo, &first);
    let second_start_lsn = manifest_start_lsn(&repo, &second);
    let second_start = segment_number(&second_start_lsn);
    assert_eq!(
        backups[0]["start_lsn"],
        first_start.as_str(),
        "pitr's catalog"
    );
    assert_eq!(
        backups[1]["start_lsn"],
        second_start_lsn.as_str(),
        "pitr's catalog"
    );

    // What must go: every segment before the kept backup's start segment,
    // and the first backup's history file.
    let first_history_prefix = {
        let number = segment_number(&first_start);
        let (_, low) = first_start.split_once('/').unwrap();
        let offset = u64::from_str_radix(low, 16).unwrap() % (16 << 20);
        format!(
            "00000001{:08X}{:08X}.{offset:08X}.backup",
            number / 256,
            number % 256
        )
    };
    let expected_removed: BTreeSet<String> = before
        .iter()
        .filter(|name| {
            archived_segment_number(name).is_some_and(|n| n < second_start)
                || name.starts_with(&first_history_prefix)
        })
        .cloned()
        .collect();
    assert!(
        expected_removed
            .iter()
            .any(|n| n.starts_with(&first_history_prefix)),
        "the first backup's history file {first_history_prefix} must be in the archive: {before:?}"
    );
    assert_eq!(would_remove, expected_removed);

    let output = run_ok(
        pitr(&binary)
            .args(["expire", "--keep", "1", "--repo"])
            .arg(&repo),
        "pitr expire --keep 1",
    );
    assert!(
        stdout(&output).contains("the newest backup"),
        "{}",
        stdout(&output)
    );
    let after = archive_names(&repo);
    for name in &expected_removed {
        assert!(!after.contains(name), "{name} should be gone");
    }
    assert_eq!(
        after,
        before
            .difference(&expected_removed)
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    assert!(
        after
            .iter()
            .any(|name| archived_segment_number(name) == Some(second_start)),
        "the kept backup's start segment stays: {after:?}"
    );
    assert!(
        after.iter().any(|name| name.contains(".backup")),
        "{after:?}"
    );
    assert_eq!(
        base_entries(&repo),
        [second.as_str()],
        "no hidden leftovers either"
    );

    // `pitr list` shows what is kept, and the oldest kept backup restores.
    let listing = stdout(&run_ok(
        pitr(&binary).args(["list", "--repo"]).arg(&repo),
        "pitr list after expire",
    ));
    assert!(
        listing.contains(&second) && !listing.contains(&first),
        "{listing}"
    );
    let target = rfc3339(between(&markers[4], &markers[5]));
    assert_eq!(
        restore_count(&binary, &repo, &second, &target, &dir.path().join("r2")),
        5
    );
}

#[test]
fn a_failed_or_unarchived_backup_is_never_taken_for_a_good_one() {
    let dir = shared_tempdir("pitr-ops-fail-");
    let binary = shared_pitr_binary(dir.path());
    let repo = dir.path().join("repo");
    let conf = init_repo(&binary, &repo);
    let (pgdata, run_dir, port) = initdb(dir.path());
    append_conf(&pgdata, &conf);
    // An archive_command that always fails: the backup completes, its WAL
    // never reaches the archive.
    append_conf(&pgdata, "archive_command = 'false'\n");
    pg_ctl(&pgdata, &run_dir.join("server.log"), &["start", "-w"]);
    let server = ServerGuard(pgdata.clone());

    let output = with_pg_env(&mut pitr(&binary), &run_dir, port)
        .args([
            "backup",
            "--fast",
            "--compress",
            "gzip",
            "--archive-wait",
            "3s",
            "--repo",
        ])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("is complete in"), "{message}");
    assert!(
        message.contains("cannot be restored from the archive yet"),
        "{message}"
    );
    assert!(message.contains("hint: check archive_command"), "{message}");
    let entries = base_entries(&repo);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(!entries[0].starts_with('.'), "{entries:?}");

    // With the server stopped pg_basebackup fails: nothing is left in
    // base/ (in a fresh repository, not even a hidden directory).
    drop(server);
    let empty_repo = dir.path().join("empty");
    init_repo(&binary, &empty_repo);
    let output = with_pg_env(&mut pitr(&binary), &run_dir, port)
        .args(["backup", "--fast", "--compress", "gzip", "--repo"])
        .arg(&empty_repo)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("pitr: error: pg_basebackup failed"),
        "{message}"
    );
    assert!(message.contains("nothing was left in"), "{message}");
    assert!(message.contains("hint:"), "{message}");
    assert!(
        base_entries(&empty_repo).is_empty(),
        "{:?}",
        base_entries(&empty_repo)
    );
    assert_eq!(base_entries(&repo), entries);
}

/// pg_stat_archiver's failed and archived counts, and whether the last
/// attempt failed.
fn archiver(run_dir: &Path, port: u16) -> (u64, u64, bool) {
    let row = psql(
        run_dir,
        port,
        "SELECT failed_count || ',' || archived_count || ',' || \
         coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL) \
         FROM pg_stat_archiver",
    );
    let fields: Vec<&str> = row.split(',').collect();
    (
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
        fields[2] == "true",
    )
}

#[test]
fn init_says_when_archiving_fails_and_never_duplicates_its_lines() {
    let dir = shared_tempdir("pitr-ops-archiver-");
    let binary = shared_pitr_binary(dir.path());
    let repo = dir.path().join("repo");
    let printed = init_repo(&binary, &repo);
    let (pgdata, run_dir, port) = initdb(dir.path());

    // --conf-file writes a conf.d file of its own; twice is the same file.
    let conf_d = pgdata.join("conf.d");
    fs::create_dir(&conf_d).unwrap();
    append_conf(&pgdata, "include_dir = 'conf.d'\n");
    let conf_file = conf_d.join("pitr.conf");
    for _ in 0..2 {
        let output = run_ok(
            pitr(&binary)
                .args(["init", "--repo"])
                .arg(&repo)
                .arg("--conf-file")
                .arg(&conf_file),
            "pitr init --conf-file",
        );
        assert_eq!(stdout(&output), "", "nothing printed with --conf-file");
        let written = fs::read_to_string(&conf_file).unwrap();
        assert!(written.ends_with(&printed), "{written}");
        assert_eq!(written.matches("archive_mode = on").count(), 1, "{written}");
    }

    // `pitr init >> file` twice: the second adds nothing.
    let appended = dir.path().join("appended.conf");
    for round in 0..2 {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&appended)
            .unwrap();
        let output = pitr(&binary)
            .args(["init", "--repo"])
            .arg(&repo)
            .stdout(file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        if round == 1 {
            assert!(
                stderr(&output).contains("already holds these lines"),
                "{}",
                stderr(&output)
            );
        }
    }
    let text = fs::read_to_string(&appended).unwrap();
    assert_eq!(text.matches("archive_command = ").count(), 1, "{text}");

    // Running and archiving: the lines are in effect and not printed again.
    pg_ctl(&pgdata, &run_dir.join("server.log"), &["start", "-w"]);
    let _server = ServerGuard(pgdata.clone());
    let check = |code: i32| {
        let output = init_for_cluster(&binary, &repo, &pgdata).output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        assert_eq!(
            stdout(&output),
            "",
            "the lines are in effect: {}",
            stdout(&output)
        );
        stderr(&output)
    };
    let messages = check(0);
    assert!(messages.contains("nothing to add"), "{messages}");
    assert!(messages.contains("archiving works"), "{messages}");

    // The archive directory becomes unwritable: archiving fails, and init
    // says so, with the failed file, and exits 8.
    let wal = repo.join("wal");
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o555)).unwrap();
    psql(&run_dir, port, "CREATE TABLE t AS SELECT 1 AS x");
    psql(&run_dir, port, "SELECT pg_switch_wal()");
    wait_for(
        "a failed archiving attempt",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || archiver(&run_dir, port).0 > 0,
    );
    let failed_wal = psql(
        &run_dir,
        port,
        "SELECT last_failed_wal FROM pg_stat_archiver",
    );
    let messages = check(8);
    assert!(messages.contains("problem: archiving fails"), "{messages}");
    assert!(messages.contains(&failed_wal), "{messages}");
    assert!(messages.contains("server log says why"), "{messages}");

    // Fixed: it works again, and the earlier failures are a note.
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o750)).unwrap();
    psql(&run_dir, port, "INSERT INTO t VALUES (2)");
    psql(&run_dir, port, "SELECT pg_switch_wal()");
    wait_for(
        "archiving to succeed again",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || !archiver(&run_dir, port).2,
    );
    let messages = check(0);
    assert!(messages.contains("but works now"), "{messages}");
}

#[test]
fn init_refuses_a_directory_that_is_not_a_repository() {
    let dir = shared_tempdir("pitr-ops-init-");
    let binary = shared_pitr_binary(dir.path());
    let other = dir.path().join("photos");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("cat.jpg"), b"meow").unwrap();
    let output = pitr(&binary)
        .args(["init", "--repo"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is not a pitr repository"),
        "{}",
        stderr(&output)
    );
    assert!(!other.join("wal").exists());
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    let dir = shared_tempdir("pitr-ops-docs-");
    let binary = shared_pitr_binary(dir.path());
    for shell in ["bash", "zsh", "fish"] {
        let output = run_ok(
            pitr(&binary).args(["generate", "completions", shell]),
            shell,
        );
        let script = stdout(&output);
        for command in ["backup", "expire", "init", "keep-within"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
    }
    let man = dir.path().join("man");
    run_ok(pitr(&binary).args(["generate", "man"]).arg(&man), "man");
    for page in [
        "pitr.1",
        "pitr-backup.1",
        "pitr-expire.1",
        "pitr-init.1",
        "pitr-restore.1",
    ] {
        let text = fs::read_to_string(man.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    // The exit statuses a script tests are in the man pages.
    for page in ["pitr-restore.1", "pitr-plan.1"] {
        let text = fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains("Exit status"), "{page}: {text}");
        assert!(
            text.contains("plan refused") || text.contains("refused: no backup"),
            "{page}"
        );
    }
    // --version names the commit it was built from.
    let version = stdout(&run_ok(pitr(&binary).arg("--version"), "--version"));
    assert!(version.starts_with("pitr "), "{version}");
    assert!(version.contains("(commit "), "{version}");
    let backup = fs::read_to_string(man.join("pitr-backup.1")).unwrap();
    assert!(backup.contains("archive\\-wait"), "{backup}");
    // Hidden from --help: it is for packagers.
    assert!(!stdout(&pitr(&binary).arg("--help").output().unwrap()).contains("generate"));

    // Output into a pipe nobody reads (`pitr ... | head -1` once head has
    // exited) ends the command quietly, without a panic.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let output = pitr(&binary)
        .args(["generate", "completions", "bash"])
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(nix::libc::SIGPIPE));
}

/// Backups no listing shows (a `pitr backup` killed while writing, an
/// `expire` interrupted between hiding a backup and deleting it) would take
/// space forever: expire deletes what an interrupted expire left, reports
/// an unfinished backup with its age and the command that deletes it, and
/// deletes it only when named; a wrong name is refused with nothing
/// removed.
#[test]
fn expire_finishes_interrupted_expires_and_removes_unfinished_backups_only_when_named() {
    let dir = shared_tempdir("pitr-hidden-");
    let binary = shared_pitr_binary(dir.path());
    let repo = dir.path().join("repo");
    init_repo(&binary, &repo);
    let base = repo.join("base");
    let unfinished = ".pitr-backup-20261206T101500Z-Ab3dE9";
    for hidden in [unfinished, ".pitr-expiring-20261101T000000Z"] {
        fs::create_dir_all(base.join(hidden).join("base")).unwrap();
        fs::write(base.join(hidden).join("base/1"), [1u8; 8192]).unwrap();
    }
    let expire = |args: &[&str]| {
        pitr(&binary)
            .arg("expire")
            .args(args)
            .arg("--repo")
            .arg(&repo)
            .output()
            .unwrap()
    };
    let snapshot = |name: &str, output: &Output| {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&repo.to_string_lossy()), "[REPO]");
        settings.add_filter(r"hidden for \d+[smh]\w*", "hidden for [AGE]");
        settings.bind(|| {
            insta::assert_snapshot!(
                name,
                format!("exit {:?}\n{}", output.status.code(), stderr(output))
            );
        });
    };

    // 1. A name that is not an unfinished backup: refused, nothing removed.
    let refused = expire(&["--remove-unfinished", "20261206T101500Z"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    snapshot("expire_remove_unfinished_unknown", &refused);
    assert_eq!(base_entries(&repo).len(), 2);

    // 2. A policy run: the interrupted expire is finished, the unfinished
    // backup reported, not touched.
    let output = run_ok(
        pitr(&binary)
            .args(["expire", "--keep", "1", "--repo"])
            .arg(&repo),
        "expire --keep 1",
    );
    snapshot("expire_hidden_backups", &output);
    assert_eq!(base_entries(&repo), [unfinished]);

    // 3. Named, in a dry run: nothing removed; then for real.
    run_ok(
        pitr(&binary)
            .args([
                "expire",
                "--dry-run",
                "--remove-unfinished",
                unfinished,
                "--repo",
            ])
            .arg(&repo),
        "expire --dry-run --remove-unfinished",
    );
    assert_eq!(base_entries(&repo), [unfinished]);
    let output = run_ok(
        pitr(&binary)
            .args([
                "--json",
                "expire",
                "--remove-unfinished",
                unfinished,
                "--repo",
            ])
            .arg(&repo),
        "expire --remove-unfinished",
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["hidden_backups"]["unfinished_removed"][0]["name"],
        unfinished
    );
    assert!(base_entries(&repo).is_empty());
}

/// `s` as a regular expression matching itself.
fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
