//! The repository's identity: the PostgreSQL cluster (its system
//! identifier) whose WAL the archive holds. Two clusters archiving into one
//! place overwrite or interleave each other's segments under the same names,
//! a known way to lose WAL with other tools; `wal-push` refuses a segment
//! whose long page header (`xlp_sysid`) names another cluster.
//!
//! The identity is the object [`IDENTITY_KEY`] in the WAL archive (beside
//! the segments, so that `wal-push`, which only knows the archive, reaches
//! it), written once with a conditional create and never replaced: by
//! `pitr init --pgdata` from the cluster's `global/pg_control`, else by the
//! first segment pushed. A repository without it (made before this) gets it
//! from its next push.
//!
//! On object storage the identity is remembered in the user's cache
//! directory once read (see [`Remembered`]), so a push costs no request to
//! learn it; a local archive is simply read each time.

use std::io::Read;

use super::remembered::Remembered;
use super::store::{Created, NewObject, StoreRead, Writable, WriteError};
use anyhow::{anyhow, Context, Result};

/// The identity object in the WAL archive. Hidden: no listing of segments
/// takes it for one.
pub const IDENTITY_KEY: &str = ".pitr-system-identifier";

/// What the identity object holds. The identifier is text: a u64 does not
/// survive JSON readers that use doubles.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    system_identifier: String,
}

/// The system identifier recorded in `archive`, if any.
pub fn recorded(archive: &dyn StoreRead) -> Result<Option<u64>> {
    if archive
        .stat(IDENTITY_KEY)
        .with_context(|| format!("cannot read `{}`", archive.describe(IDENTITY_KEY)))?
        .is_none()
    {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    archive
        .open(IDENTITY_KEY)
        .and_then(|mut reader| reader.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read `{}`", archive.describe(IDENTITY_KEY)))?;
    parse(&bytes)
        .map(Some)
        .with_context(|| format!("`{}` is damaged", archive.describe(IDENTITY_KEY)))
}

fn parse(bytes: &[u8]) -> Result<u64> {
    let stored: Stored = serde_json::from_slice(bytes)?;
    stored
        .system_identifier
        .parse()
        .map_err(|_| anyhow!("`{}` is no system identifier", stored.system_identifier))
}

/// Records `system_identifier` as the archive's cluster unless one is
/// recorded already; returns the one recorded afterwards (ours, or the one
/// that was there, possibly written by a concurrent first push).
pub fn claim(archive: &Writable, system_identifier: u64) -> Result<u64> {
    let bytes = serde_json::to_vec(&Stored {
        system_identifier: system_identifier.to_string(),
    })?;
    let (recorded, _) = claim_once(archive, IDENTITY_KEY, &bytes)?;
    parse(&recorded).with_context(|| format!("`{}` is damaged", archive.describe(IDENTITY_KEY)))
}

/// Writes `bytes` as the write-once record `key` unless the object exists;
/// returns what the record holds afterwards (ours, or what an earlier or
/// concurrent writer put there) and whether this call wrote it.
pub(crate) fn claim_once(archive: &Writable, key: &str, bytes: &[u8]) -> Result<(Vec<u8>, bool)> {
    let created = archive.create_new(
        key,
        // Readable by every user: root's `init` writes such records, the
        // server's user reads them on every push.
        &NewObject { mode: Some(0o644) },
        &mut |out| out.write_all(bytes),
    );
    match created {
        Ok(Created::Created) => Ok((bytes.to_vec(), true)),
        Ok(Created::AlreadyPresentSame) => Ok((bytes.to_vec(), false)),
        Ok(Created::PresentDifferent) => {
            let recorded = super::store::read_all(archive.read().as_ref(), key)
                .with_context(|| format!("cannot read `{}`", archive.describe(key)))?;
            Ok((recorded, false))
        }
        Err(WriteError::Write(error)) => {
            Err(anyhow::Error::new(error)
                .context(format!("cannot write `{}`", archive.describe(key))))
        }
        Err(WriteError::Other(error)) => Err(error),
    }
}

/// The identity as this host remembers it (object stores only: a local
/// archive is read directly).
pub fn remembered(archive: &dyn StoreRead) -> Option<u64> {
    parse(&Remembered::of(archive, "identity").get_bytes()?).ok()
}

/// Remembers `system_identifier` as `archive`'s identity; best effort: a
/// cache that cannot be written costs one read per push.
pub fn remember(archive: &dyn StoreRead, system_identifier: u64) {
    if let Ok(bytes) = serde_json::to_vec(&Stored {
        system_identifier: system_identifier.to_string(),
    }) {
        Remembered::of(archive, "identity").set_bytes(&bytes);
    }
}
