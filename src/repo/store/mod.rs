//! The repository's storage seam: every read and write of the backups and
//! the WAL archive goes through one of two roles, after pgBackRest's
//! `storageRepo()` / `storageRepoWrite()`.
//!
//! - [`StoreRead`] lists, stats and opens objects (whole or a byte range).
//!   `restore`, `plan`, `list`, `events`, `verify` and `wal-fetch` only ever
//!   get this role, so "a restore never writes the repository" is a fact the
//!   compiler checks.
//! - [`StoreWrite`] adds creating an object that never replaces another,
//!   writing a large object as a stream, deleting, and publishing a backup
//!   so that it appears complete or not at all. Only `init`, `backup`,
//!   `expire` and `wal-push` build one.
//!
//! Objects are named by keys: `/`-separated, relative, without `.` or `..`
//! parts. Each part of a repository (the backups, the WAL archive) is one
//! store; the drivers are [`posix`], a directory, and [`object`], a bucket
//! (S3, Azure, GCS through the `object_store` crate). The interface is shaped
//! for object stores: a
//! listing may start after a key (S3 `start-after`) and the driver pages
//! through it; an object's version is its ETag there and its modification
//! time here; `create_new` is a conditional create (`If-None-Match: *`);
//! `write_stream` is a multipart upload under a key nobody else writes.
//!
//! The behaviour every driver must have is written once, as tests against
//! these traits (`contract`), and each driver runs them.

pub mod object;
pub mod posix;

// Public (but not part of the interface) so that the integration tests can
// run the same rules against object-store servers they start.
#[doc(hidden)]
pub mod contract;

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A stream of an object's stored bytes.
pub type ObjectReader = Box<dyn Read + Send>;

/// Produces an object's bytes into the writer it is given; the store
/// decides where they go (a temporary file, a multipart upload).
pub type Fill<'a> = &'a mut dyn FnMut(&mut dyn Write) -> io::Result<()>;

/// Identifies one content of one key: it changes whenever the object is
/// written again. The modification time in nanoseconds on posix, the ETag
/// on object stores. Caches of what an object holds key on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// Stored size in bytes (compressed size for compressed files).
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
    pub version: Version,
}

/// A group hidden from every reader: a backup being written, or one
/// being deleted, or what a writer or an `expire` that died left of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HiddenGroup {
    /// The name [`StoreWrite::delete_group`] takes to remove it: the
    /// hidden directory on posix, the group's own name on object stores
    /// (hidden there by a marker beside it).
    pub name: String,
    pub state: HiddenState,
    /// When it was hidden: its directory or its marker was written.
    pub since: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenState {
    /// Being written, or left by a writer that was killed: only the user
    /// can tell which, so it is reported, never removed unasked.
    Unfinished,
    /// Being deleted, or left by an interrupted delete: already given up,
    /// meant to be deleted.
    Expiring,
}

/// One entry directly under a prefix, as a tree copy sees it (a plain
/// backup is a tree of files with modes, and on posix may hold symbolic
/// links: `pg_wal` made with `--waldir`, tablespaces in `pg_tblspc/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// The entry's key, without a trailing `/` for a group.
    pub key: String,
    pub kind: TreeKind,
    /// Unix permission bits where the store keeps them (posix); a link's
    /// are those of what it points to.
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeKind {
    Object {
        size: u64,
    },
    /// A group of objects (a directory), listed with its own prefix.
    Group,
    /// A symbolic link (posix only), not followed.
    Link {
        target: PathBuf,
    },
}

/// What [`StoreWrite::create_new`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist and now does, durably.
    Created,
    /// An object of that key already existed with exactly the bytes given;
    /// nothing was written.
    AlreadyPresentSame,
    /// An object of that key already existed with other bytes; it was left
    /// as it is.
    PresentDifferent,
}

