//! The timeline graph of an archive, and the path from the first timeline
//! to the one a restore follows.
//!
//! Every history file names all ancestors of its timeline with the LSN where
//! each was left, so the path to a timeline is read from its own file alone.
//! Which file holds a given segment follows PostgreSQL's rule
//! (`XLogFileReadAnyTLI`): the newest timeline on the path that had begun by
//! that segment. The segment holding a switch point therefore comes from the
//! child timeline's file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::TimelineHistory;
use super::{Lsn, SegmentSize, TimelineId, WalSegment};

/// One timeline on a path, with the part of the WAL it covers there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathStep {
    pub timeline: TimelineId,
    /// Where this timeline begins on the path (`0/0` for the first).
    pub begins: Lsn,
    /// The switch point to the next timeline; `None` for the last.
    pub ends: Option<Lsn>,
}

/// The timelines followed to reach one timeline, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelinePath {
    pub steps: Vec<PathStep>,
}

impl TimelinePath {
    /// The timeline the path leads to.
    pub fn target(&self) -> TimelineId {
        self.steps
            .last()
            .map(|s| s.timeline)
            .unwrap_or(TimelineId::FIRST)
    }

    pub fn step(&self, timeline: TimelineId) -> Option<&PathStep> {
        self.steps.iter().find(|s| s.timeline == timeline)
    }

    pub fn contains(&self, timeline: TimelineId) -> bool {
        self.step(timeline).is_some()
    }

    /// The timeline whose file PostgreSQL reads for segment number `number`.
    pub fn timeline_for_segment(&self, number: u64, size: SegmentSize) -> TimelineId {
        self.steps
            .iter()
            .rev()
            .find(|s| WalSegment::containing(s.timeline, s.begins, size).number <= number)
            .map(|s| s.timeline)
            .unwrap_or(TimelineId::FIRST)
    }

    /// The segment file that holds segment number `number` on this path.
    pub fn segment(&self, number: u64, size: SegmentSize) -> WalSegment {
        WalSegment {
            timeline: self.timeline_for_segment(number, size),
            number,
            size,
        }
    }
}

impl fmt::Display for TimelinePath {
    /// `1 → 2 at 0/1201A6D8 → 3 at 0/14000000`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, step) in self.steps.iter().enumerate() {
            if index == 0 {
                write!(f, "{}", step.timeline)?;
            } else {
                write!(f, " → {} at {}", step.timeline, step.begins)?;
            }
        }
        Ok(())
    }
}

/// Why a timeline cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error("timeline {timeline} does not exist in the archive (timelines: {known})")]
    Unknown { timeline: TimelineId, known: String },
}

/// All timelines of an archive and their histories.
#[derive(Clone, Debug, Default)]
pub struct TimelineGraph {
    histories: BTreeMap<TimelineId, TimelineHistory>,
    known: BTreeSet<TimelineId>,
}

impl TimelineGraph {
    /// `histories` from the archive's history files; `with_wal` the
    /// timelines that have segments (or backups).
    pub fn new(
        histories: impl IntoIterator<Item = TimelineHistory>,
        with_wal: impl IntoIterator<Item = TimelineId>,
    ) -> TimelineGraph {
        let histories: BTreeMap<_, _> = histories.into_iter().map(|h| (h.timeline, h)).collect();
        let mut known: BTreeSet<TimelineId> = with_wal.into_iter().collect();
        known.extend(histories.keys().copied());
        for history in histories.values() {
            known.extend(history.entries.iter().map(|e| e.parent));
        }
        TimelineGraph { histories, known }
    }

