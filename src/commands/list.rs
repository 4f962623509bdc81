//! `pitr list`: the backups and how far back one can go.

use serde_json::json;

use crate::cli::ListArgs;
use crate::drill::reports::{drills_dir, DrillHistory};
use crate::error::{Failure, FailureKind, OrFail};
use crate::plan::{exact_window, precise_utc, restorable_from};
use crate::progress::{human_bytes, Reporter};
use crate::repo::backup::BackupFormat;
use crate::repo::wal_source::ArchiveWal;

pub fn run(args: &ListArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    if args.drills {
        return list_drills(args, json);
    }
    let local = super::local_zone();
    let catalog = super::load_catalog(&args.repo, &local)?;
    for warning in &catalog.warnings {
        reporter.warn(warning);
    }
    let timelines = catalog.archive.timelines();
    let wal = ArchiveWal::new(&catalog.archive);
    let utc = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    };
    if json {
        let backups: Vec<_> = catalog
            .backups
            .iter()
            .map(|b| {
                json!({
                    "id": b.id,
                    "timeline": b.timeline,
                    "format": b.format,
                    "start_lsn": b.start_lsn,
                    "stop_lsn": b.stop_lsn,
                    "start_time": b.label.start_time.instant.map(utc),
                    "stop_time": utc(b.stop_time),
                    // The same value as the window's start and `pitr backup`'s line.
                    "restorable_from": restorable_from(&wal, &catalog.archive, b).ok().map(utc),
                    "bytes": b.stored_bytes,
                    "label": b.label.label,
                    // `primary` or `standby` (a standby's backup ends at
                    // its manifest's End-LSN or pg_control's minimum
                    // recovery point, never at a primary's history file).
                    "backup_from": b.label.from,
                    "stop_source": b.stop_time_source,
                    "postgresql_version": b.major_version,
                    // Incremental (17+): the start of the backup it builds on.
                    "incremental_from": b.label.incremental_from,
                })
            })
            .collect();
        let timelines: Vec<_> = timelines
            .iter()
            .map(|timeline| {
                let parent = catalog.archive.timelines.parent(*timeline);
                let path = catalog.archive.timelines.path(*timeline).ok();
                let window = path
                    .as_ref()
                    .and_then(|path| exact_window(&wal, &catalog.archive, path, &catalog.backups).ok().flatten());
                json!({
                    "timeline": timeline,
                    "parent": parent.map(|(parent, _)| parent),
                    "branch_lsn": parent.map(|(_, lsn)| lsn),
                    "path": path.as_ref().map(|p| p.to_string()),
                    "first_segment": catalog.archive.first_segment(*timeline).map(|s| s.file_name()),
                    "last_segment": catalog.archive.last_segment(*timeline).map(|s| s.file_name()),
                    "backups": catalog.backups.iter().filter(|b| b.timeline == *timeline).map(|b| b.id.clone()).collect::<Vec<_>>(),
                    "recoverable_from": window.as_ref().map(|w| utc(w.from)),
                    // Set when the start is the backup's stop time because
                    // the WAL holding its last commit is gone.
                    "recoverable_from_note": window.as_ref().and_then(|w| w.from_note.as_deref()),
                    "recoverable_until": window.as_ref().and_then(|w| w.until).map(utc),
                })
            })
            .collect();
        println!(
            "{:#}",
            json!({
                "backups": backups,
                "unreadable_backups": catalog.unreadable,
                "timelines": timelines,
                "wal_archive": catalog.location.wal_archive_text(),
                "segments": catalog.archive.segment_count(),
            })
        );
        wal.save();
        return Ok(());
    }
    let restorable: Vec<String> = catalog
        .backups
        .iter()
        .map(|b| match restorable_from(&wal, &catalog.archive, b) {
            Ok(time) => precise_utc(time).trim_end_matches(" UTC").to_string(),
            Err(_) => "unknown".to_string(),
        })
        .collect();
    println!("{}", backup_table(&catalog.backups, &restorable));
    for unreadable in &catalog.unreadable {
        println!(
            "{:<28} cannot be used: {}",
            unreadable.id, unreadable.reason
        );
    }
    println!();
    for timeline in timelines {
        let segments = match (
            catalog.archive.first_segment(timeline),
            catalog.archive.last_segment(timeline),
        ) {
            (Some(first), Some(last)) => format!("WAL {first} .. {last}"),
            _ => "no WAL segments".to_string(),
        };
        let branched = match catalog.archive.timelines.parent(timeline) {
            Some((parent, lsn)) => format!(", branched from timeline {parent} at {lsn}"),
            None => String::new(),
        };
        let backups: Vec<&str> = catalog
            .backups
            .iter()
            .filter(|b| b.timeline == timeline)
            .map(|b| b.id.as_str())
            .collect();
        let backups = if backups.is_empty() {
            String::new()
        } else {
            format!("; backups {}", backups.join(", "))
        };
        let window = match catalog.archive.timelines.path(timeline) {
            Ok(path) => match exact_window(&wal, &catalog.archive, &path, &catalog.backups) {
                Ok(Some(window)) => format!("recoverable {window}"),
                Ok(None) => "no backup on its path".to_string(),
                Err(error) => format!("cannot tell the window: {error}"),
            },
            Err(error) => error.to_string(),
        };
        println!("timeline {timeline}{branched}{backups}: {segments}; {window}");
    }
    wal.save();
    Ok(())
}

