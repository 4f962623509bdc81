//! What `pitr check` judges: the figures of a repository (and of a live
//! cluster's archiver) against thresholds, as monitoring reads them:
//! Nagios states and exit codes, one status line with performance data,
//! and the Prometheus text exposition format.
//!
//! Pure: the command gathers the figures; this module only judges and
//! renders them.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::duration::{format_duration, parse_duration};
use crate::postgres::archiving::ArchiverStatus;

/// A Nagios state. Its number is the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    pub fn exit_code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    /// Which of two states the overall status takes: a known problem
    /// (CRITICAL) before not knowing (UNKNOWN) before a warning.
    fn rank(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Unknown => 2,
            State::Critical => 3,
        }
    }
}

/// `CRIT` or `WARN,CRIT`: ages beyond which a figure is a warning, and
/// critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub warning: Option<Duration>,
    pub critical: Duration,
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let parse = |part: &str| parse_duration(part.trim()).map_err(|e| e.to_string());
        let threshold = match text.split_once(',') {
            Some((warning, critical)) => Threshold {
                warning: Some(parse(warning)?),
                critical: parse(critical)?,
            },
            None => Threshold {
                warning: None,
                critical: parse(text)?,
            },
        };
        if threshold.warning.is_some_and(|w| w > threshold.critical) {
            return Err(format!(
                "`{text}`: the warning age must not be above the critical one (write WARN,CRIT)"
            ));
        }
        Ok(threshold)
    }

    fn judge(&self, age: Duration) -> State {
        if age > self.critical {
            State::Critical
        } else if self.warning.is_some_and(|w| age > w) {
            State::Warning
        } else {
            State::Ok
        }
    }

    fn describe(&self) -> String {
        match self.warning {
            Some(w) => format!("{},{}", format_duration(w), format_duration(self.critical)),
            None => format_duration(self.critical),
        }
    }
}

/// Missing segments on one timeline, between two that are there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub segments: u64,
}

/// One timeline's recoverable window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineWindow {
    pub timeline: u32,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The live cluster's archiver, when asked for.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "read", rename_all = "snake_case")]
pub enum Archiver {
    /// Neither --pgdata nor the PG* variables: not asked.
    NotAsked,
    /// No server runs in --pgdata.
    NotRunning {
        pgdata: String,
    },
    Read {
        status: ArchiverStatus,
    },
    Unreadable {
        error: String,
    },
}

/// The last drill, from its report.
#[derive(Clone, Debug, Serialize)]
pub struct LastDrill {
    pub key: String,
    pub passed: bool,
    pub failed_step: Option<String>,
    pub started: DateTime<Utc>,
    pub rto_seconds: f64,
}

/// Everything `check` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub now: DateTime<Utc>,
    pub repository: String,
    /// The newest archived segment and when it was archived.
    #[serde(serialize_with = "named_time")]
    pub newest_wal: Option<(String, DateTime<Utc>)>,
    /// The newest backup and when it ended.
    #[serde(serialize_with = "named_time")]
    pub newest_backup: Option<(String, DateTime<Utc>)>,
    pub backups: usize,
    pub segments: usize,
    pub gaps: Vec<Gap>,
    /// Timelines whose history is missing or broken.
    pub timeline_problems: Vec<String>,
    pub windows: Vec<TimelineWindow>,
    pub archiver: Archiver,
    pub last_drill: Option<LastDrill>,
    /// Reports under drills/ that cannot be read.
    pub unreadable_drills: Vec<String>,
}

/// `{"name": ..., "time": ...}` in JSON, rather than a pair.
fn named_time<S: serde::Serializer>(
    value: &Option<(String, DateTime<Utc>)>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Named<'a> {
        name: &'a str,
        time: &'a DateTime<Utc>,
    }
    value
        .as_ref()
        .map(|(name, time)| Named { name, time })
        .serialize(serializer)
}

/// The thresholds of a check.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub wal_age: Threshold,
    pub backup_age: Threshold,
    pub drill_age: Option<Threshold>,
}

/// One judged aspect.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub aspect: &'static str,
    pub state: State,
    pub message: String,
}

