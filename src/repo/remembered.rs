//! Facts of an object archive that this host remembers in its cache
//! directory (`$PITR_CACHE_DIR`, else `~/.cache/pitr`), so that a push
//! costs no request to learn them: the cluster's identity, whether the
//! store enforces conditional creates, the archive's compression. A local
//! archive is read directly and remembers nothing.
//!
//! A memory is trusted for [`REMEMBERED_FOR`] only: a repository deleted
//! and made anew under the same URL, or `pitr init` run again after the
//! store behind the URL changed, is learned by every host within that
//! time. A stale "conditional creates are enforced" would send plain
//! conditional PUTs to a store that lets them replace a segment.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::store::posix::Posix;
use super::store::{StoreRead, StoreWrite};

/// How long a remembered fact is trusted before it is read from the
/// archive again: one request per host and fact every five minutes at
/// most, against a PUT per segment.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(300);

/// One remembered fact of one archive: the cache file
/// `what-<hash of the store>.json`, for object stores only.
pub struct Remembered {
    cache: Option<(Posix, String)>,
}

impl Remembered {
    pub fn of(archive: &dyn StoreRead, what: &str) -> Remembered {
        if archive.local_dir("").is_some() {
            return Remembered { cache: None };
        }
        let digest = Sha256::digest(archive.identity().as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Remembered {
            cache: super::facts_cache::cache_dir()
                .map(|dir| (Posix::new(dir), format!("{what}-{name}.json"))),
        }
    }

    /// The remembered bytes if they were remembered (read from the
    /// archive, or written to it) less than [`REMEMBERED_FOR`] ago; a
    /// memory from the future (a clock set back) counts as old.
    pub fn get_bytes(&self) -> Option<Vec<u8>> {
        let (dir, key) = self.cache.as_ref()?;
        let remembered_at = dir.stat(key).ok()??.modified;
        if remembered_at.elapsed().ok()? > REMEMBERED_FOR {
            return None;
        }
        super::store::read_all(dir, key).ok()
    }

    /// Best effort: a memory that cannot be written costs a read later.
    pub fn set_bytes(&self, bytes: &[u8]) {
        if let Some((dir, key)) = &self.cache {
            let _ = dir.write_stream(key, &mut |out| out.write_all(bytes));
        }
    }
}
