//! `pitr generate`: shell completions and man pages from the clap
//! definitions, so they can never disagree with `--help` (`make completions`
//! and `make man` call this). Hidden from `--help`: it is for packagers.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Generate, GenerateArgs};
use crate::error::{Failure, FailureKind, OrFail};

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
/// pages go to a local directory the user names, not the repository.
#[allow(clippy::disallowed_methods)]
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
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
        let path = dir.join(format!("{name}.1"));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut bytes)
            .with_context(|| format!("cannot render the man page `{name}`"))?;
        std::fs::write(&path, bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}
