//! `pitr init`: create the repository layout, print the postgresql.conf
//! lines that archive into it and, with `--pgdata`, say what the cluster
//! still lacks.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::InitArgs;
use crate::error::{Failure, FailureKind, OrFail};
use crate::postgres::archiving::{archive_command, check, conf_lines, render_conf, Severity};
use crate::postgres::cluster::read_settings;
use crate::postgres::os_user::OsUser;
use crate::progress::Reporter;
use crate::repo::absolute;
use crate::repo::writer::{create_layout, DIR_MODE};

pub fn run(args: &InitArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let repo = absolute(&args.repo).or_fail(FailureKind::Usage)?;
    let owner = OsUser::for_server(&args.os_user).or_fail(FailureKind::Usage)?;
    let layout = create_layout(&repo, &owner).map_err(|error| {
        Failure::new(FailureKind::Usage, error)
            .with_hint("pass --repo with a new or empty directory, or an existing repository")
    })?;
    let created: Vec<&Path> = layout
        .iter()
        .filter(|entry| entry.created)
        .map(|entry| entry.path.as_path())
        .collect();
    if created.is_empty() {
        reporter.step(format!(
            "repository {} already exists (base/ and wal/)",
            repo.display()
        ));
    } else {
        reporter.step(format!(
            "created repository {}: base/ for backups, wal/ for the WAL archive (mode {DIR_MODE:04o}{})",
            repo.display(),
            if owner.switch {
                format!(", owned by {}", owner.name)
            } else {
                String::new()
            }
        ));
    }

    let pitr = pitr_program();
    let lines = conf_lines(&pitr, &repo);
    let conf = render_conf(&lines);
    let expected = archive_command(&pitr, &repo);
    if owner.switch {
        for problem in access_problems(&owner, &pitr, &repo) {
            reporter.warn(problem);
        }
    }

    let cluster = match &args.pgdata {
        Some(pgdata) => {
            let pgdata = absolute(pgdata).or_fail(FailureKind::Usage)?;
            let settings = read_settings(&pgdata, &owner, args.bin_dir.as_deref())
                .map_err(|error| {
                    Failure::new(FailureKind::NotArchiving, error).with_hint(
                        "pitr connects with psql as the PostgreSQL OS user over the server's socket; set PGUSER, PGPASSWORD or PGPASSFILE for a role that may read pg_settings",
                    )
                })?;
            let findings = check(&settings.settings, &repo, &expected);
            Some((pgdata, settings, findings))
        }
        None => None,
    };

    if json {
        println!(
            "{:#}",
            json!({
                "repo": repo,
                "created": created,
                "postgresql_conf": conf,
                "settings": lines.iter().map(|(name, value)| (name.to_string(), json!(value))).collect::<serde_json::Map<_, _>>(),
                "cluster": cluster.as_ref().map(|(pgdata, settings, findings)| json!({
                    "pgdata": pgdata,
                    "source": settings.source,
                    "running": settings.running,
                    "settings": settings.settings,
                    "findings": findings,
                })),
            })
        );
    } else {
        reporter.step(
            "add these lines to postgresql.conf (or a file in its conf.d/), then restart PostgreSQL:",
        );
        print!(
            "# pitr: archive WAL into {} (written by pitr init)\n{conf}",
            repo.display()
        );
    }

    let Some((pgdata, settings, findings)) = cluster else {
        return Ok(());
    };
    reporter.detail(format!("read the settings from {}", settings.source));
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    for finding in &findings {
        match finding.severity {
            Severity::Problem => eprintln!("problem: {}", finding.message),
            Severity::Note => reporter.step(format!("note: {}", finding.message)),
        }
    }
    if problems > 0 {
        return Err(Failure::msg(
            FailureKind::NotArchiving,
            format!(
                "the cluster in `{}` does not archive into `{}`: {problems} setting{} to change (listed above)",
                pgdata.display(),
                repo.display(),
                if problems == 1 { "" } else { "s" }
            ),
        )
        .with_hint(
            "add the lines printed above to postgresql.conf, restart PostgreSQL, then run this command again",
        ));
    }
    reporter.step(format!(
        "the cluster in {} archives into {} (read from {})",
        pgdata.display(),
        repo.display(),
        settings.source
    ));
    Ok(())
}

/// The absolute path of this very binary, which is what the server should
/// run: the server's PATH is not the user's. `pitr` (found on the server's
/// PATH) only when the running binary cannot be located. (Our own binary
/// on the local file system, not the repository.)
#[allow(clippy::disallowed_methods)]
fn pitr_program() -> PathBuf {
    std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .unwrap_or_else(|_| PathBuf::from("pitr"))
}

/// PostgreSQL runs archive_command as its OS user: it must be able to run
/// pitr and write the archive, or archiving fails (and WAL piles up in
/// pg_wal) with nothing but a line in the server log.
fn access_problems(owner: &OsUser, pitr: &Path, repo: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let runs = owner
        .command(pitr)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        problems.push(format!(
            "OS user `{}` cannot run `{}`, which PostgreSQL will call as its archive_command; install pitr where every user can run it (for example /usr/local/bin)",
            owner.name,
            pitr.display()
        ));
    }
    let wal = repo.join("wal");
    let writable = owner
        .command(Path::new("/bin/sh"))
        .args(["-c", "test -w \"$1\" && test -x \"$1\"", "sh"])
        .arg(&wal)
        .status()
        .is_ok_and(|status| status.success());
    if !writable {
        problems.push(format!(
            "OS user `{}` cannot write the WAL archive `{}`, which its archive_command writes; give it the directory (chown {} ...)",
            owner.name,
            wal.display(),
            owner.name
        ));
    }
    problems
}
