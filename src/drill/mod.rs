//! What a restore drill is and the evidence it leaves: the steps it takes,
//! how each ended, the measured recovery time, and the report kept in the
//! repository under `drills/`.
//!
//! Pure: choosing the target, judging the stop point and building the
//! report need no I/O. Running the restore and the checks is the command's
//! work (`commands::drill`), storing the report is [`reports`]'s.

pub mod reports;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// The steps of a drill, in the order they run. The first that fails ends
/// the drill (the checks after it are not run) and is named in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reading the repository, choosing the target, planning the restore.
    Plan,
    /// Writing the scratch copy from the backup.
    Staging,
    /// PostgreSQL replaying WAL to the target and promoting.
    Replay,
    /// The stop point PostgreSQL reports against the planned one, and the
    /// copy accepting writes.
    StopPoint,
    /// `pg_amcheck` over every database of the copy.
    Amcheck,
    /// The user's `--check` and `--check-file` queries.
    Checks,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Staging => "staging",
            Step::Replay => "replay",
            Step::StopPoint => "stop point",
            Step::Amcheck => "amcheck",
            Step::Checks => "checks",
        }
    }
}

/// How one step ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: Step,
    pub passed: bool,
    /// What was found, in one line (the error when it failed).
    pub detail: String,
    pub seconds: f64,
}

/// One of the user's queries and what it gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub query: String,
    /// `t` for a `--check`, the text after `-- expect:` in a check file.
    pub expected: String,
    /// What psql printed (rows on lines, columns separated by `|`), or the
    /// error.
    pub got: String,
    pub passed: bool,
}

/// A query to run against the copy and the output it must give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub query: String,
    pub expected: String,
}

/// What ends a check file's query and starts its expected output.
const EXPECT_MARK: &str = "-- expect:";

/// Reads a check file: one query per line; `-- expect: VALUE` at its end
/// says what psql must print (rows on lines joined by `\n` are not
/// possible on one line, so a check compares one row: columns joined by
/// `|`); without it the query must return true. Blank lines and lines
/// starting with `--` or `#` are comments. The line stays valid SQL, so
/// it can be pasted into psql as it is.
pub fn parse_check_file(text: &str) -> Result<Vec<Check>, String> {
    let mut checks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("--") || line.starts_with('#') {
            continue;
        }
        let (query, expected) = match line.rfind(EXPECT_MARK) {
            Some(at) => (
                line[..at].trim(),
                line[at + EXPECT_MARK.len()..].trim().to_string(),
            ),
            None => (line, "t".to_string()),
        };
        let query = query.trim_end_matches(';').trim();
        if query.is_empty() {
            return Err(format!(
                "line {} has an expected result but no query",
                number + 1
            ));
        }
        checks.push(Check {
            query: query.to_string(),
            expected,
        });
    }
    Ok(checks)
}

/// A moment chosen uniformly in `[from, until)`, reproducibly from `seed`,
/// rounded down to the microsecond (PostgreSQL's resolution). `until` is
/// the last commit of the window: a time target at or after it would find
/// no commit to stop before, so it is left out.
pub fn random_instant(
    from: DateTime<FixedOffset>,
    until: DateTime<FixedOffset>,
    seed: u64,
) -> Option<DateTime<FixedOffset>> {
    let span = until
        .signed_duration_since(from)
        .num_microseconds()
        .filter(|&span| span > 1)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let offset = rng.i64(0..span);
    Some(from + chrono::Duration::microseconds(offset))
}

/// A seed for a drill that was given none (from the process's random
/// source), written into the report so the same target can be drilled again.
pub fn fresh_seed() -> u64 {
    fastrand::u64(..)
}

/// What the plan says recovery stops at, as the report records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedStop {
    /// Just before or after a commit or an abort of a transaction.
    Transaction { xid: u64, what: String },
    /// At a restore point.
    RestorePoint { name: String },
    /// The end of the archive (`--to latest`): PostgreSQL reports no stop
    /// line, only where redo ended.
    EndOfArchive,
    /// The backup's consistent point (`--to immediate`).
    Consistency,
    /// The plan could not tell (the WAL could not be decoded).
    Unknown,
}

