//! The planner over synthetic catalogs: one table row per rule, then a
//! property over random catalogs.
//!
//! The standard catalog, on timeline 1 with 16 MiB segments, segment `n`
//! archived at 10:00 + `n` minutes (so the newest, 0x18, at 10:24:00):
//!
//! | backup | start      | stop       | STOP TIME            | consistent by |
//! |--------|------------|------------|----------------------|---------------|
//! | b1     | 0/2000028  | 0/2000138  | 10:02:30 (history)   | 10:02:31      |
//! | b2     | 0/8000028  | 0/8000138  | 10:08:30 (history)   | 10:08:31      |
//! | b3     | 0/10000028 | 0/10000138 | 10:16:30 (manifest)  | 10:16:30      |

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use chrono::{Duration, Utc};
use proptest::prelude::*;

use super::*;
use crate::repo::backup::{BackupFormat, StopTimeSource};
use crate::repo::label::{BackupLabel, LabelTime};
use crate::wal::{Lsn, SegmentSize};
use chrono::{DateTime, FixedOffset};

const MIB16: SegmentSize = SegmentSize::DEFAULT;
const MIB: u64 = 1 << 20;
/// Stored size of every archived segment (as if compressed).
const STORED: u64 = 1_000;

fn mib64() -> SegmentSize {
    SegmentSize::new(64 * MIB).unwrap()
}

fn tli(value: u32) -> TimelineId {
    TimelineId::new(value).unwrap()
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap()
}

/// An RFC 3339 instant.
fn instant(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).unwrap()
}

/// `HH:MM:SS[.f]` on 2026-11-23, UTC.
fn at(hms: &str) -> DateTime<FixedOffset> {
    instant(&format!("2026-11-23T{hms}Z"))
}

fn base_time() -> DateTime<FixedOffset> {
    at("10:00:00")
}

/// When the synthetic archive received segment `number`: 10:00 + n min.
fn archived_at(number: u64) -> SystemTime {
    SystemTime::from(base_time() + Duration::minutes(number as i64))
}

/// A synthetic base backup; `build` fills the label with plausible values.
struct BackupBuilder {
    id: String,
    timeline: TimelineId,
    start_lsn: Lsn,
    stop_lsn: Lsn,
    stop_time: DateTime<FixedOffset>,
    source: StopTimeSource,
    included_wal: BTreeSet<String>,
    system_identifier: Option<u64>,
    size: SegmentSize,
}

/// A backup whose STOP TIME comes from a backup history file.
fn backup(id: &str, start: &str, stop: &str, stop_time: DateTime<FixedOffset>) -> BackupBuilder {
    BackupBuilder {
        id: id.to_string(),
        timeline: TimelineId::FIRST,
        start_lsn: lsn(start),
        stop_lsn: lsn(stop),
        stop_time,
        source: StopTimeSource::BackupHistoryFile,
        included_wal: BTreeSet::new(),
        system_identifier: None,
        size: MIB16,
    }
}

impl BackupBuilder {
    /// The stop time is when backup_manifest was written.
    fn manifest(mut self) -> Self {
        self.source = StopTimeSource::ManifestWritten;
        self
    }

    fn timeline(mut self, value: u32) -> Self {
        self.timeline = tli(value);
        self
    }

    /// Segment file names carried in the backup's own `pg_wal`.
    fn includes(mut self, names: &[&str]) -> Self {
        self.included_wal = names.iter().map(|name| name.to_string()).collect();
        self
    }

    fn sysid(mut self, value: u64) -> Self {
        self.system_identifier = Some(value);
        self
    }

    /// Only used to name the start segment in the label.
    fn size(mut self, size: SegmentSize) -> Self {
        self.size = size;
        self
    }

    fn build(self) -> Backup {
        let start_time = self.stop_time - Duration::seconds(30);
        let label = BackupLabel {
            start_lsn: self.start_lsn,
            start_segment: WalSegment::containing(self.timeline, self.start_lsn, self.size)
                .file_name(),
            checkpoint_lsn: Lsn::new(self.start_lsn.value() + 0x38),
            method: "streamed".to_string(),
            from: Some("primary".to_string()),
            start_time: LabelTime {
                text: start_time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                instant: Some(start_time),
            },
            label: format!("pitr test {}", self.id),
            start_timeline: self.timeline,
            incremental_from: None,
        };
        Backup {
            id: self.id,
            format: BackupFormat::Plain,
            label,
            timeline: self.timeline,
            start_lsn: self.start_lsn,
            stop_lsn: self.stop_lsn,
            stop_time: self.stop_time,
            stop_time_source: self.source,
            system_identifier: self.system_identifier,
            major_version: Some(15),
            included_wal: self.included_wal,
            stored_bytes: 0,
            has_manifest: true,
            files: Default::default(),
            tablespaces: Vec::new(),
        }
    }
}

fn b1() -> BackupBuilder {
    backup("b1", "0/2000028", "0/2000138", at("10:02:30"))
}

fn b2() -> BackupBuilder {
    backup("b2", "0/8000028", "0/8000138", at("10:08:30"))
}

fn b3() -> BackupBuilder {
    backup("b3", "0/10000028", "0/10000138", at("10:16:30")).manifest()
}

fn standard() -> Vec<Backup> {
    vec![b1().build(), b2().build(), b3().build()]
}

