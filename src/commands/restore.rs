//! `pitr restore`: plan, check, stage, start PostgreSQL, follow it to the
//! target, then promote, pause or shut down.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::error::{Failure, FailureKind, OrFail};
use crate::extract::scope::Scope;
use crate::plan::Plan;
use crate::postgres::binaries::Binaries;
use crate::postgres::commands::this_program;
use crate::postgres::handover::{hand_over, Handover, Request as HandoverRequest, Then};
use crate::postgres::log::LogEvent;
use crate::postgres::os_user::OsUser;
use crate::postgres::recovery::{follow, FinalState, Observed, RecoveryError};
use crate::postgres::server::{wait_for_pid, LogFollower, Server};
use crate::postgres::settings::{restore_command, Durability, FetchFrom, RecoverySettings};
use crate::prefetch::{create_spool, PrefetchStats, Prefetcher};
use crate::progress::{count, human_bytes, Reporter, Unit};
use crate::repo::absolute;
use crate::repo::store::StoreRead;
use crate::repo::{Catalog, RepoLocation};
use crate::stage::combine::Combine;
use crate::stage::destination as restore_checks;
use crate::stage::tablespaces::{parse_mapping, place_occupied, Placement};
use crate::stage::{inspect_destination, stage, Destination, Interrupted, StageRequest, Staged};
use crate::target::{Action, Target};
use crate::wal::WalSegment;

mod one_database;

use one_database::stage_one_database;

pub fn run(args: &RestoreArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let started = Instant::now();
    let local = super::local_zone();
    let target = super::parse_restore_target(&args.target, args.action)?;
    let (catalog, plan) =
        super::plan_from_args(&args.repo, &args.target, target, &local, reporter)?;
    if args.dry_run {
        let delta = if args.delta {
            Some(super::delta_preview(
                &plan,
                &args.pgdata,
                &args.tablespace_mappings,
            )?)
        } else {
            None
        };
        print_plan(&plan, &catalog, delta.as_ref(), json, &local);
        return Ok(());
    }
    reporter.step(super::plan_text(&plan, &local));

    // Everything that can be checked is checked before anything is written.
    let pgdata = absolute(&args.pgdata).or_fail(FailureKind::Usage)?;
    let destination = check_destination(args, &plan, &pgdata)?;
    let placements = place_tablespaces(args, &plan, &pgdata, reporter)?;
    if args.delta {
        let preview = crate::stage::delta::preview(
            &plan.backup,
            &pgdata,
            &placements,
            plan.wal.first.size.bytes(),
        )
        .or_fail(FailureKind::Staging)?;
        reporter.step(preview.text());
    }
    let user = OsUser::for_server(&args.os_user).or_fail(FailureKind::Staging)?;
    let (major_version, binaries) = find_binaries(args, &plan)?;
    let combine = resolve_chain(&catalog, &plan, &binaries, reporter)?;
    let pitr = check_restore_command(&user, &catalog)?;
    let socket_dir = socket_dir_for(&pgdata);
    let port = choose_port(args.port, &socket_dir)?;
    // The last question, once everything else is known to be fine.
    if destination == Destination::Occupied && !args.delta {
        restore_checks::confirm_replacement(&pgdata, &plan.backup.id, args.yes)?;
    }

    // Prefetching starts now, while the backup is extracted, into a spool
    // beside the data directory (same filesystem, so wal-fetch can rename).
    let prefetcher = if args.no_prefetch {
        None
    } else {
        start_prefetch(&plan, &catalog, &pgdata, &user, durability(args))
            .or_fail(FailureKind::Staging)?
    };
    let settings = recovery_settings(
        args,
        &plan,
        restore_command(
            &pitr,
            fetch_from(&catalog.location),
            prefetcher.as_ref().map(|p| p.spool()),
        ),
        port,
        &socket_dir,
        major_version,
    );
    let planned = started.elapsed();

    let staging_started = Instant::now();
    let request = StageRequest {
        backups: catalog.stores.backups.as_ref(),
        plan: &plan,
        pgdata: &pgdata,
        destination: &destination,
        placements: &placements,
        user: &user,
        settings: &settings,
        verify: !args.no_verify,
        combine: combine.as_ref(),
        workers: args
            .jobs
            .map_or_else(crate::stage::parallel::workers, |n| n as usize),
        sparse_databases: &[],
    };
    let (staged, scope, wal_read) = match args.only_database.as_deref() {
        None => (stage_backup(args.delta, &request, reporter)?, None, None),
        Some(name) => {
            let (staged, scope, wal_read) = stage_one_database(name, &request, &catalog, reporter)?;
            (staged, Some(scope), wal_read)
        }
    };
    let staging_time = staging_started.elapsed();

    let recovery_started = Instant::now();
    let server = Server::new(&pgdata, binaries, user).with_env(server_env(&catalog.location));
    let mut follower = LogFollower::new(&server.log_path);
    let running = start_server(&server, &mut follower, port, reporter)?;
    let (state, observed) = follow_replay(
        &server,
        &mut follower,
        running,
        args.action,
        &plan,
        prefetcher.as_ref(),
        reporter,
    )?;
    let prefetched = prefetcher.map(|p| p.finish());
    if plan.target == Target::Latest {
        confirm_end_of_archive(&plan, &observed, &server)?;
    }
    let recovery_time = recovery_started.elapsed();
    // A scratch copy is not restarted into the backup's configuration:
    // nobody connects to it but pitr, through the socket it recovered
    // with, and the restart's shutdown checkpoint would write out every
    // page replay changed, only for the copy to be removed.
    let handover = if state == FinalState::Promoted && !args.scratch_copy {
        Some(hand_over_promoted(
            args,
            &server,
            port,
            &socket_dir,
            reporter,
        )?)
    } else {
        None
    };

    let summary = Summary {
        plan: &plan,
        backups: catalog.stores.backups.as_ref(),
        pgdata: &pgdata,
        port,
        socket_dir: &socket_dir,
        state,
        observed: &observed,
        moved_aside: staged.moved_aside.as_deref(),
        bytes_staged: staged.bytes_written,
        delta: staged.delta,
        scope: scope.as_ref().zip(args.only_database.as_deref()),
        sparse: (staged.sparse_files, staged.sparse_bytes),
        timings: [planned, staging_time, recovery_time, started.elapsed()],
        wal_read,
        server: &server,
        prefetched,
        archiving_kept: keep_archiving(args),
        handover: handover.as_ref(),
    };
    summary.print(json, &local, reporter);
    Ok(())
}

