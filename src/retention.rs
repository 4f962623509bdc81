//! What `pitr expire` keeps and what it removes: a pure function of the
//! backups, the timeline graph, the archive listing and the policy.
//!
//! The rules, each chosen so that nothing a kept backup can still restore
//! through is ever selected:
//!
//! * Backups: `--keep N` keeps the N newest; `--keep-within D` keeps every
//!   backup consistent within the last D *and* the newest one consistent
//!   before it, so that every moment of the window stays restorable. A
//!   backup either rule keeps is kept. There is always at least one.
//! * WAL: a restore from a backup reads WAL from the segment holding the
//!   backup's start onward, along the path of timelines it follows. So every
//!   segment (and `.partial`) from the oldest kept backup's start segment on
//!   is kept on the timeline path of each kept backup and on every timeline
//!   that descends from a kept backup's timeline. Earlier segments go on
//!   every timeline. A timeline above 1 whose history file is missing or
//!   unreadable cannot be placed in the graph, so its segments from that
//!   point on are kept too.
//! * Timeline history files are always kept: they are tiny and every
//!   descendant timeline needs them.
//! * A backup history file (`<segment>.<offset>.backup`) goes when its
//!   backup goes, or when it starts before everything kept and no kept
//!   backup matches it.
//! * Files the archive does not recognise are never touched.
//!
//! This module decides only; `commands::expire` deletes.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};

use crate::repo::archive_name::{ArchiveName, WalFileName};
use crate::wal::timelines::TimelineGraph;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

/// How many backups to keep, and for how long.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest backups (N ≥ 1).
    pub keep_last: Option<usize>,
    /// Keep what is needed to restore to any moment of this window.
    pub keep_within: Option<Duration>,
}

/// What retention needs to know about one backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    pub id: String,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// A time from which on a restore from this backup is possible.
    pub consistent_by: DateTime<FixedOffset>,
    pub bytes: u64,
}

/// One file in the WAL archive directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveEntry {
    pub name: String,
    pub bytes: u64,
}

/// What an archive file name denotes, compression suffixes set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFileKind {
    /// A segment, plain or compressed, or a `.partial` one.
    Segment(WalSegment),
    /// `NNNNNNNN.history`.
    TimelineHistory,
    /// `<segment>.<offset>.backup`, for the backup that started at `start`.
    BackupHistory { start: Lsn },
    /// Anything else.
    Other,
}

/// Classifies an archive file name. `.partial` may come before or after a
/// compression suffix (`pg_receivewal` writes `<seg>.gz.partial`).
pub fn classify(name: &str, size: SegmentSize) -> WalFileKind {
    let Some(parsed) = ArchiveName::parse(name) else {
        return WalFileKind::Other;
    };
    match parsed.file {
        WalFileName::Segment(_) | WalFileName::Partial(_) => parsed
            .file
            .segment(size)
            .map_or(WalFileKind::Other, WalFileKind::Segment),
        WalFileName::TimelineHistory(_) => WalFileKind::TimelineHistory,
        WalFileName::BackupHistory { .. } => parsed
            .file
            .backup_start(size)
            .map_or(WalFileKind::Other, |start| WalFileKind::BackupHistory {
                start,
            }),
    }
}

/// Why a backup is kept, or that it goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// One of the `--keep N` newest (rank 1 is the newest).
    KeepNewest {
        rank: usize,
    },
    /// Consistent within the `--keep-within` window.
    KeepWithinWindow,
    /// The newest backup consistent before the window: restores to the
    /// window's first moments start from it.
    KeepForWindowStart,
    Remove,
}

impl Decision {
    pub fn keeps(&self) -> bool {
        !matches!(self, Decision::Remove)
    }

    /// For people: why the backup stays.
    pub fn describe(&self, policy: &Policy) -> String {
        let window = policy
            .keep_within
            .map(crate::duration::format_duration)
            .unwrap_or_default();
        match self {
            Decision::KeepNewest { rank: 1 } => "the newest backup".to_string(),
            Decision::KeepNewest { rank } => format!("newest backup number {rank}"),
            Decision::KeepWithinWindow => format!("within the last {window}"),
            Decision::KeepForWindowStart => {
                format!("needed to restore to the start of the last {window}")
            }
            Decision::Remove => "removed".to_string(),
        }
    }
}

