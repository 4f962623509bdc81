//! The WAL archive: which segments, timeline histories and backup history
//! files it holds, as filled by any `archive_command` or `pg_receivewal`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use super::archive_name::{ArchiveName, WalFileName};
use super::store::{ObjectInfo, ObjectReader, StoreRead, Version};
use crate::compression::Compression;
use crate::wal::history;
use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};
use crate::wal::timelines::{TimelineGraph, TimelinePath};
use crate::wal::{SegmentSize, TimelineId, WalSegment};

/// One file of the archive: an object of the archive's store.
#[derive(Clone, Debug)]
pub struct ArchivedFile {
    pub key: String,
    pub compression: Compression,
    /// Size in the store (compressed size for compressed files).
    pub stored_bytes: u64,
    pub modified: SystemTime,
    /// Changes whenever the file is written again: what caches of its
    /// contents key on.
    pub version: Version,
    /// A `.partial` file: the WAL written so far of a segment that was never
    /// completed (the end of a promoted timeline, or pg_receivewal's current
    /// segment). Used only where no complete copy exists.
    pub partial: bool,
    store: Arc<dyn StoreRead>,
}

impl ArchivedFile {
    pub fn new(
        store: Arc<dyn StoreRead>,
        object: ObjectInfo,
        compression: Compression,
        partial: bool,
    ) -> ArchivedFile {
        ArchivedFile {
            key: object.key,
            compression,
            stored_bytes: object.size,
            modified: object.modified,
            version: object.version,
            partial,
            store,
        }
    }

    /// The file as messages name it (its path on posix).
    pub fn describe(&self) -> String {
        self.store.describe(&self.key)
    }

    /// The stored bytes, compressed as they are.
    pub fn open_stored(&self) -> io::Result<ObjectReader> {
        self.store.open(&self.key)
    }

    /// Copies the stored bytes (compressed as they are) into a local file.
    pub fn download(&self, to: &mut std::fs::File) -> io::Result<u64> {
        self.store.download(&self.key, to)
    }

    /// The file's contents, decompressed.
    pub fn open(&self) -> io::Result<Box<dyn Read>> {
        self.compression.decoder(self.open_stored()?)
    }
}

/// A listing of the archive directory, made once per command.
#[derive(Debug)]
pub struct WalArchive {
    store: Arc<dyn StoreRead>,
    pub segment_size: SegmentSize,
    /// From the first segment's page header, when there is a segment.
    pub system_identifier: Option<u64>,
    pub major_version: Option<u32>,
    /// Every copy of each segment (plain, `.gz`, `.zst`, ...), the
    /// preferred one first (see [`Compression::ALL`]).
    segments: BTreeMap<(TimelineId, u64), Vec<ArchivedFile>>,
    /// The preferred copy of each timeline history file.
    pub histories: BTreeMap<TimelineId, ArchivedFile>,
    /// Backup history files (`<segment>.<offset>.backup`) by file name
    /// without compression suffix; the preferred copy of each.
    pub backup_histories: BTreeMap<String, ArchivedFile>,
    /// Names that are none of the above (`.partial` files, stray files).
    pub other_files: Vec<String>,
    /// Timelines and where each branched, from the history files.
    pub timelines: TimelineGraph,
    /// History files that could not be read, with the reason.
    pub broken_histories: BTreeMap<TimelineId, String>,
}

