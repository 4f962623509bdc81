//! Removing what the backup does not hold. A full restore starts from an
//! empty directory; a delta restore must end with the same tree, so every
//! file, link and directory the backup did not write is removed. That
//! includes what pg_basebackup leaves out on purpose and PostgreSQL
//! expects absent or empty at the start of recovery: the damaged cluster's
//! WAL in pg_wal (it could be replayed), postmaster.pid and .opts,
//! pg_internal.init files (a stale relcache), replication slots,
//! temporary files, the contents of pg_dynshmem, pg_notify, pg_serial,
//! pg_snapshots, pg_stat_tmp and pg_subtrans, and unlogged relations'
//! main forks (recreated from their init forks). Kept: the delta marker
//! (removed last), a symlinked pg_wal (its contents are cleaned, the link
//! kept), and this restore's tablespace links in pg_tblspc.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::file::{remove_entry, DeltaStats};
use crate::interrupt;
use crate::stage::Interrupted;

/// Paths (absolute) the restore wrote or keeps.
pub type Seen = HashSet<PathBuf>;

/// Removes under `root` every entry not in `keep`; a directory in `keep`
/// is cleaned inside.
pub fn remove_unlisted(root: &Path, keep: &Seen, stats: &mut DeltaStats) -> Result<()> {
    let entries =
        fs::read_dir(root).with_context(|| format!("cannot read `{}`", root.display()))?;
    for entry in entries {
        if interrupt::requested() {
            bail!(Interrupted);
        }
        let entry = entry.with_context(|| format!("cannot read `{}`", root.display()))?;
        let path = entry.path();
        if !keep.contains(&path) {
            let (bytes, files) = remove_entry(&path)?;
            stats.files_removed += files;
            stats.bytes_removed += bytes;
            continue;
        }
        // A directory the backup holds, or a symlinked pg_wal (followed).
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot inspect `{}`", path.display()))?;
        let followed =
            kind.is_symlink() && path.file_name() == Some("pg_wal".as_ref()) && path.is_dir();
        if kind.is_dir() || followed {
            remove_unlisted(&path, keep, stats)?;
        }
    }
    Ok(())
}