    pub fn timelines(&self) -> impl Iterator<Item = TimelineId> + '_ {
        self.known.iter().copied()
    }

    /// The highest timeline ID, which `latest` follows.
    pub fn newest(&self) -> Option<TimelineId> {
        self.known.iter().next_back().copied()
    }

    pub fn exists(&self, timeline: TimelineId) -> bool {
        self.known.contains(&timeline)
    }

    pub fn history(&self, timeline: TimelineId) -> Option<&TimelineHistory> {
        self.histories.get(&timeline)
    }

    /// The direct parent and the LSN where `timeline` branched off it.
    pub fn parent(&self, timeline: TimelineId) -> Option<(TimelineId, Lsn)> {
        self.histories.get(&timeline).and_then(|h| h.parent())
    }

    /// The path from the first timeline to `timeline`.
    pub fn path(&self, timeline: TimelineId) -> Result<TimelinePath, TimelineError> {
        if !self.exists(timeline) {
            return Err(TimelineError::Unknown {
                timeline,
                known: self
                    .known
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // Without a history file PostgreSQL takes a timeline to have no
        // ancestors (readTimeLineHistory); so does pitr.
        let Some(history) = self.histories.get(&timeline) else {
            return Ok(TimelinePath {
                steps: vec![PathStep {
                    timeline,
                    begins: Lsn::ZERO,
                    ends: None,
                }],
            });
        };
        let mut steps = Vec::new();
        let mut begins = Lsn::ZERO;
        for entry in &history.entries {
            steps.push(PathStep {
                timeline: entry.parent,
                begins,
                ends: Some(entry.switch_lsn),
            });
            begins = entry.switch_lsn;
        }
        steps.push(PathStep {
            timeline,
            begins,
            ends: None,
        });
        Ok(TimelinePath { steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::history;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn graph() -> TimelineGraph {
        let tl2 = history::parse(
            tli(2),
            "1\t0/1201A6D8\tbefore 2026-11-24 01:21:17.966024+00\n\n",
        )
        .unwrap();
        let tl3 = history::parse(
            tli(3),
            "1\t0/1201A6D8\tbefore 2026-11-24 01:21:17.966024+00\n\n\n2\t0/14000000\tno recovery target specified\n",
        )
        .unwrap();
        TimelineGraph::new([tl2, tl3], [tli(1)])
    }

    #[test]
    fn path_to_a_grandchild() {
        let path = graph().path(tli(3)).unwrap();
        assert_eq!(path.to_string(), "1 → 2 at 0/1201A6D8 → 3 at 0/14000000");
        assert_eq!(path.target(), tli(3));
        assert!(path.contains(tli(1)) && path.contains(tli(2)));
    }

    #[test]
    fn segment_holding_a_switch_point_comes_from_the_child() {
        let size = SegmentSize::DEFAULT;
        let path = graph().path(tli(3)).unwrap();
        assert_eq!(
            path.segment(0x11, size).file_name(),
            "000000010000000000000011"
        );
        assert_eq!(
            path.segment(0x12, size).file_name(),
            "000000020000000000000012"
        );
        assert_eq!(
            path.segment(0x13, size).file_name(),
            "000000020000000000000013"
        );
        // A switch exactly on a segment boundary: that segment is the child's.
        assert_eq!(
            path.segment(0x14, size).file_name(),
            "000000030000000000000014"
        );
    }

    #[test]
    fn a_timeline_without_history_has_no_ancestors() {
        let graph = TimelineGraph::new([], [tli(1), tli(2)]);
        assert_eq!(graph.path(tli(1)).unwrap().to_string(), "1");
        assert_eq!(graph.path(tli(2)).unwrap().to_string(), "2");
        assert!(matches!(
            graph.path(tli(7)),
            Err(TimelineError::Unknown { .. })
        ));
        assert_eq!(graph.newest(), Some(tli(2)));
    }

    #[test]
    fn decreasing_switch_points_follow_the_server_rule() {
        // A `recovery_target = 'immediate'` run on timeline 2 wrote a switch
        // point before timeline 2's own start; the newest timeline that has
        // begun by a segment holds it.
        let tl3 = history::parse(
            tli(3),
            "1\t0/1201A6D8\tx\n2\t0/11000100\treached consistency\n",
        )
        .unwrap();
        let path = TimelineGraph::new([tl3], []).path(tli(3)).unwrap();
        let size = SegmentSize::DEFAULT;
        assert_eq!(path.timeline_for_segment(0x10, size), tli(1));
        assert_eq!(path.timeline_for_segment(0x11, size), tli(3));
        assert_eq!(path.timeline_for_segment(0x12, size), tli(3));
    }
}
