//! `pitr wal-push PATH`: the archive_command.
//!
//! PostgreSQL hands over a finished WAL file and deletes (or recycles) its
//! own copy once this exits 0, so 0 must mean "durably in the archive":
//! the file is compressed into a temporary file next to its final name,
//! synced, moved into place without ever replacing an existing file, and the
//! directory is synced.
//!
//! PostgreSQL archives a file again after a crash that came between the
//! archiving and its bookkeeping, and two servers (an old primary and a
//! promoted standby) may push the same name. So a name that is already in
//! the archive, in any compression, is compared with what is pushed:
//! identical contents are success without writing anything, different
//! contents are refused and the archived file is left as it is.
//!
//! Exit status: 0 archived or already there, 1 not archived (PostgreSQL
//! retries later), 2 bad usage, 3 different contents already archived.
//! None is above 125: those would make PostgreSQL restart the archiver
//! instead of retrying.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::cli::WalPushArgs;
use crate::compression::{same_contents, Compression};
use crate::repo::archive::{self, ArchivedFile};
use crate::repo::archive_name::WalFileName;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONFLICT: u8 = 3;

/// What happened to the pushed file.
#[derive(Debug)]
pub enum Pushed {
    /// Written to this path.
    Archived(PathBuf),
    /// The archive already had it, with the same contents, here.
    AlreadyArchived(PathBuf),
}

/// Why a push failed, which decides the exit status.
#[derive(Debug)]
pub enum PushError {
    Usage(anyhow::Error),
    Conflict(anyhow::Error),
    Failed(anyhow::Error),
}

impl PushError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PushError::Usage(_) => EXIT_USAGE,
            PushError::Conflict(_) => EXIT_CONFLICT,
            PushError::Failed(_) => EXIT_FAILED,
        }
    }

    fn error(&self) -> &anyhow::Error {
        match self {
            PushError::Usage(error) | PushError::Conflict(error) | PushError::Failed(error) => {
                error
            }
        }
    }
}

impl From<anyhow::Error> for PushError {
    fn from(error: anyhow::Error) -> PushError {
        PushError::Failed(error)
    }
}

pub fn run(args: &WalPushArgs) -> u8 {
    match push(args) {
        Ok(Pushed::Archived(_)) => 0,
        Ok(Pushed::AlreadyArchived(existing)) => {
            // Goes to the server log: worth a line, because it also shows
            // when two servers archive into the same place.
            eprintln!(
                "pitr wal-push: `{}` is already archived as `{}` with the same contents; nothing was written",
                args.path.display(),
                existing.display()
            );
            0
        }
        Err(error) => {
            eprintln!("pitr wal-push: error: {:#}", error.error());
            error.exit_code()
        }
    }
}

/// Names PostgreSQL archives: segments, timeline and backup history files,
/// and the `.partial` segment left at the end of a timeline.
pub fn is_pushable(name: &str) -> bool {
    WalFileName::parse(name).is_some_and(|name| name.is_pushable())
}

pub fn push(args: &WalPushArgs) -> Result<Pushed, PushError> {
    let dir =
        crate::repo::wal_archive_dir(args.repo.repo.as_deref(), args.repo.wal_archive.as_deref())
            .map_err(PushError::Usage)?;
    let source = &args.path;
    let name = source
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| is_pushable(name))
        .ok_or_else(|| {
            PushError::Usage(anyhow!(
                "`{}` is not a WAL file: its name must be a segment (24 hex digits), `NNNNNNNN.history`, `<segment>.<offset>.backup` or `<segment>.partial`",
                source.display()
            ))
        })?;
    let compression = args.compress.compression();
    // Checked before anything is read or written.
    compression
        .encoder(io::sink(), args.level)
        .map_err(|error| PushError::Usage(anyhow!("{error}")))?;
    push_file(source, name, &dir, compression, args.level)
}

