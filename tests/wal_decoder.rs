//! The WAL decoder against PostgreSQL's own reader, of whichever major
//! `PITR_TEST_PG_BIN` holds (the version matrix runs it for 13 to 18): a
//! real server runs a workload that exercises every kind of record the
//! decoder reports, and every record of the archived WAL is compared with
//! `pg_waldump`'s view of it — position, length, xid, prev-link, resource
//! manager; and for commits, aborts, restore points, switches, checkpoints
//! and the like, what the record says.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDateTime, Utc};
use pitr::wal::decode::{
    EndReason, Event, EventKind, SegmentEnd, SegmentSummary, StartAt, TransactionEnd, WalDecoder,
    WalItem, WalLevel,
};
use pitr::wal::page::LongPageHeader;
use pitr::wal::segment::is_segment_name;
use pitr::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

use common::*;

/// WAL page size of the Debian build.
const PAGE: u64 = 8192;

/// Resource manager names as pg_waldump prints them (rmgrlist.h).
const RMGR_NAMES: [&str; 22] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

/// One line of pg_waldump output.
#[derive(Clone, Debug)]
struct Dumped {
    rmgr: String,
    total_len: u32,
    xid: u32,
    lsn: Lsn,
    prev: Lsn,
    desc: String,
}

/// One record as the decoder saw it.
#[derive(Clone, Debug)]
struct Seen {
    start: Lsn,
    end: Lsn,
    prev: Lsn,
    xid: u32,
    rmid: u8,
    total_len: u32,
    event: Option<Event>,
    /// `spc/db/rel` of each relation its block references name.
    relations: Vec<String>,
}

