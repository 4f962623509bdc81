//! `backup_manifest` (PostgreSQL 13+): the JSON list of a base backup's files
//! with sizes and checksums, the WAL the backup needs, and a SHA-256 of the
//! manifest itself.
//!
//! Written by src/backend/backup/backup_manifest.c (15+;
//! src/backend/replication/ in 13–14), one file object per line:
//!
//! ```text
//! { "PostgreSQL-Backup-Manifest-Version": 1,
//! "Files": [
//! { "Path": "backup_label", "Size": 205, "Last-Modified": "2026-11-24 03:02:15 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "32cc6c77" },
//! ...
//! ],
//! "WAL-Ranges": [
//! { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
//! ],
//! "Manifest-Checksum": "b40a6b29…96e3"}
//! ```
//!
//! Version 2 (17+) adds `"System-Identifier"` after the version. Unknown keys
//! are ignored (pg_verifybackup is stricter) so that a later minor format
//! addition does not make backups unusable.

use serde::Deserialize;
use sha2::Digest;

use crate::wal::{Lsn, TimelineId};

/// A parsed `backup_manifest`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupManifest {
    /// 1 (13–16) or 2 (17+).
    pub version: u32,
    /// Present from version 2; equals pg_control's and the WAL page headers'.
    pub system_identifier: Option<u64>,
    /// Every file of the backup except `backup_manifest` itself and WAL.
    pub files: Vec<ManifestFile>,
    /// WAL needed to make the backup consistent; several ranges if a standby
    /// backup crossed a timeline switch.
    pub wal_ranges: Vec<WalRange>,
    /// Lower-case hex SHA-256; see [`verify_manifest_checksum`].
    pub manifest_checksum: String,
}

/// One file of the backup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ManifestFile {
    /// Relative to the data directory (`pg_tblspc/<oid>/PG_…/…` for
    /// tablespaces). From `Path`, or decoded from hex `Encoded-Path`, which
    /// the server uses for names that are not valid UTF-8: those are decoded
    /// lossily (invalid bytes become U+FFFD), so such a path cannot be matched
    /// byte for byte against the file system.
    pub path: String,
    pub size: u64,
    /// Algorithm and lower-case hex digest; `None` with
    /// `--manifest-checksums=NONE`.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

/// The checksum algorithms of `pg_basebackup --manifest-checksums`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ChecksumAlgorithm {
    #[serde(rename = "CRC32C")]
    Crc32c,
    #[serde(rename = "SHA224")]
    Sha224,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA384")]
    Sha384,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl ChecksumAlgorithm {
    /// The name as the manifest writes it.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Sha224 => "SHA224",
            ChecksumAlgorithm::Sha256 => "SHA256",
            ChecksumAlgorithm::Sha384 => "SHA384",
            ChecksumAlgorithm::Sha512 => "SHA512",
        }
    }

    /// Case-insensitive, like the server's `pg_checksum_parse_type`.
    pub fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        [
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Sha224,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Sha384,
            ChecksumAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|algorithm| algorithm.name().eq_ignore_ascii_case(name))
    }

    /// Length of the digest in bytes (twice that in hex digits).
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Sha224 => 28,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Sha384 => 48,
            ChecksumAlgorithm::Sha512 => 64,
        }
    }
}

/// Computes a file checksum incrementally, as the manifest writes it.
#[derive(Clone, Debug)]
pub struct Checksummer(State);

