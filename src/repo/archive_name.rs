//! The names of the WAL archive: what a file name denotes, in one place for
//! scanning, retention, `wal-push` and `wal-fetch`.
//!
//! PostgreSQL archives four kinds of file (`XLogArchiveNotify` callers):
//! segments (24 hex digits), the `.partial` segment left at the end of a
//! timeline on promotion, timeline history files (`NNNNNNNN.history`) and
//! backup history files (`<segment>.<offset>.backup`). An archive stores
//! each plain or with a compression suffix; `.partial` may come before or
//! after it (`pg_receivewal` writes `<seg>.gz.partial`, an archive_command
//! compressing the server's file writes `<seg>.partial.gz`).

use std::fmt;

use crate::compression::Compression;
use crate::wal::segment::is_segment_name;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

/// A file name as PostgreSQL gives it to `archive_command` and asks for it
/// in `restore_command`: no compression suffix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFileName {
    /// `000000010000000000000003`.
    Segment(String),
    /// `000000010000000000000003.partial`: the segment's name.
    Partial(String),
    /// `00000002.history`: the timeline's 8 hex digits as written
    /// (PostgreSQL never writes timeline 0, but the name is of this kind).
    TimelineHistory(String),
    /// `000000010000000000000011.00000028.backup`: the segment holding the
    /// backup's start, and the start's offset in it (8 hex digits).
    BackupHistory { segment: String, offset: String },
}

impl WalFileName {
    /// Parses an uncompressed name; `None` for anything PostgreSQL does
    /// not archive.
    pub fn parse(name: &str) -> Option<WalFileName> {
        if is_segment_name(name) {
            return Some(WalFileName::Segment(name.to_string()));
        }
        if let Some(segment) = name.strip_suffix(".partial") {
            return is_segment_name(segment).then(|| WalFileName::Partial(segment.to_string()));
        }
        if let Some(digits) = name.strip_suffix(".history") {
            return (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| WalFileName::TimelineHistory(digits.to_string()));
        }
        let rest = name.strip_suffix(".backup")?;
        match (rest.get(..24), rest.get(24..25), rest.get(25..)) {
            (Some(segment), Some("."), Some(offset))
                if is_segment_name(segment)
                    && offset.len() == 8
                    && offset.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(WalFileName::BackupHistory {
                    segment: segment.to_string(),
                    offset: offset.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The segment a segment or `.partial` name denotes, once the archive's
    /// segment size is known (it sets the radix of the name's low fields).
    pub fn segment(&self, size: SegmentSize) -> Option<WalSegment> {
        match self {
            WalFileName::Segment(name) | WalFileName::Partial(name) => {
                WalSegment::parse(name, size)
            }
            _ => None,
        }
    }

    /// The timeline of a history file; `None` for timeline 0 and for other
    /// kinds.
    pub fn history_timeline(&self) -> Option<TimelineId> {
        match self {
            WalFileName::TimelineHistory(digits) => {
                TimelineId::new(u32::from_str_radix(digits, 16).ok()?)
            }
            _ => None,
        }
    }

    /// Where the backup of a backup history file started.
    pub fn backup_start(&self, size: SegmentSize) -> Option<Lsn> {
        match self {
            WalFileName::BackupHistory { segment, offset } => {
                let segment = WalSegment::parse(segment, size)?;
                let offset = u64::from_str_radix(offset, 16).ok()?;
                Some(Lsn::new(segment.start_lsn().value() + offset))
            }
            _ => None,
        }
    }

    /// What `wal-push` accepts: everything PostgreSQL archives.
    pub fn is_pushable(&self) -> bool {
        true
    }

    /// What `wal-fetch` serves: what PostgreSQL's `restore_command` asks
    /// for. It never asks for backup history files.
    pub fn is_servable(&self) -> bool {
        !matches!(self, WalFileName::BackupHistory { .. })
    }

    /// A name no archive can hold, so `wal-fetch` answers "not found"
    /// without asking the store: timeline 1 is where every cluster starts,
    /// and PostgreSQL never writes a history file for it (timeline.c: "Timeline
    /// 1 does not have a history file"). It still asks for one when it
    /// promotes from timeline 1 (to copy the parent's history into the new
    /// timeline's), and on an object store that lookup costs a round trip
    /// at the moment the restored server is being waited for.
    pub fn cannot_exist(&self) -> bool {
        self.history_timeline() == Some(TimelineId::FIRST)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(name) => f.write_str(name),
            WalFileName::Partial(name) => write!(f, "{name}.partial"),
            WalFileName::TimelineHistory(digits) => write!(f, "{digits}.history"),
            WalFileName::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset}.backup")
            }
        }
    }
}

/// The name of a file stored in the archive: what it is, and how it is
/// compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveName {
    pub file: WalFileName,
    pub compression: Compression,
}

impl ArchiveName {
    /// Parses a stored name; `None` for names that are none of the four
    /// kinds (stray files, temporary files of a writer).
    pub fn parse(stored: &str) -> Option<ArchiveName> {
        // `X.partial` and `X.gz.partial`.
        if let Some(inner) = stored.strip_suffix(".partial") {
            let (stem, compression) = Compression::split_name(inner);
            return is_segment_name(stem).then(|| ArchiveName {
                file: WalFileName::Partial(stem.to_string()),
                compression,
            });
        }
        // `X.partial.gz` and every other kind with its suffix.
        let (stem, compression) = Compression::split_name(stored);
        Some(ArchiveName {
            file: WalFileName::parse(stem)?,
            compression,
        })
    }

