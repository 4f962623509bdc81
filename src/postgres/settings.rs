//! The recovery settings `pitr` appends to `postgresql.auto.conf`.
//!
//! Every setting written exists in every supported major (12–18), except
//! where noted; an unknown name would make the server refuse to start
//! (`unrecognized configuration parameter`), so each is checked against the
//! GUC tables of each release (guc.c ≤15, guc_tables.c 16+) and by the
//! version matrix, which restores with each major:
//!
//! | setting | majors |
//! |---|---|
//! | restore_command, recovery_target*, recovery_target_action, primary_conninfo, recovery_min_apply_delay | 12+ (were recovery.conf lines before) |
//! | port, unix_socket_directories, archive_mode, hot_standby | all |
//! | logging_collector, log_destination, lc_messages, log_min_messages | all |
//! | recovery_init_sync_method | 14+ only |
//! | fsync (a scratch copy only) | all |

use std::path::Path;

use crate::target::{postgres_timestamp, Action, Target};
use crate::wal::TimelineId;

/// Everything written into the staged data directory's configuration.
#[derive(Clone, Debug)]
pub struct RecoverySettings {
    pub restore_command: String,
    pub target: Target,
    pub inclusive: bool,
    pub timeline: TimelineId,
    /// What the server does at the target (checked against the target
    /// with [`Action::check`]).
    pub action: Action,
    pub port: u16,
    pub socket_dir: String,
    pub keep_archiving: bool,
    pub major_version: u32,
    /// Whether the restored cluster must survive a crash of the machine.
    pub durability: Durability,
}

/// What a crash of the machine may cost the restored cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A restore someone will use: everything staged is on disk before
    /// it is renamed into place, and the server flushes as configured.
    Durable,
    /// A scratch copy that is thrown away after one use (`pitr extract`):
    /// after a crash it would be restored again, never used, so nothing
    /// is flushed for it. Flushing is not free there: a one-database copy
    /// leaves the other databases as sparse files, replay fills their
    /// pages one by one, and every page flushed becomes a separate extent
    /// on disk that the removal must free (on a filesystem mounted with
    /// `discard`, one discard request each: milliseconds apiece, tens of
    /// seconds for a few thousand pages). Pages never flushed are dropped
    /// from the page cache with the file.
    Throwaway,
}

impl RecoverySettings {
    /// Lines for `postgresql.auto.conf`; the last occurrence of a setting
    /// wins, so these override whatever the backup carried.
    pub fn render(&self, header: &str) -> String {
        let mut lines = vec![format!("\n# {header}")];
        let mut set =
            |name: &str, value: &str| lines.push(format!("{name} = {}", quote_conf(value)));
        set("restore_command", &self.restore_command);
        // A backup taken from an earlier restore carries that restore's
        // targets in postgresql.auto.conf: clear every target first (the
        // last occurrence of a setting wins), then set ours.
        for name in [
            "recovery_target",
            "recovery_target_time",
            "recovery_target_xid",
            "recovery_target_lsn",
            "recovery_target_name",
        ] {
            set(name, "");
        }
        match &self.target {
            Target::Time(time) => set("recovery_target_time", &postgres_timestamp(time)),
            Target::Lsn(lsn) => set("recovery_target_lsn", &lsn.to_string()),
            // PostgreSQL reads the setting with strtou64 and keeps the low
            // 32 bits (check_recovery_target_xid): the 32-bit xid is what
            // it compares, in every major. pitr checked the epoch itself.
            Target::Xid(xid) => set("recovery_target_xid", &xid.xid().to_string()),
            Target::Name(name) => set("recovery_target_name", name),
            Target::Immediate => set("recovery_target", "immediate"),
            Target::Latest => {}
        }
        if matches!(
            self.target,
            Target::Time(_) | Target::Lsn(_) | Target::Xid(_)
        ) {
            set(
                "recovery_target_inclusive",
                if self.inclusive { "on" } else { "off" },
            );
        }
        // Always a number: `latest` would follow any newer branch in the
        // archive, even one that forked before the target.
        set("recovery_target_timeline", &self.timeline.to_string());
        set("recovery_target_action", self.recovery_target_action());
        set("port", &self.port.to_string());
        set("unix_socket_directories", &self.socket_dir);
        if !self.keep_archiving {
            set("archive_mode", "off");
        }
        // Pausing at the target needs hot standby; a standby's upstream
        // (from `pg_basebackup -R`) must not be contacted.
        set("hot_standby", "on");
        set("primary_conninfo", "");
        // A delay would make PostgreSQL wait between commits during replay,
        // and look at pitr's early promotion request while it waits
        // (`recoveryApplyDelay`): none, so that the request is acted on
        // only at the target (see `recovery::follow`).
        set("recovery_min_apply_delay", "0");
        // pitr follows the server through its log: keep it in one known
        // file, in English.
        set("logging_collector", "off");
        set("log_destination", "stderr");
        set("lc_messages", "C");
        set("log_min_messages", "warning");
        match self.durability {
            Durability::Durable if self.major_version >= 14 => {
                // One syncfs() instead of an fsync per file at startup.
                set("recovery_init_sync_method", "syncfs");
            }
            Durability::Durable => {}
            // No flush at startup (PostgreSQL skips its flush of the data
            // directory without fsync), at checkpoints, or of the WAL: see
            // `Durability::Throwaway`.
            Durability::Throwaway => set("fsync", "off"),
        }
        lines.push(String::new());
        lines.join("\n")
    }

