//! `global/pg_control`: the cluster's control file (struct ControlFileData in
//! src/include/catalog/pg_control.h), an 8192-byte file of which only the
//! first ~300 bytes are used, in the byte order of the machine that wrote it.
//!
//! Offsets are identical in 12–18 up to byte 256 (checked against the
//! struct of each release and against pg_controldata on PostgreSQL 15):
//!
//! | off | field |
//! |---|---|
//! | 0 | u64 system_identifier |
//! | 8 | u32 pg_control_version |
//! | 12 | u32 catalog_version_no |
//! | 16 | i32 state (DBState) |
//! | 24 | i64 time (pg_controldata's "pg_control last modified", Unix seconds) |
//! | 32 | u64 checkPoint (LSN of the latest checkpoint record) |
//! | 40 | CheckPoint checkPointCopy; its FullTransactionId nextXid at 40 + 24 |
//! | 136 | u64 minRecoveryPoint ("Minimum recovery ending location") |
//! | 224 | u32 xlog_blcksz |
//! | 228 | u32 xlog_seg_size |
//!
//! The CRC-32C of all bytes before it follows the struct, at
//! `offsetof(ControlFileData, crc)`:
//! * 12 (pg_control_version 1201): byte 288 — 12 still has `float4ByVal`
//!   next to `float8ByVal` at 248/249, absorbed by the padding before
//!   `data_checksum_version` at 252;
//! * 13–16 (1300), 17 (1700): byte 288 (17 only added `wal_level` inside
//!   CheckPoint's padding);
//! * 18 (1800): byte 292 — `default_char_signedness` (1 byte at 256) shifts
//!   the 32-byte `mock_authentication_nonce` to 257, and the CRC is aligned
//!   to 4.

use crate::wal::{Lsn, SegmentSize};

/// The fields of pg_control that pitr needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version: u32,
    /// DBState: see [`ControlFile::state_name`].
    pub state: i32,
    /// The latest checkpoint record (pg_controldata's "Latest checkpoint location").
    pub checkpoint_lsn: Lsn,
    /// When pg_control was last written (`update_controlfile` stamps it).
    pub modified: i64,
    /// The latest checkpoint's next transaction ID, epoch included.
    pub next_xid: u64,
    /// "Minimum recovery ending location": for a backup taken from a
    /// standby, where that backup ends (PostgreSQL's do_pg_backup_stop
    /// takes it as the stop point, pg_control being copied last).
    pub min_recovery_point: Lsn,
    /// XLOG_BLCKSZ, the WAL page size (8192 unless compiled otherwise).
    pub wal_block_size: u32,
    pub segment_size: SegmentSize,
}

/// The size of the file on disk (PG_CONTROL_FILE_SIZE).
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// pg_control_version → offset of the CRC. See the module comment.
const LAYOUTS: &[(u32, usize)] = &[(1201, 288), (1300, 288), (1700, 288), (1800, 292)];

/// Why pg_control was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(
        "pg_control is {len} bytes long, too short for the control data (at least {needed} bytes)"
    )]
    TooShort { len: usize, needed: usize },
    #[error("pg_control has pg_control_version {version}, which is not a format of PostgreSQL 12 to 18 (1201, 1300, 1700, 1800)")]
    UnsupportedVersion { version: u32 },
    #[error("pg_control was written by a machine of the other byte order (its pg_control_version reads {swapped} byte-swapped), which this machine cannot use")]
    ForeignByteOrder { swapped: u32 },
    #[error("pg_control checksum mismatch: stored CRC-32C {stored:08x}, computed {computed:08x}, so the file is corrupt or was copied while being written")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("pg_control gives a WAL segment size of {bytes} bytes, which is not a power of two from 1 MiB to 1 GiB")]
    BadSegmentSize { bytes: u32 },
    #[error("pg_control gives a WAL block size of {bytes} bytes, which is not a power of two from 1 KiB to 64 KiB")]
    BadWalBlockSize { bytes: u32 },
}

