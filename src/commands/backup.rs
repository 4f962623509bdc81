//! `pitr backup`: pg_basebackup into a hidden directory under `base/`,
//! renamed to `base/<id>` on success (into an object store: streamed from
//! pg_basebackup's stdout straight into the store, see `backup_stream`,
//! unless it must be staged locally first), then a wait until the backup's
//! WAL is in the archive, so that the backup can be restored when this
//! returns.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::json;

use super::backup_stream::{stream_backup, Streamed};
use crate::cli::{BackupArgs, BackupCompression, BackupWalMethod};
use crate::compression::Compression;
use crate::error::{Failure, FailureKind, OrFail};
use crate::os_user::OsUser;
use crate::postgres::basebackup::{self, arguments, find_pg_basebackup, Options, WalMethod};
use crate::progress::{human_bytes, Reporter};
use crate::repo::arrival::{archived_copy, segment_size};
use crate::repo::backup::{read_manifest, read_tar_label};
use crate::repo::label::{parse_backup_history, parse_backup_label};
use crate::repo::store::posix::Posix;
use crate::repo::store::{Staging, StoreRead};
use crate::repo::wal_source::ArchiveWal;
use crate::repo::writer::{backup_id, id_taken, publish, stage_backup};
use crate::repo::{Catalog, RepoLocation};
use crate::seekable::convert::convert_staged;
use crate::seekable::INDEX_SUFFIX;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

pub fn run(args: &BackupArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let started = Instant::now();
    let location = RepoLocation::new(
        args.repo.repo.as_deref(),
        args.repo.backups.as_deref(),
        args.repo.wal_archive.as_deref(),
    )
    .or_fail(FailureKind::Usage)?;
    let user = OsUser::for_server(&args.os_user).or_fail(FailureKind::Usage)?;
    let (program, major) =
        find_pg_basebackup(args.bin_dir.as_deref()).or_fail(FailureKind::Backup)?;
    if args.seekable && !matches!(args.compress, BackupCompression::Zstd) {
        return Err(Failure::msg(
            FailureKind::Usage,
            format!(
                "--seekable writes zstd, and --compress {} asks for another compression",
                compression_name(args.compress)
            ),
        )
        .with_hint("drop --compress (or give --compress zstd) with --seekable"));
    }
    let repo = crate::repo::writer::open_for_writing(&location);
    let id = backup_id(Utc::now(), |id| id_taken(repo.backups.read().as_ref(), id));
    let job = Job {
        location: &location,
        repo: &repo,
        user: &user,
        program: &program,
        major,
        id: &id,
    };
    let streamed = match staging_reason(args, &location) {
        None => stream(&job, args, reporter)?,
        Some(reason) => {
            if let Some(reason) = reason {
                reporter.detail(format!("staging the backup locally: {reason}"));
            }
            None
        }
    };
    let dir = match streamed {
        Some(dir) => dir,
        None => staged(&job, args, reporter)?,
    };
    let wal = backup_wal(repo.backups.read().as_ref(), &id);
    let from_standby = made_on_standby(repo.backups.read().as_ref(), &id);
    let bytes = top_level_bytes(repo.backups.read().as_ref(), &id);
    reporter.step(format!(
        "pg_basebackup done: {} in {:.1} s",
        human_bytes(bytes),
        started.elapsed().as_secs_f64()
    ));

    let Some(wal) = wal else {
        reporter.warn(format!(
            "backup `{id}` has no readable backup_manifest, so pitr cannot tell which WAL it needs and does not wait for it"
        ));
        return report(
            reporter,
            json,
            &Outcome {
                id: &id,
                dir: &dir,
                bytes,
                wal: None,
                archived: None,
                restorable_from: None,
                started,
            },
        );
    };
    let waited = if args.archive_wait.is_zero() {
        reporter.step("not waiting for the backup's WAL to be archived (--archive-wait 0)");
        None
    } else {
        Some(
            wait_for_wal(
                repo.archive.read(),
                &wal,
                from_standby,
                args.archive_wait,
                reporter,
            )
            .map_err(|failure| failure.explain_backup(&id, &dir))?,
        )
    };
    let restorable = waited
        .as_ref()
        .and_then(|_| restorable_from(&location, &id));
    report(
        reporter,
        json,
        &Outcome {
            id: &id,
            dir: &dir,
            bytes,
            wal: Some(&wal),
            archived: waited.as_ref(),
            restorable_from: restorable,
            started,
        },
    )
}

