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

use std::io;
use std::path::Path;

use anyhow::anyhow;

use crate::cli::WalPushArgs;
use crate::compression::Compression;
use crate::postgres::pg_wal::{open_handed_over, HandOverError};
use crate::repo;
use crate::repo::archive_name::WalFileName;
use crate::repo::push::{PushError, Pushed, Source};
use crate::repo::store::posix::Posix;
use crate::repo::store::Writable;
use crate::repo::wal_compression::{self, EarlierCopies};
use crate::repo::ArchiveAt;

mod ahead;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONFLICT: u8 = 3;

fn exit_code(error: &PushError) -> u8 {
    match error {
        PushError::Usage(_) => EXIT_USAGE,
        PushError::Conflict(_) => EXIT_CONFLICT,
        PushError::Failed(_) => EXIT_FAILED,
    }
}

pub fn run(args: &WalPushArgs) -> u8 {
    match push(args) {
        Ok((_, Pushed::Archived(_) | Pushed::PushedAhead(_))) => 0,
        Ok((store, Pushed::AlreadyArchived(existing))) => {
            // Goes to the server log: worth a line, because it also shows
            // when two servers archive into the same place.
            eprintln!(
                "pitr wal-push: `{}` is already archived as `{}` with the same contents; nothing was written",
                args.path.display(),
                store.describe(&existing)
            );
            0
        }
        Err(error) => {
            eprintln!("pitr wal-push: error: {:#}", error.error());
            exit_code(&error)
        }
    }
}

/// Names PostgreSQL archives: segments, timeline and backup history files,
/// and the `.partial` segment left at the end of a timeline.
pub fn is_pushable(name: &str) -> bool {
    WalFileName::parse(name).is_some_and(|name| name.is_pushable())
}

pub fn push(args: &WalPushArgs) -> Result<(Writable, Pushed), PushError> {
    let archive_at =
        crate::repo::wal_archive_at(args.repo.repo.as_deref(), args.repo.wal_archive.as_deref())
            .map_err(PushError::Usage)?;
    let source = &args.path;
    let name = source
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(WalFileName::parse)
        .filter(|name| name.is_pushable())
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
    let push_ahead = push_ahead_count(args.push_ahead).map_err(PushError::Usage)?;
    let (archive, earlier) = open_archive(archive_at, compression)?;
    let how = How {
        compression,
        level: args.level,
        earlier,
    };
    let pushed = ahead::push_and_ahead(&archive, source, &name, how, push_ahead)?;
    Ok((archive, pushed))
}

/// `--push-ahead`, else the configuration file's `push_ahead`, else the
/// default.
fn push_ahead_count(given: Option<u16>) -> anyhow::Result<usize> {
    use crate::config::{Config, DEFAULT_PUSH_AHEAD, MAX_PUSH_AHEAD};
    let count = match given {
        Some(count) => count,
        None => Config::load()?.push_ahead.unwrap_or(DEFAULT_PUSH_AHEAD),
    };
    if count > MAX_PUSH_AHEAD {
        return Err(anyhow!(
            "`push_ahead = {count}` in the configuration file is too many: at most {MAX_PUSH_AHEAD}"
        ));
    }
    Ok(usize::from(count))
}