/// The judgement: the overall state and each aspect's.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub state: State,
    pub findings: Vec<Finding>,
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    now.signed_duration_since(then)
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// Judges the figures.
pub fn judge(figures: &Figures, thresholds: &Thresholds) -> Verdict {
    let now = figures.now;
    let mut findings = Vec::new();
    let mut add = |aspect, state, message: String| {
        findings.push(Finding {
            aspect,
            state,
            message,
        })
    };
    match &figures.newest_wal {
        Some((segment, archived)) => {
            let age = age(now, *archived);
            let state = thresholds.wal_age.judge(age);
            add(
                "wal",
                state,
                format!(
                    "newest WAL {segment} archived {} ago{}",
                    format_duration(age),
                    if state == State::Ok {
                        String::new()
                    } else {
                        format!(
                            " (threshold {}): archiving has stopped or the server is idle without archive_timeout",
                            thresholds.wal_age.describe()
                        )
                    }
                ),
            )
        }
        None => add(
            "wal",
            State::Critical,
            "the WAL archive is empty".to_string(),
        ),
    }
    match &figures.newest_backup {
        Some((id, stopped)) => {
            let age = age(now, *stopped);
            let state = thresholds.backup_age.judge(age);
            add(
                "backup",
                state,
                format!(
                    "newest backup {id} ended {} ago{}",
                    format_duration(age),
                    if state == State::Ok {
                        String::new()
                    } else {
                        format!(" (threshold {})", thresholds.backup_age.describe())
                    }
                ),
            )
        }
        None => add(
            "backup",
            State::Critical,
            "no backup: nothing can be restored (run pitr backup)".to_string(),
        ),
    }
    if figures.gaps.is_empty() {
        add("gaps", State::Ok, "no gaps in the archive".to_string());
    } else {
        let gaps: Vec<String> = figures
            .gaps
            .iter()
            .map(|gap| {
                if gap.segments == 1 {
                    format!("{} is missing", gap.first_missing)
                } else {
                    format!(
                        "{} .. {} are missing ({} segments)",
                        gap.first_missing, gap.last_missing, gap.segments
                    )
                }
            })
            .collect();
        add(
            "gaps",
            State::Critical,
            format!(
                "gap in the archive: {} (no restore can replay past it)",
                gaps.join(", ")
            ),
        );
    }
    if figures.timeline_problems.is_empty() {
        add("timelines", State::Ok, "timelines continuous".to_string());
    } else {
        add(
            "timelines",
            State::Critical,
            format!("timelines broken: {}", figures.timeline_problems.join("; ")),
        );
    }
    match &figures.archiver {
        Archiver::NotAsked => {}
        Archiver::NotRunning { pgdata } => add(
            "archiver",
            State::Unknown,
            format!("no server runs in `{pgdata}`: its archiver cannot be read"),
        ),
        Archiver::Unreadable { error } => add(
            "archiver",
            State::Unknown,
            format!("pg_stat_archiver cannot be read: {error}"),
        ),
        Archiver::Read { status } => {
            let judged = crate::postgres::archiving::judge_archiver(status);
            let problem = judged
                .iter()
                .find(|f| f.severity == crate::postgres::archiving::Severity::Problem);
            match problem {
                Some(finding) if status.failing => {
                    add("archiver", State::Critical, finding.message.clone())
                }
                Some(finding) => add("archiver", State::Warning, finding.message.clone()),
                None => add(
                    "archiver",
                    State::Ok,
                    format!(
                        "archiver: {} failed attempt{}",
                        status.failed_count,
                        if status.failed_count == 1 { "" } else { "s" }
                    ),
                ),
            }
        }
    }
    match (&figures.last_drill, thresholds.drill_age) {
        (None, None) => {}
        (None, Some(_)) => add(
            "drill",
            State::Warning,
            "no drill has been run (pitr drill)".to_string(),
        ),
        (Some(drill), threshold) => {
            let age = age(now, drill.started);
            let too_old = threshold.map(|t| t.judge(age)).unwrap_or(State::Ok);
            if !drill.passed {
                add(
                    "drill",
                    State::Critical,
                    format!(
                        "last drill FAILED{} {} ago ({})",
                        drill
                            .failed_step
                            .as_ref()
                            .map(|step| format!(" at step `{step}`"))
                            .unwrap_or_default(),
                        format_duration(age),
                        drill.key
                    ),
                );
            } else {
                add(
                    "drill",
                    too_old,
                    format!(
                        "last drill passed {} ago{}",
                        format_duration(age),
                        match (too_old, threshold) {
                            (State::Ok, _) | (_, None) => String::new(),
                            (_, Some(t)) => format!(" (threshold {})", t.describe()),
                        }
                    ),
                );
            }
        }
    }
    for key in &figures.unreadable_drills {
        add(
            "drill",
            State::Warning,
            format!("drill report `{key}` cannot be read"),
        );
    }
    let state = findings
        .iter()
        .map(|f| f.state)
        .max_by_key(|s| s.rank())
        .unwrap_or(State::Ok);
    Verdict { state, findings }
}

/// The status line: `PITR <STATE>: <what> | <performance data>`. When not
/// OK, the findings that are not OK come first, worst first.
pub fn status_line(figures: &Figures, thresholds: &Thresholds, verdict: &Verdict) -> String {
    let mut findings: Vec<&Finding> = verdict.findings.iter().collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.state.rank()));
    let text: Vec<&str> = if verdict.state == State::Ok {
        findings.iter().map(|f| f.message.as_str()).collect()
    } else {
        findings
            .iter()
            .filter(|f| f.state != State::Ok)
            .map(|f| f.message.as_str())
            .collect()
    };
    format!(
        "PITR {}: {} | {}",
        verdict.state.name(),
        text.join("; "),
        performance_data(figures, thresholds)
    )
}