/// Parses and CRC-checks the content of `global/pg_control`.
pub fn parse(bytes: &[u8]) -> Result<ControlFile, ControlError> {
    let version = read_u32(bytes, 8).ok_or(ControlError::TooShort {
        len: bytes.len(),
        needed: 12,
    })?;
    let Some(crc_offset) = crc_offset(version) else {
        let swapped = version.swap_bytes();
        return Err(match crc_offset(swapped) {
            Some(_) => ControlError::ForeignByteOrder { swapped },
            None => ControlError::UnsupportedVersion { version },
        });
    };
    let stored = read_u32(bytes, crc_offset).ok_or(ControlError::TooShort {
        len: bytes.len(),
        needed: crc_offset + 4,
    })?;
    let computed = crc32c::crc32c(&bytes[..crc_offset]);
    if stored != computed {
        return Err(ControlError::CrcMismatch { stored, computed });
    }
    // In bounds: the CRC offset is past every field read below.
    let field = |offset| read_u32(bytes, offset).unwrap_or_default();
    let segment_bytes = field(228);
    let segment_size =
        SegmentSize::new(u64::from(segment_bytes)).ok_or(ControlError::BadSegmentSize {
            bytes: segment_bytes,
        })?;
    let wal_block_size = field(224);
    if !wal_block_size.is_power_of_two() || !(1024..=65536).contains(&wal_block_size) {
        return Err(ControlError::BadWalBlockSize {
            bytes: wal_block_size,
        });
    }
    Ok(ControlFile {
        system_identifier: read_u64(bytes, 0).unwrap_or_default(),
        pg_control_version: version,
        catalog_version: field(12),
        state: field(16) as i32,
        checkpoint_lsn: Lsn::new(read_u64(bytes, 32).unwrap_or_default()),
        modified: read_u64(bytes, 24).unwrap_or_default() as i64,
        next_xid: read_u64(bytes, 64).unwrap_or_default(),
        min_recovery_point: Lsn::new(read_u64(bytes, 136).unwrap_or_default()),
        wal_block_size,
        segment_size,
    })
}

fn crc_offset(pg_control_version: u32) -> Option<usize> {
    LAYOUTS
        .iter()
        .find(|(version, _)| *version == pg_control_version)
        .map(|&(_, offset)| offset)
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let chunk = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(chunk.try_into().ok()?))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let chunk = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(chunk.try_into().ok()?))
}

/// The final catalog version (`CATALOG_VERSION_NO`) and pg_control_version
/// of each major release. Catalog versions are frozen at release and never
/// change in minor releases. Values from src/include/catalog/catversion.h
/// and pg_control.h of each release, as copied per version into pgBackRest's
/// src/postgres/interface/version.vendor.h; 15's matches pg_controldata of
/// PostgreSQL 15.18 here.
const RELEASES: &[(u32, u32, u32)] = &[
    // (major, pg_control_version, catalog_version)
    (11, 1100, 201809051),
    (12, 1201, 201909212),
    (13, 1300, 202007201),
    (14, 1300, 202107181),
    (15, 1300, 202209061),
    (16, 1300, 202307071),
    (17, 1700, 202406281),
    (18, 1800, 202506291),
];

/// The PostgreSQL major version (12–18) that wrote a pg_control.
///
/// pg_control_version alone is ambiguous (1300 is 13 to 16), so the catalog
/// version decides: a cluster of major M has a catalog version after the
/// final one of M-1 and at most the final one of M. Betas and release
/// candidates of M fall in that range too. Returns `None` for anything else
/// (older or newer majors, development snapshots whose pg_control_version
/// and catalog version do not fit one release).
pub fn major_version_from_control(pg_control_version: u32, catalog_version: u32) -> Option<u32> {
    RELEASES.windows(2).find_map(|pair| {
        let (_, _, previous_catalog) = pair[0];
        let (major, control, last_catalog) = pair[1];
        let fits = pg_control_version == control
            && catalog_version > previous_catalog
            && catalog_version <= last_catalog;
        fits.then_some(major)
    })
}

impl ControlFile {
    /// See [`major_version_from_control`].
    pub fn major_version(&self) -> Option<u32> {
        major_version_from_control(self.pg_control_version, self.catalog_version)
    }

