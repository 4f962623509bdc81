//! A repository in object storage end to end, on a real S3 server
//! (s3s-fs, started by the test) and a real PostgreSQL 15: `pitr init`,
//! `wal-push` as the archive_command, `pitr backup` uploading its backup,
//! `list` and `plan` reading it back, `wal-fetch` with its exit statuses
//! (delivered 0, missing 1, store down 126, which stops recovery); the
//! restores, exact rows, on S3 and Azure Blob; and on Google Cloud Storage
//! (fake-gcs-server, which takes no upload from object_store) every
//! read-only command and the restores from a repository uploaded through
//! its JSON API.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::archivers::{self, synthetic_segment};
use common::object_servers::{self, Kind, ObjectServer};
use common::*;

fn pitr(binary: &Path, server: &ObjectServer) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("PITR_REPO")
        .env("TZ", "UTC")
        .env("PITR_CACHE_DIR", server.dir.path().join("cache"));
    for (name, value) in server.env() {
        command.env(name, value);
    }
    command
}

/// Files (objects, on s3s-fs) below `dir`, at any depth.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => files_under(&entry.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Azurite listens on one port per test process (see `object_servers`):
/// the tests here that start one take turns.
fn one_azurite_at_a_time(kind: Kind) -> Option<std::sync::MutexGuard<'static, ()>> {
    static AZURITE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    (kind == Kind::Azure).then(|| AZURITE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// S3 (s3s-fs) and Azure (Azurite) in turn, each skipped visibly when its
/// server is not installed; the loop body holds Azurite's turn.
fn s3_and_azure(
    test: &str,
) -> impl Iterator<Item = (Kind, Option<std::sync::MutexGuard<'static, ()>>)> + '_ {
    [Kind::S3, Kind::Azure]
        .into_iter()
        .filter(move |kind| {
            object_servers::require_server(&format!("{}::{test}", kind.name()), *kind)
        })
        .map(|kind| (kind, one_azurite_at_a_time(kind)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_ok(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

#[test]
fn archive_backup_list_plan_and_fetch_through_s3() {
    let test = "archive_backup_list_plan_and_fetch_through_s3";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let mut server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-repo");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("cluster1");

    // 1. init marks the prefix; a second init changes nothing.
    let output = run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    assert!(
        text(&output.stderr).contains("created repository"),
        "{}",
        text(&output.stderr)
    );
    // init probed the store: s3s-fs refuses a conditional create over an
    // existing object, and the probe left nothing behind.
    assert!(
        text(&output.stderr).contains("refuses to replace an object on a conditional create"),
        "{}",
        text(&output.stderr)
    );
    let bucket = server.dir.path().join("data").join(object_servers::BUCKET);
    assert_eq!(
        names_in(&bucket.join("cluster1")),
        ["pitr-repository.json", "wal"]
    );
    // What the probe found, for wal-push to choose how it writes.
    let recorded = std::fs::read_to_string(bucket.join("cluster1/wal/.pitr-store.json")).unwrap();
    assert!(
        recorded.contains("\"conditional_create_enforced\":true"),
        "{recorded}"
    );
    assert_eq!(names_in(&bucket.join("cluster1/wal")), [".pitr-store.json"]);
    let archive_command_line = text(&output.stdout);
    assert!(
        archive_command_line.contains(&format!("wal-push --repo {url} %p")),
        "{archive_command_line}"
    );
    for (_, value) in server.env() {
        if value.len() > 8 && value.contains("secret") {
            assert!(
                !archive_command_line.contains(&value),
                "a secret is printed"
            );
        }
    }
    let again = run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init again",
    );
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    // A prefix init never saw is refused, not read as an empty repository.
    let typo = pitr(&binary, &server)
        .args(["list", "--repo", &server.url("cluster-typo")])
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(
        text(&typo.stderr).contains("is not a pitr repository"),
        "{}",
        text(&typo.stderr)
    );

    // 2. PostgreSQL archives through `pitr wal-push %p` into the bucket:
    // the repository, the endpoint and the credentials come from the
    // configuration file (PITR_CONFIG here; /etc/pitr/pitr.toml by
    // default), so the archive_command holds no secret and no URL.
    let (config, credentials) = s3_config_file(&server, &url, dir.path());
    std::fs::set_permissions(
        &credentials,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // With the configuration file naming the repository, init's
    // archive_command carries no URL.
    let short = run_ok(
        pitr(&binary, &server)
            .env("PITR_CONFIG", &config)
            .args(["init", "--repo", &url]),
        "init with the configuration file",
    );
    assert!(
        text(&short.stdout).contains(&format!(
            "archive_command = '{} wal-push %p'",
            binary.display()
        )),
        "{}",
        text(&short.stdout)
    );
    let archive_command = format!(
        "env PITR_CONFIG={} {} wal-push %p",
        shell_quote(&config.to_string_lossy()),
        shell_quote(&binary.to_string_lossy())
    );
    assert!(!archive_command.contains(object_servers::S3_SECRET_KEY));
    let local_repo = dir.path().join("unused-local-repo");
    let cluster = Cluster::start_archiving(dir.path(), &local_repo, &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    let backup = run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--repo", &url]),
        "backup",
    );
    let id = text(&backup.stdout).trim().to_string();
    assert!(!id.is_empty(), "{}", text(&backup.stderr));
    let first = cluster.insert_marker(1);
    let second = cluster.insert_marker(2);
    cluster.archive_everything();

    // The segments are in the bucket (s3s-fs keeps objects as files), and
    // nothing was written into the local directory of the helper.
    let archived = names_in(&bucket.join("cluster1/wal"));
    assert!(archived.len() >= 3, "{archived:?}");
    assert!(names_in(&local_repo.join("wal")).is_empty());
    assert!(names_in(&bucket.join("cluster1/base")).contains(&id));

    // 3. list and plan read the repository through the store.
    let list = run_ok(
        pitr(&binary, &server).args(["list", "--repo", &url]),
        "list",
    );
    assert!(text(&list.stdout).contains(&id), "{}", text(&list.stdout));
    let target = between(&first, &second).to_rfc3339();
    let plan = run_ok(
        pitr(&binary, &server).args(["plan", "--repo", &url, "--to", &target]),
        "plan",
    );
    assert!(text(&plan.stdout).contains(&id), "{}", text(&plan.stdout));

    // The restore an extract runs as a child is given the repository as
    // the user named it: the URL (its `base/` and `wal/` are not paths), so
    // it plans from the bucket.
    let (extract, rows, scratch) = extract_markers(&binary, &server, dir.path(), &url, &target);
    let said = text(&extract.stderr);
    assert!(
        said.contains(&format!("restore: backup:    {id}")),
        "the restore child did not plan from the bucket:\n{said}"
    );
    // The restore from object storage is built: the extract completes,
    // exact rows.
    assert!(extract.status.success(), "{said}");
    assert_eq!(rows, ["1"]);
    assert!(names_in(&scratch).is_empty(), "scratch copy left behind");

    // 4. wal-push of a name already archived: the same bytes are success
    // (PostgreSQL re-archives after a crash), other bytes are refused with
    // exit 3 and the archived object stays as it was.
    let stored_segment = archived
        .iter()
        .find(|name| name.len() >= 24 && name[..24].chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap()
        .clone();
    let segment_name = stored_segment[..24].to_string();
    let pushed_again = dir.path().join("again").join(&segment_name);
    std::fs::create_dir_all(pushed_again.parent().unwrap()).unwrap();
    run_ok(
        pitr(&binary, &server)
            .args(["wal-fetch", "--repo", &url, &segment_name])
            .arg(&pushed_again),
        "wal-fetch for the re-push",
    );
    let before = std::fs::read(bucket.join("cluster1/wal").join(&stored_segment)).unwrap();
    let same = run_ok(
        pitr(&binary, &server)
            .args(["wal-push", "--repo", &url])
            .arg(&pushed_again),
        "wal-push of the same segment again",
    );
    assert!(
        text(&same.stderr).contains("already archived"),
        "{}",
        text(&same.stderr)
    );
    let mut other = std::fs::read(&pushed_again).unwrap();
    other[1000] ^= 0xff;
    std::fs::write(&pushed_again, &other).unwrap();
    let different = pitr(&binary, &server)
        .args(["wal-push", "--repo", &url])
        .arg(&pushed_again)
        .output()
        .unwrap();
    assert_eq!(
        different.status.code(),
        Some(3),
        "a push of other bytes under {segment_name} (archived as {stored_segment}): {}",
        text(&different.stderr)
    );
    assert_eq!(
        std::fs::read(bucket.join("cluster1/wal").join(&stored_segment)).unwrap(),
        before,
        "nothing overwritten"
    );

    // 5. A second backup, then expire keeps one: the first disappears from
    // the bucket whole, the second stays listed.
    let second_backup = run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--repo", &url]),
        "second backup",
    );
    let id2 = text(&second_backup.stdout).trim().to_string();
    run_ok(
        pitr(&binary, &server).args(["expire", "--repo", &url, "--keep", "1"]),
        "expire",
    );
    // s3s-fs keeps objects as files and may leave their empty directories.
    assert_eq!(files_under(&bucket.join("cluster1/base").join(&id)), 0);
    assert!(files_under(&bucket.join("cluster1/base").join(&id2)) > 0);
    let list = run_ok(
        pitr(&binary, &server).args(["list", "--repo", &url]),
        "list after expire",
    );
    assert!(
        text(&list.stdout).contains(&id2) && !text(&list.stdout).contains(&id),
        "{}",
        text(&list.stdout)
    );

    // 6. wal-fetch: delivered (same bytes as PostgreSQL's), missing (1),
    // store down (126: recovery stops instead of ending early).
    // A segment expire kept: the newest.
    let segment = names_in(&bucket.join("cluster1/wal"))
        .into_iter()
        .filter(|name| name.len() >= 24 && name[..24].chars().all(|c| c.is_ascii_hexdigit()))
        .filter(|name| !name.contains(".backup") && !name.contains(".partial"))
        .max()
        .unwrap()[..24]
        .to_string();
    let fetched = dir.path().join("fetched");
    run_ok(
        pitr(&binary, &server)
            .args(["wal-fetch", "--repo", &url, &segment])
            .arg(&fetched),
        "wal-fetch",
    );
    assert_eq!(
        std::fs::metadata(&fetched).unwrap().len(),
        16 << 20,
        "a whole segment"
    );
    let missing = pitr(&binary, &server)
        .args(["wal-fetch", "--repo", &url, "0000000100000000000000FF"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing.stderr));
    drop(cluster);
    server.kill();
    let down = pitr(&binary, &server)
        .env("PITR_OBJECT_RETRY_SECONDS", "2")
        .args(["wal-fetch", "--repo", &url, &segment])
        .arg(dir.path().join("down"))
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(126), "{}", text(&down.stderr));
    assert!(!text(&down.stderr).contains(object_servers::S3_SECRET_KEY));
}

/// The commands PostgreSQL runs, on S3 and on Azure Blob, without a
/// cluster: `wal-push` stores a file once (the same again is success,
/// other bytes exit 3 and change nothing), `wal-fetch` delivers it (0),
/// says when it is missing (1) and fails in the way that stops recovery
/// when the store is down (126). No secret appears in any output.
#[test]
fn wal_push_and_fetch_on_s3_and_azure() {
    let test = "wal_push_and_fetch_on_s3_and_azure";
    let dir = tempfile::tempdir().unwrap();
    let name = "000000010000000000000007";
    let segment: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 241) as u8).collect();
    for (kind, _turn) in s3_and_azure(test) {
        let mut server = ObjectServer::start(kind);
        let url = server.url("pg");
        let work = dir.path().join(kind.name());
        std::fs::create_dir_all(work.join("pg_wal")).unwrap();
        let source = work.join("pg_wal").join(name);
        std::fs::write(&source, &segment).unwrap();
        let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_pitr"));
        let outputs = std::cell::RefCell::new(String::new());
        let run = |args: &[&str], extra: &[&Path]| {
            let output = pitr(&binary, &server)
                .args(args)
                .args(extra)
                .output()
                .unwrap();
            outputs.borrow_mut().push_str(&text(&output.stdout));
            outputs.borrow_mut().push_str(&text(&output.stderr));
            output
        };
        let init = run(&["init", "--repo", &url], &[]);
        assert!(init.status.success(), "{kind:?}: {}", text(&init.stderr));
        let push = run(&["wal-push", "--repo", &url], &[&source]);
        assert!(push.status.success(), "{kind:?}: {}", text(&push.stderr));
        let again = run(&["wal-push", "--repo", &url], &[&source]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "{kind:?}: {}",
            text(&again.stderr)
        );
        let mut other = segment.clone();
        other[5] ^= 1;
        std::fs::write(&source, &other).unwrap();
        let conflict = run(&["wal-push", "--repo", &url], &[&source]);
        assert_eq!(
            conflict.status.code(),
            Some(3),
            "{kind:?}: {}",
            text(&conflict.stderr)
        );

        let fetched = work.join("fetched");
        let fetch = run(&["wal-fetch", "--repo", &url, name], &[&fetched]);
        assert!(fetch.status.success(), "{kind:?}: {}", text(&fetch.stderr));
        assert!(
            std::fs::read(&fetched).unwrap() == segment,
            "{kind:?}: the first bytes, intact"
        );
        let missing = run(
            &["wal-fetch", "--repo", &url, "0000000100000000000000FF"],
            &[&work.join("never")],
        );
        assert_eq!(
            missing.status.code(),
            Some(1),
            "{kind:?}: {}",
            text(&missing.stderr)
        );
        server.kill();
        let down = pitr(&binary, &server)
            .env("PITR_OBJECT_RETRY_SECONDS", "2")
            .args(["wal-fetch", "--repo", &url, name])
            .arg(work.join("down"))
            .output()
            .unwrap();
        assert_eq!(
            down.status.code(),
            Some(126),
            "{kind:?}: {}",
            text(&down.stderr)
        );
        let push_down = pitr(&binary, &server)
            .env("PITR_OBJECT_RETRY_SECONDS", "2")
            .args(["wal-push", "--repo", &url])
            .arg(&source)
            .output()
            .unwrap();
        assert_eq!(
            push_down.status.code(),
            Some(1),
            "{kind:?}: PostgreSQL retries"
        );
        outputs.borrow_mut().push_str(&text(&down.stderr));
        outputs.borrow_mut().push_str(&text(&push_down.stderr));
        let all = outputs.into_inner();
        for secret in [object_servers::S3_SECRET_KEY, object_servers::AZURITE_KEY] {
            assert!(
                !all.contains(secret),
                "{kind:?}: a secret in the output:\n{all}"
            );
        }
    }
}

/// The configuration file a DBA puts in place once (`PITR_CONFIG` here,
/// /etc/pitr/pitr.toml by default) for the S3 server, with its credentials
/// in a file of their own; both readable by the server's OS user.
fn s3_config_file(server: &ObjectServer, url: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let config_dir = dir.join("etc");
    let (config, credentials) = write_s3_config(server, Some(url), &config_dir);
    for file in [&config_dir, &config, &credentials] {
        give_to_pg_user(file);
    }
    (config, credentials)
}

/// `pitr.toml` and `s3.credentials` in `config_dir` for the S3 server,
/// owned by whoever runs the test; the repository in the file only when
/// given.
fn write_s3_config(
    server: &ObjectServer,
    repository: Option<&str>,
    config_dir: &Path,
) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(config_dir).unwrap();
    let credentials = config_dir.join("s3.credentials");
    std::fs::write(
        &credentials,
        format!(
            "# test credentials\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            object_servers::S3_ACCESS_KEY,
            object_servers::S3_SECRET_KEY
        ),
    )
    .unwrap();
    let repository = repository
        .map(|url| format!("repository = \"{url}\"\n"))
        .unwrap_or_default();
    let config = config_dir.join("pitr.toml");
    std::fs::write(
        &config,
        format!(
            "{repository}[store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\ncredentials_file = \"{}\"\n",
            server.endpoint(),
            credentials.display()
        ),
    )
    .unwrap();
    (config, credentials)
}

/// The `archive_command` of a source cluster archiving into `url` with no
/// secret on its command line: on S3 the credentials come from a
/// configuration file (PITR_CONFIG) with a credentials file beside it; the
/// Azure emulator needs only where it listens.
fn archive_command_for(server: &ObjectServer, binary: &Path, url: &str, dir: &Path) -> String {
    let pitr = shell_quote(&binary.to_string_lossy());
    match server.kind {
        Kind::S3 => {
            let (config, _) = s3_config_file(server, url, dir);
            format!(
                "env PITR_CONFIG={} {pitr} wal-push %p",
                shell_quote(&config.to_string_lossy())
            )
        }
        _ => {
            let settings: Vec<String> = server
                .env()
                .into_iter()
                .map(|(name, value)| format!("{name}={}", shell_quote(&value)))
                .collect();
            format!("env {} {pitr} wal-push --repo {url} %p", settings.join(" "))
        }
    }
}

/// Runs `pitr --json restore` from the object store into `pgdata`; the
/// output (both streams) is kept for the secret check.
fn restore_from_store(
    binary: &Path,
    server: &ObjectServer,
    pgdata: &Path,
    args: &[&str],
    outputs: &mut String,
) -> (serde_json::Value, ServerGuard) {
    let mut command = pitr(binary, server);
    if server.kind == Kind::Azure {
        // An explicit key, as a real account has: the restored server's
        // restore_command inherits it and must not write it down.
        command.env("AZURE_STORAGE_ACCOUNT_KEY", object_servers::AZURITE_KEY);
    }
    let output = command
        .args(["--json", "restore", "--pgdata"])
        .arg(pgdata)
        .args(args)
        .output()
        .unwrap();
    let guard = ServerGuard(pgdata.to_path_buf());
    outputs.push_str(&text(&output.stdout));
    outputs.push_str(&text(&output.stderr));
    assert!(
        output.status.success(),
        "restore {args:?} failed ({}):\n{}\nlog:\n{}",
        output.status,
        text(&output.stderr),
        std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
    );
    (json(&output), guard)
}

/// A fresh server of `kind`, a repository under `repo_prefix` made by
/// `pitr init`, and a real PostgreSQL 15 archiving into it with a table
/// `markers`.
fn archiving_to_store(
    kind: Kind,
    dir_prefix: &str,
    repo_prefix: &str,
) -> (ObjectServer, tempfile::TempDir, PathBuf, String, Cluster) {
    let server = ObjectServer::start(kind);
    let dir = shared_tempdir(dir_prefix);
    let binary = shared_pitr_binary(dir.path());
    let url = server.url(repo_prefix);
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    (server, dir, binary, url, cluster)
}

/// `pitr backup --fast --repo URL EXTRA` of `cluster`, which must succeed.
fn backup_into_store(
    binary: &Path,
    server: &ObjectServer,
    cluster: &Cluster,
    url: &str,
    extra: &[&str],
) -> Output {
    run_ok(
        pitr(binary, server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--repo", url])
            .args(extra),
        "backup",
    )
}

/// `pitr extract` of `public.markers` as of `target` into a plain dump,
/// through a scratch directory in `dir`: the command's output, the rows of
/// the dump's COPY (none when it failed) and the scratch directory.
fn extract_markers(
    binary: &Path,
    server: &ObjectServer,
    dir: &Path,
    url: &str,
    target: &str,
) -> (Output, Vec<String>, PathBuf) {
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    give_to_pg_user(&scratch);
    let dumped = dir.join("markers.sql");
    let extract = pitr(binary, server)
        .args(["extract", "--repo", url, "--table", "public.markers"])
        .args(["--to", target, "--format", "plain", "--into-file"])
        .arg(&dumped)
        .arg("--scratch")
        .arg(&scratch)
        .output()
        .unwrap();
    let dump = std::fs::read_to_string(&dumped).unwrap_or_default();
    let rows = dump
        .lines()
        .skip_while(|line| !line.starts_with("COPY public.markers"))
        .skip(1)
        .take_while(|line| *line != "\\.")
        .map(str::to_string)
        .collect();
    (extract, rows, scratch)
}

fn count_rows(summary: &serde_json::Value) -> i64 {
    summary_sql(summary, "SELECT count(*) FROM markers")
        .parse()
        .unwrap()
}

/// `pitr restore --repo s3://…` (and az://) end to end with a real
/// PostgreSQL 15: the backup staged from the store, WAL prefetched from it
/// and fetched by the restore_command pitr writes, which holds neither the
/// URL nor a secret (the server inherits the repository from pitr's
/// environment). A time between two commits gives exactly the rows before
/// it; `--to latest` gives all of them.
#[test]
fn restore_from_s3_and_azure_to_a_time_and_to_latest() {
    let test = "restore_from_s3_and_azure_to_a_time_and_to_latest";
    if !require_root(test) {
        return;
    }
    for (kind, _turn) in s3_and_azure(test) {
        let (server, dir, binary, url, cluster) =
            archiving_to_store(kind, "pitr-object-restore", "restore");
        let mut outputs = String::new();
        let backup = backup_into_store(&binary, &server, &cluster, &url, &[]);
        outputs.push_str(&text(&backup.stderr));
        let markers: Vec<Marker> = (1..=3).map(|id| cluster.insert_marker(id)).collect();
        // Enough WAL after the backup that prefetching has work to do.
        cluster.sql("SELECT pg_switch_wal()");
        cluster.sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 1) g");
        cluster.archive_everything();
        drop(cluster);

        // A time between the second and third commits: exactly two rows,
        // the server left paused at the target with pitr's settings.
        let target = rfc3339(between(&markers[1], &markers[2]));
        let pgdata = dir.path().join("restored-time");
        let (summary, guard) = restore_from_store(
            &binary,
            &server,
            &pgdata,
            &["--repo", &url, "--to", &target, "--action", "pause"],
            &mut outputs,
        );
        assert_eq!(count_rows(&summary), 2, "{kind:?}");
        let auto_conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto_conf.contains("wal-fetch --spool"),
            "{kind:?}: {auto_conf}"
        );
        assert!(
            !auto_conf.contains(&url) && !auto_conf.contains("://"),
            "{kind:?}: a URL in postgresql.auto.conf:\n{auto_conf}"
        );
        outputs.push_str(&auto_conf);
        outputs.push_str(
            &std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default(),
        );
        assert!(
            summary["prefetch"]["prefetched"].as_u64().unwrap_or(0) > 0,
            "{kind:?}: WAL was prefetched from the store: {summary:#}"
        );
        drop(guard);

        // Latest: all three rows, promoted.
        let pgdata = dir.path().join("restored-latest");
        let requests_before = server.requests().len();
        let (summary, guard) = restore_from_store(
            &binary,
            &server,
            &pgdata,
            &["--repo", &url, "--to", "latest"],
            &mut outputs,
        );
        assert_eq!(count_rows(&summary), 3, "{kind:?}");
        if kind == Kind::S3 {
            // Promoting from timeline 1, PostgreSQL asks for
            // 00000001.history, which no archive holds: wal-fetch answers
            // without a round trip. The next timeline's history file is
            // still looked up in the store (a new timeline's number must
            // not collide with one archived by another restore).
            // (A lookup lists from just before its name: `…histor`.)
            let requests = server.requests()[requests_before..].to_vec();
            assert!(
                !requests.iter().any(|r| r.contains("00000001.histor")),
                "a request for timeline 1's history file: {requests:#?}"
            );
            assert!(
                requests.iter().any(|r| r.contains("00000002.histor")),
                "timeline 2's history file was looked up: {requests:#?}"
            );
            // The end of the archive (a segment never archived) is found
            // missing by listings alone, in every naming of its `.partial`,
            // not by a HEAD per compression.
            assert!(
                !requests
                    .iter()
                    .any(|r| r.starts_with("HEAD ") && r.contains(".partial")),
                "a HEAD per naming of a .partial file: {requests:#?}"
            );
            let history = std::fs::read_to_string(pgdata.join("pg_wal/00000002.history")).unwrap();
            assert!(history.starts_with("1\t"), "{history}");
        }
        outputs.push_str(&std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap());
        outputs.push_str(
            &std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default(),
        );
        drop(guard);

        // Credentials only root may read: the server's user could not
        // fetch WAL, so the restore stops before writing anything.
        if kind == Kind::S3 {
            let (config, credentials) = write_s3_config(&server, None, &dir.path().join("private"));
            for file in [&config, &credentials] {
                std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
            }
            let pgdata = dir.path().join("restored-unreachable");
            let output = pitr(&binary, &server)
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env("PITR_CONFIG", &config)
                .args(["restore", "--repo", &url, "--to", "latest", "--pgdata"])
                .arg(&pgdata)
                .output()
                .unwrap();
            let said = text(&output.stderr);
            assert_eq!(output.status.code(), Some(4), "{said}");
            assert!(
                said.contains("OS user `postgres` cannot reach the repository"),
                "{said}"
            );
            assert!(!pgdata.exists(), "nothing written");
            outputs.push_str(&said);
        }

        for secret in [object_servers::S3_SECRET_KEY, object_servers::AZURITE_KEY] {
            assert!(
                !outputs.contains(secret),
                "{kind:?}: a secret in the output, postgresql.auto.conf or the log"
            );
        }
    }
}

/// Every file below `dir` with its bytes, to show nothing changed.
fn contents_under(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

/// Two real clusters archive into one repository on S3: the first one's
/// segments record its system identifier; every segment of the second is
/// refused (exit 3, both identifiers named), whether PostgreSQL pushes it
/// or it is pushed by hand under a name the archive does not have, and
/// nothing in the bucket changes.
#[test]
fn a_second_cluster_is_refused_on_s3() {
    let test = "a_second_cluster_is_refused_on_s3";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-intruder");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("shared");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let settings: Vec<String> = server
        .env()
        .into_iter()
        .map(|(name, value)| format!("{name}={}", shell_quote(&value)))
        .collect();
    let archive_command = format!(
        "env {} PITR_CACHE_DIR={} {} wal-push --repo {url} %p",
        settings.join(" "),
        shell_quote(&dir.path().join("pg-cache").to_string_lossy()),
        shell_quote(&binary.to_string_lossy())
    );
    let first_dir = dir.path().join("first");
    std::fs::create_dir_all(&first_dir).unwrap();
    let first = Cluster::start_archiving(&first_dir, &first_dir.join("unused"), &archive_command);
    first.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    first.insert_marker(1);
    first.archive_everything();
    let first_id = first.sql("SELECT system_identifier FROM pg_control_system()");
    let bucket = server.dir.path().join("data").join(object_servers::BUCKET);
    let identity = std::fs::read_to_string(bucket.join("shared/wal/.pitr-system-identifier"))
        .expect("the first push records the identity");
    assert!(identity.contains(&first_id), "{identity}");
    // Stopped first: a cluster that goes on archiving its own WAL would
    // change the bucket while the intruder is watched.
    drop(first);
    let before = contents_under(&bucket.join("shared"));

    // The second cluster, archiving into the same place.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second =
        Cluster::start_archiving(&second_dir, &second_dir.join("unused"), &archive_command);
    let second_id = second.sql("SELECT system_identifier FROM pg_control_system()");
    assert_ne!(first_id, second_id);
    second.sql("CREATE TABLE t AS SELECT 1");
    second.sql("SELECT pg_switch_wal()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let failed: u64 = second
            .sql("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        if failed > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second cluster's archiving never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let archived = second.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
    assert_eq!(archived, "", "nothing of the second cluster is archived");

    // By hand, under a name the archive does not have: refused the same way.
    let segment = second.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let copy = dir.path().join("by-hand").join("0000000100000000000000F0");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(second.pgdata.join("pg_wal").join(&segment), &copy).unwrap();
    let pushed = pitr(&binary, &server)
        .args(["wal-push", "--repo", &url])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(pushed.status.code(), Some(3), "{}", text(&pushed.stderr));
    let message = text(&pushed.stderr);
    assert!(
        message.contains(&first_id) && message.contains(&second_id),
        "both identifiers named: {message}"
    );
    drop(second);
    assert!(
        contents_under(&bucket.join("shared")) == before,
        "nothing in the bucket changed"
    );
}

/// A seekable backup (`pitr backup --seekable`) in S3: its index is read
/// from the store, the workers fetch each part of a file with one ranged
/// GET, and the restore is exact at a time between two commits; `pitr
/// verify` passes on it (the index checked through the store).
#[test]
fn a_seekable_backup_in_s3_is_staged_by_the_workers() {
    let test = "a_seekable_backup_in_s3_is_staged_by_the_workers";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-seekable");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("seekable");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    // A table of several MiB: files that are staged in several parts.
    cluster.sql(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g",
    );
    run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--seekable", "--repo", &url]),
        "backup --seekable",
    );
    let markers: Vec<Marker> = (1..=3).map(|id| cluster.insert_marker(id)).collect();
    cluster.archive_everything();
    drop(cluster);

    let mut outputs = String::new();
    let target = rfc3339(between(&markers[1], &markers[2]));
    let pgdata = dir.path().join("restored");
    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &pgdata,
        &["--repo", &url, "--to", &target, "--jobs", "2", "--verbose"],
        &mut outputs,
    );
    assert!(outputs.contains("staged by 2 workers"), "{outputs}");
    assert_eq!(count_rows(&summary), 2);
    assert_eq!(
        summary_sql(&summary, "SELECT count(*), sum(g) FROM filler"),
        "200000|20000100000"
    );
    drop(guard);

    let verify = run_ok(
        pitr(&binary, &server).args(["verify", "--repo", &url]),
        "verify",
    );
    let said = text(&verify.stdout);
    assert!(said.contains(": ok"), "{said}");
}

/// `pitr restore --delta` from a seekable backup in S3 (issue 16: "works
/// the same on object storage") over a restored copy that a workload
/// changed afterwards and that was then stopped: rows exact at the target,
/// only the changed pages patched (most files kept as they were), and only
/// the frames holding them read from the store, far less than the backup.
#[test]
fn a_delta_restore_from_s3_patches_pages_and_reads_only_what_it_needs() {
    let test = "a_delta_restore_from_s3_patches_pages_and_reads_only_what_it_needs";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-delta");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("delta");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    // About 13 MiB: a relation of many frames, a few of them changed later.
    cluster.sql(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g",
    );
    // Hint bits set and pages frozen before the backup: the copy's later
    // scans then change only the pages they update.
    cluster.sql("VACUUM (FREEZE) filler");
    let backup = run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["--json", "backup", "--fast", "--seekable", "--repo", &url]),
        "backup --seekable",
    );
    let id = json(&backup)["id"].as_str().unwrap().to_string();
    let markers: Vec<Marker> = (1..=3).map(|id| cluster.insert_marker(id)).collect();
    cluster.archive_everything();
    drop(cluster);
    // What the base tar holds in the bucket (s3s-fs keeps objects as files).
    let stored: u64 = find_objects(server.dir.path(), &id)
        .iter()
        .filter(|p| p.to_string_lossy().contains("base.tar"))
        .filter(|p| !p.to_string_lossy().ends_with(".pitr-index"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(stored > 0, "no base tar of {id} under the bucket");

    let mut outputs = String::new();
    let target = rfc3339(between(&markers[1], &markers[2]));
    let pgdata = dir.path().join("restored");
    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &pgdata,
        &["--repo", &url, "--to", &target],
        &mut outputs,
    );
    assert_eq!(count_rows(&summary), 2);
    // The copy changed after the restore: a bad UPDATE of a few rows in
    // one place, and a new table; then stopped.
    summary_sql(&summary, "UPDATE filler SET h = 'bad' WHERE g <= 100");
    summary_sql(&summary, "CREATE TABLE stray AS SELECT 1 AS x");
    summary_sql(&summary, "CHECKPOINT");
    drop(guard);

    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &pgdata,
        &[
            "--repo",
            &url,
            "--to",
            &target,
            "--delta",
            "--jobs",
            "2",
            "--verbose",
        ],
        &mut outputs,
    );
    assert!(outputs.contains("is seekable"), "{outputs}");
    assert_eq!(count_rows(&summary), 2);
    assert_eq!(
        summary_sql(
            &summary,
            "SELECT count(*), sum(g), count(*) FILTER (WHERE h = 'bad') FROM filler"
        ),
        "200000|20000100000|0"
    );
    assert_eq!(
        summary_sql(
            &summary,
            "SELECT count(*) FROM pg_class WHERE relname = 'stray'"
        ),
        "0"
    );
    drop(guard);
    let stats = &summary["delta"];
    let number = |name: &str| {
        stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {stats}"))
    };
    // Pages patched, not every file rewritten.
    assert!(number("files_patched") >= 1, "{stats}");
    assert!(number("pages_rewritten") >= 1, "{stats}");
    assert!(number("files_kept") > 400, "{stats}");
    assert!(
        number("pages_kept") > 10 * number("pages_rewritten"),
        "{stats}"
    );
    assert!(number("files_removed") >= 1, "{stats}");
    // Only the frames holding changed pages were fetched: a fraction of
    // the stored backup.
    let read = number("repository_bytes");
    assert!(
        read > 0 && read * 2 < stored,
        "read {read} of {stored} bytes: {stats}"
    );
}

