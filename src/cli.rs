//! Command-line definitions (clap). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pitr",
    version,
    about = "Point-in-time recovery for PostgreSQL: pick the backup, prove the WAL, restore to the moment.",
    after_help = "Examples:\n  pitr plan --repo /backups --to '5 minutes ago'\n  pitr restore --repo /backups --to '2026-11-23 14:05:00' --pgdata /srv/restore\n  pitr list --repo /backups"
)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Only print errors
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore a data directory to a point in time and bring PostgreSQL there
    #[command(
        after_help = "Examples:\n  pitr restore --repo /backups --to '5 minutes ago' --pgdata /srv/restore\n  pitr restore --repo /backups --to name:before_migration --pgdata /srv/restore --action pause\n  pitr restore --backups /pg/base --wal-archive /pg/wal --to latest --pgdata /srv/pg --port 5433"
    )]
    Restore(RestoreArgs),
    /// Show what a restore to a target would do, without doing it
    #[command(
        after_help = "Examples:\n  pitr plan --repo /backups --to '2 hours ago'\n  pitr plan --repo /backups --to lsn:0/3000060 --json"
    )]
    Plan(PlanArgs),
    /// List backups and the recoverable window
    List(RepoArgs),
    /// Show commits, aborts, restore points and dropped relations in the WAL
    #[command(
        after_help = "Examples:\n  pitr events --repo /backups --from '1 hour ago'\n  pitr events --repo /backups --from '2026-11-23 14:00' --until '2026-11-23 14:10' --json\n\nA transaction that dropped relations shows how to undo it:\n  pitr restore --to xid:N --exclusive"
    )]
    Events(EventsArgs),
    /// Check backups against their manifests and every WAL segment of the archive
    #[command(
        after_help = "Examples:\n  pitr verify --repo /backups\n  pitr verify --repo /backups --backup 20261124T031500Z --json\n\nExit status 6 when any problem is found."
    )]
    Verify(VerifyArgs),
    /// Serve a WAL file from the archive (a restore_command)
    #[command(
        after_help = "Exit status: 0 the file was copied, 1 it is not in the archive, 126 any other error\n(PostgreSQL aborts recovery on statuses above 125 instead of taking them for the end of the archive).\n\nExample restore_command:\n  restore_command = 'pitr wal-fetch --wal-archive /backups/wal %f %p'"
    )]
    WalFetch(WalFetchArgs),
    /// Archive a WAL file into the repository (an archive_command)
    #[command(
        after_help = "Exit status: 0 archived, or already archived with the same contents; 1 the file could not be\narchived (PostgreSQL keeps it and retries); 2 bad usage (not a WAL file name, bad level);\n3 a file with different contents is already archived under this name (nothing is overwritten).\n\nExample archive_command:\n  archive_command = 'pitr wal-push --repo /backups %p'"
    )]
    WalPush(WalPushArgs),
}

/// Where backups and the WAL archive are.
#[derive(Debug, Args, Clone)]
pub struct RepoArgs {
    /// Repository: a directory with `base/<backup-id>/` and `wal/`
    #[arg(long, env = "PITR_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Directory holding one pg_basebackup output per subdirectory (instead of --repo)
    #[arg(long, value_name = "DIR", requires = "wal_archive")]
    pub backups: Option<PathBuf>,

    /// WAL archive directory filled by archive_command (instead of --repo)
    #[arg(long, value_name = "DIR", requires = "backups")]
    pub wal_archive: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Target: a time (`5 minutes ago`, `yesterday 14:00`, `2026-11-23 14:05:00`, ISO 8601),
    /// `latest`, `immediate`, `lsn:0/3000060`, `xid:1234` or `name:<restore point>`
    #[arg(long = "to", value_name = "TARGET", allow_hyphen_values = true)]
    pub to: String,

    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,

    /// Use this backup (its directory name) instead of choosing one
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,

    /// Timeline to follow: `latest` (the newest in the archive), `current` (the backup's) or a number
    #[arg(long, value_name = "TIMELINE", default_value = "latest")]
    pub timeline: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// End recovery at the target and accept writes
    Promote,
    /// Stay read-only at the target, to inspect before promoting
    Pause,
    /// Stop the server at the target
    Shutdown,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub target: TargetArgs,

    /// Data directory to create (must be absent or empty)
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,

    /// Replace a non-empty --pgdata: the old directory is moved aside, never deleted
    #[arg(long)]
    pub force: bool,

    /// What the server does at the target
    #[arg(long, value_enum, default_value_t = Action::Promote)]
    pub action: Action,

    /// Port for the restored server (default: a free port)
    #[arg(long)]
    pub port: Option<u16>,

    /// Keep the backup's archive settings (the restored server may archive into production)
    #[arg(long)]
    pub keep_archiving: bool,

    /// Directory with PostgreSQL's server programs (default: /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that runs PostgreSQL when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,

    /// Restore the tablespace recorded at OLD into NEW instead (repeatable; `\=` for `=` in a path)
    #[arg(long = "tablespace-mapping", value_name = "OLD=NEW")]
    pub tablespace_mappings: Vec<String>,

    /// Do not decompress upcoming WAL segments ahead of replay
    #[arg(long)]
    pub no_prefetch: bool,

    /// Do not check the backup's files against its backup_manifest while staging
    #[arg(long)]
    pub no_verify: bool,

    /// Show the plan and stop (same as `pitr plan`)
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Verify only this backup (and the archive)
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Start of the range: any --to form (default: the start of the archive)
    #[arg(long, value_name = "TARGET", allow_hyphen_values = true)]
    pub from: Option<String>,

    /// End of the range: any --to form (default: the end of the archive)
    #[arg(long, value_name = "TARGET", allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Timeline whose history to read: `latest` or a number
    #[arg(long, value_name = "TIMELINE", default_value = "latest")]
    pub timeline: String,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub repo: WalArchiveArgs,

    /// Directory of prefetched segments to move into place before trying the archive
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,

    /// File PostgreSQL asks for (%f): a segment name or NNNNNNNN.history
    pub name: String,

    /// Where to write it (%p), relative to the data directory
    pub destination: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct WalArchiveArgs {
    /// Repository whose `wal/` is the archive
    #[arg(long, env = "PITR_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// WAL archive directory
    #[arg(long, value_name = "DIR")]
    pub wal_archive: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub repo: WalArchiveArgs,

    /// How to compress the archived copy
    #[arg(long, value_enum, default_value_t = PushCompression::Zstd)]
    pub compress: PushCompression,

    /// Compression level: zstd 1-22, gzip 1-9 (default 1 for both: cheapest on CPU for WAL); lz4 has none
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,

    /// The file to archive (%p): a WAL segment, `NNNNNNNN.history`, a backup history
    /// (`.backup`) or a `.partial` file
    pub path: PathBuf,
}

/// Compressions `pitr wal-push` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PushCompression {
    /// `.zst`: small and fast (the default)
    Zstd,
    /// `.lz4`: fastest, larger files
    Lz4,
    /// `.gz`: readable everywhere, slowest
    Gzip,
    /// No suffix: a plain copy, like `cp`
    None,
}

impl PushCompression {
    pub fn compression(self) -> crate::compression::Compression {
        use crate::compression::Compression;
        match self {
            PushCompression::Zstd => Compression::Zstd,
            PushCompression::Lz4 => Compression::Lz4,
            PushCompression::Gzip => Compression::Gzip,
            PushCompression::None => Compression::None,
        }
    }
}