    /// The state as pg_controldata prints it ("Database cluster state").
    pub fn state_name(&self) -> Option<&'static str> {
        Some(match self.state {
            0 => "starting up",
            1 => "shut down",
            2 => "shut down in recovery",
            3 => "shutting down",
            4 => "in crash recovery",
            5 => "in archive recovery",
            6 => "in production",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// PostgreSQL 15.18, cleanly shut down after a promotion to timeline 3.
    const PG15_SHUT_DOWN: &[u8] = include_bytes!("../../fixtures/pg_control/pg15");
    /// PostgreSQL 15.18, as copied into a pg_basebackup (state "in production").
    const PG15_BACKUP: &[u8] = include_bytes!("../../fixtures/pg_control/pg15_backup");
    /// PostgreSQL 15.18 after `initdb --wal-segsize=1`.
    const PG15_1MIB: &[u8] = include_bytes!("../../fixtures/pg_control/pg15_wal_segsize_1mib");

    #[test]
    fn real_pg15_control_files_match_pg_controldata() {
        let control = parse(PG15_SHUT_DOWN).unwrap();
        assert_eq!(
            control,
            ControlFile {
                system_identifier: 7711567971765019824,
                pg_control_version: 1300,
                catalog_version: 202209061,
                state: 1,
                checkpoint_lsn: "0/3000028".parse().unwrap(),
                modified: 1795489363,
                next_xid: 726,
                min_recovery_point: Lsn::ZERO,
                wal_block_size: 8192,
                segment_size: SegmentSize::DEFAULT,
            }
        );
        assert_eq!(control.state_name(), Some("shut down"));
        assert_eq!(control.major_version(), Some(15));

        let backup = parse(PG15_BACKUP).unwrap();
        assert_eq!(backup.system_identifier, control.system_identifier);
        assert_eq!(backup.state_name(), Some("in production"));
        assert_eq!(backup.checkpoint_lsn, "0/2000060".parse().unwrap());

        let small = parse(PG15_1MIB).unwrap();
        assert_eq!(small.system_identifier, 7711568154840516120);
        assert_eq!(small.segment_size.bytes(), 1 << 20);
        assert_eq!(small.checkpoint_lsn, "0/600768".parse().unwrap());
    }

    #[test]
    fn truncated_files() {
        for len in [0, 7, 11] {
            assert_eq!(
                parse(&PG15_SHUT_DOWN[..len]),
                Err(ControlError::TooShort { len, needed: 12 })
            );
        }
        for len in [12, 100, 288, 291] {
            assert_eq!(
                parse(&PG15_SHUT_DOWN[..len]),
                Err(ControlError::TooShort { len, needed: 292 })
            );
        }
        // The CRC covers only the struct: the zero padding may be cut.
        assert!(parse(&PG15_SHUT_DOWN[..292]).is_ok());
    }

    #[test]
    fn wrong_crc_is_refused() {
        let mut bytes = PG15_SHUT_DOWN.to_vec();
        bytes[100] ^= 1;
        assert!(matches!(
            parse(&bytes),
            Err(ControlError::CrcMismatch { .. })
        ));
        let mut bytes = PG15_SHUT_DOWN.to_vec();
        bytes[288] ^= 0x80;
        let error = parse(&bytes).unwrap_err();
        assert_eq!(
            error.to_string(),
            "pg_control checksum mismatch: stored CRC-32C 5bf188a5, computed 5bf18825, so the file is corrupt or was copied while being written"
        );
        // Bytes after the CRC are not covered.
        let mut bytes = PG15_SHUT_DOWN.to_vec();
        bytes[4000] = 0xFF;
        assert!(parse(&bytes).is_ok());
    }

    /// Rewrites a field and fixes the CRC, to test checks behind the CRC.
    fn with_field(offset: usize, value: u32) -> Vec<u8> {
        let mut bytes = PG15_SHUT_DOWN.to_vec();
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..288]);
        bytes[288..292].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn versions_and_byte_order() {
        assert_eq!(
            parse(&with_field(8, 1002)),
            Err(ControlError::UnsupportedVersion { version: 1002 })
        );
        assert_eq!(
            parse(&with_field(8, 1300u32.swap_bytes())),
            Err(ControlError::ForeignByteOrder { swapped: 1300 })
        );
        // 12 and 17 share 15's CRC position.
        assert_eq!(
            parse(&with_field(8, 1201)).unwrap().pg_control_version,
            1201
        );
        assert_eq!(
            parse(&with_field(8, 1700)).unwrap().pg_control_version,
            1700
        );
        assert_eq!(
            parse(&with_field(228, 3 << 20)),
            Err(ControlError::BadSegmentSize { bytes: 3 << 20 })
        );
        assert_eq!(
            parse(&with_field(224, 100)),
            Err(ControlError::BadWalBlockSize { bytes: 100 })
        );
    }

    #[test]
    fn pg18_layout_has_its_crc_four_bytes_later() {
        // Synthesised from the 15 file following the 18 struct: a
        // default_char_signedness byte at 256 pushes the nonce to 257..289
        // and the CRC to 292. (A real 18 file is checked against 18's own
        // pg_controldata in tests/version_fixtures.rs.)
        let mut bytes = PG15_SHUT_DOWN[..256].to_vec();
        bytes[8..12].copy_from_slice(&1800u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&202506291u32.to_le_bytes());
        bytes.push(1);
        bytes.extend_from_slice(&PG15_SHUT_DOWN[256..288]);
        bytes.extend_from_slice(&[0, 0, 0]);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.resize(PG_CONTROL_FILE_SIZE, 0);
        let control = parse(&bytes).unwrap();
        assert_eq!(control.major_version(), Some(18));
        assert_eq!(control.segment_size, SegmentSize::DEFAULT);
        assert!(matches!(
            parse(&bytes[..295]),
            Err(ControlError::TooShort { needed: 296, .. })
        ));
    }

    #[test]
    fn major_versions() {
        assert_eq!(major_version_from_control(1201, 201909212), Some(12));
        assert_eq!(major_version_from_control(1300, 202007201), Some(13));
        assert_eq!(major_version_from_control(1300, 202107181), Some(14));
        assert_eq!(major_version_from_control(1300, 202209061), Some(15));
        assert_eq!(major_version_from_control(1300, 202307071), Some(16));
        assert_eq!(major_version_from_control(1700, 202406281), Some(17));
        assert_eq!(major_version_from_control(1800, 202506291), Some(18));
        // A 16 beta: after 15's final catalog version.
        assert_eq!(major_version_from_control(1300, 202305211), Some(16));
        // Ambiguity resolved by the other number, not guessed.
        assert_eq!(major_version_from_control(1300, 201909212), None);
        assert_eq!(major_version_from_control(1700, 202307071), None);
        assert_eq!(major_version_from_control(1800, 202605131), None);
        assert_eq!(major_version_from_control(1100, 201809051), None);
        assert_eq!(major_version_from_control(1902, 202605131), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_damaged_files(at in 0usize..400, byte in any::<u8>(), len in 0usize..400) {
            let mut bytes = PG15_SHUT_DOWN[..400].to_vec();
            bytes[at] = byte;
            bytes.truncate(len);
            let _ = parse(&bytes);
        }

        /// A byte changed under the CRC and the CRC recomputed, so the
        /// checks behind it decide, compared with what the bytes say
        /// (PostgreSQL's ControlFileData layout: xlog_blcksz at 224,
        /// xlog_seg_size at 228; segments of 1 MiB to 1 GiB, WAL pages of
        /// 1 to 64 KiB, powers of two, as initdb allows).
        #[test]
        fn damage_under_a_recomputed_crc_reaches_the_size_checks(
            at in prop_oneof![0usize..288, 224usize..232],
            byte in any::<u8>(),
        ) {
            let mut bytes = PG15_SHUT_DOWN.to_vec();
            bytes[at] = byte;
            let crc = crc32c::crc32c(&bytes[..288]);
            bytes[288..292].copy_from_slice(&crc.to_le_bytes());
            let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
            let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
            let (block, segment) = (u32_at(224), u32_at(228));
            let segment_ok = segment.is_power_of_two() && (1 << 20..=1 << 30).contains(&segment);
            let block_ok = block.is_power_of_two() && (1024..=65536).contains(&block);
            match parse(&bytes) {
                Ok(control) => {
                    prop_assert!(segment_ok && block_ok, "accepted {segment} / {block}");
                    prop_assert_eq!(control.segment_size.bytes(), u64::from(segment));
                    prop_assert_eq!(control.wal_block_size, block);
                    prop_assert_eq!(control.system_identifier, u64_at(0));
                    prop_assert_eq!(control.pg_control_version, u32_at(8));
                    prop_assert_eq!(control.catalog_version, u32_at(12));
                    prop_assert_eq!(control.checkpoint_lsn, Lsn::new(u64_at(32)));
                }
                Err(ControlError::BadSegmentSize { bytes }) => {
                    prop_assert!(!segment_ok);
                    prop_assert_eq!(bytes, segment);
                }
                Err(ControlError::BadWalBlockSize { bytes }) => {
                    prop_assert!(segment_ok && !block_ok);
                    prop_assert_eq!(bytes, block);
                }
                // Only a changed pg_control_version may stop earlier.
                Err(ControlError::UnsupportedVersion { .. } | ControlError::ForeignByteOrder { .. }) => {
                    prop_assert!((8..12).contains(&at));
                }
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }
}