/// Objects (files, on s3s-fs) below `dir` whose path contains `part`.
fn find_objects(dir: &Path, part: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => find_objects(&entry.path(), part),
            Ok(_) if entry.path().to_string_lossy().contains(part) => vec![entry.path()],
            _ => Vec::new(),
        })
        .collect()
}

/// A fresh s3s-fs with a repository made by `pitr init` under `prefix`,
/// for tests that push synthetic segments and count the requests each
/// push makes (s3s-fs logs every one).
struct PushScene {
    server: ObjectServer,
    dir: tempfile::TempDir,
    binary: PathBuf,
    url: String,
}

impl PushScene {
    fn start(prefix: &str) -> PushScene {
        let server = ObjectServer::start(Kind::S3);
        let dir = tempfile::tempdir().unwrap();
        let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_pitr"));
        let url = server.url(prefix);
        run_ok(
            pitr(&binary, &server).args(["init", "--repo", &url]),
            "init",
        );
        PushScene {
            server,
            dir,
            binary,
            url,
        }
    }

    fn pitr(&self) -> Command {
        pitr(&self.binary, &self.server)
    }

    /// Writes a synthetic segment `name` (its bytes `fill`) into the
    /// scratch directory; returns its path.
    fn segment(&self, name: &str, fill: u8) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, synthetic_segment(7_123_456_789_012_345_678, fill)).unwrap();
        path
    }

    /// `pitr wal-push EXTRA` of a synthetic segment: its output and the
    /// requests it made.
    fn push(&self, name: &str, fill: u8, extra: &[&str]) -> (Output, Vec<String>) {
        let path = self.segment(name, fill);
        let seen = self.server.requests().len();
        let output = self
            .pitr()
            .args(["wal-push", "--repo", &self.url])
            .args(extra)
            .arg(&path)
            .output()
            .unwrap();
        (output, self.server.requests()[seen..].to_vec())
    }

    /// The object `key` below the bucket, on s3s-fs's disk.
    fn object(&self, key: &str) -> PathBuf {
        self.server
            .dir
            .path()
            .join("data")
            .join(object_servers::BUCKET)
            .join(key)
    }
}

