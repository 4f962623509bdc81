//! Tablespaces in a base backup: which exist, where they were, and where
//! their files are in the backup.
//!
//! Tar backups carry one `<oid>.tar[.gz|…]` per tablespace and a
//! `tablespace_map` inside `base.tar`; plain backups carry `pg_tblspc/<oid>`
//! symbolic links to the directories pg_basebackup wrote.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::store::posix::Posix;
use super::store::{ObjectInfo, StoreRead, TreeKind};
use crate::compression::Compression;

/// Where a tablespace's files are in the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TablespaceSource {
    /// `<oid>.tar[...]` in the backups store (`key`), members relative to
    /// the tablespace directory.
    Tar {
        key: String,
        compression: Compression,
    },
    /// A directory (plain format): the target of `pg_tblspc/<oid>`.
    Directory(TablespaceTree),
}

/// The directory a plain backup's `pg_tblspc/<oid>` link points to: the
/// files pg_basebackup wrote outside the backup, on this host's file
/// system (local by nature), read like the backup itself through a store
/// rooted there.
#[derive(Clone, Debug)]
pub struct TablespaceTree {
    pub store: Arc<dyn StoreRead>,
}

impl TablespaceTree {
    /// The tree at local directory `dir`.
    pub fn local(dir: &std::path::Path) -> TablespaceTree {
        TablespaceTree {
            store: Arc::new(Posix::new(dir)),
        }
    }
}

impl PartialEq for TablespaceTree {
    fn eq(&self, other: &TablespaceTree) -> bool {
        self.store.describe("") == other.store.describe("")
    }
}

impl Eq for TablespaceTree {}

/// One tablespace of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    /// The location recorded in the backup (`tablespace_map` or the link).
    pub location: PathBuf,
    pub source: TablespaceSource,
}

/// Parses `tablespace_map`: `<oid> <path>` per line, where a backslash
/// makes the next character literal (PostgreSQL escapes `\`, `\n` and `\r`
/// in paths that way).
pub fn parse_tablespace_map(text: &str) -> Result<Vec<(u32, PathBuf)>> {
    let mut entries = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let mut raw = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        if next == '\n' {
                            line += 1;
                        }
                        raw.push(next);
                    }
                }
                '\n' => break,
                c => raw.push(c),
            }
        }
        let entry = raw.trim_end_matches('\r');
        if entry.is_empty() {
            line += 1;
            continue;
        }
        let Some((oid, path)) = entry.split_once(' ') else {
            bail!("line {line} of tablespace_map is not `<oid> <path>`: `{entry}`");
        };
        let oid: u32 = oid.parse().with_context(|| {
            format!("line {line} of tablespace_map has no numeric OID: `{entry}`")
        })?;
        if path.is_empty() || !path.starts_with('/') {
            bail!("line {line} of tablespace_map has no absolute path: `{entry}`");
        }
        entries.push((oid, PathBuf::from(path)));
        line += 1;
    }
    Ok(entries)
}

/// Writes `tablespace_map` content, escaping as PostgreSQL does.
pub fn render_tablespace_map(entries: &[(u32, PathBuf)]) -> String {
    let mut text = String::new();
    for (oid, path) in entries {
        text.push_str(&oid.to_string());
        text.push(' ');
        for c in path.to_string_lossy().chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('\n');
    }
    text
}

/// `<oid>.tar[...]` files next to `base.tar` of a tar backup: among the
/// objects `top` directly under `prefix`, with their keys.
pub fn tablespace_tars(top: &[ObjectInfo], prefix: &str) -> Vec<(u32, String, Compression)> {
    let mut tars = Vec::new();
    for object in top {
        let Some(name) = object.key.strip_prefix(prefix) else {
            continue;
        };
        let (stem, compression) = Compression::split_name(name);
        if let Some(oid) = stem.strip_suffix(".tar") {
            if !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(oid) = oid.parse() {
                    tars.push((oid, object.key.clone(), compression));
                }
            }
        }
    }
    tars.sort_by_key(|(oid, _, _)| *oid);
    tars
}

