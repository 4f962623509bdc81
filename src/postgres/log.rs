//! Reading the server log: the lines that tell how recovery is going.
//!
//! The server writes these messages in English because `pitr` sets
//! `lc_messages = 'C'`; the wording is checked against PostgreSQL 12–18.

use crate::wal::Lsn;

/// A server log line that matters to a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// `restored log file "…" from archive`
    Restored(String),
    /// `redo starts at …`: replay begins (pg_control says archive recovery).
    RedoStarts(Lsn),
    /// `consistent recovery state reached at …`
    Consistent(Lsn),
    /// `recovery stopping …`: the stop point was found. Holds the message.
    Stopping(String),
    /// `pausing at the end of recovery` (13+) or `recovery has paused` (12).
    Paused,
    /// `redo done at …`: the last record read.
    RedoDone(Lsn),
    /// `last completed transaction was at log time …`
    LastTransaction(String),
    /// `selected new timeline ID: N`
    NewTimeline(u32),
    /// `database system is ready to accept connections`: writes accepted.
    AcceptingWrites,
    /// `shutdown at recovery target`
    ShutdownAtTarget,
    /// `database system is shut down`
    ShutDown,
    /// A FATAL or PANIC line (the whole message).
    Fatal(String),
    /// A WARNING, kept for the failure report.
    Warning(String),
}

impl LogEvent {
    /// Lines after which the server is gone or going: its shutdown, or a
    /// FATAL or PANIC (of the startup process, which ends the postmaster).
    pub fn ends_the_server(&self) -> bool {
        matches!(self, LogEvent::ShutDown | LogEvent::Fatal(_))
    }
}

/// Splits a line into its level and message, whatever `log_line_prefix` is.
fn level_and_message(line: &str) -> Option<(&str, &str)> {
    for level in ["LOG", "FATAL", "PANIC", "WARNING", "ERROR"] {
        let marker = format!("{level}:  ");
        if let Some(at) = line.find(&marker) {
            return Some((level, &line[at + marker.len()..]));
        }
    }
    None
}

