//! The settings that make PostgreSQL archive its WAL into a repository, and
//! the judgement of a cluster's current settings against them.
//!
//! Pure: reading the settings of a cluster is `postgres::cluster`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::settings::quote_conf;

/// `pitr wal-push --repo <repo> %p` as a shell command line, with each path
/// quoted for `sh -c` only when it needs it and `%` doubled so PostgreSQL
/// does not take it for a placeholder.
pub fn archive_command(pitr: &Path, repo: &Path) -> String {
    let word = |path: &Path| shell_word(&path.to_string_lossy()).replace('%', "%%");
    format!("{} wal-push --repo {} %p", word(pitr), word(repo))
}

/// The `postgresql.conf` lines that archive into `repo` through `pitr`.
pub fn conf_lines(pitr: &Path, repo: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("wal_level", "replica".to_string()),
        ("archive_mode", "on".to_string()),
        ("archive_command", archive_command(pitr, repo)),
    ]
}

/// Renders settings as postgresql.conf lines. Words such as `replica` stay
/// bare, as in PostgreSQL's sample file; anything else is quoted so that
/// any path survives the configuration parser.
pub fn render_conf(lines: &[(&'static str, String)]) -> String {
    lines
        .iter()
        .map(|(name, value)| {
            let bare = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if bare {
                format!("{name} = {value}\n")
            } else {
                format!("{name} = {}\n", quote_conf(value))
            }
        })
        .collect()
}

/// Quotes a word for `sh -c` when it holds anything beyond characters every
/// shell leaves alone, so that the common case reads naturally.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@=".contains(&b));
    if plain {
        word.to_string()
    } else {
        super::settings::shell_quote(word)
    }
}

/// Splits a shell command line into words: single quotes, double quotes and
/// backslashes as `sh` reads them; anything fancier (variables, command
/// substitution) stays as written. Enough to find the paths in an
/// `archive_command`.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(next @ ('"' | '\\' | '$' | '`')) => word.push(next),
                            Some(next) => {
                                word.push('\\');
                                word.push(next);
                            }
                            None => word.push('\\'),
                        },
                        _ => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() || matches!(c, ';' | '&' | '|') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One setting as the server reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    pub value: String,
    /// postgresql.conf holds another value that needs a restart.
    pub pending_restart: bool,
}

/// The settings `check` looks at, by name.
pub type Settings = BTreeMap<String, Setting>;

/// The names `check` reads.
pub const CHECKED_SETTINGS: [&str; 6] = [
    "wal_level",
    "archive_mode",
    "archive_command",
    "archive_library",
    "max_wal_senders",
    "archive_timeout",
];

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// WAL does not reach the repository, or `pitr backup` cannot work.
    Problem,
    /// Works, but could be better.
    Note,
}

/// One thing `check` found about a setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub setting: &'static str,
    pub message: String,
}

/// How PostgreSQL reaches the repository's `wal/`, judged from its
/// `archive_command`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ArchiveTarget {
    /// `pitr wal-push` into this repository.
    PitrHere,
    /// `pitr wal-push` into another repository or archive.
    PitrElsewhere(String),
    /// Some other command that names this repository's `wal/`.
    OtherCommandHere,
    Elsewhere,
}

