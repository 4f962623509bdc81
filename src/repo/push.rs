//! Adding a file to the WAL archive: the archive's one writer, over the
//! store's write role.
//!
//! PostgreSQL forgets its own copy once `archive_command` succeeds, so
//! success must mean "durably in the archive". The store creates the object
//! without ever replacing one (on posix: temporary file, fsync, no-clobber
//! rename, directory fsync; on object stores: `If-None-Match: *`).
//!
//! PostgreSQL archives a file again after a crash that came between the
//! archiving and its bookkeeping, and two servers (an old primary and a
//! promoted standby) may push the same name. So a name that is already in
//! the archive, in any compression, is compared with what is pushed, once
//! decompressed: identical contents are success without writing anything,
//! different contents are refused and the archived file is left as it is.
//! Where the archive holds one compression in a store that enforces
//! conditional creates, the create itself finds the earlier copy: one PUT
//! per segment (see `wal_compression`); elsewhere the copies are listed
//! first.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;

use anyhow::{anyhow, Context};

use super::archive::{copies_in, ArchivedFile};
use super::archive_name::WalFileName;
use super::identity;
use super::store::{Created, NewObject, Writable, WriteError};
use super::wal_compression::EarlierCopies;
use crate::compression::{same_contents, Compression};

/// What happened to the pushed file.
#[derive(Debug)]
pub enum Pushed {
    /// Written under this key.
    Archived(String),
    /// The archive already had it, with the same contents, under this key.
    AlreadyArchived(String),
    /// An earlier `wal-push` stored it under this key while pushing ahead,
    /// and its local record proves these are the bytes it stored.
    PushedAhead(String),
}

/// Why a push failed, which decides `wal-push`'s exit status.
#[derive(Debug)]
pub enum PushError {
    Usage(anyhow::Error),
    Conflict(anyhow::Error),
    Failed(anyhow::Error),
}

impl PushError {
    pub fn error(&self) -> &anyhow::Error {
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

/// A local file to archive: PostgreSQL's `%p`, opened by the caller.
pub struct Source<'a> {
    pub file: &'a mut File,
    /// For messages.
    pub path: &'a Path,
    /// Kept on the archived copy where the store has modes, as `cp` does
    /// (0600, or 0640 for clusters with group access).
    pub mode: u32,
}

/// Archives `source` as `<name><suffix>` in `archive`, finding an earlier
/// copy of the name as `earlier` says (see `wal_compression`).
pub fn push(
    archive: &Writable,
    source: Source,
    name: &WalFileName,
    compression: Compression,
    level: Option<i32>,
    earlier: EarlierCopies,
) -> Result<Pushed, PushError> {
    check_cluster(archive, &source, name)?;
    let name = name.to_string();
    if earlier == EarlierCopies::ListedFirst {
        let existing = copies_in(archive.read(), &name)?;
        if !existing.is_empty() {
            return already_archived(archive, source, &existing);
        }
    }
    let key = archived_name(&name, compression);
    let created = {
        let file = &mut *source.file;
        let mut fill = |writer: &mut dyn Write| -> io::Result<()> {
            file.rewind()?;
            let mut encoder = compression.encoder(writer, level)?;
            io::copy(file, &mut encoder)?;
            encoder.finish().map(drop)
        };
        archive.create_new(
            &key,
            &NewObject {
                mode: Some(source.mode),
            },
            &mut fill,
        )
    };
    match created {
        Ok(Created::Created) => Ok(Pushed::Archived(key)),
        // Of two pushes of the same name at once, exactly one creates it;
        // the other compares with the winner's copies, in any compression.
        Ok(Created::AlreadyPresentSame | Created::PresentDifferent) => {
            let existing = copies_in(archive.read(), &name)?;
            already_archived(archive, source, &existing)
        }
        Err(WriteError::Write(error)) => Err(write_error(error, &archive.describe(&key))),
        Err(WriteError::Other(error)) => Err(PushError::Failed(error)),
    }
}

/// Refuses a segment written by another cluster than the archive's (its
/// first page's long header names the cluster); the first segment pushed
/// into an archive without an identity records its own. History files carry
/// no header, and a file without a valid one cannot tell: both pass.
fn check_cluster(archive: &Writable, source: &Source, name: &WalFileName) -> Result<(), PushError> {
    use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};
    use std::os::unix::fs::FileExt;
    if !matches!(name, WalFileName::Segment(_) | WalFileName::Partial(_)) {
        return Ok(());
    }
    let mut header = [0u8; LONG_HEADER_LEN];
    if source.file.read_exact_at(&mut header, 0).is_err() {
        return Ok(());
    }
    let Some(header) = LongPageHeader::parse(&header) else {
        return Ok(());
    };
    let ours = header.system_identifier;
    // What is remembered is trusted when it agrees; a disagreement is read
    // again from the archive (a repository deleted and made anew under the
    // same URL leaves a stale memory) before anything is refused.
    let recorded = match identity::remembered(archive.read().as_ref()) {
        Some(recorded) if recorded == ours => recorded,
        _ => {
            let recorded = match identity::recorded(archive.read().as_ref())? {
                Some(recorded) => recorded,
                None => identity::claim(archive, ours)?,
            };
            identity::remember(archive.read().as_ref(), recorded);
            recorded
        }
    };
    if recorded != ours {
        return Err(PushError::Conflict(anyhow!(
            "`{}` comes from the PostgreSQL cluster with system identifier {ours}, but the archive `{}` holds the WAL of the cluster with system identifier {recorded} (recorded in `{}`); nothing was archived: give each cluster a repository of its own (`pitr init --repo …`) and point this cluster's archive_command there",
            source.path.display(),
            archive.describe(""),
            archive.describe(identity::IDENTITY_KEY)
        )));
    }
    Ok(())
}