#[derive(Clone, Debug)]
enum State {
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Checksummer {
    pub fn new(algorithm: ChecksumAlgorithm) -> Checksummer {
        Checksummer(match algorithm {
            ChecksumAlgorithm::Crc32c => State::Crc32c(0),
            ChecksumAlgorithm::Sha224 => State::Sha224(sha2::Sha224::new()),
            ChecksumAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => State::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            State::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            State::Sha224(hasher) => hasher.update(data),
            State::Sha256(hasher) => hasher.update(data),
            State::Sha384(hasher) => hasher.update(data),
            State::Sha512(hasher) => hasher.update(data),
        }
    }

    /// True when checksums of consecutive parts of a file can be combined
    /// into the file's ([`Checksummer::combine`]): CRC32C, pg_basebackup's
    /// default, can; the SHA-2 family cannot.
    pub fn is_combinable(&self) -> bool {
        matches!(self.0, State::Crc32c(_))
    }

    /// Appends the checksum of the `len` bytes that follow what this one
    /// has seen (computed from a fresh checksummer of the same algorithm).
    /// Returns false, changing nothing, when the two cannot be combined.
    pub fn combine(&mut self, next: &Checksummer, len: u64) -> bool {
        match (&mut self.0, &next.0) {
            (State::Crc32c(crc), State::Crc32c(following)) => {
                *crc = crc32c::crc32c_combine(*crc, *following, len as usize);
                true
            }
            _ => false,
        }
    }

    /// The lower-case hex digest, comparable with [`ManifestFile::checksum`].
    pub fn finish(self) -> String {
        match self.0 {
            State::Crc32c(crc) => crc32c_manifest_hex(crc),
            State::Sha224(hasher) => hex(&hasher.finalize()),
            State::Sha256(hasher) => hex(&hasher.finalize()),
            State::Sha384(hasher) => hex(&hasher.finalize()),
            State::Sha512(hasher) => hex(&hasher.finalize()),
        }
    }
}

/// The checksum of `data` as the manifest writes it.
pub fn checksum_hex(algorithm: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut checksummer = Checksummer::new(algorithm);
    checksummer.update(data);
    checksummer.finish()
}

/// WAL needed on one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WalRange {
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("backup_manifest is not a valid manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("backup_manifest has version {0}, but only versions 1 (PostgreSQL 13–16) and 2 (17+) are known")]
    UnsupportedVersion(u32),
    #[error("backup_manifest is version 2 but has no System-Identifier")]
    MissingSystemIdentifier,
    #[error("backup_manifest file entry {index} ({path}) is invalid: {problem}")]
    BadFile {
        index: usize,
        path: String,
        problem: String,
    },
    #[error("backup_manifest WAL range {index} is invalid: {problem}")]
    BadWalRange { index: usize, problem: String },
    #[error("backup_manifest has a Manifest-Checksum `{0}` that is not 64 hexadecimal digits")]
    BadManifestChecksum(String),
    #[error("backup_manifest does not end with a newline, so it is truncated or was edited")]
    NotNewlineTerminated,
    #[error("backup_manifest has fewer than two lines, so it has no checksum line to verify")]
    TooFewLines,
    #[error("backup_manifest checksum mismatch: the file says {expected} but its content hashes to {computed}, so it is corrupt or was edited")]
    ChecksumMismatch { expected: String, computed: String },
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    // serde_json reads integer tokens straight into u64: exact up to
    // u64::MAX, with no detour through f64 or i64.
    #[serde(rename = "System-Identifier", default)]
    system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<RawWalRange>,
    #[serde(rename = "Manifest-Checksum")]
    manifest_checksum: String,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    checksum_algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

#[derive(Deserialize)]
struct RawWalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start_lsn: String,
    #[serde(rename = "End-LSN")]
    end_lsn: String,
}

/// Only the checksum, for [`verify_manifest_checksum`].
#[derive(Deserialize)]
struct RawChecksum {
    #[serde(rename = "Manifest-Checksum")]
    manifest_checksum: String,
}

/// Parses a manifest. Does not verify its checksum: see
/// [`verify_manifest_checksum`].
pub fn parse(bytes: &[u8]) -> Result<BackupManifest, ManifestError> {
    let raw: RawManifest = serde_json::from_slice(bytes)?;
    if !matches!(raw.version, 1 | 2) {
        return Err(ManifestError::UnsupportedVersion(raw.version));
    }
    if raw.version >= 2 && raw.system_identifier.is_none() {
        return Err(ManifestError::MissingSystemIdentifier);
    }
    let files = raw
        .files
        .into_iter()
        .enumerate()
        .map(|(index, file)| convert_file(index, file))
        .collect::<Result<Vec<_>, _>>()?;
    let wal_ranges = raw
        .wal_ranges
        .into_iter()
        .enumerate()
        .map(|(index, range)| convert_range(index, range))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BackupManifest {
        version: raw.version,
        system_identifier: raw.system_identifier,
        files,
        wal_ranges,
        manifest_checksum: manifest_checksum(&raw.manifest_checksum)?,
    })
}

fn convert_file(index: usize, file: RawFile) -> Result<ManifestFile, ManifestError> {
    let shown = file
        .path
        .clone()
        .or_else(|| {
            file.encoded_path
                .as_ref()
                .map(|hex| format!("encoded {hex}"))
        })
        .unwrap_or_else(|| "no path".to_string());
    let bad = |problem: String| ManifestError::BadFile {
        index,
        path: shown.clone(),
        problem,
    };
    let path = match (file.path, file.encoded_path) {
        (Some(path), None) => path,
        (None, Some(encoded)) => {
            let raw = unhex(&encoded).ok_or_else(|| {
                bad("Encoded-Path is not an even number of hexadecimal digits".into())
            })?;
            String::from_utf8_lossy(&raw).into_owned()
        }
        (Some(_), Some(_)) => return Err(bad("it has both Path and Encoded-Path".into())),
        (None, None) => return Err(bad("it has neither Path nor Encoded-Path".into())),
    };
    if path.is_empty() {
        return Err(bad("its path is empty".into()));
    }
    let checksum = match (file.checksum_algorithm, file.checksum) {
        (None, None) => None,
        (Some(name), Some(digest)) => {
            let algorithm = ChecksumAlgorithm::from_name(&name)
                .ok_or_else(|| bad(format!("Checksum-Algorithm `{name}` is not one of CRC32C, SHA224, SHA256, SHA384, SHA512")))?;
            let valid = digest.len() == 2 * algorithm.digest_len()
                && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(bad(format!(
                    "Checksum `{digest}` is not {} hexadecimal digits as {} requires",
                    2 * algorithm.digest_len(),
                    algorithm.name()
                )));
            }
            Some((algorithm, digest.to_ascii_lowercase()))
        }
        (Some(_), None) => return Err(bad("it has a Checksum-Algorithm but no Checksum".into())),
        (None, Some(_)) => return Err(bad("it has a Checksum but no Checksum-Algorithm".into())),
    };
    Ok(ManifestFile {
        path,
        size: file.size,
        checksum,
    })
}

