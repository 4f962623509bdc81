//! The WAL a restore reads: from the backup's start to the segment where
//! the target is reached, every segment checked to be in the archive or in
//! the backup.

use crate::repo::archive::WalArchive;
use crate::repo::backup::Backup;
use crate::target::Target;
use crate::wal::timelines::TimelinePath;
use crate::wal::WalSegment;

use super::PlanError;

/// The WAL a restore reads, from the backup's start to the stop point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub first: WalSegment,
    pub last: WalSegment,
    pub segments: u64,
    /// Bytes to read: archived files as stored, plus the backup's own WAL.
    pub bytes: u64,
    /// How many of the segments come with the backup itself.
    pub from_backup: u64,
}

/// The WAL from the backup's start up to where the target is reached,
/// checked segment by segment along the timeline path.
pub(super) fn wal_range(
    backup: &Backup,
    archive: &WalArchive,
    path: &TimelinePath,
    end: Option<WalSegment>,
    target: &Target,
    stop_at: Option<WalSegment>,
) -> Result<WalRange, PlanError> {
    let size = archive.segment_size;
    let first = path.segment(
        WalSegment::containing(backup.timeline, backup.start_lsn, size).number,
        size,
    );
    let stop = WalSegment::containing_end(backup.timeline, backup.stop_lsn, size);
    let included_last = backup
        .included_wal
        .iter()
        .filter_map(|name| WalSegment::parse(name, size))
        .map(|segment| segment.number)
        .max();
    let last_number = match target {
        _ if stop_at.is_some() => stop_at
            .map(|s| s.number)
            .unwrap_or(stop.number)
            .max(stop.number),
        Target::Lsn(lsn) => {
            WalSegment::containing(backup.timeline, (*lsn).max(backup.stop_lsn), size).number
        }
        Target::Immediate => stop.number,
        Target::Time(_) | Target::Xid(_) | Target::Name(_) | Target::Latest => end
            .map(|segment| segment.number)
            .into_iter()
            .chain(included_last)
            .max()
            .unwrap_or(stop.number)
            .max(stop.number),
    };
    // Replay always reads the segment holding the start LSN, even for a
    // (damaged) label whose stop equals its start on a segment boundary.
    let last = path.segment(last_number.max(first.number), size);
    let mut bytes = 0;
    let mut from_backup = 0;
    for number in first.number..=last.number {
        let segment = path.segment(number, size);
        if let Some(file) = archive.segment(segment) {
            bytes += file.stored_bytes;
        } else if backup.included_wal.contains(&segment.file_name()) {
            bytes += size.bytes();
            from_backup += 1;
        } else {
            let resumes = (number + 1..=last.number)
                .map(|later| path.segment(later, size))
                .find(|later| archive.segment(*later).is_some());
            return Err(PlanError::MissingWal {
                missing: segment,
                first,
                last,
                last_present: resumes,
            });
        }
    }
    Ok(WalRange {
        first,
        last,
        segments: last.number - first.number + 1,
        bytes,
        from_backup,
    })
}
