//! The commit step, last: what was at `--pgdata` (with `--force`) is moved
//! aside, never deleted, the staged tablespaces and then the staged data
//! directory are renamed into place, and the parent directory is synced so
//! the rename survives a crash.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::destination::{Destination, StagingDir};
use super::tablespaces::StagedTablespace;

/// Renames everything staged into place; returns where the previous
/// `--pgdata` went, if it was moved aside.
pub fn commit(
    staging: StagingDir,
    tablespaces: &mut [StagedTablespace],
    destination: &Destination,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    let parent = staging.parent().to_path_buf();
    let moved_aside = match destination {
        Destination::Absent | Destination::Empty => None,
        Destination::Occupied => Some(move_aside(staging.destination(), &parent)?),
    };
    for staged in tablespaces.iter_mut() {
        if let Some(aside) = staged.commit()? {
            notes.push(format!(
                "the stopped primary's tablespace was moved aside to `{}`",
                aside.display()
            ));
        }
    }
    // rename(2) replaces an empty directory atomically.
    staging.rename_into_place()?;
    if let Ok(dir) = File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(moved_aside)
}

/// Moves a non-empty `--pgdata` to `<name>.pitr-replaced-<time>` beside it.
fn move_aside(pgdata: &Path, parent: &Path) -> Result<PathBuf> {
    // Checked before staging too; a server may have been started there
    // since (staging takes a while).
    if let Some(server) = crate::postgres::live::server_in_or_around(pgdata, 2) {
        bail!(
            "`{}` is in use now: {}; it was not moved aside",
            pgdata.display(),
            server.describe()
        );
    }
    let name = pgdata
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = parent.join(format!(
        "{name}.pitr-replaced-{}",
        chrono::Local::now().format("%Y%m%dT%H%M%S")
    ));
    fs::rename(pgdata, &aside).with_context(|| {
        format!(
            "cannot move `{}` aside to `{}`",
            pgdata.display(),
            aside.display()
        )
    })?;
    Ok(aside)
}