/// The archive to write, as `pitr init` found its store, and how a push
/// of a file in `compression` finds an earlier copy of its name there.
fn open_archive(
    archive_at: ArchiveAt,
    compression: Compression,
) -> Result<(Writable, EarlierCopies), PushError> {
    match archive_at {
        ArchiveAt::Dir(dir) => {
            let archive = Posix::new(&dir);
            // A missing archive directory is an error, not something to
            // create: it usually means an unmounted backup volume, and
            // archiving onto the root file system instead would hide that
            // until the disk fills up.
            if !archive.exists() {
                return Err(PushError::Failed(anyhow!(
                    "the WAL archive `{}` does not exist or is not a directory; create it (or mount its volume) and PostgreSQL will retry",
                    dir.display()
                )));
            }
            Ok((Writable::new(archive), EarlierCopies::ListedFirst))
        }
        ArchiveAt::Object(url) => {
            // Configuration problems (no region, no credentials) fail the
            // push: PostgreSQL keeps the segment and retries.
            let archive = crate::repo::open_object_storage(&url).map_err(PushError::Failed)?;
            // How `pitr init` found the store: one conditional PUT, or the
            // look-write-read-back fallback where conditional creates are
            // ignored.
            let enforced = crate::repo::capability::conditional_create_enforced(&archive)
                .map_err(PushError::Failed)?;
            if !enforced {
                let archive = Writable::new(archive.looking_before_writing());
                return Ok((archive, EarlierCopies::ListedFirst));
            }
            let archive = Writable::new(archive);
            let earlier =
                wal_compression::earlier_copies(&archive, compression).map_err(PushError::Usage)?;
            Ok((archive, earlier))
        }
    }
}

/// How archived copies are written, and how an earlier copy of a name is
/// found (see `repo::wal_compression`).
#[derive(Clone, Copy, Debug)]
pub struct How {
    pub compression: Compression,
    pub level: Option<i32>,
    pub earlier: EarlierCopies,
}

/// Archives `source` as `dir/<name><suffix>` (nothing pushed ahead).
pub fn push_file(
    source: &Path,
    name: &WalFileName,
    dir: &Path,
    compression: Compression,
    level: Option<i32>,
) -> Result<(Writable, Pushed), PushError> {
    // A directory holds whatever `cp` or another tool put there: a push
    // looks for the name's copies under every suffix first.
    let (archive, earlier) = open_archive(ArchiveAt::Dir(dir.to_path_buf()), compression)?;
    let how = How {
        compression,
        level,
        earlier,
    };
    let pushed = push_into(&archive, source, name, how)?;
    Ok((archive, pushed))
}