/// `--dry-run`: the plan (and a delta restore's forecast), and nothing else.
fn print_plan(
    plan: &Plan,
    catalog: &Catalog,
    delta: Option<&crate::stage::delta::DeltaPreview>,
    json: bool,
    local: &jiff::tz::TimeZone,
) {
    super::print_plan(plan, catalog.stores.backups.as_ref(), delta, json, local);
}

/// `--in-place` recovers a lost primary into its own directory: it
/// replaces what is left there (as `--force` does), and the new primary
/// archives as the backup's configuration says.
fn replaces_destination(args: &RestoreArgs) -> bool {
    args.force || args.in_place
}

fn keep_archiving(args: &RestoreArgs) -> bool {
    args.keep_archiving || args.in_place
}

/// `--pgdata`: no live server in or around it, a parent pitr may write
/// into, with `--in-place` the same cluster as the backup's, and what is
/// there now.
fn check_destination(
    args: &RestoreArgs,
    plan: &Plan,
    pgdata: &Path,
) -> Result<Destination, Failure> {
    restore_checks::refuse_live_server(pgdata, "--pgdata")?;
    if args.delta {
        crate::stage::delta::check_delta_target(pgdata, &plan.backup)?;
        return Ok(Destination::Occupied);
    }
    crate::stage::delta::refuse_unfinished(pgdata, replaces_destination(args))?;
    restore_checks::check_parent_writable(pgdata, "--pgdata")?;
    if args.in_place {
        restore_checks::refuse_other_cluster(pgdata, plan.backup.system_identifier)?;
    }
    inspect_destination(pgdata, replaces_destination(args)).or_fail(FailureKind::Staging)
}

/// Where each of the backup's tablespaces goes (`--tablespace-mapping`),
/// each destination checked like `--pgdata`, and said.
fn place_tablespaces(
    args: &RestoreArgs,
    plan: &Plan,
    pgdata: &Path,
    reporter: &Reporter,
) -> Result<Vec<Placement>, Failure> {
    let mappings = args
        .tablespace_mappings
        .iter()
        .map(|text| parse_mapping(text))
        .collect::<anyhow::Result<Vec<_>>>()
        .or_fail(FailureKind::Usage)?;
    let placements = place_occupied(
        &plan.backup.tablespaces,
        &mappings,
        pgdata,
        args.in_place || args.delta,
        args.delta,
    )
    .map_err(|error| Failure::new(FailureKind::Staging, error).with_hint("nothing was changed"))?;
    for placement in &placements {
        if args.delta {
            crate::stage::delta::check_delta_tablespace(pgdata, placement)?;
        }
        restore_checks::refuse_live_server(&placement.destination, "the tablespace destination")?;
        restore_checks::check_parent_writable(
            &placement.destination,
            "the tablespace destination",
        )?;
        reporter.step(format!(
            "tablespace {} → {}{}",
            placement.oid,
            placement.destination.display(),
            if placement.mapped {
                format!(" (recorded at {})", placement.recorded.display())
            } else {
                " (its recorded location)".to_string()
            }
        ));
    }
    Ok(placements)
}