fn archive_target(command: &str, repo: &Path) -> ArchiveTarget {
    let words: Vec<String> = shell_words(command)
        .into_iter()
        .map(|word| word.replace("%%", "%"))
        .collect();
    let same = |text: &str, dir: &Path| same_path(Path::new(text), dir);
    let wal = repo.join("wal");
    if words.iter().any(|w| w == "wal-push") {
        let mut iter = words.iter();
        while let Some(word) = iter.next() {
            let (flag, value) = match word.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_string())),
                None => (word.as_str(), None),
            };
            let value = match flag {
                "--repo" | "--wal-archive" => value.or_else(|| iter.next().cloned()),
                _ => continue,
            };
            let Some(value) = value else { continue };
            let here = if flag == "--repo" {
                same(&value, repo)
            } else {
                same(&value, &wal)
            };
            return if here {
                ArchiveTarget::PitrHere
            } else {
                ArchiveTarget::PitrElsewhere(value)
            };
        }
        // `--repo` may come from PITR_REPO in the server's environment,
        // which cannot be seen from here.
        return ArchiveTarget::PitrElsewhere("(PITR_REPO of the server)".to_string());
    }
    let names_wal = words.iter().any(|word| {
        let path = Path::new(word.trim_end_matches("/%f"));
        same_path(path, &wal) || path.parent().is_some_and(|parent| same_path(parent, &wal))
    });
    if names_wal {
        ArchiveTarget::OtherCommandHere
    } else {
        ArchiveTarget::Elsewhere
    }
}

/// Compares two paths as the file system sees them when both exist, else
/// as absolute, lexically normalised paths.
fn same_path(a: &Path, b: &Path) -> bool {
    let resolve = |path: &Path| -> Option<PathBuf> {
        path.canonicalize()
            .ok()
            .or_else(|| std::path::absolute(path).ok())
            .map(|path| path.components().collect())
    };
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Judges `settings` for archiving into `repo` and for `pitr backup`.
/// `expected` is the archive_command `pitr init` prints.
pub fn check(settings: &Settings, repo: &Path, expected: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let problem = |setting: &'static str, message: String| Finding {
        severity: Severity::Problem,
        setting,
        message,
    };
    let get = |name: &str| settings.get(name).cloned().unwrap_or_default();
    let restart_note = |setting: &Setting| {
        if setting.pending_restart {
            " (postgresql.conf already changes it: restart PostgreSQL)"
        } else {
            ""
        }
    };

    let wal_level = get("wal_level");
    if !matches!(wal_level.value.as_str(), "replica" | "logical") {
        findings.push(problem(
            "wal_level",
            format!(
                "wal_level is `{}`, which does not write enough WAL to recover from: set wal_level = replica{}",
                wal_level.value,
                restart_note(&wal_level)
            ),
        ));
    }
    let archive_mode = get("archive_mode");
    if !matches!(archive_mode.value.as_str(), "on" | "always") {
        findings.push(problem(
            "archive_mode",
            format!(
                "archive_mode is `{}`, so no WAL is archived: set archive_mode = on{}",
                archive_mode.value,
                restart_note(&archive_mode)
            ),
        ));
    }
    let archive_library = get("archive_library");
    if !archive_library.value.is_empty() {
        findings.push(problem(
            "archive_library",
            format!(
                "archive_library is `{}`, so PostgreSQL archives through it instead of archive_command: set archive_library = ''",
                archive_library.value
            ),
        ));
    }
    let command = get("archive_command").value;
    if command.is_empty() || command == "(disabled)" {
        findings.push(problem(
            "archive_command",
            format!(
                "archive_command is empty: set archive_command = {}",
                quote_conf(expected)
            ),
        ));
    } else {
        match archive_target(&command, repo) {
            ArchiveTarget::PitrHere => {}
            ArchiveTarget::OtherCommandHere => findings.push(Finding {
                severity: Severity::Note,
                setting: "archive_command",
                message: format!(
                    "archive_command `{command}` copies into this repository without pitr wal-push; pitr reads that archive, but wal-push also compresses, syncs and refuses to overwrite a different file"
                ),
            }),
            ArchiveTarget::PitrElsewhere(target) => findings.push(problem(
                "archive_command",
                format!(
                    "archive_command `{command}` runs pitr wal-push into `{target}`, not into `{}`",
                    repo.display()
                ),
            )),
            ArchiveTarget::Elsewhere => findings.push(problem(
                "archive_command",
                format!(
                    "archive_command `{command}` does not archive into `{}`: set archive_command = {}",
                    repo.join("wal").display(),
                    quote_conf(expected)
                ),
            )),
        }
    }
    let senders = get("max_wal_senders");
    match senders.value.parse::<u32>() {
        Ok(n) if n >= 2 => {}
        _ => findings.push(problem(
            "max_wal_senders",
            format!(
                "max_wal_senders is `{}`: pitr backup runs pg_basebackup, which needs 2 (one for the files, one to stream WAL); set max_wal_senders = 10{}",
                senders.value,
                restart_note(&senders)
            ),
        )),
    }
    let timeout = get("archive_timeout").value;
    if timeout == "0" || timeout.is_empty() {
        findings.push(Finding {
            severity: Severity::Note,
            setting: "archive_timeout",
            message: "archive_timeout is 0: on a quiet server the newest WAL waits until its segment fills before it is archived, which holds back the end of the recoverable window; consider archive_timeout = 60".to_string(),
        });
    }
    findings
}

