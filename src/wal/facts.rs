//! What the WAL holds, in the terms planning needs, and the searches over it.
//!
//! Planning asks questions such as "when was the last commit on this
//! timeline path?" or "which record will a time target stop at?". They are
//! answered from per-segment facts ([`SegmentFacts`]: first and last
//! transaction end, restore points, where valid WAL ends) and, for exact
//! positions, the events of one segment. Both come through [`WalSource`], so
//! the searches here are pure and tested over synthetic WAL; the real source
//! decodes archived segments and caches their facts.
//!
//! Events are attributed to the segment in which their record *starts*, so
//! a segment's facts do not depend on which segments were decoded with it.

use chrono::{DateTime, Utc};

use super::timelines::TimelinePath;
use super::xid::FullXid;
use super::{Lsn, SegmentSize, WalSegment};

/// A commit, abort or restore point: the events a recovery target stops at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StopEvent {
    pub start: Lsn,
    pub end: Lsn,
    pub time: DateTime<Utc>,
    pub kind: StopKind,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    Commit { xid: u32 },
    Abort { xid: u32 },
    RestorePoint { name: String },
}

impl StopEvent {
    /// Commits and aborts are what time and xid targets compare against.
    pub fn xid(&self) -> Option<u32> {
        match &self.kind {
            StopKind::Commit { xid } | StopKind::Abort { xid } => Some(*xid),
            StopKind::RestorePoint { .. } => None,
        }
    }

    pub fn is_transaction_end(&self) -> bool {
        self.xid().is_some()
    }
}

/// How a segment's valid WAL ends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentEnding {
    /// Valid to the end; WAL goes on in the next segment.
    Continues,
    /// An `XLOG_SWITCH` record ends it.
    Switch,
    /// Valid WAL ends here (the last segment of an archive, normally).
    EndOfWal,
    /// A record fails its checks: the segment is damaged.
    Corrupt { problem: String },
}

/// Facts about one segment file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentFacts {
    pub records: u64,
    /// The first and last commit or abort starting here, in WAL order.
    pub first_transaction_end: Option<StopEvent>,
    pub last_transaction_end: Option<StopEvent>,
    /// The latest commit or abort time here (commit times are not
    /// strictly ordered in the WAL).
    pub max_transaction_time: Option<DateTime<Utc>>,
    pub min_xid: Option<u32>,
    pub max_xid: Option<u32>,
    pub restore_points: Vec<StopEvent>,
    /// The full next xid of the last checkpoint record starting here: the
    /// epoch of the xids around it.
    #[serde(default)]
    pub checkpoint_next_xid: Option<FullXid>,
    /// Start and end of the last valid record starting here.
    pub last_record_start: Option<Lsn>,
    pub valid_until: Option<Lsn>,
    pub ending: Option<SegmentEnding>,
}

impl SegmentFacts {
    /// Accounts for one record starting in the segment.
    pub fn add(&mut self, start: Lsn, end: Lsn, event: Option<StopEvent>) {
        self.records += 1;
        self.last_record_start = Some(start);
        self.valid_until = Some(end);
        let Some(event) = event else {
            return;
        };
        if let Some(xid) = event.xid() {
            self.min_xid = Some(self.min_xid.map_or(xid, |m| m.min(xid)));
            self.max_xid = Some(self.max_xid.map_or(xid, |m| m.max(xid)));
            self.max_transaction_time = Some(
                self.max_transaction_time
                    .map_or(event.time, |m| m.max(event.time)),
            );
            if self.first_transaction_end.is_none() {
                self.first_transaction_end = Some(event.clone());
            }
            self.last_transaction_end = Some(event);
        } else {
            self.restore_points.push(event);
        }
    }

    /// Accounts for a checkpoint record (after its [`SegmentFacts::add`]).
    pub fn add_checkpoint(&mut self, next_xid: FullXid) {
        self.checkpoint_next_xid = Some(next_xid);
    }

    pub fn is_corrupt(&self) -> Option<&str> {
        match &self.ending {
            Some(SegmentEnding::Corrupt { problem }) => Some(problem),
            _ => None,
        }
    }
}

/// Why a question about the WAL could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read WAL segment `{segment}`: {reason}")]
    Unreadable { segment: WalSegment, reason: String },
    #[error("WAL segment `{segment}` is corrupt: {problem}")]
    Corrupt {
        segment: WalSegment,
        problem: String,
    },
}

/// Where facts and events come from.
pub trait WalSource {
    fn segment_size(&self) -> SegmentSize;
    /// Facts of a segment file; `None` if the archive does not have it.
    fn facts(&self, segment: WalSegment) -> Result<Option<SegmentFacts>, FactsError>;
    /// The stop events of records starting in the segment, in WAL order.
    fn events(&self, segment: WalSegment) -> Result<Vec<StopEvent>, FactsError>;
}

