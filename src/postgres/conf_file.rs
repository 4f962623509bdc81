//! The configuration files `pitr init` leaves for PostgreSQL: a file of
//! its own in `conf.d/` (`--conf-file`), or `postgresql.conf` when stdout
//! is appended to it (`pitr init >> postgresql.conf`).

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes `block` as the whole of `file` (a new name, then renamed over
/// it), so that writing it again never duplicates a line.
pub fn write_whole(file: &Path, block: &str) -> io::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".pitr-conf-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    temp.write_all(block.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(file).map_err(|error| error.error)?;
    Ok(())
}

/// The file stdout appends to when it already holds `block`: printing it
/// again would only duplicate it.
pub fn stdout_already_holds(block: &str) -> Option<PathBuf> {
    const STDOUT: &str = "/proc/self/fd/1";
    if !std::fs::metadata(STDOUT).ok()?.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(STDOUT).ok()?;
    if !text.contains(block) {
        return None;
    }
    std::fs::read_link(STDOUT).ok()
}
