//! What `pitr extract` says when it is done: which backup, where recovery
//! stopped, the rows of each table, where they went, and the time of each
//! phase; as text for people (stderr) or JSON (stdout).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::moment::{Candidate, FoundMoment};
use super::Selection;
use crate::cli::DumpFormat;
use crate::progress::{count, human_bytes};

/// Where the dump went.
pub enum Destination {
    File {
        path: PathBuf,
        format: DumpFormat,
        bytes: u64,
    },
    Live {
        /// The database created for a whole-database load.
        created_database: Option<String>,
        /// What was loaded where, for people.
        what: String,
    },
}

pub struct Summary<'a> {
    pub selection: &'a Selection,
    pub loaded_as: &'a Selection,
    /// `pitr restore --json`'s report of the extracted copy.
    pub report: Value,
    pub target: String,
    pub exclusive: bool,
    pub found: Option<&'a FoundMoment>,
    pub rows: &'a [(String, u64)],
    pub destination: Destination,
    pub scratch: PathBuf,
    pub port: u16,
    pub seconds: Timings,
    pub kept: bool,
}

/// Where the extract's time went: every step, so that the phases add up
/// to the total (what is left is pitr's own bookkeeping, milliseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// The options, the repository's catalog and the live cluster's names
    /// checked, before anything is restored.
    pub checks: Duration,
    /// The moment found in the WAL (`--before-drop`, `--before-truncate`):
    /// a copy restored at the window's start, and the WAL read.
    pub finding: Duration,
    /// The copy restored to the moment (a `pitr restore` run; its own
    /// phases are in its report's `seconds`).
    pub restore: Duration,
    /// The copy's tables found, their rows counted, renamed for `--as`.
    pub queries: Duration,
    pub dump_and_load: Duration,
    /// The copy's server stopped (immediately) and its directory removed,
    /// or stopped cleanly and kept.
    pub removal: Duration,
    pub total: Duration,
}

impl Summary<'_> {
    pub fn text(&self) -> String {
        let mut lines = vec![String::new(), "extract complete".to_string()];
        lines.push(format!("  what:       {}", self.selection.describe()));
        if let Some(found) = self.found {
            lines.push(format!("  found:      {}", found.chosen.text()));
            lines.push(format!("  window:     from {}", found.window));
        }
        lines.push(format!(
            "  backup:     {}",
            self.report["plan"]["backup"]["id"].as_str().unwrap_or("?")
        ));
        lines.push(format!(
            "  stop point: {}",
            self.report["stop"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!(
                    "{}{}",
                    self.target,
                    if self.exclusive { " (exclusive)" } else { "" }
                ))
        ));
        for (table, rows) in self.rows {
            lines.push(format!("  rows:       {table}: {}", count(*rows, "row")));
        }
        lines.push(match &self.destination {
            Destination::File {
                path,
                format,
                bytes,
            } => format!(
                "  written to: {} ({} format, {})",
                path.display(),
                match format {
                    DumpFormat::Custom => "custom",
                    DumpFormat::Plain => "plain SQL",
                },
                human_bytes(*bytes)
            ),
            Destination::Live { what, .. } => format!("  loaded:     {what}"),
        });
        lines.push(self.written_text());
        lines.push(if self.kept {
            format!("  scratch copy kept (stopped): {}", self.scratch.display())
        } else {
            "  scratch copy removed".to_string()
        });
        lines.push(self.time_text());
        lines.join("\n")
    }

    /// Every step's time, the restore's own phases in parentheses.
    fn time_text(&self) -> String {
        let t = &self.seconds;
        let s = |d: Duration| d.as_secs_f64();
        let phases = &self.report["seconds"];
        let phase = |name: &str| phases[name].as_f64().unwrap_or(0.0);
        let wal_read = phases["wal_read"]
            .as_f64()
            .map(|read| format!(" with the WAL read in {read:.1}s"))
            .unwrap_or_default();
        format!(
            "  time:       checks {:.1}s, finding {:.1}s, restore {:.1}s (plan {:.1}s, staging {:.1}s{wal_read}, start and replay {:.1}s), queries {:.1}s, dump and load {:.1}s, {} {:.1}s, total {:.1}s",
            s(t.checks),
            s(t.finding),
            s(t.restore),
            phase("plan"),
            phase("staging"),
            phase("recovery"),
            s(t.queries),
            s(t.dump_and_load),
            if self.kept { "stopping the copy" } else { "removing the copy" },
            s(t.removal),
            s(t.total)
        )
    }

    /// What the copy's restore wrote: the bytes, and which databases it
    /// left as sparse files, or why it wrote everything.
    fn written_text(&self) -> String {
        let only = &self.report["only_database"];
        let written = human_bytes(self.report["bytes_staged"].as_u64().unwrap_or(0));
        let sparse: Vec<&str> = only["sparse_databases"]
            .as_array()
            .map(|databases| {
                databases
                    .iter()
                    .filter_map(|database| database["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if sparse.is_empty() {
            let why = only["all_written_because"]
                .as_str()
                .unwrap_or("the restore did not say why");
            return format!("  written:    {written}, every database in full: {why}");
        }
        format!(
            "  written:    {written}; {} left as {} sparse files ({} not written)",
            sparse.join(", "),
            only["sparse_files"].as_u64().unwrap_or(0),
            human_bytes(only["sparse_bytes"].as_u64().unwrap_or(0))
        )
    }

    pub fn json(&self) -> Value {
        let t = &self.seconds;
        let s = |d: Duration| d.as_secs_f64();
        json!({
            "selection": self.selection.describe(),
            "loaded_as": self.loaded_as.describe(),
            "backup": self.report["plan"]["backup"]["id"],
            "target": { "to": self.target, "exclusive": self.exclusive },
            "stop": self.report["stop"],
            "candidates": self.found.map(|f| f.candidates.iter().map(Candidate::json).collect::<Vec<_>>()),
            "chosen": self.found.map(|f| f.chosen.json()),
            "followed": self.found.map(|f| f.found.followed.iter().map(Candidate::json).collect::<Vec<_>>()),
            "tables": self.rows.iter().map(|(table, rows)| json!({"table": table, "rows": rows})).collect::<Vec<_>>(),
            "destination": match &self.destination {
                Destination::File { path, format, bytes } => json!({"kind": "file", "path": path, "format": format, "bytes": bytes}),
                Destination::Live { created_database, what } => json!({"kind": "cluster", "loaded": what, "created_database": created_database}),
            },
            "written": {
                "bytes": self.report["bytes_staged"],
                "sparse_databases": self.report["only_database"]["sparse_databases"],
                "sparse_files": self.report["only_database"]["sparse_files"],
                "sparse_bytes": self.report["only_database"]["sparse_bytes"],
                "all_written_because": self.report["only_database"]["all_written_because"],
            },
            "scratch": { "path": self.scratch, "port": self.port, "kept": self.kept },
            "seconds": {
                "checks": s(t.checks),
                "finding": s(t.finding),
                "restore": s(t.restore),
                "restore_phases": {
                    "plan": self.report["seconds"]["plan"],
                    "staging": self.report["seconds"]["staging"],
                    "recovery": self.report["seconds"]["recovery"],
                    "wal_read": self.report["seconds"]["wal_read"],
                },
                "queries": s(t.queries),
                "dump_and_load": s(t.dump_and_load),
                "removal": s(t.removal),
                "total": s(t.total),
            },
        })
    }
}