/// The relations pg_waldump names in a record's block references
/// (`blkref #0: rel 1663/5/16384 ...`), each once, in order.
fn dumped_relations(desc: &str) -> Vec<String> {
    let mut relations: Vec<String> = Vec::new();
    for part in desc.split("blkref #").skip(1) {
        let Some(rel) = part
            .split_once(": rel ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
        else {
            continue;
        };
        let rel = rel.trim_end_matches(',').to_string();
        if !relations.contains(&rel) {
            relations.push(rel);
        }
    }
    relations
}

struct Scenario {
    archive: PathBuf,
    segments: Vec<WalSegment>,
    dump: Vec<Dumped>,
    /// `pg_wal` copied after a clean shutdown.
    pg_wal: PathBuf,
    /// The segment holding the shutdown checkpoint, and that checkpoint.
    last_segment: WalSegment,
    shutdown_checkpoint: Lsn,
    restore_point_window: (DateTime<Utc>, DateTime<Utc>),
}

static SCENARIO: OnceLock<Scenario> = OnceLock::new();
static SCENARIO_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scenario_dir() {
    if let Some(dir) = SCENARIO_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

const LONG_RESTORE_POINT: &str = "a_restore_point_name_of_sixty_three_characters_the_most_allowed";

fn scenario() -> &'static Scenario {
    SCENARIO.get_or_init(|| {
        let dir = shared_tempdir("pitr-waldec-").keep();
        let _ = SCENARIO_DIR.set(dir.clone());
        // SAFETY: registering a plain function to run at process exit.
        unsafe {
            nix::libc::atexit(remove_scenario_dir);
        }
        let cluster = Cluster::start_in(&dir);
        let repo = cluster.repo.clone();
        // Two-phase commit needs prepared transactions; the restart also
        // logs a PARAMETER_CHANGE record.
        cluster.sql("ALTER SYSTEM SET max_prepared_transactions = 5");
        cluster.restart();
        run_workload(&cluster);
        let before = Utc::now();
        cluster.sql("SELECT pg_create_restore_point('rp1')");
        cluster.sql(&format!(
            "SELECT pg_create_restore_point('{LONG_RESTORE_POINT}')"
        ));
        let after = Utc::now();
        for id in 9000..9005 {
            cluster.sql(&format!("INSERT INTO t VALUES ({id}, 'after')"));
        }
        cluster.archive_everything();
        let pgdata = cluster.pgdata.clone();
        drop(cluster);

        let pg_wal = dir.join("pg_wal_copy");
        fs::create_dir_all(&pg_wal).unwrap();
        for entry in fs::read_dir(pgdata.join("pg_wal")).unwrap() {
            let entry = entry.unwrap();
            if is_segment_name(entry.file_name().to_str().unwrap()) {
                fs::copy(entry.path(), pg_wal.join(entry.file_name())).unwrap();
            }
        }
        let controldata = check(
            Command::new(pg_bin().join("pg_controldata"))
                .arg(&pgdata)
                .output()
                .unwrap(),
            "pg_controldata",
        );
        let shutdown_checkpoint: Lsn = controldata
            .lines()
            .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();

        let archive = repo.join("wal");
        let segments = archived_segments(&archive);
        let dump = waldump(&archive, &segments);
        Scenario {
            archive,
            segments,
            dump,
            pg_wal,
            last_segment: WalSegment::containing(
                TimelineId::FIRST,
                shutdown_checkpoint,
                SegmentSize::DEFAULT,
            ),
            shutdown_checkpoint,
            restore_point_window: (before, after),
        }
    })
}

/// Commits, aborts, subtransactions, two-phase commit, dropped relations,
/// records crossing pages and segments, compressed full-page images, a
/// base backup.
fn run_workload(cluster: &Cluster) {
    cluster.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    for id in 1..=5 {
        cluster.sql(&format!("INSERT INTO t VALUES ({id}, 'commit')"));
    }
    cluster.sql("BEGIN; INSERT INTO t VALUES (100, 'rolled back'); ROLLBACK;");
    cluster.sql(
        "BEGIN; INSERT INTO t VALUES (200, 'a'); SAVEPOINT s1; INSERT INTO t VALUES (201, 'b'); \
         SAVEPOINT s2; INSERT INTO t VALUES (202, 'c'); RELEASE s2; ROLLBACK TO s1; \
         INSERT INTO t VALUES (203, 'd'); SAVEPOINT s3; INSERT INTO t VALUES (204, 'e'); COMMIT;",
    );
    cluster.sql("BEGIN; INSERT INTO t VALUES (300, 'p'); PREPARE TRANSACTION 'gx1';");
    cluster.sql("COMMIT PREPARED 'gx1'");
    cluster.sql("BEGIN; INSERT INTO t VALUES (301, 'q'); PREPARE TRANSACTION 'gx2';");
    cluster.sql("ROLLBACK PREPARED 'gx2'");
    // 80 subtransactions: more than a backend caches, so ASSIGNMENT records too.
    cluster.sql(
        "DO $$ BEGIN FOR i IN 1..80 LOOP BEGIN INSERT INTO t VALUES (1000 + i, 'sub'); \
         EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$",
    );
    cluster.sql("CREATE TABLE d1 (id int PRIMARY KEY, v text)");
    cluster.sql("INSERT INTO d1 VALUES (1, 'x')");
    cluster.sql("DROP TABLE d1");
    cluster.sql("BEGIN; CREATE TABLE d2 (id int); INSERT INTO d2 VALUES (1); ROLLBACK;");
    cluster.sql("CREATE TABLE big (id int, v text)");
    cluster.sql("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 250000) g");
    cluster.sql("CHECKPOINT");
    // Compressed full-page images: 15 chose the method (and changed the
    // image header's flags); 13 and 14 have only `on` (pglz).
    let (first, second) = if pg_major() >= 15 {
        ("pglz", "lz4")
    } else {
        ("on", "on")
    };
    cluster.sql(&format!(
        "SET wal_compression = {first}; UPDATE big SET v = v || 'x' WHERE id % 100 = 0"
    ));
    cluster.sql("CHECKPOINT");
    cluster.sql(&format!(
        "SET wal_compression = {second}; UPDATE big SET v = v || 'y' WHERE id % 100 = 1"
    ));
    cluster.sql("SELECT pg_switch_wal()");
    // Records of 100 kB: a dozen pages each, and one crosses a segment.
    cluster.sql(
        "SELECT count(pg_logical_emit_message(false, 'pitr', repeat('m', 100000))) \
         FROM generate_series(1, 200)",
    );
    cluster.backup("b1", &["-Ft", "-X", "none"]);
    cluster.sql("INSERT INTO t VALUES (400, 'after backup')");
}

fn archived_segments(archive: &Path) -> Vec<WalSegment> {
    let mut names: Vec<String> = fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| is_segment_name(n))
        .collect();
    names.sort();
    let segments: Vec<WalSegment> = names
        .iter()
        .map(|n| WalSegment::parse(n, SegmentSize::DEFAULT).unwrap())
        .collect();
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next(), pair[1], "the archive has a gap");
    }
    segments
}