/// The methods of logged requests (`PUT /…` → `PUT`).
fn methods(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.split(' ').next().unwrap().to_string())
        .collect()
}

/// What archiving one segment costs on S3, counted in the server's own
/// log: one conditional PUT. The first push into a repository also records
/// the cluster's identity and the archive's one compression, and lists the
/// name's copies (it cannot know what was archived before the record). A
/// re-archived segment costs the refused PUT, a LIST and one read to
/// compare; a push asking for another compression is refused (exit 2)
/// before anything is written.
#[test]
fn wal_push_costs_one_put_on_s3() {
    let test = "wal_push_costs_one_put_on_s3";
    if !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let scene = PushScene::start("counted");
    let wal_push = |name: &str, fill: u8, extra: &[&str]| scene.push(name, fill, extra);
    // The first push records the identity (a HEAD that finds none, and its
    // conditional PUT) and the compression (a conditional PUT), and lists.
    let (output, first) = wal_push("000000010000000000000001", 1, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for record in [".pitr-system-identifier", ".pitr-wal-compression"] {
        assert!(first.iter().any(|r| r.contains(record)), "{first:#?}");
    }
    assert!(
        first.iter().any(|r| r.contains("list-type=2")),
        "{first:#?}"
    );
    for (number, fill) in [(2, 2u8), (3, 3), (4, 4)] {
        let name = format!("00000001000000000000000{number}");
        let (output, requests) = wal_push(&name, fill, &[]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert_eq!(methods(&requests), ["PUT"], "{requests:#?}");
        assert!(
            requests[0].contains(&format!("{name}.zst")),
            "{requests:#?}"
        );
    }
    eprintln!("requests per archived segment on s3s-fs: 1 PUT");

    // The same segment again: the store refuses the PUT, the copies are
    // listed and compared, success.
    let (output, again) = wal_push("000000010000000000000004", 4, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(methods(&again)[0], "PUT", "{again:#?}");
    assert!(
        again.iter().any(|r| r.contains("list-type=2")),
        "{again:#?}"
    );
    // Other bytes under that name: refused, the archived object unchanged.
    let (output, _) = wal_push("000000010000000000000004", 9, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));

    // Another compression: refused before any segment is written, both
    // compressions named, what to do said.
    let (output, refused) = wal_push("000000010000000000000005", 5, &["--compress", "gzip"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("compressed with zstd") && stderr.contains("asks for gzip"),
        "{stderr}"
    );
    assert!(stderr.contains("--compress zstd"), "{stderr}");
    assert!(
        !refused
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("000000010000000000000005")),
        "{refused:#?}"
    );
}

/// The store goes down in the middle of a restore's replay: `wal-fetch`
/// exits 126, which stops PostgreSQL's recovery instead of ending it as if
/// the archive were exhausted, and `pitr restore` fails (exit 5) naming
/// the restore_command's error, with no secret in what it prints.
#[test]
fn a_store_that_goes_down_during_replay_fails_the_restore() {
    let test = "a_store_that_goes_down_during_replay_fails_the_restore";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let mut server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-down");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("down");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--repo", &url]),
        "backup",
    );
    // Several segments of WAL after the backup, so replay has to come
    // back to the store a few times.
    for id in 1..=6 {
        cluster.insert_marker(id);
        cluster.sql("SELECT pg_switch_wal()");
    }
    cluster.archive_everything();
    drop(cluster);

    let pgdata = dir.path().join("restored");
    let restore = pitr(&binary, &server)
        // Each fetch waits a second (a slow store), and a store that is
        // down is given up on after two seconds of retries.
        .env("PITR_FETCH_DELAY_MS", "1000")
        .env("PITR_OBJECT_RETRY_SECONDS", "2")
        .args(["restore", "--no-prefetch", "--repo", &url, "--to", "latest"])
        .arg("--pgdata")
        .arg(&pgdata)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    // Kill the store once PostgreSQL has restored its first segment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default();
        if log.contains("restored log file") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replay never started:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let output = restore.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("wal-fetch: error"), "{stderr}");
    assert!(stderr.contains("restore_command failed"), "{stderr}");
    let log = std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default();
    assert!(
        !log.contains("archive recovery complete"),
        "recovery must not end as if the archive were exhausted:\n{log}"
    );
    assert!(!stderr.contains(object_servers::S3_SECRET_KEY));
    assert!(!log.contains(object_servers::S3_SECRET_KEY));
}