pub fn parse_line(line: &str) -> Option<LogEvent> {
    let (level, message) = level_and_message(line)?;
    match level {
        "FATAL" | "PANIC" => return Some(LogEvent::Fatal(message.to_string())),
        "WARNING" => return Some(LogEvent::Warning(message.to_string())),
        "LOG" => {}
        _ => return None,
    }
    let lsn_after = |prefix: &str| -> Option<Lsn> {
        message
            .strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    if let Some(rest) = message.strip_prefix("restored log file \"") {
        let name = rest.split('"').next()?;
        return Some(LogEvent::Restored(name.to_string()));
    }
    if let Some(lsn) = lsn_after("redo starts at ") {
        return Some(LogEvent::RedoStarts(lsn));
    }
    if let Some(lsn) = lsn_after("consistent recovery state reached at ") {
        return Some(LogEvent::Consistent(lsn));
    }
    if message.starts_with("recovery stopping ") {
        return Some(LogEvent::Stopping(message.to_string()));
    }
    if message.starts_with("pausing at the end of recovery")
        || message.starts_with("recovery has paused")
    {
        return Some(LogEvent::Paused);
    }
    if let Some(lsn) = lsn_after("redo done at ") {
        return Some(LogEvent::RedoDone(lsn));
    }
    if let Some(time) = message.strip_prefix("last completed transaction was at log time ") {
        return Some(LogEvent::LastTransaction(time.to_string()));
    }
    if let Some(id) = message.strip_prefix("selected new timeline ID: ") {
        return id.trim().parse().ok().map(LogEvent::NewTimeline);
    }
    match message.trim_end() {
        "database system is ready to accept connections" => Some(LogEvent::AcceptingWrites),
        "shutdown at recovery target" => Some(LogEvent::ShutdownAtTarget),
        "database system is shut down" => Some(LogEvent::ShutDown),
        _ => None,
    }
}

/// What a FATAL line means, for the user.
pub fn explain_fatal(message: &str) -> Option<&'static str> {
    let table: [(&str, &str); 8] = [
        ("recovery ended before configured recovery target was reached",
         "the archived WAL ends before the target: no commit or abort after the target time was archived, or a segment is missing or unreadable. Choose an earlier target, or `latest`"),
        ("requested recovery stop point is before consistent recovery point",
         "the target lies inside the backup (between its start and its end); choose a later target or an older backup"),
        ("is not a child of this server's history",
         "the requested timeline branched off before this backup's position; pick another timeline or backup"),
        ("has wrong size",
         "an archived WAL segment is truncated or not a segment"),
        ("could not restore file",
         "restore_command failed with an error (not \"file not found\"); see the lines before"),
        ("insufficient parameter settings",
         "the restored server's max_connections, max_prepared_transactions, max_locks_per_transaction, max_wal_senders or max_worker_processes are lower than the primary's"),
        ("lower setting than on the",
         "the restored server's settings are lower than the primary's"),
        ("could not locate required checkpoint record",
         "the WAL segment holding the backup's checkpoint is missing or unreadable"),
    ];
    table
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, meaning)| *meaning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_of_a_real_recovery() {
        let prefix = "2026-11-24 01:22:03.123 UTC [4242] ";
        let cases = [
            ("LOG:  restored log file \"000000010000000000000011\" from archive", Some(LogEvent::Restored("000000010000000000000011".into()))),
            ("LOG:  redo starts at 0/10000028", Some(LogEvent::RedoStarts("0/10000028".parse().unwrap()))),
            ("LOG:  consistent recovery state reached at 0/11000100", Some(LogEvent::Consistent("0/11000100".parse().unwrap()))),
            ("LOG:  recovery stopping before commit of transaction 732, time 2026-11-24 01:21:17.966024+00", Some(LogEvent::Stopping("recovery stopping before commit of transaction 732, time 2026-11-24 01:21:17.966024+00".into()))),
            ("LOG:  pausing at the end of recovery", Some(LogEvent::Paused)),
            ("LOG:  redo done at 0/1201A6D8 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.11 s", Some(LogEvent::RedoDone("0/1201A6D8".parse().unwrap()))),
            ("LOG:  selected new timeline ID: 2", Some(LogEvent::NewTimeline(2))),
            ("LOG:  database system is ready to accept connections", Some(LogEvent::AcceptingWrites)),
            ("LOG:  database system is ready to accept read-only connections", None),
            ("LOG:  shutdown at recovery target", Some(LogEvent::ShutdownAtTarget)),
            ("FATAL:  recovery ended before configured recovery target was reached", Some(LogEvent::Fatal("recovery ended before configured recovery target was reached".into()))),
            ("LOG:  checkpoint starting: end-of-recovery immediate wait", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(&format!("{prefix}{line}")), expected, "{line}");
        }
        let meaning = explain_fatal("recovery ended before configured recovery target was reached");
        assert!(
            meaning.is_some_and(|m| m.starts_with("the archived WAL ends before the target")),
            "{meaning:?}"
        );
        assert_eq!(explain_fatal("some other FATAL"), None);
    }

    /// The wording that differs between majors (reference §5.4), as each
    /// major writes it; the version matrix sees these lines live.
    #[test]
    fn parses_the_wording_of_every_major() {
        let cases = [
            // 12–13 say "read only", 14+ "read-only": neither ends recovery.
            ("LOG:  database system is ready to accept read only connections", None),
            // 12 pauses with "recovery has paused", 13+ at the end of recovery.
            ("LOG:  recovery has paused", Some(LogEvent::Paused)),
            // 12–13 have no resource usage after the LSN.
            ("LOG:  redo done at 0/3000148", Some(LogEvent::RedoDone("0/3000148".parse().unwrap()))),
            // 18 pads the low half of some LSNs to 8 digits.
            ("LOG:  consistent recovery state reached at 0/03000158", Some(LogEvent::Consistent("0/3000158".parse().unwrap()))),
            ("LOG:  redo done at 0/0301A6D8 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.01 s", Some(LogEvent::RedoDone("0/301A6D8".parse().unwrap()))),
            ("LOG:  recovery stopping after WAL location (LSN) \"0/0301A9C8\"", Some(LogEvent::Stopping("recovery stopping after WAL location (LSN) \"0/0301A9C8\"".into()))),
            // 13+: the target was not reached. 12 promoted silently instead,
            // which pitr catches by the missing `recovery stopping` line.
            ("FATAL:  recovery ended before configured recovery target was reached", Some(LogEvent::Fatal("recovery ended before configured recovery target was reached".into()))),
            // 17 quotes the setting's name.
            ("FATAL:  must specify \"restore_command\" when standby mode is not enabled", Some(LogEvent::Fatal("must specify \"restore_command\" when standby mode is not enabled".into()))),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(&format!("2026-11-24 01:22:03.123 UTC [4242] {line}")),
                expected,
                "{line}"
            );
        }
        // 12–13 name the primary "master" in this FATAL, 14+ "primary".
        for wording in ["master", "primary"] {
            let message = format!("hot standby is not possible because max_connections = 10 is a lower setting than on the {wording} server (its value was 100)");
            assert_eq!(
                explain_fatal(&message),
                Some("the restored server's settings are lower than the primary's"),
                "{message}"
            );
        }
    }
}