/// Runs pg_waldump over the segments and parses every record line.
fn waldump(dir: &Path, segments: &[WalSegment]) -> Vec<Dumped> {
    let output = Command::new(pg_bin().join("pg_waldump"))
        .env("TZ", "UTC")
        .arg("-p")
        .arg(dir)
        .arg(segments.first().unwrap().file_name())
        .arg(segments.last().unwrap().file_name())
        .output()
        .unwrap();
    // pg_waldump exits non-zero where the WAL ends (a zero record length:
    // "wanted 24, got 0" before 16, "expected at least 24, got 0" after);
    // any other failure would leave the oracle short.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success()
            || (stderr.contains("invalid record length") && stderr.contains("got 0")),
        "pg_waldump failed for another reason than the end of WAL: {stderr}"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().map(parse_dump_line).collect()
}

fn parse_dump_line(line: &str) -> Dumped {
    let (head, desc) = line
        .split_once(", desc: ")
        .unwrap_or_else(|| panic!("unexpected pg_waldump line: {line}"));
    let parts: Vec<&str> = head.split(", ").collect();
    assert_eq!(parts.len(), 4, "unexpected pg_waldump line: {line}");
    let rmgr_and_len = parts[0].strip_prefix("rmgr: ").unwrap();
    let rmgr = rmgr_and_len.split_whitespace().next().unwrap().to_string();
    let total_len = rmgr_and_len
        .rsplit('/')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let xid = parts[1]
        .strip_prefix("tx:")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lsn = parts[2].strip_prefix("lsn: ").unwrap().parse().unwrap();
    let prev = parts[3].strip_prefix("prev ").unwrap().parse().unwrap();
    Dumped {
        rmgr,
        total_len,
        xid,
        lsn,
        prev,
        desc: desc.to_string(),
    }
}

/// Where a record's last byte is: its start plus its length, skipping the
/// page headers it crosses.
fn record_end(start: Lsn, total_len: u32) -> u64 {
    let mut pos = start.value();
    let mut left = u64::from(total_len);
    while left > 0 {
        if pos % PAGE == 0 {
            let segment_start = pos % SegmentSize::DEFAULT.bytes() == 0;
            pos += if segment_start { 40 } else { 24 };
        }
        let take = left.min(PAGE - pos % PAGE);
        pos += take;
        left -= take;
    }
    pos
}

/// Decodes segments in order from `start`, collecting every record and
/// each segment's summary.
fn decode(dir: &Path, segments: &[WalSegment], start: StartAt) -> (Vec<Seen>, Vec<SegmentSummary>) {
    let mut decoder = WalDecoder::new(start);
    let mut seen = Vec::new();
    let mut summaries = Vec::new();
    for &segment in segments {
        let file = File::open(dir.join(segment.file_name())).unwrap();
        let mut segment_decoder = decoder.segment(segment, file);
        while let Some(record) = segment_decoder.next_record() {
            let record = record.unwrap_or_else(|e| panic!("{e}"));
            seen.push(Seen {
                start: record.start,
                end: record.end,
                prev: record.prev,
                xid: record.xid.value(),
                rmid: record.rmid,
                total_len: record.total_len,
                event: record.event.cloned(),
                relations: record
                    .relations()
                    .iter()
                    .map(|r| format!("{}/{}/{}", r.tablespace, r.database, r.relation))
                    .collect(),
            });
        }
        summaries.push(segment_decoder.finish().unwrap());
    }
    (seen, summaries)
}

