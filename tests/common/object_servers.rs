//! Real object-store servers for the tests: s3s-fs (S3), Azurite (Azure
//! Blob) and fake-gcs-server (Google Cloud Storage), each started in its
//! own temporary directory on a free 127.0.0.1 port, waited for until it
//! answers, given one bucket (container), and killed by its PID when the
//! guard is dropped (also when a test fails).
//!
//! The programs come from the cache `scripts/object-stores.sh` fills;
//! `make test` passes their paths as `PITR_TEST_S3S_FS`,
//! `PITR_TEST_AZURITE` and `PITR_TEST_FAKE_GCS`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The bucket every server gets.
pub const BUCKET: &str = "pitr-test";
/// S3 credentials s3s-fs is started with (a test server on loopback).
pub const S3_ACCESS_KEY: &str = "pitr-test-access";
pub const S3_SECRET_KEY: &str = "pitr-test-secret-0123456789";
/// Azurite's well-known development account and key (public, in
/// Microsoft's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    S3,
    Azure,
    Gcs,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::S3 => "s3s-fs",
            Kind::Azure => "azurite",
            Kind::Gcs => "fake-gcs",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Kind::S3 => "PITR_TEST_S3S_FS",
            Kind::Azure => "PITR_TEST_AZURITE",
            Kind::Gcs => "PITR_TEST_FAKE_GCS",
        }
    }

    fn cached(self) -> &'static str {
        match self {
            Kind::S3 => "s3s-fs/bin/s3s-fs",
            Kind::Azure => "azurite/node_modules/.bin/azurite-blob",
            Kind::Gcs => "fake-gcs/fake-gcs-server",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Azure => "az",
            Kind::Gcs => "gs",
        }
    }
}

/// The cache of scripts/object-stores.sh (same rule as the script).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PITR_STORE_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if nix::unistd::Uid::effective().is_root() {
        return Some(PathBuf::from("/var/cache/pitr"));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|dir| dir.join("pitr"))
}

/// The server program of `kind`, if installed.
pub fn program(kind: Kind) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(kind.variable()).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = cache_dir()?.join(kind.cached());
    path.is_file().then_some(path)
}

/// Requires the server program of `kind` (skips the test, or fails it
/// under PITR_TEST_STRICT=1, when missing).
pub fn require_server(test: &str, kind: Kind) -> bool {
    super::require(
        test,
        program(kind).is_some(),
        format!(
            "needs the {} server: run `./scripts/object-stores.sh fetch {}` (or set {})",
            kind.name(),
            kind.name(),
            kind.variable()
        ),
    )
}

/// One running server with one bucket; killed when dropped.
pub struct ObjectServer {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    /// Where the server's own output goes, for failures.
    log: PathBuf,
}

impl ObjectServer {
    /// Starts a server of `kind` with the bucket [`BUCKET`]; panics with
    /// the server's output when it does not come up.
    pub fn start(kind: Kind) -> ObjectServer {
        let program =
            program(kind).unwrap_or_else(|| panic!("the {} server is not installed", kind.name()));
        let dir = tempfile::Builder::new()
            .prefix(&format!("pitr-{}-", kind.name()))
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let port = match kind {
            // One port per process: object_store reads Azurite's address
            // from the environment (see `azurite_env_once`).
            Kind::Azure => azurite_port(),
            _ => super::free_port(),
        };
        let log = dir.path().join("server.log");
        let mut command = Command::new(&program);
        match kind {
            Kind::S3 => {
                // A bucket is a directory under the root.
                std::fs::create_dir(data.join(BUCKET)).unwrap();
                command
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                    .arg(&data)
                    // One log line per request, for the tests that count
                    // them (see `requests`).
                    .env("RUST_LOG", "s3s::service=debug");
            }
            Kind::Azure => {
                command
                    .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(&data)
                    // No telemetry: the tests talk to 127.0.0.1 only.
                    .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"]);
            }
            Kind::Gcs => {
                command
                    .args(["-scheme", "http", "-host", "127.0.0.1"])
                    .args(["-port", &port.to_string()])
                    .args(["-backend", "filesystem", "-filesystem-root"])
                    .arg(&data)
                    .args(["-public-host", &format!("127.0.0.1:{port}")])
                    .args(["-external-url", &format!("http://127.0.0.1:{port}")])
                    // One log line per request (see `requests`).
                    .args(["-log-level", "info"]);
            }
        }
        let output = std::fs::File::create(&log).unwrap();
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let server = ObjectServer {
            kind,
            port,
            child,
            dir,
            log,
        };
        server.wait_until_it_answers();
        match kind {
            Kind::S3 => {}
            Kind::Azure => server.create_azure_container(BUCKET),
            Kind::Gcs => server.create_gcs_bucket(BUCKET),
        }
        server
    }

