//! `pitr check`: a monitoring plugin. Gathers the repository's figures
//! (and the live cluster's archiver), judges them against the thresholds
//! (`health`), prints one status line, JSON or Prometheus text, and exits
//! with the Nagios code. Anything that keeps the check from running is
//! UNKNOWN (3), never a pitr exit code that monitoring would misread.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cli::CheckArgs;
use crate::drill::reports::{drills_dir, DrillHistory};
use crate::health::{
    judge, prometheus, status_line, Archiver, Figures, Gap, LastDrill, State, Threshold,
    Thresholds, TimelineWindow,
};
use crate::os_user::OsUser;
use crate::plan::exact_window;
use crate::postgres::cluster::{archiver_status, archiver_status_from_environment};
use crate::progress::Reporter;
use crate::repo::wal_source::ArchiveWal;
use crate::repo::{absolute, Catalog, RepoLocation};
use crate::wal::WalSegment;

pub fn run(args: &CheckArgs, json: bool, reporter: &Reporter) -> u8 {
    match gather_and_judge(args, json, reporter) {
        Ok(state) => state.exit_code(),
        Err(error) => {
            // Monitoring reads stdout: the one line goes there.
            println!("PITR UNKNOWN: {error}");
            State::Unknown.exit_code()
        }
    }
}

fn gather_and_judge(args: &CheckArgs, json: bool, reporter: &Reporter) -> Result<State, String> {
    let thresholds = Thresholds {
        wal_age: threshold("--max-wal-age", &args.max_wal_age)?,
        backup_age: threshold("--max-backup-age", &args.max_backup_age)?,
        drill_age: args
            .max_drill_age
            .as_deref()
            .map(|text| threshold("--max-drill-age", text))
            .transpose()?,
    };
    if json && args.prometheus {
        return Err("--json and --prometheus: choose one".to_string());
    }
    let location = RepoLocation::new(
        args.repo.repo.as_deref(),
        args.repo.backups.as_deref(),
        args.repo.wal_archive.as_deref(),
    )
    .map_err(|error| format!("{error:#}"))?;
    let local = super::local_zone();
    let catalog = Catalog::scan(location.clone(), &local).map_err(|error| format!("{error:#}"))?;
    for warning in &catalog.warnings {
        reporter.detail(format!("warning: {warning}"));
    }
    let figures = gather(args, &catalog)?;
    let verdict = judge(&figures, &thresholds);
    if args.prometheus {
        print!("{}", prometheus(&figures, &verdict));
    } else if json {
        println!(
            "{:#}",
            json!({
                "state": verdict.state,
                "exit_code": verdict.state.exit_code(),
                "status": status_line(&figures, &thresholds, &verdict),
                "findings": verdict.findings,
                "figures": figures,
                "thresholds": thresholds,
            })
        );
    } else {
        println!("{}", status_line(&figures, &thresholds, &verdict));
        // Nagios' long output: every finding, one per line.
        for finding in &verdict.findings {
            println!("{}: {}", finding.state.name(), finding.message);
        }
    }
    Ok(verdict.state)
}

fn threshold(option: &str, text: &str) -> Result<Threshold, String> {
    Threshold::parse(text).map_err(|error| format!("{option}: {error}"))
}

