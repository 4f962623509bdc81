//! `pitr restore --delta`: a stopped data directory (the damaged primary,
//! or an older copy) brought to the backup's contents in place, writing
//! only what differs, in the manner of pgBackRest's `--delta` and
//! pg_probackup's incremental restore.
//!
//! [`stage_delta`] is the list of steps. `guard` makes it safe (refusals,
//! the in-progress marker, pg_control removed first and written last),
//! `stream` and `seekable` compare and patch files from a tar read as a
//! stream or through its index, `clean` removes what the backup does not
//! hold, `preview` is the plan's forecast from sizes, `file` the
//! per-file mechanics and counts, `ahead` keeps the disk reading the
//! existing files ahead of the comparison.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::write::{FileWriter, Verify};
use super::{durable, ownership, parallel, StageRequest, Staged};
use crate::interrupt;
use crate::postgres::configure::prepare_data_directory;
use crate::progress::{Reporter, Unit};
use crate::repo::backup::{Backup, BackupFile, BackupFormat};
use crate::repo::store::StoreRead;
use crate::repo::tablespace::{render_tablespace_map, TablespaceSource};
use crate::stage::extract::stored_size;
use crate::stage::Interrupted;

mod ahead;
mod clean;
mod file;
pub mod guard;
pub mod preview;
mod seekable;
mod stream;

pub use clean::Seen;
pub use file::DeltaStats;
pub use guard::{check_delta_tablespace, check_delta_target, refuse_unfinished};
pub use preview::{preview, DeltaPreview};

/// The backup's pg_control (its bytes and mode), held to be written last.
pub type Held = Option<(Vec<u8>, u32)>;

/// The path of a file in `backup_manifest`.
fn manifest_path(verify: &Verify<'_>, relative: &Path) -> String {
    format!("{}{}", verify.prefix, relative.to_string_lossy())
}

/// Rewrites `--pgdata` (and the tablespaces' locations) in place to the
/// backup's contents, then configures it for recovery as a full restore
/// does. Checked before: [`check_delta_target`], no live server.
pub fn stage_delta(request: &StageRequest<'_>, reporter: &Reporter) -> Result<Staged> {
    let pgdata = request.pgdata;
    let backup = &request.plan.backup;
    let base = delta_source(backup)?;
    let mut notes = Vec::new();
    // The manifest is read before anything changes: a damaged one leaves
    // the directory as it was.
    let mut check = super::manifest_check(request, &mut notes)?;
    // Checked before, and again now: a server may have been started there
    // since.
    if let Some(server) = crate::postgres::live::server_in_or_around(pgdata, 2) {
        bail!(
            "`{}` is in use now: {}; nothing was changed",
            pgdata.display(),
            server.describe()
        );
    }
    // 1. Nothing changes before the directory is marked and unstartable.
    guard::begin(
        pgdata,
        &guard::Marker {
            backup: backup.id.clone(),
            system_identifier: backup.system_identifier,
        },
        request.user,
    )?;
    let mut writer = FileWriter::default();
    let mut stats = DeltaStats::default();
    let mut seen = Seen::new();
    seen.insert(pgdata.join(guard::MARKER));
    let mut control: Held = None;
    // 2. The backup's files, compared with what is there.
    {
        let mut verify = check.as_mut().map(|check| Verify {
            check,
            prefix: String::new(),
        });
        delta_archive(
            request,
            &base,
            pgdata,
            verify.as_mut(),
            Some(&mut control),
            &mut seen,
            &mut stats,
            &mut writer,
            reporter,
        )?;
    }
    if let Some(wal) = backup.wal_tar() {
        let pg_wal = pgdata.join("pg_wal");
        file::ensure_dir(&pg_wal, 0o700, Path::new("pg_wal"))?;
        seen.insert(pg_wal.clone());
        let mut progress = reporter.bar("delta", stored_size(request.backups, &wal), Unit::Bytes);
        stream::delta_tar(
            request.backups,
            &wal,
            &pg_wal,
            &mut progress,
            None,
            None,
            &mut seen,
            &mut stats,
            &mut writer,
        )?;
        progress.finish();
    }
    // 3. The tablespaces, at their (mapped) locations.
    let mut locations = Vec::new();
    for placement in request.placements {
        let TablespaceSource::Tar { key, compression } = &placement.source else {
            bail!(
                "--delta reads tar backups; tablespace {} of this backup is a plain directory",
                placement.oid
            );
        };
        let destination = &placement.destination;
        file::ensure_dir(destination, 0o700, Path::new(""))?;
        let mut tablespace_seen = Seen::new();
        let mut verify = check.as_mut().map(|check| Verify {
            check,
            prefix: format!("pg_tblspc/{}/", placement.oid),
        });
        delta_archive(
            request,
            &BackupFile {
                key: key.clone(),
                compression: *compression,
            },
            destination,
            verify.as_mut(),
            None,
            &mut tablespace_seen,
            &mut stats,
            &mut writer,
            reporter,
        )?;
        clean::remove_unlisted(destination, &tablespace_seen, &mut stats)?;
        seen.insert(pgdata.join("pg_tblspc").join(placement.oid.to_string()));
        locations.push((placement.oid, destination.clone()));
    }
    if !locations.is_empty() {
        let map = pgdata.join("tablespace_map");
        super::write::write_file(&map, render_tablespace_map(&locations).as_bytes())?;
        seen.insert(map);
    }
    super::refuse_missing_files(check.as_ref())?;
    let Some((control, _mode)) = control else {
        bail!("backup `{}` holds no global/pg_control", backup.id);
    };
    seen.insert(guard::control_path(pgdata));
    // 4. What the backup does not hold.
    clean::remove_unlisted(pgdata, &seen, &mut stats)?;
    // 5. Configured and owned as a full restore.
    prepare_data_directory(pgdata, request.plan, request.settings, &mut notes)?;
    ownership::give_data_directory(pgdata, request.user)?;
    for (_, location) in &locations {
        ownership::give_tree(location, request.user)?;
    }
    if interrupt::requested() {
        bail!(Interrupted);
    }
    // 6. Durable, then pg_control last.
    let syncing = std::time::Instant::now();
    durable::sync_filesystem(pgdata)?;
    // A pg_wal linked elsewhere (initdb -X) may be on another filesystem.
    let pg_wal = pgdata.join("pg_wal");
    if pg_wal.is_symlink() {
        durable::sync_filesystem(&pg_wal)?;
    }
    for (_, location) in &locations {
        durable::sync_filesystem(location)?;
    }
    reporter.detail(format!(
        "flushed to disk in {:.1}s",
        syncing.elapsed().as_secs_f64()
    ));
    guard::finish(pgdata, &control, request.user)?;
    Ok(Staged {
        pgdata: pgdata.to_path_buf(),
        moved_aside: None,
        bytes_written: stats.bytes_written,
        notes,
        delta: Some(stats),
        // `--only-database` (extract's scratch copies) never comes with
        // `--delta`: the command line refuses the pair.
        sparse_files: 0,
        sparse_bytes: 0,
    })
}

