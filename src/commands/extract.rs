//! `pitr extract`: one table, schema or database back from a point in
//! time, into a new file or a live cluster, nothing else touched.
//!
//! The point is `--to`, or found in the WAL (`--before-drop`,
//! `--before-truncate`, see [`crate::extract::moment`]). The copy is made
//! by `pitr restore` in a scratch directory ([`crate::postgres::scratch`]), the
//! selection is dumped with the backup's major's own pg_dump and written
//! or loaded ([`crate::postgres::transfer`]); then the copy goes.
//!
//! Everything the live cluster could refuse is asked before any restore:
//! a name that exists there is refused unless `--as` gives a new one, and
//! pitr never drops, replaces or truncates anything in it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{DumpFormat, ExtractArgs};
use crate::error::{Failure, FailureKind, OrFail};
use crate::extract::moment::{
    choose, distinct_transactions, listing, search, Candidate, Choice, FoundMoment, Looking, Search,
};
use crate::extract::report::{Destination, Summary, Timings};
use crate::extract::{
    exists_query, list_tables_sql, quote_ident, quote_literal, rename_table_sql, row_counts_sql,
    Selection, TableName,
};
use crate::os_user::OsUser;
use crate::plan::TimelineChoice;
use crate::postgres::binaries::Binaries;
use crate::postgres::scratch::{
    Disposal, RestoreRequest, RestoreRun, ScratchCopy, RECOVERY_FAILED,
};
use crate::postgres::transfer::{check_new_file, dump_to_file, Live};
use crate::progress::{count, Reporter};
use crate::repo::{absolute, Catalog};
use crate::target::parse_target;
use crate::wal::lineage::parse_relation_path;
use crate::wal::{Lsn, TimelineId};