/// What `pg_stat_archiver` and `pg_wal/archive_status` say of a running
/// server's archiving.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiverStatus {
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub last_archived_time: Option<String>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    /// The last attempt failed (no success since the last failure).
    pub failing: bool,
    /// The WAL file the server writes now (none on a standby).
    pub current_wal: Option<String>,
    /// Segments marked ready and not archived yet.
    pub waiting: Option<u64>,
}

/// Segments waiting beyond which archiving counts as lagging: PostgreSQL
/// marks a segment ready when it is complete, and the archiver takes it
/// within seconds when all is well.
const LAGGING_SEGMENTS: u64 = 8;

/// The `setting` of findings about the archiver's work rather than a setting.
pub const ARCHIVER: &str = "pg_stat_archiver";

/// The settings that the lines `pitr init` prints decide.
pub const PRINTED_SETTINGS: [&str; 4] = [
    "wal_level",
    "archive_mode",
    "archive_command",
    "archive_library",
];

/// Judges whether archiving works, from what the archiver reports.
pub fn judge_archiver(status: &ArchiverStatus) -> Vec<Finding> {
    let mut findings = Vec::new();
    let waiting = match status.waiting {
        Some(0) | None => String::new(),
        Some(n) => format!(
            "; {n} WAL file{} wait{} in pg_wal to be archived",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        ),
    };
    if status.failing {
        findings.push(Finding {
            severity: Severity::Problem,
            setting: ARCHIVER,
            message: format!(
                "archiving fails: {} failed attempt{} (pg_stat_archiver), the last for {} at {}, {}{waiting}; PostgreSQL keeps that WAL in pg_wal and retries, and the server log says why (lines `archive command failed`)",
                status.failed_count,
                if status.failed_count == 1 { "" } else { "s" },
                status.last_failed_wal.as_deref().unwrap_or("a WAL file"),
                status.last_failed_time.as_deref().unwrap_or("an unknown time"),
                match (&status.last_archived_wal, &status.last_archived_time) {
                    (Some(wal), Some(time)) => format!("after the last success, {wal} at {time}"),
                    _ => "and no file was ever archived".to_string(),
                }
            ),
        });
        return findings;
    }
    if status.waiting.is_some_and(|n| n >= LAGGING_SEGMENTS) {
        findings.push(Finding {
            severity: Severity::Problem,
            setting: ARCHIVER,
            message: format!(
                "archiving is behind{waiting} (last archived: {}); the end of the recoverable window is that far back",
                status.last_archived_wal.as_deref().unwrap_or("none yet")
            ),
        });
    } else if status.failed_count > 0 {
        findings.push(Finding {
            severity: Severity::Note,
            setting: ARCHIVER,
            message: format!(
                "archiving failed {} time{} before (the last for {} at {}) but works now",
                status.failed_count,
                if status.failed_count == 1 { "" } else { "s" },
                status.last_failed_wal.as_deref().unwrap_or("a WAL file"),
                status
                    .last_failed_time
                    .as_deref()
                    .unwrap_or("an unknown time"),
            ),
        });
    }
    findings
}

