//! What each transaction wrote, as the WAL tells it: how many bytes of WAL
//! and which relation files.
//!
//! A record written inside a transaction that has an xid carries it in
//! `xl_xid` (PostgreSQL's `XLogInsert` stores `GetCurrentTransactionIdIfAny()`),
//! a subtransaction's records carry the subtransaction's xid, and the commit
//! or abort record lists the subtransactions. So the bytes of a transaction
//! are the `xl_tot_len` of every record whose `xl_xid` is the transaction or
//! one of its subtransactions, its commit or abort record included, and the
//! relations it wrote are those its records' block references name.
//!
//! What this cannot see: records written before the first segment read (a
//! transaction that began earlier shows only the part read), records a
//! transaction causes without its xid (a later VACUUM, hint-bit full-page
//! images), and the record of `COMMIT PREPARED`, whose `xl_xid` is 0.

use std::collections::HashMap;

use super::decode::{RelFileLocator, TransactionEnd};

/// First OID assigned after initdb (`FirstNormalObjectId` in
/// src/include/access/transam.h). Relation files numbered below it are the
/// system catalogs and their indexes as initdb made them.
pub const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// What one transaction wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Bytes of WAL (`xl_tot_len` summed over its records).
    pub wal_bytes: u64,
    /// Relations whose blocks its records changed, each once, in the order
    /// first written.
    pub relations: Vec<RelFileLocator>,
}

impl Activity {
    fn add(&mut self, bytes: u64, relations: &[RelFileLocator]) {
        self.wal_bytes += bytes;
        for relation in relations {
            if !self.relations.contains(relation) {
                self.relations.push(*relation);
            }
        }
    }

    fn merge(&mut self, other: Activity) {
        self.add(other.wal_bytes, &other.relations);
    }
}

/// True for the files of system catalogs as initdb created them.
pub fn is_catalog(relation: &RelFileLocator) -> bool {
    relation.relation < FIRST_NORMAL_OBJECT_ID
}

/// The open transactions' activity, fed record by record in WAL order.
#[derive(Debug, Default)]
pub struct ActivityTracker {
    open: HashMap<u32, Activity>,
}

impl ActivityTracker {
    pub fn new() -> ActivityTracker {
        ActivityTracker::default()
    }

    /// Accounts for one record; records without an xid belong to no
    /// transaction.
    pub fn record(&mut self, xid: u32, total_len: u32, relations: &[RelFileLocator]) {
        if xid == 0 {
            return;
        }
        self.open
            .entry(xid)
            .or_default()
            .add(u64::from(total_len), relations);
    }

    /// The activity of the transaction that `end` ends (after its commit or
    /// abort record was given to [`Self::record`]), with its
    /// subtransactions'; forgets them.
    pub fn finish(&mut self, end: &TransactionEnd) -> Activity {
        let mut activity = self.open.remove(&end.xid.value()).unwrap_or_default();
        for sub in &end.subtransactions {
            if let Some(sub) = self.open.remove(&sub.value()) {
                activity.merge(sub);
            }
        }
        activity
    }

    /// Transactions begun and not yet ended.
    pub fn open_transactions(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::decode::TransactionId;

    fn rel(relation: u32) -> RelFileLocator {
        RelFileLocator {
            tablespace: 1663,
            database: 5,
            relation,
        }
    }

    fn end(xid: u32, subs: &[u32]) -> TransactionEnd {
        TransactionEnd {
            xid: TransactionId::new(xid),
            time: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            subtransactions: subs.iter().map(|x| TransactionId::new(*x)).collect(),
            dropped_relations: Vec::new(),
            two_phase: false,
            gid: None,
            origin: None,
        }
    }

    #[test]
    fn bytes_and_relations_of_a_transaction_and_its_subtransactions() {
        let mut tracker = ActivityTracker::new();
        tracker.record(740, 100, &[rel(16384), rel(16390)]);
        tracker.record(741, 50, &[rel(16384)]);
        tracker.record(0, 8000, &[rel(16500)]); // no transaction
        tracker.record(742, 70, &[rel(16400)]); // subtransaction
        tracker.record(740, 34, &[]); // the commit record
        let activity = tracker.finish(&end(740, &[742]));
        assert_eq!(activity.wal_bytes, 204);
        assert_eq!(activity.relations, [rel(16384), rel(16390), rel(16400)]);
        assert_eq!(tracker.open_transactions(), 1);
        assert_eq!(
            tracker.finish(&end(741, &[])),
            Activity {
                wal_bytes: 50,
                relations: vec![rel(16384)]
            }
        );
        // An end whose records were not seen: nothing known.
        assert_eq!(tracker.finish(&end(999, &[])), Activity::default());
        assert_eq!(tracker.open_transactions(), 0);
    }

    #[test]
    fn catalogs_are_the_files_initdb_numbered() {
        assert!(is_catalog(&rel(1259)));
        assert!(!is_catalog(&rel(16384)));
    }
}
