//! Whether given WAL files have reached the archive yet: what `pitr backup`
//! polls while it waits for a backup's WAL.
//!
//! Cheap on purpose (a few `stat` calls per poll, never a full listing of
//! a large archive), and blind to how a file is compressed: any suffix the
//! archive reads counts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::archive::{read_long_header, ArchivedFile};
use crate::compression::Compression;
use crate::wal::segment::is_segment_name;
use crate::wal::SegmentSize;

/// The archived copy of `name` (a segment, history or backup history
/// file), plain or compressed.
pub fn archived_copy(dir: &Path, name: &str) -> Option<(PathBuf, Compression)> {
    Compression::ALL.into_iter().find_map(|compression| {
        let path = dir.join(format!("{name}{}", compression.suffix()));
        path.is_file().then_some((path, compression))
    })
}

/// The segment size of the archive, from the page header of the first
/// segment found; `None` while it holds no segment.
pub fn segment_size(dir: &Path) -> Option<SegmentSize> {
    let entries = fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, compression) = Compression::split_name(&name);
        if !is_segment_name(stem) {
            continue;
        }
        let file = ArchivedFile {
            path: entry.path(),
            compression,
            stored_bytes: 0,
            modified: SystemTime::UNIX_EPOCH,
            partial: false,
        };
        if let Ok(header) = read_long_header(&file) {
            return Some(header.segment_size);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plain_and_compressed_copies() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(archived_copy(dir.path(), "000000010000000000000003"), None);
        fs::write(dir.path().join("000000010000000000000003.gz"), b"x").unwrap();
        let (path, compression) = archived_copy(dir.path(), "000000010000000000000003").unwrap();
        assert_eq!(compression, Compression::Gzip);
        assert!(path.ends_with("000000010000000000000003.gz"));
        fs::write(dir.path().join("000000010000000000000003"), b"x").unwrap();
        assert_eq!(
            archived_copy(dir.path(), "000000010000000000000003")
                .unwrap()
                .1,
            Compression::None
        );
        // Not a segment: no size to learn.
        assert_eq!(segment_size(dir.path()), None);
    }
}