pub fn run(args: &ExtractArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let started = Instant::now();
    let local = super::local_zone();
    // What is asked, checked without touching anything.
    let selection = Selection::from_args(
        &args.tables,
        args.schema.as_deref(),
        args.database.as_deref(),
    )
    .map_err(|message| Failure::msg(FailureKind::Usage, message))?;
    let destination_names = selection
        .renamed(args.rename.as_deref())
        .map_err(|message| Failure::msg(FailureKind::Usage, message))?;
    let looking = match (args.before_drop, args.before_truncate) {
        (true, false) => Some(Looking::Drop),
        (false, true) => Some(Looking::Truncate),
        (false, false) => None,
        (true, true) => {
            return Err(Failure::msg(
                FailureKind::Usage,
                "--before-drop and --before-truncate look for different transactions: give one",
            ))
        }
    };
    check_options(args, looking.is_some())?;
    if let Some(to) = &args.to {
        let target = super::parse_target_args(&crate::cli::TargetArgs {
            to: to.clone(),
            exclusive: args.exclusive,
            backup: args.backup.clone(),
            timeline: args.timeline.clone(),
        })?;
        reporter.detail(format!("target: {}", target.describe(&local)));
    }
    let into_file = args
        .into_file
        .as_deref()
        .map(absolute)
        .transpose()
        .or_fail(FailureKind::Usage)?;
    if let Some(path) = &into_file {
        check_new_file(path).or_fail(FailureKind::Usage)?;
    }
    let catalog = super::load_catalog(&args.repo, &local)?;
    let major = backup_major(&catalog)?;
    let binaries = Binaries::find(args.bin_dir.as_deref(), major).or_fail(FailureKind::Usage)?;
    let live = args.into.as_ref().map(|conninfo| Live {
        conninfo: conninfo.clone(),
        binaries: binaries.clone(),
        fallback_database: match &selection {
            Selection::Database { .. } => None,
            _ => Some(selection.database().to_string()),
        },
    });
    if let Some(live) = &live {
        refuse_taken_names(live, &destination_names, args.rename.is_some())?;
    }
    reporter.step(format!("extracting {}", selection.describe()));
    let mut timings = Timings {
        checks: started.elapsed(),
        ..Timings::default()
    };

    // The moment: given, or found in the WAL.
    let finding_started = Instant::now();
    let found = match looking {
        Some(looking) => Some(find_moment(
            args, &catalog, &selection, looking, json, reporter,
        )?),
        None => None,
    };
    timings.finding = finding_started.elapsed();
    let (target, exclusive) = match &found {
        Some(found) => (format!("xid:{}", found.chosen.xid), true),
        None => (args.to.clone().unwrap_or_default(), args.exclusive),
    };

    stop_if_interrupted()?;
    // The copy at that moment.
    reporter.step(format!(
        "restoring a scratch copy to {target}{}",
        if exclusive { " (exclusive)" } else { "" }
    ));
    let (mut copy, restoring) = restore_one_database(
        args,
        &catalog,
        &target,
        exclusive,
        None,
        selection.database(),
        reporter,
    )?;
    timings.restore = restoring;
    let queries_started = Instant::now();
    let tables = tables_in_copy(&copy, &selection)?;
    if let Some(found) = &found {
        confirm_found_file(&copy, &selection, &found.chosen)?;
    }
    let rows = count_rows(&copy, selection.database(), &tables)?;
    for (table, rows) in &rows {
        reporter.step(format!("  {table}: {}", count(*rows, "row")));
    }
    if let Some(new_name) = &args.rename {
        rename_in_copy(&copy, &selection, new_name)?;
    }
    timings.queries = queries_started.elapsed();

    stop_if_interrupted()?;
    // Out of the copy.
    let transfer_started = Instant::now();
    let dump_database = match (&selection, &args.rename) {
        (Selection::Database { .. }, Some(new_name)) => new_name.clone(),
        _ => selection.database().to_string(),
    };
    let mut dump = copy.program("pg_dump").or_fail(FailureKind::Internal)?;
    dump.arg("--no-password")
        .args(destination_names.dump_options())
        .arg("-d")
        .arg(&dump_database);
    let destination = if let Some(path) = &into_file {
        reporter.step(format!(
            "writing {} to {}",
            destination_names.describe(),
            path.display()
        ));
        let format = args.format.unwrap_or(DumpFormat::Custom);
        let bytes = dump_to_file(dump, format, path).or_fail(FailureKind::Transfer)?;
        Destination::File {
            path: path.clone(),
            format,
            bytes,
        }
    } else if let Some(live) = &live {
        reporter.step(format!(
            "loading {} into the live cluster",
            destination_names.describe()
        ));
        load_live(live, &copy, &destination_names, dump)?;
        confirm_loaded(live, &destination_names, &rows)?;
        match &destination_names {
            Selection::Database { database } => Destination::Live {
                created_database: Some(database.clone()),
                what: format!("database {database}, created by pitr in the live cluster"),
            },
            Selection::Tables { tables, .. } => Destination::Live {
                created_database: None,
                what: format!(
                    "{} into {}",
                    tables
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    live.describe_database()
                ),
            },
            Selection::Schema { schema, .. } => Destination::Live {
                created_database: None,
                what: format!("schema {schema} into {}", live.describe_database()),
            },
        }
    } else {
        return Err(Failure::msg(
            FailureKind::Usage,
            "give --into-file FILE or --into CONNINFO",
        ));
    };
    timings.dump_and_load = transfer_started.elapsed();

    if args.keep {
        copy.keep();
    }
    let summary = Summary {
        selection: &selection,
        loaded_as: &destination_names,
        report: copy.report().clone(),
        target,
        exclusive,
        found: found.as_ref(),
        rows: &rows,
        destination,
        scratch: copy.root().to_path_buf(),
        port: copy.endpoint().map_or(0, |endpoint| endpoint.port),
        seconds: timings,
        kept: args.keep,
    };
    let removal_started = Instant::now();
    let kept = copy.finish(Disposal::Remove).map_err(|error| {
        Failure::new(FailureKind::Internal, error)
            .with_hint("the extract itself succeeded; stop and remove the scratch copy by hand")
    })?;
    timings.removal = removal_started.elapsed();
    timings.total = started.elapsed();
    let summary = Summary {
        seconds: timings,
        kept: kept.is_some(),
        ..summary
    };
    if json {
        println!("{:#}", summary.json());
    } else if !reporter.quiet {
        eprintln!("{}", summary.text());
    }
    Ok(())
}