/// What one backup run works with.
struct Job<'a> {
    location: &'a RepoLocation,
    repo: &'a crate::repo::RepoWrite,
    user: &'a OsUser,
    program: &'a Path,
    major: u32,
    id: &'a str,
}

/// `None` when the backup streams straight into the store; otherwise why
/// it is staged locally first (`None` inside for a directory repository,
/// where staging is in the repository itself and costs nothing).
fn staging_reason(args: &BackupArgs, location: &RepoLocation) -> Option<Option<&'static str>> {
    if !matches!(location, RepoLocation::Object(_)) {
        return Some(None);
    }
    if args.seekable {
        return Some(Some("--seekable re-encodes the finished tars"));
    }
    if args.server_compression {
        return Some(Some(
            "--server-compression: the server's compressed tar cannot be split on the way",
        ));
    }
    if args.wal_method == Some(BackupWalMethod::Stream) {
        return Some(Some(
            "--wal-method stream writes a second tar, which pg_basebackup cannot send to stdout",
        ));
    }
    None
}

/// The pg_basebackup options every backup shares.
fn base_options(args: &BackupArgs, id: &str, reporter: &Reporter) -> Options {
    Options {
        target: PathBuf::new(),
        label: id.to_string(),
        // A seekable backup is compressed by pitr, frame by frame, from
        // the plain tar pg_basebackup writes.
        compression: match args.compress {
            _ if args.seekable => basebackup::Compression::None,
            BackupCompression::Zstd => basebackup::Compression::Zstd,
            BackupCompression::Lz4 => basebackup::Compression::Lz4,
            BackupCompression::Gzip => basebackup::Compression::Gzip,
            BackupCompression::None => basebackup::Compression::None,
        },
        server_side: args.server_compression,
        wal_method: match args.wal_method {
            Some(BackupWalMethod::Stream) | None => WalMethod::Stream,
            Some(BackupWalMethod::Fetch) => WalMethod::Fetch,
        },
        fast_checkpoint: args.fast,
        progress: !reporter.quiet && (reporter.terminal || reporter.verbose),
        verbose: reporter.verbose,
        dbname: args.dbname.clone(),
    }
}

/// The compression pitr applies itself to a streamed backup: the one
/// pg_basebackup would have applied to a staged one.
fn stream_compression(compression: BackupCompression) -> Compression {
    match compression {
        BackupCompression::Zstd => Compression::Zstd,
        BackupCompression::Lz4 => Compression::Lz4,
        BackupCompression::Gzip => Compression::Gzip,
        BackupCompression::None => Compression::None,
    }
}

fn describe_command(job: &Job, arguments: &[std::ffi::OsString]) -> String {
    format!(
        "running {} {}{}",
        job.program.display(),
        arguments
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        if job.user.switch {
            format!(" as OS user {}", job.user.name)
        } else {
            String::new()
        }
    )
}

/// The backup streamed from pg_basebackup's stdout into the store (see
/// `backup_stream`); `None` when pg_basebackup cannot stream this cluster
/// (several tablespaces) and it must be staged.
fn stream(job: &Job, args: &BackupArgs, reporter: &Reporter) -> Result<Option<PathBuf>, Failure> {
    let options = Options {
        target: PathBuf::from("-"),
        // pitr compresses; the tar must stay readable on the way.
        compression: basebackup::Compression::None,
        // By default not fetched at the end (that needs wal_keep_size to
        // hold everything written during the backup, which a busy primary
        // recycles first): the archive has it, and the backup waits for it.
        // `--wal-method fetch` asks for a backup that carries its WAL.
        wal_method: match args.wal_method {
            Some(BackupWalMethod::Fetch) => WalMethod::Fetch,
            _ => WalMethod::None,
        },
        ..base_options(args, job.id, reporter)
    };
    let arguments = arguments(&options, job.major).or_fail(FailureKind::Usage)?;
    let compression = stream_compression(args.compress);
    reporter.step(format!(
        "streaming into {} with pg_basebackup {} (tar to stdout, {} by pitr, {}; no local copy)",
        job.repo.backups.describe(job.id),
        job.major,
        compression.name(),
        match options.wal_method {
            WalMethod::Fetch => "its WAL fetched at the end",
            _ => "its WAL in the archive",
        },
    ));
    reporter.detail(describe_command(job, &arguments));
    let streamed = stream_backup(
        &job.repo.backups,
        job.id,
        job.user,
        job.program,
        &arguments,
        compression,
    )?;
    match streamed {
        Streamed::Published { data_bytes } => {
            reporter.detail(format!(
                "{} of data files streamed",
                human_bytes(data_bytes)
            ));
            Ok(Some(PathBuf::from(job.repo.backups.describe(job.id))))
        }
        Streamed::NeedsStaging => {
            reporter.step(
                "pg_basebackup cannot stream a cluster with several tablespaces: staging the backup locally instead",
            );
            Ok(None)
        }
    }
}

