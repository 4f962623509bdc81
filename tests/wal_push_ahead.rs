//! Archiving keeps up: a real PostgreSQL 15 archiving a burst of segments
//! into a real S3 server (s3s-fs) with `wal-push` pushing ahead. Proven by
//! content (every archived segment decompresses to the bytes PostgreSQL
//! wrote), by PostgreSQL's own bookkeeping (no failure, every `.done`
//! segment in the store) and by the server's request log (one PUT per
//! segment, fewer pushing invocations than segments). And with the store
//! stopped in the middle of the burst: PostgreSQL sees failures and
//! retries, nothing it counts as archived is missing from the store, and
//! nothing is lost once the store is back.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::object_servers::{self, Kind, ObjectServer};
use common::*;

/// What the wrapper archive_command logged per invocation: the segment,
/// the exit status, and the PUTs the store received while it ran.
#[derive(Debug)]
struct Invocation {
    name: String,
    status: i32,
    puts: usize,
}

/// Dropped in this order: the server stops before its store and the
/// directory go.
struct Setup {
    cluster: Cluster,
    server: ObjectServer,
    _dir: tempfile::TempDir,
    invocations: PathBuf,
}

/// A cluster whose archive_command is `pitr wal-push --push-ahead AHEAD`
/// into a fresh repository on s3s-fs, wrapped in a script that logs each
/// invocation; `wal_keep_size` keeps every segment in pg_wal so the test
/// can compare the archive with PostgreSQL's own files.
fn setup(test: &str, ahead: u32) -> Setup {
    let server = ObjectServer::start(Kind::S3);
    // The wrapper (run by the server's OS user) reads the store's log.
    std::fs::set_permissions(
        server.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = shared_tempdir(&format!("pitr-{test}"));
    let binary = shared_pitr_binary(dir.path());
    let url = server.url("ahead");
    let init = std::process::Command::new(&binary)
        .envs(server.env())
        .env("PITR_CACHE_DIR", dir.path().join("root-cache"))
        .args(["init", "--repo", &url])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let work = pg_owned_dir(&dir.path().join("work"));
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let invocations = work.join("invocations");
    let exports: String = server
        .env()
        .into_iter()
        .map(|(name, value)| format!("export {name}={}\n", shell_quote(&value)))
        .collect();
    let script = work.join("archive.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{exports}export PITR_CACHE_DIR={cache}\n# A store that is down is given up on soon: PostgreSQL retries.\nexport PITR_OBJECT_RETRY_SECONDS=3\nputs() {{ grep -c 'method: PUT' {log}; }}\nbefore=$(puts)\n{pitr} wal-push --push-ahead {ahead} --repo {url} \"$1\"\nstatus=$?\necho \"$2 $status $(( $(puts) - before ))\" >> {invocations}\nexit $status\n",
            cache = shell_quote(&work.join("cache").to_string_lossy()),
            log = shell_quote(&server.log_path().to_string_lossy()),
            pitr = shell_quote(&binary.to_string_lossy()),
            invocations = shell_quote(&invocations.to_string_lossy()),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    give_to_pg_user(&script);
    let archive_command = format!("{} %p %f", shell_quote(&script.to_string_lossy()));
    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir).unwrap();
    let cluster =
        Cluster::start_archiving(&cluster_dir, &cluster_dir.join("unused"), &archive_command);
    cluster.sql("ALTER SYSTEM SET wal_keep_size = '2GB'");
    cluster.sql("SELECT pg_reload_conf()");
    cluster.sql("CREATE TABLE burst (id int, pad text)");
    Setup {
        cluster,
        server,
        _dir: dir,
        invocations,
    }
}

impl Setup {
    fn pg_wal(&self) -> PathBuf {
        self.cluster.pgdata.join("pg_wal")
    }

    /// One segment of the burst: some rows, then a switch.
    fn write_and_switch(&self, round: u32) {
        self.cluster.sql(&format!(
            "INSERT INTO burst SELECT g, repeat('x', 100) FROM generate_series({0}, {0} + 999) g",
            round * 1000
        ));
        self.cluster.sql("SELECT pg_switch_wal()");
    }

    fn current_segment(&self) -> String {
        self.cluster
            .sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    }

    fn archiver(&self) -> (String, u64) {
        // The count comes first: psql's output is trimmed, and before the
        // first success `last_archived_wal` is empty.
        let row = self.cluster.sql(
            "SELECT failed_count || '|' || coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        let (failed, last) = row
            .split_once('|')
            .unwrap_or_else(|| panic!("pg_stat_archiver answered {row:?}"));
        (last.to_string(), failed.parse().unwrap())
    }

    /// Waits until the archiver has archived `segment`.
    fn wait_archived(&self, segment: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (last, _) = self.archiver();
            if last.len() == 24 && last.as_str() >= segment {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the archiver never reached {segment} (last {last}); invocations: {:?}",
                self.invocations()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn invocations(&self) -> Vec<Invocation> {
        std::fs::read_to_string(&self.invocations)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut parts = line.split(' ');
                Invocation {
                    name: parts.next().unwrap().to_string(),
                    status: parts.next().unwrap().parse().unwrap(),
                    puts: parts.next().unwrap().parse().unwrap(),
                }
            })
            .collect()
    }

    /// The archived segments, decompressed, by name.
    fn archived(&self) -> BTreeMap<String, Vec<u8>> {
        let wal = self
            .server
            .dir
            .path()
            .join("data")
            .join(object_servers::BUCKET)
            .join("ahead/wal");
        std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let file = entry.file_name().to_string_lossy().into_owned();
                let name = file.strip_suffix(".zst")?;
                (name.len() == 24).then(|| {
                    let bytes = std::fs::read(entry.path()).unwrap();
                    (name.to_string(), zstd::decode_all(&bytes[..]).unwrap())
                })
            })
            .collect()
    }

    /// Segments PostgreSQL counts as archived (`.done`).
    fn done(&self) -> Vec<String> {
        std::fs::read_dir(self.pg_wal().join("archive_status"))
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let file = entry.file_name().to_string_lossy().into_owned();
                file.strip_suffix(".done")
                    .filter(|name| name.len() == 24)
                    .map(str::to_string)
            })
            .collect()
    }

    /// PUT requests for each archived segment, from the store's log.
    fn puts_per_segment(&self) -> BTreeMap<String, usize> {
        let mut puts = BTreeMap::new();
        for request in self.server.requests() {
            let Some(uri) = request.strip_prefix("PUT ") else {
                continue;
            };
            if let Some(at) = uri.find("/ahead/wal/") {
                let key = &uri[at + "/ahead/wal/".len()..];
                if let Some(name) = key.strip_suffix(".zst").filter(|n| n.len() == 24) {
                    *puts.entry(name.to_string()).or_insert(0) += 1;
                }
            }
        }
        puts
    }

    /// Every archived segment is byte for byte PostgreSQL's file.
    fn assert_archive_matches_pg_wal(&self, archived: &BTreeMap<String, Vec<u8>>) {
        for (name, bytes) in archived {
            let original = std::fs::read(self.pg_wal().join(name))
                .unwrap_or_else(|e| panic!("{name} is no longer in pg_wal: {e}"));
            assert!(
                *bytes == original,
                "{name}: the archived copy differs from PostgreSQL's"
            );
        }
    }
}

