//! `pitr generate`: shell completions and man pages from the clap
//! definitions, so they can never disagree with `--help` (`make completions`
//! and `make man` call this). Hidden from `--help`: it is for packagers.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Generate, GenerateArgs};
use crate::error::{Failure, FailureKind, OrFail};
use crate::repo::store::posix::Posix;
use crate::repo::store::{StoreRead, StoreWrite, WriteError};

pub fn run(args: &GenerateArgs) -> Result<(), Failure> {
    match &args.what {
        Generate::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "pitr", &mut std::io::stdout());
            Ok(())
        }
        Generate::Man { dir } => write_man_pages(dir).or_fail(FailureKind::Internal),
    }
}

/// `pitr.1`, then `pitr-<command>.1` for every visible subcommand. The
/// pages go to a local directory the user names, not the repository: a
/// posix store of its own (created where missing), so each page is
/// replaced whole.
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    let pages_dir = Posix::new(dir);
    let mut command = Cli::command();
    // Building propagates the global options (--json, --quiet, --verbose)
    // into every subcommand, so each page lists them.
    command.build();
    let mut pages = vec![("pitr".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("pitr-{}", sub.get_name());
        // The page is titled `pitr-<command>`; its synopsis reads
        // `pitr <command> ...`, as it is typed.
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("pitr {}", sub.get_name()));
        pages.push((name, sub));
    }
    for (name, page) in pages {
        let key = format!("{name}.1");
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut bytes)
            .with_context(|| format!("cannot render the man page `{name}`"))?;
        pages_dir
            .write_stream(&key, &mut |out| out.write_all(&bytes))
            .map_err(|error| match error {
                WriteError::Write(error) => anyhow::Error::new(error),
                WriteError::Other(error) => error,
            })
            .with_context(|| format!("cannot write `{}`", pages_dir.describe(&key)))?;
    }
    Ok(())
}