/// Archives `source` into `archive` as `<name><suffix>`.
fn push_into(
    archive: &Writable,
    source: &Path,
    name: &WalFileName,
    how: How,
) -> Result<Pushed, PushError> {
    let mut input = open_handed_over(source).map_err(|error| match error {
        HandOverError::NotAFile(_) => PushError::Usage(error.into()),
        HandOverError::Unreadable(error) => PushError::Failed(error),
    })?;
    repo::push::push(
        archive,
        Source {
            file: &mut input.file,
            path: source,
            mode: input.mode,
        },
        name,
        how.compression,
        how.level,
        how.earlier,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::push::archived_name;
    use crate::repo::store::{StoreRead, StoreWrite};
    use std::io::Read;

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

    /// A directory of the test's, through the posix driver: the file
    /// PostgreSQL hands over is written there, the archive read there.
    fn put(dir: &Posix, key: &str, data: &[u8]) {
        dir.write_stream(key, &mut |out| out.write_all(data))
            .unwrap();
    }

    fn read(dir: &Posix, key: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        dir.open(key).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn push_then_same_again_then_different() {
        let dir = tempfile::tempdir().unwrap();
        let top = Posix::new(dir.path());
        let archive_tmp = tempfile::tempdir_in(dir.path()).unwrap();
        let archive = archive_tmp.path().to_path_buf();
        let archive_dir = Posix::new(&archive);
        let source = dir.path().join("000000010000000000000003");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        put(&top, "000000010000000000000003", &data);
        let name = "000000010000000000000003";
        let wal_name = WalFileName::parse(name).unwrap();

        for compression in [
            Compression::Zstd,
            Compression::Lz4,
            Compression::Gzip,
            Compression::None,
        ] {
            let dir = tempfile::tempdir_in(dir.path()).unwrap();
            let (_, pushed) = push_file(&source, &wal_name, dir.path(), compression, None).unwrap();
            let Pushed::Archived(key) = pushed else {
                panic!("{compression:?}: {pushed:?}");
            };
            assert_eq!(key, archived_name(name, compression));
            let pushed_dir = Posix::new(dir.path());
            let mut back = Vec::new();
            let mut reader = compression.decoder(pushed_dir.open(&key).unwrap()).unwrap();
            io::Read::read_to_end(&mut reader, &mut back).unwrap();
            assert_eq!(back, data);
            // Hidden names are listed too: no temporary file is left.
            assert_eq!(pushed_dir.list("", None).unwrap().len(), 1);
        }

        let (_, first) = push_file(&source, &wal_name, &archive, Compression::Zstd, None).unwrap();
        assert!(matches!(first, Pushed::Archived(_)));
        let archived_key = format!("{name}.zst");
        let archived = archive.join(&archived_key);
        let stored = read(&archive_dir, &archived_key);
        // Again, even in another compression: the same contents are success.
        let (_, again) = push_file(&source, &wal_name, &archive, Compression::Gzip, None).unwrap();
        assert!(matches!(again, Pushed::AlreadyArchived(ref key) if archive.join(key) == archived));
        assert!(archive_dir.stat(&format!("{name}.gz")).unwrap().is_none());

        let mut other = data.clone();
        other[100] ^= 1;
        put(&top, "000000010000000000000003", &other);
        let error = push_file(&source, &wal_name, &archive, Compression::Zstd, None).unwrap_err();
        assert_eq!(exit_code(&error), EXIT_CONFLICT);
        let message = format!("{:#}", error.error());
        assert!(
            message.contains(&archived.display().to_string()),
            "{message}"
        );
        assert_eq!(
            read(&archive_dir, &archived_key),
            stored,
            "nothing overwritten"
        );
    }

    /// A segment of 64 KiB whose first page carries a long header naming
    /// the cluster `system_identifier`.
    fn segment_of(system_identifier: u64) -> Vec<u8> {
        crate::wal::page::test_segment(system_identifier, 0, 65536)
    }

    #[test]
    fn a_segment_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let top = Posix::new(dir.path());
        let archive_tmp = tempfile::tempdir_in(dir.path()).unwrap();
        let archive = archive_tmp.path().to_path_buf();
        let archive_dir = Posix::new(&archive);
        let push = |name: &str, system_identifier: u64| {
            put(&top, name, &segment_of(system_identifier));
            push_file(
                &dir.path().join(name),
                &WalFileName::parse(name).unwrap(),
                &archive,
                Compression::None,
                None,
            )
        };
        // The first segment records its cluster.
        push("000000010000000000000001", 7_000_000_000_000_000_001).unwrap();
        assert_eq!(
            crate::repo::identity::recorded(&archive_dir).unwrap(),
            Some(7_000_000_000_000_000_001)
        );
        push("000000010000000000000002", 7_000_000_000_000_000_001).unwrap();
        // Another cluster's segment, under a name the archive lacks.
        let error = push("000000010000000000000003", 7_000_000_000_000_000_002).unwrap_err();
        assert_eq!(exit_code(&error), EXIT_CONFLICT);
        let message = format!("{:#}", error.error());
        assert!(
            message.contains("7000000000000000001") && message.contains("7000000000000000002"),
            "{message}"
        );
        assert!(archive_dir
            .stat("000000010000000000000003")
            .unwrap()
            .is_none());
        // History files carry no header: they pass.
        put(
            &top,
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n",
        );
        push_file(
            &dir.path().join("00000002.history"),
            &WalFileName::parse("00000002.history").unwrap(),
            &archive,
            Compression::None,
            None,
        )
        .unwrap();
    }

    #[test]
    fn a_missing_archive_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let top = Posix::new(dir.path());
        let source = dir.path().join("00000002.history");
        put(
            &top,
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n",
        );
        let missing = dir.path().join("not-mounted");
        let error = push_file(
            &source,
            &WalFileName::parse("00000002.history").unwrap(),
            &missing,
            Compression::Zstd,
            None,
        )
        .unwrap_err();
        assert_eq!(exit_code(&error), EXIT_FAILED);
        assert!(
            top.list_prefixes("").unwrap().is_empty(),
            "no directory was created"
        );
    }
}