/// Options that only make sense with others (clap's `requires` is not
/// enforced for members of required groups, so they are checked here).
fn check_options(args: &ExtractArgs, finding: bool) -> Result<(), Failure> {
    let refuse = |message: &str| Err(Failure::msg(FailureKind::Usage, message));
    if !finding && (args.from.is_some() || args.until.is_some() || args.pick.is_some()) {
        return refuse("--from, --until and --pick belong to --before-drop and --before-truncate");
    }
    if finding && args.tables.is_empty() {
        return refuse(
            "--before-drop and --before-truncate find a table: give --table SCHEMA.NAME",
        );
    }
    if args.exclusive && args.to.is_none() {
        return refuse("--exclusive goes with --to (--before-drop and --before-truncate stop just before the transaction already)");
    }
    if args.format.is_some() && args.into_file.is_none() {
        return refuse("--format is the format of --into-file (a load with --into needs none)");
    }
    Ok(())
}

/// Ctrl-C between steps: the copies are stopped and removed as they go
/// out of scope.
fn stop_if_interrupted() -> Result<(), Failure> {
    if crate::interrupt::requested() {
        return Err(Failure::msg(
            FailureKind::Interrupted,
            "interrupted: the scratch copy is stopped and removed; nothing was written",
        ));
    }
    Ok(())
}

/// After a load, the live cluster's tables hold as many rows as the copy
/// had: the load was whole.
fn confirm_loaded(live: &Live, names: &Selection, rows: &[(String, u64)]) -> Result<(), Failure> {
    let Selection::Tables { tables, .. } = names else {
        return Ok(());
    };
    let counted = live
        .sql_objects(&row_counts_sql(tables))
        .or_fail(FailureKind::Transfer)?;
    // Compared as sorted counts: with --as the names differ.
    let mut loaded: Vec<u64> = counted
        .lines()
        .filter_map(|line| line.rsplit_once('|'))
        .map(|(_, rows)| rows.parse().unwrap_or(u64::MAX))
        .collect();
    let mut expected: Vec<u64> = rows.iter().map(|(_, rows)| *rows).collect();
    loaded.sort_unstable();
    expected.sort_unstable();
    if loaded != expected {
        return Err(Failure::msg(
            FailureKind::Transfer,
            format!(
                "the live cluster's {} holds {loaded:?} rows after the load, the copy had {expected:?}",
                names.describe()
            ),
        )
        .with_hint("something else wrote to the table meanwhile, or the load was partial: check it"));
    }
    Ok(())
}

/// The PostgreSQL major of the repository's backups (all of one cluster).
fn backup_major(catalog: &Catalog) -> Result<u32, Failure> {
    catalog
        .backups
        .iter()
        .rev()
        .find_map(|backup| backup.major_version)
        .ok_or_else(|| {
            Failure::msg(
                FailureKind::PlanRefused,
                format!(
                    "no usable backup in `{}`, or none says which PostgreSQL version made it",
                    catalog.location.backups_text()
                ),
            )
        })
}

/// Refuses, before anything is restored, a destination name that exists
/// in the live cluster.
fn refuse_taken_names(live: &Live, names: &Selection, renamed: bool) -> Result<(), Failure> {
    let taken = match names {
        Selection::Database { .. } => live.sql(None, &exists_query(names)),
        _ => live.sql_objects(&exists_query(names)),
    }
    .or_fail(FailureKind::Usage)?;
    let taken: Vec<&str> = taken.lines().filter(|line| !line.is_empty()).collect();
    if taken.is_empty() {
        return Ok(());
    }
    let what = match names {
        Selection::Tables { .. } => "table",
        Selection::Schema { .. } => "schema",
        Selection::Database { .. } => "database",
    };
    Err(Failure::msg(
        FailureKind::Usage,
        format!(
            "{what} `{}` exists in the live cluster (--into): pitr never replaces or truncates what is there",
            taken.join("`, `")
        ),
    )
    .with_hint(if renamed {
        "choose another name with --as".to_string()
    } else {
        "bring it back under another name with --as NEW_NAME, or write it to a file with --into-file".to_string()
    }))
}

