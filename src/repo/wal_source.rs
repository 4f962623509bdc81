//! Facts about archived segments, decoded from the files and cached.
//!
//! Decoding one 16 MiB segment takes tens of milliseconds; an archive has
//! thousands. The facts of each segment file (keyed by name, size and
//! modification time, so a replaced file is decoded again) are kept in a
//! cache outside the repository: `$PITR_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/pitr`, else `~/.cache/pitr`. The repository itself is
//! never written. A missing or unwritable cache only makes planning slower.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::{ArchivedFile, WalArchive};
use crate::wal::decode::SegmentEnd;
use crate::wal::decode::{Event, EventKind, StartAt, WalDecoder};
use crate::wal::facts::{FactsError, SegmentEnding, SegmentFacts, StopEvent, StopKind, WalSource};
use crate::wal::{SegmentSize, WalSegment};

// 2: segment facts hold the checkpoints' next full xid.
const CACHE_VERSION: u32 = 2;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    segments: BTreeMap<String, SegmentFacts>,
}

/// The archive as a [`WalSource`].
pub struct ArchiveWal<'a> {
    archive: &'a WalArchive,
    cache_path: Option<PathBuf>,
    cache: RefCell<Option<CacheFile>>,
    dirty: RefCell<bool>,
    events: RefCell<HashMap<WalSegment, Vec<StopEvent>>>,
}