fn assert_same_records(seen: &[Seen], dump: &[Dumped]) {
    assert_eq!(seen.len(), dump.len(), "record counts differ");
    for (mine, theirs) in seen.iter().zip(dump) {
        let rmgr = RMGR_NAMES
            .get(usize::from(mine.rmid))
            .copied()
            .unwrap_or("?");
        assert_eq!(
            (mine.start, mine.total_len, mine.xid, mine.prev, rmgr),
            (
                theirs.lsn,
                theirs.total_len,
                theirs.xid,
                theirs.prev,
                theirs.rmgr.as_str()
            ),
            "record at {} differs from pg_waldump: {theirs:?}",
            mine.start
        );
        assert_eq!(
            mine.relations,
            dumped_relations(&theirs.desc),
            "relations of the record at {}: {theirs:?}",
            mine.start
        );
        let end = (record_end(mine.start, mine.total_len) + 7) & !7;
        assert_eq!(
            mine.end,
            Lsn::new(end),
            "end of the record at {}",
            mine.start
        );
    }
}

#[test]
fn every_record_matches_pg_waldump() {
    let s = scenario();
    let (seen, summaries) = decode(&s.archive, &s.segments, StartAt::SegmentStart);
    assert_same_records(&seen, &s.dump);

    // The workload must exercise what it is meant to.
    let crossing_pages = s
        .dump
        .iter()
        .filter(|d| (d.lsn.value() % PAGE) + u64::from(d.total_len) > PAGE)
        .count();
    let crossing_segments = s
        .dump
        .iter()
        .filter(|d| {
            let size = SegmentSize::DEFAULT.bytes();
            d.lsn.value() / size != (record_end(d.lsn, d.total_len) - 1) / size
        })
        .count();
    let full_page_images = s.dump.iter().filter(|d| d.desc.contains("FPW")).count();
    assert!(
        crossing_pages > 1000,
        "{crossing_pages} records cross pages"
    );
    assert!(
        crossing_segments >= 2,
        "{crossing_segments} records cross segments"
    );
    assert!(
        full_page_images > 100,
        "{full_page_images} full-page images"
    );

    // Records are counted where they end.
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for d in &s.dump {
        let last_byte = record_end(d.lsn, d.total_len) - 1;
        *expected
            .entry(last_byte / SegmentSize::DEFAULT.bytes())
            .or_default() += 1;
    }
    for summary in &summaries {
        assert_eq!(
            summary.records,
            expected.get(&summary.segment.number).copied().unwrap_or(0),
            "records in {}",
            summary.segment
        );
    }
    eprintln!(
        "{} records in {} segments match pg_waldump ({crossing_pages} cross pages, \
         {crossing_segments} cross segments, {full_page_images} full-page images)",
        seen.len(),
        summaries.len()
    );
}

/// pg_waldump's `2026-11-24 03:12:53.941733 UTC` (TZ=UTC).
fn dump_time(text: &str) -> DateTime<Utc> {
    let text = text.trim().strip_suffix(" UTC").unwrap();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .and_utc()
}

/// The parts of a commit/abort desc: `[<xid>: ]<time>[; rels: …][; subxacts: …]…`.
struct DumpedEnd {
    two_phase_xid: Option<u32>,
    time: DateTime<Utc>,
    rels: Vec<String>,
    subxacts: Vec<u32>,
}

fn parse_end_desc(desc: &str) -> DumpedEnd {
    let rest = desc.split_once(' ').unwrap().1;
    let mut parts = rest.split("; ");
    let first = parts.next().unwrap();
    let (two_phase_xid, time) = match first.split_once(": ") {
        Some((xid, time)) => (Some(xid.parse().unwrap()), time),
        None => (None, first),
    };
    let mut out = DumpedEnd {
        two_phase_xid,
        time: dump_time(time),
        rels: Vec::new(),
        subxacts: Vec::new(),
    };
    for part in parts {
        if let Some(rels) = part.strip_prefix("rels: ") {
            out.rels = rels.split(' ').map(str::to_string).collect();
        } else if let Some(subxacts) = part.strip_prefix("subxacts: ") {
            out.subxacts = subxacts.split(' ').map(|x| x.parse().unwrap()).collect();
        }
    }
    out
}

