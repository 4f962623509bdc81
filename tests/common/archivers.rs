//! Archiving into an object store, checked by content, and two archivers
//! racing on the same segment names (one of them another cluster): shared
//! by the tests on s3s-fs (tests/object_repo.rs) and on garage
//! (tests/object_garage.rs, tests/object_cluster.rs), so that every store
//! passes the same checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use pitr::repo::store::object::{ObjectStorage, ObjectUrl};
use pitr::repo::store::StoreRead;

use super::{shell_quote, Cluster};

/// A repository in an object store and how `pitr` reaches it.
pub struct Store {
    /// The `pitr` binary (a copy the server's OS user can run, for
    /// archive_command).
    pub binary: PathBuf,
    pub url: String,
    /// The environment a user would set (endpoint, region, credentials).
    pub env: Vec<(String, String)>,
    /// pitr's cache directory, writable by the server's OS user.
    pub cache: PathBuf,
}

impl Store {
    pub fn pitr(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_remove("PITR_REPO")
            .env("TZ", "UTC")
            .env("PITR_CACHE_DIR", &self.cache)
            .envs(self.env.iter().map(|(n, v)| (n, v)));
        command
    }

    /// `archive_command` pushing into this store, the environment on its
    /// command line (a test store's credentials).
    pub fn archive_command(&self) -> String {
        let settings: Vec<String> = self
            .env
            .iter()
            .map(|(name, value)| format!("{name}={}", shell_quote(value)))
            .collect();
        format!(
            "env {} PITR_CACHE_DIR={} {} wal-push --repo {} %p",
            settings.join(" "),
            shell_quote(&self.cache.to_string_lossy()),
            shell_quote(&self.binary.to_string_lossy()),
            self.url
        )
    }

    /// The store through the library, to list what it holds.
    fn storage(&self) -> ObjectStorage {
        let url = ObjectUrl::parse(&self.url).unwrap().unwrap();
        let settings: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect();
        ObjectStorage::open_with(&url, &settings).unwrap()
    }

    /// The object `key` under the repository, whole.
    pub fn read(&self, key: &str) -> Vec<u8> {
        pitr::repo::store::read_all(&self.storage(), key)
            .unwrap_or_else(|e| panic!("cannot read {key}: {e}"))
    }