fn convert_range(index: usize, range: RawWalRange) -> Result<WalRange, ManifestError> {
    let bad = |problem: String| ManifestError::BadWalRange { index, problem };
    let timeline = TimelineId::new(range.timeline)
        .ok_or_else(|| bad("Timeline is 0, which does not exist".into()))?;
    let start_lsn: Lsn = range
        .start_lsn
        .parse()
        .map_err(|error| bad(format!("Start-LSN: {error}")))?;
    let end_lsn: Lsn = range
        .end_lsn
        .parse()
        .map_err(|error| bad(format!("End-LSN: {error}")))?;
    if end_lsn < start_lsn {
        return Err(bad(format!(
            "End-LSN {end_lsn} is before Start-LSN {start_lsn}"
        )));
    }
    Ok(WalRange {
        timeline,
        start_lsn,
        end_lsn,
    })
}

fn manifest_checksum(text: &str) -> Result<String, ManifestError> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ManifestError::BadManifestChecksum(
            text.chars().take(80).collect(),
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// Checks `Manifest-Checksum` the way pg_verifybackup does: SHA-256 over
/// every byte up to and including the second-to-last `\n` (the one that ends
/// the line before the `"Manifest-Checksum"` line); the file must end in `\n`.
pub fn verify_manifest_checksum(bytes: &[u8]) -> Result<(), ManifestError> {
    if bytes.last() != Some(&b'\n') {
        return Err(ManifestError::NotNewlineTerminated);
    }
    let body = &bytes[..bytes.len() - 1];
    let Some(penultimate) = body.iter().rposition(|&b| b == b'\n') else {
        return Err(ManifestError::TooFewLines);
    };
    let raw: RawChecksum = serde_json::from_slice(bytes)?;
    let expected = manifest_checksum(&raw.manifest_checksum)?;
    let computed = hex(&sha2::Sha256::digest(&bytes[..=penultimate]));
    if computed != expected {
        return Err(ManifestError::ChecksumMismatch { expected, computed });
    }
    Ok(())
}

/// A CRC-32C as the manifest prints it: the server hex-dumps the four bytes
/// of the `pg_crc32c` in memory, which on little-endian machines (all that
/// matter) is the value byte-reversed: 0x73E558A1 → `"a158e573"`.
pub fn crc32c_manifest_hex(crc: u32) -> String {
    hex(&crc.to_le_bytes())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xF)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_of_parts_combines_into_the_whole_and_sha_does_not() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let (head, tail) = data.split_at(40_000);
        let mut whole = Checksummer::new(ChecksumAlgorithm::Crc32c);
        whole.update(head);
        let mut next = Checksummer::new(ChecksumAlgorithm::Crc32c);
        next.update(tail);
        assert!(whole.is_combinable());
        assert!(whole.combine(&next, tail.len() as u64));
        assert_eq!(
            whole.finish(),
            checksum_hex(ChecksumAlgorithm::Crc32c, &data)
        );
        let mut sha = Checksummer::new(ChecksumAlgorithm::Sha256);
        assert!(!sha.is_combinable());
        assert!(!sha.combine(&Checksummer::new(ChecksumAlgorithm::Sha256), 0));
    }
    use proptest::prelude::*;

    /// pg_basebackup 15 -Fp -X stream, default CRC32C checksums.
    const PG15_CRC32C: &[u8] = include_bytes!("../../fixtures/manifest/pg15_crc32c.json");
    /// pg_basebackup 15 --manifest-checksums=SHA256, with a file named
    /// `caf\xE9.bin` (Latin-1, so not UTF-8: written as Encoded-Path) and one
    /// named `we"ird\name.txt` (JSON-escaped Path).
    const PG15_SHA256: &[u8] = include_bytes!("../../fixtures/manifest/pg15_sha256.json");
    /// pg_basebackup 15 --manifest-force-encode --manifest-checksums=NONE.
    const PG15_ENCODED_NONE: &[u8] =
        include_bytes!("../../fixtures/manifest/pg15_force_encode_no_checksums.json");
    /// The backup_label and pg_control of the CRC32C backup.
    const PG15_LABEL: &[u8] = include_bytes!("../../fixtures/backup_label/pg15_stream");
    const PG15_CONTROL: &[u8] = include_bytes!("../../fixtures/pg_control/pg15_backup");

    fn file<'m>(manifest: &'m BackupManifest, path: &str) -> &'m ManifestFile {
        manifest
            .files
            .iter()
            .find(|file| file.path == path)
            .unwrap()
    }

    #[test]
    fn real_crc32c_manifest() {
        let manifest = parse(PG15_CRC32C).unwrap();
        assert_eq!(manifest.version, 1);
        assert_eq!(manifest.system_identifier, None);
        assert_eq!(manifest.files.len(), 965);
        assert_eq!(
            manifest.wal_ranges,
            vec![WalRange {
                timeline: TimelineId::FIRST,
                start_lsn: "0/2000028".parse().unwrap(),
                end_lsn: "0/2000100".parse().unwrap(),
            }]
        );
        assert_eq!(
            manifest.manifest_checksum,
            "b40a6b29446d794dc6c8a19a88a46a2ce4252a5610d027eed3639eb7ba5e96e3"
        );
        verify_manifest_checksum(PG15_CRC32C).unwrap();

        // Recompute file checksums from the real files.
        let label = file(&manifest, "backup_label");
        assert_eq!(label.size, PG15_LABEL.len() as u64);
        assert_eq!(
            label.checksum,
            Some((ChecksumAlgorithm::Crc32c, "32cc6c77".to_string()))
        );
        assert_eq!(
            checksum_hex(ChecksumAlgorithm::Crc32c, PG15_LABEL),
            "32cc6c77"
        );
        let control = file(&manifest, "global/pg_control");
        assert_eq!(control.size, 8192);
        assert_eq!(
            checksum_hex(ChecksumAlgorithm::Crc32c, PG15_CONTROL),
            control.checksum.as_ref().unwrap().1
        );
        let version = file(&manifest, "PG_VERSION");
        assert_eq!(
            checksum_hex(ChecksumAlgorithm::Crc32c, b"15\n"),
            version.checksum.as_ref().unwrap().1
        );
    }

    #[test]
    fn real_sha256_manifest_with_odd_names() {
        let manifest = parse(PG15_SHA256).unwrap();
        verify_manifest_checksum(PG15_SHA256).unwrap();
        assert!(manifest
            .files
            .iter()
            .all(|f| f.checksum.as_ref().unwrap().0 == ChecksumAlgorithm::Sha256));
        let escaped = file(&manifest, "we\"ird\\name.txt");
        assert_eq!(
            escaped.checksum.as_ref().unwrap().1,
            checksum_hex(ChecksumAlgorithm::Sha256, b"y")
        );
        let latin1 = file(&manifest, "caf\u{FFFD}.bin");
        assert_eq!(latin1.size, 1);
        assert_eq!(
            latin1.checksum.as_ref().unwrap().1,
            checksum_hex(ChecksumAlgorithm::Sha256, b"x")
        );
        let label = file(&manifest, "backup_label");
        assert_eq!(
            label.checksum.as_ref().unwrap().1,
            checksum_hex(
                ChecksumAlgorithm::Sha256,
                include_bytes!("../../fixtures/backup_label/pg15_cet")
            )
        );
    }

    #[test]
    fn real_force_encoded_manifest_without_checksums() {
        let manifest = parse(PG15_ENCODED_NONE).unwrap();
        verify_manifest_checksum(PG15_ENCODED_NONE).unwrap();
        assert!(manifest.files.iter().all(|f| f.checksum.is_none()));
        assert_eq!(manifest.files[0].path, "backup_label");
        assert_eq!(manifest.files[1].path, "PG_VERSION");
        assert!(manifest.files.iter().any(|f| f.path == "global/pg_control"));
        assert!(manifest.files.iter().any(|f| f.path == "we\"ird\\name.txt"));
    }

    #[test]
    fn crc_byte_order() {
        assert_eq!(crc32c_manifest_hex(0x73E5_58A1), "a158e573");
        assert_eq!(crc32c_manifest_hex(crc32c::crc32c(b"15\n")), "8a744722");
    }

    #[test]
    fn all_algorithms_have_their_lengths() {
        for algorithm in [
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Sha224,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Sha384,
            ChecksumAlgorithm::Sha512,
        ] {
            assert_eq!(
                checksum_hex(algorithm, b"abc").len(),
                2 * algorithm.digest_len()
            );
            assert_eq!(
                ChecksumAlgorithm::from_name(&algorithm.name().to_lowercase()),
                Some(algorithm)
            );
        }
        assert_eq!(
            checksum_hex(ChecksumAlgorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Incremental updates equal one-shot.
        let mut checksummer = Checksummer::new(ChecksumAlgorithm::Crc32c);
        checksummer.update(b"1");
        checksummer.update(b"5\n");
        assert_eq!(checksummer.finish(), "8a744722");
    }

    /// A minimal manifest with a correct checksum.
    fn manifest_text(version_and_id: &str, files: &[&str], ranges: &[&str]) -> String {
        let mut body = format!(
            "{{ {version_and_id}\n\"Files\": [\n{}\n],\n",
            files.join(",\n")
        );
        body.push_str(&format!("\"WAL-Ranges\": [\n{}\n],\n", ranges.join(",\n")));
        // format!, not the module's own `hex`: a shared bug must not pass.
        let checksum: String = sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{body}\"Manifest-Checksum\": \"{checksum}\"}}\n")
    }

    /// Where the `"Manifest-Checksum"` line starts (after the checksummed
    /// body).
    fn checksum_line_start(manifest: &[u8]) -> usize {
        let body = &manifest[..manifest.len() - 1];
        body.iter().rposition(|&b| b == b'\n').unwrap() + 1
    }

    /// The manifest with its checksum line rewritten for its body: SHA-256
    /// of every byte before that line (pg_verifybackup's rule), written with
    /// `format!` rather than the module's own hex encoder.
    fn with_recomputed_checksum(manifest: &[u8]) -> Vec<u8> {
        let start = checksum_line_start(manifest);
        let digest = sha2::Sha256::digest(&manifest[..start]);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = manifest[..start].to_vec();
        out.extend_from_slice(format!("\"Manifest-Checksum\": \"{hex}\"}}\n").as_bytes());
        out
    }

    /// The damage sweep of the property below, done exhaustively over one
    /// entry: the mutations do reach `convert_file` (which accepts some and
    /// names the entry for others), not only serde_json's syntax check.
    #[test]
    fn recomputed_checksums_let_damage_reach_the_entry_checks() {
        let entry = b"{ \"Encoded-Path";
        let line_start = PG15_ENCODED_NONE
            .windows(entry.len())
            .position(|w| w == entry)
            .unwrap();
        let line_end = line_start
            + PG15_ENCODED_NONE[line_start..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap();
        let (mut accepted, mut bad_file, mut json) = (0, 0, 0);
        for at in line_start..line_end {
            for byte in [b'g', b'7', b' '] {
                let mut bytes = PG15_ENCODED_NONE.to_vec();
                bytes[at] = byte;
                let bytes = with_recomputed_checksum(&bytes);
                assert!(matches!(
                    verify_manifest_checksum(&bytes),
                    Ok(()) | Err(ManifestError::Json(_))
                ));
                match parse(&bytes) {
                    Ok(_) => accepted += 1,
                    Err(ManifestError::BadFile { index: 0, .. }) => bad_file += 1,
                    Err(ManifestError::Json(_)) => json += 1,
                    Err(other) => panic!("unexpected: {other}"),
                }
            }
        }
        assert!(
            accepted > 10 && bad_file > 10 && json > 0,
            "{accepted} {bad_file} {json}"
        );
    }

    const RANGE: &str = r#"{ "Timeline": 1, "Start-LSN": "0/C000028", "End-LSN": "0/C000100" }"#;

    #[test]
    fn version_2_keeps_a_system_identifier_beyond_i64() {
        let text = manifest_text(
            r#""PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": 18446744073709551615,"#,
            &[
                r#"{ "Path": "a", "Size": 0, "Last-Modified": "2026-11-24 01:20:43 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" }"#,
            ],
            &[RANGE],
        );
        let manifest = parse(text.as_bytes()).unwrap();
        verify_manifest_checksum(text.as_bytes()).unwrap();
        assert_eq!(manifest.version, 2);
        assert_eq!(manifest.system_identifier, Some(u64::MAX));
        let id = 9_223_372_036_854_775_809u64; // i64::MAX + 2: not exact as f64
        let text = text.replace("18446744073709551615", &id.to_string());
        assert_eq!(parse(text.as_bytes()).unwrap().system_identifier, Some(id));
        let missing = text.replace(&format!(" \"System-Identifier\": {id},"), "");
        assert!(matches!(
            parse(missing.as_bytes()),
            Err(ManifestError::MissingSystemIdentifier)
        ));
    }

    #[test]
    fn hand_written_encoded_path_and_no_checksum() {
        // "pg_tblspc/16384/x" and a Latin-1 name.
        let text = manifest_text(
            r#""PostgreSQL-Backup-Manifest-Version": 1,"#,
            &[
                r#"{ "Encoded-Path": "70675F74626C7370632F31363338342F78", "Size": 8192, "Last-Modified": "2026-11-24 01:20:43 GMT" }"#,
                r#"{ "Encoded-Path": "e9", "Size": 1, "Last-Modified": "2026-11-24 01:20:43 GMT" }"#,
            ],
            &[
                RANGE,
                r#"{ "Timeline": 2, "Start-LSN": "0/D000000", "End-LSN": "0/D000100" }"#,
            ],
        );
        let manifest = parse(text.as_bytes()).unwrap();
        assert_eq!(manifest.files[0].path, "pg_tblspc/16384/x");
        assert_eq!(manifest.files[0].checksum, None);
        assert_eq!(manifest.files[1].path, "\u{FFFD}");
        assert_eq!(manifest.wal_ranges.len(), 2);
    }

    #[test]
    fn invalid_entries_are_refused() {
        let version = r#""PostgreSQL-Backup-Manifest-Version": 1,"#;
        let bad_file = |entry: &str| parse(manifest_text(version, &[entry], &[RANGE]).as_bytes());
        for entry in [
            r#"{ "Size": 1 }"#,
            r#"{ "Path": "a", "Encoded-Path": "61", "Size": 1 }"#,
            r#"{ "Encoded-Path": "6", "Size": 1 }"#,
            r#"{ "Encoded-Path": "zz", "Size": 1 }"#,
            r#"{ "Path": "", "Size": 1 }"#,
            r#"{ "Path": "a", "Size": 1, "Checksum-Algorithm": "MD5", "Checksum": "00" }"#,
            r#"{ "Path": "a", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "0000000" }"#,
            r#"{ "Path": "a", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "0000000g" }"#,
            r#"{ "Path": "a", "Size": 1, "Checksum-Algorithm": "CRC32C" }"#,
            r#"{ "Path": "a", "Size": 1, "Checksum": "00000000" }"#,
        ] {
            assert!(
                matches!(
                    bad_file(entry),
                    Err(ManifestError::BadFile { index: 0, .. })
                ),
                "{entry}"
            );
        }
        for entry in [
            r#"{ "Path": "a" }"#,
            r#"{ "Path": "a", "Size": -1 }"#,
            r#"{ "Path": "a", "Path": "b", "Size": 1 }"#,
        ] {
            assert!(
                matches!(bad_file(entry), Err(ManifestError::Json(_))),
                "{entry}"
            );
        }
        let bad_range = |range: &str| parse(manifest_text(version, &[], &[range]).as_bytes());
        for range in [
            r#"{ "Timeline": 0, "Start-LSN": "0/1", "End-LSN": "0/2" }"#,
            r#"{ "Timeline": 1, "Start-LSN": "1", "End-LSN": "0/2" }"#,
            r#"{ "Timeline": 1, "Start-LSN": "0/3", "End-LSN": "0/2" }"#,
        ] {
            assert!(
                matches!(
                    bad_range(range),
                    Err(ManifestError::BadWalRange { index: 0, .. })
                ),
                "{range}"
            );
        }
        let v3 = manifest_text(r#""PostgreSQL-Backup-Manifest-Version": 3,"#, &[], &[RANGE]);
        assert!(matches!(
            parse(v3.as_bytes()),
            Err(ManifestError::UnsupportedVersion(3))
        ));
        assert!(matches!(parse(b"{}"), Err(ManifestError::Json(_))));
        assert!(matches!(parse(b""), Err(ManifestError::Json(_))));
        let message = bad_file(r#"{ "Path": "x", "Size": 1, "Checksum-Algorithm": "CRC32C" }"#)
            .unwrap_err()
            .to_string();
        assert_eq!(message, "backup_manifest file entry 0 (x) is invalid: it has a Checksum-Algorithm but no Checksum");
    }

    #[test]
    fn checksum_verification_failures() {
        let mut edited = PG15_CRC32C.to_vec();
        let at = edited.windows(8).position(|w| w == b"32cc6c77").unwrap();
        edited[at] = b'4';
        assert!(matches!(
            verify_manifest_checksum(&edited),
            Err(ManifestError::ChecksumMismatch { .. })
        ));
        // The edit still parses: parse() does not verify.
        assert!(parse(&edited).is_ok());
        let truncated = &PG15_CRC32C[..PG15_CRC32C.len() - 1];
        assert!(matches!(
            verify_manifest_checksum(truncated),
            Err(ManifestError::NotNewlineTerminated)
        ));
        assert!(matches!(
            verify_manifest_checksum(b"{}\n"),
            Err(ManifestError::TooFewLines)
        ));
        assert!(matches!(
            verify_manifest_checksum(b""),
            Err(ManifestError::NotNewlineTerminated)
        ));
        assert!(matches!(
            verify_manifest_checksum(b"{\n\"Manifest-Checksum\": \"abc\"}\n"),
            Err(ManifestError::BadManifestChecksum(_))
        ));
        // An upper-case checksum is the same checksum.
        let text = String::from_utf8(PG15_CRC32C.to_vec()).unwrap();
        let upper = text.replace(
            "b40a6b29446d794dc6c8a19a88a46a2ce4252a5610d027eed3639eb7ba5e96e3",
            "B40A6B29446D794DC6C8A19A88A46A2CE4252A5610D027EED3639EB7BA5E96E3",
        );
        verify_manifest_checksum(upper.as_bytes()).unwrap();
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let _ = verify_manifest_checksum(&bytes);
        }

        /// One byte of a real manifest changed anywhere before its checksum
        /// line, and the checksum recomputed: no case stops at the checksum
        /// gate, so the entry checks behind it are reached, and they either
        /// accept the same number of entries or name what is wrong.
        #[test]
        fn damaged_manifests_with_a_recomputed_checksum_reach_the_entry_checks(
            manifest in prop_oneof![Just(PG15_ENCODED_NONE), Just(PG15_CRC32C), Just(PG15_SHA256)],
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![any::<u8>(), proptest::sample::select(b"0123456789abcdefgxz-/ :\"".to_vec())],
        ) {
            let original = parse(manifest).unwrap();
            let checksum_line = checksum_line_start(manifest);
            let mut bytes = manifest.to_vec();
            bytes[at.index(checksum_line)] = byte;
            // A new line break would move the checksummed body's end.
            prop_assume!(byte != b'\n');
            let bytes = with_recomputed_checksum(&bytes);
            // Only a JSON syntax error stops the checksum check now.
            match verify_manifest_checksum(&bytes) {
                Ok(()) | Err(ManifestError::Json(_)) => {}
                Err(other) => prop_assert!(false, "{}", other),
            }
            match parse(&bytes) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.files.len(), original.files.len());
                    prop_assert_eq!(parsed.wal_ranges.len(), original.wal_ranges.len());
                }
                Err(error) => prop_assert!(
                    !matches!(
                        error,
                        ManifestError::BadManifestChecksum(_) | ManifestError::ChecksumMismatch { .. }
                    ),
                    "{}", error
                ),
            }
        }

        #[test]
        fn never_panics_on_truncated_manifests(at in any::<prop::sample::Index>()) {
            let bytes = &PG15_SHA256[..at.index(PG15_SHA256.len())];
            let _ = parse(bytes);
            let _ = verify_manifest_checksum(bytes);
        }

        #[test]
        fn never_panics_on_odd_entries(path in ".{0,12}", hexish in "[0-9a-fA-Fg]{0,9}", size in any::<i64>()) {
            let entry = format!(
                r#"{{ "Encoded-Path": "{hexish}", "Size": {size}, "Checksum-Algorithm": "CRC32C", "Checksum": "{hexish}" }}"#
            );
            let named = format!(r#"{{ "Path": {}, "Size": 1 }}"#, serde_json::to_string(&path).unwrap());
            let text = manifest_text(r#""PostgreSQL-Backup-Manifest-Version": 1,"#, &[&entry, &named], &[RANGE]);
            let _ = parse(text.as_bytes());
        }
    }
}
