//! Command-line definitions (clap). Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::target::Action;

#[derive(Debug, Parser)]
#[command(
    name = "pitr",
    version = env!("PITR_LONG_VERSION"),
    about = "Point-in-time recovery for PostgreSQL: pick the backup, prove the WAL, restore to the moment.",
    after_help = "Examples:\n  pitr init --repo /backups --pgdata /var/lib/postgresql/15/main\n  pitr backup --repo /backups\n  pitr list --repo /backups\n  pitr plan --repo /backups --to '5 minutes ago'\n  pitr restore --repo /backups --to '2026-11-23 14:05:00' --pgdata /srv/restore\n  pitr expire --repo /backups --keep 7\n\nEnvironment: PITR_REPO stands in for --repo; libpq's PG* variables (PGHOST, PGPORT, PGUSER,\nPGPASSWORD, PGPASSFILE, ...) apply wherever pitr connects to PostgreSQL; NO_COLOR turns off colour."
)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Only print errors
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Show more detail on stderr: the commands pitr runs, each file it removes
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore a data directory to a point in time and bring PostgreSQL there
    #[command(
        after_help = "Examples:\n  pitr restore --repo /backups --to '5 minutes ago' --pgdata /srv/restore\n  pitr restore --repo /backups --to name:before_migration --pgdata /srv/restore --action pause\n  pitr restore --backups /pg/base --wal-archive /pg/wal --to latest --pgdata /srv/pg --port 5433\n\nExit status:\n  0    restored: PostgreSQL reached the target and is in the state --action asked for\n  1    internal error\n  2    bad usage: an option or the target cannot be understood (nothing written)\n  3    plan refused: no backup reaches the target, WAL is missing or damaged, or the target\n       is outside the recoverable window (nothing written)\n  4    staging refused or failed: --pgdata is not empty (without --force) or cannot be\n       written, the server programs do not fit the backup (nothing left behind)\n  5    recovery failed: PostgreSQL did not reach the target (the data directory and its\n       log pitr-recovery.log are kept)\n  130  interrupted by Ctrl-C or SIGTERM (PostgreSQL stopped; the data directory stays)"
    )]
    Restore(RestoreArgs),
    /// Show what a restore to a target would do, without doing it
    #[command(
        after_help = "Examples:\n  pitr plan --repo /backups --to '2h ago'\n  pitr plan --repo /backups --to lsn:0/3000060 --json\n\nExit status:\n  0  the plan is shown: a restore to this target can be made\n  1  internal error\n  2  bad usage: an option or the target cannot be understood\n  3  refused: no backup reaches the target, WAL is missing or damaged, or the target is\n     outside the recoverable window (the message says which, with the window)"
    )]
    Plan(PlanArgs),
    /// List backups and the recoverable window (--drills: the drills' reports)
    #[command(
        after_help = "Examples:\n  pitr list --repo /backups\n  pitr list --backups /pg/base --wal-archive /pg/wal --json\n  pitr list --repo /backups --drills"
    )]
    List(ListArgs),
    /// Create a repository and print the postgresql.conf lines that archive into it
    #[command(
        after_help = "The settings are printed on stdout, or written with --conf-file into a file of their own in\nPostgreSQL's conf.d/ (rewritten, never appended to, so running init again adds nothing);\nthen restart PostgreSQL. Appended with `>>` to a file that already holds them, they are not\nprinted again. With --pgdata, pitr also reads the cluster's settings (over its socket when\nit runs) and, when it runs, whether archiving works (pg_stat_archiver: failed attempts, the\nlast failure, WAL waiting in pg_wal); it exits with status 8 if the cluster does not archive\ninto the repository, and prints no lines when they are already in effect.\n\nExamples:\n  sudo pitr init --repo /backups --conf-file /etc/postgresql/15/main/conf.d/pitr.conf\n  pitr init --repo /backups | sudo tee /etc/postgresql/15/main/conf.d/pitr.conf\n  sudo pitr init --repo /backups --pgdata /var/lib/postgresql/15/main"
    )]
    Init(InitArgs),
    /// Take a base backup with pg_basebackup into the repository
    #[command(
        after_help = "The backup is written to a hidden directory under base/ and renamed to base/<id> (the UTC\nstart time, such as 20261124T031500Z) only when pg_basebackup succeeded; the command then\nwaits until the backup's WAL is archived, so that it can be restored when pitr returns.\nInto an object store (s3://, az://, gs://) the backup is streamed from pg_basebackup's stdout\n(-X none: its WAL is in the archive, which the backup waits for) straight into multipart uploads,\nwith no local copy, and appears only once complete. A cluster with several tablespaces,\n--seekable, --server-compression or --wal-method stream is staged in a local temporary\ndirectory ($TMPDIR) first, as is every backup into a directory repository.\nThe server is reached through libpq's PG* environment variables or -d.\n\nExit status: 6 pg_basebackup failed (nothing was left in base/), 7 the backup is in place\nbut its WAL did not reach the archive within --archive-wait.\n\nExamples:\n  pitr backup --repo /backups\n  PGHOST=/run/postgresql PGUSER=postgres pitr backup --repo /backups --fast\n  pitr backup --repo /backups -d 'host=db1 user=replicator' --compress lz4 --server-compression\n  # crontab of the postgres user: a backup every night at 03:15\n  15 3 * * * /usr/local/bin/pitr backup --repo /backups --quiet && /usr/local/bin/pitr expire --repo /backups --keep-within 14d --quiet"
    )]
    Backup(BackupArgs),
    /// Remove old backups and the WAL that no kept backup needs
    #[command(
        after_help = "Kept: the N newest backups (--keep), and with --keep-within every backup from the window plus\nthe newest one before it, so any moment of the window stays restorable. WAL from the oldest\nkept backup's start is kept on every timeline a kept backup can follow; timeline history files\nalways stay. Backups go first (renamed to a hidden name, then deleted), then WAL, oldest first.\n\nExamples:\n  pitr expire --repo /backups --keep 7 --dry-run\n  pitr expire --repo /backups --keep-within 14d\n  pitr expire --repo /backups --keep 3 --keep-within 36h --verbose"
    )]
    Expire(ExpireArgs),
    /// Write shell completions or man pages (for packagers)
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Show commits, aborts, restore points and dropped relations in the WAL
    #[command(
        after_help = "Examples:\n  pitr events --repo /backups --from '1h ago' --kind drop\n  pitr events --repo /backups --from '2026-11-23 14:00' --until '2026-11-23 14:10' --json\n  pitr events --repo /backups --from '1d ago' --per-minute\n  pitr events --repo /backups --min-size 10MB --kind commit,abort\n\nEach transaction shows the WAL it wrote (its records' total length) and the relation files\nits records changed (base/<database>/<relfilenode>; files numbered below 16384 are initdb's\nsystem catalogs, counted apart). What happened before the oldest backup started is not shown\nunless --all: no restore can reach it, and it holds initdb's own transactions.\n\nA transaction that dropped relations shows how to undo it:\n  pitr restore --to xid:N --exclusive"
    )]
    Events(EventsArgs),
    /// Bring back one table, schema or database from a point in time, into a file or a live cluster
    #[command(
        after_help = "The backup is restored into a scratch copy (a temporary directory, or a new one inside --scratch,\non a free port, archiving off, run as the server's OS user), the selection is dumped with that\nPostgreSQL major's own pg_dump and written to --into-file or loaded into --into; the copy is then\nstopped and removed (--keep keeps it). Nothing that exists in the live cluster is replaced or\ntruncated: a table, schema or database that exists there is refused unless --as gives a new name.\n\nWith --before-drop (or --before-truncate) the moment is found in the WAL: the table's name is\nmapped to its file in a copy restored at --from (default: the oldest backup's consistent point),\nthe file is followed through rewrites, and the rows are extracted as of just before the\ntransaction that dropped (or truncated) it. Several such transactions: they are listed and\n--pick N chooses one.\n\nExamples:\n  pitr extract --repo /backups --table public.orders --before-drop --into 'dbname=shop'\n  pitr extract --repo /backups --table public.orders --database shop --to '10 minutes ago' --into 'dbname=shop' --as orders_restored\n  pitr extract --repo /backups --database shop --to '2026-11-23 14:05' --into-file shop.dump\n  pitr extract --repo /backups --schema billing --database shop --to xid:1234 --exclusive --into-file billing.sql --format plain\n\nExit status: 0 extracted; 2 bad usage, an unknown table, or a name that exists in the live cluster\n(nothing written); 3 plan refused; 4 the scratch copy could not be made; 5 its recovery failed;\n11 the dump or the load failed (the live cluster is unchanged: the load is one transaction)."
    )]
    Extract(ExtractArgs),
    /// Check backups against their manifests and every WAL segment of the archive
    #[command(
        after_help = "Examples:\n  pitr verify --repo /backups\n  pitr verify --repo /backups --backup 20261124T031500Z --json\n\nExit status 9 when any problem is found."
    )]
    Verify(VerifyArgs),
    /// Restore into a scratch copy, check it, keep the evidence, clean up
    #[command(
        after_help = "The drill restores (as `pitr restore` does, with the same plan) into a new directory under\n--scratch or the temporary directory, on a free port, with archiving off; checks that PostgreSQL\nstopped exactly at the planned point and promoted; runs pg_amcheck on every database and the\n--check queries; then stops the copy and removes it (unless --keep). The report (RTO per phase,\nthe data's age, every check) is stored as drills/<time>.json in the repository, beside a failed\ndrill's server log, and printed with --json.\n\nA check file holds one query per line; `-- expect: VALUE` at the end of a line gives what psql\nmust print (columns joined by `|`), otherwise the query must return true:\n  SELECT count(*) > 0 FROM orders\n  SELECT count(*) FROM pg_database -- expect: 4\n\nExit status:\n  0   every step passed\n  1   internal error (or the report could not be stored)\n  2   bad usage (nothing was run)\n  10  the drill failed: the report names the step (plan, staging, replay, stop point, amcheck,\n      checks) and keeps the server log\n\nExamples:\n  pitr drill --repo /backups\n  pitr drill --repo /backups --seed 42 --check 'SELECT count(*) > 0 FROM orders'\n  pitr drill --repo /backups --to latest --check-file /etc/pitr/drill.sql --json\n  # crontab of root: a drill every night at 04:30\n  30 4 * * * /usr/local/bin/pitr drill --repo /backups --quiet --check-file /etc/pitr/drill.sql"
    )]
    Drill(DrillArgs),
    /// Monitoring: archive and backup age, gaps, archiver failures, last drill
    #[command(
        after_help = "Prints one status line (Nagios plugin style, with performance data after `|`) and the\nfindings that are not OK; --json prints the figures, --prometheus writes them in the Prometheus\ntext format (for the node exporter's textfile collector). With --pgdata, or when PGHOST, PGPORT\nor PGSERVICE is set, pitr also reads pg_stat_archiver of the live cluster.\n\nThresholds are `CRIT` or `WARN,CRIT` durations (`15m,1h`); the newest WAL's age is measured from\nwhen the newest segment was archived, so a quiet server needs archive_timeout below the WAL\nthreshold.\n\nExit status (Nagios): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check itself could not run)\n\nExamples:\n  pitr check --repo /backups\n  pitr check --repo /backups --pgdata /var/lib/postgresql/15/main --max-drill-age 8d,15d\n  pitr check --repo /backups --prometheus > /var/lib/node_exporter/pitr.prom.tmp && mv /var/lib/node_exporter/pitr.prom.tmp /var/lib/node_exporter/pitr.prom"
    )]
    Check(CheckArgs),
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
    /// Repository: a directory with `base/<backup-id>/` and `wal/`, or the same layout in object
    /// storage: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX, gs://BUCKET/PREFIX (default: `repository`
    /// in /etc/pitr/pitr.toml or PITR_CONFIG)
    #[arg(long, env = "PITR_REPO", value_name = "DIR|URL")]
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

    /// Also plan a delta restore over --pgdata: how many files and bytes it would compare, rewrite and remove
    #[arg(long, requires = "pgdata")]
    pub delta: bool,

    /// The existing data directory a delta restore would rewrite (with --delta)
    #[arg(long, value_name = "DIR", requires = "delta")]
    pub pgdata: Option<PathBuf>,

    /// Restore the tablespace recorded at OLD into NEW instead (with --delta; as for restore)
    #[arg(
        long = "tablespace-mapping",
        value_name = "OLD=NEW",
        requires = "delta"
    )]
    pub tablespace_mappings: Vec<String>,
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

    /// Replace a non-empty --pgdata: the old directory is moved aside, never deleted (asks on a terminal; --yes in scripts)
    #[arg(long)]
    pub force: bool,

    /// Rewrite the existing, stopped data directory --pgdata in place, writing only the files and
    /// pages that differ from the backup and removing what it does not hold (tar backups)
    #[arg(long, conflicts_with = "force")]
    pub delta: bool,

    /// Recover a lost primary into its own data directory: the stopped primary's --pgdata is moved
    /// aside, the backup's archiving is kept, and after promotion the server is stopped with its
    /// own configuration, ready for its service manager (--keep-running to leave it running)
    #[arg(long, conflicts_with_all = ["action"])]
    pub in_place: bool,

    /// With --in-place: leave the recovered server running instead of stopping it
    #[arg(long, requires = "in_place")]
    pub keep_running: bool,

    /// Do not ask before moving a non-empty --pgdata aside (--force, --in-place)
    #[arg(long, short = 'y')]
    pub yes: bool,

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

    /// Workers that stage a seekable backup (`pitr backup --seekable`) in parallel (default: one per core)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,

    /// Only this database is needed (`pitr extract`): the other databases'
    /// files are staged as sparse files when replay can pass over them
    /// (a new scratch copy: never with --delta)
    #[arg(long, value_name = "NAME", hide = true, conflicts_with = "delta")]
    pub only_database: Option<String>,

    /// A scratch copy, thrown away after one use (`pitr extract`): nothing
    /// is flushed to disk for it (the server runs with fsync off), and
    /// after promotion it keeps running as it recovered, with no restart
    /// into the backup's own configuration
    #[arg(long, hide = true, conflicts_with_all = ["delta", "in_place", "keep_archiving"])]
    pub scratch_copy: bool,

    /// Show the plan and stop (same as `pitr plan`)
    #[arg(long)]
    pub dry_run: bool,
}