/// Reads every figure the check judges.
fn gather(args: &CheckArgs, catalog: &Catalog) -> Result<Figures, String> {
    let archive = &catalog.archive;
    let timelines = archive.timelines();
    let to_utc = |time: std::time::SystemTime| DateTime::<Utc>::from(time);

    let newest_wal = timelines
        .iter()
        .filter_map(|timeline| archive.last_segment(*timeline))
        .filter_map(|segment| {
            archive
                .segment(segment)
                .map(|file| (segment.file_name(), to_utc(file.modified)))
        })
        .max_by_key(|(_, archived)| *archived);
    let newest_backup = catalog
        .backups
        .iter()
        .max_by_key(|backup| backup.stop_time)
        .map(|backup| (backup.id.clone(), backup.stop_time.with_timezone(&Utc)));

    let mut gaps = Vec::new();
    for timeline in &timelines {
        let (Some(first), Some(last)) = (
            archive.first_segment(*timeline),
            archive.last_segment(*timeline),
        ) else {
            continue;
        };
        let mut missing: Option<(WalSegment, u64)> = None;
        for number in first.number..=last.number {
            let segment = WalSegment { number, ..first };
            if archive.segment(segment).is_none() {
                missing = Some(match missing {
                    Some((start, count)) => (start, count + 1),
                    None => (segment, 1),
                });
                continue;
            }
            if let Some((start, count)) = missing.take() {
                gaps.push(Gap {
                    timeline: timeline.value(),
                    first_missing: start.file_name(),
                    last_missing: WalSegment {
                        number: number - 1,
                        ..first
                    }
                    .file_name(),
                    segments: count,
                });
            }
        }
    }

    let mut timeline_problems: Vec<String> = archive
        .broken_histories
        .iter()
        .map(|(timeline, reason)| format!("timeline {timeline}: {reason}"))
        .collect();
    let wal = ArchiveWal::new(archive);
    let mut windows = Vec::new();
    for timeline in &timelines {
        match archive.timelines.path(*timeline) {
            Err(error) => {
                if !archive.broken_histories.contains_key(timeline) {
                    timeline_problems.push(format!("timeline {timeline}: {error}"));
                }
            }
            Ok(path) => {
                let window = exact_window(&wal, archive, &path, &catalog.backups)
                    .ok()
                    .flatten();
                windows.push(TimelineWindow {
                    timeline: timeline.value(),
                    from: window.as_ref().map(|w| w.from.with_timezone(&Utc)),
                    until: window
                        .as_ref()
                        .and_then(|w| w.until)
                        .map(|t| t.with_timezone(&Utc)),
                });
            }
        }
    }
    wal.save();

    let archiver = read_archiver(args);

    let mut unreadable_drills = Vec::new();
    let last_drill = match drills_dir(&catalog.location, args.drill_reports.as_deref()) {
        None => None,
        Some(dir) => {
            let stored = DrillHistory::new(&dir)
                .all()
                .map_err(|error| format!("{error:#}"))?;
            let mut last = None;
            for report in stored {
                match report.report {
                    Ok(drill) => {
                        last = Some(LastDrill {
                            key: report.key,
                            passed: drill.passed,
                            failed_step: drill.failed_step.map(|s| s.name().to_string()),
                            started: drill.started,
                            rto_seconds: drill.rto_seconds.total,
                        })
                    }
                    Err(_) => unreadable_drills.push(report.key),
                }
            }
            last
        }
    };

    Ok(Figures {
        now: Utc::now(),
        repository: catalog.location.repository_text(),
        newest_wal,
        newest_backup,
        backups: catalog.backups.len(),
        segments: archive.segment_count(),
        gaps,
        timeline_problems,
        windows,
        archiver,
        last_drill,
        unreadable_drills,
    })
}

/// The live cluster's archiver: from `--pgdata`, else from the server the
/// `PG*` variables name when one of PGHOST, PGPORT or PGSERVICE is set.
fn read_archiver(args: &CheckArgs) -> Archiver {
    let user = match OsUser::for_server(&args.os_user) {
        Ok(user) => user,
        Err(error) => {
            return Archiver::Unreadable {
                error: format!("{error:#}"),
            }
        }
    };
    let result = match &args.pgdata {
        Some(pgdata) => {
            let pgdata = match absolute(pgdata) {
                Ok(pgdata) => pgdata,
                Err(error) => {
                    return Archiver::Unreadable {
                        error: format!("{error:#}"),
                    }
                }
            };
            match archiver_status(&pgdata, &user, args.bin_dir.as_deref()) {
                Ok(None) => {
                    return Archiver::NotRunning {
                        pgdata: pgdata.display().to_string(),
                    }
                }
                Ok(Some(status)) => Ok(status),
                Err(error) => Err(error),
            }
        }
        None if ["PGHOST", "PGPORT", "PGSERVICE"]
            .iter()
            .any(|name| std::env::var_os(name).is_some()) =>
        {
            archiver_status_from_environment(&user, args.bin_dir.as_deref())
        }
        None => return Archiver::NotAsked,
    };
    match result {
        Ok(status) => Archiver::Read { status },
        Err(error) => Archiver::Unreadable {
            error: format!("{error:#}"),
        },
    }
}
