//! The object-storage driver: a store is a bucket (S3, Google Cloud
//! Storage) or a container (Azure Blob) and a prefix in it; a key is the
//! object name under that prefix, so the layout is the one on disk.
//!
//! It is written over the `object_store` crate, which is asynchronous; the
//! rest of pitr is not, so the driver owns one small tokio runtime for the
//! process and blocks on it. Every request is bounded by the client's
//! timeout and retried with backoff on 5xx, 429 and timeouts (the crate's
//! retry policy, bounded in total by [`RETRY_BUDGET`]).
//!
//! How the [`StoreWrite`] guarantees are kept without renames:
//!
//! - `create_new` is one conditional PUT (`If-None-Match: *`, GCS's
//!   `ifGenerationMatch=0`) carrying the content's SHA-256 as object
//!   metadata (`sha256`). When the object exists, its stored checksum is
//!   compared (equal: [`Created::AlreadyPresentSame`], else
//!   [`Created::PresentDifferent`]); an object written by other means,
//!   without the checksum, is read back and compared byte for byte. A
//!   conditional create is not retried by the crate after a timeout, so
//!   "already exists" after our own lost reply compares equal, as it must.
//!   On a store that ignores conditional creates (garage; `pitr init`
//!   probes and records it, see `repo::capability`), the store is opened
//!   [`ObjectStorage::looking_before_writing`]: a HEAD, the PUT, and the
//!   stored checksum read back, which catches a writer that replaced the
//!   object but not two whose writes and read-backs interleave exactly.
//! - `write_stream` buffers the first part; a stream that ends within it
//!   is one PUT, a longer one a multipart upload of [`PART_SIZE`] parts,
//!   a few in flight, aborted when the producer fails or the writer is
//!   dropped, so no upload is left open.
//! - `open` never asks for a whole large object in one GET (the client's
//!   timeout covers a whole response): it issues ranged GETs of
//!   [`CHUNK_SIZE`], [`CHUNKS_IN_FLIGHT`] ahead of the reader, and fails if
//!   the object's ETag changes between them. Memory stays bounded by
//!   `(CHUNKS_IN_FLIGHT + 1) * CHUNK_SIZE` per open object.
//! - A group (a backup) is published without a rename: its objects are
//!   uploaded under their final prefix `NAME/` while a marker object
//!   `.pitr-publishing-NAME` sits beside the groups, and the marker is
//!   deleted last. [`StoreRead::list_prefixes`] leaves out every group with
//!   such a marker, so a backup listing never sees a backup half uploaded;
//!   a publish that died leaves its group hidden until `delete_group`
//!   removes it. Deleting a group first writes `.pitr-expiring-NAME`,
//!   which hides it the same way, then deletes its objects, then the
//!   marker. Groups that carry no marker (a `pg_basebackup` output copied
//!   into the bucket with other tools) are listed as they are.
//!
//! Secrets (keys, tokens, SAS signatures) never appear in `Debug`,
//! `Display` or error messages: the store is described by its URL alone,
//! and every error text is scrubbed of the secrets the process was given.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

use super::{
    check_key, check_prefix, Created, Fill, GroupUpload, HiddenGroup, HiddenState, NewObject,
    ObjectInfo, ObjectReader, ObjectSink, Staging, StoreRead, StoreWrite, Version, WriteError,
};

/// Size of one ranged GET of [`StoreRead::open`]: a compressed WAL
/// segment is one request, and a slow link still moves it within the
/// client's timeout. Each GET is held whole until its reader has consumed
/// it, so this times `CHUNKS_IN_FLIGHT + 1` is what an open object costs:
/// 32 MiB here, reached once an object is that large (a pgbench scale-50
/// backup), so a restore's memory is the same at any larger size. With 16
/// MiB GETs it was 64 MiB, reached only past scale 100: 53 MB at scale
/// 50, 85 MB at 100 (bench/object_restore_rss.sh).
pub const CHUNK_SIZE: u64 = 8 << 20;
/// Ranged GETs of one open object in flight ahead of its reader: three
/// connections downloading at once, which is what hides a real store's
/// latency and per-connection bandwidth.
pub const CHUNKS_IN_FLIGHT: usize = 3;
// The memory an open object may hold (issue 14: a restore's peak RSS under
// 200 MB at any database size, with the decompression and write buffers
// and the WAL being prefetched beside it): raising either constant past it
// is a decision to measure again with bench/object_restore_rss.sh.
const _: () = assert!((CHUNKS_IN_FLIGHT as u64 + 1) * CHUNK_SIZE <= 32 << 20);
/// Size of one part of a multipart upload (S3 needs at least 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight.
pub const PARTS_IN_FLIGHT: usize = 4;
/// One request, connect to end of body; a chunk or part must fit in it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to the store.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// All retries of one request together: a store that stays down fails the
/// command within this, never hangs it.
pub const RETRY_BUDGET: Duration = Duration::from_secs(120);
/// The object metadata holding the SHA-256 of an object's content.
const CHECKSUM_METADATA: &str = "sha256";
/// Marker beside the groups: the group `NAME` is being published.
pub const PUBLISHING_PREFIX: &str = ".pitr-publishing-";
/// Marker beside the groups: the group `NAME` is being deleted.
pub const EXPIRING_PREFIX: &str = ".pitr-expiring-";

/// Which service a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `s3://BUCKET/PREFIX`: Amazon S3 and S3-compatible stores.
    S3,
    /// `az://CONTAINER/PREFIX`: Azure Blob Storage.
    Azure,
    /// `gs://BUCKET/PREFIX`: Google Cloud Storage.
    Gcs,
}

