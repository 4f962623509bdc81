//! Copying a plain-format backup (or a plain backup's tablespace
//! directory) out of its store, object by object: the tree is listed
//! level by level with `tree_level`, each file read with `open` (or, when
//! nothing checks it on the way, `download`, which the posix driver does in
//! the kernel with copy_file_range).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::write::{create_new, interrupt_or, simulated_slow_staging, write_checked};
use super::write::{FileWriter, Verify};
use super::Interrupted;
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::store::{StoreRead, TreeKind};

/// Where a tree is copied from: the objects of `store` under `prefix`
/// (`<id>/` for a backup, `""` for a tablespace directory's own store).
#[derive(Clone, Copy)]
pub struct TreeSource<'a> {
    pub store: &'a dyn StoreRead,
    pub prefix: &'a str,
}

/// Copies the tree into `dest`, which exists. A symlinked `pg_wal` is
/// copied as a real directory; tablespace links in `pg_tblspc/` are
/// skipped (tablespaces are staged on their own and the server relinks
/// them from tablespace_map); any other link is refused.
pub fn copy_tree(
    source: TreeSource<'_>,
    dest: &Path,
    progress: &mut Progress,
    verify: &mut Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    copy_level(source, dest, Path::new(""), progress, verify, writer)
}

fn copy_level(
    source: TreeSource<'_>,
    dest: &Path,
    relative: &Path,
    progress: &mut Progress,
    verify: &mut Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let store = source.store;
    let prefix = if relative.as_os_str().is_empty() {
        source.prefix.to_string()
    } else {
        format!("{}{}/", source.prefix, relative.to_string_lossy())
    };
    let entries = store
        .tree_level(&prefix)
        .with_context(|| format!("cannot read `{}`", store.describe(&prefix)))?;
    let mut written = 0;
    for entry in entries {
        simulated_slow_staging();
        if interrupt::requested() {
            bail!(Interrupted);
        }
        let name = entry.key.get(prefix.len()..).unwrap_or_default();
        let rel = relative.join(name);
        let to = dest.join(&rel);
        let is_dir = match &entry.kind {
            TreeKind::Link { .. } if rel == Path::new("pg_wal") => {
                if entry.mode.is_none() {
                    bail!("cannot follow `{}`", store.describe(&entry.key));
                }
                true
            }
            TreeKind::Link { .. } if rel.parent() == Some(Path::new("pg_tblspc")) => continue,
            TreeKind::Link { .. } => bail!(
                "`{}` is a symbolic link outside pg_tblspc/; pitr does not follow links in backups",
                store.describe(&entry.key)
            ),
            TreeKind::Group => true,
            TreeKind::Object { .. } => false,
        };
        if is_dir {
            fs::DirBuilder::new()
                .mode(entry.mode.unwrap_or(0o700) & 0o7777)
                .create(&to)
                .with_context(|| format!("cannot create `{}`", to.display()))?;
            written += copy_level(source, dest, &rel, progress, verify, writer)?;
            continue;
        }
        let mode = entry.mode.unwrap_or(0o600);
        if let TreeKind::Object { size } = entry.kind {
            if writer.sparse.covers(&rel) {
                writer.sparse.write(&to, &rel, mode, size, verify)?;
                progress.add(size);
                continue;
            }
        }
        let copied = if verify.is_some() {
            let mut input = store
                .open(&entry.key)
                .with_context(|| format!("cannot open `{}`", store.describe(&entry.key)))?;
            write_checked(&mut input, &to, &rel, mode, verify, writer)?
        } else {
            let mut file = create_new(&to, mode)?;
            store
                .download(&entry.key, &mut file)
                .map_err(|e| interrupt_or(e, &to))?
        };
        written += copied;
        progress.add(copied);
    }
    Ok(written)
}

/// The bytes stored in the tree, for a progress bar.
pub fn tree_size(source: TreeSource<'_>) -> u64 {
    let Ok(entries) = source.store.tree_level(source.prefix) else {
        return 0;
    };
    entries
        .iter()
        .map(|entry| match entry.kind {
            TreeKind::Object { size } => size,
            TreeKind::Group => tree_size(TreeSource {
                store: source.store,
                prefix: &format!("{}/", entry.key),
            }),
            TreeKind::Link { .. } => 0,
        })
        .sum()
}