/// PostgreSQL's programs of the backup's major.
fn find_binaries(args: &RestoreArgs, plan: &Plan) -> Result<(u32, Binaries), Failure> {
    let major_version = plan.backup.major_version.ok_or_else(|| {
        Failure::msg(
            FailureKind::Staging,
            format!(
                "cannot tell which PostgreSQL version made backup `{}` (no PG_VERSION and no archived WAL to read it from)",
                plan.backup.id
            ),
        )
    })?;
    let binaries =
        Binaries::find(args.bin_dir.as_deref(), major_version).or_fail(FailureKind::Staging)?;
    Ok((major_version, binaries))
}

/// An incremental backup (17+) is staged by pg_combinebackup from its
/// chain, resolved now so that a broken chain is refused before anything
/// is written.
fn resolve_chain(
    catalog: &Catalog,
    plan: &Plan,
    binaries: &Binaries,
    reporter: &Reporter,
) -> Result<Option<Combine>, Failure> {
    if plan.backup.label.incremental_from.is_none() {
        return Ok(None);
    }
    let backups = catalog.stores.backups.as_ref();
    let chain = crate::repo::incremental::chain_of(backups, &catalog.backups, &plan.backup)
        .or_fail(FailureKind::Staging)?;
    reporter.step(format!(
        "backup {} is incremental: combining {}",
        plan.backup.id,
        chain
            .iter()
            .map(|backup| backups.describe(&backup.id))
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    Ok(Some(Combine {
        chain,
        binaries: binaries.clone(),
    }))
}

/// `--port` when it is free, else a free one.
fn choose_port(port: Option<u16>, socket_dir: &Path) -> Result<u16, Failure> {
    match port {
        Some(port) => {
            restore_checks::refuse_taken_port(port, &[socket_dir.to_path_buf()])?;
            Ok(port)
        }
        None => free_port(socket_dir).or_fail(FailureKind::Staging),
    }
}

/// What the staged data directory's configuration tells PostgreSQL: where
/// to recover to, what to do there, and how to get WAL and be reached.
fn recovery_settings(
    args: &RestoreArgs,
    plan: &Plan,
    restore_command: String,
    port: u16,
    socket_dir: &Path,
    major_version: u32,
) -> RecoverySettings {
    RecoverySettings {
        restore_command,
        target: plan.target.clone(),
        inclusive: plan.inclusive,
        timeline: plan.timeline,
        action: args.action,
        port,
        socket_dir: socket_dir.to_string_lossy().into_owned(),
        keep_archiving: keep_archiving(args),
        major_version,
        durability: durability(args),
    }
}

/// `--scratch-copy`: a copy thrown away after one use needs no flush.
fn durability(args: &RestoreArgs) -> Durability {
    if args.scratch_copy {
        Durability::Throwaway
    } else {
        Durability::Durable
    }
}

/// Writes the data directory (see `stage::stage`), and says what it did.
fn stage_backup(
    delta: bool,
    request: &StageRequest<'_>,
    reporter: &Reporter,
) -> Result<Staged, Failure> {
    if delta {
        reporter.step(format!(
            "delta restore of backup {} over {}: only what differs is written",
            request.plan.backup.id,
            request.pgdata.display()
        ));
        return crate::stage::delta::stage_delta(request, reporter).map_err(|error| {
            let kind = if error.downcast_ref::<Interrupted>().is_some() {
                FailureKind::Interrupted
            } else {
                FailureKind::Staging
            };
            let error = if kind == FailureKind::Interrupted {
                anyhow::anyhow!("interrupted during the delta restore")
            } else {
                error
            };
            Failure::new(kind, error).with_hint(format!(
                "`{}` is incomplete and cannot be started (its pg_control is removed until the delta restore finishes): run the same `pitr restore --delta` again to finish it",
                request.pgdata.display()
            ))
        });
    }
    reporter.step(format!(
        "staging backup {} into {}",
        request.plan.backup.id,
        request.pgdata.display()
    ));
    let staged = stage(request, reporter).map_err(|error| {
        if error.downcast_ref::<Interrupted>().is_some() {
            Failure::new(FailureKind::Interrupted, error)
        } else {
            Failure::new(FailureKind::Staging, error)
                .with_hint("nothing was left behind: the staging directory was removed")
        }
    })?;
    if let Some(aside) = &staged.moved_aside {
        reporter.step(format!(
            "the previous contents of {} were moved to {}",
            request.pgdata.display(),
            aside.display()
        ));
    }
    for note in &staged.notes {
        reporter.step(format!("note: {note}"));
    }
    Ok(staged)
}

/// Starts PostgreSQL on the staged data directory and waits for its PID.
fn start_server(
    server: &Server,
    follower: &mut LogFollower,
    port: u16,
    reporter: &Reporter,
) -> Result<Started, Failure> {
    reporter.step(format!(
        "starting PostgreSQL {} as OS user {} on port {port}; log: {}",
        server.binaries.major_version,
        server.user.name,
        server.log_path.display()
    ));
    server.start().or_fail(FailureKind::Recovery)?;
    let (pid, initial) =
        wait_for_pid(server, follower, Duration::from_secs(60)).map_err(|error| {
            Failure::msg(
                FailureKind::Recovery,
                format!(
                    "{error:#}\nserver log:\n  {}",
                    follower.relevant_lines(12).join("\n  ")
                ),
            )
        })?;
    Ok((pid, initial))
}

/// The server's PID and the log events seen while waiting for it.
type Started = (Option<nix::unistd::Pid>, Vec<LogEvent>);

/// Follows the server's log to the target, moving the replay bar and
/// telling the prefetcher how far replay is.
fn follow_replay(
    server: &Server,
    follower: &mut LogFollower,
    (pid, initial): Started,
    action: Action,
    plan: &Plan,
    prefetcher: Option<&Prefetcher>,
    reporter: &Reporter,
) -> Result<(FinalState, Observed), Failure> {
    let mut progress = reporter.bar("replay", plan.wal.segments, Unit::Segments);
    let first = plan.wal.first;
    let followed = follow(
        server,
        follower,
        pid,
        action,
        &plan.target,
        |event| {
            if let LogEvent::Restored(name) = event {
                if let Some(segment) = WalSegment::parse(name, first.size) {
                    progress.set(replayed_count(segment, first, plan.wal.segments));
                    progress.set_message(name.clone());
                    if let Some(prefetcher) = prefetcher {
                        prefetcher.replayed(segment);
                    }
                }
            }
        },
        initial,
    )
    .map_err(recovery_failure)?;
    progress.finish();
    Ok(followed)
}

/// After promotion: pitr's recovery settings removed, and the server
/// restarted with the backup's own configuration (or stopped, for an
/// `--in-place` recovery left to its service manager).
fn hand_over_promoted(
    args: &RestoreArgs,
    server: &Server,
    port: u16,
    socket_dir: &Path,
    reporter: &Reporter,
) -> Result<Handover, Failure> {
    let stop = args.in_place && !args.keep_running;
    reporter.step(if stop {
        "promoted; removing pitr's recovery settings from postgresql.auto.conf and stopping the server"
    } else {
        "promoted; removing pitr's recovery settings from postgresql.auto.conf and restarting with the backup's own configuration"
    });
    hand_over(&HandoverRequest {
        server,
        // A side-by-side copy keeps its own port: the backup's is the
        // production server's, which applications connect to.
        port: if args.in_place { args.port } else { Some(port) },
        keep_archiving: keep_archiving(args),
        fallback_socket_dir: socket_dir,
        then: if stop { Then::Stop } else { Then::Restart },
    })
}

/// A recovery that did not end as asked: exit status 130 when interrupted,
/// 5 otherwise, with the recovery's hint.
fn recovery_failure(error: RecoveryError) -> Failure {
    let kind = match error {
        RecoveryError::Interrupted { .. } => FailureKind::Interrupted,
        RecoveryError::NotReached { .. } => FailureKind::Recovery,
    };
    let hint = error.hint();
    Failure::new(kind, error).with_hint(hint)
}

/// How many planned segments replay has gone through when PostgreSQL
/// restores `segment`. At the end of the plan PostgreSQL asks for the next
/// segment too (to look for more WAL, or a newer timeline): it is not
/// planned and must not count as `7/6`.
fn replayed_count(segment: WalSegment, first: WalSegment, planned: u64) -> u64 {
    (segment.number.saturating_sub(first.number) + 1).min(planned)
}

/// Creates the spool beside the data directory and starts prefetching the
/// planned segments that the archive holds complete. None when the parent
/// directory does not exist (staging then says so).
fn start_prefetch(
    plan: &Plan,
    catalog: &Catalog,
    pgdata: &Path,
    user: &OsUser,
    durability: Durability,
) -> anyhow::Result<Option<Prefetcher>> {
    let Some(spool) = create_spool(pgdata, user)? else {
        return Ok(None);
    };
    let size = plan.wal.first.size;
    let segments = (plan.wal.first.number..=plan.wal.last.number)
        .map(|number| plan.path.segment(number, size))
        .filter_map(|segment| {
            catalog
                .archive
                .segment(segment)
                .filter(|file| !file.partial)
                .map(|file| (segment, file.clone()))
        })
        .collect();
    Ok(Some(Prefetcher::start(
        segments,
        &spool,
        user.clone(),
        PREFETCH_AHEAD,
        durability,
    )))
}

/// Segments decompressed ahead of replay: enough to hide the archive's
/// latency and to stay ahead of a replay running at 30 segments a second,
/// few enough to bound the disk used (16 × 16 MiB).
const PREFETCH_AHEAD: u64 = 16;

/// This pitr binary, which `restore_command` runs, once the server's user
/// is known to be able to run it and to read the archive.
fn check_restore_command(user: &OsUser, catalog: &Catalog) -> Result<PathBuf, Failure> {
    let pitr = this_program()
        .context("cannot find the pitr executable")
        .or_fail(FailureKind::Internal)?;
    check_user_can_run(user, &pitr, &catalog.location)?;
    Ok(pitr)
}

/// How restore_command reaches the archive: a local one by its path; one
/// in object storage through the server's environment ([`server_env`]),
/// so that postgresql.auto.conf holds neither a URL nor a secret.
fn fetch_from(location: &RepoLocation) -> FetchFrom<'_> {
    match location {
        RepoLocation::Local { wal_archive, .. } => FetchFrom::Dir(wal_archive),
        RepoLocation::Object(_) => FetchFrom::Environment,
    }
}

/// What the restored server needs in its environment beyond pitr's own
/// (which it inherits, with `PITR_CONFIG` and the store's credential
/// variables): the repository in object storage, for its restore_command.
/// A server restarted by hand before recovery ends needs the same
/// (`PITR_REPO`, or `repository` in the configuration file).
fn server_env(location: &RepoLocation) -> Vec<(String, String)> {
    match location {
        RepoLocation::Local { .. } => Vec::new(),
        RepoLocation::Object(object) => vec![("PITR_REPO".to_string(), object.url.to_string())],
    }
}

/// PostgreSQL runs `restore_command` as its own user: it must be able to run
/// this very binary and read the archive, or recovery fails later with a
/// confusing message.
fn check_user_can_run(user: &OsUser, pitr: &Path, location: &RepoLocation) -> Result<(), Failure> {
    if !user.switch {
        return Ok(());
    }
    let runs = user
        .command(pitr)
        .arg("--version")
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !runs {
        return Err(Failure::msg(
            FailureKind::Staging,
            format!(
                "OS user `{}` cannot run `{}`, which PostgreSQL will call as its restore_command",
                user.name,
                pitr.display()
            ),
        )
        .with_hint("install pitr where every user can run it (for example /usr/local/bin), or make its directories world-executable"));
    }
    let archive = match location {
        RepoLocation::Local { wal_archive, .. } => wal_archive,
        RepoLocation::Object(object) => return check_user_reaches_store(user, pitr, object),
    };
    let readable = user
        .command(Path::new("/bin/sh"))
        .args(["-c", "test -r \"$1\" && test -x \"$1\"", "sh"])
        .arg(archive)
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !readable {
        return Err(Failure::msg(
            FailureKind::Staging,
            format!(
                "OS user `{}` cannot read the WAL archive `{}`, which PostgreSQL's restore_command must read",
                user.name,
                archive.display()
            ),
        ));
    }
    Ok(())
}

/// The server's user reaches a store in object storage with pitr's own
/// environment (which the server inherits) and `PITR_REPO`: checked by
/// asking, as that user, for a file no archive has: the history file of
/// the last timeline PostgreSQL could number (not timeline 1's, which
/// wal-fetch answers without asking the store). "Not found" means the
/// store answered; anything else
/// (a configuration or credentials file only root may read, say) would
/// otherwise stop recovery at its first segment.
fn check_user_reaches_store(
    user: &OsUser,
    pitr: &Path,
    object: &crate::repo::ObjectRepo,
) -> Result<(), Failure> {
    let output = user
        .command(pitr)
        .envs(server_env(&RepoLocation::Object(object.clone())))
        // Not one of the server's fetches: kept out of the timing log that
        // measures how long replay waits on restore_command.
        .env_remove("PITR_FETCH_LOG")
        .args([
            "wal-fetch",
            "FFFFFFFF.history",
            "/nonexistent/pitr-reachability-check",
        ])
        .output();
    let answered = output.as_ref().is_ok_and(|output| {
        output.status.code() == Some(i32::from(super::wal_fetch::EXIT_NOT_FOUND))
    });
    if answered {
        return Ok(());
    }
    let why = match &output {
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(error) => error.to_string(),
    };
    Err(Failure::msg(
        FailureKind::Staging,
        format!(
            "OS user `{}` cannot reach the repository {} with pitr's environment, which PostgreSQL's restore_command inherits: {why}",
            user.name, object.url
        ),
    )
    .with_hint("make the configuration file (PITR_CONFIG or /etc/pitr/pitr.toml) and its credentials file readable by that user, or give the credentials in the environment; nothing was written"))
}

/// A port free on TCP and for unix sockets (another server may listen on
/// a socket only).
fn free_port(socket_dir: &Path) -> anyhow::Result<u16> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free TCP port")?;
        let port = listener
            .local_addr()
            .context("cannot find a free TCP port")?
            .port();
        drop(listener);
        if restore_checks::port_taken(port, &[socket_dir.to_path_buf()]).is_none() {
            return Ok(port);
        }
    }
    anyhow::bail!("cannot find a free port: every port tried is in use")
}

