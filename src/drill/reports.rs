//! The drills' evidence in the repository: `drills/<time>.json`, one
//! report per drill, and the server log of a failed one beside it.
//!
//! A drill restores, so it holds the repository's read role like any
//! restore; the only thing it may write is its own evidence. [`DrillReports`]
//! is that narrow write role: a store rooted at `drills/` that can only
//! create new objects there, never replace or delete one, and never reach
//! the backups or the WAL archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::DrillReport;
use crate::repo::store::posix::{create_dir_like_parent, Posix};
use crate::repo::store::{read_all, Created, NewObject, StoreRead, Writable, WriteError};
use crate::repo::RepoLocation;

/// The name of the drills' directory beside `base/` and `wal/`.
pub const DRILLS_DIR: &str = "drills";

/// Where drill reports live: `DIR/drills` of `--repo DIR`, or the directory
/// given (`--drill-reports`) for layouts named with `--backups` and
/// `--wal-archive`; `None` when neither applies.
pub fn drills_dir(location: &RepoLocation, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return crate::repo::absolute(dir).ok();
    }
    // Reports are local files: a repository in object storage keeps
    // none unless `--drill-reports` says where.
    let RepoLocation::Local {
        backups,
        wal_archive,
        ..
    } = location
    else {
        return None;
    };
    let repo = backups.parent()?;
    let is_repo_layout =
        backups.file_name().is_some_and(|n| n == "base") && *wal_archive == repo.join("wal");
    is_repo_layout.then(|| repo.join(DRILLS_DIR))
}

/// Writes drill reports, and nothing else.
#[derive(Debug)]
pub struct DrillReports {
    store: Writable,
}

impl DrillReports {
    /// Opens `dir` for new reports, creating it (owned like the repository)
    /// when missing.
    pub fn open(dir: &Path) -> Result<DrillReports> {
        create_dir_like_parent(dir)?;
        Ok(DrillReports {
            store: Writable::new(Posix::new(dir)),
        })
    }

    /// Stores `report` as `<time>.json` (a second drill in the same second
    /// gets `-2`), and the server log of a failed drill as `<time>.log`.
    /// Two drills may choose the same name at once (drills of one repository
    /// run from cron on several hosts): the create never replaces, and the
    /// one that finds the name taken takes the next. Returns the report's key.
    pub fn save(&self, report: &DrillReport, server_log: Option<&[u8]>) -> Result<SavedReport> {
        let mut tried = std::collections::BTreeSet::new();
        loop {
            let taken = |name: &str| {
                tried.contains(name)
                    || ["json", "log"].iter().any(|ext| {
                        self.store
                            .stat(&format!("{name}.{ext}"))
                            .is_ok_and(|found| found.is_some())
                    })
            };
            let name = crate::repo::writer::backup_id(report.started, taken);
            let log_key = server_log.map(|_| format!("{name}.log"));
            let mut report = report.clone();
            report.server_log_key = log_key.as_ref().map(|key| format!("{DRILLS_DIR}/{key}"));
            if let (Some(key), Some(bytes)) = (&log_key, server_log) {
                if !self.create(key, bytes)? {
                    tried.insert(name);
                    continue;
                }
            }
            let json =
                serde_json::to_vec_pretty(&report).context("cannot write the drill report")?;
            let key = format!("{name}.json");
            // A log written just before under a name another drill's report
            // then took stays unreferenced; reports are what is read.
            if !self.create(&key, &json)? {
                tried.insert(name);
                continue;
            }
            return Ok(SavedReport {
                described: self.store.describe(&key),
                report,
            });
        }
    }

    /// Creates `key`; false when another drill's object has that name.
    fn create(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let mut fill = |out: &mut dyn std::io::Write| out.write_all(bytes);
        match self.store.create_new(key, &NewObject::default(), &mut fill) {
            Ok(Created::Created | Created::AlreadyPresentSame) => Ok(true),
            Ok(Created::PresentDifferent) => Ok(false),
            Err(WriteError::Write(error)) => {
                Err(error).with_context(|| format!("cannot write `{}`", self.store.describe(key)))
            }
            Err(WriteError::Other(error)) => Err(error),
        }
    }
}

/// A report as stored: where, and with the key of its log filled in.
pub struct SavedReport {
    pub described: String,
    pub report: DrillReport,
}

/// Reads the stored reports (the read role: `list --drills`, `check`).
#[derive(Debug)]
pub struct DrillHistory {
    store: Arc<dyn StoreRead>,
}

/// A stored report, or why it cannot be read.
pub struct StoredReport {
    pub key: String,
    pub report: Result<DrillReport, String>,
}

impl DrillHistory {
    pub fn new(dir: &Path) -> DrillHistory {
        DrillHistory {
            store: Arc::new(Posix::new(dir)),
        }
    }

    /// Every report, oldest first; none when the directory does not exist
    /// (no drill has run yet).
    pub fn all(&self) -> Result<Vec<StoredReport>> {
        let objects = match self.store.list("", None) {
            Ok(objects) => objects,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot list `{}`", self.store.describe("")))
            }
        };
        let mut reports: Vec<StoredReport> = objects
            .into_iter()
            .filter(|object| object.key.ends_with(".json") && !object.key.starts_with('.'))
            .map(|object| {
                let report = read_all(&*self.store, &object.key)
                    .map_err(|error| error.to_string())
                    .and_then(|bytes| {
                        serde_json::from_slice::<DrillReport>(&bytes)
                            .map_err(|error| format!("not a drill report: {error}"))
                    });
                StoredReport {
                    key: format!("{DRILLS_DIR}/{}", object.key),
                    report,
                }
            })
            .collect();
        // Names are start times, which sort as text once `.json` is off (a
        // second drill in the same second, `-2`, then sorts after the first).
        reports.sort_by(|a, b| {
            a.key
                .trim_end_matches(".json")
                .cmp(b.key.trim_end_matches(".json"))
        });
        Ok(reports)
    }

    /// The newest readable report.
    pub fn latest(&self) -> Result<Option<(String, DrillReport)>> {
        Ok(self
            .all()?
            .into_iter()
            .rev()
            .find_map(|stored| stored.report.ok().map(|report| (stored.key, report))))
    }
}
