//! The files PostgreSQL exchanges with its archive_command and
//! restore_command (`%p`, in or beside its `pg_wal`): the finished WAL file
//! `wal-push` is handed, and the file `wal-fetch` delivers. They are the
//! server's own files, local by nature; the archive they come from or go to
//! is read and written through the repository's store.

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// The WAL file PostgreSQL hands to archive_command, open for reading.
pub struct HandedOver {
    pub file: File,
    /// Its permission bits: the archived copy keeps them, as `cp` does.
    pub mode: u32,
}

/// Why a handed-over file cannot be archived.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// Not something PostgreSQL would hand over (bad usage).
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    /// It could not be read (PostgreSQL retries later).
    #[error(transparent)]
    Unreadable(#[from] anyhow::Error),
}

/// Opens `%p` of archive_command: a regular file.
pub fn open_handed_over(path: &Path) -> Result<HandedOver, HandOverError> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    if !metadata.is_file() {
        return Err(HandOverError::NotAFile(path.display().to_string()));
    }
    Ok(HandedOver {
        file,
        mode: metadata.permissions().mode(),
    })
}

/// Delivers `%p` of restore_command: `write` fills a temporary file next
/// to `destination`, which is then renamed, so PostgreSQL never sees a
/// partial file. Returns what `write` returned.
pub fn deliver<T>(destination: &Path, write: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = destination
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".pitr-fetch-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    let written = write(temp.as_file_mut())?;
    temp.persist(destination)
        .with_context(|| format!("cannot rename into `{}`", destination.display()))?;
    Ok(written)
}

/// Appends `line` to the file `PITR_FETCH_LOG` names, when it is set: the
/// restore_command's own timing log, for the prefetch benchmark. Failures
/// are ignored: it is a diagnostic.
pub fn log_fetch(line: &str) {
    let Some(path) = std::env::var_os("PITR_FETCH_LOG") else {
        return;
    };
    if let Ok(mut file) = File::options().create(true).append(true).open(path) {
        let _ = io::Write::write_all(&mut file, format!("{line}\n").as_bytes());
    }
}