impl WalArchive {
    /// Lists the archive's store. `fallback_size` is used when the archive
    /// holds no segment to read the segment size from.
    pub fn scan(store: Arc<dyn StoreRead>, fallback_size: SegmentSize) -> Result<WalArchive> {
        // In object storage, resumed from the local copy of the listing.
        let cache = super::listing_cache::ListingCache::for_store(store.as_ref());
        let objects = super::listing_cache::list_archive(store.as_ref(), cache.as_ref())
            .with_context(|| format!("cannot read the WAL archive `{}`", store.describe("")))?;
        let mut segment_files = Vec::new();
        let mut partial_files = Vec::new();
        let mut archive = WalArchive {
            store: Arc::clone(&store),
            segment_size: fallback_size,
            system_identifier: None,
            major_version: None,
            segments: BTreeMap::new(),
            histories: BTreeMap::new(),
            backup_histories: BTreeMap::new(),
            other_files: Vec::new(),
            timelines: TimelineGraph::default(),
            broken_histories: BTreeMap::new(),
        };
        for object in objects {
            let name = object.key.clone();
            let file = |partial| {
                ArchivedFile::new(
                    Arc::clone(&store),
                    object.clone(),
                    Compression::None,
                    partial,
                )
            };
            let Some(parsed) = ArchiveName::parse(&name) else {
                archive.other_files.push(name);
                continue;
            };
            let compression = parsed.compression;
            match parsed.file {
                WalFileName::Partial(stem) => partial_files.push((
                    stem,
                    ArchivedFile {
                        compression,
                        ..file(true)
                    },
                )),
                WalFileName::Segment(stem) => segment_files.push((
                    stem,
                    ArchivedFile {
                        compression,
                        ..file(false)
                    },
                )),
                history @ WalFileName::TimelineHistory(_) => match history.history_timeline() {
                    Some(timeline) => keep_preferred(
                        &mut archive.histories,
                        timeline,
                        ArchivedFile {
                            compression,
                            ..file(false)
                        },
                    ),
                    None => archive.other_files.push(name),
                },
                backup @ WalFileName::BackupHistory { .. } => keep_preferred(
                    &mut archive.backup_histories,
                    backup.to_string(),
                    ArchivedFile {
                        compression,
                        ..file(false)
                    },
                ),
            }
        }
        // Read the segment size from a real segment: names only make sense
        // once it is known (it sets the radix of the name's low fields).
        // Within a name, the preferred copy comes first.
        segment_files.sort_by(|a, b| {
            a.0.cmp(&b.0).then(
                a.1.compression
                    .preference()
                    .cmp(&b.1.compression.preference()),
            )
        });
        if let Some((_, first)) = segment_files.first() {
            let header = read_long_header(first)?;
            archive.segment_size = header.segment_size;
            archive.system_identifier = Some(header.system_identifier);
            archive.major_version = header.major_version();
        }
        for (stem, file) in segment_files {
            match WalSegment::parse(&stem, archive.segment_size) {
                Some(segment) => {
                    // A segment stored several ways keeps every copy: whether
                    // they agree is checked where their contents are read
                    // (wal-fetch, verify), not by reading them all here.
                    archive
                        .segments
                        .entry((segment.timeline, segment.number))
                        .or_default()
                        .push(file);
                }
                None => archive.other_files.push(stem),
            }
        }
        // A partial segment stands in only where no complete copy exists.
        for (stem, file) in partial_files {
            match WalSegment::parse(&stem, archive.segment_size) {
                Some(segment) => {
                    let copies = archive
                        .segments
                        .entry((segment.timeline, segment.number))
                        .or_default();
                    if copies.iter().all(|copy| copy.partial) {
                        copies.push(file);
                    }
                }
                None => archive.other_files.push(format!("{stem}.partial")),
            }
        }
        let mut histories = Vec::new();
        for (timeline, file) in &archive.histories {
            match read_text(file)
                .and_then(|text| history::parse(*timeline, &text).map_err(anyhow::Error::from))
            {
                Ok(parsed) => histories.push(parsed),
                Err(error) => {
                    archive
                        .broken_histories
                        .insert(*timeline, format!("{error:#}"));
                }
            }
        }
        let with_wal: Vec<TimelineId> = archive.segments.keys().map(|(t, _)| *t).collect();
        archive.timelines = TimelineGraph::new(histories, with_wal);
        Ok(archive)
    }

    /// The store the archive was listed from: what its files are read from.
    pub fn store(&self) -> &Arc<dyn StoreRead> {
        &self.store
    }

    /// When a timeline's history file was archived: about when the timeline
    /// was created.
    pub fn history_time(&self, timeline: TimelineId) -> Option<SystemTime> {
        self.histories.get(&timeline).map(|file| file.modified)
    }

