//! Planning with decoded WAL (a synthetic source): exact consistent
//! points, exact archive end, the stop record, xid and name targets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::repo::backup::{BackupFormat, StopTimeSource};
use crate::repo::label::{BackupLabel, LabelTime};
use crate::wal::facts::fake::FakeWal;
use crate::wal::facts::StopKind;
use crate::wal::timelines::PathStep;
use crate::wal::SegmentSize;

const SEG: u64 = 16 << 20;

fn at(minutes: i64, seconds: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(minutes)
        + Duration::seconds(seconds)
}

fn backup(id: &str, segment: u64, stop_time: DateTime<Utc>) -> Backup {
    let start_lsn = Lsn::new(segment * SEG + 0x28);
    Backup {
        id: id.to_string(),
        format: BackupFormat::Plain,
        label: BackupLabel {
            start_lsn,
            start_segment: WalSegment::containing(
                TimelineId::FIRST,
                start_lsn,
                SegmentSize::DEFAULT,
            )
            .file_name(),
            checkpoint_lsn: Lsn::new(start_lsn.value() + 0x38),
            method: "streamed".into(),
            from: Some("primary".into()),
            start_time: LabelTime {
                text: String::new(),
                instant: None,
            },
            label: id.into(),
            start_timeline: TimelineId::FIRST,
            incremental_from: None,
        },
        timeline: TimelineId::FIRST,
        start_lsn,
        stop_lsn: Lsn::new(segment * SEG + 0x138),
        stop_time: stop_time.fixed_offset(),
        stop_time_source: StopTimeSource::BackupHistoryFile,
        system_identifier: None,
        major_version: Some(15),
        included_wal: Default::default(),
        stored_bytes: 0,
        has_manifest: true,
        files: Default::default(),
        tablespaces: Vec::new(),
    }
}

/// Segments 2..=0x18; in each, a commit at offset 0x100 (before a
/// backup's stop at 0x138) stamped n min 10 s, xid 1000 + n; a restore
/// point "rp" in segment 0x10.
fn world() -> (Vec<Backup>, WalArchive, FakeWal) {
    let backups = vec![backup("b1", 2, at(2, 30)), backup("b2", 8, at(8, 30))];
    let mut events = BTreeMap::new();
    for n in 2..=0x18u64 {
        let start = Lsn::new(n * SEG + 0x100);
        let mut list = vec![StopEvent {
            start,
            end: Lsn::new(start.value() + 34),
            time: at(n as i64, 10),
            kind: StopKind::Commit {
                xid: 1000 + n as u32,
            },
        }];
        if n == 0x10 {
            list.push(StopEvent {
                start: Lsn::new(n * SEG + 0x4000),
                end: Lsn::new(n * SEG + 0x4060),
                time: at(n as i64, 20),
                kind: StopKind::RestorePoint { name: "rp".into() },
            });
        }
        events.insert(n, list);
    }
    let archive = WalArchive::from_listing(
        Path::new("/repo/wal"),
        SegmentSize::DEFAULT,
        (2..=0x18u64).map(|n| {
            let segment = WalSegment {
                timeline: TimelineId::FIRST,
                number: n,
                size: SegmentSize::DEFAULT,
            };
            (segment, 1000, SystemTime::from(at(n as i64 + 1, 0)))
        }),
    );
    let wal = FakeWal {
        size: SegmentSize::DEFAULT,
        path: TimelinePath {
            steps: vec![PathStep {
                timeline: TimelineId::FIRST,
                begins: Lsn::ZERO,
                ends: None,
            }],
        },
        events,
        present: 2..=0x18,
    };
    (backups, archive, wal)
}

fn plan(target: Target, inclusive: bool) -> Result<Plan, PlanError> {
    let (backups, archive, wal) = world();
    let request = PlanRequest {
        target,
        inclusive,
        backup_id: None,
        timeline: TimelineChoice::Latest,
    };
    make_plan(
        &backups,
        0,
        &archive,
        &request,
        &jiff::tz::TimeZone::UTC,
        Some(&wal),
    )
}

fn time(t: DateTime<Utc>) -> Target {
    Target::Time(t.fixed_offset())
}

#[test]
fn a_target_between_the_last_commit_and_stop_time_uses_that_backup() {
    // b2's last commit before its end is at 8 min 10 s; its STOP TIME is
    // 8 min 30 s. A file-level plan would need 8 min 31 s.
    let chosen = plan(time(at(8, 20)), true).unwrap();
    assert_eq!(chosen.backup.id, "b2");
    assert!(chosen.window.exact);
    let stop = chosen.stop.unwrap();
    assert_eq!(stop.time, at(9, 10));
    assert_eq!(
        chosen.wal.last.number, 9,
        "the range ends at the stop record's segment"
    );
    // At exactly that commit: inclusive keeps it (b2), exclusive cannot.
    assert_eq!(plan(time(at(8, 10)), true).unwrap().backup.id, "b2");
    assert_eq!(plan(time(at(8, 10)), false).unwrap().backup.id, "b1");
    assert_eq!(plan(time(at(8, 5)), true).unwrap().backup.id, "b1");
}

