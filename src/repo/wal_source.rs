//! Facts about archived segments, decoded from the files and cached.
//!
//! Decoding one 16 MiB segment takes tens of milliseconds; an archive has
//! thousands. The facts of each segment file (keyed by name, size and
//! version, so a replaced file is decoded again) are kept in the user's
//! [`FactsCache`], outside the repository, which is never written.

use std::cell::RefCell;
use std::collections::HashMap;

use super::archive::{ArchivedFile, WalArchive};
use super::facts_cache::{CachedFacts, FactsCache};
use crate::wal::decode::SegmentEnd;
use crate::wal::decode::{Event, EventKind, StartAt, WalDecoder};
use crate::wal::facts::{FactsError, SegmentEnding, SegmentFacts, StopEvent, StopKind, WalSource};
use crate::wal::{SegmentSize, WalSegment};

/// The archive as a [`WalSource`].
pub struct ArchiveWal<'a> {
    archive: &'a WalArchive,
    saved: Option<FactsCache>,
    cache: RefCell<Option<CachedFacts>>,
    dirty: RefCell<bool>,
    events: RefCell<HashMap<WalSegment, Vec<StopEvent>>>,
}

impl<'a> ArchiveWal<'a> {
    /// A source with the user's cache of this archive. What it decodes is
    /// written back only by [`ArchiveWal::save`]: an explicit step of the
    /// command, not a side effect of dropping the source.
    pub fn new(archive: &'a WalArchive) -> ArchiveWal<'a> {
        let saved = FactsCache::for_archive(&archive.store().identity());
        ArchiveWal::with_cache(archive, saved)
    }

    fn with_cache(archive: &'a WalArchive, saved: Option<FactsCache>) -> ArchiveWal<'a> {
        ArchiveWal {
            archive,
            saved,
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
            saved: None,
            cache: RefCell::new(None),
            dirty: RefCell::new(false),
            events: RefCell::new(HashMap::new()),
        }
    }

    /// Writes the cache if anything was decoded (best effort). The cache is
    /// a local file in the user's cache directory, not the repository.
    pub fn save(&self) {
        if !*self.dirty.borrow() {
            return;
        }
        if let (Some(saved), Some(cache)) = (&self.saved, self.cache.borrow().as_ref()) {
            saved.save(cache);
        }
        *self.dirty.borrow_mut() = false;
    }

    /// The cached facts, read from the user's cache the first time.
    fn cached<T>(&self, f: impl FnOnce(&mut CachedFacts) -> T) -> T {
        let mut cache = self.cache.borrow_mut();
        let cache = cache.get_or_insert_with(|| {
            self.saved
                .as_ref()
                .map(FactsCache::load)
                .unwrap_or_default()
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
        self.cached(|cache| {
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
        if let Some(facts) = self.cached(|cache| cache.segments.get(&key).cloned()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::store::posix::Posix;
    use crate::repo::store::{StoreRead, StoreWrite};
    use crate::wal::SegmentSize;
    use std::io::Read;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn the_cache_is_written_by_save_only() {
        let dir = tempfile::tempdir().unwrap();
        // The archive holds one real segment, copied from the fixtures.
        let name = "000000010000000000000007.gz";
        let mut segment_bytes = Vec::new();
        Posix::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/15/wal"))
            .open(name)
            .unwrap()
            .read_to_end(&mut segment_bytes)
            .unwrap();
        let archive_dir = Posix::new(dir.path().join("wal"));
        archive_dir
            .write_stream(name, &mut |out| out.write_all(&segment_bytes))
            .unwrap();
        let archive = WalArchive::scan(Arc::new(archive_dir), SegmentSize::DEFAULT).unwrap();
        let segment = WalSegment::parse("000000010000000000000007", archive.segment_size).unwrap();
        let cache_dir = Posix::new(dir.path().join("cache"));
        let cache = || Some(FactsCache::at(dir.path().join("cache"), "archive.json"));

        let wal = ArchiveWal::with_cache(&archive, cache());
        assert!(wal.facts(segment).unwrap().is_some());
        drop(wal);
        assert!(
            cache_dir.stat("archive.json").unwrap().is_none(),
            "dropping the source writes nothing"
        );

        let wal = ArchiveWal::with_cache(&archive, cache());
        assert!(wal.facts(segment).unwrap().is_some());
        wal.save();
        let mut saved = String::new();
        cache_dir
            .open("archive.json")
            .unwrap()
            .read_to_string(&mut saved)
            .unwrap();
        assert!(saved.contains("000000010000000000000007"));
        // And it is read back: the next source finds the facts cached.
        let again = ArchiveWal::with_cache(&archive, cache());
        assert!(again.cached(|cache| !cache.segments.is_empty()));
    }
}