    /// A synthetic archive listing for tests of the planner: uncompressed
    /// segments of `segment_size` under `dir`, with the given stored sizes and
    /// modification times, no history files and no system identifier (set
    /// the public fields afterwards when a case needs them). A segment given
    /// twice keeps the last entry.
    #[cfg(test)]
    pub fn from_listing(
        dir: &std::path::Path,
        segment_size: SegmentSize,
        files: impl IntoIterator<Item = (WalSegment, u64, SystemTime)>,
    ) -> WalArchive {
        let store: Arc<dyn StoreRead> = Arc::new(super::store::posix::Posix::new(dir));
        let segments = files
            .into_iter()
            .map(|(segment, stored_bytes, modified)| {
                assert_eq!(
                    segment.size, segment_size,
                    "segment `{segment}` has another size than the archive"
                );
                let file = ArchivedFile::new(
                    Arc::clone(&store),
                    ObjectInfo {
                        key: segment.file_name(),
                        size: stored_bytes,
                        modified,
                        version: Version(String::new()),
                    },
                    Compression::None,
                    false,
                );
                ((segment.timeline, segment.number), vec![file])
            })
            .collect::<BTreeMap<_, _>>();
        let segments_timelines: Vec<TimelineId> = segments.keys().map(|(t, _)| *t).collect();
        WalArchive {
            store,
            segment_size,
            system_identifier: None,
            major_version: None,
            segments,
            histories: BTreeMap::new(),
            backup_histories: BTreeMap::new(),
            other_files: Vec::new(),
            timelines: TimelineGraph::new([], segments_timelines),
            broken_histories: BTreeMap::new(),
        }
    }

    /// The copy of a segment to read: plain when there is one, else the
    /// fastest to decode.
    pub fn segment(&self, segment: WalSegment) -> Option<&ArchivedFile> {
        self.copies(segment).first()
    }

