//! `pitr wal-fetch NAME DEST`: the restore_command.
//!
//! Exit status 0 when the file was delivered, 1 when the archive does not
//! have it (PostgreSQL then looks elsewhere or ends recovery), and 126 for
//! any other error, because PostgreSQL treats statuses above 125 as fatal
//! instead of as "not found": an unreadable archive must stop recovery, not
//! end it early.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::cli::WalFetchArgs;
use crate::compression::Compression;
use crate::postgres::pg_wal;
use crate::repo::archive::{self, ArchivedFile};
use crate::repo::archive_name::WalFileName;
use crate::repo::store::StoreRead;
use crate::repo::ArchiveAt;
use crate::wal::segment::is_segment_name;

/// The outcome of one fetch.
pub enum Fetched {
    Delivered,
    NotFound,
}

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_ERROR: u8 = 126;

pub fn run(args: &WalFetchArgs) -> u8 {
    let started = std::time::Instant::now();
    let result = fetch(args);
    log_timing(args, &result, started.elapsed());
    match result {
        Ok(Fetched::Delivered) => 0,
        Ok(Fetched::NotFound) => EXIT_NOT_FOUND,
        Err(error) => {
            eprintln!("pitr wal-fetch: error: {error:#}");
            EXIT_ERROR
        }
    }
}

/// `PITR_FETCH_LOG=FILE` appends one line per call (name, outcome,
/// microseconds): how long replay waited on restore_command, for the
/// prefetch benchmark.
fn log_timing(args: &WalFetchArgs, result: &Result<Fetched>, elapsed: std::time::Duration) {
    let outcome = match result {
        Ok(Fetched::Delivered) => "delivered",
        Ok(Fetched::NotFound) => "not-found",
        Err(_) => "error",
    };
    pg_wal::log_fetch(&format!("{} {outcome} {}", args.name, elapsed.as_micros()));
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
    WalFileName::parse(name).is_some_and(|name| name.is_servable())
}

/// Names that are never archived (see [`WalFileName::cannot_exist`]).
fn cannot_exist(name: &str) -> bool {
    WalFileName::parse(name).is_some_and(|name| name.cannot_exist())
}

pub fn fetch(args: &WalFetchArgs) -> Result<Fetched> {
    // A segment the restore prefetched: moved into place, no copy.
    if let Some(spool) = &args.spool {
        if is_segment_name(&args.name)
            && crate::prefetch::take_spooled(spool, &args.name, &args.destination)
        {
            return Ok(Fetched::Delivered);
        }
    }
    let archive_at =
        crate::repo::wal_archive_at(args.repo.repo.as_deref(), args.repo.wal_archive.as_deref())?;
    if !is_servable(&args.name) {
        bail!("`{}` is not a WAL segment or history file name", args.name);
    }
    if cannot_exist(&args.name) {
        return Ok(Fetched::NotFound);
    }
    simulated_latency();
    let archive: Arc<dyn StoreRead> = match archive_at {
        ArchiveAt::Dir(dir) => match crate::repo::open_archive_read(&dir) {
            Some(archive) => archive,
            None => bail!(
                "the WAL archive `{}` is not a readable directory",
                dir.display()
            ),
        },
        // A store that cannot be reached is an error (126, which stops
        // recovery), never "not found" (which would end it early).
        ArchiveAt::Object(url) => Arc::new(crate::repo::open_object_storage(&url)?),
    };
    serve(&archive, &args.name, &args.destination)
}

/// Delivers the archived copy of `name` to `destination`; only reads the
/// archive.
fn serve(archive: &Arc<dyn StoreRead>, name: &str, destination: &Path) -> Result<Fetched> {
    let mut copies = archive::copies_in(archive, name)?;
    if copies.is_empty() && is_segment_name(name) {
        // PostgreSQL never asks for `.partial` files; where a segment exists
        // only as one (the end of a promoted timeline, pg_receivewal's last
        // segment), its WAL is served under the segment's name.
        copies = archive::partial_copies_in(archive, name)?;
    }
    let Some(preferred) = copies.first() else {
        return Ok(Fetched::NotFound);
    };
    // Several copies (plain and compressed, or two compressions) are served
    // only when they agree: replaying the wrong one of two different files
    // would silently recover something else than the primary had.
    if copies.len() > 1 {
        archive::check_copies_agree(&copies)?;
    }
    deliver(preferred, destination)?;
    Ok(Fetched::Delivered)
}

/// Copies the archived file into PostgreSQL's `destination` (see
/// [`pg_wal::deliver`]: it never sees a partial file).
fn deliver(file: &ArchivedFile, destination: &Path) -> Result<()> {
    pg_wal::deliver(destination, |out| {
        // A plain file is copied file to file, which the store may do in
        // place (copy_file_range on posix); compressed ones stream through
        // their decoder.
        let copied = match file.compression {
            Compression::None => file.download(out),
            _ => {
                let stored = file
                    .open_stored()
                    .with_context(|| format!("cannot open `{}`", file.describe()))?;
                let mut reader = file
                    .compression
                    .decoder(stored)
                    .with_context(|| format!("cannot read `{}`", file.describe()))?;
                io::copy(&mut reader, out)
            }
        };
        copied.with_context(|| {
            format!(
                "cannot copy `{}` to `{}`",
                file.describe(),
                destination.display()
            )
        })?;
        if file.partial {
            pad(out, &file.describe())?;
        }
        Ok(())
    })
}

/// Extends a partial segment with zeroes to its full size (from its own
/// page header): PostgreSQL refuses restored segments of another size, and
/// zeroes after the last record read as the end of the WAL.
fn pad(file: &mut File, source: &str) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut header = [0u8; crate::wal::page::LONG_HEADER_LEN];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .with_context(|| format!("`{source}` is too short to be a WAL segment"))?;
    let parsed = crate::wal::page::LongPageHeader::parse(&header)
        .with_context(|| format!("`{source}` does not start with a WAL page header"))?;
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    if length < parsed.segment_size.bytes() {
        file.set_len(parsed.segment_size.bytes())
            .with_context(|| format!("cannot pad `{source}`"))?;
    }
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

    #[test]
    fn only_the_first_timelines_history_cannot_exist() {
        assert!(cannot_exist("00000001.history"));
        assert!(!cannot_exist("00000002.history"));
        assert!(!cannot_exist("00000010.history"));
        assert!(!cannot_exist("000000010000000000000001"));
        assert!(!cannot_exist("000000010000000000000001.partial"));
    }
}