/// A copy for `database`: the other databases left sparse when the
/// restore can (see [`crate::extract::scope`]). Should the database have
/// been one of those (renamed within the WAL replayed, so that the
/// backup's catalog knew it by another name), the copy is restored again,
/// whole.
fn restore_one_database(
    args: &ExtractArgs,
    catalog: &Catalog,
    target: &str,
    exclusive: bool,
    backup: Option<String>,
    database: &str,
    reporter: &Reporter,
) -> Result<(ScratchCopy, Duration), Failure> {
    let (copy, took) = restore_copy(
        args,
        catalog,
        target,
        exclusive,
        backup.clone(),
        Some(database),
        reporter,
    )?;
    let sparse: Vec<String> = copy.report()["only_database"]["sparse_databases"]
        .as_array()
        .map(|databases| {
            databases
                .iter()
                .filter_map(|database| database["oid"].as_u64())
                .map(|oid| oid.to_string())
                .collect()
        })
        .unwrap_or_default();
    if sparse.is_empty() {
        return Ok((copy, took));
    }
    let oid = copy
        .sql(
            "postgres",
            &format!(
                "SELECT oid FROM pg_database WHERE datname = {}",
                quote_literal(database)
            ),
        )
        .or_fail(FailureKind::Internal)?;
    if !sparse.contains(&oid.trim().to_string()) {
        return Ok((copy, took));
    }
    reporter.warn(format!(
        "database {database} (OID {}) had another name in the backup and was left sparse: restoring the copy again, whole",
        oid.trim()
    ));
    copy.finish(Disposal::Remove)
        .or_fail(FailureKind::Internal)?;
    let (copy, again) = restore_copy(args, catalog, target, exclusive, backup, None, reporter)?;
    Ok((copy, took + again))
}

fn restore_copy(
    args: &ExtractArgs,
    catalog: &Catalog,
    target: &str,
    exclusive: bool,
    backup: Option<String>,
    only_database: Option<&str>,
    reporter: &Reporter,
) -> Result<(ScratchCopy, Duration), Failure> {
    let started = Instant::now();
    // What fails before or around the restore itself (no scratch
    // directory, a restore that cannot be run or read) is a failed
    // restore for the extract.
    let not_restored = |error: anyhow::Error| Failure::new(FailureKind::Recovery, error);
    let user = OsUser::for_server(&args.os_user).map_err(not_restored)?;
    let mut copy = ScratchCopy::create(args.scratch.as_deref(), "pitr-extract-", user)
        .map_err(not_restored)?;
    let request = RestoreRequest {
        repo_args: catalog.location.command_args(),
        target: target.to_string(),
        exclusive,
        backup: backup.or_else(|| args.backup.clone()),
        timeline: Some(args.timeline.clone()),
        bin_dir: args.bin_dir.as_deref(),
        os_user: &args.os_user,
        only_database,
        // Every copy extract makes is removed (or kept for a look): see
        // `Durability::Throwaway`.
        throwaway: true,
    };
    let run = copy.restore(&request, reporter).map_err(not_restored)?;
    if run.report.is_none() {
        // Recovery itself failed: the copy and its log are the evidence
        // of why (stopped by the restore); otherwise it goes on drop.
        let kept = (run.exit_code == Some(RECOVERY_FAILED)).then(|| copy.keep());
        // The restore's own class of failure is the extract's.
        let kind = match run.exit_code {
            Some(2) => FailureKind::Usage,
            Some(3) => FailureKind::PlanRefused,
            Some(4) => FailureKind::Staging,
            Some(130) => FailureKind::Interrupted,
            _ => FailureKind::Recovery,
        };
        let failure = Failure::msg(kind, restore_failed(target, &run));
        return Err(match kept {
            Some(dir) => failure.with_hint(format!(
                "the scratch copy is kept, stopped, with PostgreSQL's log (data/pitr-recovery.log), in `{}`: remove it when done",
                dir.display()
            )),
            None => failure,
        });
    }
    if copy.endpoint().is_none() {
        return Err(Failure::msg(
            FailureKind::Recovery,
            "pitr restore's report names no socket_dir, port or server bin_dir and major_version",
        ));
    }
    Ok((copy, started.elapsed()))
}

