//! The life of one table's files in the WAL: which committed transaction
//! dropped them, and which rewrote them (gave the table new files).
//!
//! A table is its relation files, not its name: the name is mapped to a
//! file (its relfilenode) once, from the catalog of a copy restored before
//! the window, and followed from there by the WAL alone:
//!
//! - A commit record lists the files its transaction removes
//!   (`xl_xact_relfilelocators`, see [`super::decode::TransactionEnd`]).
//! - A transaction that gives relations new files logs an
//!   `XLOG_SMGR_CREATE` record (rmgr Storage, info 0x10; main data
//!   `xl_smgr_create`: the RelFileLocator, then the fork number, the same in
//!   12–18, see src/include/catalog/storage_xlog.h) for each, under its xid:
//!   TRUNCATE, VACUUM FULL, CLUSTER and ALTER TABLE … TYPE all take an
//!   AccessExclusiveLock first, and `LogAccessExclusiveLockPrepare`
//!   (src/backend/storage/ipc/standby.c) assigns the xid before the lock,
//!   so the create records carry it.
//!
//! So a commit that removes the table's file and creates no file in the
//! table's database dropped it; one that also created files rewrote it,
//! and the table's file is now one of those (PostgreSQL makes the new heap
//! first: `RelationSetNewRelfilenumber` for TRUNCATE, `make_new_heap` for
//! the others, before the TOAST table and the indexes). Which one is
//! confirmed later against the catalog of the extracted copy, where the
//! table's file must be one that the chosen transaction removed.
//!
//! A rewrite is a TRUNCATE when the transaction wrote no block of the new
//! heap: a VACUUM FULL, CLUSTER or ALTER TABLE … TYPE copies the rows into
//! it within the transaction (an empty table's rewrite looks the same as
//! its truncation, and loses nothing). A TRUNCATE followed by INSERTs in
//! the same transaction counts as a rewrite.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::decode::{RelFileLocator, TransactionEnd};
use super::Lsn;

/// rmgr id of Storage (`RM_SMGR_ID`, src/include/access/rmgrlist.h).
const RM_SMGR_ID: u8 = 2;
/// `XLOG_SMGR_CREATE` (src/include/catalog/storage_xlog.h).
const XLOG_SMGR_CREATE: u8 = 0x10;
/// `MAIN_FORKNUM`: a new relation file, not one of its maps.
const MAIN_FORKNUM: i32 = 0;

/// The relation file an `XLOG_SMGR_CREATE` record creates (main fork only).
pub fn created_file(rmid: u8, info: u8, main_data: &[u8]) -> Option<RelFileLocator> {
    if rmid != RM_SMGR_ID || info & 0xF0 != XLOG_SMGR_CREATE {
        return None;
    }
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            main_data.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let fork = i32::from_le_bytes(main_data.get(12..16)?.try_into().ok()?);
    (fork == MAIN_FORKNUM).then_some(RelFileLocator {
        tablespace: word(0)?,
        database: word(4)?,
        relation: word(8)?,
    })
}

/// What a committed transaction did to the table's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Removed them and made none: DROP TABLE (or DROP SCHEMA … CASCADE,
    /// DROP OWNED, …).
    Drop,
    /// Gave the table new, empty files: TRUNCATE.
    Truncate,
    /// Gave the table new files holding its rows: VACUUM FULL, CLUSTER,
    /// ALTER TABLE … TYPE, or a TRUNCATE then INSERT in one transaction.
    Rewrite,
}

/// One committed transaction that removed the table's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub xid: u32,
    /// Where its commit record starts.
    pub lsn: Lsn,
    pub time: DateTime<Utc>,
    /// The table's files it removed.
    pub removed: Vec<RelFileLocator>,
}

/// Follows one table's files through the WAL, record by record.
#[derive(Debug)]
pub struct Lineage {
    /// The files that may be the table's now (one, until a rewrite made
    /// several candidates: the new heap, its TOAST table, its indexes).
    current: HashSet<RelFileLocator>,
    database: u32,
    /// Files created, per (sub)transaction, in the order created.
    created: HashMap<u32, Vec<RelFileLocator>>,
    /// Files each (sub)transaction wrote blocks of, among those created.
    written: HashMap<u32, HashSet<RelFileLocator>>,
    pub changes: Vec<Change>,
}