/// Whether PostgreSQL's `recovery stopping …` message is the planned stop.
pub fn stop_matches(planned: &PlannedStop, message: Option<&str>, redo_done: bool) -> bool {
    match (planned, message) {
        (PlannedStop::Transaction { xid, what }, Some(message)) => {
            message.contains(&format!("{what} of transaction {xid},"))
                || message.ends_with(&format!("{what} of transaction {xid}"))
        }
        (PlannedStop::RestorePoint { name }, Some(message)) => {
            message.contains(&format!("restore point \"{name}\""))
        }
        (PlannedStop::Consistency, Some(message)) => message.contains("consistency"),
        (PlannedStop::EndOfArchive, None) => redo_done,
        _ => false,
    }
}

/// Recovery time, measured per phase, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rto {
    /// Reading the repository and planning (the restore's own planning).
    pub plan: f64,
    pub staging: f64,
    /// Replay to the target, the promotion and the restart.
    pub replay: f64,
    pub checks: f64,
    /// From the start of the drill to the end of the checks.
    pub total: f64,
}

/// The evidence of one drill: stored as `drills/<time>.json` and printed
/// with `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillReport {
    /// Version of this format.
    pub format: u32,
    pub passed: bool,
    /// The first step that failed.
    pub failed_step: Option<Step>,
    /// Why it failed, in the words of the step (the error and its hint).
    pub error: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub pitr_version: String,
    pub repository: String,
    /// The `--to` given, or `random` for a drawn target.
    pub target_requested: String,
    /// What the restore was asked for (`--to` as passed to it).
    pub target: String,
    /// The seed a random target was drawn with (`--seed` repeats it).
    pub seed: Option<u64>,
    /// The timeline recovered to, and its window at the time of the drill.
    pub timeline: Option<u32>,
    pub window_from: Option<DateTime<FixedOffset>>,
    pub window_until: Option<DateTime<FixedOffset>>,
    pub backup: Option<String>,
    pub planned_stop: Option<PlannedStop>,
    /// PostgreSQL's `recovery stopping …` line.
    pub reached_stop: Option<String>,
    pub stop_point_exact: bool,
    pub promoted: bool,
    pub new_timeline: Option<u32>,
    /// The last transaction replayed, as PostgreSQL logged it.
    pub last_transaction: Option<String>,
    /// How old the restored data was when the drill started: from the
    /// target (its stop event) to the start of the drill.
    pub data_age_seconds: Option<f64>,
    /// What a restore to the newest point would lose at the time of the
    /// drill: from the end of the recoverable window to the start.
    pub rpo_seconds: Option<f64>,
    pub rto_seconds: Rto,
    pub steps: Vec<StepResult>,
    pub amcheck: Option<String>,
    pub checks: Vec<CheckResult>,
    pub scratch: String,
    /// The copy's archive_mode: `off`, or the drill fails (it must never
    /// archive into the production archive).
    pub archive_mode: Option<String>,
    /// The port the copy listened on (free again when the copy is gone).
    pub port: Option<u16>,
    /// Kept with `--keep`: the copy is left (stopped) there.
    pub kept: bool,
    /// The server log of a failed drill, kept on disk and in the
    /// repository beside the report.
    pub server_log: Option<String>,
    pub server_log_key: Option<String>,
}

/// The current format of [`DrillReport`].
pub const REPORT_FORMAT: u32 = 1;

