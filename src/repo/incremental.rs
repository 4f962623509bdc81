//! Incremental backups (PostgreSQL 17+, `pg_basebackup --incremental`) and
//! the chains they form.
//!
//! An incremental backup holds only the blocks changed since an earlier
//! backup; its `backup_label` names that earlier backup's start with
//! `INCREMENTAL FROM LSN` / `INCREMENTAL FROM TLI`. `pg_combinebackup`
//! rebuilds a full data directory from the chain: the full backup at the
//! bottom, then each incremental in order. It checks the same link itself
//! (`check_backup_label_files` in src/bin/pg_combinebackup): the earlier
//! backup's `START WAL LOCATION` and `START TIMELINE` must equal the later
//! one's `INCREMENTAL FROM LSN` and `TLI`.
//!
//! The chain is resolved here, at scan time, so that a broken chain is
//! reported by `pitr list` and refused by every plan with the reason, and
//! so that staging knows which directories to hand to `pg_combinebackup`.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::backup::{Backup, BackupFormat, UnreadableBackup};
use super::store::{read_all, StoreRead};
use crate::wal::{Lsn, TimelineId};

/// Longer chains than this are taken for a loop in the repository.
const MAX_CHAIN: usize = 1000;

/// The backup an incremental backup was taken on top of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalFrom {
    pub lsn: Lsn,
    pub timeline: TimelineId,
}

/// Reads `INCREMENTAL FROM LSN` and `INCREMENTAL FROM TLI` of a
/// `backup_label` text; `None` for a full backup.
pub fn incremental_from(label_text: &str) -> Result<Option<IncrementalFrom>> {
    let field = |key: &str| {
        label_text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
            .map(str::trim)
    };
    match (field("INCREMENTAL FROM LSN"), field("INCREMENTAL FROM TLI")) {
        (None, None) => Ok(None),
        (Some(lsn), Some(tli)) => {
            let lsn: Lsn = lsn
                .parse()
                .with_context(|| format!("INCREMENTAL FROM LSN `{lsn}` is not an LSN"))?;
            let timeline = tli
                .parse()
                .ok()
                .and_then(TimelineId::new)
                .with_context(|| format!("INCREMENTAL FROM TLI `{tli}` is not a timeline"))?;
            Ok(Some(IncrementalFrom { lsn, timeline }))
        }
        _ => bail!("backup_label has only one of INCREMENTAL FROM LSN and INCREMENTAL FROM TLI"),
    }
}

/// Where an incremental backup comes from, read from its plain-format
/// `backup_label` (pg_combinebackup reads plain backups only) in the
/// backups store.
fn link_of(store: &dyn StoreRead, backup: &Backup) -> Result<Option<IncrementalFrom>> {
    if backup.label.incremental_from.is_none() {
        return Ok(None);
    }
    if backup.format != BackupFormat::Plain {
        bail!(
            "backup `{}` is an incremental backup in tar format, and pg_combinebackup combines plain-format backups only; extract its tar files into a directory of the same name (base.tar into it, pg_wal.tar into its pg_wal/)",
            backup.id
        );
    }
    let key = backup.label_file().key;
    let text = read_all(store, &key)
        .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other))
        .with_context(|| format!("cannot read `{}`", store.describe(&key)))?;
    incremental_from(&text).with_context(|| format!("`{}` is malformed", store.describe(&key)))
}