impl Lineage {
    /// Starts from the table's file as the catalog gives it.
    pub fn new(file: RelFileLocator) -> Lineage {
        Lineage {
            current: HashSet::from([file]),
            database: file.database,
            created: HashMap::new(),
            written: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// True while the table has files (it was not dropped yet).
    pub fn exists(&self) -> bool {
        !self.current.is_empty()
    }

    /// One record in WAL order: its xid, what it creates (see
    /// [`created_file`]) and the files its block references name.
    pub fn record(&mut self, xid: u32, creates: Option<RelFileLocator>, writes: &[RelFileLocator]) {
        if xid == 0 {
            return;
        }
        if let Some(file) = creates.filter(|file| file.database == self.database) {
            self.created.entry(xid).or_default().push(file);
        }
        if let Some(created) = self.created.get(&xid) {
            let made: Vec<RelFileLocator> = writes
                .iter()
                .filter(|file| created.contains(file))
                .copied()
                .collect();
            self.written.entry(xid).or_default().extend(made);
        }
    }

    /// A commit: when it removed the table's files, what it did to them.
    pub fn commit(&mut self, end: &TransactionEnd, lsn: Lsn) -> Option<&Change> {
        let mut created = Vec::new();
        let mut written = HashSet::new();
        for xid in std::iter::once(end.xid).chain(end.subtransactions.iter().copied()) {
            created.extend(self.created.remove(&xid.value()).unwrap_or_default());
            written.extend(self.written.remove(&xid.value()).unwrap_or_default());
        }
        let removed: Vec<RelFileLocator> = end
            .dropped_relations
            .iter()
            .filter(|file| self.current.contains(file))
            .copied()
            .collect();
        if removed.is_empty() {
            return None;
        }
        let kind = match created.first() {
            None => ChangeKind::Drop,
            Some(new_heap) if written.contains(new_heap) => ChangeKind::Rewrite,
            Some(_) => ChangeKind::Truncate,
        };
        for file in &removed {
            self.current.remove(file);
        }
        if kind != ChangeKind::Drop {
            self.current.extend(created);
        }
        self.changes.push(Change {
            kind,
            xid: end.xid.value(),
            lsn,
            time: end.time,
            removed,
        });
        self.changes.last()
    }

    /// An abort: what it created is gone with it.
    pub fn abort(&mut self, end: &TransactionEnd) {
        for xid in std::iter::once(end.xid).chain(end.subtransactions.iter().copied()) {
            self.created.remove(&xid.value());
            self.written.remove(&xid.value());
        }
    }
}

/// A relation file's path under the data directory, as
/// `pg_relation_filepath()` gives it, read back into its locator:
/// `base/<db>/<file>`, `global/<file>` or
/// `pg_tblspc/<spc>/<version dir>/<db>/<file>`.
pub fn parse_relation_path(path: &str) -> Option<RelFileLocator> {
    let parts: Vec<&str> = path.trim().split('/').collect();
    let number = |text: &str| text.parse::<u32>().ok();
    match parts.as_slice() {
        ["base", db, file] => Some(RelFileLocator {
            tablespace: 1663,
            database: number(db)?,
            relation: number(file)?,
        }),
        ["global", file] => Some(RelFileLocator {
            tablespace: 1664,
            database: 0,
            relation: number(file)?,
        }),
        ["pg_tblspc", spc, _version, db, file] => Some(RelFileLocator {
            tablespace: number(spc)?,
            database: number(db)?,
            relation: number(file)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::decode::TransactionId;

    fn file(relation: u32) -> RelFileLocator {
        RelFileLocator {
            tablespace: 1663,
            database: 5,
            relation,
        }
    }

    fn commit(xid: u32, subs: &[u32], dropped: &[u32]) -> TransactionEnd {
        TransactionEnd {
            xid: TransactionId::new(xid),
            time: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            subtransactions: subs.iter().map(|x| TransactionId::new(*x)).collect(),
            dropped_relations: dropped.iter().map(|r| file(*r)).collect(),
            two_phase: false,
            gid: None,
            origin: None,
        }
    }

    fn create_record(file: RelFileLocator, fork: i32) -> Vec<u8> {
        [file.tablespace, file.database, file.relation]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .chain(fork.to_le_bytes())
            .collect()
    }

    #[test]
    fn smgr_create_records_name_the_new_main_fork() {
        let data = create_record(file(16400), 0);
        assert_eq!(created_file(2, 0x10, &data), Some(file(16400)));
        // A visibility map or an init fork is not a new relation file.
        assert_eq!(created_file(2, 0x10, &create_record(file(16400), 2)), None);
        // XLOG_SMGR_TRUNCATE, another rmgr, a short record.
        assert_eq!(created_file(2, 0x20, &data), None);
        assert_eq!(created_file(10, 0x10, &data), None);
        assert_eq!(created_file(2, 0x10, &data[..12]), None);
    }

    #[test]
    fn a_truncate_then_a_rewrite_then_the_drop() {
        let mut lineage = Lineage::new(file(16390));
        // Another table's drop is not ours.
        assert_eq!(
            lineage.commit(&commit(700, &[], &[16500]), Lsn::new(1)),
            None
        );
        // TRUNCATE: new heap 16600 (and index 16601, whose metapage is
        // written), old files removed.
        lineage.record(701, Some(file(16600)), &[]);
        lineage.record(701, Some(file(16601)), &[]);
        lineage.record(701, None, &[file(16601)]);
        let change = lineage
            .commit(&commit(701, &[], &[16390, 16391]), Lsn::new(2))
            .cloned()
            .unwrap();
        assert_eq!(change.kind, ChangeKind::Truncate);
        assert_eq!(change.removed, [file(16390)]);
        // VACUUM FULL in a subtransaction's records: the new heap is
        // written.
        lineage.record(703, Some(file(16700)), &[]);
        lineage.record(703, None, &[file(16700)]);
        let change = lineage
            .commit(&commit(702, &[703], &[16600, 16601]), Lsn::new(3))
            .cloned()
            .unwrap();
        assert_eq!(change.kind, ChangeKind::Rewrite);
        // A rolled-back rewrite changes nothing.
        lineage.record(704, Some(file(16800)), &[file(16800)]);
        lineage.abort(&commit(704, &[], &[]));
        // DROP TABLE.
        let change = lineage
            .commit(&commit(705, &[], &[16700]), Lsn::new(4))
            .cloned()
            .unwrap();
        assert_eq!((change.kind, change.xid), (ChangeKind::Drop, 705));
        assert!(!lineage.exists());
        assert_eq!(lineage.changes.len(), 3);
    }

    #[test]
    fn files_created_in_other_databases_do_not_make_a_drop_a_rewrite() {
        let mut lineage = Lineage::new(file(16390));
        lineage.record(
            710,
            Some(RelFileLocator {
                database: 6,
                ..file(16999)
            }),
            &[],
        );
        let change = lineage.commit(&commit(710, &[], &[16390]), Lsn::new(1));
        assert_eq!(change.map(|c| c.kind), Some(ChangeKind::Drop));
    }

    #[test]
    fn relation_paths() {
        assert_eq!(parse_relation_path("base/5/16390"), Some(file(16390)));
        assert_eq!(
            parse_relation_path("pg_tblspc/16384/PG_15_202209061/5/16390\n"),
            Some(RelFileLocator {
                tablespace: 16384,
                ..file(16390)
            })
        );
        assert_eq!(
            parse_relation_path("global/1262"),
            Some(RelFileLocator {
                tablespace: 1664,
                database: 0,
                relation: 1262
            })
        );
        assert_eq!(parse_relation_path("base/x/1"), None);
        assert_eq!(parse_relation_path(""), None);
    }
}