/// The drills' reports, oldest first: when, the result, the failed step,
/// the target and the measured recovery time.
fn list_drills(args: &ListArgs, json: bool) -> Result<(), Failure> {
    let location = crate::repo::RepoLocation::new(
        args.repo.repo.as_deref(),
        args.repo.backups.as_deref(),
        args.repo.wal_archive.as_deref(),
    )
    .or_fail(FailureKind::Usage)?;
    let dir = drills_dir(&location, args.drill_reports.as_deref()).ok_or_else(|| {
        Failure::msg(
            FailureKind::Usage,
            "with --backups and --wal-archive, pass --drill-reports DIR: where the drills' reports are kept",
        )
    })?;
    let reports = DrillHistory::new(&dir)
        .all()
        .or_fail(FailureKind::PlanRefused)?;
    if json {
        let list: Vec<_> = reports
            .iter()
            .map(|stored| match &stored.report {
                Ok(report) => json!({"key": stored.key, "report": report}),
                Err(error) => json!({"key": stored.key, "error": error}),
            })
            .collect();
        println!("{:#}", json!({ "drills": list }));
        return Ok(());
    }
    if reports.is_empty() {
        println!("no drills yet in {} (run pitr drill)", dir.display());
        return Ok(());
    }
    println!(
        "{:<22} {:<8} {:<12} {:>9}  target",
        "started (UTC)", "result", "failed step", "RTO"
    );
    for stored in &reports {
        match &stored.report {
            Ok(report) => println!(
                "{:<22} {:<8} {:<12} {:>8.1}s  {}",
                report.started.format("%Y-%m-%d %H:%M:%S"),
                if report.passed { "passed" } else { "FAILED" },
                report.failed_step.map(|s| s.name()).unwrap_or("-"),
                report.rto_seconds.total,
                report.target
            ),
            Err(error) => println!("{:<22} unreadable: {error}", stored.key),
        }
    }
    Ok(())
}

/// The backups as a table whose columns fit their contents: id, timeline,
/// format, when it started and stopped (UTC), from when it is restorable,
/// its WAL range and its size.
fn backup_table(backups: &[crate::repo::backup::Backup], restorable: &[String]) -> String {
    let time = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let header = [
        "backup",
        "TL",
        "format",
        "started (UTC)",
        "stopped (UTC)",
        "restorable from (UTC)",
        "start LSN",
        "stop LSN",
        "size",
    ]
    .map(str::to_string);
    let mut rows = vec![header];
    for (b, restorable) in backups.iter().zip(restorable) {
        rows.push([
            b.id.clone(),
            b.timeline.to_string(),
            match b.format {
                BackupFormat::Plain if b.label.incremental_from.is_some() => {
                    "plain incr".to_string()
                }
                BackupFormat::Plain => "plain".to_string(),
                BackupFormat::Tar(c) => format!("tar{}", c.suffix()),
            },
            b.label
                .start_time
                .instant
                .map(time)
                .unwrap_or_else(|| b.label.start_time.text.clone()),
            time(b.stop_time),
            restorable.clone(),
            b.start_lsn.to_string(),
            b.stop_lsn.to_string(),
            human_bytes(b.stored_bytes),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| match column {
                    // Numbers align right.
                    1 | 8 => format!("{cell:>width$}"),
                    _ => format!("{cell:<width$}"),
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect();
    if backups.is_empty() {
        lines.push("(no backups yet: `pitr backup` takes one)".to_string());
    } else {
        let total: u64 = backups.iter().map(|b| b.stored_bytes).sum();
        lines.push(format!(
            "{} backup{}, {} in all",
            backups.len(),
            if backups.len() == 1 { "" } else { "s" },
            human_bytes(total)
        ));
    }
    lines.join("\n")
}
