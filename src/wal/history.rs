//! Timeline history files (`00000002.history`): where each timeline forked
//! from its parent.
//!
//! PostgreSQL writes one when a recovery or promotion starts a new timeline:
//! the parent's file copied verbatim, then `<parentTLI>\t<switchpoint>\t<reason>\n`
//! (preceded by an extra `\n` when the parent had a file). Reasons for time
//! and LSN targets end in `\n` themselves, so blank lines are normal.
//!
//! The parser follows the server's `readTimeLineHistory`
//! (src/backend/access/transam/timeline.c, unchanged in 12–18): blank lines
//! and lines starting with `#` (after whitespace) are skipped, each other line
//! is `<tli>\t<switchpoint>` with the rest of the line a free-text reason,
//! parent timelines strictly increase and are below the file's own timeline.
//! Switch points are *not* checked for order, because the server does not
//! check them either and writes files where they decrease (see
//! [`TimelineHistory::ancestor_at`]).

use super::lsn::Lsn;
use super::segment::TimelineId;

/// The parsed history of one timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineHistory {
    /// The timeline this file belongs to (from its name, not its content).
    pub timeline: TimelineId,
    /// Ancestors, oldest first. Entry `i` is the timeline that was followed
    /// up to (not including) `switch_lsn`, from the previous entry's
    /// `switch_lsn` on.
    pub entries: Vec<HistoryEntry>,
}

/// One line of a history file: the parent timeline and where it was left.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HistoryEntry {
    pub parent: TimelineId,
    /// First LSN that does not belong to `parent` in this history.
    pub switch_lsn: Lsn,
    /// Free text such as `before 2026-11-24 01:21:17.966024+00`; empty if absent.
    pub reason: String,
}

/// Why a history file was rejected. Line numbers count from 1 and include
/// blank and comment lines, as an editor shows them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "line {line} of the timeline history does not start with a numeric timeline ID: `{text}`"
    )]
    BadTimeline { line: usize, text: String },
    #[error("line {line} of the timeline history has no switch point `%X/%X` after the timeline ID: `{text}`")]
    BadSwitchPoint { line: usize, text: String },
    #[error("line {line} of the timeline history names timeline 0, which does not exist")]
    ZeroTimeline { line: usize },
    #[error("line {line} of the timeline history names timeline {parent} after timeline {previous}, but timeline IDs must increase")]
    NotIncreasing {
        line: usize,
        parent: TimelineId,
        previous: TimelineId,
    },
    #[error("line {line} of the history of timeline {timeline} names timeline {parent}, but ancestors must be lower than the file's own timeline")]
    NotAnAncestor {
        line: usize,
        parent: TimelineId,
        timeline: TimelineId,
    },
}

/// Parses the content of the history file of `timeline`.
pub fn parse(timeline: TimelineId, text: &str) -> Result<TimelineHistory, HistoryError> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let entry = parse_line(line, content)?;
        if let Some(previous) = entries.last() {
            if entry.parent <= previous.parent {
                return Err(HistoryError::NotIncreasing {
                    line,
                    parent: entry.parent,
                    previous: previous.parent,
                });
            }
        }
        // The server checks this once after the loop; since parents increase,
        // checking each line is equivalent and lets the error name the line.
        if entry.parent >= timeline {
            return Err(HistoryError::NotAnAncestor {
                line,
                parent: entry.parent,
                timeline,
            });
        }
        entries.push(entry);
    }
    Ok(TimelineHistory { timeline, entries })
}

/// Parses `<tli><whitespace><lsn>[<whitespace><reason>]`, `content` having no
/// leading whitespace. The server's `sscanf("%u\t%X/%X")` lets any run of
/// whitespace stand for the tab and ignores the rest of the line.
fn parse_line(line: usize, content: &str) -> Result<HistoryEntry, HistoryError> {
    let digits = content.bytes().take_while(u8::is_ascii_digit).count();
    let tli: u32 = content[..digits]
        .parse()
        .map_err(|_| HistoryError::BadTimeline {
            line,
            text: snippet(content),
        })?;
    let parent = TimelineId::new(tli).ok_or(HistoryError::ZeroTimeline { line })?;

    let rest = &content[digits..];
    let after_separator = rest.trim_start();
    let bad_switch_point = || HistoryError::BadSwitchPoint {
        line,
        text: snippet(content),
    };
    if after_separator.len() == rest.len() {
        return Err(bad_switch_point());
    }
    let lsn_end = after_separator
        .find(char::is_whitespace)
        .unwrap_or(after_separator.len());
    let switch_lsn: Lsn = after_separator[..lsn_end]
        .parse()
        .map_err(|_| bad_switch_point())?;
    let reason = after_separator[lsn_end..].trim().to_string();
    Ok(HistoryEntry {
        parent,
        switch_lsn,
        reason,
    })
}

