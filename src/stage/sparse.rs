//! Databases staged as sparse files (issue 18, point 2): when a restore
//! is made for one database (`pitr extract`), the relation files of the
//! databases it does not need are not extracted but written as sparse
//! files of their size (`set_len`, no data). The data directory then has
//! the shape replay needs to pass over them: with full-page writes on over
//! the whole replayed range, the first change of each page after the
//! backup's checkpoint carries its image, so a zeroed page is never read
//! as data (scripts/excluded-databases-experiment.sh). Whether that holds,
//! and which databases qualify, is decided before staging
//! ([`crate::extract::scope`]); this is only the mechanism.
//!
//! A database's files are `base/<oid>/<file>` in the data directory and
//! `PG_<version>_<catversion>/<oid>/<file>` in a tablespace; `PG_VERSION`
//! is written as it is (PostgreSQL reads it when it opens the database).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use anyhow::Result;

use super::write::{create_new, interrupt_or, Verify};

/// The databases (by OID) whose relation files are staged sparse, and
/// what was left so.
#[derive(Clone, Debug, Default)]
pub struct SparseDatabases {
    oids: BTreeSet<u32>,
    /// Files written sparse, and their bytes (apparent size).
    pub files: u64,
    pub bytes: u64,
}

impl SparseDatabases {
    pub fn new(oids: impl IntoIterator<Item = u32>) -> SparseDatabases {
        SparseDatabases {
            oids: oids.into_iter().collect(),
            ..SparseDatabases::default()
        }
    }

    /// No database is left sparse: everything is written.
    pub fn is_empty(&self) -> bool {
        self.oids.is_empty()
    }

    /// True for a relation file of one of the databases, given as a path
    /// relative to the data directory or to a tablespace directory.
    pub fn covers(&self, relative: &Path) -> bool {
        if self.oids.is_empty() {
            return false;
        }
        let parts: Vec<&str> = relative
            .components()
            .filter_map(|component| match component {
                Component::Normal(part) => part.to_str(),
                _ => None,
            })
            .collect();
        match parts.as_slice() {
            [top, database, file] if *top == "base" || top.starts_with("PG_") => {
                *file != "PG_VERSION"
                    && database
                        .parse::<u32>()
                        .is_ok_and(|oid| self.oids.contains(&oid))
            }
            _ => false,
        }
    }

    /// Creates `target` as a sparse file of `size` bytes, and tells the
    /// manifest check that the file is there but deliberately not its
    /// content (its size is still checked).
    pub fn write(
        &mut self,
        target: &Path,
        relative: &Path,
        mode: u32,
        size: u64,
        verify: &mut Option<&mut Verify<'_>>,
    ) -> Result<()> {
        let file = create_new(target, mode)?;
        file.set_len(size).map_err(|e| interrupt_or(e, target))?;
        if let Some(verify) = verify.as_mut() {
            let path = verify.manifest_path(relative);
            verify.check.record_sparse(&path, size).map_err(|problem| {
                anyhow::anyhow!("the backup does not match its manifest: {problem}")
            })?;
        }
        self.files += 1;
        self.bytes += size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relation_files_of_the_chosen_databases() {
        let sparse = SparseDatabases::new([16390]);
        assert!(sparse.covers(Path::new("base/16390/16401")));
        assert!(sparse.covers(Path::new("./base/16390/16401_fsm")));
        assert!(sparse.covers(Path::new("PG_15_202209061/16390/16401")));
        // PG_VERSION, the directory itself, other databases, global/.
        assert!(!sparse.covers(Path::new("base/16390/PG_VERSION")));
        assert!(!sparse.covers(Path::new("base/16390")));
        assert!(!sparse.covers(Path::new("base/16391/16401")));
        assert!(!sparse.covers(Path::new("global/1262")));
        assert!(!sparse.covers(Path::new("pg_wal/16390/1")));
        assert!(!SparseDatabases::default().covers(Path::new("base/16390/16401")));
    }
}