    /// `recovery_target_action`: pitr promotes at a target itself, so
    /// PostgreSQL pauses there for it; with `latest` there is no target and
    /// PostgreSQL promotes at the end of the archive by itself.
    fn recovery_target_action(&self) -> &'static str {
        match (self.action, &self.target) {
            (Action::Shutdown, _) => "shutdown",
            (Action::Promote, Target::Latest) => "promote",
            (Action::Promote | Action::Pause, _) => "pause",
        }
    }
}

/// Quotes a value for postgresql.conf: single quotes, embedded quotes
/// doubled, and backslashes doubled because the configuration parser reads
/// `\` escapes inside quoted values (`GUC_scanstr`).
pub fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a word for `sh -c`, which is how PostgreSQL runs restore_command.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Where the `wal-fetch` of restore_command finds the archive.
#[derive(Clone, Copy, Debug)]
pub enum FetchFrom<'a> {
    /// A local directory, named in the command.
    Dir(&'a Path),
    /// The repository in the environment pitr starts the server with
    /// (`PITR_REPO`, with `PITR_CONFIG` and the store's credential
    /// variables inherited): postgresql.auto.conf then holds no URL and no
    /// secret, which a data directory copied elsewhere would carry along.
    Environment,
}

/// `'<pitr>' wal-fetch --wal-archive '<dir>' %f %p` (or without the
/// archive, see [`FetchFrom::Environment`]), with `%` in paths doubled so
/// PostgreSQL does not take it for a placeholder. With `spool` (relative
/// to the data directory, where PostgreSQL runs the command), prefetched
/// segments are taken from there first.
pub fn restore_command(pitr: &Path, from: FetchFrom<'_>, spool: Option<&Path>) -> String {
    let escape = |path: &Path| shell_quote(&path.to_string_lossy()).replace('%', "%%");
    let archive = match from {
        FetchFrom::Dir(dir) => format!(" --wal-archive {}", escape(dir)),
        FetchFrom::Environment => String::new(),
    };
    let spool = spool
        .map(|dir| format!(" --spool {}", escape(dir)))
        .unwrap_or_default();
    format!("{} wal-fetch{archive}{spool} %f %p", escape(pitr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_command_for_test(pitr: &Path, wal_archive: &Path) -> String {
        restore_command(pitr, FetchFrom::Dir(wal_archive), None)
    }
    use std::process::Command;

    fn settings(major_version: u32) -> RecoverySettings {
        RecoverySettings {
            restore_command: "true".to_string(),
            target: Target::Immediate,
            inclusive: true,
            timeline: TimelineId::FIRST,
            action: Action::Pause,
            port: 5432,
            socket_dir: "/tmp".to_string(),
            keep_archiving: false,
            major_version,
            durability: Durability::Durable,
        }
    }

    #[test]
    fn only_a_throwaway_copy_runs_without_fsync() {
        for major in [13, 15, 18] {
            let mut settings = settings(major);
            let durable = settings.render("test");
            assert!(!durable.contains("fsync"), "{durable}");
            assert_eq!(
                durable.contains("recovery_init_sync_method = 'syncfs'"),
                major >= 14,
                "{durable}"
            );
            settings.durability = Durability::Throwaway;
            let throwaway = settings.render("test");
            assert!(throwaway.contains("\nfsync = 'off'\n"), "{throwaway}");
            assert!(
                !throwaway.contains("recovery_init_sync_method"),
                "{throwaway}"
            );
        }
    }

    #[test]
    fn the_action_is_written_as_postgresql_must_act() {
        let written = |action: Action, target: Target| {
            let mut settings = settings(15);
            settings.action = action;
            settings.target = target;
            settings.render("test")
        };
        let point = || Target::Lsn(crate::wal::Lsn::new(0x3000200));
        // pitr promotes a server paused at the target.
        for (action, value) in [
            (Action::Promote, "pause"),
            (Action::Pause, "pause"),
            (Action::Shutdown, "shutdown"),
        ] {
            let text = written(action, point());
            assert!(
                text.contains(&format!("recovery_target_action = '{value}'")),
                "{action:?}: {text}"
            );
        }
        // No target: PostgreSQL promotes at the end of the archive.
        let text = written(Action::Promote, Target::Latest);
        assert!(
            text.contains("recovery_target_action = 'promote'"),
            "{text}"
        );
    }

    #[test]
    fn settings_of_later_majors_are_written_only_there() {
        for major in 12..=13 {
            let text = settings(major).render("test");
            assert!(!text.contains("recovery_init_sync_method"), "{major}");
        }
        for major in 14..=18 {
            let text = settings(major).render("test");
            assert!(
                text.contains("recovery_init_sync_method = 'syncfs'"),
                "{major}"
            );
        }
    }

    #[test]
    fn a_64_bit_xid_is_written_as_the_32_bit_xid_postgresql_compares() {
        let mut with_epoch = settings(15);
        with_epoch.target = Target::Xid("4294968023".parse().unwrap());
        let text = with_epoch.render("test");
        assert!(text.contains("recovery_target_xid = '727'"), "{text}");
        let mut bare = settings(15);
        bare.target = Target::Xid("727".parse().unwrap());
        assert!(bare.render("test").contains("recovery_target_xid = '727'"));
    }

    #[test]
    fn the_timeline_is_always_a_number() {
        let mut settings = settings(15);
        settings.timeline = TimelineId::FIRST;
        assert!(settings
            .render("test")
            .contains("recovery_target_timeline = '1'\n"));
    }

    #[test]
    fn conf_quoting_doubles_quotes_and_backslashes() {
        assert_eq!(quote_conf("it's"), "'it''s'");
        assert_eq!(quote_conf(r"a\b"), r"'a\\b'");
        assert_eq!(quote_conf(r"'it'\''s'"), r"'''it''\\''''s'''");
    }

    #[test]
    fn restore_command_survives_spaces_quotes_and_percent() {
        let command = restore_command_for_test(
            Path::new("/opt/my pitr/bin/pitr"),
            Path::new("/srv/it's 100%/wal"),
        );
        assert_eq!(
            command,
            r#"'/opt/my pitr/bin/pitr' wal-fetch --wal-archive '/srv/it'\''s 100%%/wal' %f %p"#
        );
        // What the shell sees after PostgreSQL replaces %f, %p and %%.
        let expanded = command
            .replace("%f", "000000010000000000000003")
            .replace("%p", "pg_wal/RECOVERYXLOG")
            .replace("%%", "%");
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n'{}",
                expanded.strip_prefix("'/opt/my pitr/bin/pitr'").unwrap()
            ))
            .output()
            .unwrap();
        let words: Vec<&str> = std::str::from_utf8(&output.stdout)
            .unwrap()
            .lines()
            .collect();
        assert_eq!(
            words,
            [
                "wal-fetch",
                "--wal-archive",
                "/srv/it's 100%/wal",
                "000000010000000000000003",
                "pg_wal/RECOVERYXLOG"
            ]
        );
    }
}