/// Archives `source` as `dir/<name><suffix>`.
pub fn push_file(
    source: &Path,
    name: &str,
    dir: &Path,
    compression: Compression,
    level: Option<i32>,
) -> Result<Pushed, PushError> {
    // A missing archive directory is an error, not something to create: it
    // usually means an unmounted backup volume, and archiving onto the
    // root file system instead would hide that until the disk fills up.
    if !dir.is_dir() {
        return Err(PushError::Failed(anyhow!(
            "the WAL archive `{}` does not exist or is not a directory; create it (or mount its volume) and PostgreSQL will retry",
            dir.display()
        )));
    }
    let input =
        File::open(source).with_context(|| format!("cannot open `{}`", source.display()))?;
    let metadata = input
        .metadata()
        .with_context(|| format!("cannot read `{}`", source.display()))?;
    if !metadata.is_file() {
        return Err(PushError::Usage(anyhow!(
            "`{}` is not a regular file",
            source.display()
        )));
    }

    let existing = archive::copies_in(dir, name)?;
    if !existing.is_empty() {
        return already_archived(source, &existing, dir);
    }

    let final_path = dir.join(archived_name(name, compression));
    // A unique temporary name in the same directory, so the final rename
    // stays on one file system; the dot keeps it out of listings, and it is
    // removed if anything below fails. The source's mode is kept, as `cp`
    // does (0600, or 0640 for clusters with group access).
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".pitr-push")
        .permissions(metadata.permissions())
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    let writer = BufWriter::with_capacity(1 << 20, temp.as_file_mut());
    let mut encoder = compression
        .encoder(writer, level)
        .map_err(|error| PushError::Usage(anyhow!("{error}")))?;
    let mut reader = input;
    io::copy(&mut reader, &mut encoder)
        .and_then(|_| encoder.finish())
        .and_then(|writer| writer.into_inner().map_err(|error| error.into_error()))
        .map_err(|error| write_error(error, &final_path))?;
    temp.as_file()
        .sync_all()
        .map_err(|error| write_error(error, &final_path))?;

    // Never replaces a file: renameat2(RENAME_NOREPLACE), or link(2) where
    // the file system lacks it. Of two pushes of the same name at once,
    // exactly one gets here; the other compares with the winner's file.
    match temp.persist_noclobber(&final_path) {
        Ok(_) => {
            sync_dir(dir)?;
            Ok(Pushed::Archived(final_path))
        }
        Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
            drop(error.file);
            let existing = archive::copies_in(dir, name)?;
            already_archived(source, &existing, dir)
        }
        Err(error) => Err(PushError::Failed(anyhow::Error::new(error.error).context(
            format!(
                "cannot move the archived copy into place as `{}`",
                final_path.display()
            ),
        ))),
    }
}

/// `source` is already archived as `existing`: success if every copy holds
/// the same bytes, a conflict naming both files otherwise.
fn already_archived(
    source: &Path,
    existing: &[ArchivedFile],
    dir: &Path,
) -> Result<Pushed, PushError> {
    for copy in existing {
        let mut archived = copy
            .compression
            .open(&copy.path)
            .with_context(|| format!("cannot open `{}`", copy.path.display()))?;
        let mut pushed =
            File::open(source).with_context(|| format!("cannot open `{}`", source.display()))?;
        let same = same_contents(&mut archived, &mut pushed).with_context(|| {
            format!(
                "cannot compare `{}` with the archived `{}` (a damaged earlier copy? check it and move it away)",
                source.display(),
                copy.path.display()
            )
        })?;
        if !same {
            return Err(PushError::Conflict(anyhow!(
                "`{}` differs from `{}`, already in the archive under the same name; nothing was overwritten: find out which server wrote the archived file (two clusters archiving into one place?) before moving it away",
                source.display(),
                copy.path.display()
            )));
        }
    }
    // The copy may have been written without fsync (by `cp`, or by a push
    // that crashed before syncing the directory): make it durable before
    // PostgreSQL forgets its own copy.
    for copy in existing {
        File::open(&copy.path)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot sync `{}`", copy.path.display()))?;
    }
    sync_dir(dir)?;
    Ok(Pushed::AlreadyArchived(existing[0].path.clone()))
}

