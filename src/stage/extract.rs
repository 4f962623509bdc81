//! The extract step: the backup's files written into the staging
//! directory, read through the backups store: a tar backup's archives
//! streamed and unpacked, a plain backup's tree copied, or an incremental
//! backup's chain combined by pg_combinebackup.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::combine;
use super::parallel;
use super::tar_stream::{Member, TarStream};
use super::tree::{copy_tree, TreeSource};
use super::write::{interrupt_or, simulated_slow_staging, write_checked, FileWriter, Verify};
use super::StageRequest;
use crate::progress::{Progress, Reporter, Unit};
use crate::repo::backup::{Backup, BackupFile, BackupFormat};
use crate::repo::store::StoreRead;

/// Writes the plan's backup, read from the backups store, into `staging`
/// (which exists and is empty): the step that turns the repository's copy
/// into a data directory. Returns the bytes written.
pub fn extract_backup(
    request: &StageRequest<'_>,
    staging: &Path,
    verify: Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
    reporter: &Reporter,
) -> Result<u64> {
    let store = request.backups;
    let backup = &request.plan.backup;
    // An incremental backup: pg_combinebackup rebuilds the data directory.
    if let Some(combine) = request.combine {
        reporter.step(format!(
            "combining the chain of {} backups with pg_combinebackup",
            combine.chain.len()
        ));
        combine::combine(store, combine, staging, request.user, reporter)?;
        return Ok(local_tree_len(staging));
    }
    match backup.format {
        BackupFormat::Plain => {
            let mut progress = reporter.bar("staging", backup.stored_bytes, Unit::Bytes);
            let mut verify = verify;
            let written = copy_tree(
                TreeSource {
                    store,
                    prefix: &backup.prefix(),
                },
                staging,
                &mut progress,
                &mut verify,
                writer,
            )?;
            progress.finish();
            Ok(written)
        }
        BackupFormat::Tar(_) => {
            let base = backup
                .base_tar()
                .with_context(|| format!("backup `{}` has no base.tar", backup.id))?;
            let wal = backup.wal_tar();
            let total =
                stored_size(store, &base) + wal.as_ref().map_or(0, |w| stored_size(store, w));
            let mut progress = reporter.bar("staging", total, Unit::Bytes);
            let mut written = extract_archive(
                store,
                backup,
                &base,
                staging,
                &mut progress,
                verify,
                writer,
                request.workers,
                reporter,
            )?;
            if let Some(wal) = wal {
                let pg_wal = staging.join("pg_wal");
                fs::create_dir_all(&pg_wal)
                    .with_context(|| format!("cannot create `{}`", pg_wal.display()))?;
                written += extract_tar(store, &wal, &pg_wal, &mut progress, None, writer)?;
            }
            progress.finish();
            Ok(written)
        }
    }
}

/// The stored (compressed) size of a backup file, for a progress bar.
pub fn stored_size(store: &dyn StoreRead, file: &BackupFile) -> u64 {
    store
        .stat(&file.key)
        .ok()
        .flatten()
        .map_or(0, |object| object.size)
}

/// The bytes in a local tree (what pg_combinebackup wrote).
fn local_tree_len(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => local_tree_len(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Checks a tar member name and turns it into a relative path: no absolute
/// paths, no `..`, nothing that could land outside the staging directory.
pub fn safe_member_path(name: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing tar member `{}`: absolute path", name.display())
            }
            Component::ParentDir => {
                bail!("refusing tar member `{}`: it contains `..`", name.display())
            }
        }
    }
    Ok(clean)
}

/// Writes a tar of the backup (`base.tar[...]`, `<oid>.tar[...]`) into
/// `dest`: by several workers from its frames when it is seekable and its
/// index can be used, else as one stream.
#[allow(clippy::too_many_arguments)] // the streaming path's, plus which backup, the workers and who reports
pub fn extract_archive(
    store: &dyn StoreRead,
    backup: &Backup,
    file: &BackupFile,
    dest: &Path,
    progress: &mut Progress,
    verify: Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
    workers: usize,
    reporter: &Reporter,
) -> Result<u64> {
    let Some(index) = parallel::usable_index(store, backup, file, reporter) else {
        return extract_tar(store, file, dest, progress, verify, writer);
    };
    reporter.detail(format!(
        "{} is seekable: {} members staged by {workers} workers",
        file.key,
        index.members.len()
    ));
    parallel::extract_seekable(
        store,
        file,
        &index,
        dest,
        progress,
        verify,
        workers,
        &mut writer.sparse,
    )
}

/// Streams a (compressed) tar object of the backups store into `dest`,
/// refusing hostile members. The object is read as one stream (a store may
/// fetch it in parallel ranges underneath) and decompressed on a second
/// thread while this one writes.
pub fn extract_tar(
    store: &dyn StoreRead,
    file: &BackupFile,
    dest: &Path,
    progress: &mut Progress,
    mut verify: Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let mut tar = TarStream::open(store, file)?;
    let mut members = tar.members(Some(progress))?;
    // Messages name the object as the store does (a path on posix).
    let path = members.described();
    let mut written = 0;
    while let Some(Member {
        mut entry,
        name,
        relative,
    }) = members.next_member()?
    {
        simulated_slow_staging();
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // pg_basebackup writes tablespace links as symlinks in
            // pg_tblspc/; the server recreates them from tablespace_map.
            if relative.starts_with("pg_tblspc") {
                continue;
            }
            bail!(
                "refusing tar member `{}` in `{}`: a symbolic link outside pg_tblspc/",
                name.display(),
                path.display()
            );
        }
        if kind.is_hard_link() {
            let link = entry.link_name().ok().flatten().with_context(|| {
                format!("`{}` has a hard link without a target", path.display())
            })?;
            let source = dest.join(safe_member_path(&link).with_context(|| {
                format!("in `{}`: hard link `{}`", path.display(), name.display())
            })?);
            fs::hard_link(&source, &target)
                .with_context(|| format!("cannot create hard link `{}`", target.display()))?;
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "refusing tar member `{}` in `{}`: not a file or directory",
                name.display(),
                path.display()
            );
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        let mode = entry.header().mode().unwrap_or(0o600);
        if kind.is_dir() {
            match fs::DirBuilder::new().mode(mode & 0o7777).create(&target) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(error) => return Err(interrupt_or(error, &target)),
            }
            continue;
        }
        if writer.sparse.covers(&relative) {
            // Not written, but read past: the next member follows in the
            // same stream, and a compressed stream cannot be skipped
            // without decompressing it (a zstd stream is one frame whose
            // blocks carry no member boundaries; gzip, lz4 and xz the
            // same). Only the seekable form (`pitr backup --seekable`,
            // [`super::parallel`]) leaves these members' frames unread.
            writer
                .sparse
                .write(&target, &relative, mode, entry.size(), &mut verify)?;
            continue;
        }
        written += write_checked(&mut entry, &target, &relative, mode, &mut verify, writer)?;
    }
    members.finish();
    Ok(written)
}