impl Service {
    fn scheme(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Azure => "az",
            Service::Gcs => "gs",
        }
    }

    /// How the names of this service's settings begin (its environment
    /// variables', lower-cased).
    fn settings_prefix(self) -> &'static str {
        match self {
            Service::S3 => "aws_",
            Service::Azure => "azure_",
            Service::Gcs => "google_",
        }
    }
}

/// A repository location in object storage: service, bucket (container)
/// and a prefix of `/`-separated parts (possibly none).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectUrl {
    #[serde(skip)]
    pub service: Service,
    pub bucket: String,
    pub prefix: String,
}

impl ObjectUrl {
    /// Parses `s3://`, `az://` and `gs://` URLs; `None` for anything
    /// else (a directory), an error for a malformed URL of those schemes.
    pub fn parse(text: &str) -> Option<anyhow::Result<ObjectUrl>> {
        let (scheme, rest) = text.split_once("://")?;
        let service = match scheme {
            "s3" => Service::S3,
            "az" | "azure" => Service::Azure,
            "gs" => Service::Gcs,
            _ => return None,
        };
        Some(ObjectUrl::parse_parts(service, rest, text))
    }

    fn parse_parts(service: Service, rest: &str, text: &str) -> anyhow::Result<ObjectUrl> {
        if rest.contains(['?', '#', '@']) {
            anyhow::bail!(
                "`{text}` is not a repository URL: write {}://BUCKET/PREFIX, with credentials in the environment or the configuration file, never in the URL",
                service.scheme()
            );
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!(
                "`{text}` names no bucket: write {}://BUCKET/PREFIX",
                service.scheme()
            );
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            check_key(prefix).map_err(|_| {
                anyhow::anyhow!(
                    "`{text}` has an invalid prefix `{prefix}`: use `/`-separated names without empty, `.` or `..` parts"
                )
            })?;
        }
        Ok(ObjectUrl {
            service,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The location `part` below this one (`base`, `wal`).
    pub fn join(&self, part: &str) -> ObjectUrl {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}/{part}", self.prefix)
        };
        ObjectUrl {
            prefix,
            ..self.clone()
        }
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.service.scheme(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// The one runtime the driver blocks on. Two worker threads: the ranged
/// GETs ahead of a reader and the parts of an upload progress while the
/// calling thread decompresses or produces the next bytes.
fn runtime() -> io::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pitr-object-store")
        .enable_all()
        .build()?;
    // Another thread may have won the race: its runtime is the one.
    let _ = RUNTIME.set(built);
    RUNTIME
        .get()
        .ok_or_else(|| io::Error::other("the object-store runtime could not be kept"))
}

/// Values that must never be shown: keys and tokens from the environment.
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// The secret values among `settings`: keys, tokens, signatures.
    fn among(settings: &[(String, String)]) -> Secrets {
        const SECRET_WORDS: [&str; 6] = ["secret", "token", "key", "password", "sas", "sig"];
        let values = settings
            .iter()
            .filter(|(name, _)| SECRET_WORDS.iter().any(|word| name.contains(word)))
            .map(|(_, value)| value.clone())
            // Short values (a flag like `true`) are no secret, and
            // replacing them would garble every message.
            .filter(|value| value.len() >= 8)
            .collect();
        Secrets(values)
    }

    /// `text` with every secret, and every URL signature (`sig=`), replaced.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        let mut scrubbed = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find("sig=") {
            scrubbed.push_str(&rest[..at + 4]);
            scrubbed.push_str("<redacted>");
            let tail = &rest[at + 4..];
            let end = tail
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == ')')
                .unwrap_or(tail.len());
            rest = &tail[end..];
        }
        scrubbed.push_str(rest);
        scrubbed
    }
}

/// A bucket or container and a prefix in it, used as a store.
pub struct ObjectStorage {
    url: ObjectUrl,
    /// The endpoint, when not the service's own (an S3-compatible store,
    /// an emulator): part of the identity and of messages.
    endpoint: Option<String>,
    store: Arc<dyn ObjectStore>,
    secrets: Secrets,
    /// Whether the store refuses to replace an object on a conditional
    /// create; when it does not, `create_new` looks, writes and reads back.
    conditional_create: bool,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL alone: the client inside holds credentials.
        f.debug_struct("ObjectStorage")
            .field("url", &self.url.to_string())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Client settings pitr imposes before the environment's own: bounded
/// requests, a bounded retry budget.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
}

/// The retry budget: [`RETRY_BUDGET`], or `PITR_OBJECT_RETRY_SECONDS`
/// (shorter for a restore_command that should give up sooner, or for tests
/// of a store that is down).
fn retry_budget() -> Duration {
    std::env::var("PITR_OBJECT_RETRY_SECONDS")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(RETRY_BUDGET)
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        // The time budget decides, not a count: ten retries of a jittered
        // backoff were spent in ~15 s, so a store back after 20 s failed a
        // wal-fetch (stopping recovery) well inside the budget.
        max_retries: 1000,
        retry_timeout: retry_budget(),
    }
}