impl DrillReport {
    /// The report's lines for people (stderr, after the drill).
    pub fn summary(&self) -> String {
        let mut lines = vec![String::new()];
        lines.push(match (&self.failed_step, self.passed) {
            (_, true) => "drill passed".to_string(),
            (Some(step), false) => format!("drill FAILED at step `{}`", step.name()),
            (None, false) => "drill FAILED".to_string(),
        });
        lines.push(format!(
            "  target:     {}{}",
            self.target,
            match (self.target_requested.as_str(), self.seed) {
                ("random", Some(seed)) =>
                    format!(" (drawn from the window, --seed {seed} repeats it)"),
                _ => String::new(),
            }
        ));
        if let (Some(from), Some(until), Some(timeline)) =
            (self.window_from, self.window_until, self.timeline)
        {
            lines.push(format!(
                "  window:     timeline {timeline}, {} to {}",
                crate::plan::precise_utc(from),
                crate::plan::precise_utc(until)
            ));
        }
        if let Some(backup) = &self.backup {
            lines.push(format!("  backup:     {backup}"));
        }
        for step in &self.steps {
            lines.push(format!(
                "  {:<11} {} {} ({:.1}s)",
                format!("{}:", step.step.name()),
                if step.passed { "ok" } else { "FAILED" },
                step.detail.lines().next().unwrap_or_default(),
                step.seconds
            ));
        }
        for check in &self.checks {
            lines.push(format!(
                "  check {}: {} (expected {}, got {})",
                if check.passed { "ok" } else { "FAILED" },
                check.query,
                check.expected,
                check.got
            ));
        }
        let rto = &self.rto_seconds;
        lines.push(format!(
            "  RTO:        plan {:.1}s, staging {:.1}s, replay {:.1}s, checks {:.1}s, total {:.1}s",
            rto.plan, rto.staging, rto.replay, rto.checks, rto.total
        ));
        if let Some(age) = self.data_age_seconds {
            lines.push(format!(
                "  data age:   {} at the target{}",
                crate::duration::format_duration(std::time::Duration::from_secs_f64(age.max(0.0))),
                match self.rpo_seconds {
                    Some(rpo) => format!(
                        "; the newest recoverable point was {} old",
                        crate::duration::format_duration(std::time::Duration::from_secs_f64(
                            rpo.max(0.0)
                        ))
                    ),
                    None => String::new(),
                }
            ));
        }
        // The failed step's line holds the error's first line; a longer
        // one (the restore's message, its hint) follows in full.
        if let Some(error) = self.error.as_ref().filter(|e| e.lines().count() > 1) {
            lines.push(format!(
                "  error:      {}",
                error.replace('\n', "\n              ")
            ));
        }
        if let Some(log) = &self.server_log {
            lines.push(format!("  server log: {log}"));
        }
        lines.push(if self.kept {
            format!("  copy kept:  {} (stopped)", self.scratch)
        } else {
            "  copy removed".to_string()
        });
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_file_lines() {
        let text = "# orders must be there\n\nSELECT count(*) > 0 FROM orders;\nSELECT count(*) FROM orders -- expect: 1000\n-- a comment\nSELECT 'a', 2 -- expect: a|2\n";
        let checks = parse_check_file(text).unwrap();
        assert_eq!(
            checks,
            vec![
                Check {
                    query: "SELECT count(*) > 0 FROM orders".into(),
                    expected: "t".into()
                },
                Check {
                    query: "SELECT count(*) FROM orders".into(),
                    expected: "1000".into()
                },
                Check {
                    query: "SELECT 'a', 2".into(),
                    expected: "a|2".into()
                },
            ]
        );
        assert!(parse_check_file("-- expect: 3\n").is_ok());
        assert!(parse_check_file("  ; -- expect: 3\n").is_err());
    }

    #[test]
    fn random_instants_stay_inside_and_repeat_with_the_seed() {
        let from = DateTime::parse_from_rfc3339("2026-12-01T00:00:00+00:00").unwrap();
        let until = DateTime::parse_from_rfc3339("2026-12-01T01:00:00+00:00").unwrap();
        for seed in 0..200 {
            let t = random_instant(from, until, seed).unwrap();
            assert!(t >= from && t < until, "{t}");
            assert_eq!(random_instant(from, until, seed), Some(t));
        }
        assert_ne!(
            random_instant(from, until, 1),
            random_instant(from, until, 2)
        );
        assert_eq!(random_instant(until, from, 1), None);
        assert_eq!(random_instant(from, from, 1), None);
    }

    #[test]
    fn stop_points_are_matched_by_transaction() {
        let planned = PlannedStop::Transaction {
            xid: 735,
            what: "commit".into(),
        };
        let message =
            "recovery stopping before commit of transaction 735, time 2026-12-03 20:41:06.2+00";
        assert!(stop_matches(&planned, Some(message), true));
        let other =
            "recovery stopping before commit of transaction 7351, time 2026-12-03 20:41:06.2+00";
        assert!(!stop_matches(&planned, Some(other), true));
        assert!(!stop_matches(&planned, None, true));
        assert!(stop_matches(&PlannedStop::EndOfArchive, None, true));
        assert!(!stop_matches(&PlannedStop::Unknown, Some(message), true));
        assert!(stop_matches(
            &PlannedStop::RestorePoint {
                name: "before".into()
            },
            Some("recovery stopping at restore point \"before\", time 2026-12-03 20:41:06.2+00"),
            true
        ));
    }
}