/// The data directory itself holds the socket, unless its path is too long
/// for a unix socket address (108 bytes including `/.s.PGSQL.NNNNN`).
fn socket_dir_for(pgdata: &Path) -> PathBuf {
    if pgdata.as_os_str().len() <= 80 {
        pgdata.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// With no target PostgreSQL ends recovery wherever the WAL it can read
/// ends. Success means that is the end of what the archive holds.
fn confirm_end_of_archive(
    plan: &Plan,
    observed: &Observed,
    server: &Server,
) -> Result<(), Failure> {
    let Some(redo_done) = observed.redo_done else {
        return Ok(());
    };
    // `redo done at` names the start of the last record replayed.
    let expected = match plan.wal_end {
        Some((last_start, _)) => last_start,
        None => plan.wal.last.start_lsn(),
    };
    if redo_done < expected {
        let reached = WalSegment::containing(plan.timeline, redo_done, plan.wal.last.size);
        return Err(Failure::msg(
            FailureKind::Recovery,
            format!(
                "replay stopped at {redo_done} in segment {reached}, but the archive holds valid WAL up to the record at {expected}: PostgreSQL took an unreadable record for the end of the WAL and promoted early"
            ),
        )
        .with_hint(format!(
            "the server at `{}` is running and writable at that earlier point; check segment {} and the log `{}`",
            server.pgdata.display(),
            reached.next(),
            server.log_path.display()
        )));
    }
    Ok(())
}

struct Summary<'a> {
    plan: &'a Plan,
    /// Where the backup was read from, for the plan's JSON.
    backups: &'a dyn StoreRead,
    pgdata: &'a Path,
    port: u16,
    socket_dir: &'a Path,
    state: FinalState,
    observed: &'a Observed,
    moved_aside: Option<&'a Path>,
    bytes_staged: u64,
    /// What a delta restore kept, rewrote and removed.
    delta: Option<crate::stage::delta::DeltaStats>,
    /// `--only-database`: what was left sparse, or why nothing was.
    scope: Option<(&'a Scope, &'a str)>,
    /// Files and bytes staged sparse.
    sparse: (u64, u64),
    /// plan, staging, recovery, total.
    timings: [Duration; 4],
    /// `--only-database`: the time the WAL was read to decide what may
    /// stay sparse (while staging, when run alongside it).
    wal_read: Option<Duration>,
    server: &'a Server,
    prefetched: Option<PrefetchStats>,
    /// `--keep-archiving` or `--in-place`: the server archives with the
    /// backup's settings.
    archiving_kept: bool,
    /// After promotion: the clean configuration and where the server is.
    handover: Option<&'a Handover>,
}

impl Summary<'_> {
    /// As JSON on stdout, or as text on stderr unless `--quiet`.
    fn print(&self, json: bool, local: &jiff::tz::TimeZone, reporter: &Reporter) {
        if json {
            println!("{:#}", self.json(local));
        } else if !reporter.quiet {
            eprintln!("{}", self.text());
        }
    }

    /// The socket directory and port the server really uses: its lock
    /// file while it runs, else what its configuration says.
    fn endpoint(&self) -> (PathBuf, u16) {
        if let Some(handover) = self.handover {
            return (
                handover
                    .socket_dir
                    .clone()
                    .unwrap_or_else(|| self.socket_dir.to_path_buf()),
                handover.port.unwrap_or(self.port),
            );
        }
        let lock = crate::postgres::live::LockFile::read(self.pgdata);
        (
            lock.as_ref()
                .and_then(|l| l.socket_dir.clone())
                .unwrap_or_else(|| self.socket_dir.to_path_buf()),
            lock.and_then(|l| l.port).unwrap_or(self.port),
        )
    }

    fn running(&self) -> bool {
        self.state != FinalState::Stopped && self.handover.is_none_or(|handover| handover.running)
    }

    fn connect(&self) -> String {
        let (socket_dir, port) = self.endpoint();
        self.server.psql_command(&socket_dir, port)
    }

    fn text(&self) -> String {
        let [plan, staging, recovery, total] = self.timings.map(|d| d.as_secs_f64());
        let mut lines = vec![String::new(), "restore complete".to_string()];
        lines.push(format!("  backup:     {}", self.plan.backup.id));
        lines.push(format!(
            "  WAL:        {} .. {} ({} planned, {} restored from the archive)",
            self.plan.wal.first,
            self.plan.wal.last,
            count(self.plan.wal.segments, "segment"),
            count(self.observed.restored_files, "file")
        ));
        if let Some(stop) = &self.observed.stop_message {
            lines.push(format!("  stop point: {stop}"));
        } else if let Some(lsn) = self.observed.redo_done {
            lines.push(format!(
                "  stop point: end of the archive, last record at {lsn}"
            ));
        }
        if let Some(time) = &self.observed.last_transaction {
            lines.push(format!("  last transaction replayed: {time}"));
        }
        match self.state {
            FinalState::Promoted => {
                if let Some(timeline) = self.observed.new_timeline {
                    lines.push(format!("  new timeline: {timeline}"));
                }
                match self.handover {
                    Some(handover) if !handover.running => lines.push(format!(
                        "  PostgreSQL is promoted and stopped, ready for its service manager, or: {}",
                        self.server.pg_ctl_command("start")
                    )),
                    _ => lines.push(format!(
                        "  PostgreSQL is running and accepts writes: {}",
                        self.connect()
                    )),
                }
                if let Some(handover) = self.handover {
                    let kept: Vec<String> = handover
                        .kept
                        .iter()
                        .map(|(name, value)| format!("{name} = '{value}'"))
                        .collect();
                    lines.push(format!(
                        "  configuration: pitr's recovery settings were removed from postgresql.auto.conf; it keeps {}",
                        if kept.is_empty() { "nothing of pitr's".to_string() } else { kept.join(", ") }
                    ));
                    let (socket_dir, port) = self.endpoint();
                    lines.push(format!(
                        "  socket:     {} port {port} ({})",
                        socket_dir.display(),
                        handover.socket_source
                    ));
                }
            }
            FinalState::Paused => {
                lines.push(format!(
                    "  PostgreSQL is paused at the target, read-only. Inspect it with: {}",
                    self.connect()
                ));
                lines.push(format!(
                    "  then promote it with `{}` (or SELECT pg_promote()), or stop it with `{}`",
                    self.server.pg_ctl_command("promote"),
                    self.server.pg_ctl_command("stop")
                ));
                lines.push(
                    "  pitr's recovery settings stay in postgresql.auto.conf (the block from `# Added by pitr restore`): after promoting, remove that block before the next restart".to_string(),
                );
            }
            FinalState::Stopped => lines.push(format!(
                "  PostgreSQL stopped at the target; start it with `{}`",
                self.server.pg_ctl_command("start")
            )),
        }
        lines.push(if self.archiving_kept {
            "  archiving:  kept as in the backup: this server archives its WAL with the backup's archive_command".to_string()
        } else {
            "  archiving:  off in the copy (archive_mode = off), so it cannot write into the production archive; set archive_mode and restart it to make it archive".to_string()
        });
        if let Some(aside) = self.moved_aside {
            lines.push(format!("  previous directory kept at {}", aside.display()));
        }
        if let Some(delta) = &self.delta {
            lines.extend(delta_lines(delta));
        }
        if let Some(stats) = self.prefetched {
            lines.push(format!(
                "  prefetch:   {} segments ({}) decompressed ahead of replay",
                stats.prefetched,
                human_bytes(stats.bytes)
            ));
        }
        lines.push(format!(
            "  server:     PostgreSQL {} from {}",
            self.server.binaries.major_version,
            self.server.binaries.dir.display()
        ));
        lines.push(format!(
            "  data directory: {} (log: {})",
            self.pgdata.display(),
            self.server.log_path.display()
        ));
        if let Some((scope, name)) = self.scope {
            lines.push(format!(
                "  databases:  {}",
                scope.summary(name, self.sparse)
            ));
        }
        lines.push(format!(
            "  time: plan {plan:.1}s, staging {staging:.1}s ({}), recovery {recovery:.1}s, total {total:.1}s",
            human_bytes(self.bytes_staged)
        ));
        lines.join("\n")
    }

    fn json(&self, local: &jiff::tz::TimeZone) -> serde_json::Value {
        let [plan, staging, recovery, total] = self.timings.map(|d| d.as_secs_f64());
        json!({
            "plan": super::plan_json(self.plan, self.backups, local),
            "pgdata": self.pgdata,
            "port": self.endpoint().1,
            "socket_dir": self.endpoint().0,
            "running": self.running(),
            "configuration": self.handover.map(|handover| json!({
                "kept": handover.kept.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
                "socket_source": handover.socket_source,
            })),
            "connect": self.running().then(|| self.connect()),
            "state": self.state,
            "stop": {
                "message": self.observed.stop_message,
                "redo_done_lsn": self.observed.redo_done.map(|lsn| lsn.to_string()),
                "consistent_at": self.observed.consistent_at.map(|lsn| lsn.to_string()),
                "last_transaction": self.observed.last_transaction,
            },
            "new_timeline": self.observed.new_timeline,
            "server": {
                "major_version": self.server.binaries.major_version,
                "bin_dir": self.server.binaries.dir,
            },
            "restored_files": self.observed.restored_files,
            "archiving": if self.archiving_kept { "kept" } else { "off" },
            "moved_aside": self.moved_aside,
            "log": self.server.log_path,
            "bytes_staged": self.bytes_staged,
            "delta": self.delta,
            "only_database": self.scope.map(|(scope, name)| scope.json(name, self.sparse)),
            "prefetch": self.prefetched,
            "seconds": {
                "plan": plan,
                "staging": staging,
                "recovery": recovery,
                "total": total,
                "wal_read": self.wal_read.map(|d| d.as_secs_f64()),
            },
            "target_reached": !matches!(self.plan.target, Target::Latest) || self.observed.redo_done.is_some(),
        })
    }
}