/// pg_basebackup into a hidden staging directory (in the repository on
/// posix, local for object stores), made seekable if asked, then
/// published whole.
fn staged(job: &Job, args: &BackupArgs, reporter: &Reporter) -> Result<PathBuf, Failure> {
    let Job {
        location,
        repo,
        user,
        program,
        major,
        id,
    } = *job;
    let options = base_options(args, id, reporter);
    // Refuse impossible options before anything is created.
    arguments(&options, major).or_fail(FailureKind::Usage)?;

    // The backup is written under a hidden name that the scanner skips, and
    // removed when dropped: only a finished backup ever gets its real name.
    let temp = stage_backup(&repo.backups, id)
        .with_context(|| format!("cannot create a directory in `{}`", location.backups_text()))
        .or_fail(FailureKind::Backup)?;
    user.own(temp.path()).or_fail(FailureKind::Backup)?;
    let options = Options {
        target: temp.path().to_path_buf(),
        ..options
    };
    let arguments = arguments(&options, major).or_fail(FailureKind::Usage)?;
    reporter.step(format!(
        "backing up into {} with pg_basebackup {major} (tar, {}{}, WAL {})",
        repo.backups.describe(id),
        if args.seekable {
            "seekable zstd"
        } else {
            options.compression.name()
        },
        if options.server_side {
            " on the server"
        } else {
            ""
        },
        match options.wal_method {
            WalMethod::Stream => "streamed",
            WalMethod::Fetch => "fetched",
            WalMethod::None => "from the archive",
        }
    ));
    reporter.detail(describe_command(job, &arguments));

    let status = run_pg_basebackup(user, program, &arguments).or_fail(FailureKind::Backup)?;
    if crate::interrupt::requested() || !status.success() {
        let removal = temp.discard();
        let left = match removal {
            Ok(()) => format!("nothing was left in `{}`", location.backups_text()),
            Err(error) => {
                format!("its partial output could not be removed ({error}): delete it by hand")
            }
        };
        if crate::interrupt::requested() {
            return Err(Failure::msg(
                FailureKind::Interrupted,
                format!("the backup was interrupted; {left}"),
            ));
        }
        return Err(Failure::msg(
            FailureKind::Backup,
            format!("pg_basebackup failed ({status}); {left}"),
        )
        .with_hint(
            "its messages are above; check that the server runs and accepts replication connections from this user (pg_hba.conf `replication` lines, max_wal_senders), and the PG* environment variables or -d CONNSTR",
        ));
    }

    let temp = if args.seekable {
        make_seekable(temp, location, user, reporter)?
    } else {
        temp
    };

    publish(&repo.backups, temp, id).map_err(|error| {
        Failure::new(FailureKind::Backup, error).with_hint(
            "another backup took the same name at the same second; run the command again",
        )
    })
}

fn compression_name(compression: BackupCompression) -> &'static str {
    match compression {
        BackupCompression::Zstd => "zstd",
        BackupCompression::Lz4 => "lz4",
        BackupCompression::Gzip => "gzip",
        BackupCompression::None => "none",
    }
}

