//! Where each tablespace of a backup goes, and staging it there.
//!
//! A tablespace is restored to the location recorded in the backup, or to
//! a new one given with `--tablespace-mapping OLD=NEW`. A location that
//! exists and is not empty is refused: the recorded location may belong to
//! the cluster that is still running, and a side-by-side restore must never
//! write into it. Like the data directory, each tablespace is written into a
//! hidden sibling and renamed into place only when everything is complete.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::extract::{extract_archive, stored_size};
use super::tree::{copy_tree, tree_size, TreeSource};
use super::write::{FileWriter, Verify};
use super::StageRequest;
use crate::os_user::OsUser;
use crate::progress::{Progress, Reporter, Unit};
use crate::repo::absolute;
use crate::repo::backup::{Backup, BackupFile};
use crate::repo::manifest_check::ManifestCheck;
use crate::repo::store::StoreRead;
use crate::repo::tablespace::{render_tablespace_map, Tablespace, TablespaceSource};

/// `--tablespace-mapping OLD=NEW`; `\=` stands for a literal `=` (as in
/// pg_basebackup).
pub fn parse_mapping(text: &str) -> Result<(PathBuf, PathBuf)> {
    let mut old = String::new();
    let mut new = String::new();
    let mut seen_separator = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let side = if seen_separator { &mut new } else { &mut old };
        match c {
            '\\' => match chars.next() {
                Some('=') => side.push('='),
                Some(other) => {
                    side.push('\\');
                    side.push(other);
                }
                None => side.push('\\'),
            },
            '=' if !seen_separator => seen_separator = true,
            '=' => bail!("--tablespace-mapping `{text}` has more than one `=`; write `\\=` for an `=` in a path"),
            c => side.push(c),
        }
    }
    if !seen_separator || old.is_empty() || new.is_empty() {
        bail!("--tablespace-mapping `{text}` is not OLD=NEW");
    }
    let (old, new) = (PathBuf::from(old), PathBuf::from(new));
    if !old.is_absolute() || !new.is_absolute() {
        bail!("--tablespace-mapping `{text}`: both directories must be absolute paths");
    }
    Ok((old, new))
}

/// Where one tablespace will be restored.
#[derive(Clone, Debug)]
pub struct Placement {
    pub oid: u32,
    pub recorded: PathBuf,
    pub destination: PathBuf,
    pub mapped: bool,
    pub source: TablespaceSource,
    /// The recorded location holds the lost primary's tablespace, to be
    /// moved aside like its data directory (`--in-place`).
    pub replaces: bool,
}

/// Decides every tablespace's destination, refusing occupied ones unless
/// `replace_recorded` (an in-place recovery, where the recorded locations
/// hold the stopped primary's tablespaces, moved aside at commit). Nothing
/// is written.
pub fn place(
    tablespaces: &[Tablespace],
    mappings: &[(PathBuf, PathBuf)],
    pgdata: &Path,
    replace_recorded: bool,
) -> Result<Vec<Placement>> {
    place_occupied(tablespaces, mappings, pgdata, replace_recorded, false)
}