/// The base tar a delta restore reads: tar backups only (a plain backup or
/// an incremental chain is restored in full).
fn delta_source(backup: &Backup) -> Result<BackupFile> {
    if backup.label.incremental_from.is_some() {
        bail!("--delta cannot restore an incremental backup (pg_combinebackup writes a new directory); restore without --delta");
    }
    match backup.format {
        BackupFormat::Tar(_) => backup
            .base_tar()
            .with_context(|| format!("backup `{}` has no base.tar", backup.id)),
        BackupFormat::Plain => bail!(
            "--delta reads tar backups, and backup `{}` is in plain format; restore without --delta",
            backup.id
        ),
    }
}

/// One tar of the backup into `root`: through its index by the workers
/// when it is seekable, else as a stream.
#[allow(clippy::too_many_arguments)] // what the delta holds and counts, and who reports
fn delta_archive(
    request: &StageRequest<'_>,
    file: &BackupFile,
    root: &Path,
    verify: Option<&mut Verify<'_>>,
    control: Option<&mut Held>,
    seen: &mut Seen,
    stats: &mut DeltaStats,
    writer: &mut FileWriter,
    reporter: &Reporter,
) -> Result<()> {
    let store: &dyn StoreRead = request.backups;
    let backup = &request.plan.backup;
    let index = parallel::usable_index(store, backup, file, reporter).filter(seekable::pages_align);
    let mut progress = match &index {
        Some(index) => reporter.bar(
            "delta",
            index.members.iter().map(|m| m.size).sum(),
            Unit::Bytes,
        ),
        None => reporter.bar("delta", stored_size(store, file), Unit::Bytes),
    };
    match index {
        Some(index) => {
            reporter.detail(format!(
                "{} is seekable: {} members compared by {} workers",
                file.key,
                index.members.len(),
                request.workers
            ));
            seekable::delta_seekable(
                store,
                file,
                &index,
                root,
                &mut progress,
                verify,
                control,
                seen,
                stats,
                request.workers,
            )?;
        }
        None => stream::delta_tar(
            store,
            file,
            root,
            &mut progress,
            verify,
            control,
            seen,
            stats,
            writer,
        )?,
    }
    progress.finish();
    Ok(())
}

/// Where a tablespace's files are (for the preview).
pub fn tablespace_root(
    placements: &[crate::stage::tablespaces::Placement],
    oid: u32,
) -> Option<PathBuf> {
    placements
        .iter()
        .find(|p| p.oid == oid)
        .map(|p| p.destination.clone())
}