/// Re-encodes the staged backup's tars as seekable ones (the staging area
/// is a local directory on every store: a posix store of its own here). On
/// failure the staged backup is discarded, as after a failed pg_basebackup.
fn make_seekable(
    temp: Staging,
    location: &RepoLocation,
    user: &OsUser,
    reporter: &Reporter,
) -> Result<Staging, Failure> {
    let started = Instant::now();
    let staged = Posix::new(temp.path());
    // The new files belong to the OS user, as pg_basebackup's do.
    let converted = convert_staged(&staged).and_then(|converted| {
        for tar in &converted {
            user.own(&temp.path().join(&tar.name))?;
            user.own(&temp.path().join(format!("{}{INDEX_SUFFIX}", tar.name)))?;
        }
        Ok(converted)
    });
    match converted {
        Ok(converted) => {
            for tar in &converted {
                reporter.detail(format!(
                    "{}: {} members, {} in {} frames, {} of tar",
                    tar.name,
                    tar.index.members.len(),
                    human_bytes(tar.index.stored_bytes),
                    tar.index
                        .members
                        .iter()
                        .map(|m| m.frames.len())
                        .sum::<usize>()
                        + 1,
                    human_bytes(tar.index.tar_bytes),
                ));
            }
            reporter.step(format!(
                "made the backup seekable ({} tar{}) in {:.1} s",
                converted.len(),
                if converted.len() == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            ));
            Ok(temp)
        }
        Err(error) => {
            let interrupted = crate::interrupt::requested();
            let left = match temp.discard() {
                Ok(()) => format!("nothing was left in `{}`", location.backups_text()),
                Err(removal) => format!(
                    "its partial output could not be removed ({removal}): delete it by hand"
                ),
            };
            if interrupted {
                return Err(Failure::msg(
                    FailureKind::Interrupted,
                    format!("the backup was interrupted; {left}"),
                ));
            }
            Err(Failure::new(
                FailureKind::Backup,
                error.context(format!("cannot make the backup seekable; {left}")),
            )
            .with_hint("check the free space of the backups directory (the plain tar and its seekable copy are both there for a moment), or back up without --seekable"))
        }
    }
}

/// The moment from which the new backup can be restored, computed as
/// `pitr list` and the plan compute it (its last commit before its end),
/// so that all three show one value. `None` when the repository cannot be
/// read back, which the next `pitr list` will explain.
fn restorable_from(location: &RepoLocation, id: &str) -> Option<DateTime<FixedOffset>> {
    let catalog = Catalog::scan(location.clone(), &super::local_zone()).ok()?;
    let backup = catalog.backups.iter().find(|b| b.id == id)?;
    let wal = ArchiveWal::new(&catalog.archive);
    crate::plan::restorable_from(&wal, &catalog.archive, backup).ok()
}

/// Runs pg_basebackup as the PostgreSQL OS user, its output on our stderr
/// (stdout is for the result), and passes a SIGTERM on to it. Ctrl-C
/// reaches it directly, as it is in our process group.
fn run_pg_basebackup(
    user: &OsUser,
    program: &Path,
    arguments: &[std::ffi::OsString],
) -> anyhow::Result<ExitStatus> {
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    let mut child = user
        .command(program)
        .args(arguments)
        // The PostgreSQL user may not be able to enter our directory.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("cannot run `{}`", program.display()))?;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for pg_basebackup")? {
            return Ok(status);
        }
        if crate::interrupt::requested() && !forwarded {
            forwarded = true;
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the backup's WAL begins and ends, from its manifest.
#[derive(Clone, Copy, Debug)]
struct BackupWal {
    start_timeline: TimelineId,
    start_lsn: Lsn,
    stop_timeline: TimelineId,
    stop_lsn: Lsn,
}

fn backup_wal(backups: &dyn StoreRead, id: &str) -> Option<BackupWal> {
    let manifest = read_manifest(backups, id)?;
    let start = manifest.wal_ranges.iter().min_by_key(|r| r.start_lsn)?;
    let stop = manifest.wal_ranges.iter().max_by_key(|r| r.end_lsn)?;
    Some(BackupWal {
        start_timeline: start.timeline,
        start_lsn: start.start_lsn,
        stop_timeline: stop.timeline,
        stop_lsn: stop.end_lsn,
    })
}

/// A backup taken from a standby has no backup history file. Read from
/// `backup_label` when the format is one pitr reads; otherwise assume a
/// primary, the usual case.
fn made_on_standby(backups: &dyn StoreRead, id: &str) -> bool {
    let local = super::local_zone();
    read_tar_label(backups, id)
        .and_then(|text| parse_backup_label(&text, &local).ok())
        .is_some_and(|label| label.from.as_deref() == Some("standby"))
}

/// What arrived in the archive.
struct Archived {
    segments: Vec<String>,
    history_file: Option<String>,
    stop_time: Option<chrono::DateTime<chrono::FixedOffset>>,
    waited: Duration,
}

/// Why waiting ended without the WAL.
struct WaitFailure {
    kind: FailureKind,
    missing: Vec<String>,
    waited: Duration,
}

impl WaitFailure {
    fn explain_backup(self, id: &str, dir: &Path) -> Failure {
        let missing = self
            .missing
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "backup `{id}` is complete in `{}`, but after {} the archive still lacks {missing}, so it cannot be restored from the archive yet",
            dir.display(),
            crate::duration::format_duration(Duration::from_secs(self.waited.as_secs()))
        );
        let failure = Failure::msg(self.kind, message);
        match self.kind {
            FailureKind::Interrupted => failure,
            _ => failure.with_hint(
                "check archive_command (SELECT * FROM pg_stat_archiver shows its last failure; the server log says why); once the files are archived the backup is usable, and `pitr list` shows it",
            ),
        }
    }
}