/// As [`place`], and with `replace_mapped` a mapped destination may be
/// occupied too: a delta restore rewrites the data directory's own
/// tablespace wherever it was mapped before (checked against its
/// `pg_tblspc` link by the caller).
pub fn place_occupied(
    tablespaces: &[Tablespace],
    mappings: &[(PathBuf, PathBuf)],
    pgdata: &Path,
    replace_recorded: bool,
    replace_mapped: bool,
) -> Result<Vec<Placement>> {
    for (old, _) in mappings {
        if !tablespaces.iter().any(|t| &t.location == old) {
            let recorded: Vec<String> = tablespaces
                .iter()
                .map(|t| format!("`{}`", t.location.display()))
                .collect();
            bail!(
                "--tablespace-mapping names `{}`, which is not a tablespace location of this backup (its tablespaces: {})",
                old.display(),
                if recorded.is_empty() { "none".to_string() } else { recorded.join(", ") }
            );
        }
    }
    let mut placements = Vec::new();
    for tablespace in tablespaces {
        let mapping = mappings.iter().find(|(old, _)| *old == tablespace.location);
        let destination = match mapping {
            Some((_, new)) => absolute(new)?,
            None => tablespace.location.clone(),
        };
        if destination.starts_with(pgdata) {
            bail!(
                "tablespace {} cannot be restored to `{}`, inside the data directory",
                tablespace.oid,
                destination.display()
            );
        }
        if placements
            .iter()
            .any(|p: &Placement| p.destination == destination)
        {
            bail!(
                "two tablespaces would be restored to `{}`",
                destination.display()
            );
        }
        let occupied = !is_absent_or_empty(&destination)?;
        let allowed = if mapping.is_some() {
            replace_mapped
        } else {
            replace_recorded
        };
        if occupied && !allowed {
            if mapping.is_some() {
                bail!(
                    "tablespace {} is mapped to `{}`, which exists and is not empty; choose an empty or new directory",
                    tablespace.oid,
                    destination.display()
                );
            }
            bail!(
                "tablespace {} would be restored to its recorded location `{}`, which exists and is not empty (it may belong to a running cluster); restore it elsewhere with --tablespace-mapping '{}=NEW_DIR'",
                tablespace.oid,
                destination.display(),
                destination.display()
            );
        }
        match destination.parent() {
            Some(parent) if parent.is_dir() => {}
            _ => bail!(
                "the parent directory of tablespace location `{}` does not exist; create it first",
                destination.display()
            ),
        }
        placements.push(Placement {
            oid: tablespace.oid,
            recorded: tablespace.location.clone(),
            destination,
            mapped: mapping.is_some(),
            source: tablespace.source.clone(),
            replaces: occupied,
        });
    }
    Ok(placements)
}

fn is_absent_or_empty(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error).with_context(|| format!("cannot inspect `{}`", path.display())),
        Ok(metadata) if !metadata.is_dir() => Ok(false),
        Ok(_) => Ok(fs::read_dir(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?
            .next()
            .is_none()),
    }
}

/// A tablespace written into its hidden sibling; removed unless committed.
pub struct StagedTablespace {
    staging: PathBuf,
    destination: PathBuf,
    replaces: bool,
    committed: bool,
}

impl StagedTablespace {
    /// Makes the staged files durable (see [`super::durable`]).
    pub fn sync(&self) -> Result<()> {
        super::durable::sync_filesystem(&self.staging)
    }

    /// Renames the staged tablespace into place, after moving what was
    /// there aside when it replaces it; returns where that went.
    pub fn commit(&mut self) -> Result<Option<PathBuf>> {
        let moved_aside = if self.replaces {
            let name = self
                .destination
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = self.destination.with_file_name(format!(
                "{name}.pitr-replaced-{}",
                chrono::Local::now().format("%Y%m%dT%H%M%S")
            ));
            fs::rename(&self.destination, &aside).with_context(|| {
                format!(
                    "cannot move `{}` aside to `{}`",
                    self.destination.display(),
                    aside.display()
                )
            })?;
            Some(aside)
        } else {
            None
        };
        fs::rename(&self.staging, &self.destination).with_context(|| {
            format!(
                "cannot rename `{}` to `{}`",
                self.staging.display(),
                self.destination.display()
            )
        })?;
        self.committed = true;
        Ok(moved_aside)
    }
}