fn secs(duration: Option<Duration>) -> String {
    duration
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default()
}

/// Nagios performance data: `label=value[unit];warn;crit`.
fn performance_data(figures: &Figures, thresholds: &Thresholds) -> String {
    let mut data = Vec::new();
    if let Some((_, archived)) = &figures.newest_wal {
        data.push(format!(
            "wal_age={}s;{};{}",
            age(figures.now, *archived).as_secs(),
            secs(thresholds.wal_age.warning),
            thresholds.wal_age.critical.as_secs()
        ));
    }
    if let Some((_, stopped)) = &figures.newest_backup {
        data.push(format!(
            "backup_age={}s;{};{}",
            age(figures.now, *stopped).as_secs(),
            secs(thresholds.backup_age.warning),
            thresholds.backup_age.critical.as_secs()
        ));
    }
    data.push(format!(
        "missing_segments={};;0",
        figures.gaps.iter().map(|g| g.segments).sum::<u64>()
    ));
    if let Archiver::Read { status } = &figures.archiver {
        data.push(format!("archiver_failed={}c", status.failed_count));
    }
    if let Some(drill) = &figures.last_drill {
        data.push(format!(
            "drill_age={}s;{};{}",
            age(figures.now, drill.started).as_secs(),
            secs(thresholds.drill_age.and_then(|t| t.warning)),
            secs(thresholds.drill_age.map(|t| t.critical))
        ));
    }
    data.join(" ")
}

/// The figures in the Prometheus text exposition format (version 0.0.4),
/// for the node exporter's textfile collector. Every sample carries the
/// repository as label `repo`; windows add `timeline`.
pub fn prometheus(figures: &Figures, verdict: &Verdict) -> String {
    let repo = escape_label(&figures.repository);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{repo=\"{repo}\"{labels}}} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    let timestamp = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    metric(
        "pitr_check_status",
        "Overall state of pitr check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        one(f64::from(verdict.state.exit_code())),
    );
    metric(
        "pitr_check_timestamp_seconds",
        "When pitr check ran (Unix time).",
        one(timestamp(figures.now)),
    );
    if let Some((_, archived)) = &figures.newest_wal {
        metric(
            "pitr_wal_newest_archived_timestamp_seconds",
            "When the newest WAL segment was archived (Unix time).",
            one(timestamp(*archived)),
        );
        metric(
            "pitr_wal_newest_age_seconds",
            "Age of the newest archived WAL segment.",
            one(age(figures.now, *archived).as_secs_f64()),
        );
    }
    if let Some((_, stopped)) = &figures.newest_backup {
        metric(
            "pitr_backup_newest_timestamp_seconds",
            "When the newest backup ended (Unix time).",
            one(timestamp(*stopped)),
        );
        metric(
            "pitr_backup_newest_age_seconds",
            "Age of the newest backup.",
            one(age(figures.now, *stopped).as_secs_f64()),
        );
    }
    metric(
        "pitr_backups",
        "Backups in the repository that can be used.",
        one(figures.backups as f64),
    );
    metric(
        "pitr_wal_segments",
        "WAL segments in the archive.",
        one(figures.segments as f64),
    );
    metric(
        "pitr_wal_missing_segments",
        "WAL segments missing between others of the same timeline (gaps).",
        one(figures.gaps.iter().map(|g| g.segments).sum::<u64>() as f64),
    );
    metric(
        "pitr_timelines_broken",
        "Timelines whose history file is missing or unreadable.",
        one(figures.timeline_problems.len() as f64),
    );
    let window = |pick: fn(&TimelineWindow) -> Option<DateTime<Utc>>| {
        figures
            .windows
            .iter()
            .filter_map(|w| {
                pick(w).map(|t| (format!(",timeline=\"{}\"", w.timeline), timestamp(t)))
            })
            .collect::<Vec<_>>()
    };
    metric(
        "pitr_recoverable_window_start_timestamp_seconds",
        "Earliest point a restore can reach on the timeline (Unix time).",
        window(|w| w.from),
    );
    metric(
        "pitr_recoverable_window_end_timestamp_seconds",
        "Latest point a restore can reach on the timeline (Unix time).",
        window(|w| w.until),
    );
    if let Archiver::Read { status } = &figures.archiver {
        metric(
            "pitr_archiver_failed_count",
            "Failed archiving attempts of the live cluster (pg_stat_archiver.failed_count).",
            one(status.failed_count as f64),
        );
        metric(
            "pitr_archiver_archived_count",
            "WAL files the live cluster archived (pg_stat_archiver.archived_count).",
            one(status.archived_count as f64),
        );
        metric(
            "pitr_archiver_failing",
            "1 when the live cluster's last archiving attempt failed.",
            one(if status.failing { 1.0 } else { 0.0 }),
        );
    }
    if let Some(drill) = &figures.last_drill {
        metric(
            "pitr_drill_last_success",
            "1 when the last drill passed, 0 when it failed.",
            one(if drill.passed { 1.0 } else { 0.0 }),
        );
        metric(
            "pitr_drill_last_timestamp_seconds",
            "When the last drill started (Unix time).",
            one(timestamp(drill.started)),
        );
        metric(
            "pitr_drill_last_rto_seconds",
            "Measured recovery time of the last drill.",
            one(drill.rto_seconds),
        );
    }
    out
}