/// A failed restore in one line: its exit status, and its own error and
/// hint (its last lines).
fn restore_failed(target: &str, run: &RestoreRun) -> String {
    let reason: Vec<&String> = run
        .lines
        .iter()
        .filter(|line| line.starts_with("pitr: error:") || line.starts_with("hint:"))
        .collect();
    format!(
        "the restore of the scratch copy to `{target}` failed ({}): {}",
        run.exit_code
            .map_or("killed".to_string(), |code| format!("exit status {code}")),
        if reason.is_empty() {
            run.lines.last().cloned().unwrap_or_default()
        } else {
            reason
                .iter()
                .map(|line| line.trim_start_matches("pitr: error: ").to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    )
}

/// Maps the tables to their files in a copy restored at the window's
/// start, then follows those files through the WAL.
fn find_moment(
    args: &ExtractArgs,
    catalog: &Catalog,
    selection: &Selection,
    looking: Looking,
    json: bool,
    reporter: &Reporter,
) -> Result<FoundMoment, Failure> {
    let Selection::Tables { database, tables } = selection else {
        return Err(Failure::msg(
            FailureKind::Usage,
            "--before-drop and --before-truncate find a table: give --table",
        ));
    };
    let until = args
        .until
        .as_deref()
        .map(|text| parse_target(text, &jiff::Zoned::now()))
        .transpose()
        .or_fail(FailureKind::Usage)?;
    // Without --from, the window starts at the oldest backup's consistent
    // point: the earliest moment any restore can reach.
    let (from, backup) = match &args.from {
        Some(from) => (from.clone(), None),
        None => {
            let oldest = catalog
                .backups
                .iter()
                .filter(|backup| args.backup.as_ref().is_none_or(|id| *id == backup.id))
                .min_by_key(|backup| backup.stop_lsn)
                .ok_or_else(|| {
                    Failure::msg(
                        FailureKind::PlanRefused,
                        "the repository holds no usable backup",
                    )
                })?;
            ("immediate".to_string(), Some(oldest.id.clone()))
        }
    };
    reporter.step(format!(
        "finding the {} of {}: mapping the table{} to {} files in a copy restored to {from}{}",
        looking.noun(),
        tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if tables.len() == 1 { "" } else { "s" },
        if tables.len() == 1 { "its" } else { "their" },
        backup
            .as_ref()
            .map(|id| format!(" (backup {id})"))
            .unwrap_or_default()
    ));
    let (window, _) = restore_one_database(
        args,
        catalog,
        &from,
        false,
        backup.clone(),
        database,
        reporter,
    )?;
    let window_stop = match &backup {
        Some(id) => format!("the consistent point of backup {id}"),
        None => format!(
            "{from} ({})",
            window.report()["stop"]["message"].as_str().unwrap_or("")
        ),
    };
    let mut files = Vec::new();
    for table in tables {
        let path = window
            .sql(
                database,
                &format!(
                    "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {} AND c.relkind IN ('r', 'p', 'm')",
                    quote_literal(&table.schema),
                    quote_literal(&table.name)
                ),
            )
            .map_err(|error| absent(table, database, &format!("at the window's start ({from})"), &error.to_string()))?;
        let file = parse_relation_path(&path).ok_or_else(|| {
            absent(
                table,
                database,
                &format!("at the window's start ({from})"),
                "no such table",
            )
        })?;
        reporter.step(format!("  {table}: file {path}"));
        files.push((table.clone(), file));
    }
    let start: Lsn = window.report()["plan"]["backup"]["start_lsn"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            Failure::msg(
                FailureKind::Internal,
                "pitr restore's report names no backup start_lsn",
            )
        })?;
    window
        .finish(Disposal::Remove)
        .or_fail(FailureKind::Internal)?;

    let path = timeline_path(catalog, &args.timeline)?;
    let found = search(
        &Search {
            archive: &catalog.archive,
            path: &path,
            start,
            until,
            looking,
        },
        &files,
    );
    if let Some(why) = &found.stopped_early {
        reporter.warn(why);
    }
    for change in &found.followed {
        reporter.step(format!("  followed: {}", change.text()));
    }
    let candidates = distinct_transactions(&found.candidates);
    let done_to_it = match looking {
        Looking::Drop => "dropped",
        Looking::Truncate => "truncated",
    };
    let chosen = match choose(&candidates, args.pick) {
        Choice::Chosen(chosen) => chosen,
        Choice::NoneFound => {
            return Err(Failure::msg(
                FailureKind::PlanRefused,
                format!(
                    "no transaction from {window_stop} to {} {done_to_it} {}",
                    args.until.as_deref().unwrap_or("the end of the archive"),
                    tables
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )
            .with_hint(
                "widen the window with --from and --until, or see `pitr events --kind drop`",
            ))
        }
        Choice::OutOfRange(pick) => {
            return Err(Failure::msg(
                FailureKind::Usage,
                format!(
                    "--pick {pick}: only {} found:\n{}",
                    count(candidates.len() as u64, "transaction"),
                    listing(&candidates)
                ),
            ))
        }
        Choice::Ambiguous => {
            if json {
                println!(
                    "{:#}",
                    json!({
                        "candidates": candidates.iter().map(Candidate::json).collect::<Vec<_>>(),
                        "chosen": Value::Null,
                    })
                );
            }
            return Err(Failure::msg(
                FailureKind::Usage,
                format!(
                    "{} transactions {done_to_it} the table:\n{}",
                    candidates.len(),
                    listing(&candidates)
                ),
            )
            .with_hint("choose one with --pick N (its number above)"));
        }
    };
    reporter.step(format!("found: {}", chosen.text()));
    Ok(FoundMoment {
        candidates,
        chosen,
        found,
        window: window_stop,
    })
}

fn timeline_path(
    catalog: &Catalog,
    choice: &str,
) -> Result<crate::wal::timelines::TimelinePath, Failure> {
    let choice: TimelineChoice = choice
        .parse()
        .map_err(|message: String| Failure::msg(FailureKind::Usage, message))?;
    let timeline = match choice {
        TimelineChoice::Id(timeline) => timeline,
        TimelineChoice::Latest | TimelineChoice::Current => catalog
            .archive
            .timelines
            .newest()
            .unwrap_or(TimelineId::FIRST),
    };
    catalog
        .archive
        .timelines
        .path(timeline)
        .map_err(|error| Failure::new(FailureKind::Usage, error))
}

fn absent(table: &TableName, database: &str, when: &str, why: &str) -> Failure {
    Failure::msg(
        FailureKind::Usage,
        format!("table `{table}` does not exist in database `{database}` {when}: {why}"),
    )
    .with_hint("check the name (SCHEMA.NAME, as created) and --database; `pitr events --kind drop` shows when tables were dropped")
}

/// The selection's tables as the copy holds them; refuses what is absent
/// at the target.
fn tables_in_copy(copy: &ScratchCopy, selection: &Selection) -> Result<Vec<TableName>, Failure> {
    let database = selection.database();
    let at_target = "at the target";
    let databases = copy
        .sql(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE datname = {}",
                quote_literal(database)
            ),
        )
        .or_fail(FailureKind::Internal)?;
    if databases.is_empty() {
        return Err(Failure::msg(
            FailureKind::Usage,
            format!("database `{database}` does not exist at the target"),
        )
        .with_hint("check --database (the name as created)"));
    }
    match selection {
        Selection::Tables { tables, .. } => {
            for table in tables {
                let found = copy
                    .sql(
                        database,
                        &format!("SELECT to_regclass({})", quote_literal(&table.quoted())),
                    )
                    .or_fail(FailureKind::Internal)?;
                if found.is_empty() {
                    return Err(absent(table, database, at_target, "no such table"));
                }
            }
            Ok(tables.clone())
        }
        Selection::Schema { schema, .. } => {
            let listed = copy
                .sql(
                    database,
                    &format!(
                        "SELECT nspname FROM pg_namespace WHERE nspname = {}",
                        quote_literal(schema)
                    ),
                )
                .or_fail(FailureKind::Internal)?;
            if listed.is_empty() {
                return Err(Failure::msg(
                    FailureKind::Usage,
                    format!(
                        "schema `{schema}` does not exist in database `{database}` at the target"
                    ),
                ));
            }
            list_tables(copy, database, Some(schema))
        }
        Selection::Database { .. } => list_tables(copy, database, None),
    }
}

fn list_tables(
    copy: &ScratchCopy,
    database: &str,
    schema: Option<&str>,
) -> Result<Vec<TableName>, Failure> {
    let listed = copy
        .sql(database, &list_tables_sql(schema))
        .or_fail(FailureKind::Internal)?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(schema, name)| TableName {
            schema: schema.to_string(),
            name: name.to_string(),
        })
        .collect())
}