/// The outcome: what stays, what goes.
#[derive(Clone, Debug)]
pub struct Selection {
    /// One decision per backup, in the order given.
    pub backups: Vec<(BackupSummary, Decision)>,
    /// The oldest kept backup's start segment number: WAL before it goes.
    pub wal_from: Option<u64>,
    /// Timelines along which WAL from `wal_from` on is kept.
    pub needed_timelines: BTreeSet<TimelineId>,
    /// Archive files to remove, oldest first (so an interrupted removal
    /// never leaves a hole in the middle of the archive).
    pub remove_wal: Vec<ArchiveEntry>,
    /// Archive files that stay.
    pub keep_wal: Vec<ArchiveEntry>,
}

impl Selection {
    pub fn kept(&self) -> impl Iterator<Item = &BackupSummary> {
        self.backups
            .iter()
            .filter(|(_, d)| d.keeps())
            .map(|(b, _)| b)
    }

    pub fn removed(&self) -> impl Iterator<Item = &BackupSummary> {
        self.backups
            .iter()
            .filter(|(_, d)| !d.keeps())
            .map(|(b, _)| b)
    }
}

/// Decides which backups stay. `backups` in any order; the result follows
/// that order.
pub fn select_backups(
    backups: &[BackupSummary],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut decisions = vec![Decision::Remove; backups.len()];
    // Newest first: by consistent point, then by stop LSN for ties.
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| {
        (backups[b].consistent_by, backups[b].stop_lsn)
            .cmp(&(backups[a].consistent_by, backups[a].stop_lsn))
    });
    if let Some(keep) = policy.keep_last {
        for (rank, &index) in order.iter().take(keep.max(1)).enumerate() {
            decisions[index] = Decision::KeepNewest { rank: rank + 1 };
        }
    }
    if let Some(window) = policy.keep_within {
        let start = chrono::Duration::from_std(window)
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Newest first: everything consistent inside the window, then the
        // first one consistent at or before its start, then stop.
        for &index in &order {
            let inside = backups[index].consistent_by > start;
            if !decisions[index].keeps() {
                decisions[index] = if inside {
                    Decision::KeepWithinWindow
                } else {
                    Decision::KeepForWindowStart
                };
            }
            if !inside {
                break;
            }
        }
    }
    if !backups.is_empty() && !decisions.iter().any(Decision::keeps) {
        // No policy given (the command line refuses that), yet never
        // remove the last backup.
        decisions[order[0]] = Decision::KeepNewest { rank: 1 };
    }
    decisions
}

/// Timelines whose WAL a restore from a backup on `timeline` may read: its
/// ancestors (the path it was reached by) and every timeline that descends
/// from it.
pub fn timelines_needed_by(graph: &TimelineGraph, timeline: TimelineId) -> BTreeSet<TimelineId> {
    let mut needed = BTreeSet::from([timeline]);
    if let Ok(path) = graph.path(timeline) {
        needed.extend(path.steps.iter().map(|step| step.timeline));
    }
    for other in graph.timelines() {
        if graph.path(other).is_ok_and(|path| path.contains(timeline)) {
            needed.insert(other);
        }
    }
    needed
}