/// A label value as the text format writes it: `\`, `"` and newlines
/// escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(now: DateTime<Utc>) -> Figures {
        Figures {
            now,
            repository: "/backups \"x\"".into(),
            newest_wal: Some((
                "000000010000000000000005".into(),
                now - chrono::Duration::seconds(30),
            )),
            newest_backup: Some(("20261201T000000Z".into(), now - chrono::Duration::hours(2))),
            backups: 1,
            segments: 5,
            gaps: vec![],
            timeline_problems: vec![],
            windows: vec![TimelineWindow {
                timeline: 1,
                from: Some(now - chrono::Duration::hours(2)),
                until: Some(now - chrono::Duration::seconds(40)),
            }],
            archiver: Archiver::NotAsked,
            last_drill: None,
            unreadable_drills: vec![],
        }
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            wal_age: Threshold::parse("5m,15m").unwrap(),
            backup_age: Threshold::parse("26h").unwrap(),
            drill_age: None,
        }
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(
            Threshold::parse("5m,1h").unwrap(),
            Threshold {
                warning: Some(Duration::from_secs(300)),
                critical: Duration::from_secs(3600)
            }
        );
        assert_eq!(Threshold::parse("1h").unwrap().warning, None);
        assert!(Threshold::parse("1h,5m").is_err());
        assert!(Threshold::parse("soon").is_err());
    }

    #[test]
    fn states_follow_the_ages_and_gaps() {
        let now = Utc::now();
        let mut f = figures(now);
        assert_eq!(judge(&f, &thresholds()).state, State::Ok);
        f.newest_wal = Some(("x".into(), now - chrono::Duration::minutes(10)));
        assert_eq!(judge(&f, &thresholds()).state, State::Warning);
        f.newest_wal = Some(("x".into(), now - chrono::Duration::minutes(20)));
        assert_eq!(judge(&f, &thresholds()).state, State::Critical);
        let mut f = figures(now);
        f.archiver = Archiver::Unreadable { error: "no".into() };
        assert_eq!(judge(&f, &thresholds()).state, State::Unknown);
        f.gaps.push(Gap {
            timeline: 1,
            first_missing: "a".into(),
            last_missing: "a".into(),
            segments: 1,
        });
        assert_eq!(judge(&f, &thresholds()).state, State::Critical);
    }

    #[test]
    fn the_last_drill_counts() {
        let now = Utc::now();
        let mut f = figures(now);
        let mut t = thresholds();
        t.drill_age = Some(Threshold::parse("1d,7d").unwrap());
        // No drill yet, with a drill threshold: a warning.
        assert_eq!(judge(&f, &t).state, State::Warning);
        let drill = |passed, days| LastDrill {
            key: "drills/x.json".into(),
            passed,
            failed_step: (!passed).then(|| "replay".to_string()),
            started: now - chrono::Duration::days(days),
            rto_seconds: 12.0,
        };
        f.last_drill = Some(drill(true, 0));
        assert_eq!(judge(&f, &t).state, State::Ok);
        f.last_drill = Some(drill(true, 3));
        assert_eq!(judge(&f, &t).state, State::Warning);
        f.last_drill = Some(drill(true, 8));
        assert_eq!(judge(&f, &t).state, State::Critical);
        f.last_drill = Some(drill(false, 0));
        let verdict = judge(&f, &thresholds());
        assert_eq!(verdict.state, State::Critical);
        assert!(status_line(&f, &thresholds(), &verdict)
            .starts_with("PITR CRITICAL: last drill FAILED at step `replay` 0s ago"));
    }

    #[test]
    fn prometheus_labels_are_escaped() {
        let f = figures(Utc::now());
        let verdict = judge(&f, &thresholds());
        let text = prometheus(&f, &verdict);
        assert!(
            text.contains("pitr_check_status{repo=\"/backups \\\"x\\\"\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("pitr_recoverable_window_end_timestamp_seconds{repo=\"/backups \\\"x\\\"\",timeline=\"1\"} "));
    }
}