/// A store that is down for a few seconds is waited out: the requests of
/// `wal-push` and `wal-fetch` are retried with backoff (connection refused
/// while s3s-fs is down) within their budget, and both succeed once it is
/// back, with nothing for PostgreSQL to retry. (The budget running out is
/// `a_store_that_goes_down_during_replay_fails_the_restore`.)
#[test]
fn a_store_down_for_seconds_is_waited_out_by_retries() {
    let test = "a_store_down_for_seconds_is_waited_out_by_retries";
    if !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let mut scene = PushScene::start("outage");
    let (first, _) = scene.push("000000010000000000000001", 1, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let segment = synthetic_segment(7_123_456_789_012_345_678, 1);
    let second = scene.segment("000000010000000000000002", 2);
    let fetched = scene.dir.path().join("fetched");
    let url = scene.url.clone();

    scene.server.kill();
    let started = std::time::Instant::now();
    let spawn = |args: &[&std::ffi::OsStr]| {
        scene
            .pitr()
            .env("PITR_OBJECT_RETRY_SECONDS", "60")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let push = spawn(&[
        "wal-push".as_ref(),
        "--repo".as_ref(),
        url.as_ref(),
        second.as_os_str(),
    ]);
    let fetch = spawn(&[
        "wal-fetch".as_ref(),
        "--repo".as_ref(),
        url.as_ref(),
        "000000010000000000000001".as_ref(),
        fetched.as_os_str(),
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    scene.server.revive();
    let push = push.wait_with_output().unwrap();
    let fetch = fetch.wait_with_output().unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "they waited for the store"
    );
    assert_eq!(push.status.code(), Some(0), "{}", text(&push.stderr));
    assert_eq!(fetch.status.code(), Some(0), "{}", text(&fetch.stderr));
    assert!(
        std::fs::read(&fetched).unwrap() == segment,
        "fetched byte for byte"
    );
    assert!(
        scene
            .object("outage/wal/000000010000000000000002.zst")
            .exists(),
        "the segment pushed while the store was down is stored"
    );
}

/// The one store record pitr remembers in the tests' cache directory.
fn remembered_store_record(server: &ObjectServer) -> PathBuf {
    let remembered: Vec<PathBuf> = std::fs::read_dir(server.dir.path().join("cache"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store-")
        })
        .collect();
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    remembered[0].clone()
}

/// On a store that ignores conditional creates (as `pitr init` records for
/// garage; recorded by hand here on s3s-fs), `wal-push` looks, writes and
/// reads the checksum back: a LIST for the copies, a HEAD, the PUT and a
/// HEAD. The same segment again is success; other bytes are refused (exit
/// 3) and the archived object stays as it was.
#[test]
fn wal_push_falls_back_to_look_write_read_back() {
    let test = "wal_push_falls_back_to_look_write_read_back";
    if !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let scene = PushScene::start("fallback");
    std::fs::write(
        scene.object("fallback/wal/.pitr-store.json"),
        "{\"conditional_create_enforced\":false}",
    )
    .unwrap();
    // As on a host that has not read the record yet (init remembered its own).
    std::fs::remove_file(remembered_store_record(&scene.server)).unwrap();
    let push = |name: &str, fill: u8| scene.push(name, fill, &[]);
    let (first, _) = push("000000010000000000000001", 1);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let (second, requests) = push("000000010000000000000002", 2);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(
        methods(&requests),
        ["GET", "HEAD", "PUT", "HEAD"],
        "{requests:#?}"
    );
    let stored = scene.object("fallback/wal/000000010000000000000002.zst");
    let before = std::fs::read(&stored).unwrap();
    let (again, _) = push("000000010000000000000002", 2);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let (other, _) = push("000000010000000000000002", 9);
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        before,
        "nothing overwritten"
    );
}

/// What a host remembers of an archive's store is trusted for five minutes
/// only: `pitr init` run again after the store behind the URL changed (a
/// store that ignores conditional creates, recorded by hand here) reaches
/// `wal-push`, which then takes the fallback instead of sending plain
/// conditional PUTs a store could let replace a segment. `pitr init` on
/// this host is learned at once.
#[test]
fn a_new_store_record_reaches_wal_push_within_five_minutes() {
    let test = "a_new_store_record_reaches_wal_push_within_five_minutes";
    if !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let scene = PushScene::start("changed");
    let push = |name: &str| {
        let (output, requests) = scene.push(name, 1, &[]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        requests
    };
    push("000000010000000000000001");
    assert_eq!(methods(&push("000000010000000000000002")), ["PUT"]);

    // The record changes in the store: trusted as remembered for now...
    std::fs::write(
        scene.object("changed/wal/.pitr-store.json"),
        "{\"conditional_create_enforced\":false}",
    )
    .unwrap();
    assert_eq!(methods(&push("000000010000000000000003")), ["PUT"]);
    // ...and read again once the memory is over five minutes old.
    std::fs::File::options()
        .write(true)
        .open(remembered_store_record(&scene.server))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(301))
        .unwrap();
    let requests = push("000000010000000000000004");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains(".pitr-store.json")),
        "the record read again: {requests:#?}"
    );
    let methods_now = methods(&requests);
    let put = methods_now.iter().position(|m| m == "PUT").unwrap();
    assert_eq!(
        methods_now[put - 1..],
        ["HEAD", "PUT", "HEAD"],
        "look, write, read back: {requests:#?}"
    );

    // `pitr init` again records what the store does now (s3s-fs enforces
    // conditional creates) and this host knows it at once.
    run_ok(
        scene.pitr().args(["init", "--repo", &scene.url]),
        "init again",
    );
    assert_eq!(methods(&push("000000010000000000000005")), ["PUT"]);
}