    /// The names of the WAL segments the archive holds (whatever suffix
    /// their compression gave them).
    pub fn archived_segments(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .storage()
            .list("wal/", None)
            .unwrap()
            .into_iter()
            .filter_map(|object| {
                let name = object.key.rsplit('/').next()?.to_string();
                let stem = name.split('.').next()?.to_string();
                (stem.len() == 24 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then_some(stem)
            })
            .collect();
        names.dedup();
        names
    }

    /// `pitr wal-fetch NAME`: the segment's bytes as a restore gets them.
    pub fn fetch(&self, name: &str, scratch: &Path) -> Vec<u8> {
        let to = scratch.join(format!("fetched-{name}"));
        let output = self
            .pitr()
            .args(["wal-fetch", "--repo", &self.url, name])
            .arg(&to)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "wal-fetch {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bytes = std::fs::read(&to).unwrap();
        let _ = std::fs::remove_file(&to);
        bytes
    }

    fn push(&self, path: &Path) -> Output {
        self.pitr()
            .args(["wal-push", "--repo", &self.url])
            .arg(path)
            .output()
            .unwrap()
    }
}

/// A 16 MiB segment whose first page has a long header naming the cluster
/// `system_identifier` (PostgreSQL 15's page magic).
pub fn synthetic_segment(system_identifier: u64, fill: u8) -> Vec<u8> {
    let mut bytes = vec![fill; 16 << 20];
    bytes[..40].fill(0);
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    bytes[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    bytes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    bytes
}

/// Keeps a cluster's WAL in pg_wal after archiving (no recycling within
/// 1 GB), so the archive can be compared with PostgreSQL's own files.
pub fn keep_wal(cluster: &Cluster) {
    cluster.sql("ALTER SYSTEM SET wal_keep_size = '1GB'");
    cluster.sql("SELECT pg_reload_conf()");
}

/// Every segment in the store is byte-identical to `cluster`'s own file
/// in pg_wal (fetched as a restore fetches it); returns how many there are.
pub fn assert_archive_is_clusters(store: &Store, cluster: &Cluster, scratch: &Path) -> usize {
    let names = store.archived_segments();
    assert!(!names.is_empty(), "nothing archived");
    for name in &names {
        let ours = std::fs::read(cluster.pgdata.join("pg_wal").join(name))
            .unwrap_or_else(|e| panic!("{name} is not in pg_wal any more ({e})"));
        assert!(
            store.fetch(name, scratch) == ours,
            "{name} in the store differs from PostgreSQL's"
        );
    }
    names.len()
}

/// Waits until `cluster`'s archiver has failed at least once.
pub fn wait_archiver_failed(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let failed: u64 = cluster
            .sql("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        if failed > 0 {
            return failed;
        }
        assert!(
            Instant::now() < deadline,
            "the intruder's archiving never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two `wal-push` processes, one per cluster (different system
/// identifiers, different bytes), started together on the same new name,
/// `rounds` times: the first cluster's push succeeds every time, the
/// intruder's is refused (exit 3, both identifiers named), and every
/// object holds the first cluster's bytes. The first cluster has pushed
/// once before (its identity is recorded).
pub fn pushers_race(store: &Store, dir: &Path, rounds: u8) {
    const FIRST: u64 = 7_300_000_000_000_000_001;
    const INTRUDER: u64 = 7_300_000_000_000_000_002;
    let write = |who: &str, name: &str, bytes: &[u8]| {
        let path = dir.join(who).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let opening = write(
        "first",
        "000000010000000000000001",
        &synthetic_segment(FIRST, 1),
    );
    let output = store.push(&opening);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names: Vec<String> = (2..2 + rounds)
        .map(|n| format!("0000000100000000000000{n:02X}"))
        .collect();
    for (round, name) in names.iter().enumerate() {
        let fill = 10 + round as u8;
        let ours = write("first", name, &synthetic_segment(FIRST, fill));
        let theirs = write("intruder", name, &synthetic_segment(INTRUDER, fill + 100));
        let start = Barrier::new(2);
        let (first, intruder) = std::thread::scope(|scope| {
            let first = scope.spawn(|| {
                start.wait();
                store.push(&ours)
            });
            let intruder = scope.spawn(|| {
                start.wait();
                store.push(&theirs)
            });
            (first.join().unwrap(), intruder.join().unwrap())
        });
        let said = String::from_utf8_lossy(&intruder.stderr);
        assert!(
            first.status.success(),
            "round {round}: the first cluster's push failed: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(intruder.status.code(), Some(3), "round {round}: {said}");
        assert!(
            said.contains(&FIRST.to_string()) && said.contains(&INTRUDER.to_string()),
            "round {round}: both identifiers named: {said}"
        );
    }
    for (round, name) in names.iter().enumerate() {
        assert!(
            store.fetch(name, dir) == synthetic_segment(FIRST, 10 + round as u8),
            "{name} was overwritten"
        );
    }
    eprintln!(
        "{} rounds of two pushers on one name: 0 overwritten, intruder refused each time",
        names.len()
    );
}

/// Two real PostgreSQL clusters (different system identifiers) archiving
/// into one repository at the same time, their segments under the same
/// names: the repository belongs to the first (`pitr init --pgdata`), every
/// object in it is byte-identical to the first cluster's file, and the
/// second's archiver shows only failures.
pub fn clusters_race(store: &Store, dir: &Path) {
    let first_dir = dir.join("first");
    let second_dir = dir.join("second");
    for d in [&first_dir, &second_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let archive_command = store.archive_command();
    let first = Cluster::start_archiving(&first_dir, &first_dir.join("unused"), &archive_command);
    keep_wal(&first);
    let init = store
        .pitr()
        .args(["init", "--repo", &store.url, "--pgdata"])
        .arg(&first.pgdata)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "init --pgdata: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let second =
        Cluster::start_archiving(&second_dir, &second_dir.join("unused"), &archive_command);
    let first_id = first.sql("SELECT system_identifier FROM pg_control_system()");
    let second_id = second.sql("SELECT system_identifier FROM pg_control_system()");
    assert_ne!(first_id, second_id);
    for cluster in [&first, &second] {
        cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    }
    // Both write and switch segments in step: the same names come up on
    // both at about the same time.
    for id in 1..=4 {
        std::thread::scope(|scope| {
            for cluster in [&first, &second] {
                scope.spawn(move || {
                    cluster.insert_marker(id);
                    cluster.sql("SELECT pg_switch_wal()");
                });
            }
        });
    }
    first.archive_everything();
    let failed = wait_archiver_failed(&second);
    let archived = second.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
    assert_eq!(archived, "", "nothing of the second cluster is archived");
    let first_failed: u64 = first
        .sql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    let count = assert_archive_is_clusters(store, &first, dir);
    // The second failed on a name the first archived: the race was on
    // the same names, and the first's bytes are what the store holds.
    let refused = second.sql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
    assert!(
        store.archived_segments().contains(&refused),
        "the second cluster failed on {refused}, which the first did not archive"
    );
    eprintln!(
        "two clusters archiving at once: {count} segments archived, all the first's \
         ({first_failed} failures on the first); the second, refused on {refused} (a name \
         the first archived), failed {failed} times and archived nothing"
    );
}

/// Both races on one store: `store(prefix)` gives a fresh repository
/// under `prefix` (its cache writable by the server's OS user).
pub fn two_archivers_racing(store: impl Fn(&str) -> Store, dir: &Path) {
    let scratch = |name: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let pushers = store("pushers");
    let init = pushers
        .pitr()
        .args(["init", "--repo", &pushers.url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    pushers_race(&pushers, &scratch("pushers"), 8);
    clusters_race(&store("clusters"), &scratch("clusters"));
}