/// The segments a path reads between two segment numbers, as they exist.
fn facts_at(
    source: &dyn WalSource,
    path: &TimelinePath,
    number: u64,
) -> Result<Option<(WalSegment, SegmentFacts)>, FactsError> {
    let segment = path.segment(number, source.segment_size());
    Ok(source.facts(segment)?.map(|facts| (segment, facts)))
}

/// A span of segment numbers along a path: `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

/// The last commit or abort at or before `before` (exclusive) in `span`,
/// searching backwards; with `before = None`, the last one of the span.
pub fn last_transaction_end(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
    before: Option<Lsn>,
) -> Result<Option<StopEvent>, FactsError> {
    for number in (span.first..=span.last).rev() {
        let Some((segment, facts)) = facts_at(source, path, number)? else {
            continue;
        };
        if facts.last_transaction_end.is_none() {
            continue;
        }
        let cut = before.is_some_and(|before| facts.valid_until.is_some_and(|end| end > before));
        if !cut {
            return Ok(facts.last_transaction_end);
        }
        let found = source
            .events(segment)?
            .into_iter()
            .rev()
            .find(|e| e.is_transaction_end() && before.is_none_or(|b| e.start < b));
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The latest commit or abort time of records before `before` in `span`:
/// a time target below it would stop before `before`.
pub fn max_transaction_time_before(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
    before: Lsn,
) -> Result<Option<DateTime<Utc>>, FactsError> {
    let mut latest: Option<DateTime<Utc>> = None;
    for number in span.first..=span.last {
        let Some((segment, facts)) = facts_at(source, path, number)? else {
            continue;
        };
        if facts.valid_until.is_some_and(|end| end <= before) {
            latest = latest.max(facts.max_transaction_time);
        } else {
            for event in source.events(segment)? {
                if event.is_transaction_end() && event.start < before {
                    latest = latest.max(Some(event.time));
                }
            }
        }
    }
    Ok(latest)
}

/// The record a time target stops at: the first commit or abort, in WAL
/// order from `from`, whose time is after `time` (at or after it when
/// `inclusive` is false), as PostgreSQL's recoveryStopsBefore decides.
///
/// Commit times almost always grow with the WAL, so the segment is found by
/// a binary search over segment facts (a few segments decoded, not the
/// archive), then confirmed by looking backwards for an earlier match.
pub fn time_stop(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
    from: Lsn,
    time: DateTime<Utc>,
    inclusive: bool,
) -> Result<Option<StopEvent>, FactsError> {
    let passes = |t: DateTime<Utc>| if inclusive { t > time } else { t >= time };
    let first = span.first.max(from.value() / source.segment_size().bytes());
    if first > span.last {
        return Ok(None);
    }
    // Smallest segment whose latest transaction time passes, assuming
    // order; segments without transactions take their next neighbour's.
    let (mut low, mut high) = (first, span.last + 1);
    while low < high {
        let middle = low + (high - low) / 2;
        let mut probe = middle;
        let mut verdict = None;
        while probe <= span.last {
            if let Some((_, facts)) = facts_at(source, path, probe)? {
                if let Some(max) = facts.max_transaction_time {
                    verdict = Some(passes(max));
                    break;
                }
            }
            probe += 1;
        }
        match verdict {
            Some(true) => high = middle,
            Some(false) => low = probe + 1,
            None => high = middle,
        }
    }
    // Walk back while earlier segments also hold a passing commit (clock
    // skew between backends), then scan forward in WAL order.
    // Commit times are stamped just before the record is inserted, so
    // they are out of order only among concurrent commits: two segments of
    // margin are plenty.
    let mut start = low.min(span.last);
    let mut margin = 2;
    while start > first && margin > 0 {
        let earlier = facts_at(source, path, start - 1)?;
        match earlier.and_then(|(_, f)| f.max_transaction_time) {
            Some(max) if passes(max) => {
                start -= 1;
                margin = 2;
            }
            Some(_) => {
                start -= 1;
                margin -= 1;
            }
            None => start -= 1,
        }
    }
    for number in start..=span.last {
        let Some((segment, facts)) = facts_at(source, path, number)? else {
            continue;
        };
        if !facts.max_transaction_time.is_some_and(passes) {
            continue;
        }
        for event in source.events(segment)? {
            if event.is_transaction_end() && event.start >= from && passes(event.time) {
                return Ok(Some(event));
            }
        }
    }
    Ok(None)
}

/// The first commit or abort of transaction `xid` at or after `from`.
pub fn find_xid(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
    from: Lsn,
    xid: u32,
) -> Result<Option<StopEvent>, FactsError> {
    let first = span.first.max(from.value() / source.segment_size().bytes());
    for number in first..=span.last {
        let Some((segment, facts)) = facts_at(source, path, number)? else {
            continue;
        };
        let in_range = matches!((facts.min_xid, facts.max_xid), (Some(min), Some(max)) if min <= xid && xid <= max);
        if !in_range {
            continue;
        }
        for event in source.events(segment)? {
            if event.xid() == Some(xid) && event.start >= from {
                return Ok(Some(event));
            }
        }
    }
    Ok(None)
}

/// The 64-bit ID of the transaction that `event` ends: its 32-bit xid
/// widened by the next full xid of the nearest checkpoint record in its
/// segment or before it, back to segment `first`. None when the event is no
/// commit or abort, or no checkpoint record is found there.
pub fn full_xid_of(
    source: &dyn WalSource,
    path: &TimelinePath,
    first: u64,
    event: &StopEvent,
) -> Result<Option<FullXid>, FactsError> {
    let Some(xid) = event.xid() else {
        return Ok(None);
    };
    let size = source.segment_size();
    let own = event.start.value() / size.bytes();
    for number in (first.min(own)..=own).rev() {
        if let Some((_, facts)) = facts_at(source, path, number)? {
            if let Some(next_xid) = facts.checkpoint_next_xid {
                return Ok(FullXid::widen(next_xid, xid));
            }
        }
    }
    Ok(None)
}

/// The first restore point named `name` at or after `from`.
pub fn find_restore_point(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
    from: Lsn,
    name: &str,
) -> Result<Option<StopEvent>, FactsError> {
    let first = span.first.max(from.value() / source.segment_size().bytes());
    for number in first..=span.last {
        let Some((_, facts)) = facts_at(source, path, number)? else {
            continue;
        };
        if let Some(found) = facts.restore_points.iter().find(|event| {
            event.start >= from
                && matches!(&event.kind, StopKind::RestorePoint { name: n } if n == name)
        }) {
            return Ok(Some(found.clone()));
        }
    }
    Ok(None)
}

/// The end of valid WAL in the last segment of `span`: the last record's
/// start and end.
pub fn wal_end(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
) -> Result<Option<(Lsn, Lsn)>, FactsError> {
    for number in (span.first..=span.last).rev() {
        if let Some((_, facts)) = facts_at(source, path, number)? {
            if let (Some(start), Some(end)) = (facts.last_record_start, facts.valid_until) {
                return Ok(Some((start, end)));
            }
        }
    }
    Ok(None)
}

/// The first damaged segment of `span`, if any.
pub fn first_corrupt(
    source: &dyn WalSource,
    path: &TimelinePath,
    span: Span,
) -> Result<Option<(WalSegment, String)>, FactsError> {
    for number in span.first..=span.last {
        if let Some((segment, facts)) = facts_at(source, path, number)? {
            if let Some(problem) = facts.is_corrupt() {
                return Ok(Some((segment, problem.to_string())));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
pub mod fake {
    //! Synthetic WAL for tests: events placed at LSNs, segments derived.

    use std::collections::BTreeMap;

    use super::*;

    pub struct FakeWal {
        pub size: SegmentSize,
        pub path: TimelinePath,
        pub events: BTreeMap<u64, Vec<StopEvent>>,
        /// Segment numbers present in the archive.
        pub present: std::ops::RangeInclusive<u64>,
    }

    impl WalSource for FakeWal {
        fn segment_size(&self) -> SegmentSize {
            self.size
        }

        fn facts(&self, segment: WalSegment) -> Result<Option<SegmentFacts>, FactsError> {
            if !self.present.contains(&segment.number) {
                return Ok(None);
            }
            let mut facts = SegmentFacts::default();
            for event in self.events.get(&segment.number).into_iter().flatten() {
                facts.add(event.start, event.end, Some(event.clone()));
            }
            if facts.records == 0 {
                let start = segment.start_lsn();
                facts.add(start, Lsn::new(start.value() + 24), None);
            }
            Ok(Some(facts))
        }

        fn events(&self, segment: WalSegment) -> Result<Vec<StopEvent>, FactsError> {
            Ok(self
                .events
                .get(&segment.number)
                .cloned()
                .unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeWal;
    use super::*;
    use crate::wal::timelines::PathStep;
    use crate::wal::TimelineId;

    const SEG: u64 = 16 << 20;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap()
    }

    fn commit(segment: u64, offset: u64, xid: u32, second: i64) -> StopEvent {
        let start = Lsn::new(segment * SEG + offset);
        StopEvent {
            start,
            end: Lsn::new(start.value() + 34),
            time: at(second),
            kind: StopKind::Commit { xid },
        }
    }

    /// Segments 2..=40; a commit every segment at second = 10 × segment,
    /// two per segment from 20 on; segment 30 has none.
    fn wal() -> FakeWal {
        let mut events = std::collections::BTreeMap::new();
        for segment in 2..=40u64 {
            if segment == 30 {
                continue;
            }
            let mut list = vec![commit(
                segment,
                100,
                1000 + segment as u32,
                segment as i64 * 10,
            )];
            if segment >= 20 {
                list.push(commit(
                    segment,
                    5000,
                    2000 + segment as u32,
                    segment as i64 * 10 + 5,
                ));
            }
            events.insert(segment, list);
        }
        events.entry(25).or_insert_with(Vec::new).push(StopEvent {
            start: Lsn::new(25 * SEG + 9000),
            end: Lsn::new(25 * SEG + 9100),
            time: at(256),
            kind: StopKind::RestorePoint { name: "rp".into() },
        });
        FakeWal {
            size: SegmentSize::DEFAULT,
            path: TimelinePath {
                steps: vec![PathStep {
                    timeline: TimelineId::FIRST,
                    begins: Lsn::ZERO,
                    ends: None,
                }],
            },
            events,
            present: 2..=40,
        }
    }

    const SPAN: Span = Span { first: 2, last: 40 };

    #[test]
    fn time_stop_finds_the_first_later_commit() {
        let wal = wal();
        let from = Lsn::new(2 * SEG);
        let stop = time_stop(&wal, &wal.path, SPAN, from, at(203), true)
            .unwrap()
            .unwrap();
        assert_eq!(stop.time, at(205));
        assert_eq!(stop.xid(), Some(2020));
        // Exactly at a commit time: inclusive stops after it, exclusive before it.
        let inclusive = time_stop(&wal, &wal.path, SPAN, from, at(205), true)
            .unwrap()
            .unwrap();
        assert_eq!(inclusive.time, at(210));
        let exclusive = time_stop(&wal, &wal.path, SPAN, from, at(205), false)
            .unwrap()
            .unwrap();
        assert_eq!(exclusive.time, at(205));
        // Across the segment without commits.
        let across = time_stop(&wal, &wal.path, SPAN, from, at(296), true)
            .unwrap()
            .unwrap();
        assert_eq!(across.time, at(310));
        // After the last commit: none.
        assert!(time_stop(&wal, &wal.path, SPAN, from, at(405), true)
            .unwrap()
            .is_none());
        // Before the first: the first.
        assert_eq!(
            time_stop(&wal, &wal.path, SPAN, from, at(0), true)
                .unwrap()
                .unwrap()
                .time,
            at(20)
        );
    }

    #[test]
    fn time_stop_respects_out_of_order_commit_times() {
        let mut wal = wal();
        // A commit in segment 17 stamped later than the first of segment 18.
        wal.events
            .get_mut(&17)
            .unwrap()
            .push(commit(17, 9000, 7777, 175));
        let stop = time_stop(&wal, &wal.path, SPAN, Lsn::new(2 * SEG), at(171), true)
            .unwrap()
            .unwrap();
        assert_eq!(stop.xid(), Some(7777));
    }

    #[test]
    fn last_transaction_and_consistent_point() {
        let wal = wal();
        let last = last_transaction_end(&wal, &wal.path, SPAN, None)
            .unwrap()
            .unwrap();
        assert_eq!(last.time, at(405));
        let before = last_transaction_end(&wal, &wal.path, SPAN, Some(Lsn::new(22 * SEG + 4000)))
            .unwrap()
            .unwrap();
        assert_eq!(before.time, at(220));
        let max = max_transaction_time_before(
            &wal,
            &wal.path,
            Span {
                first: 21,
                last: 22,
            },
            Lsn::new(22 * SEG + 4000),
        )
        .unwrap();
        assert_eq!(max, Some(at(220)));
    }

    #[test]
    fn xids_and_restore_points() {
        let wal = wal();
        let from = Lsn::new(2 * SEG);
        assert_eq!(
            find_xid(&wal, &wal.path, SPAN, from, 2033)
                .unwrap()
                .unwrap()
                .time,
            at(335)
        );
        assert!(find_xid(&wal, &wal.path, SPAN, from, 99).unwrap().is_none());
        assert!(find_xid(&wal, &wal.path, SPAN, Lsn::new(34 * SEG), 2033)
            .unwrap()
            .is_none());
        assert_eq!(
            find_restore_point(&wal, &wal.path, SPAN, from, "rp")
                .unwrap()
                .unwrap()
                .time,
            at(256)
        );
        assert!(find_restore_point(&wal, &wal.path, SPAN, from, "nope")
            .unwrap()
            .is_none());
        assert_eq!(
            wal_end(&wal, &wal.path, SPAN).unwrap().unwrap().1,
            Lsn::new(40 * SEG + 5034)
        );
    }
}