/// The whole decision: backups, then the WAL the kept ones need.
pub fn select(
    backups: &[BackupSummary],
    policy: &Policy,
    now: DateTime<Utc>,
    graph: &TimelineGraph,
    segment_size: SegmentSize,
    archive: &[ArchiveEntry],
) -> Selection {
    let decisions = select_backups(backups, policy, now);
    let backups: Vec<(BackupSummary, Decision)> = backups.iter().cloned().zip(decisions).collect();
    let kept: Vec<&BackupSummary> = backups
        .iter()
        .filter(|(_, d)| d.keeps())
        .map(|(b, _)| b)
        .collect();
    let wal_from = kept
        .iter()
        .map(|b| WalSegment::containing(b.timeline, b.start_lsn, segment_size).number)
        .min();
    let mut needed_timelines = BTreeSet::new();
    for backup in &kept {
        needed_timelines.extend(timelines_needed_by(graph, backup.timeline));
    }
    let kept_starts: BTreeSet<Lsn> = kept.iter().map(|b| b.start_lsn).collect();
    let removed_starts: BTreeSet<Lsn> = backups
        .iter()
        .filter(|(_, d)| !d.keeps())
        .map(|(b, _)| b.start_lsn)
        .collect();

    let mut remove = Vec::new();
    let mut keep = Vec::new();
    for entry in archive {
        let kind = classify(&entry.name, segment_size);
        let goes = match (wal_from, kind) {
            // Without a backup nothing can be restored, but nothing is
            // proven useless either: an archive is never emptied.
            (None, _) => false,
            (Some(from), WalFileKind::Segment(segment)) => {
                segment.number < from
                    || !(needed_timelines.contains(&segment.timeline)
                        || uncertain(graph, segment.timeline))
            }
            (_, WalFileKind::TimelineHistory | WalFileKind::Other) => false,
            (Some(from), WalFileKind::BackupHistory { start }) => {
                !kept_starts.contains(&start)
                    && (removed_starts.contains(&start)
                        || start.value() / segment_size.bytes() < from)
            }
        };
        let sort_key = match kind {
            WalFileKind::Segment(segment) => (segment.number, segment.timeline.value()),
            WalFileKind::BackupHistory { start } => {
                (start.value() / segment_size.bytes(), u32::MAX)
            }
            _ => (u64::MAX, 0),
        };
        if goes {
            remove.push((sort_key, entry.clone()));
        } else {
            keep.push(entry.clone());
        }
    }
    remove.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    Selection {
        backups,
        wal_from,
        needed_timelines,
        remove_wal: remove.into_iter().map(|(_, entry)| entry).collect(),
        keep_wal: keep,
    }
}

