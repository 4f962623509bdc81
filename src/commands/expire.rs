//! `pitr expire`: remove old backups and the WAL no kept backup needs.
//!
//! The decision is `retention::select` (pure); this file shows it, then
//! carries it out: backups first (each renamed to a hidden name, then
//! deleted), then WAL files oldest first, so an interruption at any point
//! leaves a repository whose every listed backup still restores.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::Utc;
use serde_json::json;

use crate::cli::ExpireArgs;
use crate::duration::format_duration;
use crate::error::{Failure, FailureKind, OrFail};
use crate::progress::{human_bytes, Reporter};
use crate::repo::store::StoreRead;
use crate::repo::writer::{remove_archive_files, remove_backup};
use crate::retention::{
    classify, select, ArchiveEntry, BackupSummary, Policy, Selection, WalFileKind,
};
use crate::wal::{SegmentSize, WalSegment};

mod hidden;

use hidden::HiddenBackups;

pub fn run(args: &ExpireArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let catalog = super::load_catalog(&args.repo, &local)?;
    for warning in &catalog.warnings {
        reporter.warn(warning);
    }
    let repo = crate::repo::writer::open_for_writing(&catalog.location);
    let hidden = HiddenBackups::find(&repo.backups, &args.remove_unfinished)?;
    let by_policy = match policy_of(args) {
        Some(policy) => Some(select_by_policy(&catalog, &repo, policy)?),
        None => None,
    };

    show(by_policy.as_ref(), &hidden, json, args.dry_run, reporter);
    hidden.report(&repo.backups, args.dry_run, reporter);
    if args.dry_run {
        for file in by_policy.iter().flat_map(|p| &p.selection.remove_wal) {
            reporter.detail(format!(
                "would remove {}",
                repo.archive.describe(&file.name)
            ));
        }
        reporter.step("dry run: nothing was removed");
        return Ok(());
    }

    if let Some(by_policy) = &by_policy {
        remove_backups(&by_policy.selection, &repo, reporter)?;
    }
    hidden.remove(&repo.backups)?;
    if let Some(by_policy) = &by_policy {
        remove_wal(&by_policy.selection, &repo, reporter)?;
    }
    reporter.step(summary(by_policy.as_ref(), &hidden));
    Ok(())
}

/// What `--keep` and `--keep-within` ask for, if anything (expire may
/// only be removing unfinished backups).
fn policy_of(args: &ExpireArgs) -> Option<Policy> {
    (args.keep.is_some() || args.keep_within.is_some()).then(|| Policy {
        keep_last: args.keep.map(|n| n as usize),
        keep_within: args.keep_within,
    })
}

/// The policy and what it selects.
struct ByPolicy {
    policy: Policy,
    selection: Selection,
    segment_size: SegmentSize,
}

fn select_by_policy(
    catalog: &crate::repo::Catalog,
    repo: &crate::repo::RepoWrite,
    policy: Policy,
) -> Result<ByPolicy, Failure> {
    // A backup pitr cannot read may need any WAL: deleting around it could
    // make it useless, so nothing is removed until it is dealt with.
    if let Some(unreadable) = catalog.unreadable.first() {
        return Err(Failure::msg(
            FailureKind::PlanRefused,
            format!(
                "cannot tell which WAL backup `{}` needs, so nothing was removed: {}",
                unreadable.id, unreadable.reason
            ),
        )
        .with_hint(format!(
            "repair it, or move `{}` out of the backups directory, then run expire again",
            unreadable.dir
        )));
    }
    let summaries: Vec<BackupSummary> = catalog
        .backups
        .iter()
        .map(|backup| BackupSummary {
            id: backup.id.clone(),
            timeline: backup.timeline,
            start_lsn: backup.start_lsn,
            stop_lsn: backup.stop_lsn,
            consistent_by: backup.consistent_by(),
            bytes: backup.stored_bytes,
        })
        .collect();
    let listing = list_archive(repo.archive.read().as_ref()).or_fail(FailureKind::Internal)?;
    let segment_size = catalog.archive.segment_size;
    let selection = select(
        &summaries,
        &policy,
        Utc::now(),
        &catalog.archive.timelines,
        segment_size,
        &listing,
    );
    Ok(ByPolicy {
        policy,
        selection,
        segment_size,
    })
}

