//! `pitr drill`: restore into a scratch copy, prove it, keep the evidence,
//! clean up.
//!
//! The restore is `pitr restore` itself, run as a child process with
//! `--json`: a drill proves exactly the command a DBA would run in the bad
//! hour (same planning, staging, replay and hand-over), and only reads its
//! documented report and exit status. The drill adds what a restore does
//! not: the target, the checks of the copy, the measurements, the report
//! kept in the repository, and the removal of the copy.

use std::time::Instant;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use crate::cli::{DrillArgs, Switch};
use crate::drill::reports::{drills_dir, DrillReports};
use crate::drill::{
    fresh_seed, parse_check_file, random_instant, stop_matches, Check, CheckResult, DrillReport,
    PlannedStop, Rto, Step, StepResult, REPORT_FORMAT,
};
use crate::error::{Failure, FailureKind, OrFail};
use crate::os_user::OsUser;
use crate::plan::exact_window;
use crate::postgres::scratch::{
    read_check_file, Amcheck, Disposal, RestoreRequest, RestoreRun, ScratchCopy,
};
use crate::progress::Reporter;
use crate::repo::wal_source::ArchiveWal;
use crate::repo::{Catalog, RepoLocation};

pub fn run(args: &DrillArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    // What can be refused is refused before anything runs (exit 2, no
    // report: no drill took place).
    let location = RepoLocation::new(
        args.repo.repo.as_deref(),
        args.repo.backups.as_deref(),
        args.repo.wal_archive.as_deref(),
    )
    .or_fail(FailureKind::Usage)?;
    let reports_dir = drills_dir(&location, args.drill_reports.as_deref()).ok_or_else(|| {
        Failure::msg(
            FailureKind::Usage,
            "with --backups and --wal-archive, pass --drill-reports DIR: where the drills' reports are kept",
        )
    })?;
    if let Some(to) = &args.to {
        super::parse_target_args(&crate::cli::TargetArgs {
            to: to.clone(),
            exclusive: false,
            backup: None,
            timeline: "latest".to_string(),
        })?;
    }
    let checks = user_checks(args)?;
    let user = OsUser::for_server(&args.os_user).or_fail(FailureKind::Usage)?;
    // Without a place for the evidence a drill proves nothing to anyone.
    let reports = DrillReports::open(&reports_dir)
        .map_err(|error| {
            Failure::new(FailureKind::Usage, error)
                .with_hint("the drills' reports are kept in the repository: run pitr drill as a user that may write there")
        })?;
    let mut scratch = ScratchCopy::create(args.scratch.as_deref(), "pitr-drill-", user)
        .or_fail(FailureKind::Usage)?;

    let mut drill = Drill::new(args, &location, &scratch);
    reporter.step(format!(
        "drill: restoring into scratch directory {}",
        scratch.root().display()
    ));
    let outcome = drill.run_steps(args, &location, &mut scratch, &checks, reporter);
    // Measured up to the end of the checks, or to the failure.
    if let Some(started) = drill.checks_started {
        drill.report.rto_seconds.checks = started.elapsed().as_secs_f64();
    }
    drill.report.rto_seconds.total = drill.clock.elapsed().as_secs_f64();

    // Evidence first, then the cleanup: a failed drill keeps its server log.
    let failed = outcome.is_err();
    let kept_log = if failed {
        scratch.keep_server_log()
    } else {
        None
    };
    drill.report.server_log = kept_log
        .as_ref()
        .map(|(path, _)| path.display().to_string());
    drill.report.kept = args.keep;
    let cleanup = scratch.finish(match (args.keep, &kept_log) {
        (true, _) => Disposal::Keep,
        (false, Some(_)) => Disposal::RemoveKeepingLog,
        (false, None) => Disposal::Remove,
    });
    if let Err(error) = cleanup {
        reporter.warn(format!("the scratch copy was not cleaned up: {error:#}"));
    }
    drill.report.finished = Utc::now();
    let saved = reports
        .save(
            &drill.report,
            kept_log.as_ref().map(|(_, bytes)| bytes.as_slice()),
        )
        .map_err(|error| {
            Failure::new(FailureKind::Internal, error).with_hint(
                "the drill ran but its report is not in the repository; see the output above",
            )
        });
    let report = match &saved {
        Ok(saved) => saved.report.clone(),
        Err(_) => drill.report.clone(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    if !json && (!reporter.quiet || failed) {
        eprintln!("{}", report.summary());
    }
    if let Ok(saved) = &saved {
        reporter.step(format!("  report:     {}", saved.described));
    }
    saved?;
    match outcome {
        Ok(()) => Ok(()),
        Err((step, error)) => Err(Failure::msg(
            FailureKind::DrillFailed,
            format!("drill failed at step `{}`: {error}", step.name()),
        )
        .with_hint(match &report.server_log {
            Some(log) => {
                format!("the server log is kept at `{log}` and in the repository beside the report")
            }
            None => "the report in the repository says what was tried".to_string(),
        })),
    }
}

/// The user's queries: `--check` first, then each `--check-file` line.
fn user_checks(args: &DrillArgs) -> Result<Vec<Check>, Failure> {
    let mut checks: Vec<Check> = args
        .checks
        .iter()
        .map(|sql| Check {
            query: sql.trim().trim_end_matches(';').trim().to_string(),
            expected: "t".to_string(),
        })
        .collect();
    for file in &args.check_files {
        let text = read_check_file(file).or_fail(FailureKind::Usage)?;
        let parsed = parse_check_file(&text).map_err(|error| {
            Failure::msg(
                FailureKind::Usage,
                format!("the check file `{}`: {error}", file.display()),
            )
        })?;
        checks.extend(parsed);
    }
    Ok(checks)
}

/// A drill under way: its report, filled in step by step.
struct Drill {
    report: DrillReport,
    clock: Instant,
    /// When the checks of the copy began (the end of the restore).
    checks_started: Option<Instant>,
}

/// The first step that failed, and why.
type StepFailure = (Step, String);

impl Drill {
    fn new(args: &DrillArgs, location: &RepoLocation, scratch: &ScratchCopy) -> Drill {
        let now = Utc::now();
        Drill {
            report: DrillReport {
                format: REPORT_FORMAT,
                passed: false,
                failed_step: None,
                error: None,
                started: now,
                finished: now,
                pitr_version: env!("CARGO_PKG_VERSION").to_string(),
                repository: location.repository_text(),
                target_requested: args.to.clone().unwrap_or_else(|| "random".to_string()),
                target: String::new(),
                seed: None,
                timeline: None,
                window_from: None,
                window_until: None,
                backup: None,
                planned_stop: None,
                reached_stop: None,
                stop_point_exact: false,
                promoted: false,
                new_timeline: None,
                last_transaction: None,
                data_age_seconds: None,
                rpo_seconds: None,
                rto_seconds: Rto::default(),
                steps: Vec::new(),
                amcheck: None,
                checks: Vec::new(),
                scratch: scratch.root().display().to_string(),
                port: None,
                archive_mode: None,
                kept: false,
                server_log: None,
                server_log_key: None,
            },
            clock: Instant::now(),
            checks_started: None,
        }
    }

    /// Records a step; a failed one ends the drill.
    fn record(
        &mut self,
        step: Step,
        passed: bool,
        detail: String,
        started: Instant,
    ) -> Result<(), StepFailure> {
        self.report.steps.push(StepResult {
            step,
            passed,
            detail: detail.clone(),
            seconds: started.elapsed().as_secs_f64(),
        });
        if passed {
            return Ok(());
        }
        self.report.failed_step = Some(step);
        self.report.error = Some(detail.clone());
        Err((step, detail))
    }

    /// The checklist. Each step records itself; the first failure ends it.
    fn run_steps(
        &mut self,
        args: &DrillArgs,
        location: &RepoLocation,
        scratch: &mut ScratchCopy,
        checks: &[Check],
        reporter: &Reporter,
    ) -> Result<(), StepFailure> {
        let started = Instant::now();
        let window = match newest_window(location) {
            Ok(window) => window,
            Err(error) => return self.record(Step::Plan, false, error, started),
        };
        self.report.timeline = Some(window.timeline);
        self.report.window_from = Some(window.from);
        self.report.window_until = Some(window.until);
        self.report.rpo_seconds = Some(seconds_between(window.until, self.report.started));
        let target = match &args.to {
            Some(to) => to.clone(),
            None => {
                let seed = args.seed.unwrap_or_else(fresh_seed);
                self.report.seed = Some(seed);
                match random_instant(window.from, window.until, seed) {
                    Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    None => {
                        return self.record(
                            Step::Plan,
                            false,
                            format!(
                                "the recoverable window of timeline {} is empty ({} to {}): there is nothing to draw a target from; pass --to",
                                window.timeline, window.from, window.until
                            ),
                            started,
                        )
                    }
                }
            }
        };
        self.report.target = target.clone();
        reporter.step(format!("drill: target {target}"));
        let own_planning = started.elapsed().as_secs_f64();

        // Plan, staging and replay: `pitr restore`, whose exit status says
        // which of them failed.
        // The copy gets a free port and keeps archiving off (the
        // restore's defaults), so it never touches the production port,
        // socket or archive.
        let request = RestoreRequest {
            repo_args: location.command_args(),
            target: target.clone(),
            exclusive: false,
            backup: None,
            timeline: None,
            bin_dir: args.bin_dir.as_deref(),
            os_user: &args.os_user,
            only_database: None,
            // A drill proves the restore a user would get, flushes and
            // restart after promotion included.
            throwaway: false,
        };
        let restore = match scratch.restore(&request, reporter) {
            Ok(restore) => restore,
            Err(error) => return self.record(Step::Plan, false, format!("{error:#}"), started),
        };
        let Some(json) = restore.report.clone() else {
            return self.record(failed_step(&restore), false, restore.error(), started);
        };
        let seconds = |name: &str| json["seconds"][name].as_f64().unwrap_or(0.0);
        self.report.rto_seconds.plan = own_planning + seconds("plan");
        self.report.rto_seconds.staging = seconds("staging");
        self.report.rto_seconds.replay = seconds("recovery");
        let plan = &json["plan"];
        self.report.backup = plan["backup"]["id"].as_str().map(str::to_string);
        for (step, detail, secs) in [
            (
                Step::Plan,
                format!(
                    "backup {}, WAL {} .. {}",
                    plan["backup"]["id"].as_str().unwrap_or("?"),
                    plan["wal"]["first"].as_str().unwrap_or("?"),
                    plan["wal"]["last"].as_str().unwrap_or("?")
                ),
                self.report.rto_seconds.plan,
            ),
            (
                Step::Staging,
                format!(
                    "{} staged",
                    crate::progress::human_bytes(json["bytes_staged"].as_u64().unwrap_or(0))
                ),
                seconds("staging"),
            ),
            (
                Step::Replay,
                format!(
                    "{} files restored from the archive, {}",
                    json["restored_files"].as_u64().unwrap_or(0),
                    json["state"].as_str().unwrap_or("?")
                ),
                seconds("recovery"),
            ),
        ] {
            self.report.steps.push(StepResult {
                step,
                passed: true,
                detail,
                seconds: secs,
            });
        }
        self.report.data_age_seconds =
            data_time(plan, &window).map(|time| seconds_between(time, self.report.started));

        // The stop point: PostgreSQL's own line against the plan's, then a
        // copy that accepts writes.
        let checks_started = Instant::now();
        self.checks_started = Some(checks_started);
        let planned = planned_stop(plan);
        let reached = json["stop"]["message"].as_str().map(str::to_string);
        let redo_done = !json["stop"]["redo_done_lsn"].is_null();
        self.report.stop_point_exact = stop_matches(&planned, reached.as_deref(), redo_done);
        self.report.planned_stop = Some(planned.clone());
        self.report.reached_stop = reached.clone();
        self.report.new_timeline = json["new_timeline"].as_u64().map(|t| t as u32);
        self.report.last_transaction = json["stop"]["last_transaction"]
            .as_str()
            .map(str::to_string);
        if scratch.binaries().is_none() {
            return self.record(
                Step::StopPoint,
                false,
                "the restore's report does not say which PostgreSQL programs ran the copy"
                    .to_string(),
                checks_started,
            );
        }
        // One query: writable, and not archiving (the copy must never
        // write into the production archive).
        let state = scratch
            .sql(
                "postgres",
                "SELECT NOT pg_is_in_recovery(), current_setting('archive_mode')",
            )
            .map_err(|error| format!("{error:#}"));
        let (writable, archive_mode) = match &state {
            Ok(text) => {
                let mut fields = text.split('|');
                (
                    Ok(fields.next().unwrap_or_default().to_string()),
                    fields.next().map(str::to_string),
                )
            }
            Err(error) => (Err(error.clone()), None),
        };
        self.report.archive_mode = archive_mode.clone();
        self.report.promoted = json["state"] == "promoted" && writable.as_deref() == Ok("t");
        let archiving_off = archive_mode.as_deref() == Some("off");
        let stop_detail = match (self.report.stop_point_exact, self.report.promoted) {
            (true, true) if !archiving_off => format!(
                "the copy runs with archive_mode = {}: it could write into the production archive",
                archive_mode.as_deref().unwrap_or("unknown")
            ),
            (true, true) => format!(
                "as planned, {}; promoted to timeline {}, archiving off",
                reached.as_deref().unwrap_or("end of the archive"),
                self.report
                    .new_timeline
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
            (false, _) => format!(
                "PostgreSQL stopped at `{}`, the plan said {}",
                reached.as_deref().unwrap_or("the end of the WAL it read"),
                describe_planned(&planned)
            ),
            (true, false) => format!(
                "the copy does not accept writes after the promotion: {}",
                match &writable {
                    Ok(value) => format!(
                        "pg_is_in_recovery() is {}",
                        if value == "t" { "false" } else { "true" }
                    ),
                    Err(error) => error.clone(),
                }
            ),
        };
        let stop_ok = self.report.stop_point_exact && self.report.promoted && archiving_off;
        self.record(Step::StopPoint, stop_ok, stop_detail, checks_started)?;

        if args.amcheck == Switch::On {
            let started = Instant::now();
            reporter.step("drill: pg_amcheck on every database of the copy");
            match scratch.amcheck() {
                Amcheck::NotInstalled(program) => {
                    self.report.amcheck =
                        Some(format!("skipped: `{}` is not installed", program.display()));
                }
                Amcheck::Clean => {
                    self.report.amcheck = Some("clean".to_string());
                    self.record(
                        Step::Amcheck,
                        true,
                        "no corruption found in any database".to_string(),
                        started,
                    )?;
                }
                Amcheck::Failed(report) => {
                    self.report.amcheck = Some(report.clone());
                    self.record(Step::Amcheck, false, report, started)?;
                }
            }
        } else {
            self.report.amcheck = Some("off (--amcheck=off)".to_string());
        }

        if !checks.is_empty() {
            let started = Instant::now();
            for check in checks {
                let got = scratch
                    .sql(&args.dbname, &check.query)
                    .map_err(|error| format!("{error:#}"));
                let passed = got.as_deref() == Ok(check.expected.as_str());
                self.report.checks.push(CheckResult {
                    query: check.query.clone(),
                    expected: check.expected.clone(),
                    got: got.unwrap_or_else(|error| format!("error: {error}")),
                    passed,
                });
            }
            let failed: Vec<&CheckResult> =
                self.report.checks.iter().filter(|c| !c.passed).collect();
            let detail = if failed.is_empty() {
                format!("{} of {} passed", checks.len(), checks.len())
            } else {
                format!(
                    "{} of {} failed: {}",
                    failed.len(),
                    checks.len(),
                    failed
                        .iter()
                        .map(|c| format!(
                            "`{}` gave `{}`, expected `{}`",
                            c.query, c.got, c.expected
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            self.record(Step::Checks, failed.is_empty(), detail, started)?;
        }
        self.report.passed = true;
        Ok(())
    }
}

/// The recoverable window of the newest timeline, with both ends known.
struct Window {
    timeline: u32,
    from: DateTime<FixedOffset>,
    until: DateTime<FixedOffset>,
}

fn newest_window(location: &RepoLocation) -> Result<Window, String> {
    let local = super::local_zone();
    let catalog = Catalog::scan(location.clone(), &local).map_err(|error| format!("{error:#}"))?;
    let Some(timeline) = catalog.archive.timelines().into_iter().max() else {
        return Err(format!(
            "the WAL archive `{}` holds no WAL",
            location.wal_archive_text()
        ));
    };
    let path = catalog
        .archive
        .timelines
        .path(timeline)
        .map_err(|error| format!("timeline {timeline}: {error}"))?;
    let wal = ArchiveWal::new(&catalog.archive);
    let window = exact_window(&wal, &catalog.archive, &path, &catalog.backups);
    wal.save();
    match window {
        Ok(Some(window)) => match window.until {
            Some(until) => Ok(Window {
                timeline: timeline.value(),
                from: window.from,
                until,
            }),
            None => Err(format!(
                "timeline {timeline} has no commit in the archive after its backup's end, so there is no window to draw a target from; pass --to"
            )),
        },
        Ok(None) => Err(format!(
            "no backup leads to timeline {timeline}, the newest: take a backup (pitr backup), or pass --to"
        )),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// The time the restored data is as of: the time target, else the stop
/// event's, else the end of the window (`latest`).
fn data_time(plan: &Value, window: &Window) -> Option<DateTime<FixedOffset>> {
    let parse = |value: &Value| {
        value
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
    };
    if plan["target"]["kind"] == "time" {
        return parse(&plan["target"]["value"]);
    }
    parse(&plan["stop"]["time"]).or(match plan["target"]["kind"].as_str() {
        Some("latest") => Some(window.until),
        _ => None,
    })
}

fn seconds_between(earlier: DateTime<FixedOffset>, later: DateTime<Utc>) -> f64 {
    later.signed_duration_since(earlier).num_milliseconds() as f64 / 1000.0
}

/// What the restore's plan says recovery stops at.
fn planned_stop(plan: &Value) -> PlannedStop {
    let stop = &plan["stop"];
    match (
        stop["kind"].as_str(),
        stop["xid"].as_u64(),
        stop["name"].as_str(),
    ) {
        (Some(kind @ ("commit" | "abort")), Some(xid), _) => PlannedStop::Transaction {
            xid,
            what: kind.to_string(),
        },
        (Some("restore_point"), _, Some(name)) => PlannedStop::RestorePoint {
            name: name.to_string(),
        },
        _ => match plan["target"]["kind"].as_str() {
            Some("latest") => PlannedStop::EndOfArchive,
            Some("immediate") => PlannedStop::Consistency,
            _ => PlannedStop::Unknown,
        },
    }
}

fn describe_planned(planned: &PlannedStop) -> String {
    match planned {
        PlannedStop::Transaction { xid, what } => format!("the {what} of transaction {xid}"),
        PlannedStop::RestorePoint { name } => format!("restore point \"{name}\""),
        PlannedStop::EndOfArchive => "the end of the archive".to_string(),
        PlannedStop::Consistency => "the backup's consistent point".to_string(),
        PlannedStop::Unknown => {
            "nothing it could tell (the WAL could not be decoded), so the stop point cannot be proven".to_string()
        }
    }
}

/// The step a failed restore stopped at, by its documented exit status.
fn failed_step(run: &RestoreRun) -> Step {
    match run.exit_code {
        Some(2 | 3) => Step::Plan,
        Some(4) => Step::Staging,
        Some(5) => Step::Replay,
        _ if run
            .lines
            .iter()
            .any(|l| l.starts_with("starting PostgreSQL")) =>
        {
            Step::Replay
        }
        _ if run.lines.iter().any(|l| l.starts_with("staging backup")) => Step::Staging,
        _ => Step::Plan,
    }
}
