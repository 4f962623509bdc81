//! The server's side of pushing WAL ahead: which segments PostgreSQL has
//! marked ready to archive (`pg_wal/archive_status/<segment>.ready`), and
//! the local record `wal-push` keeps of each segment it pushed before
//! PostgreSQL asked for it.
//!
//! A record says: this many bytes with this CRC-32C were durably stored in
//! that archive. It is written only after the store confirmed the write,
//! so a crash leaves at worst a segment stored without a record (pushed
//! again, and found identical). When PostgreSQL then hands the segment over,
//! the file is read again and must match the record in size, checksum and
//! archive; anything else (no record, a torn one, another archive, other
//! bytes) means a normal push. So a quick answer is never a guess.
//!
//! Why CRC-32C and not SHA-256: the record guards against accidental
//! change (a recycled, rewritten or truncated file), not against someone
//! who can already write `pg_wal`; CRC-32C runs in hardware at several GB/s
//! where SHA-256 costs ~50 ms of CPU per 16 MiB segment here, which is
//! most of what a push costs on a nearby store (measured with
//! bench/object.sh). Any change of a file of the same size that keeps its
//! CRC-32C is a 1 in 2^32 accident.
//!
//! The records live in `pg_wal/.pitr-pushed/`: beside the files they
//! describe, owned by the server's OS user like them, and outside base
//! backups (`pg_basebackup` copies no file of `pg_wal`), so a restored copy
//! of the cluster never inherits them. PostgreSQL ignores names in
//! `pg_wal` that are not WAL file names.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::repo::archive_name::WalFileName;

/// The directory of the records, inside `pg_wal`.
pub const RECORDS_DIR: &str = ".pitr-pushed";

/// A server's `pg_wal`, found beside the file PostgreSQL handed over.
#[derive(Debug)]
pub struct PgWal {
    dir: PathBuf,
}

impl PgWal {
    /// The `pg_wal` holding `handed_over`, when it is one: its directory
    /// has `archive_status/`. A file pushed by hand from elsewhere has none,
    /// and nothing is pushed ahead or remembered for it.
    pub fn holding(handed_over: &Path) -> Option<PgWal> {
        let dir = match handed_over.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        dir.join("archive_status").is_dir().then(|| PgWal {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The segments marked ready after `name`, in WAL order (the order
    /// PostgreSQL's archiver asks for them), at most `limit`. Only whole
    /// segments: history, backup history and `.partial` files are few and
    /// small, and PostgreSQL hands them over itself.
    pub fn ready_after(&self, name: &str, limit: usize) -> io::Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut ready: Vec<String> = self
            .ready_names()?
            .into_iter()
            .filter(|segment| {
                segment.as_str() > name
                    && matches!(WalFileName::parse(segment), Some(WalFileName::Segment(_)))
            })
            .collect();
        ready.sort();
        ready.truncate(limit);
        Ok(ready)
    }

    /// Every name with a `.ready` status file.
    fn ready_names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.dir.join("archive_status"))? {
            let entry = entry?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_suffix(".ready"))
            {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The records of pushed-ahead segments in this `pg_wal`.
    pub fn records(&self) -> Records {
        Records {
            dir: self.dir.join(RECORDS_DIR),
        }
    }
}

/// A file's size and CRC-32C, read from its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub crc32c: u32,
}

impl Fingerprint {
    pub fn of(file: &mut File) -> io::Result<Fingerprint> {
        file.rewind()?;
        let mut crc = 0u32;
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buffer[..read]);
            size += read as u64;
        }
        Ok(Fingerprint { size, crc32c: crc })
    }
}

/// One pushed-ahead segment: `fingerprint` is durably stored as `key` in
/// the archive whose identity is `archive` (so that a record made for one
/// archive never answers for another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRecord {
    pub name: String,
    pub archive: String,
    pub key: String,
    pub fingerprint: Fingerprint,
}

const HEADER: &str = "pitr pushed-ahead record 2";

impl PushRecord {
    fn to_text(&self) -> String {
        format!(
            "{HEADER}\nname={}\narchive={}\nkey={}\nsize={}\ncrc32c={:08x}\n",
            self.name, self.archive, self.key, self.fingerprint.size, self.fingerprint.crc32c
        )
    }