/// Keeps error messages one line long whatever the input holds.
fn snippet(text: &str) -> String {
    const MAX: usize = 80;
    let text = text.trim_end();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl TimelineHistory {
    /// The direct parent and the LSN where this timeline begins, or `None`
    /// for a file without entries (as for timeline 1, which has no file).
    pub fn parent(&self) -> Option<(TimelineId, Lsn)> {
        self.entries
            .last()
            .map(|entry| (entry.parent, entry.switch_lsn))
    }

    /// The timeline whose WAL holds `lsn` when following this history.
    ///
    /// Mirrors the server's `tliOfPointInHistory`: the file's own timeline
    /// owns `[last switch point, ∞)`, entry `i` owns `[switch point of entry
    /// i-1, its own switch point)` (entry 0 from LSN 0), and the **newest**
    /// range containing `lsn` wins. Newest-first matters because switch points
    /// need not increase: a recovery that stops before the start of the
    /// timeline it followed writes a switch point below earlier ones (seen on
    /// PostgreSQL 15: `1 0/5000100`, then `2 0/2000100 reached consistency` in
    /// `00000003.history`). Timeline 2 then owns no LSN at all, the WAL below
    /// `0/2000100` is timeline 1's, and timeline 3 starts at `0/2000100`; an
    /// oldest-first search would wrongly hand `0/3000000` to timeline 1.
    /// The ranges always cover every LSN (the oldest entry whose switch point
    /// lies above `lsn` has a range starting at or below `lsn`), so there is
    /// always an answer.
    pub fn ancestor_at(&self, lsn: Lsn) -> TimelineId {
        match self.entries.last() {
            // The tip: the file's own timeline, from its last switch point on
            // (or everywhere when the file has no entries).
            None => return self.timeline,
            Some(last) if last.switch_lsn <= lsn => return self.timeline,
            Some(_) => {}
        }
        for (index, entry) in self.entries.iter().enumerate().rev() {
            let begin = index
                .checked_sub(1)
                .map_or(Lsn::ZERO, |previous| self.entries[previous].switch_lsn);
            if begin <= lsn && lsn < entry.switch_lsn {
                return entry.parent;
            }
        }
        // Unreachable by the covering argument above; stay total anyway.
        self.timeline
    }

    /// True when `timeline` is this history's timeline or one of its ancestors
    /// (the server's `tliInHistory`).
    pub fn contains(&self, timeline: TimelineId) -> bool {
        timeline == self.timeline || self.entries.iter().any(|entry| entry.parent == timeline)
    }

    /// The LSN at which this history left `timeline` (the server's
    /// `tliSwitchPoint`): `None` both for the history's own timeline, which it
    /// never leaves, and for a timeline not in it; tell them apart with
    /// [`contains`](Self::contains).
    pub fn switch_point(&self, timeline: TimelineId) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|entry| entry.parent == timeline)
            .map(|entry| entry.switch_lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tli(value: u32) -> TimelineId {
        TimelineId::new(value).unwrap()
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    /// Written by PostgreSQL 15 after a time-targeted PITR (reason ends in
    /// `\n`, hence the blank line).
    const PG15_TL2: &str = include_str!("../../fixtures/history/00000002.history");
    /// Written by PostgreSQL 15 after a `recovery_target = 'immediate'` run
    /// that followed timeline 2 from a backup taken before timeline 2 began.
    const PG15_TL3: &str = include_str!("../../fixtures/history/00000003.history");

    #[test]
    fn real_time_target_history() {
        assert_eq!(
            PG15_TL2,
            "1\t0/5000100\tbefore 2026-11-24 03:02:23.201582+00\n\n"
        );
        let history = parse(tli(2), PG15_TL2).unwrap();
        assert_eq!(
            history.entries,
            vec![HistoryEntry {
                parent: tli(1),
                switch_lsn: lsn("0/5000100"),
                reason: "before 2026-11-24 03:02:23.201582+00".into(),
            }]
        );
        assert_eq!(history.parent(), Some((tli(1), lsn("0/5000100"))));
        assert_eq!(history.ancestor_at(lsn("0/50000FF")), tli(1));
        assert_eq!(history.ancestor_at(lsn("0/5000100")), tli(2));
        assert_eq!(history.ancestor_at(Lsn::new(u64::MAX)), tli(2));
        assert_eq!(history.ancestor_at(Lsn::ZERO), tli(1));
    }

    #[test]
    fn real_history_with_decreasing_switch_points() {
        let history = parse(tli(3), PG15_TL3).unwrap();
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[1].parent, tli(2));
        assert_eq!(history.entries[1].switch_lsn, lsn("0/2000100"));
        assert_eq!(history.entries[1].reason, "reached consistency");
        assert_eq!(history.parent(), Some((tli(2), lsn("0/2000100"))));
        // Timeline 3 begins at 0/2000100, which is below timeline 2's start:
        // timeline 2 owns nothing, the WAL before it is timeline 1's.
        assert_eq!(history.ancestor_at(lsn("0/20000FF")), tli(1));
        assert_eq!(history.ancestor_at(lsn("0/2000100")), tli(3));
        assert_eq!(history.ancestor_at(lsn("0/3000000")), tli(3));
        assert_eq!(history.ancestor_at(lsn("0/5000100")), tli(3));
        assert!(history.contains(tli(2)));
        assert!(!history.contains(tli(4)));
        assert_eq!(history.switch_point(tli(1)), Some(lsn("0/5000100")));
        assert_eq!(history.switch_point(tli(3)), None);
    }

    #[test]
    fn newest_overlapping_range_wins() {
        // TL4 forked from TL3 at 0/200, before TL3 itself began (0/500): at
        // 0/300 both TL2's range [0/100, 0/500) and TL4's [0/200, 0/600)
        // contain the LSN, and the server picks the newer, TL4.
        let text = "1\t0/100\ta\n2\t0/500\tb\n3\t0/200\tc\n4\t0/600\td\n";
        let history = parse(tli(5), text).unwrap();
        assert_eq!(history.ancestor_at(lsn("0/50")), tli(1));
        assert_eq!(history.ancestor_at(lsn("0/150")), tli(2));
        assert_eq!(history.ancestor_at(lsn("0/300")), tli(4));
        assert_eq!(history.ancestor_at(lsn("0/5FF")), tli(4));
        assert_eq!(history.ancestor_at(lsn("0/600")), tli(5));
    }

    #[test]
    fn blank_lines_comments_and_whitespace_are_skipped() {
        let text = "# made by hand\n\n   \n  # indented comment\n1\t0/1201A6D8\tbefore x\n\n\t\n3\t0/14000000\tno recovery target specified\n";
        let history = parse(tli(4), text).unwrap();
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[1].parent, tli(3));
        assert_eq!(history.entries[1].reason, "no recovery target specified");
    }

    #[test]
    fn reason_is_optional_and_separators_are_loose() {
        let history = parse(
            tli(9),
            "1\t0/10\n2 0/20  spaced reason \r\n 3\t\t1F/0000000A\n",
        )
        .unwrap();
        let lsns: Vec<_> = history.entries.iter().map(|e| e.switch_lsn).collect();
        assert_eq!(
            lsns,
            vec![lsn("0/10"), lsn("0/20"), Lsn::new((0x1F << 32) | 0xA)]
        );
        assert_eq!(history.entries[0].reason, "");
        assert_eq!(history.entries[1].reason, "spaced reason");
    }

    #[test]
    fn empty_file_has_no_parent() {
        let history = parse(tli(2), "").unwrap();
        assert_eq!(history.parent(), None);
        assert_eq!(history.ancestor_at(lsn("0/1")), tli(2));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let cases: &[(&str, HistoryError)] = &[
            (
                "\nx\t0/1\n",
                HistoryError::BadTimeline {
                    line: 2,
                    text: "x\t0/1".into(),
                },
            ),
            (
                "1\n",
                HistoryError::BadSwitchPoint {
                    line: 1,
                    text: "1".into(),
                },
            ),
            (
                "1x\t0/1\n",
                HistoryError::BadSwitchPoint {
                    line: 1,
                    text: "1x\t0/1".into(),
                },
            ),
            (
                "1\t0-1\treason\n",
                HistoryError::BadSwitchPoint {
                    line: 1,
                    text: "1\t0-1\treason".into(),
                },
            ),
            (
                "99999999999\t0/1\n",
                HistoryError::BadTimeline {
                    line: 1,
                    text: "99999999999\t0/1".into(),
                },
            ),
            ("0\t0/1\n", HistoryError::ZeroTimeline { line: 1 }),
            (
                "2\t0/1\n\n2\t0/2\n",
                HistoryError::NotIncreasing {
                    line: 3,
                    parent: tli(2),
                    previous: tli(2),
                },
            ),
            (
                "2\t0/1\n1\t0/2\n",
                HistoryError::NotIncreasing {
                    line: 2,
                    parent: tli(1),
                    previous: tli(2),
                },
            ),
            (
                "1\t0/1\n3\t0/2\n",
                HistoryError::NotAnAncestor {
                    line: 2,
                    parent: tli(3),
                    timeline: tli(3),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(tli(3), text).as_ref(), Err(expected), "{text:?}");
        }
        let message = parse(tli(3), "1\t0/1\n3\t0/2\n").unwrap_err().to_string();
        assert_eq!(
            message,
            "line 2 of the history of timeline 3 names timeline 3, but ancestors must be lower than the file's own timeline"
        );
    }

    #[test]
    fn long_garbage_is_shortened_in_errors() {
        let text = format!("zz{}", "y".repeat(500));
        let message = parse(tli(2), &text).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.ends_with("…`"), "{message}");
    }

    /// The obvious rule, valid only when switch points increase.
    fn interval_lookup(history: &TimelineHistory, lsn: Lsn) -> TimelineId {
        history
            .entries
            .iter()
            .find(|entry| lsn < entry.switch_lsn)
            .map_or(history.timeline, |entry| entry.parent)
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "(?s).{0,200}", own in 1u32..10) {
            let _ = parse(tli(own), &text);
        }

        #[test]
        fn never_panics_on_line_like_text(
            lines in proptest::collection::vec("[ \t#0-9a-fA-F/x]{0,20}", 0..8),
        ) {
            let _ = parse(tli(7), &lines.join("\n"));
        }

        #[test]
        fn written_files_round_trip(
            raw in proptest::collection::vec((1u32..4, any::<u64>(), "[a-z ]{0,20}"), 0..6),
        ) {
            // Build strictly increasing parents below the file's timeline.
            let mut parent = 0;
            let mut text = String::new();
            let mut expected = Vec::new();
            for (step, switch, reason) in &raw {
                parent += step;
                let reason = reason.trim().to_string();
                let entry = HistoryEntry { parent: tli(parent), switch_lsn: Lsn::new(*switch), reason };
                // The server's own layout: parent's file, "\n", new line.
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("{}\t{}\t{}\n", parent, entry.switch_lsn, entry.reason));
                expected.push(entry);
            }
            let own = tli(parent + 1);
            let history = parse(own, &text).unwrap();
            prop_assert_eq!(&history.entries, &expected);
        }

        #[test]
        fn ancestor_is_interval_lookup_when_switch_points_increase(
            mut switches in proptest::collection::vec(any::<u64>(), 0..6),
            probe in any::<u64>(),
        ) {
            switches.sort_unstable();
            let entries: Vec<_> = switches
                .iter()
                .enumerate()
                .map(|(i, s)| HistoryEntry { parent: tli(i as u32 + 1), switch_lsn: Lsn::new(*s), reason: String::new() })
                .collect();
            let history = TimelineHistory { timeline: tli(switches.len() as u32 + 1), entries };
            let probe = Lsn::new(probe);
            prop_assert_eq!(history.ancestor_at(probe), interval_lookup(&history, probe));
        }

        #[test]
        fn ancestor_is_always_in_the_history(
            switches in proptest::collection::vec(any::<u64>(), 0..6),
            probe in any::<u64>(),
        ) {
            let entries: Vec<_> = switches
                .iter()
                .enumerate()
                .map(|(i, s)| HistoryEntry { parent: tli(i as u32 + 1), switch_lsn: Lsn::new(*s), reason: String::new() })
                .collect();
            let history = TimelineHistory { timeline: tli(switches.len() as u32 + 1), entries };
            let owner = history.ancestor_at(Lsn::new(probe));
            prop_assert!(history.contains(owner));
        }
    }
}