fn rel_path(tablespace: u32, database: u32, relation: u32) -> String {
    match tablespace {
        1663 => format!("base/{database}/{relation}"),
        1664 => format!("global/{relation}"),
        other => panic!("unexpected tablespace {other}"),
    }
}

#[test]
fn transaction_ends_match_pg_waldump() {
    let s = scenario();
    let (seen, _) = decode(&s.archive, &s.segments, StartAt::SegmentStart);
    let by_lsn: BTreeMap<Lsn, &Seen> = seen.iter().map(|r| (r.start, r)).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut with_subxacts, mut with_rels) = (0, 0);
    for d in s.dump.iter().filter(|d| d.rmgr == "Transaction") {
        let kind = d.desc.split_whitespace().next().unwrap();
        let record = by_lsn[&d.lsn];
        let end: &TransactionEnd = match (kind, &record.event) {
            (
                "COMMIT" | "COMMIT_PREPARED",
                Some(Event {
                    kind: EventKind::Commit(end),
                    ..
                }),
            ) => end,
            (
                "ABORT" | "ABORT_PREPARED",
                Some(Event {
                    kind: EventKind::Abort(end),
                    ..
                }),
            ) => end,
            (
                "PREPARE",
                Some(Event {
                    kind: EventKind::Prepare { xid, gid, time },
                    ..
                }),
            ) => {
                let (head, time_text) = d.desc.rsplit_once(": ").unwrap();
                assert_eq!(xid.value(), d.xid);
                assert_eq!(head, format!("PREPARE gid {gid}"));
                assert_eq!(*time, dump_time(time_text));
                *counts.entry("PREPARE").or_default() += 1;
                continue;
            }
            ("ASSIGNMENT" | "INVALIDATION", None) => continue,
            (kind, event) => panic!("{kind} at {} decoded as {event:?}", d.lsn),
        };
        *counts.entry(kind).or_default() += 1;
        let expected = parse_end_desc(&d.desc);
        assert_eq!(
            end.xid.value(),
            expected.two_phase_xid.unwrap_or(d.xid),
            "{d:?}"
        );
        assert_eq!(end.two_phase, kind.ends_with("_PREPARED"), "{d:?}");
        assert_eq!(end.time, expected.time, "{d:?}");
        let subxacts: Vec<u32> = end.subtransactions.iter().map(|x| x.value()).collect();
        assert_eq!(subxacts, expected.subxacts, "{d:?}");
        let rels: Vec<String> = end
            .dropped_relations
            .iter()
            .map(|r| rel_path(r.tablespace, r.database, r.relation))
            .collect();
        assert_eq!(rels, expected.rels, "{d:?}");
        with_subxacts += usize::from(!subxacts.is_empty());
        with_rels += usize::from(!rels.is_empty());
    }
    eprintln!(
        "matched {counts:?}; {with_subxacts} with subtransactions, {with_rels} dropping relations"
    );
    for kind in [
        "COMMIT",
        "ABORT",
        "COMMIT_PREPARED",
        "ABORT_PREPARED",
        "PREPARE",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in the workload"
        );
    }
    assert!(with_subxacts >= 2 && with_rels >= 2);
    let eighty = seen.iter().any(|r| {
        matches!(&r.event, Some(Event { kind: EventKind::Commit(end), .. }) if end.subtransactions.len() == 80)
    });
    assert!(eighty, "the commit with 80 subtransactions");
}

