//! `pitr wal-fetch NAME DEST`: the restore_command.
//!
//! Exit status 0 when the file was delivered, 1 when the archive does not
//! have it (PostgreSQL then looks elsewhere or ends recovery), and 126 for
//! any other error, because PostgreSQL treats statuses above 125 as fatal
//! instead of as "not found": an unreadable archive must stop recovery, not
//! end it early.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::WalFetchArgs;
use crate::compression::Compression;
use crate::repo::archive;
use crate::wal::segment::is_segment_name;

/// The outcome of one fetch.
pub enum Fetched {
    Delivered,
    NotFound,
}

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_ERROR: u8 = 126;

pub fn run(args: &WalFetchArgs) -> u8 {
    match fetch(args) {
        Ok(Fetched::Delivered) => 0,
        Ok(Fetched::NotFound) => EXIT_NOT_FOUND,
        Err(error) => {
            eprintln!("pitr wal-fetch: error: {error:#}");
            EXIT_ERROR
        }
    }
}

/// `PITR_FETCH_DELAY_MS` makes every fetch wait that long: it simulates a
/// remote archive, for benchmarks of prefetching and for tests that must
/// catch a restore in the middle of replay.
fn simulated_latency() {
    if let Some(delay) = std::env::var("PITR_FETCH_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

/// Only names PostgreSQL asks for are served, so a request can never
/// reach outside the archive directory.
fn is_servable(name: &str) -> bool {
    if is_segment_name(name) {
        return true;
    }
    if let Some(digits) = name.strip_suffix(".history") {
        return digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    }
    if let Some(rest) = name.strip_suffix(".partial") {
        return is_segment_name(rest);
    }
    false
}

pub fn fetch(args: &WalFetchArgs) -> Result<Fetched> {
    simulated_latency();
    let dir =
        crate::repo::wal_archive_dir(args.repo.repo.as_deref(), args.repo.wal_archive.as_deref())?;
    if !is_servable(&args.name) {
        bail!("`{}` is not a WAL segment or history file name", args.name);
    }
    if !dir.is_dir() {
        bail!(
            "the WAL archive `{}` is not a readable directory",
            dir.display()
        );
    }
    let copies = archive::copies_in(&dir, &args.name)?;
    let Some(preferred) = copies.first() else {
        return Ok(Fetched::NotFound);
    };
    // Several copies (plain and compressed, or two compressions) are served
    // only when they agree: replaying the wrong one of two different files
    // would silently recover something else than the primary had.
    if copies.len() > 1 {
        archive::check_copies_agree(&copies)?;
    }
    let file = File::open(&preferred.path)
        .with_context(|| format!("cannot open `{}`", preferred.path.display()))?;
    deliver(
        file,
        preferred.compression,
        &preferred.path,
        &args.destination,
    )?;
    Ok(Fetched::Delivered)
}

/// Writes to a temporary name next to `destination`, then renames, so
/// PostgreSQL never sees a partial file.
fn deliver(file: File, compression: Compression, source: &Path, destination: &Path) -> Result<()> {
    let dir = destination
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".pitr-fetch-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    let mut reader = compression
        .decoder(file)
        .with_context(|| format!("cannot read `{}`", source.display()))?;
    io::copy(&mut reader, temp.as_file_mut()).with_context(|| {
        format!(
            "cannot copy `{}` to `{}`",
            source.display(),
            destination.display()
        )
    })?;
    temp.persist(destination)
        .with_context(|| format!("cannot rename into `{}`", destination.display()))?;
    let _ = fs::metadata(destination);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wal_names_are_served() {
        assert!(is_servable("000000010000000000000003"));
        assert!(is_servable("00000002.history"));
        assert!(is_servable("000000010000000000000003.partial"));
        assert!(!is_servable("../etc/passwd"));
        assert!(!is_servable("000000010000000000000003.00000028.backup"));
        assert!(!is_servable(""));
    }
}