/// One line on archiving that works, for the report.
pub fn archiver_summary(status: &ArchiverStatus) -> String {
    let last = match (&status.last_archived_wal, &status.last_archived_time) {
        (Some(wal), Some(time)) => format!("last archived {wal} at {time}"),
        _ => {
            "nothing archived yet (the first WAL file is archived when it is complete)".to_string()
        }
    };
    let current = status
        .current_wal
        .as_ref()
        .map(|wal| format!("; the server writes {wal}"))
        .unwrap_or_default();
    let waiting = match status.waiting {
        Some(n) => format!("; {n} waiting"),
        None => String::new(),
    };
    format!(
        "{} file{} archived, {last}{current}{waiting}",
        status.archived_count,
        if status.archived_count == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_archiver_is_judged_by_its_last_attempt() {
        let ok = ArchiverStatus {
            archived_count: 12,
            last_archived_wal: Some("00000001000000000000000C".into()),
            last_archived_time: Some("2026-11-24 03:15:00 UTC".into()),
            current_wal: Some("00000001000000000000000D".into()),
            waiting: Some(0),
            ..ArchiverStatus::default()
        };
        assert!(judge_archiver(&ok).is_empty());
        assert!(archiver_summary(&ok)
            .starts_with("12 files archived, last archived 00000001000000000000000C"));

        let failing = ArchiverStatus {
            failed_count: 3,
            last_failed_wal: Some("00000001000000000000000D".into()),
            last_failed_time: Some("2026-11-24 03:16:00 UTC".into()),
            failing: true,
            waiting: Some(2),
            ..ok.clone()
        };
        let findings = judge_archiver(&failing);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Problem);
        assert!(
            findings[0]
                .message
                .contains("archiving fails: 3 failed attempts"),
            "{}",
            findings[0].message
        );
        assert!(findings[0]
            .message
            .contains("after the last success, 00000001000000000000000C"));
        assert!(findings[0].message.contains("2 WAL files wait"));

        let recovered = ArchiverStatus {
            failing: false,
            ..failing.clone()
        };
        assert_eq!(judge_archiver(&recovered)[0].severity, Severity::Note);

        let behind = ArchiverStatus {
            waiting: Some(40),
            ..ok.clone()
        };
        assert_eq!(judge_archiver(&behind)[0].severity, Severity::Problem);
        assert!(judge_archiver(&behind)[0].message.contains("behind"));
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    Setting {
                        value: value.to_string(),
                        pending_restart: false,
                    },
                )
            })
            .collect()
    }

    fn good(repo: &Path) -> Settings {
        let command = archive_command(Path::new("/usr/local/bin/pitr"), repo);
        settings(&[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &command),
            ("archive_library", ""),
            ("max_wal_senders", "10"),
            ("archive_timeout", "60"),
        ])
    }

    #[test]
    fn plain_paths_stay_readable() {
        let command = archive_command(Path::new("/usr/local/bin/pitr"), Path::new("/backups/pg"));
        assert_eq!(
            command,
            "/usr/local/bin/pitr wal-push --repo /backups/pg %p"
        );
        let lines = render_conf(&conf_lines(
            Path::new("/usr/local/bin/pitr"),
            Path::new("/backups/pg"),
        ));
        assert_eq!(
            lines,
            "wal_level = replica\narchive_mode = on\narchive_command = '/usr/local/bin/pitr wal-push --repo /backups/pg %p'\n"
        );
    }

    #[test]
    fn awkward_paths_survive_the_shell_and_the_conf_parser() {
        let repo = Path::new(r"/srv/it's 100% \backup");
        let command = archive_command(Path::new("/opt/my pitr/pitr"), repo);
        assert_eq!(
            command,
            r"'/opt/my pitr/pitr' wal-push --repo '/srv/it'\''s 100%% \backup' %p"
        );
        let conf = render_conf(&conf_lines(Path::new("/opt/my pitr/pitr"), repo));
        let line = conf.lines().nth(2).unwrap();
        // postgresql.conf doubles quotes and backslashes inside values.
        assert_eq!(
            line,
            r"archive_command = '''/opt/my pitr/pitr'' wal-push --repo ''/srv/it''\\''''s 100%% \\backup'' %p'"
        );
        // What sh sees after PostgreSQL replaces %p and %%.
        let expanded = command
            .replace("%p", "pg_wal/000000010000000000000003")
            .replace("%%", "%");
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                expanded.strip_prefix("'/opt/my pitr/pitr' ").unwrap()
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
                "wal-push",
                "--repo",
                r"/srv/it's 100% \backup",
                "pg_wal/000000010000000000000003"
            ]
        );
        // And the check recognises its own command.
        assert_eq!(archive_target(&command, repo), ArchiveTarget::PitrHere);
    }

    #[test]
    fn shell_words_follow_sh() {
        assert_eq!(
            shell_words(r#"test ! -f '/a b'/%f && cp "%p" /x\ y/%f"#),
            ["test", "!", "-f", "/a b/%f", "cp", "%p", "/x y/%f"]
        );
        assert_eq!(shell_words(r#""a\"b\c""#), [r#"a"b\c"#]);
        assert_eq!(shell_words("  "), Vec::<String>::new());
    }

    #[test]
    fn a_good_cluster_has_no_problems() {
        let repo = Path::new("/backups/pg");
        assert!(check(&good(repo), repo, "x").is_empty());
    }

    #[test]
    fn each_missing_setting_is_named() {
        let repo = Path::new("/backups/pg");
        let mut bad = settings(&[
            ("wal_level", "minimal"),
            ("archive_mode", "off"),
            ("archive_command", ""),
            ("archive_library", "basic_archive"),
            ("max_wal_senders", "0"),
            ("archive_timeout", "0"),
        ]);
        bad.get_mut("archive_mode").unwrap().pending_restart = true;
        let findings = check(&bad, repo, "pitr wal-push --repo /backups/pg %p");
        let names: Vec<(&str, Severity)> =
            findings.iter().map(|f| (f.setting, f.severity)).collect();
        assert_eq!(
            names,
            [
                ("wal_level", Severity::Problem),
                ("archive_mode", Severity::Problem),
                ("archive_library", Severity::Problem),
                ("archive_command", Severity::Problem),
                ("max_wal_senders", Severity::Problem),
                ("archive_timeout", Severity::Note),
            ]
        );
        assert!(findings[1].message.contains("restart PostgreSQL"));
        assert!(findings[3]
            .message
            .contains("set archive_command = 'pitr wal-push --repo /backups/pg %p'"));
    }

    #[test]
    fn archive_commands_pointing_elsewhere_are_named() {
        let repo = Path::new("/backups/pg");
        let judge = |command: &str| {
            let mut s = good(repo);
            s.get_mut("archive_command").unwrap().value = command.to_string();
            check(&s, repo, "x")
        };
        let other = judge("pitr wal-push --repo /elsewhere %p");
        assert_eq!(other.len(), 1);
        assert!(other[0].message.contains("into `/elsewhere`"), "{other:?}");
        assert!(judge("pitr wal-push --repo=/backups/pg/ %p").is_empty());
        assert!(judge("pitr wal-push --wal-archive /backups/pg/wal %p").is_empty());
        let cp = judge("test ! -f /backups/pg/wal/%f && cp %p /backups/pg/wal/%f");
        assert_eq!(cp.len(), 1);
        assert_eq!(cp[0].severity, Severity::Note);
        let rsync = judge("rsync %p backup-host:/archive/%f");
        assert_eq!(rsync[0].severity, Severity::Problem);
        assert!(rsync[0]
            .message
            .contains("does not archive into `/backups/pg/wal`"));
    }
}