/// The extracted copy's table file must be one the chosen transaction
/// removed: otherwise the files were followed wrongly, and the rows would
/// be another moment's.
fn confirm_found_file(
    copy: &ScratchCopy,
    selection: &Selection,
    chosen: &Candidate,
) -> Result<(), Failure> {
    let path = copy
        .sql(
            selection.database(),
            &format!(
                "SELECT pg_relation_filepath({}::regclass)",
                quote_literal(&chosen.table.quoted())
            ),
        )
        .or_fail(FailureKind::Internal)?;
    if chosen.removed.contains(&path) {
        return Ok(());
    }
    Err(Failure::msg(
        FailureKind::PlanRefused,
        format!(
            "just before transaction {}, table `{}` is in file {path}, which that transaction did not remove ({}): the table was followed to the wrong transaction",
            chosen.xid,
            chosen.table,
            chosen.removed.join(" ")
        ),
    )
    .with_hint("extract with --to at a moment you choose (`pitr events --kind drop` lists the drops)"))
}

fn count_rows(
    copy: &ScratchCopy,
    database: &str,
    tables: &[TableName],
) -> Result<Vec<(String, u64)>, Failure> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let counted = copy
        .sql(database, &row_counts_sql(tables))
        .or_fail(FailureKind::Internal)?;
    Ok(counted
        .lines()
        .filter_map(|line| line.rsplit_once('|'))
        .map(|(name, rows)| (name.to_string(), rows.parse().unwrap_or(0)))
        .collect())
}

