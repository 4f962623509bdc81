//! What one segment holds, at a glance: enough to pick the segments a
//! recovery target needs and to find where an archive's WAL ends.

use chrono::{DateTime, Utc};

use crate::wal::{Lsn, WalSegment};

use super::error::WalEnd;
use super::event::{Event, EventKind};

/// How a segment's valid WAL ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Not decoded to its end yet (the summary was taken mid-way).
    InProgress,
    /// Valid to the last byte; WAL goes on in the next segment. If a record
    /// crosses into it, `record_in_progress` is where that record starts.
    Continues { record_in_progress: Option<Lsn> },
    /// An `XLOG_SWITCH` record at `record` ends the segment early; the
    /// rest of it is unused.
    Switch { record: Lsn },
    /// Valid WAL ends inside this segment.
    EndOfWal(WalEnd),
    /// Not read: valid WAL had already ended in an earlier segment.
    AfterEnd,
}

/// Per-segment totals. Records are counted in the segment where they end
/// (where their last byte is), because that is the segment replay needs
/// in order to apply them; a record crossing into the next segment counts
/// there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub segment: WalSegment,
    /// Valid records that end in this segment.
    pub records: u64,
    pub commits: u64,
    pub aborts: u64,
    /// Time of the first commit or abort ending in this segment, in WAL order.
    pub first_transaction_end: Option<DateTime<Utc>>,
    /// Time of the last commit or abort ending in this segment, in WAL order.
    pub last_transaction_end: Option<DateTime<Utc>>,
    pub restore_points: Vec<String>,
    /// The end of the last complete, valid record decoded so far — in this
    /// segment or, if none ends here, an earlier one. At the end of an
    /// archive this is how far replay can go.
    pub valid_until: Option<Lsn>,
    pub end: SegmentEnd,
}

impl SegmentSummary {
    pub(super) fn new(segment: WalSegment, valid_until: Option<Lsn>) -> SegmentSummary {
        SegmentSummary {
            segment,
            records: 0,
            commits: 0,
            aborts: 0,
            first_transaction_end: None,
            last_transaction_end: None,
            restore_points: Vec::new(),
            valid_until,
            end: SegmentEnd::InProgress,
        }
    }

    /// Accounts for one valid record and its event, if it has one.
    pub(super) fn add_record(&mut self, end: Lsn, event: Option<&Event>) {
        self.records += 1;
        self.valid_until = Some(end);
        let Some(event) = event else {
            return;
        };
        let time = match &event.kind {
            EventKind::Commit(t) => {
                self.commits += 1;
                t.time
            }
            EventKind::Abort(t) => {
                self.aborts += 1;
                t.time
            }
            EventKind::RestorePoint { name, .. } => {
                self.restore_points.push(name.clone());
                return;
            }
            _ => return,
        };
        self.first_transaction_end.get_or_insert(time);
        self.last_transaction_end = Some(time);
    }

    /// True if the segment ends with `XLOG_SWITCH`.
    pub fn ends_with_switch(&self) -> bool {
        matches!(self.end, SegmentEnd::Switch { .. })
    }

    /// The end of valid WAL, if it lies in this segment.
    pub fn end_of_wal(&self) -> Option<&WalEnd> {
        match &self.end {
            SegmentEnd::EndOfWal(end) => Some(end),
            _ => None,
        }
    }
}