/// Two archivers racing on the same segment names on S3 (s3s-fs), one of
/// them another cluster: two `wal-push` processes started together on one
/// name, round after round, then two real PostgreSQL 15 clusters archiving
/// into one repository at once. Zero overwritten segments (every object is
/// the first cluster's), the intruder refused each time (exit 3, both
/// identifiers named), its archiver showing only failures.
#[test]
fn two_archivers_racing_on_s3() {
    let test = "two_archivers_racing_on_s3";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-race");
    let binary = shared_pitr_binary(dir.path());
    let store = |prefix: &str| archivers::Store {
        binary: binary.clone(),
        url: server.url(prefix),
        env: server.env(),
        cache: pg_owned_dir(&dir.path().join(format!("cache-{prefix}"))),
    };
    archivers::two_archivers_racing(store, dir.path());
}

/// Bytes of the files below `dir`, at any depth (0 when it is gone).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Samples the size of `dir` every 10 ms until told to stop; returns the
/// largest seen.
struct DiskWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl DiskWatch {
    fn start(dir: &Path) -> DiskWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(bytes_under(&dir));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        });
        DiskWatch { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The objects under `prefix` of the test bucket, as the driver lists them.
fn keys_under(server: &ObjectServer, url: &str, prefix: &str) -> Vec<String> {
    use pitr::repo::store::object::{ObjectStorage, ObjectUrl};
    use pitr::repo::store::StoreRead;
    let url = ObjectUrl::parse(url).unwrap().unwrap();
    let store = ObjectStorage::open_with(&url, &server.settings()).unwrap();
    let mut keys: Vec<String> = store
        .list(prefix, None)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for group in store.list_prefixes(prefix).unwrap() {
        keys.push(format!("{prefix}{group}/"));
    }
    keys.sort();
    keys
}

/// `pitr backup --repo s3://…` (and az://) streams pg_basebackup's stdout
/// into the store: the local temporary directory (where the backup used
/// to be staged) never holds more than a few kB while a backup of tens of
/// MB is taken; the backup is stored as a staged one is (base.tar.zst,
/// pg_wal.tar.zst, backup_manifest), `pitr verify` checks it against its
/// manifest, and a restore to a time between two commits has exactly the
/// rows before it and every row of a table copied into the backup.
#[test]
fn a_backup_streams_into_the_store_with_no_local_copy() {
    let test = "a_backup_streams_into_the_store_with_no_local_copy";
    if !require_root(test) {
        return;
    }
    for (kind, _turn) in s3_and_azure(test) {
        let server = ObjectServer::start(kind);
        let dir = shared_tempdir("pitr-object-stream");
        let binary = shared_pitr_binary(dir.path());
        let url = server.url("stream");
        run_ok(
            pitr(&binary, &server).args(["init", "--repo", &url]),
            "init",
        );
        let archive_command = archive_command_for(&server, &binary, &url, dir.path());
        let cluster =
            Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
        cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
        // About 40 MB of rows that compress poorly: several upload parts.
        cluster.sql(
            "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t FROM generate_series(1, 400000) g",
        );
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let watch = DiskWatch::start(&tmp);
        let backup = run_ok(
            pitr(&binary, &server)
                .env("TMPDIR", &tmp)
                .env("PGHOST", &cluster.dir)
                .env("PGPORT", cluster.port.to_string())
                .env("PGUSER", "postgres")
                .args(["backup", "--fast", "--repo", &url]),
            "backup",
        );
        let peak = watch.peak();
        let said = text(&backup.stderr);
        assert!(said.contains("streaming into"), "{kind:?}: {said}");
        assert!(
            peak < 64 * 1024,
            "{kind:?}: {peak} bytes in TMPDIR during a streamed backup"
        );
        let id = text(&backup.stdout).trim().to_string();
        let keys = keys_under(&server, &server.url("stream/base"), &format!("{id}/"));
        assert_eq!(
            keys,
            // What pg_basebackup -Ft -X none writes into a directory: the
            // backup's WAL is in the archive.
            [
                format!("{id}/backup_manifest"),
                format!("{id}/base.tar.zst")
            ],
            "{kind:?}"
        );
        let stored = keys_under(&server, &server.url("stream/base"), "");
        assert!(
            stored.iter().all(|key| !key.starts_with(".pitr-")),
            "{kind:?}: a marker left: {stored:?}"
        );
        run_ok(
            pitr(&binary, &server).args(["verify", "--repo", &url, "--backup", &id]),
            "verify",
        );

        let markers: Vec<Marker> = (1..=3).map(|id| cluster.insert_marker(id)).collect();
        cluster.archive_everything();
        drop(cluster);
        let target = rfc3339(between(&markers[1], &markers[2]));
        let pgdata = dir.path().join("restored");
        let mut outputs = String::new();
        let (summary, guard) = restore_from_store(
            &binary,
            &server,
            &pgdata,
            &["--repo", &url, "--to", &target, "--action", "pause"],
            &mut outputs,
        );
        assert_eq!(count_rows(&summary), 2, "{kind:?}");
        assert_eq!(
            summary_sql(&summary, "SELECT count(*), sum(g) FROM filler"),
            "400000|80000200000",
            "{kind:?}"
        );
        drop(guard);
    }
}

/// The pid of pitr's child `pg_basebackup`.
fn pg_basebackup_child_of(parent: u32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces, so after `)`.
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (comm == "pg_basebackup" && ppid == parent).then_some(pid)
        })
}

