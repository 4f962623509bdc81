//! The moments around a restore (issue 15): a live cluster is never
//! touched, permission problems say so, a promoted copy is handed over with
//! its own configuration, a lost primary is recovered in place with one
//! command, and the commands pitr prints run when pasted.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

/// A running source cluster with a backup and marker rows 1..=3, all
/// archived; `extra_conf` is appended to its postgresql.conf before the
/// backup (and the server restarted).
struct Source {
    dir: PathBuf,
    pitr: PathBuf,
    cluster: Cluster,
}

fn source(prefix: &str, extra_conf: &str) -> (tempfile::TempDir, Source) {
    let temp = shared_tempdir(prefix);
    let dir = temp.path().to_path_buf();
    let pitr = shared_pitr_binary(&dir);
    let cluster = Cluster::start_in(&dir);
    if !extra_conf.is_empty() {
        fs::OpenOptions::new()
            .append(true)
            .open(cluster.pgdata.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, extra_conf.as_bytes()))
            .unwrap();
        cluster.restart();
    }
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.backup("full", &["-Ft", "-X", "stream"]);
    for id in 1..=3 {
        cluster.insert_marker(id);
    }
    cluster.archive_everything();
    (temp, Source { dir, pitr, cluster })
}

/// Every file under `dir` with its size and SHA-256, and every directory.
fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(dir).unwrap().display().to_string();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                found.insert(relative, "dir".to_string());
                stack.push(path);
            } else if kind.is_file() && is_wal_segment(&relative) {
                // The live server appends to its current segment on its
                // own (the background writer's running-transactions record
                // every 15 s after activity), so a segment is compared by
                // name and size; pitr never writes into the live pg_wal.
                let len = entry.metadata().unwrap().len();
                found.insert(relative, format!("{len} (WAL segment)"));
            } else if kind.is_file() {
                let bytes = fs::read(&path).unwrap();
                found.insert(
                    relative,
                    format!("{} {:02x?}", bytes.len(), Sha256::digest(&bytes).as_slice()),
                );
            } else {
                found.insert(relative, "other".to_string());
            }
        }
    }
    found
}

