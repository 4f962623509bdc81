//! The user's local cache of what archived segments hold (their decoded
//! [`SegmentFacts`]), one file per archive.
//!
//! It lives outside the repository, which is never written by a reader:
//! `$PITR_CACHE_DIR`, else `$XDG_CACHE_HOME/pitr`, else `~/.cache/pitr`. The
//! cache directory is a posix store of its own (the same driver as a
//! repository directory, not the repository), so the cache file is replaced
//! whole by a rename and this module needs no file-system calls of its own.
//! A missing, unreadable or unwritable cache only makes planning slower:
//! nothing here fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store::posix::Posix;
use super::store::{StoreRead, StoreWrite};
use crate::wal::facts::SegmentFacts;

// 2: segment facts hold the checkpoints' next full xid.
const CACHE_VERSION: u32 = 2;

/// The cached facts, keyed by segment name, size, version and compression
/// (so a replaced file is decoded again).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CachedFacts {
    version: u32,
    pub segments: BTreeMap<String, SegmentFacts>,
}

impl Default for CachedFacts {
    fn default() -> CachedFacts {
        CachedFacts {
            version: CACHE_VERSION,
            segments: BTreeMap::new(),
        }
    }
}

/// Where the cache of one archive is kept.
#[derive(Debug)]
pub struct FactsCache {
    dir: Posix,
    key: String,
}

impl FactsCache {
    /// The cache of the archive whose store has `identity`, in the user's
    /// cache directory; `None` when there is no home to put it in.
    pub fn for_archive(identity: &str) -> Option<FactsCache> {
        let digest = Sha256::digest(identity.as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        cache_dir().map(|dir| FactsCache::at(dir, format!("archive-{name}.json")))
    }

    /// The cache file `key` in `dir`.
    pub fn at(dir: impl Into<PathBuf>, key: impl Into<String>) -> FactsCache {
        FactsCache {
            dir: Posix::new(dir),
            key: key.into(),
        }
    }

    /// What was saved, or an empty cache when there is none (or one of
    /// another version, or unreadable).
    pub fn load(&self) -> CachedFacts {
        let mut bytes = Vec::new();
        self.dir
            .open(&self.key)
            .and_then(|mut reader| reader.read_to_end(&mut bytes))
            .ok()
            .and_then(|_| serde_json::from_slice::<CachedFacts>(&bytes).ok())
            .filter(|cache| cache.version == CACHE_VERSION)
            .unwrap_or_default()
    }

    /// Replaces the saved cache with `facts` (best effort).
    pub fn save(&self, facts: &CachedFacts) {
        let Ok(bytes) = serde_json::to_vec(facts) else {
            return;
        };
        let _ = self
            .dir
            .write_stream(&self.key, &mut |out| out.write_all(&bytes));
    }
}

pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PITR_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("pitr"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".cache").join("pitr"))
}
