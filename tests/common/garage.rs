//! garage (a distributed S3 store that ignores conditional creates) for
//! the tests: N nodes on 127.0.0.1, each with its own free ports for RPC,
//! the S3 API and the admin API, one shared `rpc_secret`, every node given
//! a zone and a capacity in the layout, `replication_factor` N, one bucket
//! and one key allowed to use it. Started by the tests, stopped by PID when
//! the guard is dropped (also when a test fails); a node can be killed
//! (SIGKILL) and started again in between, to show the cluster carries on.
//!
//! Optional like the version matrix (garage takes ~41 min to build): the
//! binary comes from `./scripts/object-stores.sh fetch garage` (or
//! `PITR_TEST_GARAGE`); `make test-cluster` builds it when missing and
//! runs its tests with skips turned into failures.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The bucket every garage cluster gets.
pub const BUCKET: &str = "pitr";
/// The S3 region garage answers for (its configuration says so).
const REGION: &str = "garage";

/// The garage program, if built: `PITR_TEST_GARAGE`, else the cache of
/// scripts/object-stores.sh (the same rule as its other servers).
pub fn program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PITR_TEST_GARAGE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = super::object_servers::cache_dir()?.join("garage/bin/garage");
    path.is_file().then_some(path)
}

/// Requires garage (skips the test, or fails it under PITR_TEST_STRICT=1,
/// as `make test-cluster` sets, when it is not built).
pub fn require(test: &str) -> Option<PathBuf> {
    let program = program();
    super::require(
        test,
        program.is_some(),
        "garage is not built (`./scripts/object-stores.sh fetch garage`, ~41 min; \
         or set PITR_TEST_GARAGE)",
    )
    .then_some(program)
    .flatten()
}

