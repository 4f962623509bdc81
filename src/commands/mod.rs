//! One module per subcommand, each a short script over the library.

pub mod backup;
pub mod backup_stream;
pub mod check;
pub mod drill;
pub mod events;
pub mod expire;
pub mod extract;
pub mod generate;
pub mod init;
pub mod list;
pub mod plan;
pub mod restore;
pub mod verify;
pub mod wal_fetch;
pub mod wal_push;

use serde_json::{json, Value};

use crate::cli::{RepoArgs, TargetArgs};
use crate::error::{Failure, FailureKind, OrFail};
use crate::plan::{make_plan, Plan, PlanRequest, TimelineChoice};
use crate::progress::human_bytes;
use crate::repo::store::StoreRead;
use crate::repo::wal_source::ArchiveWal;
use crate::repo::{Catalog, RepoLocation};
use crate::target::{parse_target, Action, Target};
use crate::wal::facts::{StopEvent, StopKind};

/// The zone used for times without an offset and for display (`TZ`).
pub fn local_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::system()
}

pub fn load_catalog(args: &RepoArgs, local: &jiff::tz::TimeZone) -> Result<Catalog, Failure> {
    let location = RepoLocation::new(
        args.repo.as_deref(),
        args.backups.as_deref(),
        args.wal_archive.as_deref(),
    )
    .or_fail(FailureKind::Usage)?;
    Catalog::scan(location, local).or_fail(FailureKind::PlanRefused)
}

/// Parses `--to` (exit status 2 when it cannot be understood).
pub fn parse_target_args(args: &TargetArgs) -> Result<Target, Failure> {
    let target = read_to(args)?;
    check_exclusive(args, &target)?;
    Ok(target)
}

/// Parses `--to` for a restore, with the `--action` taken there: both
/// checked before anything else is looked at (exit status 2).
pub fn parse_restore_target(args: &TargetArgs, action: Action) -> Result<Target, Failure> {
    let target = read_to(args)?;
    action.check(&target).or_fail(FailureKind::Usage)?;
    check_exclusive(args, &target)?;
    Ok(target)
}

/// The one reading of the `--to` text.
fn read_to(args: &TargetArgs) -> Result<Target, Failure> {
    let now = jiff::Zoned::now();
    parse_target(&args.to, &now).or_fail(FailureKind::Usage)
}

fn check_exclusive(args: &TargetArgs, target: &Target) -> Result<(), Failure> {
    if args.exclusive && matches!(target, Target::Latest | Target::Immediate | Target::Name(_)) {
        return Err(Failure::msg(
            FailureKind::Usage,
            "--exclusive applies to time, lsn: and xid: targets only",
        ));
    }
    Ok(())
}

/// Scans the repository and plans to `target` (parsed from
/// `target_args.to`); warnings about the repository are shown.
pub fn plan_from_args(
    repo: &RepoArgs,
    target_args: &TargetArgs,
    target: Target,
    local: &jiff::tz::TimeZone,
    reporter: &crate::progress::Reporter,
) -> Result<(Catalog, Plan), Failure> {
    let catalog = load_catalog(repo, local)?;
    for warning in &catalog.warnings {
        reporter.warn(warning);
    }
    for unreadable in &catalog.unreadable {
        reporter.warn(format!(
            "backup `{}` cannot be used: {}",
            unreadable.id, unreadable.reason
        ));
    }
    let timeline: TimelineChoice = target_args
        .timeline
        .parse()
        .map_err(|message: String| Failure::msg(FailureKind::Usage, message))?;
    let request = PlanRequest {
        target,
        inclusive: !target_args.exclusive,
        backup_id: target_args.backup.clone(),
        timeline,
    };
    let wal = ArchiveWal::new(&catalog.archive);
    let plan = make_plan(
        &catalog.backups,
        catalog.unreadable.len(),
        &catalog.archive,
        &request,
        local,
        Some(&wal),
    );
    // What planning decoded is kept for the next command, also when the
    // plan was refused.
    wal.save();
    let plan = plan.or_fail(FailureKind::PlanRefused)?;
    Ok((catalog, plan))
}