/// Tablespaces of a tar backup, from its `tablespace_map` and `<oid>.tar`s.
pub fn tar_tablespaces(
    backups: &dyn StoreRead,
    id: &str,
    tars: Vec<(u32, String, Compression)>,
    map: Option<&str>,
) -> Result<Vec<Tablespace>> {
    if tars.is_empty() {
        return Ok(Vec::new());
    }
    let Some(map) = map else {
        bail!(
            "`{}` has tablespace archives but base.tar has no tablespace_map",
            backups.describe(id)
        );
    };
    let map = parse_tablespace_map(map)?;
    let mut tablespaces = Vec::new();
    for (oid, key, compression) in tars {
        let Some((_, location)) = map.iter().find(|(o, _)| *o == oid) else {
            bail!(
                "`{}` is not listed in the backup's tablespace_map",
                backups.describe(&key)
            );
        };
        tablespaces.push(Tablespace {
            oid,
            location: location.clone(),
            source: TablespaceSource::Tar { key, compression },
        });
    }
    Ok(tablespaces)
}

/// Tablespaces of a plain backup (objects under `prefix`): the
/// `pg_tblspc/<oid>` links. Symbolic links to local directories exist only
/// on a file system: a plain backup with tablespaces is local by nature,
/// and its tablespaces are read through stores rooted at their directories.
pub fn plain_tablespaces(backups: &dyn StoreRead, prefix: &str) -> Result<Vec<Tablespace>> {
    let links_prefix = format!("{prefix}pg_tblspc/");
    // A backup without pg_tblspc/ has no tablespaces.
    let Ok(entries) = backups.tree_level(&links_prefix) else {
        return Ok(Vec::new());
    };
    let mut tablespaces = Vec::new();
    for entry in entries {
        let described = backups.describe(&entry.key);
        let name = &entry.key[links_prefix.len()..];
        let Ok(oid) = name.parse::<u32>() else {
            bail!("`{described}` is not a tablespace link");
        };
        let TreeKind::Link { target } = entry.kind else {
            bail!("`{described}` is not a symbolic link");
        };
        let target = if target.is_absolute() {
            target
        } else {
            let links = backups.local_dir(&links_prefix).with_context(|| {
                format!("`{described}` is a relative link outside a file system")
            })?;
            links.join(target)
        };
        if !Posix::new(&target).exists() {
            bail!(
                "tablespace {oid} of backup `{}` points to `{}`, which is not a directory",
                backups.describe(prefix.trim_end_matches('/')),
                target.display()
            );
        }
        tablespaces.push(Tablespace {
            oid,
            location: target.clone(),
            source: TablespaceSource::Directory(TablespaceTree::local(&target)),
        });
    }
    tablespaces.sort_by_key(|t| t.oid);
    Ok(tablespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_with_escapes() {
        let entries = vec![
            (16384, PathBuf::from("/srv/ts one")),
            (16385, PathBuf::from("/srv/odd\\name\nwith newline")),
        ];
        let text = render_tablespace_map(&entries);
        assert_eq!(
            text,
            "16384 /srv/ts one\n16385 /srv/odd\\\\name\\\nwith newline\n"
        );
        assert_eq!(parse_tablespace_map(&text).unwrap(), entries);
    }

    #[test]
    fn malformed_maps() {
        {
            let error = parse_tablespace_map("16384\n").unwrap_err().to_string();
            assert!(error.contains("is not `<oid> <path>`"), "{error}");
        }
        {
            let error = parse_tablespace_map("abc /x\n").unwrap_err().to_string();
            assert!(error.contains("no numeric OID"), "{error}");
        }
        {
            let error = parse_tablespace_map("16384 relative/path\n")
                .unwrap_err()
                .to_string();
            assert!(error.contains("no absolute path"), "{error}");
        }
        assert_eq!(parse_tablespace_map("").unwrap(), vec![]);
    }
}