    /// The requests the server has received so far, as `METHOD URI`
    /// (s3s-fs logs each one at debug level, fake-gcs-server at info level
    /// in the Apache format; Azurite is started silent).
    pub fn requests(&self) -> Vec<String> {
        match self.kind {
            Kind::Gcs => self
                .gcs_answers()
                .into_iter()
                .map(|(request, _)| request)
                .collect(),
            _ => self
                .server_output()
                .lines()
                .filter_map(|line| line.split_once("req: Request { method: "))
                .filter_map(|(_, rest)| {
                    let (method, rest) = rest.split_once(", uri: ")?;
                    let (uri, _) = rest.split_once(", version: ")?;
                    Some(format!("{method} {uri}"))
                })
                .collect(),
        }
    }

    /// The requests fake-gcs-server has received so far, as `METHOD URI`,
    /// each with the status it answered (its info-level log line:
    /// `… "PUT /bucket/key HTTP/1.1" 400 …`).
    pub fn gcs_answers(&self) -> Vec<(String, u16)> {
        self.server_output()
            .lines()
            .filter_map(|line| line.split_once("] \\\"").map(|(_, rest)| rest))
            .filter_map(|rest| {
                let (request, rest) = rest.split_once(" HTTP/")?;
                let status = rest
                    .split_once("\\\" ")?
                    .1
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?;
                Some((request.to_string(), status))
            })
            .collect()
    }

    fn server_output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not listen on 127.0.0.1:{} within 60 s; its output:\n{}",
                    self.kind.name(),
                    self.port,
                    self.server_output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        match self.kind {
            Kind::Azure => format!("http://127.0.0.1:{}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The repository URL of `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("{}://{BUCKET}/{prefix}", self.kind.scheme())
    }

    /// The settings (lower-case environment names) that point the driver
    /// at this server.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .filter(|(name, _)| name != "AZURITE_BLOB_STORAGE_URL")
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect()
    }