/// The chain that rebuilds `newest`: the full backup first, `newest` last.
/// A full backup is a chain of one.
pub fn chain<'a>(
    store: &dyn StoreRead,
    backups: &'a [Backup],
    newest: &'a Backup,
) -> Result<Vec<&'a Backup>> {
    let mut chain = vec![newest];
    let mut current = newest;
    while let Some(from) = link_of(store, current)? {
        if chain.len() > MAX_CHAIN {
            bail!(
                "the incremental backups before `{}` form a loop; check the backups directory",
                newest.id
            );
        }
        let parent = backups.iter().find(|candidate| {
            candidate.start_lsn == from.lsn
                && candidate.timeline == from.timeline
                && candidate.id != current.id
        });
        let Some(parent) = parent else {
            bail!(
                "backup `{}` is an incremental backup taken on top of the backup that started at {} on timeline {}, and no backup in the repository starts there: the chain to a full backup is broken. Put that backup back, or restore from an older full backup",
                current.id,
                from.lsn,
                from.timeline
            );
        };
        if let (Some(mine), Some(theirs)) = (current.system_identifier, parent.system_identifier) {
            if mine != theirs {
                bail!(
                    "backup `{}` is incremental on top of `{}`, but they belong to different clusters (system identifiers {mine} and {theirs})",
                    current.id,
                    parent.id
                );
            }
        }
        if !current.tablespaces.is_empty() || !parent.tablespaces.is_empty() {
            bail!(
                "backup `{}` is an incremental backup of a cluster with tablespaces; pitr does not combine those yet: run pg_combinebackup with --tablespace-mapping yourself",
                current.id
            );
        }
        chain.push(parent);
        current = parent;
    }
    chain.reverse();
    Ok(chain)
}

/// Moves every incremental backup whose chain is broken from `backups` to
/// `unreadable`, with the reason, so that no plan chooses it.
pub fn check_chains(
    store: &dyn StoreRead,
    backups: &mut Vec<Backup>,
    unreadable: &mut Vec<UnreadableBackup>,
) {
    let mut broken = BTreeSet::new();
    // A backup whose parent is itself broken is broken too: repeat until
    // nothing changes.
    loop {
        let mut found = Vec::new();
        for backup in backups.iter() {
            if backup.label.incremental_from.is_none() || broken.contains(&backup.id) {
                continue;
            }
            if let Err(error) = chain(store, backups, backup) {
                found.push((backup.id.clone(), format!("{error:#}")));
            }
        }
        if found.is_empty() {
            break;
        }
        for (id, reason) in found {
            if let Some(at) = backups.iter().position(|b| b.id == id) {
                let backup = backups.remove(at);
                unreadable.push(UnreadableBackup {
                    dir: store.describe(&backup.id),
                    id: backup.id,
                    reason,
                });
            }
            broken.insert(id);
        }
    }
}

/// The backups to give `pg_combinebackup`, oldest first (staging finds
/// their local directories, downloading them where the store is not one).
pub fn chain_of(store: &dyn StoreRead, backups: &[Backup], newest: &Backup) -> Result<Vec<Backup>> {
    Ok(chain(store, backups, newest)?
        .into_iter()
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_link_of_a_real_incremental_label() {
        let text = include_str!("../../fixtures/17/incremental/backup_label");
        let from = incremental_from(text).unwrap().unwrap();
        assert_eq!(from.timeline, TimelineId::FIRST);
        // The full backup of the same fixture started there.
        let full = include_str!("../../fixtures/17/backup_label");
        assert!(full.starts_with(&format!("START WAL LOCATION: {} ", from.lsn)));
        assert_eq!(incremental_from(full).unwrap(), None);
    }

    #[test]
    fn half_a_link_is_malformed() {
        let error = incremental_from("INCREMENTAL FROM LSN: 0/600028\n").unwrap_err();
        assert!(error.to_string().contains("only one of"), "{error}");
        {
            let error = incremental_from("INCREMENTAL FROM LSN: x\nINCREMENTAL FROM TLI: 1\n")
                .unwrap_err()
                .to_string();
            assert!(error.contains("is not an LSN"), "{error}");
        }
        {
            let error = incremental_from("INCREMENTAL FROM LSN: 0/1\nINCREMENTAL FROM TLI: 0\n")
                .unwrap_err()
                .to_string();
            assert!(error.contains("is not a timeline"), "{error}");
        }
    }
}