/// The dump's format for `--into-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// pg_dump's custom format, for pg_restore
    Custom,
    /// SQL, for psql
    Plain,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).multiple(true).args(["tables", "schema", "database"])))]
#[command(group(clap::ArgGroup::new("moment").required(true).args(["to", "before_drop", "before_truncate"])))]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["into_file", "into"])))]
pub struct ExtractArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// A table to bring back, schema-qualified (repeatable)
    #[arg(long = "table", value_name = "SCHEMA.NAME", conflicts_with = "schema")]
    pub tables: Vec<String>,

    /// A whole schema to bring back
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,

    /// The database holding --table or --schema (default `postgres`); alone, the whole database
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,

    /// The moment: any `pitr restore --to` form
    #[arg(long = "to", value_name = "TARGET", allow_hyphen_values = true)]
    pub to: Option<String>,

    /// With --to: stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,

    /// Find the transaction that dropped the --table in the WAL and extract as of just before it
    #[arg(long)]
    pub before_drop: bool,

    /// Find the TRUNCATE of the --table in the WAL and extract as of just before it
    #[arg(long)]
    pub before_truncate: bool,

    /// With --before-drop/--before-truncate: where the table still existed (any --to form;
    /// default: the oldest backup's consistent point)
    #[arg(long, value_name = "TARGET", allow_hyphen_values = true)]
    pub from: Option<String>,

    /// With --before-drop/--before-truncate: look no further than this (any --to form)
    #[arg(long, value_name = "TARGET", allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Which of several transactions found (as listed, from 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub pick: Option<u32>,

    /// Write the dump to this file (it must not exist)
    #[arg(long, value_name = "FILE")]
    pub into_file: Option<PathBuf>,

    /// Format of --into-file (default: custom)
    #[arg(long, value_enum)]
    pub format: Option<DumpFormat>,

    /// Load into this live cluster (a libpq connection string; without a value, the PG* variables)
    #[arg(long, value_name = "CONNINFO", num_args = 0..=1, default_missing_value = "")]
    pub into: Option<String>,

    /// Bring the one table, schema or database back under this name instead
    #[arg(long = "as", value_name = "NEW_NAME")]
    pub rename: Option<String>,

    /// Keep the scratch copy (stopped) instead of removing it
    #[arg(long)]
    pub keep: bool,

    /// Make the scratch copy in a new directory inside DIR (default: the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,

    /// Use this backup (its directory name) instead of choosing one
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,

    /// Timeline to follow: `latest`, `current` or a number
    #[arg(long, value_name = "TIMELINE", default_value = "latest")]
    pub timeline: String,

    /// Directory with PostgreSQL's programs (default: /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that runs the scratch copy's server and pg_dump when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// List the drills' reports (drills/ in the repository) instead of the backups
    #[arg(long)]
    pub drills: bool,

    /// Directory of the drills' reports for layouts given with --backups and --wal-archive
    #[arg(long, value_name = "DIR")]
    pub drill_reports: Option<PathBuf>,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Target, any `pitr restore --to` form (default: a random instant in the recoverable window of the newest timeline)
    #[arg(long = "to", value_name = "TARGET", allow_hyphen_values = true)]
    pub to: Option<String>,

    /// Seed of the random target, to drill the same instant again (the report gives the one used)
    #[arg(long, value_name = "N", conflicts_with = "to")]
    pub seed: Option<u64>,

    /// Directory in which the scratch copy is made (a new subdirectory; default: the temporary directory)
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,

    /// Leave the copy (stopped) in the scratch directory instead of removing it
    #[arg(long)]
    pub keep: bool,

    /// Run pg_amcheck on every database of the copy (when it is installed)
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::On)]
    pub amcheck: Switch,

    /// SQL that must return true in the copy (repeatable)
    #[arg(long = "check", value_name = "SQL")]
    pub checks: Vec<String>,

    /// File of checks: one query per line, `-- expect: VALUE` at its end for another result than true (repeatable)
    #[arg(long = "check-file", value_name = "FILE")]
    pub check_files: Vec<PathBuf>,

    /// Database the checks run in
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub dbname: String,

    /// Directory of the drills' reports for layouts given with --backups and --wal-archive
    #[arg(long, value_name = "DIR")]
    pub drill_reports: Option<PathBuf>,

    /// Directory with PostgreSQL's server programs (default: /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that runs PostgreSQL when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Data directory of the live cluster whose pg_stat_archiver to read (or PGHOST/PGPORT/PGSERVICE)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// Age of the newest archived WAL beyond which to warn, and to be critical: `CRIT` or `WARN,CRIT`
    #[arg(long, value_name = "AGE", default_value = "15m,1h")]
    pub max_wal_age: String,

    /// Age of the newest backup beyond which to warn, and to be critical: `CRIT` or `WARN,CRIT`
    #[arg(long, value_name = "AGE", default_value = "26h,50h")]
    pub max_backup_age: String,

    /// Age of the last drill beyond which to warn, and to be critical (default: the age is not judged)
    #[arg(long, value_name = "AGE")]
    pub max_drill_age: Option<String>,

    /// Write the figures in the Prometheus text exposition format on stdout
    #[arg(long)]
    pub prometheus: bool,

    /// Directory of the drills' reports for layouts given with --backups and --wal-archive
    #[arg(long, value_name = "DIR")]
    pub drill_reports: Option<PathBuf>,

    /// Directory with psql for the live cluster (default: /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that runs psql when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
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

    /// Only these kinds (repeatable, or a comma list): drop, commit, abort, restore-point
    #[arg(long, value_name = "KIND", value_enum, value_delimiter = ',')]
    pub kind: Vec<EventKindFilter>,

    /// Only transactions that wrote at least this much WAL (the total length of their records), such as `1MB`
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub min_size: Option<u64>,

    /// One line per minute (UTC): commits, aborts, drops, restore points and WAL written
    #[arg(long)]
    pub per_minute: bool,

    /// Also what happened before the oldest backup started (initdb's transactions among it), which no restore can reach
    #[arg(long)]
    pub all: bool,
}