/// `--as`: renamed in the copy, so the dump carries the new name.
fn rename_in_copy(
    copy: &ScratchCopy,
    selection: &Selection,
    new_name: &str,
) -> Result<(), Failure> {
    let (database, sql) = match selection {
        Selection::Tables { database, tables } => match tables.as_slice() {
            [table] => (database.as_str(), rename_table_sql(table, new_name)),
            _ => return Err(Failure::msg(FailureKind::Usage, "--as renames one table")),
        },
        Selection::Schema { database, schema } => (
            database.as_str(),
            format!(
                "ALTER SCHEMA {} RENAME TO {}",
                quote_ident(schema),
                quote_ident(new_name)
            ),
        ),
        Selection::Database { database } => (
            "postgres",
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(database),
                quote_ident(new_name)
            ),
        ),
    };
    copy.sql(database, &sql).map(|_| ()).map_err(|error| {
        Failure::msg(
            FailureKind::Transfer,
            format!("cannot rename to `{new_name}` in the scratch copy: {error:#}"),
        )
    })
}

/// Loads the dump; a whole database goes into a new database pitr creates
/// (with the copy's encoding and locale) and drops again if the load fails.
fn load_live(
    live: &Live,
    copy: &ScratchCopy,
    names: &Selection,
    dump: std::process::Command,
) -> Result<(), Failure> {
    let Selection::Database { database } = names else {
        return live.load(dump, None).map_err(|error| {
            Failure::new(FailureKind::Transfer, error)
                .with_hint("nothing was loaded: the load is one transaction")
        });
    };
    let settings = copy
        .sql(
            "postgres",
            &format!(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = {}",
                quote_literal(database)
            ),
        )
        .or_fail(FailureKind::Internal)?;
    let parts: Vec<&str> = settings.split('|').collect();
    let create = match parts.as_slice() {
        [encoding, collate, ctype] => format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_ident(database),
            quote_literal(encoding),
            quote_literal(collate),
            quote_literal(ctype)
        ),
        _ => format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(database)
        ),
    };
    live.sql(None, &create).or_fail(FailureKind::Transfer)?;
    if let Err(error) = live.load(dump, Some(database)) {
        let dropped = live.sql(None, &format!("DROP DATABASE {}", quote_ident(database)));
        return Err(Failure::new(FailureKind::Transfer, error).with_hint(match dropped {
            Ok(_) => format!("nothing was loaded: the database `{database}` pitr had created for it was dropped again"),
            Err(_) => format!("the database `{database}` pitr created for the load is left empty: drop it"),
        }));
    }
    Ok(())
}
