//! A tar object of the backups store read as one stream of members: the
//! object opened and decompressed on a second thread ([`ReadAhead`]), each
//! member's name checked ([`safe_member_path`]), and the compressed bytes
//! read so far given to a progress bar. The streaming extraction, the
//! streaming delta restore and the reading of one file of a backup all walk
//! a tar this way; what each does with a member is its own.
//!
//! The tar format itself (headers, GNU long names and pax paths, sizes,
//! padding to 512 bytes) is the `tar` crate's: its reader streams, so a
//! member's data is read as it is written and never held whole. Only
//! `seekable::encode` walks headers by hand, because it must keep every
//! byte where it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::extract::safe_member_path;
use super::readahead::ReadAhead;
use super::write::interrupt_or;
use crate::progress::Progress;
use crate::repo::backup::BackupFile;
use crate::repo::store::StoreRead;

/// A tar object of the backups store, opened and being decompressed.
pub struct TarStream {
    /// The object as the store names it (a path on posix), for messages.
    described: PathBuf,
    archive: tar::Archive<ReadAhead>,
    /// Compressed bytes read so far (counted by the decompressing thread).
    consumed: Arc<AtomicU64>,
}

/// One member of the tar, its header read and its name checked; its data
/// is read from `entry`, and must be before the next member is asked for.
pub struct Member<'a> {
    pub entry: tar::Entry<'a, ReadAhead>,
    /// The name as the tar has it, for messages.
    pub name: PathBuf,
    /// The name as a path inside the data directory: relative, without
    /// `..`, never empty.
    pub relative: PathBuf,
}

/// The members of a [`TarStream`], in the order of the tar.
pub struct Members<'a> {
    entries: tar::Entries<'a, ReadAhead>,
    described: &'a Path,
    consumed: &'a AtomicU64,
    reported: u64,
    progress: Option<&'a mut Progress>,
}

impl TarStream {
    /// Opens `file` in `store` and starts decompressing it.
    pub fn open(store: &dyn StoreRead, file: &BackupFile) -> Result<TarStream> {
        let described = PathBuf::from(store.describe(&file.key));
        let decompressed = store
            .open(&file.key)
            .and_then(|reader| ReadAhead::new(reader, file.compression))
            .with_context(|| format!("cannot open `{}`", described.display()))?;
        Ok(TarStream {
            described,
            consumed: decompressed.consumed(),
            archive: tar::Archive::new(decompressed),
        })
    }

    /// The members, one at a time; `progress`, when given, advances by
    /// the compressed bytes read.
    pub fn members<'a>(&'a mut self, progress: Option<&'a mut Progress>) -> Result<Members<'a>> {
        let TarStream {
            described,
            archive,
            consumed,
        } = self;
        let entries = archive
            .entries()
            .with_context(|| format!("cannot read `{}`", described.display()))?;
        Ok(Members {
            entries,
            described,
            consumed,
            reported: 0,
            progress,
        })
    }
}

impl<'a> Members<'a> {
    /// The next member, or `None` at the end of the archive. A member
    /// whose name is the data directory itself (`./`) is passed over; one
    /// whose name could land outside it is refused.
    pub fn next_member(&mut self) -> Result<Option<Member<'a>>> {
        let described = self.described;
        while let Some(entry) = self.entries.next() {
            let entry = entry.map_err(|e| interrupt_or(e, described))?;
            self.report();
            let name = entry
                .path()
                .with_context(|| {
                    format!(
                        "`{}` has a member with an unreadable name",
                        described.display()
                    )
                })?
                .into_owned();
            let relative =
                safe_member_path(&name).with_context(|| format!("in `{}`", described.display()))?;
            if relative.as_os_str().is_empty() {
                continue;
            }
            return Ok(Some(Member {
                entry,
                name,
                relative,
            }));
        }
        Ok(None)
    }

    /// The object as the store names it, for messages.
    pub fn described(&self) -> &'a Path {
        self.described
    }

    /// Ends the walk: the progress bar is given the last bytes read.
    /// Returns the compressed bytes read in all.
    pub fn finish(mut self) -> u64 {
        self.report();
        self.reported
    }

    /// Gives the progress bar the compressed bytes read since last time.
    fn report(&mut self) {
        let now = self.consumed.load(Ordering::Relaxed);
        if let Some(progress) = self.progress.as_deref_mut() {
            progress.add(now.saturating_sub(self.reported));
        }
        self.reported = now;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;
    use crate::compression::Compression;
    use crate::repo::store::posix::Posix;

    /// A tar with the data directory itself (`./`), a file whose name
    /// needs a GNU long-name header, and then `extra` raw members.
    fn tar_with(long: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        builder.append_data(&mut dir, "./", io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(5);
        builder.append_data(&mut file, long, &b"hello"[..]).unwrap();
        for (name, data) in extra {
            // Written by hand: the builder refuses such names.
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn stored(dir: &Path, bytes: &[u8]) -> (Posix, BackupFile) {
        std::fs::write(dir.join("base.tar"), bytes).unwrap();
        let file = BackupFile {
            key: "base.tar".into(),
            compression: Compression::None,
        };
        (Posix::new(dir), file)
    }

    #[test]
    fn members_come_with_checked_names_and_the_bytes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("base/{}/1259", "x".repeat(120));
        let bytes = tar_with(&long, &[]);
        let (store, file) = stored(dir.path(), &bytes);
        let mut tar = TarStream::open(&store, &file).unwrap();
        let mut members = tar.members(None).unwrap();
        let mut member = members.next_member().unwrap().expect("the file");
        assert_eq!(member.relative, Path::new(&long));
        let mut data = String::new();
        member.entry.read_to_string(&mut data).unwrap();
        assert_eq!(data, "hello");
        assert!(members.next_member().unwrap().is_none());
        assert_eq!(members.finish(), bytes.len() as u64);
    }

    #[test]
    fn a_member_outside_the_data_directory_is_refused_with_the_tar_named() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = tar_with("PG_VERSION", &[(b"../evil", b"x")]);
        let (store, file) = stored(dir.path(), &bytes);
        let mut tar = TarStream::open(&store, &file).unwrap();
        let mut members = tar.members(None).unwrap();
        assert!(members.next_member().unwrap().is_some());
        let error = format!("{:#}", members.next_member().err().expect("refused"));
        let described = store.describe("base.tar");
        assert_eq!(
            error,
            format!("in `{described}`: refusing tar member `../evil`: it contains `..`")
        );
    }
}