impl<'a> ArchiveWal<'a> {
    /// A source with the user's cache of this archive. What it decodes is
    /// written back only by [`ArchiveWal::save`]: an explicit step of the
    /// command, not a side effect of dropping the source.
    pub fn new(archive: &'a WalArchive) -> ArchiveWal<'a> {
        let cache_path = cache_dir().map(|dir| {
            let digest = Sha256::digest(archive.store().identity().as_bytes());
            let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
            dir.join(format!("archive-{name}.json"))
        });
        ArchiveWal::with_cache_file(archive, cache_path)
    }

    fn with_cache_file(archive: &'a WalArchive, cache_path: Option<PathBuf>) -> ArchiveWal<'a> {
        ArchiveWal {
            archive,
            cache_path,
            cache: RefCell::new(None),
            dirty: RefCell::new(false),
            events: RefCell::new(HashMap::new()),
        }
    }

    /// A source that decodes every segment it is asked about, ignoring and
    /// never writing the cache: for verification, which must read the bytes.
    pub fn uncached(archive: &'a WalArchive) -> ArchiveWal<'a> {
        ArchiveWal {
            archive,
            cache_path: None,
            cache: RefCell::new(None),
            dirty: RefCell::new(false),
            events: RefCell::new(HashMap::new()),
        }
    }

    /// Writes the cache if anything was decoded (best effort). The cache is
    /// a local file in the user's cache directory, not the repository.
    #[allow(clippy::disallowed_methods)]
    pub fn save(&self) {
        if !*self.dirty.borrow() {
            return;
        }
        let (Some(path), Some(cache)) = (
            &self.cache_path,
            self.cache.borrow().as_ref().map(serde_json::to_vec),
        ) else {
            return;
        };
        let Ok(bytes) = cache else { return };
        let Some(dir) = path.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        if let Ok(mut temp) = tempfile::NamedTempFile::new_in(dir) {
            if temp.write_all(&bytes).is_ok() {
                let _ = temp.persist(path);
            }
        }
        *self.dirty.borrow_mut() = false;
    }

    #[allow(clippy::disallowed_methods)] // the local cache file, as in `save`
    fn with_cache<T>(&self, f: impl FnOnce(&mut CacheFile) -> T) -> T {
        let mut cache = self.cache.borrow_mut();
        let cache = cache.get_or_insert_with(|| {
            self.cache_path
                .as_ref()
                .and_then(|path| fs::read(path).ok())
                .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
                .filter(|cache| cache.version == CACHE_VERSION)
                .unwrap_or(CacheFile {
                    version: CACHE_VERSION,
                    segments: BTreeMap::new(),
                })
        });
        f(cache)
    }

    /// Decodes one segment: facts and stop events of the records that start
    /// in it, completing a record that runs into the next segment.
    fn decode(
        &self,
        segment: WalSegment,
        file: &ArchivedFile,
    ) -> Result<(SegmentFacts, Vec<StopEvent>), FactsError> {
        let unreadable = |reason: String| FactsError::Unreadable { segment, reason };
        let reader = file.open().map_err(|e| unreadable(format!("{e}")))?;
        let mut decoder = WalDecoder::new(StartAt::SegmentStart);
        let mut facts = SegmentFacts::default();
        let mut events = Vec::new();
        {
            let mut run = decoder.segment(segment, reader);
            loop {
                match run.next_record() {
                    None => break,
                    Some(Ok(record)) => {
                        let checkpoint = match &record.event {
                            Some(Event {
                                kind: EventKind::Checkpoint(checkpoint),
                                ..
                            }) => Some(checkpoint.next_xid),
                            _ => None,
                        };
                        let event = record
                            .event
                            .and_then(|e| stop_event(e.start, e.end, &e.kind));
                        if let Some(event) = &event {
                            events.push(event.clone());
                        }
                        facts.add(record.start, record.end, event);
                        if let Some(next_xid) = checkpoint {
                            facts.add_checkpoint(next_xid);
                        }
                    }
                    Some(Err(error)) if error.problem.is_corruption() => {
                        facts.ending = Some(SegmentEnding::Corrupt {
                            problem: error.to_string(),
                        });
                        return Ok((facts, events));
                    }
                    Some(Err(error)) => return Err(unreadable(error.to_string())),
                }
            }
            facts.ending = Some(match &run.summary().end {
                SegmentEnd::Switch { .. } => SegmentEnding::Switch,
                SegmentEnd::EndOfWal(_) | SegmentEnd::AfterEnd => SegmentEnding::EndOfWal,
                SegmentEnd::Continues { .. } | SegmentEnd::InProgress => SegmentEnding::Continues,
            });
        }
        // A record that starts here and ends in the next segment belongs
        // here: finish it from the next file, if the archive has one.
        if decoder.record_in_progress().is_some() {
            if let Some((next, file)) = self.next_file(segment) {
                if let Ok(reader) = file.open() {
                    let mut run = decoder.segment(next, reader);
                    if let Some(Ok(record)) = run.next_record() {
                        if record.start < next.start_lsn() {
                            let event = record
                                .event
                                .and_then(|e| stop_event(e.start, e.end, &e.kind));
                            if let Some(event) = &event {
                                events.push(event.clone());
                            }
                            facts.add(record.start, record.end, event);
                        }
                    }
                }
            }
        }
        Ok((facts, events))
    }

    /// The file that continues `segment`: the same timeline, else (at a
    /// switch point) the newest timeline that has the next segment.
    fn next_file(&self, segment: WalSegment) -> Option<(WalSegment, &ArchivedFile)> {
        let next = segment.next();
        if let Some(file) = self.archive.segment(next) {
            return Some((next, file));
        }
        self.archive
            .timelines
            .timelines()
            .filter(|t| *t > segment.timeline)
            .filter_map(|t| {
                let candidate = next.on_timeline(t);
                self.archive
                    .segment(candidate)
                    .map(|file| (candidate, file))
            })
            .last()
    }

    fn decode_and_remember(
        &self,
        segment: WalSegment,
        file: &ArchivedFile,
    ) -> Result<SegmentFacts, FactsError> {
        let (facts, events) = self.decode(segment, file)?;
        self.events.borrow_mut().insert(segment, events);
        self.with_cache(|cache| {
            cache
                .segments
                .insert(cache_key(segment, file), facts.clone())
        });
        *self.dirty.borrow_mut() = true;
        Ok(facts)
    }
}

impl WalSource for ArchiveWal<'_> {
    fn segment_size(&self) -> SegmentSize {
        self.archive.segment_size
    }

    fn facts(&self, segment: WalSegment) -> Result<Option<SegmentFacts>, FactsError> {
        let Some(file) = self.archive.segment(segment) else {
            return Ok(None);
        };
        let key = cache_key(segment, file);
        if let Some(facts) = self.with_cache(|cache| cache.segments.get(&key).cloned()) {
            return Ok(Some(facts));
        }
        self.decode_and_remember(segment, file).map(Some)
    }

    fn events(&self, segment: WalSegment) -> Result<Vec<StopEvent>, FactsError> {
        if let Some(events) = self.events.borrow().get(&segment) {
            return Ok(events.clone());
        }
        let Some(file) = self.archive.segment(segment) else {
            return Ok(Vec::new());
        };
        self.decode_and_remember(segment, file)?;
        Ok(self
            .events
            .borrow()
            .get(&segment)
            .cloned()
            .unwrap_or_default())
    }
}

fn stop_event(start: crate::wal::Lsn, end: crate::wal::Lsn, kind: &EventKind) -> Option<StopEvent> {
    let (time, kind) = match kind {
        EventKind::Commit(t) => (t.time, StopKind::Commit { xid: t.xid.value() }),
        EventKind::Abort(t) => (t.time, StopKind::Abort { xid: t.xid.value() }),
        EventKind::RestorePoint { name, time } => {
            (*time, StopKind::RestorePoint { name: name.clone() })
        }
        _ => return None,
    };
    Some(StopEvent {
        start,
        end,
        time,
        kind,
    })
}

fn cache_key(segment: WalSegment, file: &ArchivedFile) -> String {
    format!(
        "{segment}|{}|{}|{:?}",
        file.stored_bytes, file.version, file.compression
    )
}

fn cache_dir() -> Option<PathBuf> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::repo::store::posix::Posix;
    use std::sync::Arc;

    #[test]
    fn the_cache_is_written_by_save_only() {
        let dir = tempfile::tempdir().unwrap();
        let archive_dir = dir.path().join("wal");
        fs::create_dir(&archive_dir).unwrap();
        let name = "000000010000000000000007.gz";
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/15/wal")
            .join(name);
        fs::copy(&fixture, archive_dir.join(name)).unwrap();
        let archive =
            WalArchive::scan(Arc::new(Posix::new(&archive_dir)), SegmentSize::DEFAULT).unwrap();
        let segment = WalSegment::parse("000000010000000000000007", archive.segment_size).unwrap();
        let cache = dir.path().join("cache/archive.json");

        let wal = ArchiveWal::with_cache_file(&archive, Some(cache.clone()));
        assert!(wal.facts(segment).unwrap().is_some());
        drop(wal);
        assert!(!cache.exists(), "dropping the source writes nothing");

        let wal = ArchiveWal::with_cache_file(&archive, Some(cache.clone()));
        assert!(wal.facts(segment).unwrap().is_some());
        wal.save();
        assert!(cache.is_file());
        let saved = fs::read(&cache).unwrap();
        assert!(String::from_utf8_lossy(&saved).contains("000000010000000000000007"));
    }
}