/// Ctrl-C during the upload of a streamed backup (SIGINT to pitr: it
/// exits 130), and pg_basebackup dying during it (SIGKILL: pitr exits 6):
/// either way the store holds no backup, no marker and no open multipart
/// upload (s3s-fs keeps an open upload as `.upload-<id>.json` and its
/// parts as `.upload_id-<id>.part-<n>` in its root), and `pitr list` shows
/// no backup.
#[test]
fn ctrl_c_or_a_failing_pg_basebackup_during_a_streamed_backup_leaves_nothing_on_s3() {
    let test = "ctrl_c_or_a_failing_pg_basebackup_during_a_streamed_backup_leaves_nothing_on_s3";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-ctrl-c");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("ctrlc");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    // Rows of 1 kB (under the TOAST threshold: stored as they are), about
    // 200 MB backed up uncompressed: many upload parts.
    cluster.sql(
        "CREATE TABLE noise AS SELECT g, repeat(md5(g::text), 30) AS t FROM generate_series(1, 200000) g",
    );
    let root = object_servers::data_dir(&server).join("data");
    let open_uploads = |root: &Path| -> Vec<String> {
        std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (killed, signal, status, says) in [
        ("pitr", nix::sys::signal::Signal::SIGINT, 130, "interrupted"),
        (
            "pg_basebackup",
            nix::sys::signal::Signal::SIGKILL,
            6,
            "pg_basebackup failed",
        ),
    ] {
        let mut child = pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--compress", "none", "--repo", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Strike once the multipart upload has a part stored.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let files = open_uploads(&root);
            if files.iter().any(|name| name.contains(".part-")) {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "pitr backup ended before a part was uploaded"
            );
            assert!(std::time::Instant::now() < deadline, "no upload started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pid = match killed {
            "pitr" => child.id() as i32,
            _ => pg_basebackup_child_of(child.id()).expect("pg_basebackup runs"),
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
        let output = child.wait_with_output().unwrap();
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{killed}: {said}");
        assert!(said.contains(says), "{killed}: {said}");
        assert!(said.contains("nothing was left"), "{killed}: {said}");
        assert_eq!(
            open_uploads(&root),
            Vec::<String>::new(),
            "{killed}: {said}"
        );
        assert_eq!(
            keys_under(&server, &server.url("ctrlc/base"), ""),
            Vec::<String>::new(),
            "{killed}: {said}"
        );
        let listed = run_ok(
            pitr(&binary, &server).args(["--json", "list", "--repo", &url]),
            "list",
        );
        let listed = json(&listed);
        assert_eq!(
            listed["backups"].as_array().map(Vec::len),
            Some(0),
            "{killed}: {listed:#}"
        );
    }
    drop(cluster);
}

/// A cluster with a second tablespace cannot be written to stdout:
/// pg_basebackup refuses once the backup has started, and pitr stages the
/// backup locally instead, saying so; the backup is complete, with the
/// tablespace's tar, and no marker is left.
#[test]
fn several_tablespaces_are_staged_instead_of_streamed() {
    let test = "several_tablespaces_are_staged_instead_of_streamed";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-tablespaces");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("spaces");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.create_tablespace("ts1", &dir.path().join("ts1"));
    cluster
        .sql("CREATE TABLE elsewhere TABLESPACE ts1 AS SELECT g FROM generate_series(1, 1000) g");
    let backup = run_ok(
        pitr(&binary, &server)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .args(["backup", "--fast", "--repo", &url]),
        "backup",
    );
    let said = text(&backup.stderr);
    assert!(
        said.contains("cannot stream a cluster with several tablespaces"),
        "{said}"
    );
    let id = text(&backup.stdout).trim().to_string();
    let keys = keys_under(&server, &server.url("spaces/base"), &format!("{id}/"));
    assert!(
        keys.contains(&format!("{id}/base.tar.zst"))
            && keys.contains(&format!("{id}/backup_manifest")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|key| key.ends_with(".tar.zst")
            && key[id.len() + 1..].starts_with(|c: char| c.is_ascii_digit())),
        "the tablespace's tar: {keys:?}"
    );
    let stored = keys_under(&server, &server.url("spaces/base"), "");
    assert_eq!(stored, [format!("{id}/")], "no marker left");
    run_ok(
        pitr(&binary, &server).args(["verify", "--repo", &url, "--backup", &id]),
        "verify",
    );
    drop(cluster);
}

/// The store going down during a streamed backup: pitr stops
/// pg_basebackup, exits 6 within its retry budget and names the store's
/// failure, not pg_basebackup's; no pg_basebackup is left running.
#[test]
fn a_store_that_goes_down_during_a_streamed_backup_fails_it_on_s3() {
    let test = "a_store_that_goes_down_during_a_streamed_backup_fails_it_on_s3";
    if !require_root(test) || !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let mut server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-store-down");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("down");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    let archive_command = archive_command_for(&server, &binary, &url, dir.path());
    let cluster =
        Cluster::start_archiving(dir.path(), &dir.path().join("unused"), &archive_command);
    cluster.sql(
        "CREATE TABLE noise AS SELECT g, repeat(md5(g::text), 30) AS t FROM generate_series(1, 200000) g",
    );
    let root = object_servers::data_dir(&server).join("data");
    let child = pitr(&binary, &server)
        .env("PGHOST", &cluster.dir)
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .env("PITR_OBJECT_RETRY_SECONDS", "2")
        .args(["backup", "--fast", "--compress", "none", "--repo", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".part-"))
    {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill();
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{said}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(90),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(said.contains("cannot store the backup"), "{said}");
    assert!(!said.contains("pg_basebackup failed"), "{said}");
    // Nothing of that backup still runs: no pg_basebackup with its PGHOST.
    let ours = format!("PGHOST={}", cluster.dir.display());
    let left = std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        comm.trim() == "pg_basebackup"
            && environ.split(|b| *b == 0).any(|var| var == ours.as_bytes())
    });
    assert!(!left, "pg_basebackup left running");
    drop(cluster);
}

/// On an object store a backup is hidden by a marker beside it, not by a
/// hidden name: what a killed `pitr backup` and an interrupted `expire`
/// leave is found from the markers, an interrupted expire finished, an
/// unfinished backup deleted only when named (objects and marker).
#[test]
fn expire_clears_hidden_backups_in_s3() {
    let test = "expire_clears_hidden_backups_in_s3";
    if !object_servers::require_server(test, Kind::S3) {
        return;
    }
    let server = ObjectServer::start(Kind::S3);
    let dir = shared_tempdir("pitr-object-hidden");
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("hidden");
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &url]),
        "init",
    );
    // s3s-fs keeps each object as a file under the bucket's directory:
    // what a killed writer left is written there directly.
    let base = server
        .dir
        .path()
        .join("data")
        .join(object_servers::BUCKET)
        .join("hidden/base");
    let killed_backup = "20261206T101500Z";
    let interrupted_expire = "20261101T000000Z";
    for (marker, group) in [
        (format!(".pitr-publishing-{killed_backup}"), killed_backup),
        (
            format!(".pitr-expiring-{interrupted_expire}"),
            interrupted_expire,
        ),
    ] {
        std::fs::create_dir_all(base.join(group)).unwrap();
        std::fs::write(base.join(group).join("base.tar"), [1u8; 4096]).unwrap();
        std::fs::write(base.join(marker), b"").unwrap();
    }
    let list = run_ok(
        pitr(&binary, &server).args(["list", "--repo", &url]),
        "list",
    );
    assert!(
        !text(&list.stdout).contains("2026"),
        "{}",
        text(&list.stdout)
    );

    let refused = pitr(&binary, &server)
        .args(["expire", "--repo", &url, "--remove-unfinished", "nope"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains(&format!("the unfinished ones are: {killed_backup}")),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(files_under(&base), 4, "nothing removed");

    let expired = run_ok(
        pitr(&binary, &server).args(["expire", "--repo", &url, "--keep", "1"]),
        "expire --keep 1",
    );
    let said = text(&expired.stderr);
    assert!(
        said.contains("left behind by an interrupted expire"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "`pitr expire --remove-unfinished {killed_backup}` deletes it"
        )),
        "{said}"
    );
    assert_eq!(files_under(&base.join(interrupted_expire)), 0);
    assert!(!base
        .join(format!(".pitr-expiring-{interrupted_expire}"))
        .exists());
    assert_eq!(files_under(&base.join(killed_backup)), 1, "unfinished kept");

    run_ok(
        pitr(&binary, &server).args([
            "expire",
            "--repo",
            &url,
            "--remove-unfinished",
            killed_backup,
        ]),
        "expire --remove-unfinished",
    );
    assert_eq!(files_under(&base), 0, "objects and marker deleted");
}

