//! The user's local copy of a WAL archive's listing, so that listing an
//! archive in object storage costs the pages of what is new, not one page
//! per 1,000 segments ever archived (an archive of 100,000 segments is 100
//! LIST requests; with this, two or three).
//!
//! An archive only grows at its end: segments, history files and backup
//! history files arrive in name order, give or take the few that arrive
//! late (a `.backup` file after the segments of a long backup, a
//! `.partial`). So the listing resumes (S3 `start-after`) at the key
//! [`RELISTED`] keys before the last one known, and everything before it
//! is taken from the copy. Deletions happen at the other end (`pitr
//! expire` removes the oldest WAL first): the oldest known object is looked
//! up (one HEAD), and when it is gone or changed the whole archive is
//! listed again. A deletion in the middle of the archive by other means is
//! not seen until then; a restore that then needs the missing segment
//! stops at it, as with any segment missing from the archive.
//!
//! It lives beside the facts cache (`facts_cache::cache_dir`), outside the
//! repository; a missing or unreadable copy only means a full listing.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::store::posix::Posix;
use super::store::{read_all, ObjectInfo, StoreRead, StoreWrite, Version};

/// Keys listed again before the end of the known listing: two pages.
pub const RELISTED: usize = 2000;

const CACHE_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedListing {
    version: u32,
    objects: Vec<SavedObject>,
}

#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SavedObject {
    key: String,
    size: u64,
    /// Nanoseconds since the Unix epoch.
    modified: u128,
    version: String,
}

impl From<&ObjectInfo> for SavedObject {
    fn from(object: &ObjectInfo) -> SavedObject {
        SavedObject {
            key: object.key.clone(),
            size: object.size,
            modified: object
                .modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            version: object.version.0.clone(),
        }
    }
}

impl From<SavedObject> for ObjectInfo {
    fn from(saved: SavedObject) -> ObjectInfo {
        let nanos = u64::try_from(saved.modified).unwrap_or(u64::MAX);
        ObjectInfo {
            key: saved.key,
            size: saved.size,
            modified: UNIX_EPOCH + Duration::from_nanos(nanos),
            version: Version(saved.version),
        }
    }
}

/// Where the listing of one archive is kept.
#[derive(Debug)]
pub struct ListingCache {
    dir: Posix,
    key: String,
}

impl ListingCache {
    /// The copy for the archive `store`, when it is one whose listing
    /// costs a request per 1,000 keys (not a local directory) and there
    /// is a cache directory.
    pub fn for_store(store: &dyn StoreRead) -> Option<ListingCache> {
        if store.local_dir("").is_some() {
            return None;
        }
        let digest = Sha256::digest(store.identity().as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        super::facts_cache::cache_dir()
            .map(|dir| ListingCache::at(dir, format!("listing-{name}.json")))
    }

    /// The copy `key` in `dir`.
    pub fn at(dir: impl Into<PathBuf>, key: impl Into<String>) -> ListingCache {
        ListingCache {
            dir: Posix::new(dir),
            key: key.into(),
        }
    }

    fn load(&self) -> Vec<SavedObject> {
        read_all(&self.dir, &self.key)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SavedListing>(&bytes).ok())
            .filter(|saved| saved.version == CACHE_VERSION)
            .map(|saved| saved.objects)
            .unwrap_or_default()
    }

    /// Replaces the copy (best effort: a cache that cannot be written only
    /// means a full listing next time).
    fn save(&self, objects: Vec<SavedObject>) {
        let saved = SavedListing {
            version: CACHE_VERSION,
            objects,
        };
        let Ok(bytes) = serde_json::to_vec(&saved) else {
            return;
        };
        let _ = self
            .dir
            .write_stream(&self.key, &mut |out| out.write_all(&bytes));
    }
}

/// The objects at the top of the archive `store`, in key order, as
/// `store.list("", None)` gives them: resumed from `cache` where it knows
/// the older ones (see the module's documentation).
pub fn list_archive(
    store: &dyn StoreRead,
    cache: Option<&ListingCache>,
) -> io::Result<Vec<ObjectInfo>> {
    let Some(cache) = cache else {
        return store.list("", None);
    };
    let known = cache.load();
    let resumed = match known.len().checked_sub(RELISTED + 1) {
        Some(last_kept) if oldest_still_there(store, &known[0])? => {
            let after = known[last_kept].key.clone();
            let newer = store.list("", Some(&after))?;
            let mut objects: Vec<SavedObject> = known[..=last_kept].to_vec();
            objects.extend(newer.iter().map(SavedObject::from));
            Some(objects)
        }
        _ => None,
    };
    let objects = match resumed {
        Some(objects) => objects,
        None => store
            .list("", None)?
            .iter()
            .map(SavedObject::from)
            .collect(),
    };
    if objects != known {
        cache.save(objects.clone());
    }
    Ok(objects.into_iter().map(ObjectInfo::from).collect())
}