    /// Every copy of a segment in the archive, the preferred one first;
    /// empty when it is missing. Several copies must hold the same bytes
    /// once decompressed: see [`check_copies_agree`].
    pub fn copies(&self, segment: WalSegment) -> &[ArchivedFile] {
        self.segments
            .get(&(segment.timeline, segment.number))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Segments stored more than once (plain and compressed, or in two
    /// compressions), in WAL order.
    pub fn segments_with_copies(&self) -> impl Iterator<Item = WalSegment> + '_ {
        self.segments
            .iter()
            .filter(|(_, copies)| copies.len() > 1)
            .map(|((timeline, number), _)| WalSegment {
                timeline: *timeline,
                number: *number,
                size: self.segment_size,
            })
    }

    /// The newest segment of a timeline in the archive.
    pub fn last_segment(&self, timeline: TimelineId) -> Option<WalSegment> {
        self.segments
            .range((timeline, 0)..=(timeline, u64::MAX))
            .next_back()
            .map(|((timeline, number), _)| WalSegment {
                timeline: *timeline,
                number: *number,
                size: self.segment_size,
            })
    }

    /// The newest segment the archive holds along `path`: the last segment of
    /// the newest timeline that has one in the part of the WAL the path reads
    /// from it.
    pub fn last_segment_on(&self, path: &TimelinePath) -> Option<WalSegment> {
        let size = self.segment_size;
        for (index, step) in path.steps.iter().enumerate().rev() {
            let Some(last) = self.last_segment(step.timeline) else {
                continue;
            };
            let begin = WalSegment::containing(step.timeline, step.begins, size).number;
            // The path reads this timeline's files only until the next timeline
            // begins (the segment of a switch point is the child's).
            let end = path.steps.get(index + 1).map(|next| {
                WalSegment::containing(next.timeline, next.begins, size)
                    .number
                    .saturating_sub(1)
            });
            let capped = match end {
                Some(end) if last.number > end => WalSegment {
                    number: end,
                    ..last
                },
                _ => last,
            };
            if capped.number >= begin && self.segment(capped).is_some() {
                return Some(capped);
            }
        }
        None
    }

    /// The oldest segment of a timeline in the archive.
    pub fn first_segment(&self, timeline: TimelineId) -> Option<WalSegment> {
        self.segments
            .range((timeline, 0)..=(timeline, u64::MAX))
            .next()
            .map(|((timeline, number), _)| WalSegment {
                timeline: *timeline,
                number: *number,
                size: self.segment_size,
            })
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Timelines that have at least one segment or a history file.
    pub fn timelines(&self) -> Vec<TimelineId> {
        let mut timelines: Vec<TimelineId> = self
            .segments
            .keys()
            .map(|(timeline, _)| *timeline)
            .chain(self.histories.keys().copied())
            .collect();
        timelines.sort();
        timelines.dedup();
        timelines
    }
}

/// Keeps the preferred of two copies of the same file under one key.
fn keep_preferred<K: Ord>(map: &mut BTreeMap<K, ArchivedFile>, key: K, file: ArchivedFile) {
    match map.entry(key) {
        std::collections::btree_map::Entry::Vacant(slot) => {
            slot.insert(file);
        }
        std::collections::btree_map::Entry::Occupied(mut slot) => {
            if file.compression.preference() < slot.get().compression.preference() {
                slot.insert(file);
            }
        }
    }
}

/// Every copy of `name` in the archive, plain or compressed, the
/// preferred first: a few `stat`s on a local archive, one listing request
/// on object storage, never a listing of a large archive.
pub fn copies_in(store: &Arc<dyn StoreRead>, name: &str) -> Result<Vec<ArchivedFile>> {
    let candidates: Vec<(String, Compression)> = Compression::ALL
        .iter()
        .map(|compression| (format!("{name}{}", compression.suffix()), *compression))
        .collect();
    let partial = name.ends_with(".partial");
    copies_among(store, name, &candidates, partial)
}

/// The copies of a segment's `.partial` file, in both namings (the
/// compression's suffix after `.partial`, as pitr writes it, or before it,
/// as other tools do), with one lookup: one listing request on object
/// storage.
pub fn partial_copies_in(
    store: &Arc<dyn StoreRead>,
    segment_name: &str,
) -> Result<Vec<ArchivedFile>> {
    let partial_name = format!("{segment_name}.partial");
    let mut candidates: Vec<(String, Compression)> = Compression::ALL
        .iter()
        .map(|compression| {
            (
                format!("{partial_name}{}", compression.suffix()),
                *compression,
            )
        })
        .collect();
    candidates.extend(
        Compression::ALL
            .iter()
            .filter(|compression| **compression != Compression::None)
            .map(|compression| {
                (
                    format!("{segment_name}{}.partial", compression.suffix()),
                    *compression,
                )
            }),
    );
    copies_among(store, &partial_name, &candidates, true)
}

/// The candidates that exist, in the order given (the preferred first).
fn copies_among(
    store: &Arc<dyn StoreRead>,
    name: &str,
    candidates: &[(String, Compression)],
    partial: bool,
) -> Result<Vec<ArchivedFile>> {
    let keys: Vec<String> = candidates.iter().map(|(key, _)| key.clone()).collect();
    let found = store
        .existing_of(&keys)
        .with_context(|| format!("cannot read `{}`", store.describe(name)))?;
    Ok(candidates
        .iter()
        .filter_map(|(key, compression)| {
            let object = found.iter().find(|object| &object.key == key)?;
            Some(ArchivedFile::new(
                Arc::clone(store),
                object.clone(),
                *compression,
                partial,
            ))
        })
        .collect())
}

/// Checks that the copies of one file hold the same bytes once
/// decompressed; the error names the first two that differ.
pub fn check_copies_agree(copies: &[ArchivedFile]) -> Result<()> {
    let Some((first, others)) = copies.split_first() else {
        return Ok(());
    };
    for other in others {
        let mut a = first
            .open()
            .with_context(|| format!("cannot open `{}`", first.describe()))?;
        let mut b = other
            .open()
            .with_context(|| format!("cannot open `{}`", other.describe()))?;
        let same = crate::compression::same_contents(&mut a, &mut b).with_context(|| {
            format!(
                "cannot compare `{}` with `{}`",
                first.describe(),
                other.describe()
            )
        })?;
        if !same {
            bail!(
                "`{}` and `{}` are two copies of the same WAL file with different contents; keep the right one (check both with pg_waldump) and move the other out of the archive",
                first.describe(),
                other.describe()
            );
        }
    }
    Ok(())
}

/// Reads a small (possibly compressed) text file of the archive.
pub fn read_text(file: &ArchivedFile) -> Result<String> {
    let mut reader = file
        .open()
        .with_context(|| format!("cannot open `{}`", file.describe()))?;
    let mut text = String::new();
    reader
        .by_ref()
        .take(16 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read `{}`", file.describe()))?;
    Ok(text)
}

/// Reads the long page header at the start of an archived segment.
pub fn read_long_header(file: &ArchivedFile) -> Result<LongPageHeader> {
    let mut reader = file
        .open()
        .with_context(|| format!("cannot open `{}`", file.describe()))?;
    let mut bytes = [0u8; LONG_HEADER_LEN];
    reader
        .read_exact(&mut bytes)
        .with_context(|| format!("cannot read the page header of `{}`", file.describe()))?;
    LongPageHeader::parse(&bytes).with_context(|| {
        format!(
            "`{}` is not a WAL segment: its first page has no valid long header",
            file.describe()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use std::fs;
    use std::path::Path;

    fn write_compressed(path: &Path, compression: Compression, data: &[u8]) {
        let mut encoder = compression
            .encoder(fs::File::create(path).unwrap(), None)
            .unwrap();
        std::io::Write::write_all(&mut encoder, data).unwrap();
        encoder.finish().unwrap();
    }

    /// A WAL segment of 1 MiB with a valid long page header.
    fn segment_bytes(seed: u8) -> Vec<u8> {
        let mut bytes = vec![seed; 1 << 20];
        bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        bytes[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        bytes[8..16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        bytes[24..32].copy_from_slice(&42u64.to_le_bytes());
        bytes[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
        bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
        bytes
    }

    #[test]
    fn all_copies_of_a_segment_are_listed_preferred_first() {
        let dir = tempfile::tempdir().unwrap();
        let name = "000000010000000000000001";
        let data = segment_bytes(7);
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            write_compressed(
                &dir.path().join(format!("{name}{}", compression.suffix())),
                compression,
                &data,
            );
        }
        write_compressed(
            &dir.path().join("000000010000000000000002.lz4"),
            Compression::Lz4,
            &data,
        );
        write_compressed(
            &dir.path().join("000000010000000000000002.zst"),
            Compression::Zstd,
            &data,
        );
        write_compressed(
            &dir.path().join("00000002.history.gz"),
            Compression::Gzip,
            b"1\t0/2000000\tno recovery target specified\n",
        );
        write_compressed(
            &dir.path()
                .join("000000010000000000000001.00000028.backup.zst"),
            Compression::Zstd,
            b"START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n",
        );
        fs::write(dir.path().join("000000010000000000000003.partial"), b"x").unwrap();
        fs::write(
            dir.path().join("000000010000000000000003.lz4.partial"),
            b"x",
        )
        .unwrap();

        let store: Arc<dyn StoreRead> =
            Arc::new(super::super::store::posix::Posix::new(dir.path()));
        let archive = WalArchive::scan(store, SegmentSize::DEFAULT).unwrap();
        assert_eq!(archive.segment_size.bytes(), 1 << 20);
        let first = WalSegment::parse(name, archive.segment_size).unwrap();
        let second = WalSegment::parse("000000010000000000000002", archive.segment_size).unwrap();
        let kinds: Vec<Compression> = archive
            .copies(first)
            .iter()
            .map(|c| c.compression)
            .collect();
        assert_eq!(
            kinds,
            [Compression::None, Compression::Zstd, Compression::Gzip]
        );
        assert_eq!(
            archive.segment(second).unwrap().compression,
            Compression::Lz4
        );
        // Segment 3 exists only as partial files, which stand in for it.
        let third = WalSegment::parse("000000010000000000000003", archive.segment_size).unwrap();
        assert!(archive.segment(third).unwrap().partial);
        assert_eq!(
            archive.segments_with_copies().collect::<Vec<_>>(),
            [first, second, third]
        );
        assert_eq!(
            archive.histories[&TimelineId::new(2).unwrap()].compression,
            Compression::Gzip
        );
        assert!(archive
            .backup_histories
            .contains_key("000000010000000000000001.00000028.backup"));
        assert!(archive.other_files.is_empty(), "{:?}", archive.other_files);
        check_copies_agree(archive.copies(first)).unwrap();

        // A copy that differs is named, together with the preferred one.
        let mut other = data.clone();
        other[5000] ^= 0xff;
        write_compressed(
            &dir.path().join("000000010000000000000002.zst"),
            Compression::Zstd,
            &other,
        );
        let error = check_copies_agree(archive.copies(second))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("000000010000000000000002.lz4`")
                && error.contains("000000010000000000000002.zst`"),
            "{error}"
        );
    }
}
