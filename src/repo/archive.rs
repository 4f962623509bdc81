//! The WAL archive: which segments, timeline histories and backup history
//! files it holds, as filled by any `archive_command` or `pg_receivewal`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::compression::Compression;
use crate::wal::history;
use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};
use crate::wal::segment::is_segment_name;
use crate::wal::timelines::TimelineGraph;
use crate::wal::{SegmentSize, TimelineId, WalSegment};

/// One file of the archive.
#[derive(Clone, Debug)]
pub struct ArchivedFile {
    pub path: PathBuf,
    pub compression: Compression,
    /// Size on disk (compressed size for compressed files).
    pub stored_bytes: u64,
    pub modified: SystemTime,
}

/// A listing of the archive directory, made once per command.
#[derive(Debug)]
pub struct WalArchive {
    pub dir: PathBuf,
    pub segment_size: SegmentSize,
    /// From the first segment's page header, when there is a segment.
    pub system_identifier: Option<u64>,
    pub major_version: Option<u32>,
    segments: BTreeMap<(TimelineId, u64), ArchivedFile>,
    pub histories: BTreeMap<TimelineId, ArchivedFile>,
    /// Backup history files (`<segment>.<offset>.backup`) by file name.
    pub backup_histories: BTreeMap<String, ArchivedFile>,
    /// Names that are none of the above (`.partial` files, stray files).
    pub other_files: Vec<String>,
    /// Timelines and where each branched, from the history files.
    pub timelines: TimelineGraph,
    /// History files that could not be read, with the reason.
    pub broken_histories: BTreeMap<TimelineId, String>,
}

impl WalArchive {
    /// Lists `dir`. `fallback_size` is used when the archive holds no segment
    /// to read the segment size from.
    pub fn scan(dir: &Path, fallback_size: SegmentSize) -> Result<WalArchive> {
        let entries = fs::read_dir(dir)
            .with_context(|| format!("cannot read the WAL archive `{}`", dir.display()))?;
        let mut segment_files = Vec::new();
        let mut archive = WalArchive {
            dir: dir.to_path_buf(),
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
        for entry in entries {
            let entry = entry
                .with_context(|| format!("cannot read the WAL archive `{}`", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let metadata = entry
                .metadata()
                .with_context(|| format!("cannot read `{}`", entry.path().display()))?;
            if !metadata.is_file() {
                continue;
            }
            let (stem, compression) = Compression::split_name(&name);
            let file = ArchivedFile {
                path: entry.path(),
                compression,
                stored_bytes: metadata.len(),
                modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            };
            if is_segment_name(stem) {
                segment_files.push((stem.to_string(), file));
            } else if let Some(timeline) = history_timeline(stem) {
                archive.histories.insert(timeline, file);
            } else if stem.ends_with(".backup") && is_segment_name(&stem[..24.min(stem.len())]) {
                archive.backup_histories.insert(stem.to_string(), file);
            } else {
                archive.other_files.push(name);
            }
        }
        // Read the segment size from a real segment: names only make sense
        // once it is known (it sets the radix of the name's low fields).
        segment_files.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, first)) = segment_files.first() {
            let header = read_long_header(first)?;
            archive.segment_size = header.segment_size;
            archive.system_identifier = Some(header.system_identifier);
            archive.major_version = header.major_version();
        }
        for (stem, file) in segment_files {
            match WalSegment::parse(&stem, archive.segment_size) {
                Some(segment) => {
                    // A segment stored twice (plain and compressed) is served
                    // plain; comparing the two is the formats work to come.
                    let key = (segment.timeline, segment.number);
                    let keep_existing = archive
                        .segments
                        .get(&key)
                        .is_some_and(|existing| existing.compression == Compression::None);
                    if !keep_existing {
                        archive.segments.insert(key, file);
                    }
                }
                None => archive.other_files.push(stem),
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
        dir: &Path,
        segment_size: SegmentSize,
        files: impl IntoIterator<Item = (WalSegment, u64, SystemTime)>,
    ) -> WalArchive {
        let segments = files
            .into_iter()
            .map(|(segment, stored_bytes, modified)| {
                assert_eq!(
                    segment.size, segment_size,
                    "segment `{segment}` has another size than the archive"
                );
                let file = ArchivedFile {
                    path: dir.join(segment.file_name()),
                    compression: Compression::None,
                    stored_bytes,
                    modified,
                };
                ((segment.timeline, segment.number), file)
            })
            .collect::<BTreeMap<_, _>>();
        let segments_timelines: Vec<TimelineId> = segments.keys().map(|(t, _)| *t).collect();
        WalArchive {
            dir: dir.to_path_buf(),
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

    pub fn segment(&self, segment: WalSegment) -> Option<&ArchivedFile> {
        self.segments.get(&(segment.timeline, segment.number))
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

/// Reads a small (possibly compressed) text file of the archive.
pub fn read_text(file: &ArchivedFile) -> Result<String> {
    let mut reader = file
        .compression
        .open(&file.path)
        .with_context(|| format!("cannot open `{}`", file.path.display()))?;
    let mut text = String::new();
    reader
        .by_ref()
        .take(16 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read `{}`", file.path.display()))?;
    Ok(text)
}

/// `00000002.history` → timeline 2.
fn history_timeline(name: &str) -> Option<TimelineId> {
    let digits = name.strip_suffix(".history")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TimelineId::new(u32::from_str_radix(digits, 16).ok()?)
}

/// Reads the long page header at the start of an archived segment.
pub fn read_long_header(file: &ArchivedFile) -> Result<LongPageHeader> {
    let mut reader = file
        .compression
        .open(&file.path)
        .with_context(|| format!("cannot open `{}`", file.path.display()))?;
    let mut bytes = [0u8; LONG_HEADER_LEN];
    reader
        .read_exact(&mut bytes)
        .with_context(|| format!("cannot read the page header of `{}`", file.path.display()))?;
    LongPageHeader::parse(&bytes).with_context(|| {
        format!(
            "`{}` is not a WAL segment: its first page has no valid long header",
            file.path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_names() {
        assert_eq!(history_timeline("00000002.history"), TimelineId::new(2));
        assert_eq!(history_timeline("0000000A.history"), TimelineId::new(10));
        assert_eq!(history_timeline("00000000.history"), None);
        assert_eq!(history_timeline("2.history"), None);
    }
}