/// Why a write failed: producing or storing the bytes (the key's own
/// message can then say which), or anything else (the error says what).
#[derive(Debug)]
pub enum WriteError {
    /// Writing the object's bytes failed, e.g. the file system is full.
    Write(io::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for WriteError {
    fn from(error: anyhow::Error) -> WriteError {
        WriteError::Other(error)
    }
}

/// How a new object is stored, where the driver can honour it.
#[derive(Clone, Debug, Default)]
pub struct NewObject {
    /// Unix permission bits of the file (posix only): WAL keeps the mode
    /// PostgreSQL gave it, as `cp` does.
    pub mode: Option<u32>,
}

/// The read role.
pub trait StoreRead: fmt::Debug + Send + Sync {
    /// How `key` is named in messages: a path on posix, a URL elsewhere.
    fn describe(&self, key: &str) -> String;

    /// The objects directly under `prefix` (`""` for the top, else a key
    /// ending in `/`), in key order, only those after `start_after` when
    /// given. Objects deeper down are not listed (see [`list_prefixes`]).
    /// Hidden names (starting with `.`) are listed like any other.
    ///
    /// [`list_prefixes`]: StoreRead::list_prefixes
    fn list(&self, prefix: &str, start_after: Option<&str>) -> io::Result<Vec<ObjectInfo>>;

    /// The names of the groups directly under `prefix` (directories on
    /// posix, common prefixes on object stores), sorted, without the `/`.
    fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// The groups at the top of the store that readers do not see (see
    /// [`HiddenGroup`]), sorted by name.
    fn hidden_groups(&self) -> io::Result<Vec<HiddenGroup>>;

    /// Objects, groups and links directly under `prefix`, in key order,
    /// for copying a tree. Stores without modes or links (object stores)
    /// get this from [`list`] and [`list_prefixes`].
    ///
    /// [`list`]: StoreRead::list
    /// [`list_prefixes`]: StoreRead::list_prefixes
    fn tree_level(&self, prefix: &str) -> io::Result<Vec<TreeEntry>> {
        let mut entries: Vec<TreeEntry> = self
            .list(prefix, None)?
            .into_iter()
            .map(|object| TreeEntry {
                key: object.key,
                kind: TreeKind::Object { size: object.size },
                mode: None,
            })
            .collect();
        entries.extend(
            self.list_prefixes(prefix)?
                .into_iter()
                .map(|name| TreeEntry {
                    key: format!("{prefix}{name}"),
                    kind: TreeKind::Group,
                    mode: None,
                }),
        );
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// The object `key`, or `None` when there is none.
    fn stat(&self, key: &str) -> io::Result<Option<ObjectInfo>>;

    /// Which of `keys` (at the top of the store, all sharing a stem: one
    /// WAL file under every compression suffix) exist, in key order. A
    /// `stat` each here; object stores answer with one listing that starts
    /// at the stem, one request instead of one per key.
    fn existing_of(&self, keys: &[String]) -> io::Result<Vec<ObjectInfo>> {
        let mut found = Vec::new();
        for key in keys {
            if let Some(object) = self.stat(key)? {
                found.push(object);
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The whole object. A missing object is an error of kind `NotFound`.
    fn open(&self, key: &str) -> io::Result<ObjectReader>;

    /// The bytes `range` of the object (a range reaching past the end
    /// gives what there is).
    fn open_range(&self, key: &str, range: Range<u64>) -> io::Result<ObjectReader>;

    /// Copies the whole stored object into a local file; a driver may do it
    /// better than a read loop (posix: file to file, in the kernel).
    fn download(&self, key: &str, to: &mut std::fs::File) -> io::Result<u64> {
        io::copy(&mut self.open(key)?, to)
    }

    /// A stable name of the store itself, for keying local caches of what
    /// it holds (the canonical directory on posix, the bucket URL
    /// elsewhere).
    fn identity(&self) -> String;

    /// The local directory behind `prefix`, for work that is local by
    /// nature and runs other programs on it (pg_combinebackup, plain
    /// backups copied as trees). `None` where the store is not a file
    /// system: callers must then download first.
    fn local_dir(&self, prefix: &str) -> Option<PathBuf>;
}

/// The write role: everything a reader can do, and changes that a
/// concurrent reader sees either not at all or complete.
pub trait StoreWrite: StoreRead {
    /// This store as a reader.
    fn reader(&self) -> &dyn StoreRead;

    /// Creates `key` with the bytes `fill` writes, only if no object of that
    /// key exists, never replacing one (also against a concurrent writer of
    /// the same key). When one exists, it is compared with the new bytes.
    /// `Created` means durable.
    fn create_new(&self, key: &str, options: &NewObject, fill: Fill)
        -> Result<Created, WriteError>;

    /// Writes `key` from a stream of any length, replacing what was there:
    /// for objects under a key that only this writer uses (the files of a
    /// backup being published). Durable when it returns.
    fn write_stream(&self, key: &str, fill: Fill) -> Result<ObjectInfo, WriteError>;

    /// Makes objects that someone else wrote (a `cp` without fsync) durable.
    fn sync(&self, keys: &[&str]) -> io::Result<()>;

    /// Deletes objects; one already gone is not an error (another `expire`
    /// may run at the same time).
    fn delete(&self, keys: &[&str]) -> io::Result<()>;

    /// A place to assemble a new group of objects (a backup) that readers
    /// do not see: a hidden directory inside the store on posix, a local
    /// temporary directory for object stores. `hint` names it.
    fn stage(&self, hint: &str) -> io::Result<Staging>;

    /// Makes the staged objects appear under `prefix` all at once, never
    /// replacing an existing group of that name (error `AlreadyExists`).
    /// The staging area is used up either way: moved into place (posix),
    /// uploaded and then deleted (object stores, where it is a local copy
    /// that would otherwise fill the database host's disk one backup at a
    /// time), or deleted on failure.
    fn publish(&self, staging: Staging, prefix: &str) -> io::Result<()>;

    /// Removes the group `prefix` so that no reader ever sees it half
    /// deleted: hidden first, then deleted.
    fn delete_group(&self, prefix: &str) -> anyhow::Result<()>;

    /// Starts writing the new group `name` object by object, as streams,
    /// hidden from readers until [`GroupUpload::publish`]: for a backup
    /// that goes straight to the store with no local copy. `None` where
    /// the store assembles groups locally anyway ([`stage`]: posix, where
    /// the staging area is in the repository itself). Refuses a name that
    /// exists (error `AlreadyExists`), as [`publish`] does.
    ///
    /// [`stage`]: StoreWrite::stage
    /// [`publish`]: StoreWrite::publish
    fn begin_group(&self, _name: &str) -> io::Result<Option<Box<dyn GroupUpload + '_>>> {
        Ok(None)
    }
}

/// One object of a [`GroupUpload`] being written as a stream.
pub trait ObjectSink: Write + Send {
    /// Stores what was written; durable when it returns. Dropping the sink
    /// unfinished stores nothing (an upload is aborted).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// A group being written under its final name, invisible until published.
/// Dropped unpublished, it deletes what it wrote and leaves no trace.
pub trait GroupUpload {
    /// A new object `key` (relative to the group); several may be open at
    /// once.
    fn object(&self, key: &str) -> io::Result<Box<dyn ObjectSink + '_>>;

    /// Makes the group appear, whole, once every object is finished.
    fn publish(self: Box<Self>) -> io::Result<()>;
}

/// A store opened for writing, and the same store as a reader (Rust 1.85
/// has no trait upcasting of `Arc<dyn StoreWrite>`).
#[derive(Clone, Debug)]
pub struct Writable {
    write: std::sync::Arc<dyn StoreWrite>,
    read: std::sync::Arc<dyn StoreRead>,
}

impl Writable {
    pub fn new<S: StoreWrite + 'static>(store: S) -> Writable {
        Writable::from_arc(std::sync::Arc::new(store))
    }

    /// A store already shared (a repository's stores, opened once).
    pub fn from_arc<S: StoreWrite + 'static>(store: std::sync::Arc<S>) -> Writable {
        Writable {
            write: store.clone(),
            read: store,
        }
    }

    /// The read role of this store, to hand to code that only reads.
    pub fn read(&self) -> &std::sync::Arc<dyn StoreRead> {
        &self.read
    }
}

impl std::ops::Deref for Writable {
    type Target = dyn StoreWrite;
    fn deref(&self) -> &(dyn StoreWrite + 'static) {
        &*self.write
    }
}

/// A hidden place where a new group of objects is assembled by local
/// programs (pg_basebackup writes a backup there).
#[derive(Debug)]
pub struct Staging {
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    pub fn new(dir: tempfile::TempDir) -> Staging {
        Staging { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => Path::new(""),
        }
    }

    /// Deletes what was staged.
    pub fn discard(mut self) -> io::Result<()> {
        match self.dir.take() {
            Some(dir) => dir.close(),
            None => Ok(()),
        }
    }

    /// The staged directory is gone (renamed into place): nothing to delete.
    fn moved_away(mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` part, so
/// no key can name anything outside its store.
pub fn check_key(key: &str) -> io::Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || key.contains('\0');
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{key}` is not a valid object key"),
        ));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key followed by `/`.
pub fn check_prefix(prefix: &str) -> io::Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(inner) => check_key(inner),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{prefix}` is not a listing prefix (it must end in `/`)"),
        )),
    }
}

/// Reads a small whole object.
pub fn read_all(store: &dyn StoreRead, key: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    store.open(key)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}