    /// `None` for anything not written whole by [`PushRecord::to_text`]
    /// (a record torn by a crash is no record).
    fn parse(text: &str) -> Option<PushRecord> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != HEADER {
            return None;
        }
        let mut field = |key: &str| {
            lines
                .next()
                .and_then(|line| line.strip_prefix(key))
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        };
        let record = PushRecord {
            name: field("name")?,
            archive: field("archive")?,
            key: field("key")?,
            fingerprint: Fingerprint {
                size: field("size")?.parse().ok()?,
                crc32c: u32::from_str_radix(&field("crc32c")?, 16).ok()?,
            },
        };
        lines.next().is_none().then_some(record)
    }
}

/// The records directory of one `pg_wal`.
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The record of `name`, if a whole one is there.
    pub fn get(&self, name: &str) -> Option<PushRecord> {
        let text = fs::read_to_string(self.path_of(name)).ok()?;
        PushRecord::parse(&text).filter(|record| record.name == name)
    }

    /// The key under which `file` (PostgreSQL's `name`) is stored in the
    /// archive whose identity is `archive`, when a record says so and the
    /// file is exactly what the record describes: same size, same CRC-32C
    /// (the file is read whole to prove it).
    pub fn confirms(
        &self,
        name: &str,
        archive: &str,
        file: &mut File,
    ) -> io::Result<Option<String>> {
        let Some(record) = self.get(name) else {
            return Ok(None);
        };
        // The size first: a file of another size needs no reading.
        if record.archive != archive || file.metadata()?.len() != record.fingerprint.size {
            return Ok(None);
        }
        Ok((Fingerprint::of(file)? == record.fingerprint).then_some(record.key))
    }

    /// Writes `record` whole or not at all (a temporary file renamed).
    /// Not synced: a record lost in a crash only costs a push.
    pub fn write(&self, record: &PushRecord) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        self.give_to_server_user(&self.dir)?;
        let temp = self
            .dir
            .join(format!(".{}.{}.tmp", record.name, std::process::id()));
        let written = File::create(&temp)
            .and_then(|mut file| file.write_all(record.to_text().as_bytes()))
            .and_then(|()| self.give_to_server_user(&temp))
            .and_then(|()| fs::rename(&temp, self.path_of(&record.name)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Run as root (a DBA pushing a segment by hand), `path` takes the
    /// owner of `pg_wal`: the server's OS user, whose archive_command
    /// writes and prunes the next records and could not in a directory
    /// root kept for itself (push-ahead would quietly stop paying off).
    fn give_to_server_user(&self, path: &Path) -> io::Result<()> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let pg_wal = self.dir.parent().unwrap_or(Path::new("."));
        let owner = fs::metadata(pg_wal)?;
        std::os::unix::fs::lchown(path, Some(owner.uid()), Some(owner.gid()))
    }

    /// Forgets `name` (answered for, or found stale).
    pub fn forget(&self, name: &str) {
        let _ = fs::remove_file(self.path_of(name));
    }

    /// Removes records (and temporary files of crashed writers) of
    /// segments PostgreSQL no longer has marked ready: archived some other
    /// way, or gone. Best effort; a record left over is still checked
    /// against the file before it answers.
    pub fn prune(&self, pg_wal: &PgWal) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let Ok(ready) = pg_wal.ready_names() else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let stale = if let Some(temp) = name.strip_prefix('.') {
                // `.<segment>.<pid>.tmp` of a writer that is not running.
                let pid = temp
                    .strip_suffix(".tmp")
                    .and_then(|rest| rest.rsplit('.').next())
                    .and_then(|pid| pid.parse::<u32>().ok());
                pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            } else {
                !ready.iter().any(|r| r == name)
            };
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_wal() -> (tempfile::TempDir, PgWal) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("archive_status")).unwrap();
        let pg_wal = PgWal::holding(&dir.path().join("000000010000000000000001")).unwrap();
        (dir, pg_wal)
    }

    fn ready(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).unwrap();
        fs::write(dir.join("archive_status").join(format!("{name}.ready")), "").unwrap();
    }

    #[test]
    fn only_a_pg_wal_with_archive_status_is_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PgWal::holding(&dir.path().join("000000010000000000000001")).is_none());
    }

    #[test]
    fn ready_segments_after_the_name_in_wal_order_bounded() {
        let (dir, pg_wal) = pg_wal();
        for name in [
            "000000010000000000000004",
            "000000010000000000000002",
            "000000010000000000000001",
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
            "000000020000000000000003",
        ] {
            ready(dir.path(), name, b"x");
        }
        // Done already: not ready.
        fs::write(
            dir.path()
                .join("archive_status/000000010000000000000009.done"),
            "",
        )
        .unwrap();
        assert_eq!(
            pg_wal.ready_after("000000010000000000000001", 10).unwrap(),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000003"
            ]
        );
        assert_eq!(
            pg_wal.ready_after("000000010000000000000002", 2).unwrap(),
            ["000000010000000000000003", "000000010000000000000004"]
        );
        assert!(pg_wal
            .ready_after("000000010000000000000001", 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_record_answers_only_for_the_same_bytes_in_the_same_archive() {
        let (dir, pg_wal) = pg_wal();
        let name = "000000010000000000000002";
        ready(dir.path(), name, &[7u8; 100_000]);
        let records = pg_wal.records();
        let mut file = File::open(pg_wal.path_of(name)).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
        let fingerprint = Fingerprint::of(&mut file).unwrap();
        records
            .write(&PushRecord {
                name: name.into(),
                archive: "s3://b/p/wal".into(),
                key: format!("{name}.zst"),
                fingerprint,
            })
            .unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_some());
        // Another archive.
        assert!(records
            .confirms(name, "s3://b/p/wal2", &mut file)
            .unwrap()
            .is_none());
        // One byte changed, same size.
        let mut other = vec![7u8; 100_000];
        other[5000] = 8;
        fs::write(pg_wal.path_of(name), &other).unwrap();
        let mut file = File::open(pg_wal.path_of(name)).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
        // Shorter (a partial file).
        fs::write(pg_wal.path_of(name), [7u8; 50_000]).unwrap();
        let mut file = File::open(pg_wal.path_of(name)).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
        // A torn record is no record.
        let path = dir.path().join(RECORDS_DIR).join(name);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(pg_wal.path_of(name), [7u8; 100_000]).unwrap();
        let mut file = File::open(pg_wal.path_of(name)).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_some());
        fs::write(&path, &text[..text.len() - 10]).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
        fs::write(&path, "").unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
        // A record under another segment's name does not answer.
        fs::write(&path, text.replace(name, "000000010000000000000003")).unwrap();
        assert!(records
            .confirms(name, "s3://b/p/wal", &mut file)
            .unwrap()
            .is_none());
    }

    #[test]
    fn records_of_segments_no_longer_ready_are_pruned() {
        let (dir, pg_wal) = pg_wal();
        let records = pg_wal.records();
        let fingerprint = Fingerprint { size: 1, crc32c: 0 };
        for name in ["000000010000000000000002", "000000010000000000000003"] {
            ready(dir.path(), name, b"x");
            records
                .write(&PushRecord {
                    name: name.into(),
                    archive: "/a".into(),
                    key: name.into(),
                    fingerprint: fingerprint.clone(),
                })
                .unwrap();
        }
        // A crashed writer's temporary file (no such process).
        let temp = dir
            .path()
            .join(RECORDS_DIR)
            .join(".000000010000000000000004.4000000000.tmp");
        fs::write(&temp, "half").unwrap();
        fs::rename(
            dir.path()
                .join("archive_status/000000010000000000000002.ready"),
            dir.path()
                .join("archive_status/000000010000000000000002.done"),
        )
        .unwrap();
        records.prune(&pg_wal);
        assert!(records.get("000000010000000000000002").is_none());
        assert!(records.get("000000010000000000000003").is_some());
        assert!(!temp.exists());
    }

    #[test]
    fn records_written_by_root_belong_to_the_owner_of_pg_wal() {
        // Only root can give files away; that is the case being tested.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let (dir, pg_wal) = pg_wal();
        let server_user = 65534; // nobody: anyone but root
        std::os::unix::fs::chown(dir.path(), Some(server_user), Some(server_user)).unwrap();
        let name = "000000010000000000000002";
        pg_wal
            .records()
            .write(&PushRecord {
                name: name.into(),
                archive: "/a".into(),
                key: name.into(),
                fingerprint: Fingerprint { size: 1, crc32c: 0 },
            })
            .unwrap();
        for path in [
            dir.path().join(RECORDS_DIR),
            dir.path().join(RECORDS_DIR).join(name),
        ] {
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (server_user, server_user),
                "{}",
                path.display()
            );
        }
    }
}