fn rfc3339(time: chrono::DateTime<chrono::FixedOffset>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn target_json(target: &Target, inclusive: bool, local: &jiff::tz::TimeZone) -> Value {
    let (kind, value) = match target {
        Target::Time(time) => ("time", json!(rfc3339(*time))),
        Target::Lsn(lsn) => ("lsn", json!(lsn.to_string())),
        Target::Xid(xid) => ("xid", json!(xid.as_given())),
        Target::Name(name) => ("name", json!(name)),
        Target::Latest => ("latest", Value::Null),
        Target::Immediate => ("immediate", Value::Null),
    };
    json!({
        "kind": kind,
        "value": value,
        "inclusive": inclusive,
        "description": target.describe(local),
    })
}

/// The plan as JSON; the backup's `path` is where the backups store keeps
/// it (`backups` describes it: a path on posix).
pub fn plan_json(plan: &Plan, backups: &dyn StoreRead, local: &jiff::tz::TimeZone) -> Value {
    let backup = &plan.backup;
    json!({
        "backup": {
            "id": backup.id,
            "path": backups.describe(&backup.id),
            "format": backup.format,
            "timeline": backup.timeline,
            "start_lsn": backup.start_lsn,
            "stop_lsn": backup.stop_lsn,
            "stop_time": rfc3339(backup.stop_time),
            "stop_time_source": backup.stop_time_source,
            "system_identifier": backup.system_identifier.map(|id| id.to_string()),
            "postgresql_version": backup.major_version,
            // Incremental (17+): staged by pg_combinebackup over its chain.
            "incremental_from": backup.label.incremental_from,
            "reason": plan.reason,
        },
        "timeline": plan.timeline,
        "timeline_path": plan.path.to_string(),
        "timeline_steps": plan.path.steps.iter().map(|step| json!({
            "timeline": step.timeline,
            "begins": step.begins,
            "ends": step.ends,
        })).collect::<Vec<_>>(),
        "target": target_json(&plan.target, plan.inclusive, local),
        "wal": {
            "first": plan.wal.first.file_name(),
            "last": plan.wal.last.file_name(),
            "segments": plan.wal.segments,
            "bytes": plan.wal.bytes,
            "from_backup": plan.wal.from_backup,
            "missing": Vec::<String>::new(),
        },
        "recoverable_window": {
            "from": rfc3339(plan.window.from),
            "until": plan.window.until.map(rfc3339),
            "exact": plan.window.exact,
        },
        "stop": plan.stop.as_ref().map(stop_json),
        "wal_end_lsn": plan.wal_end.map(|(_, end)| end),
        "notes": plan.notes,
    })
}

pub fn stop_json(event: &StopEvent) -> Value {
    let mut value = json!({
        "lsn": event.start,
        "end_lsn": event.end,
        "time": event.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    match &event.kind {
        StopKind::Commit { xid } => {
            value["kind"] = json!("commit");
            value["xid"] = json!(xid);
        }
        StopKind::Abort { xid } => {
            value["kind"] = json!("abort");
            value["xid"] = json!(xid);
        }
        StopKind::RestorePoint { name } => {
            value["kind"] = json!("restore_point");
            value["name"] = json!(name);
        }
    }
    value
}

pub fn describe_stop(event: &StopEvent) -> String {
    let time = event.time.format("%Y-%m-%d %H:%M:%S%.6f UTC");
    match &event.kind {
        StopKind::Commit { xid } => {
            format!("commit of transaction {xid} at {} ({time})", event.start)
        }
        StopKind::Abort { xid } => {
            format!("abort of transaction {xid} at {} ({time})", event.start)
        }
        StopKind::RestorePoint { name } => {
            format!("restore point \"{name}\" at {} ({time})", event.start)
        }
    }
}

/// The plan for people.
/// The plan as JSON on stdout or as text, with a delta restore's
/// forecast when one was asked for.
pub fn print_plan(
    plan: &Plan,
    backups: &dyn StoreRead,
    delta: Option<&crate::stage::delta::DeltaPreview>,
    json: bool,
    local: &jiff::tz::TimeZone,
) {
    if json {
        let mut value = plan_json(plan, backups, local);
        if let (Some(delta), Some(object)) = (delta, value.as_object_mut()) {
            object.insert("delta".to_string(), json!(delta));
        }
        println!("{value:#}");
    } else {
        println!("{}", plan_text(plan, local));
        if let Some(delta) = delta {
            println!("{}", delta.text());
        }
    }
}

/// What a delta restore of `plan` over `pgdata` would compare, rewrite and
/// remove, the tablespaces placed as `restore` would place them.
pub fn delta_preview(
    plan: &Plan,
    pgdata: &std::path::Path,
    mappings: &[String],
) -> Result<crate::stage::delta::DeltaPreview, Failure> {
    let pgdata = crate::repo::absolute(pgdata).or_fail(FailureKind::Usage)?;
    crate::stage::delta::check_delta_target(&pgdata, &plan.backup)?;
    let mappings = mappings
        .iter()
        .map(|text| crate::stage::tablespaces::parse_mapping(text))
        .collect::<anyhow::Result<Vec<_>>>()
        .or_fail(FailureKind::Usage)?;
    let placements = crate::stage::tablespaces::place_occupied(
        &plan.backup.tablespaces,
        &mappings,
        &pgdata,
        true,
        true,
    )
    .or_fail(FailureKind::Staging)?;
    crate::stage::delta::preview(
        &plan.backup,
        &pgdata,
        &placements,
        plan.wal.first.size.bytes(),
    )
    .or_fail(FailureKind::Staging)
}

pub fn plan_text(plan: &Plan, local: &jiff::tz::TimeZone) -> String {
    let backup = &plan.backup;
    let mut lines = vec![
        format!(
            "target:    {}{}",
            plan.target.describe(local),
            if plan.inclusive {
                ""
            } else {
                " (exclusive: stop just before it)"
            }
        ),
        format!("backup:    {} ({})", backup.id, plan.reason),
        format!(
            "           {} format, timeline {}, WAL {} .. {}, ended {}",
            match backup.format {
                crate::repo::backup::BackupFormat::Plain => "plain".to_string(),
                crate::repo::backup::BackupFormat::Tar(c) => format!("tar{}", c.suffix()),
            },
            backup.timeline,
            backup.start_lsn,
            backup.stop_lsn,
            backup
                .stop_time
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC"),
        ),
        format!("timeline:  {} (path {})", plan.timeline, plan.path),
        format!(
            "WAL:       {} .. {} ({}, {}{}), all present",
            plan.wal.first,
            plan.wal.last,
            crate::progress::count(plan.wal.segments, "segment"),
            human_bytes(plan.wal.bytes),
            if plan.wal.from_backup > 0 {
                format!(", {} from the backup itself", plan.wal.from_backup)
            } else {
                String::new()
            }
        ),
        format!("window:    {}", plan.window),
    ];
    if let Some(stop) = &plan.stop {
        let how = match (&stop.kind, plan.inclusive) {
            (StopKind::RestorePoint { .. }, _) => "at",
            (_, true) if matches!(plan.target, Target::Xid(_)) => "just after",
            (_, false) if matches!(plan.target, Target::Xid(_)) => "just before",
            _ => "just before",
        };
        lines.push(format!("stops:     {how} the {}", describe_stop(stop)));
    }
    for note in &plan.notes {
        lines.push(format!("note:      {note}"));
    }
    lines.join("\n")
}