#[test]
fn the_archive_ends_at_its_last_commit() {
    let error = plan(time(at(0x18, 10)), true).unwrap_err();
    assert!(
        matches!(error, PlanError::TargetAfterLastCommit { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("10:24:10.000000"), "{error}");
    let just_before = plan(time(at(0x18, 9)), true).unwrap();
    assert_eq!(just_before.stop.unwrap().time, at(0x18, 10));
    // Exclusive at exactly the last commit stops before it: reachable.
    let exclusive = plan(time(at(0x18, 10)), false).unwrap();
    assert_eq!(exclusive.backup.id, just_before.backup.id);
    assert_eq!(exclusive.wal.last, just_before.wal.last);
    let early = plan(time(at(1, 0)), true).unwrap_err();
    assert!(
        matches!(early, PlanError::TargetBeforeWindow { .. }),
        "{early}"
    );
}

#[test]
fn xid_and_name_targets_are_located() {
    let xid = plan(Target::Xid(crate::wal::xid::Xid::Bare(1012)), true).unwrap();
    assert_eq!(
        xid.backup.id, "b2",
        "the newest backup that ends before the transaction"
    );
    assert_eq!(xid.wal.last.number, 12);
    let early = plan(Target::Xid(crate::wal::xid::Xid::Bare(1005)), true).unwrap();
    assert_eq!(early.backup.id, "b1");
    assert!(matches!(
        plan(Target::Xid(crate::wal::xid::Xid::Bare(77)), true),
        Err(PlanError::TargetNotInWal { .. })
    ));
    let name = plan(Target::Name("rp".into()), true).unwrap();
    assert_eq!(name.backup.id, "b2");
    assert_eq!(name.wal.last.number, 0x10);
    assert!(matches!(
        plan(Target::Name("nope".into()), true),
        Err(PlanError::TargetNotInWal { .. })
    ));
}

fn plan_with(
    backups: &[Backup],
    wal: &dyn WalSource,
    archive: &WalArchive,
    target: Target,
) -> Result<Plan, PlanError> {
    let request = PlanRequest {
        target,
        inclusive: true,
        backup_id: None,
        timeline: TimelineChoice::Latest,
    };
    make_plan(
        backups,
        0,
        archive,
        &request,
        &jiff::tz::TimeZone::UTC,
        Some(wal),
    )
}

/// A synthetic archive with some segments gone, and checkpoint records
/// (their next full xid) in some.
struct Gappy {
    wal: FakeWal,
    missing: Vec<u64>,
    checkpoints: BTreeMap<u64, crate::wal::xid::FullXid>,
}

impl WalSource for Gappy {
    fn segment_size(&self) -> SegmentSize {
        self.wal.segment_size()
    }

    fn facts(
        &self,
        segment: WalSegment,
    ) -> Result<Option<crate::wal::facts::SegmentFacts>, crate::wal::facts::FactsError> {
        if self.missing.contains(&segment.number) {
            return Ok(None);
        }
        Ok(self.wal.facts(segment)?.map(|mut facts| {
            if let Some(next_xid) = self.checkpoints.get(&segment.number) {
                facts.add_checkpoint(*next_xid);
            }
            facts
        }))
    }

    fn events(&self, segment: WalSegment) -> Result<Vec<StopEvent>, crate::wal::facts::FactsError> {
        self.wal.events(segment)
    }
}

/// A quiet cluster: commits in segments 2 and 3, then nothing until the
/// backup in segment 8 (its stop time 8 min 30 s), then commits again.
fn quiet_world(missing: &[u64]) -> (Vec<Backup>, WalArchive, Gappy) {
    let (_, _, mut wal) = world();
    for n in 4..=8 {
        wal.events.insert(n, Vec::new());
    }
    let archive = WalArchive::from_listing(
        Path::new("/repo/wal"),
        SegmentSize::DEFAULT,
        (2..=0x18u64).filter(|n| !missing.contains(n)).map(|n| {
            let segment = WalSegment {
                timeline: TimelineId::FIRST,
                number: n,
                size: SegmentSize::DEFAULT,
            };
            (segment, 1000, SystemTime::from(at(n as i64 + 1, 0)))
        }),
    );
    let wal = Gappy {
        wal,
        missing: missing.to_vec(),
        checkpoints: BTreeMap::new(),
    };
    (vec![backup("b", 8, at(8, 30))], archive, wal)
}

#[test]
fn a_quiet_target_before_a_backup_starts_at_its_last_commit_segments_back() {
    let (backups, archive, wal) = quiet_world(&[]);
    // The last commit before the backup's end is in segment 3, at
    // 3 min 10 s: nothing changes from then to the backup's end.
    let chosen = plan_with(&backups, &wal, &archive, time(at(6, 0))).unwrap();
    assert_eq!(chosen.backup.id, "b");
    assert_eq!(chosen.window.from, at(3, 10).fixed_offset());
    assert_eq!(chosen.window.from_note, None);
    assert_eq!(chosen.stop.unwrap().time, at(9, 10));
    // Before that commit the backup cannot reach.
    let early = plan_with(&backups, &wal, &archive, time(at(3, 9))).unwrap_err();
    assert!(
        matches!(early, PlanError::TargetBeforeWindow { .. }),
        "{early}"
    );
    assert!(early.to_string().contains("10:03:10.000000"), "{early}");
}

#[test]
fn a_quiet_target_falls_back_to_the_stop_time_where_segments_are_gone() {
    // Segment 5 is gone: the search cannot see past it.
    let (backups, archive, wal) = quiet_world(&[5]);
    let refused = plan_with(&backups, &wal, &archive, time(at(6, 0))).unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, PlanError::TargetBeforeWindow { .. }),
        "{message}"
    );
    assert!(
        message.contains("WAL segment `000000010000000000000005` is missing")
            && message.contains("its window starts at its stop time"),
        "{message}"
    );
    // The fallback is the stop time rounded up.
    let chosen = plan_with(&backups, &wal, &archive, time(at(8, 31))).unwrap();
    assert_eq!(chosen.window.from, at(8, 31).fixed_offset());
    assert!(chosen.window.from_note.is_some());
}