#[test]
fn xlog_events_match_pg_waldump() {
    let s = scenario();
    let (seen, summaries) = decode(&s.archive, &s.segments, StartAt::SegmentStart);
    let by_lsn: BTreeMap<Lsn, &Seen> = seen.iter().map(|r| (r.start, r)).collect();
    let mut names = Vec::new();
    let mut switches = Vec::new();
    let (mut checkpoints, mut backup_ends, mut parameter_changes) = (0, 0, 0);
    for d in s.dump.iter().filter(|d| d.rmgr == "XLOG") {
        let kind = d.desc.split_whitespace().next().unwrap_or_default();
        let event = by_lsn[&d.lsn].event.as_ref().map(|e| &e.kind);
        match (kind, event) {
            ("RESTORE_POINT", Some(EventKind::RestorePoint { name, time })) => {
                assert_eq!(d.desc, format!("RESTORE_POINT {name}"));
                let (before, after) = s.restore_point_window;
                assert!(
                    before <= *time && *time <= after,
                    "{time} not in {before}..{after}"
                );
                names.push(name.clone());
            }
            ("SWITCH", Some(EventKind::Switch)) => switches.push(d.lsn),
            ("CHECKPOINT_ONLINE" | "CHECKPOINT_SHUTDOWN", Some(EventKind::Checkpoint(c))) => {
                let expected = format!(
                    "{kind} redo {}; tli {}; prev tli {};",
                    c.redo, c.timeline, c.prev_timeline
                );
                assert!(d.desc.starts_with(&expected), "{} vs {expected}", d.desc);
                // pg_waldump shows the full next xid as epoch:xid.
                let next_xid = format!("; xid {}:{};", c.next_xid.epoch(), c.next_xid.xid());
                assert!(d.desc.contains(&next_xid), "{} vs {next_xid}", d.desc);
                assert_eq!(c.online, kind == "CHECKPOINT_ONLINE");
                checkpoints += 1;
            }
            ("BACKUP_END", Some(EventKind::BackupEnd { start_lsn })) => {
                assert_eq!(d.desc.trim(), format!("BACKUP_END {start_lsn}"));
                backup_ends += 1;
            }
            ("PARAMETER_CHANGE", Some(EventKind::ParameterChange(p))) => {
                let level = match p.wal_level {
                    WalLevel::Minimal => "minimal",
                    WalLevel::Replica => "replica",
                    WalLevel::Logical => "logical",
                    WalLevel::Unknown(_) => "?",
                };
                let expected = format!(
                    "PARAMETER_CHANGE max_connections={} max_worker_processes={} max_wal_senders={} \
                     max_prepared_xacts={} max_locks_per_xact={} wal_level={level}",
                    p.max_connections,
                    p.max_worker_processes,
                    p.max_wal_senders,
                    p.max_prepared_xacts,
                    p.max_locks_per_xact
                );
                assert!(d.desc.starts_with(&expected), "{} vs {expected}", d.desc);
                parameter_changes += 1;
            }
            (
                "RESTORE_POINT"
                | "SWITCH"
                | "CHECKPOINT_ONLINE"
                | "CHECKPOINT_SHUTDOWN"
                | "BACKUP_END"
                | "PARAMETER_CHANGE"
                | "END_OF_RECOVERY",
                event,
            ) => panic!("{kind} at {} decoded as {event:?}", d.lsn),
            (_, None) => {}
            (kind, Some(event)) => panic!("{kind} at {} decoded as {event:?}", d.lsn),
        }
    }
    assert_eq!(names, ["rp1", LONG_RESTORE_POINT]);
    assert!(switches.len() >= 3, "{switches:?}");
    assert!(
        checkpoints >= 3 && backup_ends == 1 && parameter_changes >= 1,
        "{checkpoints} checkpoints, {backup_ends} backup ends, {parameter_changes} parameter changes"
    );

    // Summaries: a switch ends exactly the segments that have one.
    let summary_of = |lsn: Lsn| {
        summaries
            .iter()
            .find(|s| s.segment.number == lsn.value() / SegmentSize::DEFAULT.bytes())
            .unwrap()
    };
    for &lsn in &switches {
        assert_eq!(summary_of(lsn).end, SegmentEnd::Switch { record: lsn });
    }
    let switched = summaries.iter().filter(|s| s.ends_with_switch()).count();
    assert_eq!(switched, switches.len());
    let last = summaries.last().unwrap();
    assert!(
        last.ends_with_switch(),
        "the archive ends with pg_switch_wal()"
    );
    let with_names: Vec<&String> = summaries.iter().flat_map(|s| &s.restore_points).collect();
    assert_eq!(with_names, ["rp1", LONG_RESTORE_POINT]);
    eprintln!(
        "matched {} restore points, {} switches, {checkpoints} checkpoints, {backup_ends} backup end, \
         {parameter_changes} parameter change",
        names.len(),
        switches.len()
    );
}