/// The read-only commands' JSON answer with the repository's location
/// written as `REPO`, so an answer from a directory and one from a bucket
/// holding the same files compare equal.
fn answer_about(output: &Output, location: &str) -> String {
    text(&output.stdout).replace(location, "REPO")
}

/// Google Cloud Storage, as far as fake-gcs-server goes: it refuses every
/// upload object_store sends (see FAKE_GCS_PUT in tests/object_stores.rs),
/// so a real PostgreSQL 15 is archived (`pitr wal-push`) and backed up
/// (`pitr backup`, then `pitr backup --seekable`) into a local repository,
/// whose files are uploaded object by object through the JSON API under a
/// prefix, beside the marker `pitr init` writes. Every read-only command
/// then works from `gs://BUCKET/PREFIX` through object_store: `list`,
/// `plan`, `verify`, `events` and `check` answer exactly as they do from
/// the directory; `extract` and `drill` restore from it; `restore` to a time between two commits has exactly the rows
/// before it (the plain backup), `restore --to latest --jobs 2` has all of
/// them (the seekable backup, staged by two workers); `wal-fetch` delivers
/// a segment byte for byte (0) and says when one is missing (1). Through
/// all of it the server receives only GETs and HEADs, and no object in the
/// bucket changes (size, MD5, CRC32C, generation, metageneration, update
/// time): readers hold only the read role. No secret is printed. Then a
/// backup with a `.pitr-publishing-` marker beside it (a copy under way)
/// is hidden from `list` and `plan`, and with the server down `wal-fetch`
/// exits 126, which stops recovery.
#[test]
fn restore_from_gcs_reads_a_repository_and_writes_nothing() {
    let test = "restore_from_gcs_reads_a_repository_and_writes_nothing";
    if !require_root(test) || !object_servers::require_server(test, Kind::Gcs) {
        return;
    }
    let mut server = ObjectServer::start(Kind::Gcs);
    let dir = shared_tempdir("pitr-object-gcs");
    let binary = shared_pitr_binary(dir.path());
    let repo = dir.path().join("repo");
    let local = repo.to_str().unwrap().to_string();
    run_ok(
        pitr(&binary, &server).args(["init", "--repo", &local]),
        "init of the local repository",
    );
    let archive_command = format!(
        "{} wal-push --repo {} %p",
        shell_quote(&binary.to_string_lossy()),
        shell_quote(&local)
    );
    let cluster = Cluster::start_archiving(dir.path(), &repo, &archive_command);
    let backup = |extra: &[&str]| {
        let output = run_ok(
            pitr(&binary, &server)
                .env("PGHOST", &cluster.dir)
                .env("PGPORT", cluster.port.to_string())
                .env("PGUSER", "postgres")
                .args(["backup", "--fast", "--repo", &local])
                .args(extra),
            "backup",
        );
        text(&output.stdout).trim().to_string()
    };
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    let plain = backup(&[]);
    let mut markers: Vec<Marker> = (1..=3).map(|id| cluster.insert_marker(id)).collect();
    // A table of several MiB: the seekable backup's files are staged in
    // several parts.
    cluster.sql(
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g",
    );
    let seekable = backup(&["--seekable"]);
    markers.extend((4..=6).map(|id| cluster.insert_marker(id)));
    cluster.archive_everything();
    drop(cluster);
    // Timeline 2 in the directory before it is uploaded: a recovery to
    // between markers 5 and 6 that goes on archiving there, with a row of
    // its own.
    let tl2 = restore(
        pitr(&binary, &server),
        &dir.path().join("tl2"),
        [
            "--repo",
            &local,
            "--to",
            &rfc3339(between(&markers[4], &markers[5])),
            "--keep-archiving",
        ],
    );
    assert_eq!(tl2.summary["new_timeline"], 2);
    insert_marker(&tl2.socket_dir(), tl2.port(), 102);
    archive_everything(&tl2.socket_dir(), tl2.port());
    drop(tl2);

    // The directory, object by object, into the bucket; the marker that
    // makes a prefix a repository (what `pitr init --repo gs://…` writes,
    // which this server refuses) beside it.
    let prefix = "gcs-repo";
    let url = server.url(prefix);
    let uploaded = server.upload_gcs_tree(&repo, prefix);
    server.upload_gcs_json(
        &format!("{prefix}/{}", pitr::repo::OBJECT_REPO_MARKER),
        pitr::repo::OBJECT_REPO_MARKER_CONTENT.as_bytes(),
    );
    assert!(
        uploaded
            .iter()
            .any(|key| key.contains(&format!("base/{seekable}/"))),
        "{uploaded:?}"
    );
    let before = server.gcs_objects(prefix);
    assert_eq!(before.len(), uploaded.len() + 1, "{before:?}");
    let requests_before = server.requests().len();

    // list, plan, verify and events: the same answers from the bucket as
    // from the directory.
    let target = rfc3339(between(&markers[1], &markers[2]));
    for args in [
        vec!["list"],
        vec!["plan", "--to", &target],
        vec!["plan", "--to", "latest"],
        vec!["verify"],
        vec!["events"],
    ] {
        let from_dir = run_ok(
            pitr(&binary, &server)
                .arg("--json")
                .args(&args)
                .args(["--repo", &local]),
            &format!("{args:?} from the directory"),
        );
        let from_bucket = run_ok(
            pitr(&binary, &server)
                .arg("--json")
                .args(&args)
                .args(["--repo", &url]),
            &format!("{args:?} from gs://"),
        );
        assert_eq!(
            answer_about(&from_bucket, &url),
            answer_about(&from_dir, &local),
            "{args:?}: gs:// answers otherwise than the directory"
        );
    }
    let listed = run_ok(
        pitr(&binary, &server).args(["list", "--repo", &url]),
        "list",
    );
    for id in [&plain, &seekable] {
        assert!(
            text(&listed.stdout).contains(id.as_str()),
            "{}",
            text(&listed.stdout)
        );
    }
    let verified = run_ok(
        pitr(&binary, &server).args(["verify", "--repo", &url]),
        "verify",
    );
    let said = text(&verified.stdout);
    for id in [&plain, &seekable] {
        assert!(said.contains(&format!("backup {id}: ok")), "{said}");
    }
    assert!(
        said.contains("timeline 1: ") && said.contains(": ok ("),
        "{said}"
    );

    // A time between the second and third commits: the plain backup,
    // exactly two rows.
    let mut outputs = String::new();
    let pgdata = dir.path().join("restored-time");
    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &pgdata,
        &["--repo", &url, "--to", &target, "--action", "pause"],
        &mut outputs,
    );
    assert_eq!(
        summary["plan"]["backup"]["id"],
        plain.as_str(),
        "{summary:#}"
    );
    assert_eq!(count_rows(&summary), 2);
    assert!(
        summary["prefetch"]["prefetched"].as_u64().unwrap_or(0) > 0,
        "WAL was prefetched from the bucket: {summary:#}"
    );
    let auto_conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto_conf.contains("://"),
        "a URL in postgresql.auto.conf:\n{auto_conf}"
    );
    outputs.push_str(&auto_conf);
    outputs
        .push_str(&std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default());
    drop(guard);

    // Latest, from the seekable backup staged by two workers: timeline 2
    // followed from the bucket (markers 1 to 5 and its own 102) and the
    // filler table whole.
    let pgdata = dir.path().join("restored-latest");
    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &pgdata,
        &["--repo", &url, "--to", "latest", "--jobs", "2", "--verbose"],
        &mut outputs,
    );
    assert_eq!(
        summary["plan"]["backup"]["id"],
        seekable.as_str(),
        "{summary:#}"
    );
    assert!(outputs.contains("staged by 2 workers"), "{outputs}");
    assert_eq!(restored_marker_ids(&summary), "1,2,3,4,5,102");
    assert_eq!(
        summary_sql(&summary, "SELECT count(*), sum(g) FROM filler"),
        "200000|20000100000"
    );
    outputs.push_str(&std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap());
    outputs
        .push_str(&std::fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default());
    drop(guard);
    // Timeline 1 when asked: all six markers of the old branch.
    let (summary, guard) = restore_from_store(
        &binary,
        &server,
        &dir.path().join("restored-tl1"),
        &["--repo", &url, "--to", "latest", "--timeline", "1"],
        &mut outputs,
    );
    assert_eq!(restored_marker_ids(&summary), "1,2,3,4,5,6");
    drop(guard);

    // The monitoring check: the same figures as from the directory.
    let figures = |repository: &str| {
        let output = run_ok(
            pitr(&binary, &server).args(["--json", "check", "--repo", repository]),
            "check",
        );
        let checked = json(&output);
        let figures = &checked["figures"];
        let stable = ["backups", "gaps", "windows"].map(|name| figures[name].clone());
        (checked["state"].clone(), stable)
    };
    let from_bucket = figures(&url);
    assert_eq!(from_bucket, figures(&local));
    assert_eq!(from_bucket.1[0], 2, "{from_bucket:?}");

    // extract: the table as of the time between the second and third
    // commits, from a scratch copy restored from the bucket.
    let (extract, rows, scratch) = extract_markers(&binary, &server, dir.path(), &url, &target);
    outputs.push_str(&text(&extract.stderr));
    assert!(extract.status.success(), "{}", text(&extract.stderr));
    assert_eq!(rows, ["1", "2"]);

    // drill: its report kept in a local directory (a repository in object
    // storage keeps none unless told where), its restore from the bucket.
    let reports = dir.path().join("drill-reports");
    let drill = pitr(&binary, &server)
        .args(["--json", "drill", "--repo", &url, "--to", &target])
        .args(["--check", "SELECT count(*) = 2 FROM markers"])
        .arg("--scratch")
        .arg(&scratch)
        .arg("--drill-reports")
        .arg(&reports)
        .output()
        .unwrap();
    outputs.push_str(&text(&drill.stderr));
    assert_eq!(drill.status.code(), Some(0), "{}", text(&drill.stderr));
    assert_eq!(names_in(&reports).len(), 1, "one report, kept locally");

    // wal-fetch: a segment byte for byte as the directory has it (0), a
    // missing one (1).
    let segment = names_in(&repo.join("wal"))
        .into_iter()
        .filter(|name| name.len() >= 24 && name[..24].chars().all(|c| c.is_ascii_hexdigit()))
        .find(|name| !name.contains(".backup") && !name.contains(".partial"))
        .unwrap()[..24]
        .to_string();
    let mut fetch = |repository: &str, into: &str| {
        let output = pitr(&binary, &server)
            .args(["wal-fetch", "--repo", repository, &segment])
            .arg(dir.path().join(into))
            .output()
            .unwrap();
        outputs.push_str(&text(&output.stderr));
        output
    };
    let fetched = fetch(&url, "from-gcs");
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    assert_eq!(fetch(&local, "from-dir").status.code(), Some(0));
    assert!(
        std::fs::read(dir.path().join("from-gcs")).unwrap()
            == std::fs::read(dir.path().join("from-dir")).unwrap(),
        "wal-fetch from gs:// delivers the segment as the directory has it"
    );
    let missing = pitr(&binary, &server)
        .args(["wal-fetch", "--repo", &url, "0000000100000000000000FF"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing.stderr));
    assert!(!dir.path().join("never").exists());

    // Only the read role: nothing but GETs and HEADs reached the server,
    // and every object is as it was uploaded.
    let writes: Vec<String> = server.requests()[requests_before..]
        .iter()
        .filter(|request| !request.starts_with("GET ") && !request.starts_with("HEAD "))
        .cloned()
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "a reader wrote to the bucket");
    assert!(
        server.requests().len() > requests_before,
        "the commands did not read through the server"
    );
    assert_eq!(
        server.gcs_objects(prefix),
        before,
        "an object in the bucket changed"
    );

    // A copy still under way is hidden the way pitr publishes a backup:
    // with `.pitr-publishing-NAME` beside it, the seekable backup is not
    // listed and the latest restore plans from the plain one.
    server.upload_gcs_json(
        &format!(
            "{prefix}/base/{}{seekable}",
            pitr::repo::store::object::PUBLISHING_PREFIX
        ),
        b"",
    );
    let listed = run_ok(
        pitr(&binary, &server).args(["--json", "list", "--repo", &url]),
        "list with a backup being copied",
    );
    let ids: Vec<String> = json(&listed)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|backup| backup["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [plain.as_str()]);
    let planned = run_ok(
        pitr(&binary, &server).args(["--json", "plan", "--repo", &url, "--to", "latest"]),
        "plan with a backup being copied",
    );
    assert_eq!(json(&planned)["backup"]["id"], plain.as_str());

    // The store down: wal-fetch fails in the way that stops recovery (126),
    // not as "end of archive" (1).
    server.kill();
    let down = pitr(&binary, &server)
        .env("PITR_OBJECT_RETRY_SECONDS", "2")
        .args(["wal-fetch", "--repo", &url, &segment])
        .arg(dir.path().join("down"))
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(126), "{}", text(&down.stderr));
    for (_, value) in server.env() {
        if value.contains("token") {
            assert!(
                !outputs.contains(&value),
                "a secret in the output or the log"
            );
        }
    }
}