/// The summary's account of a delta restore.
fn delta_lines(delta: &crate::stage::delta::DeltaStats) -> Vec<String> {
    vec![
        format!(
            "  delta:      kept {} unchanged ({}), patched {} ({} of {} compared pages rewritten), rewrote {} in full",
            count(delta.files_kept, "file"),
            human_bytes(delta.bytes_kept),
            count(delta.files_patched, "file"),
            delta.pages_rewritten,
            delta.pages_kept + delta.pages_rewritten,
            count(delta.files_rewritten, "file"),
        ),
        format!(
            "              wrote {}, removed {} ({}) not in the backup, read {} from the repository",
            human_bytes(delta.bytes_written),
            count(delta.files_removed, "file"),
            human_bytes(delta.bytes_removed),
            human_bytes(delta.repository_bytes),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{SegmentSize, TimelineId};

    #[test]
    fn replay_progress_never_passes_the_plan() {
        let segment = |number| WalSegment {
            timeline: TimelineId::FIRST,
            number,
            size: SegmentSize::DEFAULT,
        };
        assert_eq!(replayed_count(segment(4), segment(4), 6), 1);
        assert_eq!(replayed_count(segment(9), segment(4), 6), 6);
        // PostgreSQL asks for the segment after the last one planned.
        assert_eq!(replayed_count(segment(10), segment(4), 6), 6);
    }
}