/// Segments `numbers` of timeline `timeline`.
fn segs(timeline: u32, numbers: std::ops::RangeInclusive<u64>) -> Vec<(u32, u64)> {
    numbers.map(|number| (timeline, number)).collect()
}

/// The standard archive: timeline 1, segments 1 to 0x18.
fn standard_archive() -> Vec<(u32, u64)> {
    segs(1, 1..=0x18)
}

fn without(mut segments: Vec<(u32, u64)>, missing: &[u64]) -> Vec<(u32, u64)> {
    segments.retain(|(_, number)| !missing.contains(number));
    segments
}

fn time(hms: &str) -> Target {
    Target::Time(at(hms))
}

fn lsn_target(text: &str) -> Target {
    Target::Lsn(lsn(text))
}

/// What a row expects.
enum Expect {
    Plan {
        backup: &'static str,
        first: &'static str,
        last: &'static str,
        segments: u64,
        from_backup: u64,
        bytes: u64,
        /// Words that some note must contain, and words no note may contain.
        notes: Vec<&'static str>,
        no_notes: Vec<&'static str>,
        reason: &'static str,
    },
    Error {
        variant: &'static str,
        words: Vec<&'static str>,
        absent: Vec<&'static str>,
    },
}

struct Case {
    name: &'static str,
    size: SegmentSize,
    backups: Vec<Backup>,
    unreadable: usize,
    archive: Vec<(u32, u64)>,
    archive_sysid: Option<u64>,
    target: Target,
    inclusive: bool,
    backup_id: Option<&'static str>,
    expect: Expect,
}

/// A row with the defaults: 16 MiB segments, inclusive, no `--backup`.
fn case(
    name: &'static str,
    backups: Vec<Backup>,
    archive: Vec<(u32, u64)>,
    target: Target,
    expect: Expect,
) -> Case {
    Case {
        name,
        size: MIB16,
        backups,
        unreadable: 0,
        archive,
        archive_sysid: None,
        target,
        inclusive: true,
        backup_id: None,
        expect,
    }
}

impl Case {
    fn with_backup(mut self, id: &'static str) -> Self {
        self.backup_id = Some(id);
        self
    }

    fn exclusive(mut self) -> Self {
        self.inclusive = false;
        self
    }

    fn size(mut self, size: SegmentSize) -> Self {
        self.size = size;
        self
    }

    fn archive_sysid(mut self, value: u64) -> Self {
        self.archive_sysid = Some(value);
        self
    }

    fn unreadable(mut self, count: usize) -> Self {
        self.unreadable = count;
        self
    }
}

/// A plan from `backup` over `first..=last`, all archived except
/// `from_backup` segments carried by the backup.
fn plan(
    backup: &'static str,
    first: &'static str,
    last: &'static str,
    segments: u64,
    from_backup: u64,
    bytes: u64,
) -> Expect {
    Expect::Plan {
        backup,
        first,
        last,
        segments,
        from_backup,
        bytes,
        notes: Vec::new(),
        no_notes: Vec::new(),
        reason: "",
    }
}

fn error(variant: &'static str, words: &[&'static str]) -> Expect {
    Expect::Error {
        variant,
        words: words.to_vec(),
        absent: Vec::new(),
    }
}

impl Expect {
    fn note(mut self, words: &'static str) -> Self {
        if let Expect::Plan { notes, .. } = &mut self {
            notes.push(words);
        }
        self
    }

    fn no_note(mut self, words: &'static str) -> Self {
        if let Expect::Plan { no_notes, .. } = &mut self {
            no_notes.push(words);
        }
        self
    }

    fn reason(mut self, words: &'static str) -> Self {
        if let Expect::Plan { reason, .. } = &mut self {
            *reason = words;
        }
        self
    }

    fn not_saying(mut self, words: &'static str) -> Self {
        if let Expect::Error { absent, .. } = &mut self {
            absent.push(words);
        }
        self
    }
}

fn variant(error: &PlanError) -> &'static str {
    match error {
        PlanError::NoBackups { .. } => "NoBackups",
        PlanError::UnknownBackup { .. } => "UnknownBackup",
        PlanError::TargetBeforeWindow { .. } => "TargetBeforeWindow",
        PlanError::TargetAfterArchive { .. } => "TargetAfterArchive",
        PlanError::BackupCannotReach { .. } => "BackupCannotReach",
        PlanError::MissingWal { .. } => "MissingWal",
        PlanError::SystemMismatch { .. } => "SystemMismatch",
        PlanError::Timeline { .. } => "Timeline",
        PlanError::BrokenHistory { .. } => "BrokenHistory",
        PlanError::NoBackupOnPath { .. } => "NoBackupOnPath",
        PlanError::BackupNotOnPath { .. } => "BackupNotOnPath",
        PlanError::TargetAfterLastCommit { .. } => "TargetAfterLastCommit",
        PlanError::NoTransactions { .. } => "NoTransactions",
        PlanError::TargetNotInWal { .. } => "TargetNotInWal",
        PlanError::CorruptWal { .. } => "CorruptWal",
        PlanError::Wal(_) => "Wal",
    }
}