    /// The name `wal-push` stores a file under: the suffix last.
    pub fn stored_name(&self) -> String {
        format!("{}{}", self.file, self.compression.suffix())
    }
}

/// Every name a copy of `file` may have in the archive, in preference
/// order (see [`Compression::ALL`]): `.partial` files also in
/// `pg_receivewal`'s naming, `<seg>.gz.partial`.
pub fn candidate_names(file: &WalFileName) -> Vec<(String, Compression)> {
    let mut names: Vec<(String, Compression)> = Compression::ALL
        .into_iter()
        .map(|compression| (format!("{file}{}", compression.suffix()), compression))
        .collect();
    if let WalFileName::Partial(segment) = file {
        for compression in Compression::ALL {
            if compression != Compression::None {
                names.push((
                    format!("{segment}{}.partial", compression.suffix()),
                    compression,
                ));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &str = "000000010000000000000003";

    #[test]
    fn partial_names() {
        let partial = |name: &str| {
            ArchiveName::parse(name).and_then(|n| match n.file {
                WalFileName::Partial(s) => Some((s, n.compression)),
                _ => None,
            })
        };
        assert_eq!(
            partial(&format!("{SEG}.partial")),
            Some((SEG.to_string(), Compression::None))
        );
        assert_eq!(
            partial(&format!("{SEG}.gz.partial")),
            Some((SEG.to_string(), Compression::Gzip))
        );
        assert_eq!(
            partial(&format!("{SEG}.partial.zst")),
            Some((SEG.to_string(), Compression::Zstd))
        );
        assert_eq!(partial(SEG), None);
        assert_eq!(ArchiveName::parse("00000002.history.partial"), None);
    }

    #[test]
    fn history_names() {
        let timeline = |name: &str| WalFileName::parse(name).and_then(|n| n.history_timeline());
        assert_eq!(timeline("00000002.history"), TimelineId::new(2));
        assert_eq!(timeline("0000000A.history"), TimelineId::new(10));
        assert_eq!(timeline("00000000.history"), None);
        assert_eq!(timeline("2.history"), None);
        assert_eq!(
            WalFileName::parse("0000000a.history").unwrap().to_string(),
            "0000000a.history"
        );
    }

    #[test]
    fn backup_history_names() {
        let is_backup_history = |name: &str| {
            matches!(
                WalFileName::parse(name),
                Some(WalFileName::BackupHistory { .. })
            )
        };
        assert!(is_backup_history(
            "000000010000000000000011.00000028.backup"
        ));
        assert!(!is_backup_history("000000010000000000000011.backup"));
        assert!(!is_backup_history(
            "000000010000000000000011.0000002G.backup"
        ));
        // Multi-byte characters where the segment name would end: no panic.
        assert!(!is_backup_history("00000001000000000000001é.backup"));
        let name = WalFileName::parse("000000010000000000000011.00000028.backup").unwrap();
        assert_eq!(
            name.backup_start(SegmentSize::DEFAULT),
            Some("0/11000028".parse().unwrap())
        );
        assert_eq!(name.to_string(), "000000010000000000000011.00000028.backup");
    }

    #[test]
    fn only_wal_file_names_are_pushed() {
        let pushable = |name: &str| WalFileName::parse(name).is_some_and(|n| n.is_pushable());
        assert!(pushable(SEG));
        assert!(pushable("00000002.history"));
        assert!(pushable("000000010000000000000003.00000028.backup"));
        assert!(pushable("000000010000000000000003.partial"));
        assert!(!pushable("000000010000000000000003.gz"));
        assert!(!pushable("RECOVERYXLOG"));
        assert!(!pushable("postgresql.conf"));
        assert!(!pushable(""));
        let stored = ArchiveName {
            file: WalFileName::parse("00000002.history").unwrap(),
            compression: Compression::Zstd,
        };
        assert_eq!(stored.stored_name(), "00000002.history.zst");
    }

    #[test]
    fn only_wal_names_are_served() {
        let servable = |name: &str| WalFileName::parse(name).is_some_and(|n| n.is_servable());
        assert!(servable(SEG));
        assert!(servable("00000002.history"));
        assert!(servable("000000010000000000000003.partial"));
        assert!(!servable("../etc/passwd"));
        assert!(!servable("000000010000000000000003.00000028.backup"));
        assert!(!servable(""));
    }

    #[test]
    fn stored_names_round_trip() {
        for name in [
            SEG,
            "000000010000000000000003.zst",
            "00000002.history.gz",
            "000000010000000000000011.00000028.backup.lz4",
            "000000010000000000000003.partial",
            "000000010000000000000003.partial.xz",
        ] {
            assert_eq!(ArchiveName::parse(name).unwrap().stored_name(), name);
        }
        for other in [
            "README",
            ".000000010000000000000003.x.pitr-tmp",
            "2.history",
        ] {
            assert_eq!(ArchiveName::parse(other), None, "{other}");
        }
    }
}
