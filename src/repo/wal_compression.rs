//! The one compression of a WAL archive in object storage, which is what
//! lets `wal-push` archive a segment with a single conditional PUT.
//!
//! A segment may be archived under any compression suffix (`X`, `X.zst`,
//! `X.gz`, …). A conditional create (`If-None-Match: *`) refuses a second
//! copy under the *same* key only, so while pushes may choose different
//! compressions, each push has to list the name's copies first (one LIST)
//! to find a copy under another suffix — two servers that diverged would
//! otherwise both be told "archived", with different bytes under two keys.
//!
//! An archive in object storage therefore holds one compression, recorded
//! by the first push as the object [`COMPRESSION_KEY`] (written once with
//! a conditional create, never replaced). Every later push with that
//! compression is one conditional PUT: a copy of the name can only exist
//! under the same key, where the store itself refuses to replace it. A push
//! asking for another compression is refused before anything is written
//! (PostgreSQL keeps the segment and retries): otherwise its copy and a
//! concurrent push's could both be created. The first push, which records
//! the compression, still lists, as every push did before the record.
//!
//! Local archives are not concerned: a directory holds whatever `cp` or
//! another tool put there, and looking costs a few `stat`s, not requests.
//! Neither are stores that ignore conditional creates: their fallback
//! looks before writing anyway.

use anyhow::{anyhow, Context, Result};

use super::identity::claim_once;
use super::remembered::Remembered;
use super::store::Writable;
use crate::compression::Compression;

/// The record in the WAL archive. Hidden: no listing of segments takes it
/// for one.
pub const COMPRESSION_KEY: &str = ".pitr-wal-compression";

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    /// [`Compression::name`].
    compression: String,
}

/// How a push of a file in `compression` finds an earlier copy of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlierCopies {
    /// The archive holds one compression, this one: an earlier copy can
    /// only be under the same key, and the conditional create finds it.
    FoundByTheCreate,
    /// List the name's copies under every suffix before writing.
    ListedFirst,
}

/// For a push into an object archive whose store enforces conditional
/// creates: checks `compression` against the archive's recorded one
/// (recording it if none is), and says how earlier copies are found.
/// Another compression than the recorded one is an error that names both.
pub fn earlier_copies(archive: &Writable, compression: Compression) -> Result<EarlierCopies> {
    let remembered = Remembered::of(archive.read().as_ref(), "wal-compression");
    if remembered.get_bytes().as_deref() == Some(compression.name().as_bytes()) {
        return Ok(EarlierCopies::FoundByTheCreate);
    }
    let ours = serde_json::to_vec(&Stored {
        compression: compression.name().to_string(),
    })?;
    let (recorded, written_now) = claim_once(archive, COMPRESSION_KEY, &ours)?;
    let recorded: Stored = serde_json::from_slice(&recorded)
        .with_context(|| format!("`{}` is damaged", archive.describe(COMPRESSION_KEY)))?;
    if recorded.compression != compression.name() {
        return Err(anyhow!(
            "the WAL archive `{}` holds WAL compressed with {} (recorded in `{}`), and this push asks for {}; nothing was archived: an archive in object storage keeps one compression, so that a segment costs one conditional PUT and two copies of one name cannot both be created. Give archive_command `--compress {}`, or start a new repository (`pitr init`) for the other compression",
            archive.describe(""),
            recorded.compression,
            archive.describe(COMPRESSION_KEY),
            compression.name(),
            recorded.compression,
        ));
    }
    remembered.set_bytes(compression.name().as_bytes());
    // The push that records the compression looks first: copies made
    // before the record existed could be under any suffix.
    Ok(if written_now {
        EarlierCopies::ListedFirst
    } else {
        EarlierCopies::FoundByTheCreate
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::store::posix::Posix;

    #[test]
    fn the_first_push_records_the_compression_and_lists_later_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Writable::new(Posix::new(dir.path()));
        assert_eq!(
            earlier_copies(&archive, Compression::Zstd).unwrap(),
            EarlierCopies::ListedFirst
        );
        assert_eq!(
            earlier_copies(&archive, Compression::Zstd).unwrap(),
            EarlierCopies::FoundByTheCreate
        );
        let refused = earlier_copies(&archive, Compression::Gzip).unwrap_err();
        let message = format!("{refused:#}");
        assert!(
            message.contains("compressed with zstd") && message.contains("asks for gzip"),
            "{message}"
        );
    }
}