/// What `pitr events --kind` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventKindFilter {
    /// Commits that removed relation files: DROP TABLE/INDEX, TRUNCATE, table rewrites
    Drop,
    /// Every commit
    Commit,
    /// Every abort (rollback)
    Abort,
    /// Restore points made with pg_create_restore_point()
    RestorePoint,
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    crate::size::parse_size(text).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository to create: `DIR/base` for backups, `DIR/wal` for the WAL archive; or a prefix in
    /// object storage (s3://BUCKET/PREFIX, az://CONTAINER/PREFIX, gs://BUCKET/PREFIX)
    #[arg(long, env = "PITR_REPO", value_name = "DIR|URL")]
    pub repo: PathBuf,

    /// Also check the settings of the cluster in this data directory, and whether its archiving works
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// Write the settings into this file (such as <config dir>/conf.d/pitr.conf), replacing it, instead of printing them
    #[arg(long, value_name = "FILE")]
    pub conf_file: Option<PathBuf>,

    /// Directory with PostgreSQL's programs for --pgdata (default: /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that owns the repository and runs PostgreSQL's programs when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
}

/// Compression of the backup's tar files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackupCompression {
    /// `.tar.zst`: small and fast (PostgreSQL 15+)
    Zstd,
    /// `.tar.lz4`: fastest, larger (PostgreSQL 15+)
    Lz4,
    /// `.tar.gz`: slow, readable everywhere
    Gzip,
    /// `.tar`
    None,
}

