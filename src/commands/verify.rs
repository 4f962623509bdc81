//! `pitr verify`: are the backups and the WAL archive intact?

use serde_json::json;

use crate::cli::VerifyArgs;
use crate::error::{Failure, FailureKind};
use crate::progress::{human_bytes, Reporter};
use crate::verify::{verify_archive, verify_backup};

pub fn run(args: &VerifyArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let catalog = super::load_catalog(&args.repo, &local)?;
    let backups: Vec<_> = match &args.backup {
        Some(id) => vec![catalog.backup(id).ok_or_else(|| {
            Failure::msg(
                FailureKind::Usage,
                format!("there is no backup `{id}` in the repository"),
            )
        })?],
        None => catalog.backups.iter().collect(),
    };
    let mut problems = 0;
    let mut backup_reports = Vec::new();
    for backup in backups {
        reporter.step(format!("verifying backup {}", backup.id));
        let report = verify_backup(catalog.stores.backups.as_ref(), backup);
        problems += report.problems.len();
        backup_reports.push(report);
    }
    let unreadable: Vec<String> = catalog
        .unreadable
        .iter()
        .filter(|u| args.backup.as_ref().is_none_or(|id| &u.id == id))
        .map(|u| format!("backup `{}` cannot be read: {}", u.id, u.reason))
        .collect();
    problems += unreadable.len();
    reporter.step("verifying the WAL archive");
    let timeline_reports = verify_archive(&catalog.archive);
    problems += timeline_reports
        .iter()
        .map(|t| t.problems.len())
        .sum::<usize>();

    if json {
        println!(
            "{:#}",
            json!({
                "ok": problems == 0,
                "problems": problems,
                "backups": backup_reports,
                "unreadable_backups": unreadable,
                "timelines": timeline_reports,
            })
        );
    } else {
        for report in &backup_reports {
            let status = if !report.has_manifest {
                "no backup_manifest: file contents not verifiable".to_string()
            } else if report.problems.is_empty() {
                format!(
                    "ok ({} files, {})",
                    report.files_checked,
                    human_bytes(report.bytes_checked)
                )
            } else {
                format!("{} problem(s)", report.problems.len())
            };
            println!("backup {}: {status}", report.id);
            for problem in &report.problems {
                println!("  {problem}");
            }
        }
        for problem in &unreadable {
            println!("{problem}");
        }
        for report in &timeline_reports {
            let range = match (&report.first_segment, &report.last_segment) {
                (Some(first), Some(last)) => format!("{first} .. {last}"),
                _ => "no segments of its own".to_string(),
            };
            let status = if report.problems.is_empty() {
                format!("ok ({} segments)", report.segments_checked)
            } else {
                format!("{} problem(s)", report.problems.len())
            };
            println!("timeline {}: {range}: {status}", report.timeline);
            for problem in &report.problems {
                println!("  {problem}");
            }
        }
    }
    if problems > 0 {
        return Err(Failure::msg(
            FailureKind::VerifyFailed,
            format!("verification found {problems} problem(s)"),
        ));
    }
    Ok(())
}
