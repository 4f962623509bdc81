//! pg_basebackup's single tar stream (`-D - -Ft`, pitr's with `-X none`) split into the
//! layout of a backup pg_basebackup writes into a directory, as it goes by.
//!
//! Written to stdout, a backup is one tar: the data directory, its WAL
//! under `pg_wal/` (fetched at the end) and, from PostgreSQL 13 on, the
//! `backup_manifest` injected as the last member. Written to a directory
//! (`-X stream`), the same backup is `base.tar` without WAL or manifest,
//! `pg_wal.tar` holding the WAL relative to `pg_wal/`, and
//! `backup_manifest` beside them. Every reader of a repository (list,
//! plan, verify, restore) knows the second layout, so a streamed backup is
//! stored in it: members are routed, never buffered beyond one tar block,
//! except the manifest (a few MB at most for a million files), which is
//! stored last, on its own.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::backup::MANIFEST;

/// The two tars a backup directory holds, without compression suffix.
pub const BASE_TAR: &str = "base.tar";
pub const WAL_TAR: &str = "pg_wal.tar";

/// What the split wrote: the tar writers, each ended with the tar
/// trailer (the caller finishes compression and storage), and the
/// manifest's bytes.
pub struct SplitBackup<W: Write> {
    pub base: W,
    /// `None` when the stream held no WAL file (`-X none`).
    pub wal: Option<W>,
    pub manifest: Option<Vec<u8>>,
    /// Uncompressed tar bytes of the data files, for the summary.
    pub data_bytes: u64,
}

/// Reads the tar `input` to its end and writes its members into
/// `open(BASE_TAR)` and, from the first WAL file on, `open(WAL_TAR)`. The
/// headers are copied as they are, except WAL names (made relative to
/// `pg_wal/`); input after the end-of-archive blocks is read and dropped
/// so that the producer never blocks on a full pipe.
pub fn split_backup_tar<R: Read, W: Write>(
    input: R,
    mut open: impl FnMut(&str) -> io::Result<W>,
) -> io::Result<SplitBackup<W>> {
    let mut base = tar::Builder::new(open(BASE_TAR)?);
    let mut wal: Option<tar::Builder<W>> = None;
    let mut manifest = None;
    let mut data_bytes = 0u64;
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let header = entry.header().clone();
        if path == Path::new(MANIFEST) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            manifest = Some(bytes);
            continue;
        }
        match wal_member(&path, &header) {
            Some(relative) => {
                let builder = match &mut wal {
                    Some(builder) => builder,
                    None => wal.insert(tar::Builder::new(open(WAL_TAR)?)),
                };
                let mut header = header;
                builder.append_data(&mut header, relative, &mut entry)?;
            }
            None => {
                data_bytes += header.entry_size().unwrap_or(0);
                append_as_is(&mut base, header, &path, &mut entry)?;
            }
        }
    }
    // The end-of-archive blocks and anything pg_basebackup pads with.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(SplitBackup {
        base: base.into_inner()?,
        wal: wal.map(tar::Builder::into_inner).transpose()?,
        manifest,
        data_bytes,
    })
}

/// A file under `pg_wal/` (a segment, a history file, an
/// `archive_status/` flag), as named in `pg_wal.tar`. The `pg_wal`
/// directory entries themselves stay in `base.tar`, as with `-X stream`.
fn wal_member(path: &Path, header: &tar::Header) -> Option<PathBuf> {
    if header.entry_type().is_dir() {
        return None;
    }
    let relative = path.strip_prefix("pg_wal").ok()?;
    (relative.components().count() > 0).then(|| relative.to_path_buf())
}

/// Appends `entry` with its own header bytes when they name it whole (the
/// tars PostgreSQL writes: short ustar names), else with the name
/// re-encoded (a GNU long name the reader had resolved).
fn append_as_is<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    path: &Path,
    data: &mut dyn Read,
) -> io::Result<()> {
    if header.path().is_ok_and(|named| named == path) {
        builder.append(&header, data)
    } else {
        builder.append_data(&mut header, path, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(builder: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, body).unwrap();
    }

    fn dir(builder: &mut tar::Builder<Vec<u8>>, name: &str) {
        let mut header = tar::Header::new_ustar();
        header.set_size(0);
        header.set_mode(0o700);
        header.set_entry_type(tar::EntryType::Directory);
        builder.append_data(&mut header, name, io::empty()).unwrap();
    }

    fn names(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut body = Vec::new();
                entry.read_to_end(&mut body).unwrap();
                (name, body)
            })
            .collect()
    }

    /// The shape of `pg_basebackup -D - -Ft -X fetch` on PostgreSQL 15.
    fn stdout_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        member(
            &mut builder,
            "backup_label",
            b"START WAL LOCATION: 0/2000028\n",
        );
        dir(&mut builder, "base");
        member(&mut builder, "base/1/1259", &[7u8; 8192]);
        dir(&mut builder, "pg_wal");
        dir(&mut builder, "pg_wal/archive_status");
        member(&mut builder, "global/pg_control", &[1u8; 8192]);
        member(
            &mut builder,
            "pg_wal/000000010000000000000002",
            &[2u8; 4096],
        );
        member(
            &mut builder,
            "pg_wal/archive_status/000000010000000000000002.done",
            b"",
        );
        member(
            &mut builder,
            "backup_manifest",
            b"{\"PostgreSQL-Backup-Manifest-Version\": 1}",
        );
        let mut bytes = builder.into_inner().unwrap();
        // pg_basebackup ends with more zero blocks than tar needs.
        bytes.extend_from_slice(&[0u8; 4096]);
        bytes
    }

    #[test]
    fn wal_and_manifest_leave_the_base_tar() {
        let input = stdout_tar();
        let mut opened = Vec::new();
        let split = split_backup_tar(&input[..], |name| {
            opened.push(name.to_string());
            Ok(Vec::new())
        })
        .unwrap();
        assert_eq!(opened, [BASE_TAR, WAL_TAR]);
        let base: Vec<String> = names(&split.base).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            base,
            [
                "backup_label",
                "base",
                "base/1/1259",
                "pg_wal",
                "pg_wal/archive_status",
                "global/pg_control"
            ]
        );
        let wal = names(split.wal.as_ref().unwrap());
        assert_eq!(wal[0].0, "000000010000000000000002");
        assert_eq!(wal[0].1, vec![2u8; 4096]);
        assert_eq!(wal[1].0, "archive_status/000000010000000000000002.done");
        assert_eq!(
            split.manifest.as_deref(),
            Some(&b"{\"PostgreSQL-Backup-Manifest-Version\": 1}"[..])
        );
        assert_eq!(split.data_bytes, 30 + 8192 * 2);
    }

    #[test]
    fn data_members_keep_their_header_bytes() {
        let input = stdout_tar();
        let split = split_backup_tar(&input[..], |_| Ok(Vec::new())).unwrap();
        // backup_label is the first member in both: same 512 header bytes.
        assert_eq!(&split.base[..512], &input[..512]);
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let input = stdout_tar();
        let cut = &input[..512 + 100];
        assert!(split_backup_tar(cut, |_| Ok(Vec::new())).is_err());
    }

    #[test]
    fn no_wal_no_wal_tar() {
        let mut builder = tar::Builder::new(Vec::new());
        member(&mut builder, "backup_label", b"x");
        let input = builder.into_inner().unwrap();
        let split = split_backup_tar(&input[..], |_| Ok(Vec::new())).unwrap();
        assert!(split.wal.is_none() && split.manifest.is_none());
    }
}