fn is_wal_segment(relative: &str) -> bool {
    relative
        .strip_prefix("pg_wal/")
        .is_some_and(|name| name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Replaces what changes from run to run (paths, PIDs, ports) with names.
/// Only pitr's own error and hint lines count (the plan printed before
/// them holds times).
fn redact(text: &str, replacements: &[(String, &str)]) -> String {
    let mut text: String = text
        .lines()
        .filter(|line| line.starts_with("pitr:") || line.starts_with("hint:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut sorted: Vec<&(String, &str)> = replacements.iter().collect();
    // Longer first, so that a path is replaced before its prefix.
    sorted.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    for (from, to) in sorted {
        text = text.replace(from.as_str(), to);
    }
    text
}

#[test]
fn a_running_cluster_is_never_replaced_and_a_taken_port_is_refused() {
    let (_temp, s) = source("pitr-live-", "");
    let cluster = &s.cluster;
    let pid = postmaster_pid(&cluster.pgdata).unwrap();
    // Nothing but WAL is due to be written by an idle server for minutes
    // after a checkpoint (autovacuum is off, archiving is done).
    cluster.sql("CHECKPOINT");
    std::thread::sleep(Duration::from_millis(500));
    let before = tree_hashes(&cluster.pgdata);
    let beside = names(&s.dir);
    let run = |pgdata: &Path, extra: &[&str]| {
        pitr(&s.pitr)
            .args(["restore", "--repo"])
            .arg(&cluster.repo)
            .args(["--to", "latest", "--pgdata"])
            .arg(pgdata)
            .args(extra)
            .output()
            .unwrap()
    };
    let replacements = vec![
        (cluster.pgdata.display().to_string(), "[PGDATA]"),
        (s.dir.display().to_string(), "[DIR]"),
        (pg_bin().display().to_string(), "[BIN]"),
        (pid.to_string(), "[PID]"),
        (cluster.port.to_string(), "[PORT]"),
    ];
    let mut messages = Vec::new();
    for extra in [
        &[][..],
        &["--force", "--yes"][..],
        &["--force"][..],
        &["--in-place", "--yes"][..],
    ] {
        let output = run(&cluster.pgdata, extra);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "{extra:?}: {message}");
        assert!(message.contains(&format!("PID {pid}")), "{message}");
        assert!(
            message.contains(&format!("port {}", cluster.port)),
            "{message}"
        );
        let stop = format!(
            "{} stop -D {} -m fast",
            pg_bin().join("pg_ctl").display(),
            cluster.pgdata.display()
        );
        assert!(message.contains(&stop), "{message}");
        messages.push(format!("{extra:?}:\n{}", redact(&message, &replacements)));
    }
    // The directory holding the data directory, moved aside with it.
    let output = run(&s.dir, &["--force", "--yes"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("PID {pid}")),
        "{}",
        stderr(&output)
    );
    messages.push(format!(
        "parent with --force --yes:\n{}",
        redact(&stderr(&output), &replacements)
    ));

    // A --port already taken, refused before anything is written (the
    // guard stops a server should a regression start one there).
    let _copy_guard = ServerGuard(s.dir.join("copy"));
    let output = run(&s.dir.join("copy"), &["--port", &cluster.port.to_string()]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("--port {} is taken", cluster.port)),
        "{}",
        stderr(&output)
    );
    messages.push(format!(
        "taken port:\n{}",
        redact(&stderr(&output), &replacements)
    ));

    // Not live, but not empty: --force from a script needs --yes.
    let occupied = s.dir.join("occupied");
    let _occupied_guard = ServerGuard(occupied.clone());
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("keep"), b"x").unwrap();
    let beside_with_occupied = names(&s.dir);
    let output = run(&occupied, &["--force"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    assert_eq!(names(&occupied), ["keep"]);
    messages.push(format!(
        "--force without --yes, not a terminal:\n{}",
        redact(&stderr(&output), &replacements)
    ));
    assert_eq!(names(&s.dir), beside_with_occupied);
    // On a terminal pitr asks, and anything but yes changes nothing.
    let command = format!(
        "{} restore --repo {} --to latest --force --pgdata {}",
        s.pitr.display(),
        cluster.repo.display(),
        occupied.display()
    );
    let mut asked = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TZ", "UTC")
        .env_remove("PITR_REPO")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(asked.stdin.as_mut().unwrap(), b"n\n").unwrap();
    let output = asked.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("Continue? [y/N]"), "{said}");
    assert!(said.contains("not confirmed"), "{said}");
    assert_eq!(names(&occupied), ["keep"]);
    assert_eq!(names(&s.dir), beside_with_occupied);
    fs::remove_dir_all(&occupied).unwrap();

    insta::assert_snapshot!("live_cluster_refusals", messages.join("\n"));
    assert_eq!(
        tree_hashes(&cluster.pgdata),
        before,
        "the live cluster changed"
    );
    assert_eq!(names(&s.dir), beside, "something was written beside it");
    assert_eq!(postmaster_pid(&cluster.pgdata), Some(pid));
    assert_eq!(cluster.sql("SELECT count(*) FROM markers"), "3");
}

#[test]
fn unreadable_and_missing_repositories_are_told_apart() {
    let temp = shared_tempdir("pitr-repo-perm-");
    let pitr_binary = shared_pitr_binary(temp.path());
    let repo = temp.path().join("repo");
    for sub in ["base", "wal"] {
        fs::create_dir_all(repo.join(sub)).unwrap();
    }
    // Root's, and closed to everyone else.
    fs::set_permissions(&repo, fs::Permissions::from_mode(0o700)).unwrap();
    let Some(user) = pg_user() else {
        // Not root: the repository is ours, and we can read it.
        return;
    };
    let output = as_pg_user(&pitr_binary)
        .env_remove("PITR_REPO")
        .args(["list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains("owner root:root, mode 0700"), "{message}");
    assert!(
        message.contains(&format!("pitr runs as {}", user.name)),
        "{message}"
    );
    assert!(!message.contains("does not exist"), "{message}");
    let replacements = vec![(temp.path().display().to_string(), "[DIR]")];
    let unreadable = redact(&message, &replacements);

    let output = pitr(&pitr_binary)
        .args(["list", "--repo"])
        .arg(temp.path().join("nothing-here"))
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("pitr init --repo"), "{message}");
    insta::assert_snapshot!(
        "repository_refusals",
        format!(
            "unreadable:\n{unreadable}\nmissing:\n{}",
            redact(&message, &replacements)
        )
    );
}

#[test]
fn a_permission_problem_names_the_parent_of_pgdata() {
    let (_temp, s) = source("pitr-parent-perm-", "");
    let Some(user) = pg_user() else {
        return;
    };
    // Root's directory, which the postgres user may enter but not write.
    let parent = s.dir.join("root-owned");
    fs::create_dir(&parent).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
    let output = as_pg_user(&s.pitr)
        .env_remove("PITR_REPO")
        .args(["restore", "--repo"])
        .arg(&s.cluster.repo)
        .args(["--to", "latest", "--pgdata"])
        .arg(parent.join("copy"))
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(
        message.contains(&format!("cannot write into `{}`", parent.display())),
        "{message}"
    );
    assert!(message.contains("owner root:root, mode 0755"), "{message}");
    assert!(
        message.contains(&format!("pitr runs as {}", user.name)),
        "{message}"
    );
    assert!(
        !message.contains(".pitr-"),
        "an internal path leaked: {message}"
    );
    assert!(names(&parent).is_empty());
}

fn auto_conf_settings(pgdata: &Path) -> Vec<String> {
    fs::read_to_string(pgdata.join("postgresql.auto.conf"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_promoted_copy_runs_the_backups_own_configuration() {
    // The source logs with its own collector into `pglog/`, in its socket
    // directory `run/` (set by Cluster::start).
    let (_temp, s) = source(
        "pitr-handover-",
        "logging_collector = on\nlog_directory = 'pglog'\nlog_min_messages = info\n",
    );
    let run_dir = s.cluster.dir.clone();
    let parent = s.dir.join("restores");
    fs::create_dir(&parent).unwrap();
    give_to_pg_user(&parent);
    let pgdata = parent.join("copy");
    let port = free_port();
    let output = pitr(&s.pitr)
        .args(["--json", "restore", "--repo"])
        .arg(&s.cluster.repo)
        .args(["--to", "latest", "--port", &port.to_string(), "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        auto_conf_settings(&pgdata),
        [
            format!("port = '{port}'"),
            "archive_mode = 'off'".to_string()
        ]
    );
    assert_eq!(
        summary["socket_dir"].as_str(),
        Some(run_dir.to_str().unwrap())
    );
    assert_eq!(summary["port"].as_u64(), Some(port as u64));
    let check = |when: &str| {
        assert_eq!(
            psql(&run_dir, port, "SELECT count(*) FROM markers"),
            "3",
            "{when}"
        );
        assert_eq!(
            psql(&run_dir, port, "SHOW unix_socket_directories"),
            run_dir.display().to_string(),
            "{when}"
        );
        assert_eq!(
            psql(&run_dir, port, "SHOW logging_collector"),
            "on",
            "{when}"
        );
        assert_eq!(
            psql(&run_dir, port, "SHOW log_min_messages"),
            "info",
            "{when}"
        );
        assert_eq!(psql(&run_dir, port, "SHOW archive_mode"), "off", "{when}");
        assert_eq!(psql(&run_dir, port, "SHOW restore_command"), "", "{when}");
        assert!(pgdata.join("pglog").is_dir(), "{when}: no log directory");
    };
    check("after the restore");
    // The command pitr printed runs as pasted.
    let connect = summary["connect"].as_str().unwrap();
    let pasted = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{connect} -X -A -t -c 'SELECT max(id) FROM markers'"
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pasted.stdout).trim(),
        "3",
        "`{connect}`: {}",
        stderr(&pasted)
    );
    // And again after a restart by hand.
    let restarted = as_pg_user(pg_bin().join("pg_ctl"))
        .args(["restart", "-w", "-m", "fast", "-D"])
        .arg(&pgdata)
        .arg("-l")
        .arg(parent.join("restart.log"))
        .output()
        .unwrap();
    check_output(restarted, "pg_ctl restart");
    check("after a restart");
}

fn check_output(output: Output, what: &str) {
    assert!(output.status.success(), "{what}: {}", stderr(&output));
}

#[test]
fn in_place_recovers_a_stopped_primary_ready_to_start() {
    let (_temp, s) = source("pitr-in-place-", "");
    let cluster = &s.cluster;
    let pgdata = cluster.pgdata.clone();
    let port = cluster.port;
    let run_dir = cluster.dir.clone();
    // The primary is lost: stopped, and its table files damaged.
    stop_by_pid(&pgdata);
    fs::remove_dir_all(pgdata.join("base")).unwrap();
    let output = pitr(&s.pitr)
        .args(["--json", "restore", "--repo"])
        .arg(&cluster.repo)
        .args(["--to", "latest", "--in-place", "--yes", "--pgdata"])
        .arg(&pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["running"], false, "{summary:#}");
    assert!(
        postmaster_pid(&pgdata).is_none(),
        "the server must be left stopped"
    );
    let aside: Vec<String> = names(&s.dir)
        .into_iter()
        .filter(|name| name.starts_with("source.pitr-replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", names(&s.dir));
    // Nothing of pitr's is left: archiving stays on, the port and the
    // socket are the primary's own.
    assert_eq!(auto_conf_settings(&pgdata), Vec::<String>::new());
    pg_ctl(&pgdata, &run_dir.join("after.log"), &["start", "-w"]);
    assert_eq!(
        psql(
            &run_dir,
            port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM markers"
        ),
        "1,2,3"
    );
    assert_eq!(psql(&run_dir, port, "SHOW archive_mode"), "on");
    assert_eq!(psql(&run_dir, port, "SELECT pg_is_in_recovery()"), "f");
}

#[test]
fn a_running_cluster_without_its_postmaster_pid_is_found_by_its_socket_lock() {
    let (_temp, s) = source("pitr-socket-lock-", "");
    let cluster = &s.cluster;
    let pid = postmaster_pid(&cluster.pgdata).unwrap();
    // A careless admin removed postmaster.pid; the server still runs.
    let pid_file = cluster.pgdata.join("postmaster.pid");
    let kept = s.dir.join("postmaster.pid.kept");
    fs::rename(&pid_file, &kept).unwrap();
    let output = pitr(&s.pitr)
        .args(["restore", "--repo"])
        .arg(&cluster.repo)
        .args(["--to", "latest", "--force", "--yes", "--pgdata"])
        .arg(&cluster.pgdata)
        .output()
        .unwrap();
    // Put it back first, so that the cluster is stopped by its PID.
    fs::rename(&kept, &pid_file).unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(message.contains(&format!("PID {pid}")), "{message}");
    assert!(message.contains("socket lock"), "{message}");
    assert_eq!(cluster.sql("SELECT count(*) FROM markers"), "3");
    assert!(!names(&s.dir)
        .iter()
        .any(|name| name.contains("pitr-replaced")));
}