fn archive(size: SegmentSize, segments: &[(u32, u64)], sysid: Option<u64>) -> WalArchive {
    let mut archive = WalArchive::from_listing(
        Path::new("/repo/wal"),
        size,
        segments.iter().map(|&(timeline, number)| {
            let segment = WalSegment {
                timeline: tli(timeline),
                number,
                size,
            };
            (segment, STORED, archived_at(number))
        }),
    );
    archive.system_identifier = sysid;
    archive
}

fn cases() -> Vec<Case> {
    let s16 = MIB16.bytes();
    vec![
        // --- time targets -------------------------------------------
        case(
            "time: newest backup consistent before the target",
            standard(),
            standard_archive(),
            time("10:12:00"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                .note("checked to the end of timeline 1")
                .reason("the newest backup consistent before the target; it ended at 2026-11-23 10:08:30 UTC"),
        ),
        // A backup of the primary and one of its standby start at the
        // same checkpoint; the standby's ends later. Whatever the
        // names' order, the one consistent after the target is never
        // chosen.
        case(
            "time: same start, the later-ending standby backup sorts first",
            vec![
                backup("a-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                backup("b-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
            ],
            standard_archive(),
            time("10:09:00"),
            plan("b-primary", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "time: same start, the later-ending standby backup sorts last",
            vec![
                backup("a-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                backup("b-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
            ],
            standard_archive(),
            time("10:09:00"),
            plan("a-primary", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "time: same start, after both ends the later one",
            vec![
                backup("a-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
                backup("b-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
            ],
            standard_archive(),
            time("10:10:00"),
            plan("b-standby", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "lsn: same start, the later-ending standby backup sorts first",
            vec![
                backup("a-standby", "0/8000028", "0/9000100", at("10:09:40")).manifest().build(),
                backup("b-primary", "0/8000028", "0/8000138", at("10:08:30")).build(),
            ],
            standard_archive(),
            lsn_target("0/9000000"),
            plan("b-primary", "000000010000000000000008", "000000010000000000000009", 2, 0, 2 * STORED),
        ),
        case(
            "time: exactly STOP TIME + 1 s",
            standard(),
            standard_archive(),
            time("10:08:31"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "time: the same boundary written with another offset",
            standard(),
            standard_archive(),
            Target::Time(instant("2026-11-23T15:38:31+05:30")),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "time: 0.5 s after STOP TIME is before the truncated end",
            standard(),
            standard_archive(),
            time("10:08:30.5"),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
        ),
        case(
            "time: 1 µs before STOP TIME + 1 s",
            standard(),
            standard_archive(),
            time("10:08:30.999999"),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
        ),
        case(
            "time: exactly STOP TIME is not enough",
            standard(),
            standard_archive(),
            time("10:08:30"),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
        ),
        case(
            "time: a manifest time is used as is",
            standard(),
            standard_archive(),
            time("10:16:30"),
            plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED)
                .note("its end time is taken from when its backup_manifest was written"),
        ),
        case(
            "time: 1 µs before a manifest time",
            standard(),
            standard_archive(),
            time("10:16:29.999999"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                .no_note("backup_manifest"),
        ),
        case(
            "time: the order of the backups does not matter",
            vec![b3().build(), b1().build(), b2().build()],
            standard_archive(),
            time("10:12:00"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "time: 1 µs before the newest segment was archived",
            standard(),
            standard_archive(),
            time("10:23:59.999999"),
            plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
        ),
        case(
            "time: --exclusive is carried into the plan",
            standard(),
            standard_archive(),
            time("10:12:00"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        )
        .exclusive(),
        case(
            "time: 0.5 s after the only reachable STOP TIME",
            standard(),
            standard_archive(),
            time("10:02:30.5"),
            error(
                "TargetBeforeWindow",
                &[
                    "the target 2026-11-23 10:02:30.500000 UTC",
                    "before the earliest consistent point of any backup",
                    "the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC",
                ],
            ),
        ),
        case(
            "time: long before every backup",
            standard(),
            standard_archive(),
            time("09:00:00"),
            error(
                "TargetBeforeWindow",
                &["the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC"],
            ),
        ),
        case(
            "time: before every backup, with an empty archive",
            standard(),
            Vec::new(),
            time("09:00:00"),
            error(
                "TargetBeforeWindow",
                &["the recoverable window is from 2026-11-23 10:02:31 UTC"],
            )
            .not_saying("about"),
        ),
        case(
            "time: exactly when the newest segment was archived",
            standard(),
            standard_archive(),
            time("10:24:00"),
            error(
                "TargetAfterArchive",
                &[
                    "after the end of the WAL archive",
                    "the newest segment on timeline 1, `000000010000000000000018`, was archived at 2026-11-23 10:24:00 UTC",
                    "the recoverable window is 2026-11-23 10:02:31 UTC to about 2026-11-23 10:24:00 UTC",
                    "Use `--to latest`",
                ],
            ),
        ),
        case(
            "time: long after the archive ends",
            standard(),
            standard_archive(),
            time("11:00:00"),
            error("TargetAfterArchive", &["`000000010000000000000018`"]),
        ),
        case(
            "time: the archive end is the chosen timeline's, not another's",
            vec![backup("t2", "0/9000028", "0/9000100", at("10:09:30")).timeline(2).build()],
            [segs(1, 1..=0x30), segs(2, 8..=0x18)].concat(),
            time("10:30:00"),
            error(
                "TargetAfterArchive",
                &["the newest segment on timeline 2, `000000020000000000000018`, was archived at 2026-11-23 10:24:00 UTC"],
            ),
        ),
        case(
            "time: a backup on timeline 2 reads timeline 2",
            vec![backup("t2", "0/9000028", "0/9000100", at("10:09:30")).timeline(2).build()],
            [segs(1, 1..=0x30), segs(2, 8..=0x18)].concat(),
            time("10:20:00"),
            plan("t2", "000000020000000000000009", "000000020000000000000018", 16, 0, 16 * STORED)
                .note("checked to the end of timeline 2"),
        ),
        // --- LSN targets ---------------------------------------------
        case(
            "lsn: newest backup ending at or before the target",
            standard(),
            standard_archive(),
            lsn_target("0/9000000"),
            plan("b2", "000000010000000000000008", "000000010000000000000009", 2, 0, 2 * STORED)
                .no_note("checked to the end")
                .reason("ends at 0/8000138"),
        ),
        case(
            "lsn: exactly the stop LSN",
            standard(),
            standard_archive(),
            lsn_target("0/8000138"),
            plan("b2", "000000010000000000000008", "000000010000000000000008", 1, 0, STORED),
        ),
        case(
            "lsn: one byte before the stop LSN",
            standard(),
            standard_archive(),
            lsn_target("0/8000137"),
            plan("b1", "000000010000000000000002", "000000010000000000000008", 7, 0, 7 * STORED),
        ),
        case(
            "lsn: a target on a segment boundary needs that segment",
            standard(),
            standard_archive(),
            lsn_target("0/C000000"),
            plan("b2", "000000010000000000000008", "00000001000000000000000C", 5, 0, 5 * STORED),
        ),
        case(
            "lsn: the last byte of a segment",
            standard(),
            standard_archive(),
            lsn_target("0/BFFFFFF"),
            plan("b2", "000000010000000000000008", "00000001000000000000000B", 4, 0, 4 * STORED),
        ),
        case(
            "lsn: before every backup",
            standard(),
            standard_archive(),
            lsn_target("0/2000137"),
            error(
                "BackupCannotReach",
                &[
                    "backup `b1` cannot reach the target LSN 0/2000137",
                    "every backup ends after it (the earliest ends at 0/2000138)",
                ],
            ),
        ),
        case(
            "lsn: before every backup, backups unsorted, names the earliest",
            vec![b3().build(), b2().build(), b1().build()],
            standard_archive(),
            lsn_target("0/1000000"),
            error(
                "BackupCannotReach",
                &["backup `b1` cannot reach", "the earliest ends at 0/2000138"],
            ),
        ),
        case(
            "lsn: a gap after the last needed segment does not matter",
            standard(),
            without(standard_archive(), &[0x0D, 0x0E]),
            lsn_target("0/C000000"),
            plan("b2", "000000010000000000000008", "00000001000000000000000C", 5, 0, 5 * STORED),
        ),
        case(
            "lsn: the segment holding the target is missing",
            standard(),
            without(standard_archive(), &[0x0C]),
            lsn_target("0/C000000"),
            error(
                "MissingWal",
                &[
                    "WAL segment `00000001000000000000000C` is missing from the archive",
                    "every segment from `000000010000000000000008` to `00000001000000000000000C`",
                ],
            )
            .not_saying("resumes"),
        ),
        case(
            "lsn: beyond the end of the archive",
            standard(),
            standard_archive(),
            lsn_target("0/30000000"),
            error(
                "MissingWal",
                &[
                    "`000000010000000000000019` is missing",
                    "from `000000010000000000000010` to `000000010000000000000030`",
                ],
            )
            .not_saying("resumes"),
        ),
        // --- latest, immediate, xid, name -----------------------------
        case(
            "latest: the newest backup, to the end of the archive",
            vec![b3().build(), b1().build(), b2().build()],
            standard_archive(),
            Target::Latest,
            plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED)
                .reason("the newest backup"),
        ),
        case(
            "immediate: the newest backup, to its stop segment",
            standard(),
            standard_archive(),
            Target::Immediate,
            plan("b3", "000000010000000000000010", "000000010000000000000010", 1, 0, STORED),
        ),
        case(
            "immediate: a stop on a segment boundary ends in the segment before",
            vec![b1().build(), backup("b4", "0/1F000028", "0/20000000", at("10:31:00")).build()],
            segs(1, 1..=0x20),
            Target::Immediate,
            plan("b4", "00000001000000000000001F", "00000001000000000000001F", 1, 0, STORED),
        ),
        case(
            "latest: a stop on a segment boundary, to the end of the archive",
            vec![b1().build(), backup("b4", "0/1F000028", "0/20000000", at("10:31:00")).build()],
            segs(1, 1..=0x20),
            Target::Latest,
            plan("b4", "00000001000000000000001F", "000000010000000000000020", 2, 0, 2 * STORED),
        ),
        case(
            "xid: the oldest backup, with a note",
            vec![b2().build(), b3().build(), b1().build()],
            standard_archive(),
            Target::Xid(crate::wal::xid::Xid::Bare(1234)),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                .note("the oldest backup is used; pass --backup ID to start from a newer one")
                .note("checked to the end of timeline 1"),
        ),
        case(
            "name: the oldest backup, with a note",
            standard(),
            standard_archive(),
            Target::Name("before_migration".to_string()),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                .note("the oldest backup is used"),
        ),
        case(
            "name: --backup starts from a newer one without the note",
            standard(),
            standard_archive(),
            Target::Name("before_migration".to_string()),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED)
                .no_note("oldest backup")
                .reason("chosen with --backup"),
        )
        .with_backup("b2"),
        case(
            "immediate: a degenerate backup (stop = start on a boundary) still reads its start segment",
            vec![backup("odd", "0/3000000", "0/3000000", at("10:03:30")).build()],
            standard_archive(),
            Target::Immediate,
            plan("odd", "000000010000000000000003", "000000010000000000000003", 1, 0, STORED),
        ),
        // --- --backup ----------------------------------------------------
        case(
            "--backup: an unknown id lists the known ones",
            standard(),
            standard_archive(),
            time("10:12:00"),
            error(
                "UnknownBackup",
                &["there is no backup `b9` in the repository (backups: b1, b2, b3)"],
            ),
        )
        .with_backup("b9"),
        case(
            "--backup: a backup consistent after the time target",
            standard(),
            standard_archive(),
            time("10:12:00"),
            error(
                "BackupCannotReach",
                &["backup `b3` cannot reach the target 2026-11-23 10:12:00 UTC", "it is consistent only from 2026-11-23 10:16:30 UTC on"],
            ),
        )
        .with_backup("b3"),
        case(
            "--backup: 0.5 s after its STOP TIME",
            standard(),
            standard_archive(),
            time("10:08:30.5"),
            error(
                "BackupCannotReach",
                &["backup `b2`", "consistent only from 2026-11-23 10:08:31 UTC on"],
            ),
        )
        .with_backup("b2"),
        case(
            "--backup: an older backup than needed is accepted",
            standard(),
            standard_archive(),
            time("10:12:00"),
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED)
                .reason("chosen with --backup"),
        )
        .with_backup("b1"),
        case(
            "--backup: a backup ending after the LSN target",
            standard(),
            standard_archive(),
            lsn_target("0/9000000"),
            error(
                "BackupCannotReach",
                &["backup `b3` cannot reach the target LSN 0/9000000: it ends at 0/10000138, after the target"],
            ),
        )
        .with_backup("b3"),
        case(
            "--backup: latest from an older backup",
            standard(),
            standard_archive(),
            Target::Latest,
            plan("b1", "000000010000000000000002", "000000010000000000000018", 23, 0, 23 * STORED),
        )
        .with_backup("b1"),
        // --- gaps and the backup's own WAL ---------------------------
        case(
            "gap: the first missing segment and where the archive resumes",
            standard(),
            without(standard_archive(), &[0x0C, 0x0D]),
            time("10:12:00"),
            error(
                "MissingWal",
                &[
                    "WAL segment `00000001000000000000000C` is missing from the archive",
                    "every segment from `000000010000000000000008` to `000000010000000000000018`",
                    "(the archive resumes at `00000001000000000000000E`)",
                ],
            )
            .not_saying("00000001000000000000000D"),
        ),
        case(
            "gap: the backup's start segment is missing",
            standard(),
            without(standard_archive(), &[0x08]),
            time("10:12:00"),
            error(
                "MissingWal",
                &["`000000010000000000000008` is missing", "resumes at `000000010000000000000009`"],
            ),
        ),
        case(
            "gap: before the chosen backup does not matter",
            standard(),
            without(standard_archive(), &[0x03, 0x04]),
            time("10:12:00"),
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 0, 17 * STORED),
        ),
        case(
            "gap: a segment carried by the backup fills it",
            vec![
                b1().build(),
                b2()
                    .includes(&["000000010000000000000008", "000000010000000000000009"])
                    .build(),
                b3().build(),
            ],
            without(standard_archive(), &[0x08]),
            time("10:12:00"),
            // 0x09 is archived too: the archive's copy is counted.
            plan("b2", "000000010000000000000008", "000000010000000000000018", 17, 1, 16 * STORED + s16),
        ),
        case(
            "gap: another backup's WAL does not fill it",
            vec![
                b1().includes(&["000000010000000000000008"]).build(),
                b2().build(),
            ],
            without(standard_archive(), &[0x08]),
            time("10:12:00"),
            error("MissingWal", &["`000000010000000000000008` is missing"]),
        ),
        case(
            "latest: the backup's own WAL beyond the archive end",
            vec![
                b1().build(),
                b3().includes(&[
                    "000000010000000000000010",
                    "000000010000000000000019",
                    "00000001000000000000001A",
                ])
                .build(),
            ],
            standard_archive(),
            Target::Latest,
            plan("b3", "000000010000000000000010", "00000001000000000000001A", 11, 2, 9 * STORED + 2 * s16),
        ),
        // --- segment numbering -------------------------------------------
        case(
            "numbering: 0xFF then 0x100 is continuous",
            vec![backup("wrap", "0/FF000028", "0/FF000200", at("14:00:00")).build()],
            segs(1, 0xF0..=0x103),
            lsn_target("1/2000000"),
            plan("wrap", "0000000100000000000000FF", "000000010000000100000002", 4, 0, 4 * STORED),
        ),
        case(
            "numbering: latest across 0xFF → 0x100",
            vec![backup("wrap", "0/FE000028", "0/FF000200", at("14:00:00")).build()],
            segs(1, 0xF0..=0x103),
            Target::Latest,
            plan("wrap", "0000000100000000000000FE", "000000010000000100000003", 6, 0, 6 * STORED),
        ),
        case(
            "numbering: a gap at 0x100 is named by its file name",
            vec![backup("wrap", "0/FF000028", "0/FF000200", at("14:00:00")).build()],
            without(segs(1, 0xF0..=0x103), &[0x100]),
            lsn_target("1/2000000"),
            error(
                "MissingWal",
                &[
                    "`000000010000000100000000` is missing",
                    "from `0000000100000000000000FF` to `000000010000000100000002`",
                    "resumes at `000000010000000100000001`",
                ],
            ),
        ),
        case(
            "64 MiB: LSN target across the 0x3F → 0x40 boundary, own WAL counted",
            vec![backup("big", "0/8000028", "0/8000200", at("10:10:00"))
                .size(mib64())
                .includes(&["000000010000000000000002"])
                .build()],
            without(segs(1, 1..=0x42), &[2]),
            lsn_target("1/4000000"),
            plan("big", "000000010000000000000002", "000000010000000100000001", 64, 1, 63 * STORED + 64 * MIB),
        )
        .size(mib64()),
        case(
            "64 MiB: immediate with a stop on a segment boundary",
            vec![backup("big", "0/FC00028", "0/10000000", at("10:10:00")).size(mib64()).build()],
            segs(1, 1..=0x42),
            Target::Immediate,
            plan("big", "000000010000000000000003", "000000010000000000000003", 1, 0, STORED),
        )
        .size(mib64()),
        case(
            "64 MiB: a time target",
            vec![backup("big", "0/FC00028", "0/10000000", at("10:03:10")).size(mib64()).build()],
            segs(1, 1..=0x10),
            time("10:05:00"),
            plan("big", "000000010000000000000003", "000000010000000000000010", 14, 0, 14 * STORED),
        )
        .size(mib64()),
        // --- identity ------------------------------------------------------
        case(
            "identity: a backup of another cluster",
            vec![b1().sysid(111).build(), b3().sysid(111).build()],
            standard_archive(),
            Target::Latest,
            error(
                "SystemMismatch",
                &["backup `b3` belongs to another cluster (system identifier 111) than the WAL archive (222)"],
            ),
        )
        .archive_sysid(222),
        case(
            "identity: the same cluster",
            vec![b1().sysid(222).build(), b3().sysid(222).build()],
            standard_archive(),
            Target::Latest,
            plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
        )
        .archive_sysid(222),
        case(
            "identity: unknown on the backup's side is not a mismatch",
            standard(),
            standard_archive(),
            Target::Latest,
            plan("b3", "000000010000000000000010", "000000010000000000000018", 9, 0, 9 * STORED),
        )
        .archive_sysid(222),
        case(
            "no backups: says how many could not be read",
            Vec::new(),
            standard_archive(),
            Target::Latest,
            error(
                "NoBackups",
                &["there is no usable base backup in the repository (2 backup directories could not be understood; see `pitr list`)"],
            ),
        )
        .unreadable(2),
    ]
}

#[test]
fn table() {
    let mut failures = Vec::new();
    let cases = cases();
    let mut names = BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name),
            "duplicate case name `{}`",
            case.name
        );
        if let Err(failure) = check(case) {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn check(case: &Case) -> Result<(), String> {
    let archive = archive(case.size, &case.archive, case.archive_sysid);
    let request = PlanRequest {
        target: case.target.clone(),
        inclusive: case.inclusive,
        backup_id: case.backup_id.map(str::to_string),
        timeline: TimelineChoice::Current,
    };
    let result = make_plan(
        &case.backups,
        case.unreadable,
        &archive,
        &request,
        &jiff::tz::TimeZone::UTC,
        None,
    );
    match (&case.expect, result) {
        (
            Expect::Plan {
                backup,
                first,
                last,
                segments,
                from_backup,
                bytes,
                notes,
                no_notes,
                reason,
            },
            Ok(plan),
        ) => {
            let got = (
                plan.backup.id.as_str(),
                plan.wal.first.file_name(),
                plan.wal.last.file_name(),
                plan.wal.segments,
                plan.wal.from_backup,
                plan.wal.bytes,
            );
            let want = (
                *backup,
                first.to_string(),
                last.to_string(),
                *segments,
                *from_backup,
                *bytes,
            );
            if got != want {
                return Err(format!(
                    "expected (backup, first, last, segments, from_backup, bytes) = {want:?}, got {got:?}"
                ));
            }
            if plan.timeline != plan.backup.timeline
                || plan.target != case.target
                || plan.inclusive != case.inclusive
            {
                return Err(format!("the plan does not carry the request: {plan:?}"));
            }
            for words in notes {
                if !plan.notes.iter().any(|note| note.contains(words)) {
                    return Err(format!("no note says `{words}`: {:?}", plan.notes));
                }
            }
            for words in no_notes {
                if plan.notes.iter().any(|note| note.contains(words)) {
                    return Err(format!("a note says `{words}`: {:?}", plan.notes));
                }
            }
            if !plan.reason.contains(reason) {
                return Err(format!(
                    "the reason `{}` does not say `{reason}`",
                    plan.reason
                ));
            }
            Ok(())
        }
        (
            Expect::Error {
                variant: want,
                words,
                absent,
            },
            Err(error),
        ) => {
            let message = error.to_string();
            if variant(&error) != *want {
                return Err(format!(
                    "expected {want}, got {}: {message}",
                    variant(&error)
                ));
            }
            for words in words {
                if !message.contains(words) {
                    return Err(format!("the message does not say `{words}`: {message}"));
                }
            }
            for words in absent {
                if message.contains(words) {
                    return Err(format!("the message says `{words}`: {message}"));
                }
            }
            Ok(())
        }
        (Expect::Plan { backup, .. }, Err(error)) => Err(format!(
            "expected a plan from `{backup}`, got {}: {error}",
            variant(&error)
        )),
        (Expect::Error { variant, .. }, Ok(plan)) => Err(format!(
            "expected {variant}, got a plan from `{}` over {}..={}",
            plan.backup.id, plan.wal.first, plan.wal.last
        )),
    }
}

#[test]
fn missing_wal_fields() {
    // The structured error, not only its message, names the first gap.
    let archive = archive(MIB16, &without(standard_archive(), &[0x0C, 0x0D]), None);
    let request = PlanRequest {
        target: time("10:12:00"),
        inclusive: true,
        backup_id: None,
        timeline: TimelineChoice::Current,
    };
    let error = make_plan(
        &standard(),
        0,
        &archive,
        &request,
        &jiff::tz::TimeZone::UTC,
        None,
    )
    .unwrap_err();
    let PlanError::MissingWal {
        missing,
        first,
        last,
        last_present,
    } = error
    else {
        panic!("expected MissingWal, got {error}");
    };
    let segment = |number| WalSegment {
        timeline: TimelineId::FIRST,
        number,
        size: MIB16,
    };
    assert_eq!(missing, segment(0x0C));
    assert_eq!(first, segment(0x08));
    assert_eq!(last, segment(0x18));
    assert_eq!(last_present, Some(segment(0x0E)));
}

/// One random backup: start segment, offset in it, length in bytes,
/// stop time in ms after 10:00, whether the time is a manifest's, and
/// which segments after its start it carries.
type BackupSpec = (u64, u64, u64, i64, bool, BTreeSet<u64>);

fn backup_spec(max_segment: u64, min_len: u64) -> impl Strategy<Value = BackupSpec> {
    (
        0..max_segment,
        // Segment boundaries are where off-by-one errors live.
        prop_oneof![Just(0), 0..MIB16.bytes()],
        prop_oneof![
            Just(min_len),
            Just(MIB16.bytes()),
            min_len..3 * MIB16.bytes()
        ],
        0i64..3_600_000,
        any::<bool>(),
        prop::collection::btree_set(0u64..4, 0..3),
    )
}

fn random_backup(index: usize, spec: &BackupSpec, timeline: u32) -> Backup {
    let (segment, offset, len, ms, manifest, included) = spec;
    let start = segment * MIB16.bytes() + offset;
    // STOP TIME of a backup history file has whole seconds.
    let ms = if *manifest { *ms } else { ms - ms % 1000 };
    let mut builder = backup(
        &format!("r{index}"),
        &Lsn::new(start).to_string(),
        &Lsn::new(start + len).to_string(),
        base_time() + Duration::milliseconds(ms),
    )
    .timeline(timeline);
    if *manifest {
        builder = builder.manifest();
    }
    let names: Vec<String> = included
        .iter()
        .map(|k| {
            WalSegment {
                timeline: tli(timeline),
                number: segment + k,
                size: MIB16,
            }
            .file_name()
        })
        .collect();
    builder
        .includes(&names.iter().map(String::as_str).collect::<Vec<_>>())
        .build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Over a contiguous archive that covers every backup, a time target
    /// either gets the newest backup consistent by then, or is before
    /// every backup, or after the archive; nothing else.
    #[test]
    fn time_target_picks_newest_consistent_backup(
        specs in prop::collection::vec(backup_spec(300, 1), 1..6),
        lead in 0u64..3,
        tail in 0u64..6,
        target_ms in -600_000i64..20_000_000,
        near_a_stop in proptest::option::of((any::<prop::sample::Index>(), -1500i64..1500)),
    ) {
        // Half the cases aim within 1.5 s of a backup's stop time, where
        // the whole-second rule decides.
        let target_ms = match near_a_stop {
            Some((which, delta)) => specs[which.index(specs.len())].3 + delta,
            None => target_ms,
        };
        let backups: Vec<Backup> = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| random_backup(index, spec, 1))
            .collect();
        let from = specs.iter().map(|spec| spec.0).min().unwrap().saturating_sub(lead);
        // Past every stop and every segment a backup carries.
        let to = backups
            .iter()
            .flat_map(|b| {
                let carried = b
                    .included_wal
                    .iter()
                    .filter_map(|name| WalSegment::parse(name, MIB16))
                    .map(|segment| segment.number);
                carried.chain([WalSegment::containing_end(b.timeline, b.stop_lsn, MIB16).number])
            })
            .max()
            .unwrap()
            + tail;
        let archive = archive(MIB16, &segs(1, from..=to), None);
        let archive_end = DateTime::<Utc>::from(archived_at(to)).fixed_offset();
        let target = base_time() + Duration::milliseconds(target_ms);
        let request = PlanRequest {
            target: Target::Time(target),
            inclusive: true,
            backup_id: None,
            timeline: TimelineChoice::Current,
        };
        // The oracle's consistent points, from the generated parts and
        // not from Backup::consistent_by: a backup history file's STOP
        // TIME is truncated to the second, so the backup is certainly
        // consistent only one second later; a manifest's time is exact.
        let consistent: std::collections::BTreeMap<String, DateTime<FixedOffset>> = specs
            .iter()
            .enumerate()
            .map(|(index, (_, _, _, ms, manifest, _))| {
                let at = if *manifest {
                    base_time() + Duration::milliseconds(*ms)
                } else {
                    base_time() + Duration::milliseconds(ms - ms % 1000) + Duration::seconds(1)
                };
                (format!("r{index}"), at)
            })
            .collect();
        let consistent_by = |b: &Backup| consistent[&b.id];
        let reachable = backups.iter().any(|b| consistent_by(b) <= target);
        match make_plan(&backups, 0, &archive, &request, &jiff::tz::TimeZone::UTC, None) {
            Ok(plan) => {
                let chosen = consistent_by(&plan.backup);
                prop_assert!(chosen <= target);
                for other in &backups {
                    prop_assert!(
                        consistent_by(other) > target || consistent_by(other) <= chosen,
                        "`{}` is consistent by {} <= {target}, later than the chosen `{}` ({chosen})",
                        other.id, consistent_by(other), plan.backup.id
                    );
                }
                prop_assert_eq!(
                    plan.wal.first,
                    WalSegment::containing(plan.backup.timeline, plan.backup.start_lsn, MIB16)
                );
                prop_assert_eq!(plan.wal.last.number, to);
                prop_assert_eq!(plan.wal.segments, to - plan.wal.first.number + 1);
                prop_assert!(target < archive_end);
            }
            Err(PlanError::TargetBeforeWindow { .. }) => prop_assert!(!reachable),
            Err(PlanError::TargetAfterArchive { .. }) => {
                prop_assert!(reachable);
                prop_assert!(target >= archive_end);
            }
            Err(error) => prop_assert!(false, "unexpected error: {error}"),
        }
    }

    /// Whatever the catalog (gaps, timelines, identities, degenerate
    /// backups) and the request, `make_plan` returns, and a plan is
    /// self-consistent.
    #[test]
    fn make_plan_never_panics(
        specs in prop::collection::vec(
            (backup_spec(0x120, 0), 1u32..3, prop::option::weighted(0.2, 1u64..3)),
            0..5,
        ),
        // Runs of segments (timeline, first, length), then holes in them.
        runs in prop::collection::vec((1u32..3, 0u64..0x120, 0u64..0x60), 0..4),
        holes in prop::collection::btree_set(0u64..0x180, 0..3),
        archive_sysid in prop::option::weighted(0.2, 1u64..3),
        kind in 0u8..6,
        target_lsn in 0u64..0x130 * MIB16.bytes(),
        target_ms in -600_000i64..20_000_000,
        pick in prop::option::weighted(0.3, 0usize..6),
        inclusive in any::<bool>(),
    ) {
        let backups: Vec<Backup> = specs
            .iter()
            .enumerate()
            .map(|(index, (spec, timeline, sysid))| {
                let mut backup = random_backup(index, spec, *timeline);
                backup.system_identifier = *sysid;
                backup
            })
            .collect();
        let segments: Vec<(u32, u64)> = runs
            .iter()
            .flat_map(|&(timeline, first, len)| segs(timeline, first..=first + len))
            .filter(|(_, number)| !holes.contains(number))
            .collect();
        let archive = archive(MIB16, &segments, archive_sysid);
        let target = match kind {
            0 => Target::Time(base_time() + Duration::milliseconds(target_ms)),
            1 => Target::Lsn(Lsn::new(target_lsn)),
            2 => Target::Latest,
            3 => Target::Immediate,
            4 => Target::Xid(crate::wal::xid::Xid::Bare(1234)),
            _ => Target::Name("point".to_string()),
        };
        let request = PlanRequest {
            target,
            inclusive,
            // Index 5 is never a backup: an unknown id.
            backup_id: pick.map(|index| format!("r{index}")),
            timeline: TimelineChoice::Current,
        };
        match make_plan(&backups, 0, &archive, &request, &jiff::tz::TimeZone::UTC, None) {
            Ok(plan) => {
                let wal = &plan.wal;
                prop_assert_eq!(
                    wal.first,
                    WalSegment::containing(plan.backup.timeline, plan.backup.start_lsn, MIB16)
                );
                prop_assert!(wal.first.number <= wal.last.number);
                prop_assert_eq!(wal.last.timeline, plan.backup.timeline);
                prop_assert_eq!(wal.segments, wal.last.number - wal.first.number + 1);
                prop_assert!(wal.from_backup <= wal.segments);
                let archived = wal.segments - wal.from_backup;
                prop_assert_eq!(wal.bytes, archived * STORED + wal.from_backup * MIB16.bytes());
            }
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
}