/// Whether the oldest object of the saved listing is still there, the
/// same size: if `expire` (or anything) pruned the archive, it is not.
fn oldest_still_there(store: &dyn StoreRead, oldest: &SavedObject) -> io::Result<bool> {
    Ok(store
        .stat(&oldest.key)?
        .is_some_and(|found| found.size == oldest.size))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A posix store that counts listings and where they start, standing
    /// in for an object store (`local_dir` says it is none).
    #[derive(Debug)]
    struct Counted {
        inner: Posix,
        lists: AtomicUsize,
        resumed: AtomicUsize,
    }

    impl StoreRead for Counted {
        fn describe(&self, key: &str) -> String {
            self.inner.describe(key)
        }
        fn list(&self, prefix: &str, start_after: Option<&str>) -> io::Result<Vec<ObjectInfo>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            if start_after.is_some() {
                self.resumed.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.list(prefix, start_after)
        }
        fn list_prefixes(&self, prefix: &str) -> io::Result<Vec<String>> {
            self.inner.list_prefixes(prefix)
        }
        fn hidden_groups(&self) -> io::Result<Vec<crate::repo::store::HiddenGroup>> {
            self.inner.hidden_groups()
        }
        fn stat(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
            self.inner.stat(key)
        }
        fn open(&self, key: &str) -> io::Result<crate::repo::store::ObjectReader> {
            self.inner.open(key)
        }
        fn open_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> io::Result<crate::repo::store::ObjectReader> {
            self.inner.open_range(key, range)
        }
        fn identity(&self) -> String {
            self.inner.identity()
        }
        fn local_dir(&self, _prefix: &str) -> Option<PathBuf> {
            None
        }
    }

    fn name(n: u64) -> String {
        format!("00000001{:08X}{:08X}", n >> 8, n & 0xFF)
    }

    fn keys(objects: &[ObjectInfo]) -> Vec<String> {
        objects.iter().map(|o| o.key.clone()).collect()
    }

    #[test]
    fn resumes_near_the_end_and_sees_late_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("wal");
        fs::create_dir(&archive).unwrap();
        for n in 1..=3000 {
            fs::write(archive.join(name(n)), b"x").unwrap();
        }
        let store = Counted {
            inner: Posix::new(&archive),
            lists: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
        };
        let cache = ListingCache::at(dir.path().join("cache"), "listing.json");
        let first = list_archive(&store, Some(&cache)).unwrap();
        assert_eq!(keys(&first), keys(&store.inner.list("", None).unwrap()));
        assert_eq!(store.resumed.load(Ordering::SeqCst), 0, "nothing known yet");

        // New segments, and a backup history file arriving late, among
        // the last RELISTED keys.
        fs::write(archive.join(name(3001)), b"x").unwrap();
        fs::write(
            archive.join(format!("{}.00000028.backup", name(2500))),
            b"b",
        )
        .unwrap();
        let second = list_archive(&store, Some(&cache)).unwrap();
        assert_eq!(store.resumed.load(Ordering::SeqCst), 1);
        assert_eq!(keys(&second), keys(&store.inner.list("", None).unwrap()));
        assert_eq!(second.len(), 3002);

        // expire removed the oldest: the whole archive is listed again.
        fs::remove_file(archive.join(name(1))).unwrap();
        let third = list_archive(&store, Some(&cache)).unwrap();
        assert_eq!(store.resumed.load(Ordering::SeqCst), 1, "not resumed");
        assert_eq!(keys(&third), keys(&store.inner.list("", None).unwrap()));
    }

    #[test]
    fn a_small_archive_or_no_cache_is_listed_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(name(1)), b"x").unwrap();
        let store = Counted {
            inner: Posix::new(dir.path()),
            lists: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
        };
        let cache = ListingCache::at(dir.path().join("cache"), "listing.json");
        list_archive(&store, Some(&cache)).unwrap();
        list_archive(&store, Some(&cache)).unwrap();
        list_archive(&store, None).unwrap();
        assert_eq!(store.lists.load(Ordering::SeqCst), 3);
        assert_eq!(store.resumed.load(Ordering::SeqCst), 0);
        // A local directory gets no cache at all: its listing is cheap.
        assert!(ListingCache::for_store(&Posix::new(dir.path())).is_none());
    }
}
