//! Tablespaces in a base backup: which exist, where they were, and where
//! their files are in the backup.
//!
//! Tar backups carry one `<oid>.tar[.gz|…]` per tablespace and a
//! `tablespace_map` inside `base.tar`; plain backups carry `pg_tblspc/<oid>`
//! symbolic links to the directories pg_basebackup wrote.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::store::ObjectInfo;
use crate::compression::Compression;

/// Where a tablespace's files are in the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TablespaceSource {
    /// `<oid>.tar[...]`, members relative to the tablespace directory.
    Tar {
        path: PathBuf,
        compression: Compression,
    },
    /// A directory (plain format): the target of `pg_tblspc/<oid>`.
    Directory(PathBuf),
}

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
/// objects `top` directly under `prefix`, with their local paths in `dir`.
pub fn tablespace_tars(
    top: &[ObjectInfo],
    prefix: &str,
    dir: &Path,
) -> Vec<(u32, PathBuf, Compression)> {
    let mut tars = Vec::new();
    for object in top {
        let Some(name) = object.key.strip_prefix(prefix) else {
            continue;
        };
        let (stem, compression) = Compression::split_name(name);
        if let Some(oid) = stem.strip_suffix(".tar") {
            if !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(oid) = oid.parse() {
                    tars.push((oid, dir.join(name), compression));
                }
            }
        }
    }
    tars.sort_by_key(|(oid, _, _)| *oid);
    tars
}

/// Tablespaces of a tar backup, from its `tablespace_map` and `<oid>.tar`s.
pub fn tar_tablespaces(
    dir: &Path,
    tars: Vec<(u32, PathBuf, Compression)>,
    map: Option<&str>,
) -> Result<Vec<Tablespace>> {
    if tars.is_empty() {
        return Ok(Vec::new());
    }
    let Some(map) = map else {
        bail!(
            "`{}` has tablespace archives but base.tar has no tablespace_map",
            dir.display()
        );
    };
    let map = parse_tablespace_map(map)?;
    let mut tablespaces = Vec::new();
    for (oid, path, compression) in tars {
        let Some((_, location)) = map.iter().find(|(o, _)| *o == oid) else {
            bail!(
                "`{}` is not listed in the backup's tablespace_map",
                path.display()
            );
        };
        tablespaces.push(Tablespace {
            oid,
            location: location.clone(),
            source: TablespaceSource::Tar { path, compression },
        });
    }
    Ok(tablespaces)
}

/// Tablespaces of a plain backup: the `pg_tblspc/<oid>` links. Symbolic
/// links to local directories exist only on a file system: a plain backup
/// with tablespaces is local by nature.
#[allow(clippy::disallowed_methods)]
pub fn plain_tablespaces(dir: &Path) -> Result<Vec<Tablespace>> {
    let links = dir.join("pg_tblspc");
    let Ok(entries) = fs::read_dir(&links) else {
        return Ok(Vec::new());
    };
    let mut tablespaces = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(oid) = name.parse::<u32>() else {
            bail!("`{}` is not a tablespace link", entry.path().display());
        };
        let target = fs::read_link(entry.path())
            .with_context(|| format!("`{}` is not a symbolic link", entry.path().display()))?;
        let target = if target.is_absolute() {
            target
        } else {
            links.join(target)
        };
        if !target.is_dir() {
            bail!(
                "tablespace {oid} of backup `{}` points to `{}`, which is not a directory",
                dir.display(),
                target.display()
            );
        }
        tablespaces.push(Tablespace {
            oid,
            location: target.clone(),
            source: TablespaceSource::Directory(target),
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