impl Drop for StagedTablespace {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// The tablespaces step: every tablespace written beside its destination
/// (renamed into place at commit), and `tablespace_map` in the staged data
/// directory pointing at the destinations. Returns the staged tablespaces
/// and the bytes written.
pub fn stage_tablespaces(
    request: &StageRequest<'_>,
    staging: &Path,
    mut check: Option<&mut ManifestCheck>,
    writer: &mut FileWriter,
    reporter: &Reporter,
) -> Result<(Vec<StagedTablespace>, u64)> {
    let placements = request.placements;
    if placements.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let total = placements
        .iter()
        .map(|p| source_size(request.backups, &p.source))
        .sum();
    let mut progress = reporter.bar("tblspc", total, Unit::Bytes);
    let mut staged = Vec::new();
    let mut written = 0;
    for placement in placements {
        let (tablespace, bytes) = stage_tablespace(
            request.backups,
            &request.plan.backup,
            request.workers,
            reporter,
            placement,
            request.user,
            &mut progress,
            check.as_deref_mut(),
            writer,
        )?;
        staged.push(tablespace);
        written += bytes;
    }
    progress.finish();
    let map: Vec<(u32, PathBuf)> = placements
        .iter()
        .map(|p| (p.oid, p.destination.clone()))
        .collect();
    super::write::write_file(
        &staging.join("tablespace_map"),
        render_tablespace_map(&map).as_bytes(),
    )?;
    Ok((staged, written))
}

/// The stored size of a tablespace's files, for the progress bar.
fn source_size(backups: &dyn StoreRead, source: &TablespaceSource) -> u64 {
    match source {
        TablespaceSource::Tar { key, compression } => stored_size(
            backups,
            &BackupFile {
                key: key.clone(),
                compression: *compression,
            },
        ),
        TablespaceSource::Directory(tree) => tree_size(TreeSource {
            store: tree.store.as_ref(),
            prefix: "",
        }),
    }
}

/// Writes one tablespace next to its destination.
#[allow(clippy::too_many_arguments)] // each is one thing a tablespace's staging needs
fn stage_tablespace(
    backups: &dyn StoreRead,
    backup: &Backup,
    workers: usize,
    reporter: &Reporter,
    placement: &Placement,
    user: &OsUser,
    progress: &mut Progress,
    check: Option<&mut ManifestCheck>,
    writer: &mut FileWriter,
) -> Result<(StagedTablespace, u64)> {
    let parent = placement.destination.parent().unwrap_or(Path::new("/"));
    let name = placement
        .destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| placement.oid.to_string());
    let staging = super::destination::work_dir_beside(parent, &name, "staging");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| {
            format!(
                "cannot create a directory in `{}`, which holds the tablespace location `{}` ({})",
                parent.display(),
                placement.destination.display(),
                crate::access::who_may(parent)
            )
        })?;
    let staged = StagedTablespace {
        staging: staging.clone(),
        destination: placement.destination.clone(),
        replaces: placement.replaces,
        committed: false,
    };
    // The manifest names tablespace files under pg_tblspc/<oid>/.
    let mut verify = check.map(|check| Verify {
        check,
        prefix: format!("pg_tblspc/{}/", placement.oid),
    });
    let written = match &placement.source {
        TablespaceSource::Tar { key, compression } => extract_archive(
            backups,
            backup,
            &BackupFile {
                key: key.clone(),
                compression: *compression,
            },
            &staging,
            progress,
            verify.as_mut(),
            writer,
            workers,
            reporter,
        )?,
        TablespaceSource::Directory(tree) => copy_tree(
            TreeSource {
                store: tree.store.as_ref(),
                prefix: "",
            },
            &staging,
            progress,
            &mut verify.as_mut(),
            writer,
        )?,
    };
    super::ownership::give_tree(&staging, user)?;
    Ok((staged, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert_eq!(
            parse_mapping("/old/ts=/new/ts").unwrap(),
            (PathBuf::from("/old/ts"), PathBuf::from("/new/ts"))
        );
        assert_eq!(
            parse_mapping(r"/old/a\=b=/new").unwrap(),
            (PathBuf::from("/old/a=b"), PathBuf::from("/new"))
        );
        for bad in ["/old", "=/new", "/old=", "rel=/new", "/old=rel", "/a=/b=/c"] {
            {
                let error = parse_mapping(bad).unwrap_err().to_string();
                assert!(error.contains(&format!("`{bad}`")), "{error}");
            }
        }
    }

    #[test]
    fn occupied_recorded_location_is_refused_unless_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live_ts");
        fs::create_dir(&live).unwrap();
        fs::write(live.join("PG_15"), b"x").unwrap();
        let tablespaces = vec![Tablespace {
            oid: 16384,
            location: live.clone(),
            source: TablespaceSource::Directory(crate::repo::tablespace::TablespaceTree::local(
                &live,
            )),
        }];
        let pgdata = dir.path().join("pgdata");
        let error = place(&tablespaces, &[], &pgdata, false).unwrap_err();
        assert!(
            format!("{error:#}").contains("--tablespace-mapping"),
            "{error:#}"
        );
        let new = dir.path().join("new_ts");
        let placed = place(&tablespaces, &[(live.clone(), new.clone())], &pgdata, false).unwrap();
        assert_eq!(placed[0].destination, new);
        let unknown = place(
            &tablespaces,
            &[(dir.path().join("nope"), new)],
            &pgdata,
            false,
        )
        .unwrap_err();
        assert!(
            format!("{unknown:#}").contains("not a tablespace location"),
            "{unknown:#}"
        );
    }
}