fn sync_dir(dir: &Path) -> Result<(), PushError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot sync the directory `{}`", dir.display()))
        .map_err(PushError::Failed)
}

fn write_error(error: io::Error, path: &Path) -> PushError {
    let what = if error.raw_os_error() == Some(nix::libc::ENOSPC) {
        format!(
            "the file system of `{}` is full; free space there and PostgreSQL will retry",
            path.display()
        )
    } else {
        format!("cannot write `{}`", path.display())
    };
    PushError::Failed(anyhow::Error::new(error).context(what))
}

/// The name of the archived copy of `name`.
pub fn archived_name(name: &str, compression: Compression) -> String {
    format!("{name}{}", compression.suffix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    #[test]
    fn only_wal_file_names_are_pushed() {
        assert!(is_pushable("000000010000000000000003"));
        assert!(is_pushable("00000002.history"));
        assert!(is_pushable("000000010000000000000003.00000028.backup"));
        assert!(is_pushable("000000010000000000000003.partial"));
        assert!(!is_pushable("000000010000000000000003.gz"));
        assert!(!is_pushable("RECOVERYXLOG"));
        assert!(!is_pushable("postgresql.conf"));
        assert!(!is_pushable(""));
        assert_eq!(
            archived_name("00000002.history", Compression::Zstd),
            "00000002.history.zst"
        );
    }

    fn write(path: &Path, data: &[u8]) {
        File::create(path).unwrap().write_all(data).unwrap();
    }

    #[test]
    fn push_then_same_again_then_different() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("wal");
        fs::create_dir(&archive).unwrap();
        let source = dir.path().join("000000010000000000000003");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        write(&source, &data);
        let name = "000000010000000000000003";

        for compression in [
            Compression::Zstd,
            Compression::Lz4,
            Compression::Gzip,
            Compression::None,
        ] {
            let dir = tempfile::tempdir_in(dir.path()).unwrap();
            let pushed = push_file(&source, name, dir.path(), compression, None).unwrap();
            let Pushed::Archived(path) = pushed else {
                panic!("{compression:?}: {pushed:?}");
            };
            assert_eq!(path, dir.path().join(archived_name(name, compression)));
            let mut back = Vec::new();
            io::Read::read_to_end(&mut compression.open(&path).unwrap(), &mut back).unwrap();
            assert_eq!(back, data);
            let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(files.len(), 1, "no temporary file is left");
        }

        let first = push_file(&source, name, &archive, Compression::Zstd, None).unwrap();
        assert!(matches!(first, Pushed::Archived(_)));
        let archived = archive.join(format!("{name}.zst"));
        let stored = fs::read(&archived).unwrap();
        // Again, even in another compression: the same contents are success.
        let again = push_file(&source, name, &archive, Compression::Gzip, None).unwrap();
        assert!(matches!(again, Pushed::AlreadyArchived(ref p) if *p == archived));
        assert!(!archive.join(format!("{name}.gz")).exists());

        let mut other = data.clone();
        other[100] ^= 1;
        write(&source, &other);
        let error = push_file(&source, name, &archive, Compression::Zstd, None).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_CONFLICT);
        let message = format!("{:#}", error.error());
        assert!(
            message.contains(&archived.display().to_string()),
            "{message}"
        );
        assert_eq!(fs::read(&archived).unwrap(), stored, "nothing overwritten");
    }

    #[test]
    fn a_missing_archive_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("00000002.history");
        write(&source, b"1\t0/3000000\tno recovery target specified\n");
        let missing = dir.path().join("not-mounted");
        let error = push_file(
            &source,
            "00000002.history",
            &missing,
            Compression::Zstd,
            None,
        )
        .unwrap_err();
        assert_eq!(error.exit_code(), EXIT_FAILED);
        assert!(!missing.exists());
    }
}
