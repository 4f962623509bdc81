//! The `pitr` binary: parse arguments, run the command, map failures to
//! exit codes (documented in the README).

use std::process::ExitCode;

use clap::Parser;

use pitr::cli::{Cli, Command};
use pitr::commands;
use pitr::error::{Failure, FailureKind};
use pitr::progress::Reporter;

fn main() -> ExitCode {
    keep_large_buffers_off_the_heap();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are not errors. `pitr check` is a
            // monitoring plugin: a bad command line is UNKNOWN (3) there,
            // not CRITICAL.
            let code = match (error.use_stderr(), invoked_as_check()) {
                (false, _) => 0,
                (true, true) => 3,
                (true, false) => 2,
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    // wal-fetch runs inside PostgreSQL with its own exit-code contract.
    if let Command::WalFetch(args) = &cli.command {
        return ExitCode::from(commands::wal_fetch::run(args));
    }
    // So does wal-push, as the archive_command.
    if let Command::WalPush(args) = &cli.command {
        return ExitCode::from(commands::wal_push::run(args));
    }
    // So does check, as a monitoring plugin (Nagios exit codes).
    if let Command::Check(args) = &cli.command {
        let reporter = Reporter::new(cli.quiet).with_verbose(cli.verbose);
        return ExitCode::from(commands::check::run(args, cli.json, &reporter));
    }
    pitr::interrupt::install();
    if matches!(
        cli.command,
        Command::Plan(_)
            | Command::List(_)
            | Command::Events(_)
            | Command::Verify(_)
            | Command::Generate(_)
    ) {
        pitr::interrupt::quiet_on_closed_output();
    }
    let reporter = Reporter::new(cli.quiet).with_verbose(cli.verbose);
    let result = match &cli.command {
        Command::Restore(args) => commands::restore::run(args, cli.json, &reporter),
        Command::Init(args) => commands::init::run(args, cli.json, &reporter),
        Command::Backup(args) => commands::backup::run(args, cli.json, &reporter),
        Command::Expire(args) => commands::expire::run(args, cli.json, &reporter),
        Command::Generate(args) => commands::generate::run(args),
        Command::Plan(args) => commands::plan::run(args, cli.json, &reporter),
        Command::List(args) => commands::list::run(args, cli.json, &reporter),
        Command::Events(args) => commands::events::run(args, cli.json, &reporter),
        Command::Verify(args) => commands::verify::run(args, cli.json, &reporter),
        Command::Drill(args) => commands::drill::run(args, cli.json, &reporter),
        Command::Extract(args) => commands::extract::run(args, cli.json, &reporter),
        Command::WalFetch(_) | Command::WalPush(_) | Command::Check(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure);
            ExitCode::from(failure.kind.exit_code())
        }
    }
}

/// True when the subcommand on the command line is `check`: the first
/// word that is not an option (the global options take no value).
fn invoked_as_check() -> bool {
    std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .is_some_and(|command| command == "check")
}

fn report(failure: &Failure) {
    let label = match failure.kind {
        FailureKind::Interrupted => "interrupted",
        _ => "error",
    };
    eprintln!("pitr: {label}: {:#}", failure.error);
    if let Some(hint) = &failure.hint {
        eprintln!("hint: {hint}");
    }
}

/// Large buffers (16 MiB ranged reads, 8 MiB upload parts, decompression
/// windows) are mapped and unmapped on their own, never kept in the heap.
/// glibc otherwise raises its mmap threshold to the size of every large
/// block freed, after which such blocks come from the heap and stay
/// resident: a restore from an object store grew with the WAL it read (51
/// MB at pgbench scale 20, 69 MB at 50, 103 MB at 100); with the threshold
/// fixed, 53 MB at scale 50 and 85 MB at 100 (bench/object_restore_rss.sh),
/// the rest of that growth being the ranged GETs in flight, now bounded
/// (`repo::store::object::CHUNK_SIZE`).
fn keep_large_buffers_off_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter, and runs before
    // any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