/// The selection as a table (or JSON), and the hidden backups in JSON.
fn show(
    by_policy: Option<&ByPolicy>,
    hidden: &HiddenBackups,
    json: bool,
    dry_run: bool,
    reporter: &Reporter,
) {
    if json {
        let mut value = match by_policy {
            Some(p) => selection_json(&p.selection, &p.policy, p.segment_size, dry_run),
            None => json!({ "dry_run": dry_run }),
        };
        value["hidden_backups"] = hidden.json();
        println!("{value:#}");
    } else if !reporter.quiet {
        if let Some(p) = by_policy {
            print!(
                "{}",
                selection_text(&p.selection, &p.policy, p.segment_size, dry_run)
            );
        }
    }
}

fn interrupted() -> Failure {
    Failure::msg(
        FailureKind::Interrupted,
        "expire was interrupted; every backup still listed restores, and running expire again finishes the job",
    )
}

fn remove_backups(
    selection: &Selection,
    repo: &crate::repo::RepoWrite,
    reporter: &Reporter,
) -> Result<(), Failure> {
    for backup in selection.removed() {
        if crate::interrupt::requested() {
            return Err(interrupted());
        }
        reporter.detail(format!(
            "removing backup {}",
            repo.backups.describe(&backup.id)
        ));
        remove_backup(&repo.backups, &backup.id)
            .or_fail(FailureKind::Internal)
            .map_err(|f| {
                f.with_hint("nothing else was removed; fix the cause and run expire again")
            })?;
    }
    Ok(())
}

/// WAL files oldest first, so that an interruption leaves no gap.
fn remove_wal(
    selection: &Selection,
    repo: &crate::repo::RepoWrite,
    reporter: &Reporter,
) -> Result<(), Failure> {
    for file in &selection.remove_wal {
        if crate::interrupt::requested() {
            return Err(interrupted());
        }
        reporter.detail(format!("removing {}", repo.archive.describe(&file.name)));
        remove_archive_files(&repo.archive, &[&file.name]).or_fail(FailureKind::Internal)?;
    }
    Ok(())
}

