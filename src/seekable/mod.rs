//! Seekable backups (issue 16): a tar re-encoded as independent zstd
//! frames, with an index that says where each member's bytes are.
//!
//! The compressed object stays a standard file: concatenated zstd frames are
//! one valid zstd stream, so `zstd -d` gives back pg_basebackup's tar byte
//! for byte and `tar --zstd -xf` unpacks it. A frame starts at every
//! member's header, and a large file is cut into frames of [`FRAME_BYTES`]
//! of input, so one member, or one part of a large file, can be fetched
//! with a ranged read and decompressed alone (parallel and delta restores).
//!
//! - [`index`]: what the index holds and its binary format.
//! - [`encode`]: the re-encoding of a tar stream, building the index.
//! - [`convert`]: `pitr backup --seekable`, the staged tars made seekable.

pub mod convert;
pub mod encode;
pub mod index;

/// Uncompressed bytes of file data per frame. 1 MiB: large enough that
/// zstd's ratio is within a few percent of one long stream and the frame
/// header and checksum (about 20 bytes) cost nothing, small enough that a
/// worker holds little memory and a ranged read fetches little more than it
/// needs. A multiple of [`PAGE_BYTES`], so no page straddles two frames.
///
/// Smaller frames were measured for the delta restore (2026-12-06, pgbench
/// scale 40 changed in 5.5 % of its pages, the same tar re-encoded): the
/// data in frames holding a changed page, which a delta restore must
/// decompress, is 96 % at 1 MiB, 69 % at 256 KiB, 49 % at 128 KiB, 31 % at
/// 64 KiB; the backup grows by 6 %, 7 % and 12 % (encoding time unchanged).
/// At 128 KiB the delta restore's user CPU fell by a quarter but its time
/// did not move (it is bound by reading the existing directory), and a full
/// restore's CPU rose by a tenth: not worth 7 % more stored for every
/// backup. Readers take any frame size (the index records the frames).
pub const FRAME_BYTES: u64 = 1 << 20;

/// Bytes per page checksum: one PostgreSQL page (BLCKSZ). A delta restore
/// rewrites exactly the pages that differ, and a busy table changes a few
/// pages in every 1 GiB segment, so coarser blocks would rewrite more for
/// nothing; at 8 bytes a page the checksums are 0.1 % of the data.
pub const PAGE_BYTES: u64 = 8192;

/// The suffix of a tar's index next to it: `base.tar.zst.pitr-index`.
pub const INDEX_SUFFIX: &str = ".pitr-index";

/// The checksum of one page: xxHash3, 64 bits. It must run faster than the
/// disk reads the existing data directory during a delta restore (several
/// GB/s on one core, where SHA-256 gives about 1.5); a page wrongly taken
/// for unchanged is still caught, because each restored file's SHA-256 is
/// checked against the index as a whole.
pub fn page_checksum(page: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(page)
}

/// The index of the tar `tar_key` of a backup, checked: intact, made for
/// this backup's manifest (`manifest_key`, when the index names one) and
/// for this very object (its size). `Ok(None)` when the tar has no index;
/// the error says what is wrong, for a warning or `pitr verify`.
pub fn read_index(
    store: &dyn crate::repo::store::StoreRead,
    tar_key: &str,
    manifest_key: &str,
) -> Result<Option<index::Index>, String> {
    use sha2::{Digest, Sha256};
    let key = format!("{tar_key}{INDEX_SUFFIX}");
    let described = store.describe(&key);
    match store.stat(&key) {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        Err(error) => return Err(format!("cannot read `{described}`: {error}")),
    }
    let index = crate::repo::store::read_all(store, &key)
        .and_then(|bytes| index::Index::parse(&bytes))
        .map_err(|error| format!("`{described}` cannot be used ({error})"))?;
    if let Some(expected) = index.manifest_sha256 {
        match crate::repo::store::read_all(store, manifest_key) {
            Ok(bytes) if <[u8; 32]>::from(Sha256::digest(&bytes)) == expected => {}
            Ok(_) => {
                return Err(format!(
                    "`{described}` cannot be used (it was made for another backup_manifest)"
                ))
            }
            Err(error) => {
                return Err(format!(
                    "`{described}` cannot be used (cannot read `{}`: {error})",
                    store.describe(manifest_key)
                ))
            }
        }
    }
    match store.stat(tar_key) {
        Ok(Some(object)) if object.size == index.stored_bytes => Ok(Some(index)),
        Ok(Some(object)) => Err(format!(
            "`{described}` cannot be used (it describes {} bytes, and `{}` has {})",
            index.stored_bytes,
            store.describe(tar_key),
            object.size
        )),
        Ok(None) => Err(format!(
            "`{described}` has no `{}` beside it",
            store.describe(tar_key)
        )),
        Err(error) => Err(format!(
            "cannot read `{}`: {error}",
            store.describe(tar_key)
        )),
    }
}