/// `count` free loopback ports, no two alike (each probe binds port 0,
/// and the kernel may hand out a port again once its probe is closed).
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    while ports.len() < count {
        let port = super::free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One node: its configuration and, while it runs, its process.
struct Node {
    config: PathBuf,
    log: PathBuf,
    rpc: u16,
    s3: u16,
    child: Option<Child>,
}

/// A running garage cluster with the bucket [`BUCKET`] and a key for it.
pub struct GarageCluster {
    program: PathBuf,
    nodes: Vec<Node>,
    pub key_id: String,
    pub secret: String,
    pub dir: tempfile::TempDir,
}

impl GarageCluster {
    /// `count` nodes with `replication_factor = count`, connected, laid out
    /// (one zone each), with the bucket and the key; panics with the nodes'
    /// output when they do not come up.
    pub fn start(program: &Path, count: usize) -> GarageCluster {
        let dir = tempfile::Builder::new()
            .prefix("pitr-garage-")
            .tempdir()
            .unwrap();
        // 32 bytes in hex; a test secret for nodes on loopback only.
        let rpc_secret: String = (0..32u32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        let mut cluster = GarageCluster {
            program: program.to_path_buf(),
            nodes: Vec::new(),
            key_id: String::new(),
            secret: String::new(),
            dir,
        };
        let ports = distinct_free_ports(3 * count);
        for index in 0..count {
            let node_dir = cluster.dir.path().join(format!("node{}", index + 1));
            std::fs::create_dir_all(&node_dir).unwrap();
            let (rpc, s3, admin) = (ports[3 * index], ports[3 * index + 1], ports[3 * index + 2]);
            let config = node_dir.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\n\
                     data_dir = \"{data}\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = {count}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n",
                    meta = node_dir.join("meta").display(),
                    data = node_dir.join("data").display(),
                ),
            )
            .unwrap();
            cluster.nodes.push(Node {
                config,
                log: node_dir.join("server.log"),
                rpc,
                s3,
                child: None,
            });
            cluster.start_node(index);
        }
        for index in 0..count {
            cluster.wait_listening(index);
        }
        // Node 1 meets the others; the layout gives each a zone and a
        // capacity, so that every object has a copy on every node.
        let ids: Vec<String> = (0..count)
            .map(|index| {
                cluster
                    .cli_ok(index, &["node", "id", "-q"])
                    .trim()
                    .to_string()
            })
            .collect();
        for id in &ids[1..] {
            cluster.cli_ok(0, &["node", "connect", id]);
        }
        for (index, id) in ids.iter().enumerate() {
            let short = &id[..16];
            let zone = format!("dc{}", index + 1);
            cluster.cli_ok(0, &["layout", "assign", "-z", &zone, "-c", "1G", short]);
        }
        cluster.cli_ok(0, &["layout", "apply", "--version", "1"]);
        cluster.wait_healthy(count);
        cluster.cli_ok(0, &["bucket", "create", BUCKET]);
        let key = cluster.cli_ok(0, &["key", "create", "pitr-key"]);
        let field = |name: &str| {
            key.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().last())
                .unwrap_or_else(|| panic!("no {name} in:\n{key}"))
                .to_string()
        };
        cluster.key_id = field("Key ID");
        cluster.secret = field("Secret key");
        cluster.cli_ok(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "pitr-key",
            ],
        );
        cluster
    }

    fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            // Node 1 takes every request and logs each, and each error
            // reply ("… in response to …").
            .env(
                "RUST_LOG",
                if index == 0 {
                    "garage=warn,garage_api_common=info"
                } else {
                    "garage=warn"
                },
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        node.child = Some(child);
    }

    fn wait_listening(&self, index: usize) {
        let node = &self.nodes[index];
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", node.rpc)).is_err()
            || TcpStream::connect(("127.0.0.1", node.s3)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "garage node {} did not listen within 60 s:\n{}",
                index + 1,
                self.output_of(index)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node 1 sees `count` healthy nodes.
    fn wait_healthy(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = text(&self.cli(0, &["status"]).stdout);
            let healthy = status
                .split("FAILED NODES")
                .next()
                .unwrap_or_default()
                .matches("127.0.0.1:")
                .count();
            if healthy >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "garage: {healthy} of {count} nodes healthy after 60 s:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The garage CLI against node `index`.
    fn cli(&self, index: usize, args: &[&str]) -> Output {
        Command::new(&self.program)
            .arg("-c")
            .arg(&self.nodes[index].config)
            .args(args)
            .output()
            .unwrap()
    }

    fn cli_ok(&self, index: usize, args: &[&str]) -> String {
        let output = self.cli(index, args);
        assert!(
            output.status.success(),
            "garage {args:?} on node {}: {}{}",
            index + 1,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn output_of(&self, index: usize) -> String {
        std::fs::read_to_string(&self.nodes[index].log).unwrap_or_default()
    }

    /// Kills node `index` (counted from 0) with SIGKILL, by its PID: a
    /// node that dies, not one that shuts down.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            // Child::kill is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `index` again (same configuration and data) and waits
    /// until node 1 counts every running node healthy.
    pub fn restart(&mut self, index: usize) {
        assert!(self.nodes[index].child.is_none(), "node {index} is running");
        self.start_node(index);
        self.wait_listening(index);
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        self.wait_healthy(running);
    }

    /// Node 1's output: a line per request, and one per error reply.
    pub fn node1_log(&self) -> String {
        self.output_of(0)
    }

    /// The PID of node `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// The repository URL of `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// What a `pitr` process needs, as a user would set it: node 1's S3
    /// endpoint (the tests never kill node 1) and the key.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.nodes[0].s3),
            ),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// The same as driver settings (lower-case names), for tests that read
    /// the store through the library.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect()
    }

    /// `pitr` (this build) pointed at the cluster, with its cache in `cache`.
    pub fn pitr(&self, cache: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitr"));
        command
            .env_remove("PITR_REPO")
            .env("TZ", "UTC")
            .env("PITR_CACHE_DIR", cache)
            .envs(self.env());
        command
    }

    /// Every node's output, for failures.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|index| format!("--- node {} ---\n{}", index + 1, self.output_of(index)))
            .collect()
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}