/// The standard environment variables of the three services (`AWS_*`,
/// `AZURE_*`, `GOOGLE_*`), lower-cased, as the crate's own `from_env`
/// reads them; [`ObjectStorage::open_with`] applies them after pitr's
/// defaults.
pub fn settings_from_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| {
            ["AWS_", "AZURE_", "GOOGLE_"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect()
}

/// A service's builder given those of the service's `settings` that it
/// knows, in order. Returns the builder and the endpoint the settings name
/// (`endpoint_key`), if any. The three services' builders and keys are
/// different types with the same methods, hence `with_config`.
fn configured<B, K: FromStr + PartialEq>(
    mut builder: B,
    settings: &[(&str, &str)],
    endpoint_key: K,
    with_config: impl Fn(B, K, &str) -> B,
) -> (B, Option<String>) {
    let mut endpoint = None;
    for (name, value) in settings {
        if let Ok(key) = name.parse::<K>() {
            if key == endpoint_key {
                endpoint = Some(value.to_string());
            }
            builder = with_config(builder, key, value);
        }
    }
    (builder, endpoint)
}

impl ObjectStorage {
    /// The store at `url`, configured from the standard environment
    /// variables of its service (`AWS_*`, `AZURE_*`, `GOOGLE_*`; see the
    /// README), which override pitr's defaults. Nothing is contacted yet.
    pub fn open(url: &ObjectUrl) -> anyhow::Result<ObjectStorage> {
        ObjectStorage::open_with(url, &settings_from_env())
    }

    /// The store at `url` configured by `settings`: lower-case names as the
    /// environment variables have them (`aws_endpoint_url`,
    /// `azure_storage_account_key`, `google_base_url`, ...), applied in
    /// order after pitr's defaults.
    pub fn open_with(
        url: &ObjectUrl,
        settings: &[(String, String)],
    ) -> anyhow::Result<ObjectStorage> {
        let secrets = Secrets::among(settings);
        // Each service reads its own settings only (`aws_*`, `azure_*`, ...).
        let own: Vec<(&str, &str)> = settings
            .iter()
            .filter(|(name, _)| name.starts_with(url.service.settings_prefix()))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        // The arms look alike but stay apart: each service's builder and
        // keys are their own types (object_store has no trait over them),
        // and each has its own extra (Azurite's URL, GCS's service account).
        let (store, endpoint): (Arc<dyn ObjectStore>, Option<String>) = match url.service {
            Service::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key};
                let builder = AmazonS3Builder::new()
                    .with_client_options(client_options())
                    .with_retry(retry_config());
                let (builder, endpoint) =
                    configured(builder, &own, Key::Endpoint, |b, k, v| b.with_config(k, v));
                let store = builder
                    .with_bucket_name(&url.bucket)
                    .build()
                    .map_err(|e| anyhow::anyhow!(secrets.scrub(&e.to_string())))?;
                (Arc::new(store), endpoint)
            }
            Service::Azure => {
                use object_store::azure::{AzureConfigKey as Key, MicrosoftAzureBuilder};
                let builder = MicrosoftAzureBuilder::new()
                    .with_client_options(client_options())
                    .with_retry(retry_config());
                let (builder, endpoint) =
                    configured(builder, &own, Key::Endpoint, |b, k, v| b.with_config(k, v));
                // Azurite's URL unless the settings name an endpoint.
                let endpoint = endpoint.or_else(|| std::env::var("AZURITE_BLOB_STORAGE_URL").ok());
                let store = builder
                    .with_container_name(&url.bucket)
                    .build()
                    .map_err(|e| anyhow::anyhow!(secrets.scrub(&e.to_string())))?;
                (Arc::new(store), endpoint)
            }
            Service::Gcs => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as Key};
                let mut builder = GoogleCloudStorageBuilder::new()
                    .with_client_options(client_options())
                    .with_retry(retry_config());
                if let Ok(path) = std::env::var("SERVICE_ACCOUNT") {
                    builder = builder.with_service_account_path(path);
                }
                let (builder, endpoint) =
                    configured(builder, &own, Key::BaseUrl, |b, k, v| b.with_config(k, v));
                let store = builder
                    .with_bucket_name(&url.bucket)
                    .build()
                    .map_err(|e| anyhow::anyhow!(secrets.scrub(&e.to_string())))?;
                (Arc::new(store), endpoint)
            }
        };
        let store: Arc<dyn ObjectStore> = if url.prefix.is_empty() {
            store
        } else {
            let prefix = ObjectPath::parse(&url.prefix)
                .with_context(|| format!("`{url}` has an invalid prefix"))?;
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(ObjectStorage {
            url: url.clone(),
            endpoint,
            store,
            secrets,
            conditional_create: true,
        })
    }

    /// The same store, for one that ignores conditional creates (garage,
    /// as `pitr init` found): `create_new` then looks for the object,
    /// writes it, and reads its checksum back.
    pub fn looking_before_writing(self) -> ObjectStorage {
        ObjectStorage {
            conditional_create: false,
            ..self
        }
    }

    pub fn url(&self) -> &ObjectUrl {
        &self.url
    }

    fn path(&self, key: &str) -> io::Result<ObjectPath> {
        check_key(key)?;
        ObjectPath::parse(key).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{key}` is not a valid object name: {error}"),
            )
        })
    }

    fn prefix_path(&self, prefix: &str) -> io::Result<Option<ObjectPath>> {
        check_prefix(prefix)?;
        match prefix.strip_suffix('/') {
            Some(inner) => self.path(inner).map(Some),
            None => Ok(None),
        }
    }

    /// Runs one operation of the client to its end on the driver's runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> io::Result<F::Output> {
        Ok(runtime()?.block_on(future))
    }

    /// An error of the client as an `io::Error` naming `what`, its kind
    /// kept (`NotFound`, `AlreadyExists`, `PermissionDenied`) and its text
    /// scrubbed of secrets.
    fn error(&self, what: &str, error: object_store::Error) -> io::Error {
        let kind = match &error {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        io::Error::new(kind, format!("{what}: {}", self.secrets.scrub(&text)))
    }

    /// What a listing or a HEAD says of an object, in the same terms from
    /// both: listings carry milliseconds and HEAD's `Last-Modified` whole
    /// seconds, so the time is kept to the second.
    fn info(&self, meta: ObjectMeta) -> ObjectInfo {
        let version = match &meta.e_tag {
            // Azure quotes the ETag in a HEAD and not in a listing.
            Some(tag) => tag.trim_matches('"').to_string(),
            None => meta
                .last_modified
                .timestamp_nanos_opt()
                .unwrap_or_default()
                .to_string(),
        };
        let seconds = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
        ObjectInfo {
            key: meta.location.as_ref().to_string(),
            size: meta.size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            version: Version(version),
        }
    }

    /// Listed objects as [`ObjectInfo`]s. The services list ETags; a server
    /// that does not (s3s-fs) gets one HEAD per object, so that versions
    /// from a listing and from `stat` agree.
    fn listed(&self, metas: Vec<ObjectMeta>) -> io::Result<Vec<ObjectInfo>> {
        metas
            .into_iter()
            .map(|meta| {
                if meta.e_tag.is_some() {
                    return Ok(self.info(meta));
                }
                let key = meta.location.as_ref().to_string();
                Ok(self.stat(&key)?.unwrap_or_else(|| self.info(meta)))
            })
            .collect()
    }

    /// All objects under `prefix` (recursively), for deleting a group.
    fn list_all(&self, prefix: &ObjectPath) -> io::Result<Vec<ObjectMeta>> {
        let listing = self.store.list(Some(prefix));
        self.block_on(listing.try_collect::<Vec<_>>())?
            .map_err(|e| {
                self.error(
                    &format!("cannot list {}", self.describe(prefix.as_ref())),
                    e,
                )
            })
    }

    /// Uploads `fill`'s bytes to `path`, replacing what is there: one PUT
    /// for what fits in a part, else a multipart upload.
    fn upload(&self, key: &str, fill: Fill) -> Result<(), WriteError> {
        let path = self.path(key).map_err(|e| WriteError::Other(e.into()))?;
        let mut writer = UploadWriter::new(self, path);
        fill(&mut writer)
            .and_then(|()| writer.flush())
            .map_err(WriteError::Write)?;
        writer.complete().map_err(WriteError::Write)
    }

    fn put_marker(&self, key: &str, mode: PutMode) -> io::Result<()> {
        let path = self.path(key)?;
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.block_on(
            self.store
                .put_opts(&path, PutPayload::from_static(b""), options),
        )?
        .map(|_| ())
        .map_err(|e| self.error(&format!("cannot write {}", self.describe(key)), e))
    }

    /// `create_new` on a store that ignores conditional creates: look (a
    /// HEAD; an existing object is compared as usual), write, and read the
    /// stored checksum back. Another writer that replaced ours between the
    /// write and the read back is caught (its checksum is not ours: the
    /// push fails and PostgreSQL keeps its copy); two writers whose write
    /// and read back interleave exactly are not, which is why `init`
    /// warns about such stores.
    fn create_looking_first(
        &self,
        key: &str,
        path: &ObjectPath,
        bytes: &[u8],
        checksum: &str,
        attributes: Attributes,
    ) -> Result<Created, WriteError> {
        if self
            .stat(key)
            .map_err(|e| WriteError::Other(e.into()))?
            .is_some()
        {
            return self.compare_existing(key, path, bytes, checksum);
        }
        let options = PutOptions {
            mode: PutMode::Overwrite,
            attributes,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::from(bytes.to_vec()));
        self.block_on(self.store.put_opts(path, payload, options))
            .map_err(|e| WriteError::Other(e.into()))?
            .map_err(|e| {
                WriteError::Other(
                    self.error(&format!("cannot create {}", self.describe(key)), e)
                        .into(),
                )
            })?;
        match self.compare_existing(key, path, bytes, checksum)? {
            Created::AlreadyPresentSame => Ok(Created::Created),
            other => Ok(other),
        }
    }

    /// Compares `bytes` with the object `path` that already exists: by the
    /// checksum stored with it, else by reading it back.
    fn compare_existing(
        &self,
        key: &str,
        path: &ObjectPath,
        bytes: &[u8],
        checksum: &str,
    ) -> Result<Created, WriteError> {
        let what = || format!("cannot read the existing {}", self.describe(key));
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let head = self
            .block_on(self.store.get_opts(path, options))
            .map_err(|e| WriteError::Other(e.into()))?
            .map_err(|e| WriteError::Other(self.error(&what(), e).into()))?;
        if head.meta.size != bytes.len() as u64 {
            return Ok(Created::PresentDifferent);
        }
        let stored = head
            .attributes
            .get(&Attribute::Metadata(CHECKSUM_METADATA.into()))
            .map(|value| value.as_ref().to_string());
        if let Some(stored) = stored {
            return Ok(if stored.eq_ignore_ascii_case(checksum) {
                Created::AlreadyPresentSame
            } else {
                Created::PresentDifferent
            });
        }
        // Written by other means, without our checksum: compare the bytes.
        let mut theirs = Vec::with_capacity(bytes.len());
        self.open(key)
            .and_then(|mut reader| reader.read_to_end(&mut theirs))
            .map_err(|e| WriteError::Other(anyhow::Error::new(e).context(what())))?;
        Ok(if theirs == bytes {
            Created::AlreadyPresentSame
        } else {
            Created::PresentDifferent
        })
    }
}

impl StoreRead for ObjectStorage {
    fn describe(&self, key: &str) -> String {
        let base = self.url.to_string();
        let key = key.trim_end_matches('/');
        if key.is_empty() {
            base
        } else {
            format!("{base}/{key}")
        }
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> io::Result<Vec<ObjectInfo>> {
        let dir = self.prefix_path(prefix)?;
        let what = || format!("cannot list {}", self.describe(prefix));
        let metas: Vec<ObjectMeta> = match start_after {
            // One delimiter listing: objects directly under the prefix.
            None => {
                self.block_on(self.store.list_with_delimiter(dir.as_ref()))?
                    .map_err(|e| self.error(&what(), e))?
                    .objects
            }
            // S3 `start-after` (and its equivalents): pages begin at the
            // offset; deeper objects are dropped here.
            Some(after) => {
                let offset = ObjectPath::from(after);
                let listing = self.store.list_with_offset(dir.as_ref(), &offset);
                self.block_on(listing.try_collect::<Vec<_>>())?
                    .map_err(|e| self.error(&what(), e))?
                    .into_iter()
                    .filter(|meta| {
                        let key = meta.location.as_ref();
                        key.strip_prefix(prefix)
                            .is_some_and(|name| !name.contains('/'))
                            && key > after
                    })
                    .collect()
            }
        };
        let mut objects = self.listed(metas)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.prefix_path(prefix)?;
        let listing = self
            .block_on(self.store.list_with_delimiter(dir.as_ref()))?
            .map_err(|e| self.error(&format!("cannot list {}", self.describe(prefix)), e))?;
        // Groups being published or deleted have a marker beside them.
        let hidden: Vec<&str> = listing
            .objects
            .iter()
            .filter_map(|meta| meta.location.filename())
            .filter_map(|name| {
                name.strip_prefix(PUBLISHING_PREFIX)
                    .or_else(|| name.strip_prefix(EXPIRING_PREFIX))
            })
            .collect();
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|path| path.filename())
            .filter(|name| !hidden.contains(name))
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    fn hidden_groups(&self) -> io::Result<Vec<HiddenGroup>> {
        // The markers are objects at the top; a group hidden by both (an
        // unfinished backup that expire began to delete) is expiring.
        let mut groups: Vec<HiddenGroup> = Vec::new();
        for marker in self.list("", None)? {
            let (name, state) = if let Some(name) = marker.key.strip_prefix(EXPIRING_PREFIX) {
                (name, HiddenState::Expiring)
            } else if let Some(name) = marker.key.strip_prefix(PUBLISHING_PREFIX) {
                (name, HiddenState::Unfinished)
            } else {
                continue;
            };
            match groups.iter_mut().find(|group| group.name == name) {
                Some(group) if state == HiddenState::Expiring => group.state = state,
                Some(_) => {}
                None => groups.push(HiddenGroup {
                    name: name.to_string(),
                    state,
                    since: marker.modified,
                }),
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(groups)
    }

    fn stat(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match self.block_on(self.store.head(&path))? {
            Ok(meta) => Ok(Some(self.info(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.error(&format!("cannot look up {}", self.describe(key)), error)),
        }
    }

    fn existing_of(&self, keys: &[String]) -> io::Result<Vec<ObjectInfo>> {
        let (Some(first), Some(last)) = (keys.iter().min(), keys.iter().max()) else {
            return Ok(Vec::new());
        };
        for key in keys {
            check_key(key)?;
        }
        // `start-after` is exclusive: start just before the smallest key
        // (at its stem less one character; the few names between are
        // skipped here) and stop at the first name past the largest, so
        // the listing is one page, one request, however large the archive.
        let Some(offset) = first
            .char_indices()
            .last()
            .map(|(at, _)| &first[..at])
            .filter(|offset| !offset.is_empty())
        else {
            return keys
                .iter()
                .filter_map(|key| self.stat(key).transpose())
                .collect();
        };
        let offset = ObjectPath::from(offset);
        let found = self.block_on(async {
            let mut listing = self.store.list_with_offset(None, &offset);
            let mut found = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                let key = meta.location.as_ref();
                if key > last.as_str() {
                    break;
                }
                if keys.iter().any(|wanted| wanted == key) {
                    found.push(meta);
                }
            }
            Ok::<_, object_store::Error>(found)
        })?;
        let found =
            found.map_err(|e| self.error(&format!("cannot list {}", self.describe(first)), e))?;
        let mut objects = self.listed(found)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn open(&self, key: &str) -> io::Result<ObjectReader> {
        let path = self.path(key)?;
        let described = self.describe(key);
        // The first chunk's reply also says how large the object is.
        let first = self.block_on(fetch_chunk(self.store.clone(), path.clone(), 0..CHUNK_SIZE))?;
        let (bytes, meta) = match first {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{described} does not exist"),
                ))
            }
            // An empty object has no byte 0 to ask for (416): look it up.
            Err(error) => match self.stat(key)? {
                Some(info) if info.size == 0 => return Ok(Box::new(io::empty())),
                _ => return Err(self.error(&format!("cannot read {described}"), error)),
            },
        };
        Ok(Box::new(ChunkedReader {
            store: self.store.clone(),
            path,
            described,
            size: meta.size,
            e_tag: meta.e_tag,
            next: (bytes.len() as u64).min(meta.size),
            pending: VecDeque::new(),
            current: bytes,
            secrets: self.secrets.clone(),
        }))
    }

    fn open_range(&self, key: &str, range: Range<u64>) -> io::Result<ObjectReader> {
        let path = self.path(key)?;
        if range.start >= range.end {
            return Ok(Box::new(io::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let got = self.block_on(async {
            let result = self.store.get_opts(&path, options).await?;
            result.bytes().await
        })?;
        match got {
            Ok(bytes) => Ok(Box::new(io::Cursor::new(bytes))),
            Err(error) => {
                let what = format!("cannot read {}", self.describe(key));
                // A range starting at or past the end is refused by the
                // server (416); the contract gives what there is: nothing.
                if !matches!(error, object_store::Error::NotFound { .. }) {
                    if let Some(info) = self.stat(key)? {
                        if range.start >= info.size {
                            return Ok(Box::new(io::empty()));
                        }
                    }
                }
                Err(self.error(&what, error))
            }
        }
    }

    fn identity(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.url),
            None => self.url.to_string(),
        }
    }

    fn local_dir(&self, _prefix: &str) -> Option<PathBuf> {
        None
    }
}

/// One ranged GET, whole: its bytes and what the reply said of the object.
async fn fetch_chunk(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    range: Range<u64>,
) -> object_store::Result<(Bytes, ObjectMeta)> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    let result = store.get_opts(&path, options).await?;
    let meta = result.meta.clone();
    let bytes = result.bytes().await?;
    Ok((bytes, meta))
}

/// A whole object read as ranged GETs of [`CHUNK_SIZE`], a few in flight
/// on the runtime while the caller consumes the current one.
struct ChunkedReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    described: String,
    size: u64,
    /// The ETag of the first reply: every chunk must come from the same
    /// content.
    e_tag: Option<String>,
    /// The next offset to ask for.
    next: u64,
    pending: VecDeque<tokio::task::JoinHandle<object_store::Result<(Bytes, ObjectMeta)>>>,
    current: Bytes,
    secrets: Secrets,
}

impl ChunkedReader {
    fn top_up(&mut self, runtime: &Runtime) {
        while self.pending.len() < CHUNKS_IN_FLIGHT && self.next < self.size {
            let end = (self.next + CHUNK_SIZE).min(self.size);
            let task = fetch_chunk(self.store.clone(), self.path.clone(), self.next..end);
            self.pending.push_back(runtime.spawn(task));
            self.next = end;
        }
    }
}

impl Read for ChunkedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let runtime = runtime()?;
            self.top_up(runtime);
            let Some(task) = self.pending.pop_front() else {
                return Ok(0);
            };
            let (bytes, meta) = runtime
                .block_on(task)
                .map_err(|e| io::Error::other(format!("cannot read {}: {e}", self.described)))?
                .map_err(|e| {
                    io::Error::other(format!(
                        "cannot read {}: {}",
                        self.described,
                        self.secrets.scrub(&e.to_string())
                    ))
                })?;
            if meta.e_tag != self.e_tag {
                return Err(io::Error::other(format!(
                    "{} changed while it was being read; read it again",
                    self.described
                )));
            }
            self.current = bytes;
            self.top_up(runtime);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for ChunkedReader {
    fn drop(&mut self) {
        for task in &self.pending {
            task.abort();
        }
    }
}

/// The writer `write_stream` and `publish` fill: the first part buffered,
/// then a multipart upload with a few parts in flight (back pressure on
/// the producer), aborted unless finished.
struct UploadWriter<'a> {
    storage: &'a ObjectStorage,
    path: ObjectPath,
    buffer: Vec<u8>,
    multipart: Option<WriteMultipart>,
}

impl<'a> UploadWriter<'a> {
    fn new(storage: &'a ObjectStorage, path: ObjectPath) -> UploadWriter<'a> {
        UploadWriter {
            storage,
            path,
            buffer: Vec::new(),
            multipart: None,
        }
    }

    fn io_error(&self, what: &str, error: object_store::Error) -> io::Error {
        self.storage.error(
            &format!(
                "cannot {what} {}",
                self.storage.describe(self.path.as_ref())
            ),
            error,
        )
    }

    /// Stores what was written; durable when it returns.
    fn complete(mut self) -> io::Result<()> {
        let runtime = runtime()?;
        match self.multipart.take() {
            None => {
                let payload = PutPayload::from(std::mem::take(&mut self.buffer));
                runtime
                    .block_on(self.storage.store.put(&self.path, payload))
                    .map(|_| ())
                    .map_err(|e| self.io_error("write", e))
            }
            Some(multipart) => runtime
                .block_on(multipart.finish())
                .map(|_| ())
                .map_err(|e| self.io_error("complete the upload of", e)),
        }
    }
}

impl Write for UploadWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let runtime = runtime()?;
        if self.multipart.is_none() {
            self.buffer.extend_from_slice(buf);
            if self.buffer.len() < PART_SIZE {
                return Ok(buf.len());
            }
            let upload = runtime
                .block_on(self.storage.store.put_multipart(&self.path))
                .map_err(|e| self.io_error("start the upload of", e))?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let _context = runtime.enter();
            multipart.put(Bytes::from(std::mem::take(&mut self.buffer)));
            self.multipart = Some(multipart);
            return Ok(buf.len());
        }
        if let Some(multipart) = self.multipart.as_mut() {
            // Ctrl-C: the upload stops at a part boundary and is aborted
            // (the writer's drop), so none is left open on the store.
            interrupted()?;
            runtime
                .block_on(multipart.wait_for_capacity(PARTS_IN_FLIGHT))
                .map_err(|e| {
                    self.storage.error(
                        &format!(
                            "cannot upload a part of {}",
                            self.storage.describe(self.path.as_ref())
                        ),
                        e,
                    )
                })?;
            let _context = runtime.enter();
            multipart.write(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadWriter<'_> {
    fn drop(&mut self) {
        // Not finished (the producer failed, or we are unwinding): no
        // multipart upload is left open on the store.
        if let (Some(multipart), Ok(runtime)) = (self.multipart.take(), runtime()) {
            let _ = runtime.block_on(multipart.abort());
        }
    }
}

impl ObjectSink for UploadWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).complete()
    }
}

/// A group being uploaded under its final name while its publishing
/// marker hides it; see the module's documentation.
struct ObjectGroup<'a> {
    storage: &'a ObjectStorage,
    name: String,
    marker: String,
    published: bool,
}

impl GroupUpload for ObjectGroup<'_> {
    fn object(&self, key: &str) -> io::Result<Box<dyn ObjectSink + '_>> {
        check_key(key)?;
        let path = self.storage.path(&format!("{}/{key}", self.name))?;
        Ok(Box::new(UploadWriter::new(self.storage, path)))
    }

    fn publish(mut self: Box<Self>) -> io::Result<()> {
        // The group appears, whole.
        self.storage.delete(&[&self.marker])?;
        self.published = true;
        Ok(())
    }
}

impl Drop for ObjectGroup<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // Half uploaded (the producer failed, Ctrl-C): hidden by the
        // marker; delete what was stored, then the marker. What cannot be
        // deleted stays hidden until `delete_group` removes it.
        if let Ok(path) = self.storage.path(&self.name) {
            if let Ok(objects) = self.storage.list_all(&path) {
                let _ = self
                    .storage
                    .delete_paths(objects.into_iter().map(|m| m.location).collect());
            }
        }
        let _ = self.storage.delete(&[&self.marker]);
    }
}

impl StoreWrite for ObjectStorage {
    fn reader(&self) -> &dyn StoreRead {
        self
    }

    fn create_new(
        &self,
        key: &str,
        _options: &NewObject,
        fill: Fill,
    ) -> Result<Created, WriteError> {
        let path = self.path(key).map_err(|e| WriteError::Other(e.into()))?;
        // Objects created this way are small (a WAL segment, a label):
        // held whole, so a failing producer uploads nothing.
        let mut bytes = Vec::new();
        fill(&mut bytes).map_err(WriteError::Write)?;
        let checksum = hex(&Sha256::digest(&bytes));
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(CHECKSUM_METADATA.into()),
            AttributeValue::from(checksum.clone()),
        );
        if !self.conditional_create {
            return self.create_looking_first(key, &path, &bytes, &checksum, attributes);
        }
        let options = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::from(bytes.clone()));
        let put = self
            .block_on(self.store.put_opts(&path, payload, options))
            .map_err(|e| WriteError::Other(e.into()))?;
        match put {
            Ok(_) => Ok(Created::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                self.compare_existing(key, &path, &bytes, &checksum)
            }
            Err(error) => Err(WriteError::Other(
                self.error(&format!("cannot create {}", self.describe(key)), error)
                    .into(),
            )),
        }
    }

    fn write_stream(&self, key: &str, fill: Fill) -> Result<ObjectInfo, WriteError> {
        self.upload(key, fill)?;
        self.stat(key)
            .map_err(|e| WriteError::Other(e.into()))?
            .ok_or_else(|| {
                WriteError::Other(anyhow::anyhow!(
                    "{} is missing right after it was written",
                    self.describe(key)
                ))
            })
    }

    fn sync(&self, _keys: &[&str]) -> io::Result<()> {
        // An acknowledged PUT is durable on an object store.
        Ok(())
    }

    fn delete(&self, keys: &[&str]) -> io::Result<()> {
        let paths = keys
            .iter()
            .map(|key| self.path(key))
            .collect::<io::Result<Vec<_>>>()?;
        self.delete_paths(paths)
    }

    fn stage(&self, hint: &str) -> io::Result<Staging> {
        // Local: programs (pg_basebackup) write a backup there; `publish`
        // uploads it.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{hint}-"))
            .tempdir()?;
        Ok(Staging::new(dir))
    }

    fn publish(&self, staging: Staging, prefix: &str) -> io::Result<()> {
        let group = self.open_group(prefix.trim_end_matches('/'))?;
        // On failure the group is dropped unpublished: nothing is left in
        // the store, and `staging` is dropped, which deletes the local copy.
        self.upload_staged(&group, &staging)?;
        Box::new(group).publish()?;
        // Uploaded: the local copy goes (dropping it deletes it; a failure
        // to delete a temporary directory does not undo a published backup).
        drop(staging);
        Ok(())
    }

    fn begin_group(&self, name: &str) -> io::Result<Option<Box<dyn GroupUpload + '_>>> {
        Ok(Some(Box::new(self.open_group(name)?)))
    }

    fn delete_group(&self, prefix: &str) -> anyhow::Result<()> {
        let name = prefix.trim_end_matches('/');
        let path = self.path(name)?;
        let objects = self.list_all(&path)?;
        let marker = format!("{EXPIRING_PREFIX}{name}");
        let publishing = format!("{PUBLISHING_PREFIX}{name}");
        if objects.is_empty() {
            // A writer or a delete that died before (or after) its first
            // object left only its marker: removing that is the whole job.
            if self.stat(&marker)?.is_some() || self.stat(&publishing)?.is_some() {
                self.delete(&[&marker, &publishing])?;
                return Ok(());
            }
            anyhow::bail!("{} holds nothing to delete", self.describe(name));
        }
        self.put_marker(&marker, PutMode::Overwrite)
            .with_context(|| format!("cannot hide {} before deleting it", self.describe(name)))?;
        self.delete_paths(objects.into_iter().map(|m| m.location).collect())
            .with_context(|| {
                format!(
                    "cannot delete {} (it is already hidden from pitr by {}; run the command again)",
                    self.describe(name),
                    self.describe(&marker)
                )
            })?;
        self.delete(&[&marker, &publishing])?;
        Ok(())
    }
}

impl ObjectStorage {
    fn delete_paths(&self, paths: Vec<ObjectPath>) -> io::Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let locations = stream::iter(paths.into_iter().map(Ok)).boxed();
        let results: Vec<object_store::Result<ObjectPath>> =
            self.block_on(self.store.delete_stream(locations).collect())?;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(self.error("cannot delete", error)),
            }
        }
        Ok(())
    }

    /// Starts the group `name`: its marker, a conditional create (one
    /// publisher per name), then a check that no group of that name exists.
    fn open_group(&self, name: &str) -> io::Result<ObjectGroup<'_>> {
        check_key(name)?;
        let marker = format!("{PUBLISHING_PREFIX}{name}");
        self.put_marker(&marker, PutMode::Create).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is already being published", self.describe(name)),
                )
            } else {
                e
            }
        })?;
        let existing = self.path(name).and_then(|path| self.list_all(&path));
        match existing {
            Ok(objects) if objects.is_empty() => Ok(ObjectGroup {
                storage: self,
                name: name.to_string(),
                marker,
                published: false,
            }),
            // Someone else's group, or no way to tell: leave it, remove
            // only our marker.
            Ok(_) => {
                let _ = self.delete(&[&marker]);
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", self.describe(name)),
                ))
            }
            Err(error) => {
                let _ = self.delete(&[&marker]);
                Err(error)
            }
        }
    }

    /// Uploads the staged files into `group`.
    fn upload_staged(&self, group: &ObjectGroup, staging: &Staging) -> io::Result<()> {
        // The staging area is a local directory, read through the posix
        // driver like any other store.
        let local = super::posix::Posix::new(staging.path());
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            for prefix in local.list_prefixes(&dir)? {
                pending.push(format!("{dir}{prefix}/"));
            }
            for object in local.list(&dir, None)? {
                interrupted()?;
                let mut source = local.open(&object.key)?;
                let mut sink = group.object(&object.key)?;
                io::copy(&mut source, &mut sink)?;
                sink.finish()?;
            }
        }
        Ok(())
    }
}

/// An error once Ctrl-C or SIGTERM was received (see `crate::interrupt`):
/// long uploads stop between parts and files, and clean up.
fn interrupted() -> io::Result<()> {
    // Not `ErrorKind::Interrupted`: `write_all` and `io::copy` retry that.
    if crate::interrupt::requested() {
        return Err(io::Error::other(
            "interrupted by Ctrl-C or SIGTERM; the upload was aborted",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_the_three_services() {
        let url = ObjectUrl::parse("s3://bucket/some/prefix/")
            .unwrap()
            .unwrap();
        assert_eq!(url.service, Service::S3);
        assert_eq!(url.bucket, "bucket");
        assert_eq!(url.prefix, "some/prefix");
        assert_eq!(url.to_string(), "s3://bucket/some/prefix");
        assert_eq!(url.join("wal").to_string(), "s3://bucket/some/prefix/wal");
        let bare = ObjectUrl::parse("gs://b").unwrap().unwrap();
        assert_eq!(bare.join("base").to_string(), "gs://b/base");
        assert_eq!(
            ObjectUrl::parse("az://c/p").unwrap().unwrap().service,
            Service::Azure
        );
        assert!(ObjectUrl::parse("/var/lib/pitr").is_none());
        assert!(ObjectUrl::parse("file:///x").is_none());
    }

    #[test]
    fn malformed_urls_are_refused_with_the_form_to_use() {
        for bad in ["s3://", "s3:///prefix", "s3://b/../x", "s3://b/a//c"] {
            let error = ObjectUrl::parse(bad).unwrap().unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
        // Credentials in the URL would end up in archive_command and logs.
        let error = ObjectUrl::parse("s3://key:secret@bucket/p")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(error.contains("never in the URL"), "{error}");
    }

    #[test]
    fn secrets_and_signatures_are_scrubbed() {
        let secrets = Secrets::among(&[
            (
                "aws_secret_access_key".into(),
                "wJalrXUtnFEMI/K7MDENG".into(),
            ),
            ("aws_region".into(), "eu-west-1".into()),
            ("aws_allow_http".into(), "true".into()),
        ]);
        let text = "GET http://h/c/o?sv=2021&sig=abc%2Fdef&se=x failed: key wJalrXUtnFEMI/K7MDENG";
        let scrubbed = secrets.scrub(text);
        assert!(!scrubbed.contains("abc%2Fdef"), "{scrubbed}");
        assert!(!scrubbed.contains("wJalrXUtnFEMI"), "{scrubbed}");
        assert!(scrubbed.contains("sig=<redacted>&se=x"), "{scrubbed}");
        assert_eq!(format!("{secrets:?}"), "Secrets(1 redacted)");
    }
}