/// How WAL gets into the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackupWalMethod {
    /// Stream WAL over a second connection while copying (needs max_wal_senders >= 2)
    Stream,
    /// Fetch WAL at the end (one connection; fails if the server recycled it meanwhile)
    Fetch,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// libpq connection string (default: the PG* environment variables)
    #[arg(long, short = 'd', value_name = "CONNSTR")]
    pub dbname: Option<String>,

    /// Compression of the tar files
    #[arg(long, value_enum, default_value_t = BackupCompression::Zstd)]
    pub compress: BackupCompression,

    /// Compress on the server instead of in pg_basebackup (less network traffic, more server CPU)
    #[arg(long)]
    pub server_compression: bool,

    /// Write a seekable backup: base.tar.zst as independent zstd frames (still read by `tar --zstd` and `zstd -d`) with an index of its files, frames and page checksums, for parallel and delta restores
    #[arg(long, conflicts_with = "server_compression")]
    pub seekable: bool,

    /// How WAL gets into the backup, so that it restores on its own (default: stream; a backup streamed into an object store carries none, its WAL is in the archive the backup waits for, unless fetch is given)
    #[arg(long, value_enum)]
    pub wal_method: Option<BackupWalMethod>,

    /// Start at once with an immediate checkpoint (pg_basebackup -c fast) instead of a spread one
    #[arg(long)]
    pub fast: bool,

    /// How long to wait for the backup's WAL to reach the archive (`0`: do not wait)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_arg)]
    pub archive_wait: std::time::Duration,

    /// Directory with pg_basebackup (default: the newest /usr/lib/postgresql/<major>/bin, then PATH)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OS user that runs pg_basebackup and owns the backup when pitr runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub os_user: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).multiple(true).args(["keep", "keep_within", "remove_unfinished"])))]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Keep the N newest backups
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,

    /// Keep what restores to any moment of this window: `7d`, `36h`, `2w`, `1d12h`
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub keep_within: Option<std::time::Duration>,

    /// Delete the unfinished backup NAME (as the warning about it names it),
    /// once you know no backup is being written there
    #[arg(long, value_name = "NAME")]
    pub remove_unfinished: Vec<String>,

    /// Show what would be removed, and its size, without removing anything
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_duration(text).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// A completion script on stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages (pitr.1 and pitr-<command>.1) into a directory
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
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
    /// Repository whose `wal/` is the archive: a directory or an s3://, az://, gs:// URL
    /// (default: `repository` in /etc/pitr/pitr.toml or PITR_CONFIG)
    #[arg(long, env = "PITR_REPO", value_name = "DIR|URL")]
    pub repo: Option<PathBuf>,

    /// WAL archive: a directory or an s3://, az://, gs:// URL
    #[arg(long, value_name = "DIR|URL")]
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

    /// Also push up to N later segments the server has marked ready, in parallel, so that its
    /// next requests are answered at once (each checked against a local record of what was
    /// stored); 0 turns it off (default: `push_ahead` in the configuration file, else 8)
    #[arg(long, value_name = "N", env = "PITR_PUSH_AHEAD",
          value_parser = clap::value_parser!(u16).range(0..=crate::config::MAX_PUSH_AHEAD as i64))]
    pub push_ahead: Option<u16>,

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pitr").chain(args.iter().copied()))
    }

    #[test]
    fn push_ahead_is_bounded() {
        let push_ahead = |n: &str| match parse(&["wal-push", "--push-ahead", n, "x"]) {
            Ok(Cli {
                command: Command::WalPush(args),
                ..
            }) => Ok(args.push_ahead),
            Ok(_) => panic!("not wal-push"),
            Err(error) => Err(error.to_string()),
        };
        assert_eq!(push_ahead("0"), Ok(Some(0)));
        assert_eq!(push_ahead("64"), Ok(Some(64)));
        assert!(push_ahead("65").unwrap_err().contains("65"));
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        for command in Cli::command().get_subcommands() {
            if command.is_hide_set() {
                continue;
            }
            let help = command
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example"),
                "`pitr {}` has no examples",
                command.get_name()
            );
        }
    }

    #[test]
    fn expire_needs_a_policy_and_a_positive_keep() {
        {
            let error = parse(&["expire", "--repo", "/r"]).unwrap_err().to_string();
            assert!(
                error.contains("required arguments were not provided"),
                "{error}"
            );
        }
        {
            let error = parse(&["expire", "--repo", "/r", "--keep", "0"])
                .unwrap_err()
                .to_string();
            assert!(error.contains("invalid value '0' for '--keep"), "{error}");
        }
        let cli = parse(&[
            "expire",
            "--repo",
            "/r",
            "--keep",
            "2",
            "--keep-within",
            "1d12h",
        ])
        .unwrap();
        let Command::Expire(args) = cli.command else {
            panic!("not expire")
        };
        assert_eq!(args.keep, Some(2));
        assert_eq!(
            args.keep_within,
            Some(std::time::Duration::from_secs(36 * 3600))
        );
        let error = parse(&["expire", "--repo", "/r", "--keep-within", "7"]).unwrap_err();
        assert!(error.to_string().contains("has no unit"), "{error}");
    }

    #[test]
    fn backup_defaults() {
        let cli = parse(&["backup", "--repo", "/r"]).unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("not backup")
        };
        assert_eq!(args.compress, BackupCompression::Zstd);
        assert_eq!(args.wal_method, None);
        assert_eq!(args.archive_wait, std::time::Duration::from_secs(300));
        assert!(!args.fast && !args.server_compression);
        let cli = parse(&[
            "backup",
            "--repo",
            "/r",
            "-d",
            "host=x",
            "--archive-wait",
            "0",
        ])
        .unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("not backup")
        };
        assert_eq!(args.dbname.as_deref(), Some("host=x"));
        assert_eq!(args.archive_wait, std::time::Duration::ZERO);
    }

    #[test]
    fn extract_needs_a_selection_a_moment_and_a_destination() {
        let extract = |args: &[&str]| {
            parse(&[&["extract", "--repo", "/r"], args].concat()).map(|cli| match cli.command {
                Command::Extract(args) => args,
                _ => panic!("not extract"),
            })
        };
        let args = extract(&["--table", "public.t", "--before-drop", "--into"]).unwrap();
        assert_eq!(
            args.into.as_deref(),
            Some(""),
            "--into alone: the PG* variables"
        );
        assert_eq!(args.format, None);
        let args = extract(&["--database", "shop", "--to", "1h ago", "--into-file", "f"]).unwrap();
        assert_eq!(args.database.as_deref(), Some("shop"));
        // What clap refuses; the rest (--format without --into-file, ...)
        // is refused by the command with its own words.
        for (bad, expected) in [
            (&["--to", "latest", "--into-file", "f"][..], "required"),
            (&["--table", "s.t", "--into-file", "f"], "required"),
            (&["--table", "s.t", "--to", "latest"], "required"),
            (
                &[
                    "--table",
                    "s.t",
                    "--schema",
                    "s",
                    "--to",
                    "latest",
                    "--into-file",
                    "f",
                ],
                "cannot be used with",
            ),
            (
                &[
                    "--table",
                    "s.t",
                    "--to",
                    "latest",
                    "--before-drop",
                    "--into-file",
                    "f",
                ],
                "cannot be used with",
            ),
            (
                &[
                    "--table",
                    "s.t",
                    "--to",
                    "latest",
                    "--into-file",
                    "f",
                    "--into",
                    "x",
                ],
                "cannot be used with",
            ),
            (
                &[
                    "--table",
                    "s.t",
                    "--before-drop",
                    "--pick",
                    "0",
                    "--into",
                    "x",
                ],
                "--pick",
            ),
        ] {
            let error = extract(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
    }

    #[test]
    fn quiet_and_verbose_exclude_each_other() {
        {
            let error = parse(&["list", "--repo", "/r", "-q", "-v"])
                .unwrap_err()
                .to_string();
            assert!(error.contains("cannot be used with"), "{error}");
        }
        assert!(parse(&["list", "--repo", "/r", "-v"]).unwrap().verbose);
    }
}