/// Timelines and compressions from object stores, as tests/timelines.rs
/// and tests/formats.rs prove them from a directory: a backup in each
/// compression pitr offers restores exactly (`--backup`); a recovery that
/// keeps archiving into the store makes timeline 2 there, and restores from
/// the store follow each branch to its own rows (the newest timeline by
/// default, timeline 1 when asked).
#[test]
fn timelines_and_compressions_from_s3_and_azure() {
    let test = "timelines_and_compressions_from_s3_and_azure";
    if !require_root(test) {
        return;
    }
    for (kind, _turn) in s3_and_azure(test) {
        let (server, dir, binary, url, primary) =
            archiving_to_store(kind, "pitr-object-timelines", "timelines");
        let mut outputs = String::new();
        let mut backups = Vec::new();
        for compress in ["zstd", "lz4", "gzip"] {
            let backup =
                backup_into_store(&binary, &server, &primary, &url, &["--compress", compress]);
            outputs.push_str(&text(&backup.stderr));
            backups.push((compress, text(&backup.stdout).trim().to_string()));
            // Backup ids are made of the second they start in.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let m1 = primary.insert_marker(1);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let m2 = primary.insert_marker(2);
        primary.archive_everything();

        // Each compression, to latest on timeline 1: both rows.
        for (compress, id) in &backups {
            let pgdata = dir.path().join(format!("restored-{compress}"));
            let (summary, guard) = restore_from_store(
                &binary,
                &server,
                &pgdata,
                &["--repo", &url, "--backup", id, "--to", "latest"],
                &mut outputs,
            );
            assert_eq!(summary["plan"]["backup"]["id"], id.as_str(), "{kind:?}");
            assert_eq!(restored_marker_ids(&summary), "1,2", "{kind:?} {compress}");
            drop(guard);
        }

        // Timeline 2: a recovery to between markers 1 and 2 that goes on
        // archiving into the store (the backup's archive_command).
        let tl2_dir = dir.path().join("tl2");
        let (tl2, tl2_guard) = restore_from_store(
            &binary,
            &server,
            &tl2_dir,
            &[
                "--repo",
                &url,
                "--to",
                &rfc3339(between(&m1, &m2)),
                "--keep-archiving",
            ],
            &mut outputs,
        );
        assert_eq!(tl2["new_timeline"], 2, "{kind:?}");
        let tl2_socket = PathBuf::from(tl2["socket_dir"].as_str().unwrap());
        let tl2_port = tl2["port"].as_u64().unwrap() as u16;
        insert_marker(&tl2_socket, tl2_port, 102);
        archive_everything(&tl2_socket, tl2_port);
        drop(tl2_guard);
        // Timeline 1 goes on after timeline 2 branched off.
        primary.insert_marker(3);
        primary.archive_everything();
        drop(primary);

        // The newest timeline by default: 1, then 102 on timeline 2.
        let (latest, guard) = restore_from_store(
            &binary,
            &server,
            &dir.path().join("restored-latest"),
            &["--repo", &url, "--to", "latest"],
            &mut outputs,
        );
        assert_eq!(
            restored_marker_ids(&latest),
            "1,102",
            "{kind:?}: {latest:#}"
        );
        drop(guard);
        // Timeline 1 when asked: 1, 2, 3.
        let (old_branch, guard) = restore_from_store(
            &binary,
            &server,
            &dir.path().join("restored-tl1"),
            &["--repo", &url, "--to", "latest", "--timeline", "1"],
            &mut outputs,
        );
        assert_eq!(restored_marker_ids(&old_branch), "1,2,3", "{kind:?}");
        drop(guard);

        for secret in [object_servers::S3_SECRET_KEY, object_servers::AZURITE_KEY] {
            assert!(
                !outputs.contains(secret),
                "{kind:?}: a secret in the output"
            );
        }
    }
}
