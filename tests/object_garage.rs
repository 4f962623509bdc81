//! garage, a store that ignores conditional creates (`If-None-Match: *`
//! on PUT), as one node on 127.0.0.1: `pitr init` finds and records that,
//! and `wal-push` then looks, writes and reads back. Optional like the
//! version matrix (garage takes ~41 min to build): it runs when
//! `./scripts/object-stores.sh fetch garage` has installed it (or
//! PITR_TEST_GARAGE names the binary); otherwise it is a visible skip
//! (allowed in .ci/run, where garage is not built).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn garage_program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PITR_TEST_GARAGE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = Path::new("/var/cache/pitr/garage/bin/garage");
    path.is_file().then(|| path.to_path_buf())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One garage node with the bucket `pitr` and a key allowed to use it.
struct Garage {
    program: PathBuf,
    config: PathBuf,
    child: Child,
    port: u16,
    key_id: String,
    secret: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    fn start(program: &Path) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, port) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{port}\"\nroot_domain = \".s3.garage.localhost\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(program)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut garage = Garage {
            program: program.to_path_buf(),
            config,
            child,
            port,
            key_id: String::new(),
            secret: String::new(),
            _dir: dir,
        };
        // The node, its role, the bucket and a key.
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = loop {
            let status = garage.cli(&["status"]);
            if let Some(line) = text(&status.stdout)
                .lines()
                .find(|line| line.contains(&format!("127.0.0.1:{rpc}")))
            {
                break line.split_whitespace().next().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(200));
        };
        garage.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.ok(&["layout", "apply", "--version", "1"]);
        garage.ok(&["bucket", "create", "pitr"]);
        let key = garage.ok(&["key", "create", "pitr-key"]);
        let field = |name: &str| {
            key.lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().last())
                .unwrap_or_else(|| panic!("no {name} in:\n{key}"))
                .to_string()
        };
        garage.key_id = field("Key ID");
        garage.secret = field("Secret key");
        garage.ok(&[
            "bucket", "allow", "--read", "--write", "--owner", "pitr", "--key", "pitr-key",
        ]);
        garage
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.program)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "garage {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn pitr(&self, cache: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitr"));
        command
            .env_remove("PITR_REPO")
            .env("PITR_CACHE_DIR", cache)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_REGION", "garage")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret);
        command
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 16 MiB segment whose first page names the cluster `system_identifier`.
fn segment(system_identifier: u64, fill: u8) -> Vec<u8> {
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

#[test]
fn garage_gets_the_look_write_read_back_fallback() {
    let program = garage_program();
    if !require(
        "garage_gets_the_look_write_read_back_fallback",
        program.is_some(),
        "garage is not installed (`./scripts/object-stores.sh fetch garage`, ~41 min to build)",
    ) {
        return;
    }
    let Some(program) = program else { return };
    let garage = Garage::start(&program);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = "s3://pitr/cluster";
    let init = garage
        .pitr(&cache)
        .args(["init", "--repo", url])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let said = text(&init.stderr);
    assert!(said.contains("ignores conditional creates"), "{said}");
    assert!(!said.contains(&garage.secret));

    let push = |name: &str, system_identifier: u64, fill: u8| {
        let path = dir.path().join(format!("{fill}")).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, segment(system_identifier, fill)).unwrap();
        garage
            .pitr(&cache)
            .args(["wal-push", "--repo", url])
            .arg(&path)
            .output()
            .unwrap()
    };
    let fetch = |name: &str| {
        let to = dir.path().join("fetched");
        let output = garage
            .pitr(&cache)
            .args(["wal-fetch", "--repo", url, name])
            .arg(&to)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        std::fs::read(&to).unwrap()
    };
    let first = push("000000010000000000000001", 42, 1);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(fetch("000000010000000000000001") == segment(42, 1));
    // The same again: success; other bytes: refused, the archived copy kept.
    assert_eq!(
        push("000000010000000000000001", 42, 1).status.code(),
        Some(0)
    );
    let other = push("000000010000000000000001", 42, 9);
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));
    assert!(fetch("000000010000000000000001") == segment(42, 1));
    // Another cluster: refused, both identifiers named.
    let intruder = push("000000010000000000000002", 43, 2);
    assert_eq!(
        intruder.status.code(),
        Some(3),
        "{}",
        text(&intruder.stderr)
    );
    let message = text(&intruder.stderr);
    assert!(
        message.contains("42") && message.contains("43"),
        "{message}"
    );
    // Two pushers of one new name with different bytes at once: the one
    // whose checksum is read back wins; the other is refused, never both
    // told "archived" with the archive holding only one.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| push("000000010000000000000003", 42, 3));
        let b = scope.spawn(|| push("000000010000000000000003", 42, 4));
        (a.join().unwrap(), b.join().unwrap())
    });
    let stored = fetch("000000010000000000000003");
    let winners = [(&a, 3u8), (&b, 4u8)]
        .iter()
        .filter(|(output, _)| output.status.success())
        .map(|(_, fill)| *fill)
        .collect::<Vec<_>>();
    assert!(
        !winners.is_empty(),
        "{}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    for fill in &winners {
        // Exact interleaving can still let both through (init warns of
        // it); what was told "archived" is what the archive holds.
        if winners.len() == 1 {
            assert!(stored == segment(42, *fill), "the winner's bytes are kept");
        }
    }
}
