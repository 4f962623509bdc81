//! The plan of a delta restore, before anything is written: from the
//! backup's `backup_manifest` (every file and its size) and the sizes of
//! the files in the existing directory, how many files and bytes will be
//! compared (and kept where their pages match), rewritten, and removed.
//! Checksums are computed while restoring, not here: the plan reads no
//! file, only sizes.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::guard::MARKER;
use crate::repo::backup::Backup;
use crate::stage::tablespaces::Placement;

/// Files and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// What a delta restore over a directory will do, from sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeltaPreview {
    pub pgdata: PathBuf,
    /// Present with the backup's size, or larger (cut to it first):
    /// compared page by page, kept where they match.
    pub compare: Tally,
    /// Absent, smaller, or hard-linked elsewhere: written in full.
    pub rewrite: Tally,
    /// Not in the backup (pg_wal's old segments among them): removed.
    pub remove: Tally,
}

impl DeltaPreview {
    /// The plan's lines.
    pub fn text(&self) -> String {
        let human = crate::progress::human_bytes;
        let files = |n| crate::progress::count(n, "file");
        format!(
            "delta:     over {}\n           compare {} ({}): same size or larger, kept where their pages match\n           rewrite {} ({}): absent or smaller\n           remove  {} ({}): not in the backup",
            self.pgdata.display(),
            files(self.compare.files),
            human(self.compare.bytes),
            files(self.rewrite.files),
            human(self.rewrite.bytes),
            files(self.remove.files),
            human(self.remove.bytes),
        )
    }
}

/// The forecast for `backup` over `pgdata` and the tablespaces' locations
/// (`segment_bytes`: the size of the WAL segments the backup carries,
/// which its manifest does not list).
pub fn preview(
    backup: &Backup,
    pgdata: &Path,
    placements: &[Placement],
    segment_bytes: u64,
) -> Result<DeltaPreview> {
    let Some(manifest) = backup.manifest() else {
        bail!(
            "backup `{}` has no backup_manifest, which lists its files: a delta restore cannot be planned from sizes",
            backup.id
        );
    };
    let mut expected: HashMap<PathBuf, u64> = HashMap::new();
    for file in &manifest.parsed.files {
        let path = match file
            .path
            .strip_prefix("pg_tblspc/")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((oid, rest)) => {
                let Some(root) = oid
                    .parse()
                    .ok()
                    .and_then(|oid| super::tablespace_root(placements, oid))
                else {
                    continue;
                };
                root.join(rest)
            }
            None => pgdata.join(&file.path),
        };
        expected.insert(path, file.size);
    }
    for segment in &backup.included_wal {
        expected.insert(pgdata.join("pg_wal").join(segment), segment_bytes);
    }
    let mut preview = DeltaPreview {
        pgdata: pgdata.to_path_buf(),
        compare: Tally::default(),
        rewrite: Tally::default(),
        remove: Tally::default(),
    };
    for (path, size) in &expected {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() && meta.len() >= *size && meta.nlink() == 1 => {
                preview.compare.add(*size)
            }
            _ => preview.rewrite.add(*size),
        }
    }
    let mut roots = vec![pgdata.to_path_buf()];
    roots.extend(placements.iter().map(|p| p.destination.clone()));
    for root in &roots {
        count_unlisted(root, &expected, &mut preview.remove, pgdata);
    }
    Ok(preview)
}

/// Files under `dir` the backup does not list (the marker of an unfinished
/// delta restore and tablespace links excepted).
fn count_unlisted(dir: &Path, expected: &HashMap<PathBuf, u64>, remove: &mut Tally, pgdata: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if path == pgdata.join(MARKER) || path.parent() == Some(&pgdata.join("pg_tblspc")) {
            continue;
        }
        let followed = kind.is_symlink() && path == pgdata.join("pg_wal");
        if kind.is_dir() || followed {
            count_unlisted(&path, expected, remove, pgdata);
        } else if !expected.contains_key(&path) {
            remove.add(if kind.is_file() {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            });
        }
    }
}