/// `source` is already archived as `existing`: success if every copy holds
/// the same bytes, a conflict naming both files otherwise.
fn already_archived(
    archive: &Writable,
    source: Source,
    existing: &[ArchivedFile],
) -> Result<Pushed, PushError> {
    for copy in existing {
        let mut archived = copy
            .open()
            .with_context(|| format!("cannot open `{}`", copy.describe()))?;
        source
            .file
            .rewind()
            .with_context(|| format!("cannot open `{}`", source.path.display()))?;
        let same = same_contents(&mut archived, source.file).with_context(|| {
            format!(
                "cannot compare `{}` with the archived `{}` (a damaged earlier copy? check it and move it away)",
                source.path.display(),
                copy.describe()
            )
        })?;
        if !same {
            return Err(PushError::Conflict(anyhow!(
                "`{}` differs from `{}`, already in the archive under the same name; nothing was overwritten: find out which server wrote the archived file (two clusters archiving into one place?) before moving it away",
                source.path.display(),
                copy.describe()
            )));
        }
    }
    // The copy may have been written without fsync (by `cp`, or by a push
    // that crashed before syncing the directory): make it durable before
    // PostgreSQL forgets its own copy.
    let keys: Vec<&str> = existing.iter().map(|copy| copy.key.as_str()).collect();
    archive
        .sync(&keys)
        .map_err(|error| PushError::Failed(anyhow!(error)))?;
    Ok(Pushed::AlreadyArchived(existing[0].key.clone()))
}

fn write_error(error: io::Error, described: &str) -> PushError {
    let what = if error.raw_os_error() == Some(nix::libc::ENOSPC) {
        format!(
            "the file system of `{described}` is full; free space there and PostgreSQL will retry"
        )
    } else {
        format!("cannot write `{described}`")
    };
    PushError::Failed(anyhow::Error::new(error).context(what))
}

/// The name of the archived copy of `name`.
pub fn archived_name(name: &str, compression: Compression) -> String {
    format!("{name}{}", compression.suffix())
}
