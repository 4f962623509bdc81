//! Faults and hostile input: a byte-flipped segment, a truncated backup, a
//! manifest mismatch, tar members that climb out, a full disk, Ctrl-C while
//! staging and while replaying. Every case fails with the file named, exits
//! non-zero, and leaves nothing behind (and no server running).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Scenario {
    dir: PathBuf,
    repo: PathBuf,
    pitr: PathBuf,
    target: String,
}

static SCENARIO: OnceLock<Scenario> = OnceLock::new();

fn scenario() -> &'static Scenario {
    SCENARIO.get_or_init(|| {
        let dir = process_tempdir("pitr-reliability-");
        let pitr = shared_pitr_binary(&dir);
        let cluster = cluster_with_markers(&dir);
        let repo = cluster.repo.clone();
        cluster.sql("CREATE TABLE filler AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 100000) g");
        cluster.backup("plain", &["-Fp", "-X", "stream"]);
        cluster.backup("tar", &["-Ft", "-X", "stream"]);
        cluster.backup("targz", &["-Ft", "-z", "-X", "stream"]);
        std::thread::sleep(Duration::from_millis(1200));
        let m1 = cluster.insert_marker(1);
        std::thread::sleep(Duration::from_millis(200));
        let m2 = cluster.insert_marker(2);
        // Some WAL to replay, in several segments.
        for _ in 0..3 {
            cluster.sql("UPDATE filler SET pad = repeat('y', 200)");
        }
        cluster.insert_marker(3);
        std::thread::sleep(Duration::from_millis(1000));
        cluster.archive_everything();
        drop(cluster);
        Scenario {
            target: between(&m1, &m2).to_rfc3339(),
            dir,
            repo,
            pitr,
        }
    })
}

impl Scenario {
    fn pitr(&self) -> Command {
        let mut command = Command::new(&self.pitr);
        command.env("PITR_CACHE_DIR", self.dir.join("cache"));
        command
    }

    /// A fresh directory, writable by the PostgreSQL user.
    fn workdir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        give_to_pg_user(&dir);
        dir
    }

    /// A copy of the repository to damage.
    fn copy_repo(&self, name: &str) -> PathBuf {
        let copy = self.workdir(name).join("repo");
        copy_tree(&self.repo, &copy);
        copy
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `pitr restore --repo REPO EXTRA` into `pgdata`, whatever the outcome.
fn try_restore(s: &Scenario, repo: &Path, pgdata: &Path, extra: &[&str]) -> Output {
    let mut args = vec![OsStr::new("--repo"), repo.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    restore_output(s.pitr(), pgdata, args)
}

#[test]
fn a_clean_repository_verifies() {
    let s = scenario();
    let output = s
        .pitr()
        .args(["verify", "--json", "--repo"])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        stderr(&output),
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["files_checked"].as_u64().unwrap() > 100));
}

#[test]
fn a_byte_flipped_segment_is_named_by_verify_and_refused_by_restore() {
    let s = scenario();
    let repo = s.copy_repo("flipped");
    let plan = s
        .pitr()
        .args(["plan", "--json", "--repo"])
        .arg(&repo)
        .args(["--to", "latest"])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    // A segment in the middle of the range, full of records (the backups'
    // own segments end early with a switch: flipping unused bytes there
    // would change nothing).
    let first = plan["wal"]["first"].as_str().unwrap().to_string();
    let last = plan["wal"]["last"].as_str().unwrap().to_string();
    let victim = names_in(&repo.join("wal"))
        .into_iter()
        .filter(|name| name.len() == 24 && *name > first && *name < last)
        .find(|name| {
            let bytes = fs::read(repo.join("wal").join(name)).unwrap();
            bytes[0x8000 + 300] != 0 && bytes[bytes.len() - 100] != 0
        })
        .expect("a full segment inside the range");
    let path = repo.join("wal").join(&victim);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0x8000 + 300] ^= 0x55;
    fs::write(&path, bytes).unwrap();

    let verify = s
        .pitr()
        .args(["verify", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(9), "{}", stderr(&verify));
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains(&victim) && text.contains("corrupt"), "{text}");

    let pgdata = s.workdir("flipped-restore").join("pgdata");
    let output = try_restore(s, &repo, &pgdata, &["--to", "latest"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(&victim), "{}", stderr(&output));
    assert!(!pgdata.exists());
}

