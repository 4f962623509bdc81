//! Checking files against a `backup_manifest` as they stream past, so that
//! a restore verifies the backup while writing it (no second pass) and
//! `pitr verify` reads each file once.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use super::manifest::{BackupManifest, ChecksumAlgorithm, Checksummer, ManifestFile};

/// Files pg_basebackup changes or adds after the manifest is written, or
/// that the manifest never lists (as pg_verifybackup ignores them).
pub fn is_ignored(path: &str) -> bool {
    matches!(
        path,
        "backup_manifest" | "postgresql.auto.conf" | "recovery.signal" | "standby.signal"
    ) || path == "pg_wal"
        || path.starts_with("pg_wal/")
}

/// The manifest's expectations and what has been seen so far.
pub struct ManifestCheck {
    files: HashMap<String, ManifestFile>,
    seen: HashSet<String>,
    /// Files staged sparse on purpose (not their content), so not checked
    /// beyond their size.
    sparse: u64,
}

impl ManifestCheck {
    pub fn new(manifest: &BackupManifest) -> ManifestCheck {
        ManifestCheck {
            files: manifest
                .files
                .iter()
                .map(|f| (f.path.clone(), f.clone()))
                .collect(),
            seen: HashSet::new(),
            sparse: 0,
        }
    }

    /// A checksummer for `path` if the manifest has a checksum for it.
    pub fn checksummer(&self, path: &str) -> Option<Checksummer> {
        let (algorithm, _) = self.files.get(path)?.checksum.as_ref()?;
        Some(Checksummer::new(*algorithm))
    }

    /// Compares one file with the manifest; the error names the file.
    pub fn record(&mut self, path: &str, size: u64, digest: Option<String>) -> Result<(), String> {
        if is_ignored(path) {
            return Ok(());
        }
        self.seen.insert(path.to_string());
        let Some(expected) = self.files.get(path) else {
            return Err(format!(
                "`{path}` is in the backup but not in its backup_manifest"
            ));
        };
        if expected.size != size {
            return Err(format!(
                "`{path}` has {size} bytes, but the backup_manifest says {}",
                expected.size
            ));
        }
        if let (Some((algorithm, want)), Some(got)) = (&expected.checksum, digest) {
            if !want.eq_ignore_ascii_case(&got) {
                return Err(format!(
                    "`{path}` has {} checksum {got}, but the backup_manifest says {want}",
                    algorithm_name(*algorithm)
                ));
            }
        }
        Ok(())
    }

    /// A file written sparse on purpose (a database a one-database restore
    /// does not need): listed and of its size, its content deliberately
    /// not written, so not checksummed; counted.
    pub fn record_sparse(&mut self, path: &str, size: u64) -> Result<(), String> {
        self.record(path, size, None)?;
        self.sparse += 1;
        Ok(())
    }

    /// How many files were skipped as sparse.
    pub fn sparse(&self) -> u64 {
        self.sparse
    }

    /// Files the manifest lists that never came by.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .files
            .keys()
            .filter(|path| !is_ignored(path) && !self.seen.contains(*path))
            .cloned()
            .collect();
        missing.sort();
        missing
    }
}

fn algorithm_name(algorithm: ChecksumAlgorithm) -> &'static str {
    algorithm.name()
}

/// A writer that checksums what passes through it.
pub struct Hashing<W> {
    pub inner: W,
    pub checksummer: Option<Checksummer>,
    pub written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(checksummer) = &mut self.checksummer {
            checksummer.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest;

    fn sample() -> BackupManifest {
        let text = br#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-24 01:20:43 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" },
{ "Path": "global/pg_control", "Size": 4, "Last-Modified": "2026-11-24 01:20:43 GMT" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/C000028", "End-LSN": "0/C000100" }
],
"Manifest-Checksum": "0000000000000000000000000000000000000000000000000000000000000000"}
"#;
        manifest::parse(text).unwrap()
    }

    #[test]
    fn checks_sizes_checksums_extras_and_missing() {
        let mut check = ManifestCheck::new(&sample());
        let mut summer = check.checksummer("PG_VERSION").unwrap();
        summer.update(b"15\n");
        let digest = summer.finish();
        let error = check.record("PG_VERSION", 3, Some(digest)).unwrap_err();
        assert!(error.contains("checksum"), "{error}");
        assert!(check
            .record("global/pg_control", 5, None)
            .unwrap_err()
            .contains("5 bytes"));
        assert!(check
            .record("extra", 1, None)
            .unwrap_err()
            .contains("not in its backup_manifest"));
        assert!(check
            .record("pg_wal/000000010000000000000001", 1, None)
            .is_ok());
        let fresh = ManifestCheck::new(&sample());
        assert_eq!(fresh.missing(), ["PG_VERSION", "global/pg_control"]);
    }

    /// The checksums PostgreSQL 15 wrote for `PG_VERSION` ("15\n") into
    /// the real manifests in fixtures/manifest/: the right content passes
    /// with either algorithm, and a file once seen is no longer missing.
    #[test]
    fn the_right_content_passes_and_is_no_longer_missing() {
        for (algorithm, checksum) in [
            ("CRC32C", "8a744722"),
            (
                "SHA256",
                "238903180cc104ec2c5d8b3f20c5bc61b389ec0a967df8cc208cdc7cd454174f",
            ),
        ] {
            let text = format!(
                r#"{{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-24 03:02:14 GMT", "Checksum-Algorithm": "{algorithm}", "Checksum": "{checksum}" }},
{{ "Path": "global/pg_control", "Size": 4, "Last-Modified": "2026-11-24 03:02:14 GMT" }}
],
"WAL-Ranges": [
{{ "Timeline": 1, "Start-LSN": "0/C000028", "End-LSN": "0/C000100" }}
],
"Manifest-Checksum": "0000000000000000000000000000000000000000000000000000000000000000"}}
"#
            );
            let mut check = ManifestCheck::new(&manifest::parse(text.as_bytes()).unwrap());
            let mut summer = check.checksummer("PG_VERSION").unwrap();
            summer.update(b"15\n");
            assert_eq!(
                check.record("PG_VERSION", 3, Some(summer.finish())),
                Ok(()),
                "{algorithm}"
            );
            assert_eq!(check.missing(), ["global/pg_control"], "{algorithm}");
            assert_eq!(check.record("global/pg_control", 4, None), Ok(()));
            assert!(check.missing().is_empty(), "{algorithm}");
            // One byte different is still caught after a pass.
            let mut summer = check.checksummer("PG_VERSION").unwrap();
            summer.update(b"16\n");
            let error = check
                .record("PG_VERSION", 3, Some(summer.finish()))
                .unwrap_err();
            assert!(error.contains(checksum), "{algorithm}: {error}");
        }
    }
}
