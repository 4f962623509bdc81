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
    let owner = OsUser::for_server(&args.os_user).or_fail(FailureKind::Usage)?;
    let object = match crate::repo::object_url(&args.repo) {
        Some(url) => Some(url.or_fail(FailureKind::Usage)?),
        None => None,
    };
    let (repo, created) = match &object {
        Some(url) => (
            PathBuf::from(url.to_string()),
            create_object_repo(url, reporter)?,
        ),
        None => {
            let repo = absolute(&args.repo).or_fail(FailureKind::Usage)?;
            let created = create_directory_repo(&repo, &owner, reporter)?;
            (repo, created)
        }
    };

    if let Some(pgdata) = &args.pgdata {
        record_identity(&args.repo, object.as_ref(), pgdata, reporter)?;
    }

    let pitr = pitr_program();
    let mut lines = conf_lines(&pitr, &repo);
    let mut expected = archive_command(&pitr, &repo);
    // The configuration file names this repository: the archive_command
    // needs no URL (and so no change when the repository moves).
    if object.is_some() && configured_repository().as_deref() == Some(&*repo.to_string_lossy()) {
        expected = short_archive_command(&pitr);
        for (name, value) in &mut lines {
            if *name == "archive_command" {
                value.clone_from(&expected);
            }
        }
    }
    let conf = render_conf(&lines);
    if owner.switch && object.is_none() {
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

/// The `repository` of the configuration file, if it can be read.
fn configured_repository() -> Option<String> {
    crate::config::Config::load().ok()?.repository
}

/// `pitr wal-push %p`: the repository comes from the configuration file.
fn short_archive_command(pitr: &Path) -> String {
    let word = crate::postgres::commands::shell_word(&pitr.to_string_lossy()).replace('%', "%%");
    format!("{word} wal-push %p")
}

/// Records the cluster of `--pgdata` (its system identifier, from
/// `global/pg_control`) as the one whose WAL the repository holds, so that
/// `wal-push` refuses segments of any other. Refuses a repository that
/// already belongs to another cluster; a pg_control that cannot be read
/// leaves the recording to the first push.
fn record_identity(
    repo: &Path,
    object: Option<&crate::repo::store::object::ObjectUrl>,
    pgdata: &Path,
    reporter: &Reporter,
) -> Result<(), Failure> {
    use crate::repo::identity;
    use crate::repo::store::posix::Posix;
    use crate::repo::store::Writable;
    let control = crate::repo::store::read_all(&Posix::new(pgdata.join("global")), "pg_control")
        .map_err(anyhow::Error::new)
        .and_then(|bytes| crate::repo::pg_control::parse(&bytes).map_err(anyhow::Error::new));
    let control = match control {
        Ok(control) => control,
        Err(error) => {
            reporter.warn(format!(
                "cannot read the system identifier from `{}/global/pg_control` ({error:#}); the first segment archived records it",
                pgdata.display()
            ));
            return Ok(());
        }
    };
    let archive = match object {
        Some(url) => Writable::from_arc(
            crate::repo::ObjectRepo::open(url)
                .or_fail(FailureKind::Usage)?
                .archive,
        ),
        None => Writable::new(Posix::new(
            absolute(repo).or_fail(FailureKind::Usage)?.join("wal"),
        )),
    };
    let ours = control.system_identifier;
    let recorded = identity::claim(&archive, ours).or_fail(FailureKind::Usage)?;
    if recorded != ours {
        return Err(Failure::msg(
            FailureKind::Usage,
            format!(
                "the repository {} holds the WAL of the PostgreSQL cluster with system identifier {recorded}, and the cluster in `{}` has system identifier {ours}",
                repo.display(),
                pgdata.display()
            ),
        )
        .with_hint("give each cluster a repository of its own: `pitr init --repo` with a new directory or prefix"));
    }
    reporter.step(format!(
        "the repository holds the WAL of the cluster with system identifier {ours} (recorded in {}): wal-push refuses segments of any other",
        archive.describe(identity::IDENTITY_KEY)
    ));
    Ok(())
}

/// Creates `repo/base` and `repo/wal` where missing; the directories created.
fn create_directory_repo(
    repo: &Path,
    owner: &OsUser,
    reporter: &Reporter,
) -> Result<Vec<PathBuf>, Failure> {
    let layout = create_layout(repo, owner).map_err(|error| {
        Failure::new(FailureKind::Usage, error)
            .with_hint("pass --repo with a new or empty directory, or an existing repository")
    })?;
    let created: Vec<PathBuf> = layout
        .into_iter()
        .filter(|entry| entry.created)
        .map(|entry| entry.path)
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
    Ok(created)
}

/// Marks the prefix `url` as a repository (its marker object, written
/// with a conditional create, so a second init changes nothing) and checks
/// that the store answers with the credentials of the environment.
fn create_object_repo(
    url: &crate::repo::store::object::ObjectUrl,
    reporter: &Reporter,
) -> Result<Vec<PathBuf>, Failure> {
    use crate::repo::store::{Created, NewObject, StoreRead, StoreWrite};
    use crate::repo::OBJECT_REPO_MARKER;
    let repo = crate::repo::ObjectRepo::open(url).map_err(|error| {
        Failure::new(FailureKind::Usage, error).with_hint(
            "set the store's standard variables (AWS_REGION, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...; AZURE_STORAGE_*; GOOGLE_*)",
        )
    })?;
    let marker = crate::repo::OBJECT_REPO_MARKER_CONTENT.as_bytes();
    let created = repo
        .root
        .create_new(OBJECT_REPO_MARKER, &NewObject::default(), &mut |w| {
            w.write_all(marker)
        });
    let created = match created {
        Ok(Created::Created) => {
            reporter.step(format!(
                "created repository {url}: base/ for backups, wal/ for the WAL archive"
            ));
            vec![PathBuf::from(repo.root.describe(OBJECT_REPO_MARKER))]
        }
        // Written by an earlier init (possibly of another pitr version).
        Ok(Created::AlreadyPresentSame) | Ok(Created::PresentDifferent) => {
            reporter.step(format!("repository {url} already exists"));
            Vec::new()
        }
        Err(error) => {
            let error = match error {
                crate::repo::store::WriteError::Write(e) => anyhow::Error::new(e),
                crate::repo::store::WriteError::Other(e) => e,
            };
            return Err(Failure::new(
                FailureKind::Usage,
                error.context(format!("cannot write into {url}")),
            )
            .with_hint("check the bucket, the endpoint and the credentials in the environment"));
        }
    };
    let enforced = match probe_conditional_create(&repo.root) {
        Ok(true) => {
            reporter.step(format!(
                "{url} refuses to replace an object on a conditional create (If-None-Match: *): one PUT archives a segment, never over another"
            ));
            true
        }
        Ok(false) => {
            reporter.warn(format!(
                "{url} ignores conditional creates (If-None-Match: *; garage does): wal-push falls back to looking first, writing, and reading the checksum back, which catches most but not all concurrent writers of one name; archive one cluster per repository (wal-push refuses segments of another cluster) and never run two archivers of one cluster into it"
            ));
            false
        }
        Err(error) => {
            reporter.warn(format!(
                "cannot check whether {url} enforces conditional creates: {error:#}; wal-push assumes it does (run `pitr init` again to check)"
            ));
            return Ok(created);
        }
    };
    let archive = crate::repo::store::Writable::from_arc(repo.archive.clone());
    crate::repo::capability::record(&archive, enforced).or_fail(FailureKind::Usage)?;
    Ok(created)
}

/// Whether the store refuses a conditional create over an existing object:
/// creates a probe object twice with different bytes, then deletes it.
fn probe_conditional_create(
    store: &crate::repo::store::object::ObjectStorage,
) -> anyhow::Result<bool> {
    use crate::repo::store::{Created, NewObject, StoreWrite, WriteError};
    let key = format!(
        ".pitr-probe-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let create = |bytes: &'static [u8]| {
        store
            .create_new(&key, &NewObject::default(), &mut |w| w.write_all(bytes))
            .map_err(|error| match error {
                WriteError::Write(e) => anyhow::Error::new(e),
                WriteError::Other(e) => e,
            })
    };
    let first = create(b"first");
    let second = first.and_then(|_| create(b"second"));
    let _ = store.delete(&[&key]);
    Ok(second? != Created::Created)
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
