//! What `pitr init` learned about an object store: whether it enforces
//! conditional creates (`If-None-Match: *`). `wal-push` reads it to choose
//! how a segment is stored: one conditional PUT where the store refuses to
//! replace an object, else the fallback that looks, writes and reads back
//! (see `store::object`), which narrows the window in which two writers of
//! one name can replace each other's object but cannot close it.
//!
//! The record is the object [`CAPABILITY_KEY`] in the WAL archive (what
//! `wal-push` reaches), written by every `pitr init` (so running it again
//! after moving to another store records the new answer). A repository
//! without one (made before the record existed) is taken to enforce
//! conditional creates, as pitr assumed then; `pitr init` records it.
//! Once read it is remembered in the user's cache directory for
//! [`REMEMBERED_FOR`](super::remembered::REMEMBERED_FOR), so a push costs no
//! request to learn it, and a new record (`pitr init` run again after the
//! store behind the URL changed) reaches every host within that time.

use anyhow::{Context, Result};

use super::remembered::Remembered;
use super::store::{StoreRead, Writable, WriteError};

/// The record in the WAL archive. Hidden: no listing of segments takes it
/// for one.
pub const CAPABILITY_KEY: &str = ".pitr-store.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    /// Whether the store refused to replace an object on a conditional
    /// create when `pitr init` probed it.
    conditional_create_enforced: bool,
}

/// Writes what the probe found (replacing an earlier record).
pub fn record(archive: &Writable, conditional_create_enforced: bool) -> Result<()> {
    let bytes = serde_json::to_vec(&Record {
        conditional_create_enforced,
    })?;
    archive
        .write_stream(CAPABILITY_KEY, &mut |out| out.write_all(&bytes))
        .map(drop)
        .map_err(|error| match error {
            WriteError::Write(error) => anyhow::Error::new(error),
            WriteError::Other(error) => error,
        })
        .with_context(|| format!("cannot write `{}`", archive.describe(CAPABILITY_KEY)))?;
    // This host knows the new answer at once; others within REMEMBERED_FOR.
    Remembered::of(archive.read().as_ref(), "store").set_bytes(&bytes);
    Ok(())
}

/// Whether `archive`'s store enforces conditional creates, as recorded
/// (remembered locally once read); `true` when nothing is recorded.
pub fn conditional_create_enforced(archive: &dyn StoreRead) -> Result<bool> {
    let remembered = Remembered::of(archive, "store");
    if let Some(record) = remembered
        .get_bytes()
        .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
    {
        return Ok(record.conditional_create_enforced);
    }
    let bytes = match super::store::read_all(archive, CAPABILITY_KEY) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot read `{}`",
                archive.describe(CAPABILITY_KEY)
            )))
        }
    };
    let record: Record = serde_json::from_slice(&bytes)
        .with_context(|| format!("`{}` is damaged", archive.describe(CAPABILITY_KEY)))?;
    remembered.set_bytes(&bytes);
    Ok(record.conditional_create_enforced)
}