fn require(test: &str) -> bool {
    require_root(test) && object_servers::require_server(test, Kind::S3)
}

#[test]
fn a_burst_is_archived_with_fewer_pushing_invocations_one_put_each() {
    let test = "a_burst_is_archived_with_fewer_pushing_invocations_one_put_each";
    if !require(test) {
        return;
    }
    let setup = setup("ahead-burst", 8);
    let first = setup.current_segment();
    for round in 0..40 {
        setup.write_and_switch(round);
    }
    let last = setup.current_segment();
    setup.cluster.sql("SELECT pg_switch_wal()");
    setup.wait_archived(&last);
    let (_, failed) = setup.archiver();
    assert_eq!(failed, 0, "{:?}", setup.invocations());

    let archived = setup.archived();
    let burst: Vec<&String> = archived
        .keys()
        .filter(|name| name.as_str() >= first.as_str() && name.as_str() <= last.as_str())
        .collect();
    assert!(burst.len() >= 40, "{} segments archived", burst.len());
    setup.assert_archive_matches_pg_wal(&archived);
    for name in setup.done() {
        assert!(
            archived.contains_key(&name),
            "{name} is done but not stored"
        );
    }

    let puts = setup.puts_per_segment();
    for name in archived.keys() {
        assert_eq!(puts.get(name), Some(&1), "{name}: PUTs {puts:?}");
    }
    let invocations = setup.invocations();
    assert!(invocations.iter().all(|i| i.status == 0), "{invocations:?}");
    let pushing = invocations.iter().filter(|i| i.puts > 0).count();
    let segments = invocations.iter().filter(|i| i.name.len() == 24).count();
    eprintln!(
        "{segments} segments archived by {} invocations, {pushing} of them with PUTs; {} PUTs for {} segments",
        invocations.len(),
        puts.values().sum::<usize>(),
        archived.len()
    );
    assert!(
        pushing * 2 <= segments,
        "push-ahead must spare most invocations a PUT: {pushing} of {segments}: {invocations:?}"
    );
    // Records are consumed as PostgreSQL asks: none left for done segments.
    let records = setup.pg_wal().join(".pitr-pushed");
    let left: Vec<_> = std::fs::read_dir(&records)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
}

#[test]
fn a_store_stopped_mid_burst_loses_nothing_and_lies_about_nothing() {
    let test = "a_store_stopped_mid_burst_loses_nothing_and_lies_about_nothing";
    if !require(test) {
        return;
    }
    let mut setup = setup("ahead-down", 8);
    for round in 0..15 {
        setup.write_and_switch(round);
    }
    // Stop the store while the archiver is still behind.
    setup.server.kill();
    for round in 15..30 {
        setup.write_and_switch(round);
    }
    let last = setup.current_segment();
    setup.cluster.sql("SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.archiver().1 < 2 {
        assert!(
            Instant::now() < deadline,
            "the archiver never failed: {:?}",
            setup.invocations()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // While the store is down: everything PostgreSQL counts as archived is
    // in the store (its files survive the server).
    let stored = setup.archived();
    let done = setup.done();
    for name in &done {
        assert!(stored.contains_key(name), "{name} is done but not stored");
    }
    let ready_left = std::fs::read_dir(setup.pg_wal().join("archive_status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert!(ready_left > 0, "the store went down too late to matter");

    setup.server.revive();
    setup.wait_archived(&last);
    let archived = setup.archived();
    setup.assert_archive_matches_pg_wal(&archived);
    for name in setup.done() {
        assert!(
            archived.contains_key(&name),
            "{name} is done but not stored"
        );
    }
    let invocations = setup.invocations();
    assert!(
        invocations.iter().any(|i| i.status != 0),
        "PostgreSQL saw failures: {invocations:?}"
    );
    // Every segment of the burst is there.
    let names: Vec<&String> = archived.keys().collect();
    for pair in names.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let next = u64::from_str_radix(&a[16..], 16).unwrap() + 1;
        assert_eq!(
            u64::from_str_radix(&b[16..], 16).unwrap(),
            next,
            "a gap between {a} and {b}"
        );
    }
    assert!(names.last().map(|n| n.as_str() >= last.as_str()) == Some(true));
}