#[test]
fn a_truncated_backup_is_refused_and_leaves_nothing() {
    let s = scenario();
    let repo = s.copy_repo("truncated");
    let tarball = repo.join("base/targz/base.tar.gz");
    let length = fs::metadata(&tarball).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&tarball)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let parent = s.workdir("truncated-restore");
    let output = try_restore(
        s,
        &repo,
        &parent.join("pgdata"),
        &["--to", &s.target, "--backup", "targz"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    // The reason is the damaged compressed stream. (The message names the
    // member being written, not `base.tar.gz`: `verify` below names that.)
    assert!(
        stderr(&output).contains("cannot extract")
            && stderr(&output).contains("incomplete deflate stream"),
        "the truncation must be the reason given: {}",
        stderr(&output)
    );
    assert!(
        names_in(&parent).is_empty(),
        "nothing may be left: {:?}",
        names_in(&parent)
    );
    let verify = s
        .pitr()
        .args(["verify", "--backup", "targz", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("base.tar.gz"));
}

#[test]
fn a_file_that_differs_from_the_manifest_stops_the_restore() {
    let s = scenario();
    let repo = s.copy_repo("mismatch");
    let hba = repo.join("base/plain/pg_hba.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&hba)
        .unwrap()
        .write_all(b"# tampered\n")
        .unwrap();
    let parent = s.workdir("mismatch-restore");
    let output = try_restore(
        s,
        &repo,
        &parent.join("pgdata"),
        &["--to", &s.target, "--backup", "plain"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pg_hba.conf"),
        "{}",
        stderr(&output)
    );
    assert!(names_in(&parent).is_empty());
    let verify = s
        .pitr()
        .args(["verify", "--backup", "plain", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("pg_hba.conf"));
}

/// Rewrites `tar`'s base.tar with one extra member, named raw so that the
/// tar crate's own path checks do not stop us writing it.
fn append_hostile(base_tar: &Path, name: &[u8], kind: tar::EntryType, link: Option<&[u8]>) {
    let original = fs::read(base_tar).unwrap();
    let mut archive = tar::Archive::new(&original[..]);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        builder.append(&header, &mut entry).unwrap();
    }
    let mut header = tar::Header::new_ustar();
    header.set_path("placeholder").unwrap();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(if kind.is_file() { 5 } else { 0 });
    {
        let raw = header.as_old_mut();
        raw.name = [0; 100];
        raw.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            raw.linkname = [0; 100];
            raw.linkname[..link.len()].copy_from_slice(link);
        }
    }
    header.set_cksum();
    let data: &[u8] = if kind.is_file() { b"evil\n" } else { b"" };
    builder.append(&header, data).unwrap();
    fs::write(base_tar, builder.into_inner().unwrap()).unwrap();
}

#[test]
fn tar_members_that_climb_out_are_refused() {
    let s = scenario();
    /// Case name, member name, member kind, link target.
    type Hostile = (
        &'static str,
        &'static [u8],
        tar::EntryType,
        Option<&'static [u8]>,
    );
    let cases: [Hostile; 4] = [
        ("dotdot", b"../../evil", tar::EntryType::Regular, None),
        (
            "absolute",
            b"/tmp/pitr-evil-absolute",
            tar::EntryType::Regular,
            None,
        ),
        (
            "symlink",
            b"global/evil_link",
            tar::EntryType::Symlink,
            Some(b"/etc"),
        ),
        (
            "hardlink",
            b"evil_hardlink",
            tar::EntryType::Link,
            Some(b"../../../etc/passwd"),
        ),
    ];
    for (name, member, kind, link) in cases {
        let repo = s.copy_repo(&format!("hostile-{name}"));
        append_hostile(&repo.join("base/tar/base.tar"), member, kind, link);
        let parent = s.workdir(&format!("hostile-{name}-restore"));
        let output = try_restore(
            s,
            &repo,
            &parent.join("pgdata"),
            &["--to", &s.target, "--backup", "tar"],
        );
        assert_eq!(output.status.code(), Some(4), "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("refusing tar member"),
            "{name}: {}",
            stderr(&output)
        );
        assert!(
            names_in(&parent).is_empty(),
            "{name}: {:?}",
            names_in(&parent)
        );
        assert!(!s.dir.join("evil").exists() && !Path::new("/tmp/pitr-evil-absolute").exists());
    }
}

#[test]
fn a_full_disk_is_reported_and_cleaned_up() {
    let test = "a_full_disk_is_reported_and_cleaned_up";
    // A small tmpfs is the full disk: mounting it needs root (and
    // CAP_SYS_ADMIN, which unprivileged containers lack).
    if !require_root(test) {
        return;
    }
    let s = scenario();
    let mount = s.workdir("small-disk");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|status| status.success());
    if !require(test, mounted, "`mount -t tmpfs` is not allowed here") {
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let output = try_restore(
        s,
        &s.repo,
        &mount.join("pgdata"),
        &["--to", &s.target, "--backup", "tar"],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("out of disk space"), "{message}");
    assert!(
        message.contains(&mount.to_string_lossy().to_string()),
        "the path must be named: {message}"
    );
    assert!(names_in(&mount).is_empty(), "{:?}", names_in(&mount));
}

/// Staging is slowed (`PITR_STAGE_DELAY_MS`, a test knob: a pause before
/// each file) so that the signal certainly lands while files are copied.
#[test]
fn ctrl_c_while_staging_removes_the_staging_directory() {
    let s = scenario();
    let parent = s.workdir("interrupt-staging");
    let pgdata = parent.join("pgdata");
    let child = s
        .pitr()
        .args(["restore", "--repo"])
        .arg(&s.repo)
        .args(["--to", &s.target, "--backup", "plain", "--pgdata"])
        .arg(&pgdata)
        .env("PITR_STAGE_DELAY_MS", "20")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    wait_until_staging_under_way(&parent);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{message}");
    assert!(
        message.contains("interrupted while staging"),
        "the interruption must be reported as such: {message}"
    );
    assert!(!pgdata.exists(), "no data directory may appear: {message}");
    // Nothing at all is left: no staging, tablespace staging or WAL spool
    // directory (all hidden, `.pgdata.pitr-*`).
    assert!(names_in(&parent).is_empty(), "{:?}", names_in(&parent));
}

/// Ctrl-C (SIGINT, from a terminal) and SIGTERM (from a service manager)
/// during replay: the server is stopped, the data directory kept as it is
/// with its recovery state, and the message says how to resume.
#[test]
fn ctrl_c_while_replaying_stops_the_server_and_says_how_to_resume() {
    let s = scenario();
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let parent = s.workdir(&format!("interrupt-replay-{signal}"));
        let pgdata = parent.join("pgdata");
        let child = s
            .pitr()
            .args(["restore", "--repo"])
            .arg(&s.repo)
            .args(["--to", &s.target, "--backup", "targz", "--pgdata"])
            .arg(&pgdata)
            .env("PITR_FETCH_DELAY_MS", "2000")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _guard = ServerGuard(pgdata.clone());
        wait_for(
            "the server to start",
            Duration::from_secs(120),
            Duration::from_millis(2),
            || postmaster_pid(&pgdata).is_some(),
        );
        let server = postmaster_pid(&pgdata).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let output = child.wait_with_output().unwrap();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(130), "{signal}: {message}");
        // The resume command is printed whole, to be pasted: the full path
        // of pg_ctl, run as the server's user, with this data directory.
        let resume = message
            .split_once("start it again with `")
            .and_then(|(_, rest)| rest.split_once("` to resume recovery"))
            .map(|(command, _)| command.to_string())
            .unwrap_or_else(|| panic!("{signal}: the message must say how to resume: {message}"));
        assert!(
            resume.contains(&format!(
                "{}/pg_ctl start -D {}",
                pg_bin().display(),
                pgdata.display()
            )),
            "{signal}: the resume command must name pg_ctl's full path and the data directory: {resume}"
        );
        assert!(
            !process_alive(server),
            "{signal}: the server must be stopped: {message}"
        );
        assert_eq!(
            processes_working_in(&pgdata),
            Vec::<Pid>::new(),
            "{signal}: no server process may be left"
        );
        // The recovery state that lets `pg_ctl start` resume: the server
        // renames backup_label to backup_label.old once it has read it
        // into pg_control, and recovery.signal stays until the end.
        assert!(
            pgdata.join("backup_label").exists() || pgdata.join("backup_label.old").exists(),
            "{signal}: {:?}",
            names_in(&pgdata)
        );
        assert!(pgdata.join("recovery.signal").exists(), "{signal}");
    }
}
