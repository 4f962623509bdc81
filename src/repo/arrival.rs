//! Whether given WAL files have reached the archive yet: what `pitr backup`
//! polls while it waits for a backup's WAL.
//!
//! Cheap on purpose (a few `stat` calls per poll, never a full listing of
//! a large archive), and blind to how a file is compressed: any suffix the
//! archive reads counts.

use std::sync::Arc;

use super::archive::{read_long_header, ArchivedFile};
use super::archive_name::{ArchiveName, WalFileName};
use super::store::StoreRead;
use crate::wal::SegmentSize;

/// The archived copy of `name` (a segment, history or backup history
/// file), plain or compressed.
pub fn archived_copy(archive: &Arc<dyn StoreRead>, name: &str) -> Option<ArchivedFile> {
    crate::compression::Compression::ALL
        .into_iter()
        .find_map(|compression| {
            let key = format!("{name}{}", compression.suffix());
            let object = archive.stat(&key).ok().flatten()?;
            Some(ArchivedFile::new(
                Arc::clone(archive),
                object,
                compression,
                false,
            ))
        })
}

/// The segment size of the archive, from the page header of the first
/// segment found; `None` while it holds no segment.
pub fn segment_size(archive: &Arc<dyn StoreRead>) -> Option<SegmentSize> {
    for object in archive.list("", None).ok()? {
        let Some(name) = ArchiveName::parse(&object.key) else {
            continue;
        };
        if !matches!(name.file, WalFileName::Segment(_)) {
            continue;
        }
        let file = ArchivedFile::new(Arc::clone(archive), object, name.compression, false);
        if let Ok(header) = read_long_header(&file) {
            return Some(header.segment_size);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::repo::store::posix::Posix;
    use crate::repo::store::StoreWrite;

    #[test]
    fn finds_plain_and_compressed_copies() {
        let dir = tempfile::tempdir().unwrap();
        let posix = Posix::new(dir.path());
        let put = |key: &str| {
            posix
                .write_stream(key, &mut |out| out.write_all(b"x"))
                .unwrap();
        };
        let store: Arc<dyn StoreRead> = Arc::new(posix.clone());
        assert!(archived_copy(&store, "000000010000000000000003").is_none());
        put("000000010000000000000003.gz");
        let copy = archived_copy(&store, "000000010000000000000003").unwrap();
        assert_eq!(copy.compression, Compression::Gzip);
        assert_eq!(copy.key, "000000010000000000000003.gz");
        put("000000010000000000000003");
        assert_eq!(
            archived_copy(&store, "000000010000000000000003")
                .unwrap()
                .compression,
            Compression::None
        );
        // Not a segment: no size to learn.
        assert_eq!(segment_size(&store), None);
    }
}