/// A timeline above 1 without a readable history file: its ancestors are
/// unknown, so nothing on it is judged unneeded.
fn uncertain(graph: &TimelineGraph, timeline: TimelineId) -> bool {
    timeline != TimelineId::FIRST && graph.history(timeline).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::history;

    const SIZE: SegmentSize = SegmentSize::DEFAULT;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn time(hours_ago: i64) -> DateTime<FixedOffset> {
        (now() - chrono::Duration::hours(hours_ago)).fixed_offset()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A backup on `timeline` that starts at segment `start` (offset 0x28)
    /// and ends in the same segment, `hours_ago` hours ago.
    fn backup(id: &str, timeline: u32, start: u64, hours_ago: i64) -> BackupSummary {
        BackupSummary {
            id: id.to_string(),
            timeline: tli(timeline),
            start_lsn: Lsn::new(start * SIZE.bytes() + 0x28),
            stop_lsn: Lsn::new(start * SIZE.bytes() + 0x138),
            consistent_by: time(hours_ago),
            bytes: 1000,
        }
    }

    fn seg(timeline: u32, number: u64) -> String {
        WalSegment {
            timeline: tli(timeline),
            number,
            size: SIZE,
        }
        .file_name()
    }

    fn entries(names: &[String]) -> Vec<ArchiveEntry> {
        names
            .iter()
            .map(|name| ArchiveEntry {
                name: name.clone(),
                bytes: 16 << 20,
            })
            .collect()
    }

    fn names(entries: &[ArchiveEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    fn kept_ids(selection: &Selection) -> Vec<&str> {
        selection.kept().map(|b| b.id.as_str()).collect()
    }

    fn keep(n: usize) -> Policy {
        Policy {
            keep_last: Some(n),
            keep_within: None,
        }
    }

    fn within(hours: u64) -> Policy {
        Policy {
            keep_last: None,
            keep_within: Some(Duration::from_secs(hours * 3600)),
        }
    }

    #[test]
    fn classifies_archive_names() {
        let s3 = WalSegment {
            timeline: tli(1),
            number: 3,
            size: SIZE,
        };
        for name in [
            "000000010000000000000003",
            "000000010000000000000003.gz",
            "000000010000000000000003.partial",
            "000000010000000000000003.gz.partial",
            "000000010000000000000003.partial.gz",
        ] {
            assert_eq!(classify(name, SIZE), WalFileKind::Segment(s3), "{name}");
        }
        assert_eq!(
            classify("00000002.history", SIZE),
            WalFileKind::TimelineHistory
        );
        assert_eq!(
            classify("00000002.history.gz", SIZE),
            WalFileKind::TimelineHistory
        );
        assert_eq!(
            classify("000000010000000000000011.00000028.backup", SIZE),
            WalFileKind::BackupHistory {
                start: "0/11000028".parse().unwrap()
            }
        );
        for other in [
            "README",
            ".pitr-push-tmp",
            "000000010000000000000011.28.backup",
            "00000001000000000000001G",
            "2.history",
        ] {
            assert_eq!(classify(other, SIZE), WalFileKind::Other, "{other}");
        }
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let backups = [
            backup("a", 1, 2, 50),
            backup("c", 1, 8, 10),
            backup("b", 1, 5, 30),
        ];
        let decisions = select_backups(&backups, &keep(2), now());
        assert_eq!(
            decisions,
            [
                Decision::Remove,
                Decision::KeepNewest { rank: 1 },
                Decision::KeepNewest { rank: 2 }
            ]
        );
        // More than there are: everything stays.
        assert!(select_backups(&backups, &keep(9), now())
            .iter()
            .all(Decision::keeps));
    }

    #[test]
    fn keep_within_keeps_the_backup_that_reaches_the_window_start() {
        let backups = [
            backup("a", 1, 2, 72),
            backup("b", 1, 5, 40),
            backup("c", 1, 8, 20),
            backup("d", 1, 9, 2),
        ];
        // A 24 h window starts 24 h ago: c and d lie inside, b is the
        // newest before it, a goes.
        let decisions = select_backups(&backups, &within(24), now());
        assert_eq!(
            decisions,
            [
                Decision::Remove,
                Decision::KeepForWindowStart,
                Decision::KeepWithinWindow,
                Decision::KeepWithinWindow,
            ]
        );
        // A window before which there is no backup keeps everything.
        assert!(select_backups(&backups, &within(100), now())
            .iter()
            .all(Decision::keeps));
        // A window with no backup inside still keeps the newest.
        let decisions = select_backups(&backups, &within(1), now());
        assert_eq!(
            decisions,
            [
                Decision::Remove,
                Decision::Remove,
                Decision::Remove,
                Decision::KeepForWindowStart
            ]
        );
    }

    #[test]
    fn both_rules_keep_what_either_keeps() {
        let backups = [
            backup("a", 1, 2, 72),
            backup("b", 1, 5, 40),
            backup("c", 1, 8, 20),
            backup("d", 1, 9, 2),
        ];
        let policy = Policy {
            keep_last: Some(3),
            keep_within: Some(Duration::from_secs(3600)),
        };
        let decisions = select_backups(&backups, &policy, now());
        assert_eq!(
            decisions.iter().filter(|d| d.keeps()).count(),
            3,
            "{decisions:?}"
        );
        assert_eq!(decisions[0], Decision::Remove);
        // --keep 1 with a window that starts before the newest backup:
        // the newest also serves the window start, c stays for the window.
        let policy = Policy {
            keep_last: Some(1),
            keep_within: Some(Duration::from_secs(30 * 3600)),
        };
        let decisions = select_backups(&backups, &policy, now());
        assert_eq!(
            decisions,
            [
                Decision::Remove,
                Decision::KeepForWindowStart,
                Decision::KeepWithinWindow,
                Decision::KeepNewest { rank: 1 },
            ]
        );
    }

    #[test]
    fn wal_before_the_oldest_kept_start_goes_on_one_timeline() {
        let backups = [backup("a", 1, 2, 50), backup("b", 1, 5, 30)];
        let archive = entries(&[
            seg(1, 1),
            seg(1, 2),
            format!("{}.00000028.backup", seg(1, 2)),
            seg(1, 3),
            seg(1, 4),
            format!("{}.gz", seg(1, 4)),
            seg(1, 5),
            format!("{}.00000028.backup", seg(1, 5)),
            seg(1, 6),
            "notes.txt".to_string(),
        ]);
        let graph = TimelineGraph::new([], [tli(1)]);
        let selection = select(&backups, &keep(1), now(), &graph, SIZE, &archive);
        assert_eq!(kept_ids(&selection), ["b"]);
        assert_eq!(selection.wal_from, Some(5));
        assert_eq!(
            names(&selection.remove_wal),
            [
                seg(1, 1),
                seg(1, 2),
                format!("{}.00000028.backup", seg(1, 2)),
                seg(1, 3),
                seg(1, 4),
                format!("{}.gz", seg(1, 4)),
            ]
        );
        assert_eq!(
            names(&selection.keep_wal),
            [
                seg(1, 5),
                format!("{}.00000028.backup", seg(1, 5)),
                seg(1, 6),
                "notes.txt".to_string(),
            ]
        );
    }

    /// Timeline 2 branched from 1 in segment 6, timeline 3 from 2 in
    /// segment 9, and timeline 4 from 1 in segment 4 (an abandoned restore).
    fn graph() -> TimelineGraph {
        let tl2 = history::parse(tli(2), "1\t0/6000100\tbefore x\n").unwrap();
        let tl3 = history::parse(tli(3), "1\t0/6000100\tbefore x\n2\t0/9000000\tno\n").unwrap();
        let tl4 = history::parse(tli(4), "1\t0/4000100\tafter y\n").unwrap();
        TimelineGraph::new([tl2, tl3, tl4], [tli(1)])
    }

    fn everything() -> Vec<ArchiveEntry> {
        let mut names = Vec::new();
        for n in 1..=8 {
            names.push(seg(1, n));
        }
        for n in 6..=10 {
            names.push(seg(2, n));
        }
        for n in 9..=12 {
            names.push(seg(3, n));
        }
        for n in 4..=7 {
            names.push(seg(4, n));
        }
        for t in 2..=4 {
            names.push(format!("{t:08X}.history"));
        }
        entries(&names)
    }

    #[test]
    fn wal_along_the_kept_backups_timelines_and_their_descendants_stays() {
        // Kept: b on timeline 2 (segment 7). Its path is 1 → 2; timeline 3
        // descends from 2. Timeline 4 left timeline 1 before b's timeline
        // existed and leads nowhere b can reach.
        let backups = [backup("a", 1, 2, 50), backup("b", 2, 7, 30)];
        let selection = select(&backups, &keep(1), now(), &graph(), SIZE, &everything());
        assert_eq!(kept_ids(&selection), ["b"]);
        assert_eq!(
            selection.needed_timelines,
            BTreeSet::from([tli(1), tli(2), tli(3)])
        );
        let removed = names(&selection.remove_wal);
        let expected_removed: Vec<String> = vec![
            seg(1, 1),
            seg(1, 2),
            seg(1, 3),
            seg(1, 4),
            seg(4, 4),
            seg(1, 5),
            seg(4, 5),
            seg(1, 6),
            seg(2, 6),
            seg(4, 6),
            seg(4, 7),
        ];
        assert_eq!(removed, expected_removed);
        let kept = names(&selection.keep_wal);
        for name in [seg(1, 7), seg(1, 8), seg(2, 7), seg(2, 10), seg(3, 9)] {
            assert!(kept.contains(&name.as_str()), "{name} must stay");
        }
        for history in ["00000002.history", "00000003.history", "00000004.history"] {
            assert!(kept.contains(&history), "{history} must stay");
        }
    }

    #[test]
    fn a_kept_backup_on_the_first_timeline_keeps_every_descendant() {
        let backups = [backup("a", 1, 2, 50), backup("b", 1, 3, 30)];
        let selection = select(&backups, &keep(1), now(), &graph(), SIZE, &everything());
        assert_eq!(
            selection.needed_timelines,
            BTreeSet::from([tli(1), tli(2), tli(3), tli(4)])
        );
        assert_eq!(names(&selection.remove_wal), [seg(1, 1), seg(1, 2)]);
    }

    #[test]
    fn timelines_without_history_are_never_judged() {
        // Timeline 5 has segments but no history file: it may descend from
        // anything, so its WAL from the cutoff on stays.
        let backups = [backup("b", 1, 3, 30)];
        let mut archive = everything();
        archive.extend(entries(&[seg(5, 2), seg(5, 3), seg(5, 4)]));
        let mut graph_timelines = vec![tli(1)];
        graph_timelines.push(tli(5));
        let tl2 = history::parse(tli(2), "1\t0/6000100\tbefore x\n").unwrap();
        let graph = TimelineGraph::new([tl2], graph_timelines);
        let selection = select(&backups, &keep(1), now(), &graph, SIZE, &archive);
        let removed = names(&selection.remove_wal);
        assert!(removed.contains(&seg(5, 2).as_str()));
        assert!(!removed.contains(&seg(5, 3).as_str()));
        assert!(!removed.contains(&seg(5, 4).as_str()));
    }

    #[test]
    fn backup_history_files_go_with_their_backups() {
        // Two backups overlapping in time: a started in segment 6, after
        // b, but was consistent before b. Keeping only b removes a and its
        // history file although it starts after b's start segment.
        let mut a = backup("a", 1, 6, 40);
        a.start_lsn = Lsn::new(6 * SIZE.bytes() + 0x60);
        let b = backup("b", 1, 5, 30);
        let archive = entries(&[
            seg(1, 5),
            seg(1, 6),
            format!("{}.00000028.backup", seg(1, 5)),
            format!("{}.00000060.backup", seg(1, 6)),
            format!("{}.00000028.backup", seg(1, 3)),
            format!("{}.00000028.backup", seg(1, 9)),
        ]);
        let graph = TimelineGraph::new([], [tli(1)]);
        let selection = select(&[a, b], &keep(1), now(), &graph, SIZE, &archive);
        assert_eq!(kept_ids(&selection), ["b"]);
        assert_eq!(
            names(&selection.remove_wal),
            [
                format!("{}.00000028.backup", seg(1, 3)),
                format!("{}.00000060.backup", seg(1, 6)),
            ]
        );
        // One of an unknown backup after the cutoff is not ours to judge.
        assert!(
            names(&selection.keep_wal).contains(&format!("{}.00000028.backup", seg(1, 9)).as_str())
        );
    }

    #[test]
    fn without_backups_nothing_goes() {
        let selection = select(&[], &keep(1), now(), &graph(), SIZE, &everything());
        assert!(selection.remove_wal.is_empty());
        assert_eq!(selection.wal_from, None);
    }

    #[test]
    fn every_kept_backup_keeps_its_whole_wal_range() {
        // A property over many synthetic catalogs: for every kept backup,
        // each segment from its start to the end of the archive on its
        // timeline stays.
        for keep_last in 1..=4 {
            for spacing in 1..=3u64 {
                let backups: Vec<BackupSummary> = (0..4)
                    .map(|i| backup(&format!("b{i}"), 1, 2 + i * spacing, 100 - i as i64 * 10))
                    .collect();
                let archive = entries(&(0..20).map(|n| seg(1, n)).collect::<Vec<_>>());
                let graph = TimelineGraph::new([], [tli(1)]);
                let selection = select(&backups, &keep(keep_last), now(), &graph, SIZE, &archive);
                assert_eq!(selection.kept().count(), keep_last);
                let kept = names(&selection.keep_wal);
                for b in selection.kept() {
                    let first = b.start_lsn.value() / SIZE.bytes();
                    for n in first..20 {
                        assert!(kept.contains(&seg(1, n).as_str()));
                    }
                }
                assert_eq!(
                    selection.remove_wal.len() + selection.keep_wal.len(),
                    archive.len()
                );
            }
        }
    }

    /// A generated archive: a tree of timelines, each with its segments,
    /// backups on them, and a policy. Timeline `t` (1-based, index t-1)
    /// branches from `parent[t]` at segment `start[t]` and has segments
    /// `start[t]..=end[t]`; timeline 1 starts at segment 1.
    #[derive(Clone, Debug)]
    struct Catalog {
        parent: Vec<Option<usize>>,
        start: Vec<u64>,
        end: Vec<u64>,
        /// (timeline, start segment, hours ago)
        backups: Vec<(usize, u64, i64)>,
        policy: Policy,
    }

    fn catalogs() -> impl proptest::strategy::Strategy<Value = Catalog> {
        use proptest::prelude::*;
        (1usize..=5)
            .prop_flat_map(|timelines| {
                (
                    Just(timelines),
                    1u64..8,
                    proptest::collection::vec(
                        (any::<prop::sample::Index>(), 0u64..8, 0u64..8),
                        timelines - 1,
                    ),
                    proptest::collection::vec(
                        (
                            any::<prop::sample::Index>(),
                            any::<prop::sample::Index>(),
                            1i64..200,
                        ),
                        1..7,
                    ),
                    proptest::option::of(1usize..5),
                    proptest::option::of(1u64..200),
                )
            })
            .prop_map(
                |(timelines, first_len, branches, backups, keep_last, within)| {
                    let mut parent = vec![None];
                    let mut start = vec![1];
                    let mut end = vec![1 + first_len];
                    for (t, (from, at, len)) in branches.into_iter().enumerate() {
                        let p = from.index(t + 1);
                        let switch = start[p] + at % (end[p] - start[p] + 1);
                        parent.push(Some(p));
                        start.push(switch);
                        end.push(switch + len);
                    }
                    let backups = backups
                        .into_iter()
                        .map(|(on, at, hours)| {
                            let t = on.index(timelines);
                            (
                                t,
                                start[t] + at.index((end[t] - start[t] + 1) as usize) as u64,
                                hours,
                            )
                        })
                        .collect();
                    Catalog {
                        parent,
                        start,
                        end,
                        backups,
                        policy: Policy {
                            keep_last,
                            keep_within: within.map(|hours| Duration::from_secs(hours * 3600)),
                        },
                    }
                },
            )
    }

    fn lsn_text(lsn: u64) -> String {
        format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
    }

    impl Catalog {
        /// Timeline `t` and its ancestors, root last.
        fn ancestry(&self, t: usize) -> Vec<usize> {
            let mut path = vec![t];
            while let Some(p) = self.parent[*path.last().unwrap()] {
                path.push(p);
            }
            path
        }

        /// Timelines `t` is an ancestor of (or is).
        fn descendants(&self, t: usize) -> Vec<usize> {
            (0..self.start.len())
                .filter(|&d| self.ancestry(d).contains(&t))
                .collect()
        }

        fn summaries(&self) -> Vec<BackupSummary> {
            self.backups
                .iter()
                .enumerate()
                .map(|(i, &(t, segment, hours))| {
                    // Distinct start offsets and times: no ties to break.
                    let start = segment * SIZE.bytes() + 0x28 + 0x100 * i as u64;
                    BackupSummary {
                        id: format!("b{i}"),
                        timeline: tli(t as u32 + 1),
                        start_lsn: Lsn::new(start),
                        stop_lsn: Lsn::new(start + 0x80),
                        consistent_by: time(hours) - chrono::Duration::seconds(i as i64),
                        bytes: 1000,
                    }
                })
                .collect()
        }

        fn graph(&self) -> TimelineGraph {
            let histories = (1..self.start.len()).map(|t| {
                let mut text = String::new();
                let ancestry = self.ancestry(t);
                // Root first: each line is a parent and where its child
                // (the next on the path) branched off.
                for pair in ancestry.windows(2).rev() {
                    let (child, parent) = (pair[0], pair[1]);
                    let switch = self.start[child] * SIZE.bytes() + 0x100;
                    text.push_str(&format!("{}\t{}\tbranch\n", parent + 1, lsn_text(switch)));
                }
                history::parse(tli(t as u32 + 1), &text).unwrap()
            });
            TimelineGraph::new(histories, (0..self.start.len()).map(|t| tli(t as u32 + 1)))
        }

        fn archive(&self, summaries: &[BackupSummary]) -> Vec<ArchiveEntry> {
            let mut names = Vec::new();
            for t in 0..self.start.len() {
                for n in self.start[t]..=self.end[t] {
                    names.push(seg(t as u32 + 1, n));
                }
                if t > 0 {
                    names.push(format!("{:08X}.history", t + 1));
                }
            }
            for b in summaries {
                names.push(backup_history_name(b));
            }
            names.push("README.txt".to_string());
            entries(&names)
        }
    }

    fn backup_history_name(b: &BackupSummary) -> String {
        format!(
            "{}.{:08X}.backup",
            WalSegment::containing(b.timeline, b.start_lsn, SIZE).file_name(),
            b.start_lsn.value() % SIZE.bytes()
        )
    }

    proptest::proptest! {
        /// Retention over generated multi-timeline catalogs, against an
        /// oracle written from the rules in this module's documentation
        /// with the generated tree (not TimelineGraph, not select): the
        /// backups kept are exactly those the policy names, every file a
        /// restore from a kept backup reads stays (no under-retention), and
        /// the removed files are exactly the ones the rules say go (no
        /// over-retention).
        #[test]
        fn retention_over_generated_multi_timeline_catalogs(catalog in catalogs()) {
            let summaries = catalog.summaries();
            let archive = catalog.archive(&summaries);
            let selection = select(&summaries, &catalog.policy, now(), &catalog.graph(), SIZE, &archive);

            // Backups: the N newest, everything consistent inside the window
            // plus the newest before it; the newest when no rule keeps any.
            let mut newest_first: Vec<&BackupSummary> = summaries.iter().collect();
            newest_first.sort_by_key(|b| std::cmp::Reverse(b.consistent_by));
            let mut expected_kept = BTreeSet::new();
            if let Some(n) = catalog.policy.keep_last {
                expected_kept.extend(newest_first.iter().take(n).map(|b| b.id.clone()));
            }
            if let Some(window) = catalog.policy.keep_within {
                let start = now() - chrono::Duration::from_std(window).unwrap();
                expected_kept.extend(
                    newest_first.iter().filter(|b| b.consistent_by > start).map(|b| b.id.clone()),
                );
                if let Some(before) = newest_first.iter().find(|b| b.consistent_by <= start) {
                    expected_kept.insert(before.id.clone());
                }
            }
            if expected_kept.is_empty() {
                expected_kept.insert(newest_first[0].id.clone());
            }
            let kept: BTreeSet<String> = selection.kept().map(|b| b.id.clone()).collect();
            proptest::prop_assert_eq!(&kept, &expected_kept);

            let kept_backups: Vec<(usize, u64, &BackupSummary)> = summaries
                .iter()
                .zip(&catalog.backups)
                .filter(|(b, _)| expected_kept.contains(&b.id))
                .map(|(b, &(t, segment, _))| (t, segment, b))
                .collect();
            let kept_names: BTreeSet<&str> = names(&selection.keep_wal).into_iter().collect();
            let removed_names: BTreeSet<&str> = names(&selection.remove_wal).into_iter().collect();

            // Under-retention: a restore from a kept backup to the end of
            // any timeline it can reach reads, for each segment number from
            // its start on, the file of the newest timeline on that path
            // that exists by then.
            for &(t, first, b) in &kept_backups {
                for d in catalog.descendants(t) {
                    let path = catalog.ancestry(d);
                    for n in first..=catalog.end[d] {
                        let on = *path.iter().find(|&&x| catalog.start[x] <= n).unwrap();
                        let name = seg(on as u32 + 1, n);
                        proptest::prop_assert!(
                            kept_names.contains(name.as_str()),
                            "{} (restore from {} to timeline {}) was removed", name, b.id, d + 1
                        );
                    }
                }
                proptest::prop_assert!(kept_names.contains(backup_history_name(b).as_str()));
            }

            // Over-retention: exactly these go. Segments before the oldest
            // kept start, and segments on timelines no kept backup can be
            // on the way to or from; the history files of removed backups.
            let wal_from = kept_backups.iter().map(|&(_, first, _)| first).min().unwrap();
            let mut needed = BTreeSet::new();
            for &(t, _, _) in &kept_backups {
                needed.extend(catalog.ancestry(t));
                needed.extend(catalog.descendants(t));
            }
            let mut expected_removed = BTreeSet::new();
            for t in 0..catalog.start.len() {
                for n in catalog.start[t]..=catalog.end[t] {
                    if n < wal_from || !needed.contains(&t) {
                        expected_removed.insert(seg(t as u32 + 1, n));
                    }
                }
            }
            for b in summaries.iter().filter(|b| !expected_kept.contains(&b.id)) {
                expected_removed.insert(backup_history_name(b));
            }
            let expected_removed: BTreeSet<&str> = expected_removed.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(&removed_names, &expected_removed);
            proptest::prop_assert_eq!(kept_names.len() + removed_names.len(), archive.len());
            proptest::prop_assert!(kept_names.contains("README.txt"));
        }
    }
}