#[test]
fn summaries_give_first_and_last_transaction_times() {
    let s = scenario();
    let (seen, summaries) = decode(&s.archive, &s.segments, StartAt::SegmentStart);
    for summary in &summaries {
        let in_segment: Vec<&TransactionEnd> = seen
            .iter()
            .filter(|r| {
                (r.end.value() - 1) / SegmentSize::DEFAULT.bytes() == summary.segment.number
            })
            .filter_map(|r| match &r.event {
                Some(Event {
                    kind: EventKind::Commit(end) | EventKind::Abort(end),
                    ..
                }) => Some(end),
                _ => None,
            })
            .collect();
        assert_eq!(
            summary.commits + summary.aborts,
            in_segment.len() as u64,
            "{}",
            summary.segment
        );
        assert_eq!(
            summary.first_transaction_end,
            in_segment.first().map(|e| e.time)
        );
        assert_eq!(
            summary.last_transaction_end,
            in_segment.last().map(|e| e.time)
        );
    }
    // The same, through the range iterator.
    let segments = s
        .segments
        .iter()
        .map(|&segment| (segment, File::open(s.archive.join(segment.file_name()))));
    let mut decode = WalDecoder::new(StartAt::SegmentStart).decode(segments);
    let mut events = 0;
    let mut ranged = Vec::new();
    for item in &mut decode {
        match item.unwrap() {
            WalItem::Event(_) => events += 1,
            WalItem::Segment(summary) => ranged.push(summary),
        }
    }
    assert_eq!(ranged, summaries);
    assert_eq!(events, seen.iter().filter(|r| r.event.is_some()).count());
    assert!(
        decode.end_of_wal().is_none(),
        "the archive ends with a switch"
    );
    assert_eq!(decode.valid_until(), Some(seen.last().unwrap().end));
}

#[test]
fn decoding_can_start_mid_stream() {
    let s = scenario();
    let size = SegmentSize::DEFAULT.bytes();
    // A segment that begins with the tail of a record from the one before.
    let (index, crossing) = s
        .segments
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, segment)| {
            let start = segment.start_lsn().value();
            s.dump
                .iter()
                .find(|d| d.lsn.value() < start && record_end(d.lsn, d.total_len) > start)
                .map(|d| (i, d.lsn))
        })
        .expect("a record crossing into a later segment");
    let (seen, _) = decode(&s.archive, &s.segments[index..], StartAt::SegmentStart);
    let from = s.dump.iter().position(|d| d.lsn > crossing).unwrap();
    assert_same_records(&seen, &s.dump[from..]);
    eprintln!(
        "from {} (continuing the record at {crossing}): {} records match",
        s.segments[index],
        seen.len()
    );

    // At a given record in the middle of a segment.
    let middle = &s.dump[s.dump.len() / 2];
    let first = s
        .segments
        .iter()
        .position(|seg| seg.number == middle.lsn.value() / size)
        .unwrap();
    let (seen, _) = decode(
        &s.archive,
        &s.segments[first..],
        StartAt::Record(middle.lsn),
    );
    let from = s.dump.iter().position(|d| d.lsn == middle.lsn).unwrap();
    assert_same_records(&seen, &s.dump[from..]);

    // Not at a record: the prev-link or CRC gives it away, or the length.
    let wrong = Lsn::new(middle.lsn.value() + 8);
    let mut decoder = WalDecoder::new(StartAt::Record(wrong));
    let file = File::open(s.archive.join(s.segments[first].file_name())).unwrap();
    let error = decoder
        .segment(s.segments[first], file)
        .finish()
        .expect_err("a start that is not at a record must be refused");
    let message = error.to_string();
    assert_eq!(error.lsn, wrong, "{message}");
    assert!(
        message.contains("prev-link")
            || message.starts_with("CRC mismatch")
            || message.contains("invalid record length"),
        "{message}"
    );
}