fn summary(by_policy: Option<&ByPolicy>, hidden: &HiddenBackups) -> String {
    let hidden_removed = hidden.removed_count();
    let hidden_text = format!("{} hidden backup{}", hidden_removed, plural(hidden_removed));
    let Some(ByPolicy { selection, .. }) = by_policy else {
        return format!("removed {hidden_text}; `pitr list` shows what is left");
    };
    let removed_backups = selection.removed().count();
    format!(
        "removed {} backup{} ({}){} and {} WAL file{} ({}); `pitr list` shows what is left",
        removed_backups,
        plural(removed_backups),
        human_bytes(selection.removed().map(|b| b.bytes).sum()),
        if hidden_removed > 0 {
            format!(", {hidden_text}")
        } else {
            String::new()
        },
        selection.remove_wal.len(),
        plural(selection.remove_wal.len()),
        human_bytes(selection.remove_wal.iter().map(|f| f.bytes).sum()),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Every object of the archive with its size; what each is, retention
/// reads from its name (`repo::archive_name`).
fn list_archive(archive: &dyn StoreRead) -> anyhow::Result<Vec<ArchiveEntry>> {
    let objects = archive
        .list("", None)
        .with_context(|| format!("cannot read the WAL archive `{}`", archive.describe("")))?;
    Ok(objects
        .into_iter()
        .map(|object| ArchiveEntry {
            name: object.key,
            bytes: object.size,
        })
        .collect())
}

/// The name of the first kept segment position, on the timeline of the
/// backup that starts there.
fn wal_from_name(selection: &Selection, size: SegmentSize) -> Option<String> {
    let from = selection.wal_from?;
    let backup = selection
        .kept()
        .find(|b| WalSegment::containing(b.timeline, b.start_lsn, size).number == from)?;
    Some(
        WalSegment {
            timeline: backup.timeline,
            number: from,
            size,
        }
        .file_name(),
    )
}

/// Removed WAL, per timeline: first and last name and the count.
fn removed_ranges(selection: &Selection, size: SegmentSize) -> Vec<String> {
    let mut per_timeline: BTreeMap<u32, (String, String, usize)> = BTreeMap::new();
    let mut others = 0;
    for file in &selection.remove_wal {
        match classify(&file.name, size) {
            WalFileKind::Segment(segment) => {
                let name = segment.file_name();
                per_timeline
                    .entry(segment.timeline.value())
                    .and_modify(|(first, last, count)| {
                        if name < *first {
                            *first = name.clone();
                        }
                        if name > *last {
                            *last = name.clone();
                        }
                        *count += 1;
                    })
                    .or_insert((name.clone(), name, 1));
            }
            _ => others += 1,
        }
    }
    let mut lines: Vec<String> = per_timeline
        .into_iter()
        .map(|(timeline, (first, last, count))| {
            format!(
                "timeline {timeline}: {first} .. {last} ({count} file{})",
                plural(count)
            )
        })
        .collect();
    if others > 0 {
        lines.push(format!("{others} backup history file{}", plural(others)));
    }
    lines
}

fn selection_text(
    selection: &Selection,
    policy: &Policy,
    size: SegmentSize,
    dry_run: bool,
) -> String {
    let mut text = String::new();
    let policy_text = [
        policy
            .keep_last
            .map(|n| format!("the {n} newest backup{}", plural(n))),
        policy.keep_within.map(|d| {
            format!(
                "what restores to any moment of the last {}",
                format_duration(d)
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    text.push_str(&format!("policy: keep {policy_text}\n"));
    if selection.backups.is_empty() {
        text.push_str("no backups: nothing to expire (WAL is never removed from a repository without backups)\n");
        return text;
    }
    let width = selection
        .backups
        .iter()
        .map(|(b, _)| b.id.len())
        .max()
        .unwrap_or(6)
        .max(6);
    text.push_str(&format!(
        "{:<8} {:<width$} {:>3}  {:<23} {:>10}  why\n",
        "", "backup", "TL", "consistent (UTC)", "size"
    ));
    let verb_remove = if dry_run { "would go" } else { "remove" };
    for (backup, decision) in &selection.backups {
        text.push_str(&format!(
            "{:<8} {:<width$} {:>3}  {:<23} {:>10}  {}\n",
            if decision.keeps() {
                "keep"
            } else {
                verb_remove
            },
            backup.id,
            backup.timeline.value(),
            backup
                .consistent_by
                .with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            human_bytes(backup.bytes),
            if decision.keeps() {
                decision.describe(policy)
            } else {
                "older than what the policy keeps".to_string()
            }
        ));
    }
    let removed_bytes: u64 = selection.remove_wal.iter().map(|f| f.bytes).sum();
    let kept_segments = selection
        .keep_wal
        .iter()
        .filter(|f| matches!(classify(&f.name, size), WalFileKind::Segment(_)))
        .count();
    let timelines = selection
        .needed_timelines
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    text.push_str(&format!(
        "WAL: {} {} file{} ({}); keep {} segment{}{}{}\n",
        if dry_run { "would remove" } else { "remove" },
        selection.remove_wal.len(),
        plural(selection.remove_wal.len()),
        human_bytes(removed_bytes),
        kept_segments,
        plural(kept_segments),
        wal_from_name(selection, size)
            .map(|name| format!(" from {name} on"))
            .unwrap_or_default(),
        if timelines.is_empty() {
            String::new()
        } else {
            format!(
                " along timeline{} {timelines}",
                if selection.needed_timelines.len() == 1 {
                    ""
                } else {
                    "s"
                }
            )
        }
    ));
    for line in removed_ranges(selection, size) {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn selection_json(
    selection: &Selection,
    policy: &Policy,
    size: SegmentSize,
    dry_run: bool,
) -> serde_json::Value {
    json!({
        "dry_run": dry_run,
        "policy": {
            "keep": policy.keep_last,
            "keep_within": policy.keep_within.map(format_duration),
            "keep_within_seconds": policy.keep_within.map(|d| d.as_secs()),
        },
        "backups": selection.backups.iter().map(|(backup, decision)| json!({
            "id": backup.id,
            "timeline": backup.timeline,
            "start_lsn": backup.start_lsn,
            "stop_lsn": backup.stop_lsn,
            "consistent_by": backup.consistent_by.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "bytes": backup.bytes,
            "keep": decision.keeps(),
            "reason": decision,
        })).collect::<Vec<_>>(),
        "wal": {
            "keep_from": wal_from_name(selection, size),
            "timelines": selection.needed_timelines,
            "remove": selection.remove_wal,
            "remove_bytes": selection.remove_wal.iter().map(|f| f.bytes).sum::<u64>(),
            "keep_files": selection.keep_wal.len(),
        },
    })
}
