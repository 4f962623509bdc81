//! Seekable backups (issue 16, point 1): `pitr backup --seekable` writes a
//! tar of independent zstd frames that standard tools read as pg_basebackup's
//! own tar, with an index whose frames, checksums and page checksums match
//! the files; a restore from it is exact.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pitr::repo::store::posix::Posix;
use pitr::repo::store::StoreRead;
use pitr::seekable::index::Index;
use pitr::seekable::{page_checksum, PAGE_BYTES};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn run(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `pitr --json backup --seekable` of `cluster` into its repository, which
/// must succeed.
fn backup_seekable(binary: &Path, cluster: &Cluster) -> std::process::Output {
    run(
        pitr(binary)
            // The major under test's pg_basebackup (the matrix).
            .args(["--json", "backup", "--bin-dir"])
            .arg(pg_bin())
            .args(["--seekable", "--fast", "--repo"])
            .arg(&cluster.repo)
            .env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres"),
        "pitr backup --seekable",
    )
}

/// pg_basebackup's own uncompressed tar, made seekable by pitr's
/// conversion: the standard tools read back exactly pg_basebackup's tar,
/// and each frame of the index, read alone with `open_range`, gives exactly
/// its member's bytes.
#[test]
fn a_seekable_tar_is_pg_basebackups_tar_for_standard_tools_and_its_index_is_exact() {
    if !require_tool("seekable", "zstd") {
        return;
    }
    let dir = shared_tempdir("pitr-seekable-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    // A relation of several frames, so that large files are cut.
    cluster.sql("CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 60000) g");
    cluster.sql("CHECKPOINT");
    cluster.backup("plain", &["-Ft", "-X", "fetch"]);
    drop(cluster);

    let original = repo.join("base/plain");
    let converted = dir.path().join("converted");
    fs::create_dir_all(&converted).unwrap();
    for name in names_in(&original) {
        fs::copy(original.join(&name), converted.join(&name)).unwrap();
    }
    let store = Posix::new(&converted);
    let made = pitr::seekable::convert::convert_staged(&store).unwrap();
    assert_eq!(
        made.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["base.tar.zst"]
    );
    assert_eq!(
        names_in(&converted),
        ["backup_manifest", "base.tar.zst", "base.tar.zst.pitr-index"],
        "the plain tar is replaced"
    );
    let tar = fs::read(original.join("base.tar")).unwrap();

    // `zstd -d` gives pg_basebackup's tar byte for byte.
    let decompressed = run(
        Command::new("zstd")
            .args(["-d", "-c"])
            .arg(converted.join("base.tar.zst")),
        "zstd -d",
    )
    .stdout;
    assert_eq!(decompressed.len(), tar.len());
    assert_eq!(
        sha256(&decompressed),
        sha256(&tar),
        "zstd -d is not pg_basebackup's tar"
    );

    // `tar --zstd -xf` gives the same tree as `tar -xf` of the original:
    // modes, sizes and SHA-256 of every file.
    let from_seekable = dir.path().join("from-seekable");
    let from_original = dir.path().join("from-original");
    for (target, args, archive) in [
        (
            &from_seekable,
            vec!["--zstd", "-xpf"],
            converted.join("base.tar.zst"),
        ),
        (&from_original, vec!["-xpf"], original.join("base.tar")),
    ] {
        fs::create_dir_all(target).unwrap();
        run(
            Command::new("tar")
                .args(&args)
                .arg(&archive)
                .arg("-C")
                .arg(target),
            "tar -x",
        );
    }
    let seekable_tree = tree_snapshot(&from_seekable);
    assert!(seekable_tree.len() > 500, "{} entries", seekable_tree.len());
    assert_same_tree(
        "the tree from tar --zstd",
        &tree_snapshot(&from_original),
        &seekable_tree,
    );

    // The index: checked, tied to this backup's manifest, every frame
    // alone through the store's ranged read gives its part of the tar.
    let index =
        Index::parse(&fs::read(converted.join("base.tar.zst.pitr-index")).unwrap()).unwrap();
    assert_eq!(
        index.manifest_sha256,
        Some(sha256(
            &fs::read(converted.join("backup_manifest")).unwrap()
        ))
    );
    assert_eq!(index.tar_bytes, tar.len() as u64);
    assert_eq!(
        index.stored_bytes,
        fs::metadata(converted.join("base.tar.zst")).unwrap().len()
    );
    let mut large = 0;
    let mut pages = 0;
    for member in &index.members {
        let mut bytes = Vec::new();
        for frame in &member.frames {
            let mut compressed = Vec::new();
            store
                .open_range("base.tar.zst", frame.stored_range())
                .unwrap()
                .read_to_end(&mut compressed)
                .unwrap();
            let alone = zstd::stream::decode_all(compressed.as_slice()).unwrap();
            assert_eq!(alone.len() as u64, frame.len);
            assert_eq!(
                alone,
                tar[frame.offset as usize..(frame.offset + frame.len) as usize],
                "a frame of {}",
                member.path
            );
            bytes.extend_from_slice(&alone);
        }
        // The member's frames hold its headers, its data and padding.
        let data_start = (member.data_offset - member.header_offset) as usize;
        let data = &bytes[data_start..data_start + member.size as usize];
        let on_disk = from_original.join(member.path.trim_end_matches('/'));
        if member.is_file() {
            let file = fs::read(&on_disk).unwrap();
            assert_eq!(data, file.as_slice(), "{}", member.path);
            assert_eq!(member.sha256, sha256(&file), "{}", member.path);
            let expected: Vec<u64> = file
                .chunks(PAGE_BYTES as usize)
                .map(page_checksum)
                .collect();
            assert_eq!(member.pages, expected, "page checksums of {}", member.path);
            pages += member.pages.len();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                member.mode & 0o7777,
                fs::metadata(&on_disk).unwrap().mode() & 0o7777
            );
            if member.frames.len() > 1 {
                large += 1;
            }
        }
    }
    assert!(large >= 1, "no file was cut into several frames");
    assert!(pages > 1000, "{pages} pages");
}

/// `pitr backup --seekable` end to end: a backup the scanner reads as a
/// zstd tar backup, with its index, restored exactly (marker rows).
#[test]
fn pitr_backup_seekable_restores_exactly() {
    let dir = shared_tempdir("pitr-seekable-backup-");
    let cluster = cluster_with_markers(dir.path());
    let repo = cluster.repo.clone();
    // About 21 MiB: a file staged in parts by several workers.
    cluster.sql("CREATE TABLE big AS SELECT g FROM generate_series(1, 600000) g");
    let binary = shared_pitr_binary(dir.path());
    let output = backup_seekable(&binary, &cluster);
    let summary = json(&output);
    let id = summary["id"].as_str().unwrap().to_string();
    assert_eq!(summary["wal_archived"], true);
    let backup = repo.join("base").join(&id);
    assert_eq!(
        names_in(&backup),
        [
            "backup_manifest",
            "base.tar.zst",
            "base.tar.zst.pitr-index",
            "pg_wal.tar.zst",
            "pg_wal.tar.zst.pitr-index"
        ]
    );
    Index::parse(&fs::read(backup.join("base.tar.zst.pitr-index")).unwrap()).unwrap();
    // Owned like pg_basebackup's own files (the OS user's).
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(backup.join("backup_manifest")).unwrap().uid();
    for name in ["base.tar.zst", "base.tar.zst.pitr-index", "pg_wal.tar.zst"] {
        assert_eq!(
            fs::metadata(backup.join(name)).unwrap().uid(),
            owner,
            "{name}"
        );
    }

    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(200));
    let m2 = cluster.insert_marker(2);
    std::thread::sleep(Duration::from_millis(200));
    cluster.insert_marker(3);
    cluster.archive_everything();
    drop(cluster);

    let listing = json(&run(
        pitr(&binary).args(["--json", "list", "--repo"]).arg(&repo),
        "pitr list",
    ));
    let text = listing.to_string();
    assert!(text.contains(&id) && text.contains("zstd"), "{text}");

    // Staged by the workers from the index (point 2), then, with the
    // index damaged, read as one zstd stream: both exact.
    let target = between(&m1, &m2).to_rfc3339();
    let restored = restore_exactly(
        &binary,
        &repo,
        &target,
        &dir.path().join("restored"),
        &id,
        &["--jobs", "3"],
    );
    assert!(restored.contains("staged by 3 workers"), "{restored}");
    assert!(!restored.contains("cannot be used"), "{restored}");

    ctrl_c_while_workers_stage_leaves_nothing(&binary, &repo, &target, &dir.path().join("cut"));
    run(
        pitr(&binary).args(["verify", "--repo"]).arg(&repo),
        "pitr verify of an intact seekable backup",
    );
    let index = backup.join("base.tar.zst.pitr-index");
    let mut bytes = fs::read(&index).unwrap();
    bytes[100] ^= 1;
    fs::write(&index, bytes).unwrap();
    // `pitr verify` reports the damaged index.
    let verified = pitr(&binary)
        .args(["verify", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(!verified.status.success());
    let said = format!("{}{}", stdout(&verified), stderr(&verified));
    assert!(
        said.contains("base.tar.zst.pitr-index` cannot be used"),
        "{said}"
    );
    let restored = restore_exactly(
        &binary,
        &repo,
        &target,
        &dir.path().join("streamed"),
        &id,
        &[],
    );
    assert!(
        restored.contains("base.tar.zst.pitr-index` cannot be used (its SHA-256 does not match its contents: it is damaged): reading"),
        "{restored}"
    );
    assert!(!restored.contains("is seekable"), "{restored}");
}

/// Restores `id` to `target` into `pgdata` and checks the rows; returns
/// what the restore said.
fn restore_exactly(
    binary: &Path,
    repo: &Path,
    target: &str,
    pgdata: &Path,
    id: &str,
    options: &[&str],
) -> String {
    let output = pitr(binary)
        .args(["--json", "--verbose", "restore"])
        .args(options)
        .arg("--repo")
        .arg(repo)
        .args(["--to", target, "--pgdata"])
        .arg(pgdata)
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.to_path_buf());
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "restore failed:\n{said}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["plan"]["backup"]["id"], id);
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(psql(socket, port, "SELECT count(*) FROM markers"), "1");
    assert_eq!(
        psql(socket, port, "SELECT count(*), sum(g) FROM big"),
        "600000|180000300000"
    );
    said
}

/// `--seekable` writes zstd: another compression is refused before
/// anything is written.
#[test]
fn seekable_with_another_compression_is_refused() {
    let dir = shared_tempdir("pitr-seekable-refused-");
    let repo = dir.path().join("repo");
    fs::create_dir_all(repo.join("base")).unwrap();
    fs::create_dir_all(repo.join("wal")).unwrap();
    let binary = shared_pitr_binary(dir.path());
    let output = pitr(&binary)
        .args(["backup", "--seekable", "--compress", "gzip", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--seekable writes zstd"),
        "{}",
        stderr(&output)
    );
    assert!(names_in(&repo.join("base")).is_empty());
}

/// A tablespace's tar is made seekable too, and staged by the workers into
/// its mapped location: rows exact.
#[test]
fn a_tablespace_of_a_seekable_backup_restores_exactly() {
    let dir = shared_tempdir("pitr-seekable-tblspc-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let live = cluster.create_tablespace("ts1", &dir.path().join("ts_live"));
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY) TABLESPACE ts1");
    cluster.sql("CREATE TABLE big TABLESPACE ts1 AS SELECT g FROM generate_series(1, 600000) g");
    let binary = shared_pitr_binary(dir.path());
    let output = backup_seekable(&binary, &cluster);
    let id = json(&output)["id"].as_str().unwrap().to_string();
    let oid = cluster.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    let names = names_in(&repo.join("base").join(&id));
    assert!(names.contains(&format!("{oid}.tar.zst")), "{names:?}");
    assert!(
        names.contains(&format!("{oid}.tar.zst.pitr-index")),
        "{names:?}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let m1 = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(300));
    let m2 = cluster.insert_marker(2);
    cluster.archive_everything();
    drop(cluster);

    let pgdata = dir.path().join("restored");
    let new_location = dir.path().join("ts_restored");
    let output = pitr(&binary)
        .args(["--json", "--verbose", "restore", "--repo"])
        .arg(&repo)
        .args(["--to", &between(&m1, &m2).to_rfc3339(), "--pgdata"])
        .arg(&pgdata)
        .arg(format!(
            "--tablespace-mapping={}={}",
            live.display(),
            new_location.display()
        ))
        .output()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    let said = stderr(&output);
    assert!(output.status.success(), "restore failed:\n{said}");
    assert!(
        said.contains(&format!("{oid}.tar.zst is seekable")),
        "{said}"
    );
    let summary = json(&output);
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    assert_eq!(psql(socket, port, "SELECT count(*) FROM markers"), "1");
    assert_eq!(
        psql(socket, port, "SELECT count(*), sum(g) FROM big"),
        "600000|180000300000"
    );
    assert_eq!(
        psql(
            socket,
            port,
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"
        ),
        new_location.to_string_lossy()
    );
}

/// Ctrl-C while the workers stage (slowed by the test knob
/// `PITR_STAGE_DELAY_MS`): reported as an interruption, and nothing is
/// left beside the data directory that never appeared.
fn ctrl_c_while_workers_stage_leaves_nothing(
    binary: &Path,
    repo: &Path,
    target: &str,
    parent: &Path,
) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    fs::create_dir_all(parent).unwrap();
    let pgdata = parent.join("pgdata");
    let child = pitr(binary)
        .args(["restore", "--jobs", "2", "--repo"])
        .arg(repo)
        .args(["--to", target, "--pgdata"])
        .arg(&pgdata)
        .env("PITR_STAGE_DELAY_MS", "20")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = ServerGuard(pgdata.clone());
    wait_until_staging_under_way(parent);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{message}");
    assert!(message.contains("interrupted while staging"), "{message}");
    assert!(!pgdata.exists(), "{message}");
    assert!(names_in(parent).is_empty(), "{:?}", names_in(parent));
}
