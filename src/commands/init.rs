//! `pitr init`: create the repository layout, print the postgresql.conf
//! lines that archive into it and, with `--pgdata`, say what the cluster
//! still lacks.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::InitArgs;
use crate::error::{Failure, FailureKind, OrFail};
use crate::postgres::archiving::{
    archive_command, archiver_summary, check, conf_lines, judge_archiver, render_conf, Severity,
    PRINTED_SETTINGS,
};
use crate::postgres::cluster::{archiver_status, read_settings};
use crate::postgres::commands::this_program;
use crate::postgres::conf_file;
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
            let mut findings = check(&settings.settings, &repo, &expected);
            let archiver = archiver_status(&pgdata, &owner, args.bin_dir.as_deref())
                .map_err(|error| {
                    Failure::new(FailureKind::NotArchiving, error).with_hint(
                        "pitr reads pg_stat_archiver with psql as the PostgreSQL OS user; set PGUSER, PGPASSWORD or PGPASSFILE for a role that may read it",
                    )
                })?;
            if let Some(status) = &archiver {
                findings.extend(judge_archiver(status));
            }
            Some((pgdata, settings, findings, archiver))
        }
        None => None,
    };
    // The lines are only worth adding when the cluster lacks them.
    let in_effect = cluster.as_ref().is_some_and(|(_, _, findings, _)| {
        !findings
            .iter()
            .any(|f| f.severity == Severity::Problem && PRINTED_SETTINGS.contains(&f.setting))
    });
    let block = format!(
        "# pitr: archive WAL into {} (written by pitr init)\n{conf}",
        repo.display()
    );

    if let Some(file) = &args.conf_file {
        write_conf_file(file, &block)?;
        reporter.step(format!(
            "wrote the settings into {} (replaced, so running init again adds nothing); {}",
            file.display(),
            if in_effect {
                "they are already in effect"
            } else {
                "restart PostgreSQL to apply them"
            }
        ));
    }
    if json {
        println!(
            "{:#}",
            json!({
                "repo": repo,
                "created": created,
                "postgresql_conf": conf,
                "conf_file": args.conf_file,
                "settings": lines.iter().map(|(name, value)| (name.to_string(), json!(value))).collect::<serde_json::Map<_, _>>(),
                "settings_in_effect": in_effect,
                "cluster": cluster.as_ref().map(|(pgdata, settings, findings, archiver)| json!({
                    "pgdata": pgdata,
                    "source": settings.source,
                    "running": settings.running,
                    "settings": settings.settings,
                    "archiver": archiver,
                    "findings": findings,
                })),
            })
        );
    } else if args.conf_file.is_some() {
        // Written above.
    } else if in_effect {
        reporter.step("the cluster already has these settings in effect: nothing to add");
    } else if let Some(path) = conf_file::stdout_already_holds(&block) {
        reporter.step(format!(
            "{} already holds these lines: nothing added (use --conf-file to keep them in a file of their own)",
            path.display()
        ));
    } else {
        reporter.step(
            "put these lines into a file of their own in PostgreSQL's conf.d/ (--conf-file FILE writes it), or append them to postgresql.conf, then restart PostgreSQL:",
        );
        print!("{block}");
    }

    let Some((pgdata, settings, findings, archiver)) = cluster else {
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
        let hint = if in_effect {
            "the settings are right but archiving does not work: the server log says why (lines `archive command failed`); fix that, then run this command again"
        } else {
            "add the lines printed above to postgresql.conf (or write them with --conf-file), restart PostgreSQL, then run this command again"
        };
        return Err(Failure::msg(
            FailureKind::NotArchiving,
            format!(
                "the cluster in `{}` does not archive into `{}`: {problems} problem{} (listed above)",
                pgdata.display(),
                repo.display(),
                if problems == 1 { "" } else { "s" }
            ),
        )
        .with_hint(hint));
    }
    reporter.step(format!(
        "the cluster in {} archives into {} (read from {}){}",
        pgdata.display(),
        repo.display(),
        settings.source,
        match &archiver {
            Some(status) => format!("; archiving works: {}", archiver_summary(status)),
            None => "; it is not running, so whether archiving works is not known: run this again once it runs".to_string(),
        }
    ));
    Ok(())
}

/// Writes the settings into `--conf-file` (see [`conf_file::write_whole`]).
fn write_conf_file(file: &Path, block: &str) -> Result<(), Failure> {
    conf_file::write_whole(file, block).map_err(|error| {
        Failure::msg(
            FailureKind::Usage,
            format!("cannot write `{}`: {error}", file.display()),
        )
        .with_hint("give --conf-file a file in a directory that exists, such as /etc/postgresql/<major>/main/conf.d/pitr.conf")
    })
}

/// The absolute path of this very binary, which is what the server should
/// run: the server's PATH is not the user's. `pitr` (found on the server's
/// PATH) only when the running binary cannot be located.
fn pitr_program() -> PathBuf {
    this_program().unwrap_or_else(|_| PathBuf::from("pitr"))
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