/// Polls the archive until the backup history file and every segment from
/// the backup's start to its stop are there.
fn wait_for_wal(
    archive: &Arc<dyn StoreRead>,
    wal: &BackupWal,
    from_standby: bool,
    timeout: Duration,
    reporter: &Reporter,
) -> Result<Archived, WaitFailure> {
    let started = Instant::now();
    let mut size: Option<SegmentSize> = None;
    let mut announced = false;
    loop {
        if size.is_none() {
            size = segment_size(archive);
        }
        let needed = match size {
            Some(size) => needed_files(wal, size, from_standby),
            // No segment archived yet: at least the stop segment is missing.
            None => vec![format!("the segment holding {}", wal.stop_lsn)],
        };
        let missing: Vec<String> = needed
            .iter()
            .filter(|name| size.is_none() || archived_copy(archive, name).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            let history_file = (!from_standby).then(|| needed[needed.len() - 1].clone());
            let stop_time = history_file
                .as_ref()
                .and_then(|name| archived_copy(archive, name))
                .and_then(|file| {
                    let text = crate::repo::archive::read_text(&file).ok()?;
                    parse_backup_history(&text, &super::local_zone()).ok()
                })
                .and_then(|history| history.stop_time.instant);
            let segments = needed
                .into_iter()
                .filter(|name| Some(name) != history_file.as_ref())
                .collect();
            return Ok(Archived {
                segments,
                history_file,
                stop_time,
                waited: started.elapsed(),
            });
        }
        let failure = |kind| WaitFailure {
            kind,
            missing: missing.clone(),
            waited: started.elapsed(),
        };
        if crate::interrupt::requested() {
            return Err(failure(FailureKind::Interrupted));
        }
        if started.elapsed() >= timeout {
            return Err(failure(FailureKind::WalNotArchived));
        }
        if !announced && started.elapsed() >= Duration::from_secs(1) {
            announced = true;
            reporter.step(format!(
                "waiting up to {} for the backup's WAL to reach {} ({})",
                crate::duration::format_duration(timeout),
                archive.describe(""),
                missing.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every segment from the one holding the start to the one holding the
/// last byte before the stop, then (from a primary) the backup history
/// file, `<start segment on the stop timeline>.<offset>.backup`.
fn needed_files(wal: &BackupWal, size: SegmentSize, from_standby: bool) -> Vec<String> {
    let first = WalSegment::containing(wal.start_timeline, wal.start_lsn, size);
    let last = WalSegment::containing_end(wal.stop_timeline, wal.stop_lsn, size);
    let mut names: Vec<String> = (first.number..=last.number.max(first.number))
        .map(|number| {
            // A switch inside the backup: later segments are the new timeline's.
            let timeline = if number == first.number && wal.start_timeline == wal.stop_timeline {
                wal.start_timeline
            } else {
                wal.stop_timeline
            };
            WalSegment {
                timeline,
                number,
                size,
            }
            .file_name()
        })
        .collect();
    if !from_standby {
        let offset = wal.start_lsn.value() % size.bytes();
        names.push(format!(
            "{}.{offset:08X}.backup",
            first.on_timeline(wal.stop_timeline)
        ));
    }
    names
}

/// The size of the files at the top of backup `id`: a tar backup's
/// archives and manifest.
fn top_level_bytes(backups: &dyn StoreRead, id: &str) -> u64 {
    backups
        .list(&format!("{id}/"), None)
        .map(|objects| objects.iter().map(|object| object.size).sum())
        .unwrap_or(0)
}

/// What a finished backup command reports.
struct Outcome<'a> {
    id: &'a str,
    dir: &'a Path,
    bytes: u64,
    wal: Option<&'a BackupWal>,
    archived: Option<&'a Archived>,
    restorable_from: Option<DateTime<FixedOffset>>,
    started: Instant,
}

fn report(reporter: &Reporter, json: bool, outcome: &Outcome) -> Result<(), Failure> {
    let Outcome {
        id,
        dir,
        bytes,
        wal,
        archived,
        restorable_from,
        started,
    } = *outcome;
    let stop_time = archived.and_then(|a| a.stop_time);
    if json {
        println!(
            "{:#}",
            json!({
                "id": id,
                "path": dir,
                "bytes": bytes,
                "timeline": wal.map(|w| w.stop_timeline),
                "start_lsn": wal.map(|w| w.start_lsn),
                "stop_lsn": wal.map(|w| w.stop_lsn),
                "stop_time": stop_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                "wal_archived": archived.is_some(),
                "wal_segments": archived.map(|a| a.segments.clone()),
                "backup_history_file": archived.and_then(|a| a.history_file.clone()),
                "restorable_from": restorable_from.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
        return Ok(());
    }
    if let (Some(wal), Some(archived)) = (wal, archived) {
        reporter.step(format!(
            "backup {id}: timeline {}, WAL {} .. {}, {}; its WAL is archived ({:.1} s wait): restorable from {}",
            wal.stop_timeline,
            wal.start_lsn,
            wal.stop_lsn,
            human_bytes(bytes),
            archived.waited.as_secs_f64(),
            restorable_from
                .map(crate::plan::precise_utc)
                .unwrap_or_else(|| "its end (run `pitr list` for the exact time)".to_string())
        ));
    }
    // The id alone on stdout, for scripts (`id=$(pitr backup --repo ...)`);
    // nothing with --quiet, so that cron stays silent on success.
    if !reporter.quiet {
        println!("{id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(start: &str, stop: &str) -> BackupWal {
        BackupWal {
            start_timeline: TimelineId::FIRST,
            start_lsn: start.parse().unwrap(),
            stop_timeline: TimelineId::FIRST,
            stop_lsn: stop.parse().unwrap(),
        }
    }

    #[test]
    fn needs_the_start_to_stop_segments_and_the_history_file() {
        let size = SegmentSize::DEFAULT;
        assert_eq!(
            needed_files(&wal("0/11000028", "0/11000100"), size, false),
            [
                "000000010000000000000011",
                "000000010000000000000011.00000028.backup"
            ]
        );
        assert_eq!(
            needed_files(&wal("0/11000028", "0/13000100"), size, false),
            [
                "000000010000000000000011",
                "000000010000000000000012",
                "000000010000000000000013",
                "000000010000000000000011.00000028.backup"
            ]
        );
        // A stop on a segment boundary ends in the previous segment.
        assert_eq!(
            needed_files(&wal("0/11000028", "0/12000000"), size, true),
            ["000000010000000000000011"]
        );
    }

    #[test]
    fn a_timeline_switch_during_the_backup_names_files_on_the_new_timeline() {
        let switched = BackupWal {
            stop_timeline: TimelineId::new(2).unwrap(),
            ..wal("0/11000028", "0/12000100")
        };
        assert_eq!(
            needed_files(&switched, SegmentSize::DEFAULT, false),
            [
                "000000020000000000000011",
                "000000020000000000000012",
                "000000020000000000000011.00000028.backup"
            ]
        );
    }
}