#[test]
fn a_64_bit_xid_must_be_of_the_epoch_the_wal_holds() {
    use crate::wal::xid::{FullXid, Xid};
    let (backups, archive, wal) = world();
    let epoch = |e: u64, xid: u64| FullXid::new((e << 32) + xid);
    // The backups' checkpoints: segment 2 in epoch 1 (next xid 1001),
    // segment 8 in epoch 1 (next xid 1007).
    let wal = Gappy {
        wal,
        missing: Vec::new(),
        checkpoints: BTreeMap::from([(2, epoch(1, 1001)), (8, epoch(1, 1007))]),
    };
    let full = |value: u64| Target::Xid(Xid::Full(FullXid::new(value)));
    let right = plan_with(&backups, &wal, &archive, full((1 << 32) + 1012)).unwrap();
    assert_eq!(right.backup.id, "b2");
    assert_eq!(right.stop.unwrap().xid(), Some(1012));
    assert!(
        right.notes.iter().all(|n| !n.contains("epoch")),
        "{:?}",
        right.notes
    );
    // The same 32-bit xid from epoch 2 (or 0: a bare value is any epoch).
    let wrong = plan_with(&backups, &wal, &archive, full((2 << 32) + 1012)).unwrap_err();
    let message = wrong.to_string();
    assert!(
        matches!(wrong, PlanError::TargetNotInWal { .. }),
        "{message}"
    );
    assert!(
        message.contains("is 4294968308 of epoch 1") && message.contains("not of epoch 2"),
        "{message}"
    );
    assert!(plan_with(&backups, &wal, &archive, Target::Xid(Xid::Bare(1012))).is_ok());
    // Without any checkpoint record the epoch cannot be checked: said.
    let (backups, archive, wal) = world();
    let unchecked = plan_with(&backups, &wal, &archive, full((2 << 32) + 1012)).unwrap();
    assert!(
        unchecked
            .notes
            .iter()
            .any(|n| n.contains("epoch of transaction") && n.contains("not checked")),
        "{:?}",
        unchecked.notes
    );
}

#[test]
fn of_two_backups_from_one_checkpoint_the_one_consistent_after_the_target_is_never_chosen() {
    let (_, archive, wal) = world();
    // Same start in segment 8. The primary's backup ends just after
    // the commit at 8 min 10 s, the standby's in segment 9 just after
    // the commit at 9 min 10 s.
    let primary = backup("primary", 8, at(8, 30));
    let mut standby = backup("standby", 8, at(9, 40));
    standby.stop_lsn = Lsn::new(9 * SEG + 0x200);
    standby.stop_time_source = StopTimeSource::ManifestWritten;
    for backups in [
        vec![standby.clone(), primary.clone()],
        vec![primary.clone(), standby.clone()],
    ] {
        let between = plan_with(&backups, &wal, &archive, time(at(9, 0))).unwrap();
        assert_eq!(between.backup.id, "primary");
        let after = plan_with(&backups, &wal, &archive, time(at(9, 20))).unwrap();
        assert_eq!(after.backup.id, "standby");
        let xid = plan_with(
            &backups,
            &wal,
            &archive,
            Target::Xid(crate::wal::xid::Xid::Bare(1009)),
        )
        .unwrap();
        assert_eq!(
            xid.backup.id, "primary",
            "the commit at 9 min 10 s lies before the standby's end"
        );
    }
}

#[test]
fn lsn_targets_must_lie_inside_the_wal() {
    // b2 is the newest backup that ends before segment 0x12 (it ends
    // before 0x10, where the restore point is); the WAL runs to 0x12.
    let inside = plan(Target::Lsn(Lsn::new(0x12 * SEG)), true).unwrap();
    assert_eq!(inside.backup.id, "b2");
    assert_eq!(inside.wal.last.number, 0x12);
    let beyond = plan(Target::Lsn(Lsn::new(0x30 * SEG)), true).unwrap_err();
    assert!(
        matches!(beyond, PlanError::TargetNotInWal { .. }),
        "{beyond}"
    );
}