#[test]
fn end_of_wal_in_pg_wal_is_not_an_error() {
    let s = scenario();
    let segment = s.last_segment;
    let dump = waldump(&s.pg_wal, &[segment]);
    let last = dump.last().unwrap();
    assert_eq!(last.lsn, s.shutdown_checkpoint);
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    let file = File::open(s.pg_wal.join(segment.file_name())).unwrap();
    let summary = decoder.segment(segment, file).finish().unwrap();
    let end = summary
        .end_of_wal()
        .expect("WAL ends in the current segment");
    let last_end = Lsn::new((record_end(last.lsn, last.total_len) + 7) & !7);
    assert_eq!(end.reason, EndReason::ZeroRecordLength);
    assert_eq!(end.valid_until, Some(last_end));
    assert_eq!(end.at, last_end);
    assert_eq!(summary.valid_until, Some(last_end));
    assert_eq!(summary.records, dump.len() as u64);
    assert_eq!(decoder.end_of_wal(), Some(end));

    // Later segments in pg_wal, if any, are recycled: stale pages or never
    // written, but not corrupt.
    let mut recycled = 0;
    for entry in fs::read_dir(&s.pg_wal).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(later) = WalSegment::parse(&name, SegmentSize::DEFAULT) else {
            continue; // archive_status/, summaries/
        };
        if later.number <= segment.number {
            continue;
        }
        recycled += 1;
        let mut decoder = WalDecoder::new(StartAt::SegmentStart);
        let file = File::open(s.pg_wal.join(&name)).unwrap();
        let summary = decoder.segment(later, file).finish().unwrap();
        let end = summary.end_of_wal().unwrap();
        assert!(
            matches!(
                end.reason,
                EndReason::StalePage { .. } | EndReason::UnwrittenPage
            ),
            "{name}: {end}"
        );
        assert_eq!(end.at, later.start_lsn());
        eprintln!("{name}: {end}");
    }
    // Whether the server kept recycled segments is its choice (its
    // checkpoints recycle up to max_wal_size); say when none was there.
    require(
        "end_of_wal_in_pg_wal_is_not_an_error",
        recycled > 0,
        "no recycled segment in pg_wal after the checkpoint's: the stale-page check did not run",
    );
    // The header of the checkpoint's segment carries the page magic of the
    // major under test.
    let mut head = [0u8; 40];
    std::io::Read::read_exact(
        &mut File::open(s.pg_wal.join(segment.file_name())).unwrap(),
        &mut head,
    )
    .unwrap();
    assert_eq!(
        LongPageHeader::parse(&head).unwrap().major_version(),
        Some(pg_major())
    );
}

#[test]
fn corruption_is_reported_with_its_place() {
    let s = scenario();
    // Flip a bit in the data of a record in the middle of a page of a
    // segment after the first.
    let victim = s
        .dump
        .iter()
        .find(|d| {
            d.lsn.value() / SegmentSize::DEFAULT.bytes() > s.segments[0].number
                && d.lsn.value() % PAGE > 1024
                && d.lsn.value() % PAGE + u64::from(d.total_len) < PAGE
                && d.total_len > 30
        })
        .unwrap();
    let segment = WalSegment::containing(TimelineId::FIRST, victim.lsn, SegmentSize::DEFAULT);
    let mut bytes = fs::read(s.archive.join(segment.file_name())).unwrap();
    let offset = (victim.lsn.value() % SegmentSize::DEFAULT.bytes()) as usize + 28;
    bytes[offset] ^= 0x10;
    let mut decoder = WalDecoder::new(StartAt::SegmentStart);
    let error = decoder.segment(segment, &bytes[..]).finish().unwrap_err();
    assert_eq!(error.lsn, victim.lsn);
    assert!(error.problem.is_corruption());
    let message = error.to_string();
    assert!(
        message.starts_with("CRC mismatch")
            && message.ends_with(&format!("in record at {} in segment {segment}", victim.lsn)),
        "{message}"
    );
    eprintln!("{message}");
}
