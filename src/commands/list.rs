//! `pitr list`: the backups and how far back one can go.

use serde_json::json;

use crate::cli::RepoArgs;
use crate::error::Failure;
use crate::plan::exact_window;
use crate::progress::{human_bytes, Reporter};
use crate::repo::backup::BackupFormat;
use crate::repo::wal_source::ArchiveWal;

pub fn run(args: &RepoArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let catalog = super::load_catalog(args, &local)?;
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
                    "stop_time": utc(b.stop_time),
                    "consistent_by": utc(b.consistent_by()),
                    "bytes": b.stored_bytes,
                    "label": b.label.label,
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
                "wal_archive": catalog.location.wal_archive,
                "segments": catalog.archive.segment_count(),
            })
        );
        return Ok(());
    }
    println!(
        "{:<28} {:>3}  {:<10} {:<20} {:<20} {:>10}",
        "backup", "TL", "format", "start LSN", "stopped (UTC)", "size"
    );
    for b in &catalog.backups {
        let format = match b.format {
            BackupFormat::Plain if b.label.incremental_from.is_some() => "plain incr".to_string(),
            BackupFormat::Plain => "plain".to_string(),
            BackupFormat::Tar(c) => format!("tar{}", c.suffix()),
        };
        println!(
            "{:<28} {:>3}  {:<10} {:<20} {:<20} {:>10}",
            b.id,
            b.timeline.value(),
            format,
            b.start_lsn.to_string(),
            b.stop_time
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S"),
            human_bytes(b.stored_bytes)
        );
    }
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
    Ok(())
}