    /// The environment variables a `pitr` process needs for this server,
    /// as a user would set them.
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self.kind {
            Kind::S3 => vec![
                ("AWS_ENDPOINT_URL", self.endpoint()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ],
            Kind::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
            ],
            Kind::Gcs => vec![
                ("GOOGLE_BASE_URL", self.endpoint()),
                // fake-gcs-server accepts any token. Not GOOGLE_SKIP_SIGNATURE:
                // object_store 0.14.2's GCS builder accepts it but still
                // asks the metadata server (169.254.169.254) for a token.
                ("GOOGLE_BEARER_TOKEN", "pitr-test-token".into()),
                ("GOOGLE_ALLOW_HTTP", "true".into()),
            ],
        };
        pairs
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    /// Sends one HTTP/1.1 request and returns the status and body.
    fn http(&self, request: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, reply)
    }

    fn create_gcs_bucket(&self, bucket: &str) {
        let body = format!("{{\"name\":\"{bucket}\"}}");
        let request = format!(
            "POST /storage/v1/b?project=test HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        let (status, reply) = self.http(&request, body.as_bytes());
        assert!(
            (200..300).contains(&status),
            "fake-gcs-server refused to create the bucket: {reply}"
        );
    }

    /// Uploads an object to fake-gcs-server through its JSON API (the
    /// route it serves; see tests/object_stores.rs for the one it does not).
    pub fn upload_gcs_json(&self, name: &str, bytes: &[u8]) {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let request = format!(
            "POST /upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={encoded} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            bytes.len()
        );
        let (status, reply) = self.http(&request, bytes);
        assert!(
            (200..300).contains(&status),
            "fake-gcs-server refused an upload: {}",
            &reply[..reply.len().min(500)]
        );
    }

    /// Uploads every file below `dir` to `prefix/<its path below dir>`
    /// through the JSON API, one object per file: a repository directory
    /// becomes the same layout in the bucket. Returns the keys uploaded.
    pub fn upload_gcs_tree(&self, dir: &Path, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    pending.push(entry.path());
                    continue;
                }
                let relative = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                let key = format!("{prefix}/{}", relative.to_str().unwrap());
                self.upload_gcs_json(&key, &std::fs::read(entry.path()).unwrap());
                keys.push(key);
            }
        }
        keys.sort();
        keys
    }

    /// Every object under `prefix/` as the JSON API lists it, by name:
    /// size, MD5, CRC32C, generation, metageneration and update time (any
    /// write or metadata change alters one of them).
    pub fn gcs_objects(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        let mut objects = std::collections::BTreeMap::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = format!("prefix={prefix}/");
            if let Some(token) = &page_token {
                query.push_str(&format!("&pageToken={token}"));
            }
            // HTTP/1.0: the reply is not chunked, and ends with the connection.
            let request = format!(
                "GET /storage/v1/b/{BUCKET}/o?{query} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
                self.port
            );
            let (status, reply) = self.http(&request, b"");
            assert_eq!(status, 200, "fake-gcs-server refused a listing: {reply}");
            let body = reply.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            let listing: serde_json::Value = serde_json::from_str(body).unwrap();
            for item in listing["items"].as_array().into_iter().flatten() {
                let facts = [
                    "size",
                    "md5Hash",
                    "crc32c",
                    "generation",
                    "metageneration",
                    "updated",
                ]
                .map(|field| format!("{field}={}", item[field]))
                .join(" ");
                objects.insert(item["name"].as_str().unwrap().to_string(), facts);
            }
            match listing["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => return objects,
            }
        }
    }

    /// Creates a container with a Shared Key request (Azurite refuses
    /// anonymous ones).
    fn create_azure_container(&self, container: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64_decode(AZURITE_KEY);
        let signature = base64_encode(&hmac_sha256(&key, string_to_sign.as_bytes()));
        let request = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        let (status, reply) = self.http(&request, b"");
        assert!(
            (200..300).contains(&status),
            "Azurite refused to create the container: {reply}"
        );
    }

    /// Starts a killed S3 server again on its port, over the same data
    /// (a store that comes back); its log goes on in the same file.
    pub fn revive(&mut self) {
        assert_eq!(self.kind, Kind::S3, "only s3s-fs is revived");
        let program = program(self.kind).unwrap();
        let output = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "s3s::service=debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.wait_until_it_answers();
    }

    /// Where the server logs (each request, on s3s-fs).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kills the server now (a store that goes down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ObjectServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Azurite's port for this test process. object_store takes the emulator's
/// address from `AZURITE_BLOB_STORAGE_URL` (process-wide), so every Azurite
/// of one test process listens on the same port, set once.
fn azurite_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let port = super::free_port();
        std::env::set_var(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{port}"),
        );
        port
    })
}

/// A server shared by the tests of one process that run at the same time
/// (Azurite: one port per process); the last user's drop stops it, and the
/// next test starts a fresh one.
pub fn shared(kind: Kind) -> Arc<ObjectServer> {
    static SHARED: Mutex<Vec<(Kind, Weak<ObjectServer>)>> = Mutex::new(Vec::new());
    let mut servers = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    servers.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(server) = servers
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return server;
    }
    let server = Arc::new(ObjectServer::start(kind));
    servers.push((kind, Arc::downgrade(&server)));
    server
}

/// A unique prefix in the shared bucket for one test.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{test}-{}-{n}", std::process::id())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = BASE64.iter().position(|b| *b == c).unwrap() as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The directory of a server's data, for tests that look at what it stored.
pub fn data_dir(server: &ObjectServer) -> &Path {
    server.dir.path()
}
