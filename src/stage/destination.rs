//! The destination step: what is at `--pgdata` now, and the hidden
//! staging directory beside it where the new data directory is written.
//! And what `pitr restore` refuses before it writes anything: a
//! destination in use by a live server, a port already taken, a parent
//! directory it cannot write into, and replacing a directory without the
//! user's yes.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::access::{check_dir, Need, Problem};
use crate::error::{Failure, FailureKind};
use crate::postgres::live::{self, LiveServer};

/// What is at `--pgdata` before the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Absent,
    Empty,
    /// Not empty; allowed only with `--force`, and then moved aside.
    Occupied,
}

/// Looks at `--pgdata` without changing anything.
pub fn inspect_destination(pgdata: &Path, force: bool) -> Result<Destination> {
    match fs::symlink_metadata(pgdata) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Destination::Absent),
        Err(error) => Err(error).with_context(|| format!("cannot inspect `{}`", pgdata.display())),
        Ok(metadata) if !metadata.is_dir() => bail!(
            "`{}` exists and is not a directory; choose another --pgdata",
            pgdata.display()
        ),
        Ok(_) => {
            let mut entries = fs::read_dir(pgdata)
                .with_context(|| format!("cannot read `{}`", pgdata.display()))?;
            if entries.next().is_none() {
                Ok(Destination::Empty)
            } else if force {
                Ok(Destination::Occupied)
            } else {
                bail!(
                    "`{}` is not empty; nothing was changed. Choose an empty or new directory, or pass --force to move the existing one aside",
                    pgdata.display()
                )
            }
        }
    }
}

/// `.<name>.pitr-<purpose>-<pid>` in `parent`: where this restore puts
/// what is not finished yet (the staged data directory or tablespace, the
/// WAL spool), hidden, on the same filesystem as its destination so that a
/// rename moves it, and told apart from another restore's by the PID.
pub fn work_dir_beside(parent: &Path, name: &str, purpose: &str) -> PathBuf {
    parent.join(format!(".{name}.pitr-{purpose}-{}", std::process::id()))
}

/// The hidden sibling of `--pgdata` the new data directory is written
/// into; removed unless it was renamed into place.
pub struct StagingDir {
    path: PathBuf,
    destination: PathBuf,
    parent: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates the staging directory beside `pgdata` (mode 0700).
    pub fn create(pgdata: &Path) -> Result<StagingDir> {
        let parent = pgdata
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = pgdata
            .file_name()
            .with_context(|| format!("`{}` has no directory name", pgdata.display()))?
            .to_string_lossy()
            .into_owned();
        if !parent.is_dir() {
            bail!(
                "the parent directory `{}` of --pgdata does not exist; create it first",
                parent.display()
            );
        }
        let path = work_dir_beside(parent, &name, "staging");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| {
                format!(
                    "cannot create a directory in `{}`, which holds --pgdata ({})",
                    parent.display(),
                    crate::access::who_may(parent)
                )
            })?;
        Ok(StagingDir {
            path,
            destination: pgdata.to_path_buf(),
            parent: parent.to_path_buf(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--pgdata`.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// The directory holding both.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// Renames the staged directory to `--pgdata` (absent or empty now).
    pub fn rename_into_place(mut self) -> Result<()> {
        fs::rename(&self.path, &self.destination).with_context(|| {
            format!(
                "cannot rename `{}` to `{}`",
                self.path.display(),
                self.destination.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// How deep below a destination a live data directory is looked for: a
/// `--pgdata` of `/var/lib/postgresql/15` holds `main/`.
const NESTED_DEPTH: usize = 2;

/// Refuses `dir` (`what` says which option named it) when a live server
/// uses it, an ancestor or a subdirectory as its data directory.
pub fn refuse_live_server(dir: &Path, what: &str) -> Result<(), Failure> {
    match live::server_in_or_around(dir, NESTED_DEPTH) {
        None => Ok(()),
        Some(server) => Err(live_server_failure(&server, dir, what)),
    }
}

pub fn live_server_failure(server: &LiveServer, dir: &Path, what: &str) -> Failure {
    let relation = if server.data_dir == dir {
        String::new()
    } else if dir.starts_with(&server.data_dir) {
        format!("; {what} `{}` is inside that data directory", dir.display())
    } else {
        format!("; that data directory is inside {what} `{}`", dir.display())
    };
    Failure::msg(
        FailureKind::Staging,
        format!(
            "{what} `{}` is in use: {}{relation}; nothing was changed",
            dir.display(),
            server.describe()
        ),
    )
    .with_hint(format!(
        "pitr never replaces a running cluster. Restore elsewhere, or stop that server first: {}",
        server.stop_command()
    ))
}

/// Refuses `--port` when anything listens on it (TCP, any address) or a
/// live server holds its unix socket lock in one of `socket_dirs` or a
/// usual socket directory.
pub fn refuse_taken_port(port: u16, socket_dirs: &[PathBuf]) -> Result<(), Failure> {
    match port_taken(port, socket_dirs) {
        None => Ok(()),
        Some(reason) => Err(Failure::msg(
            FailureKind::Staging,
            format!("--port {port} is taken: {reason}; nothing was changed"),
        )
        .with_hint("choose another --port, or leave it out and pitr picks a free one")),
    }
}

/// Why `port` cannot be used, if it cannot.
pub fn port_taken(port: u16, socket_dirs: &[PathBuf]) -> Option<String> {
    let mut dirs: Vec<PathBuf> = socket_dirs.to_vec();
    dirs.extend(
        ["/var/run/postgresql", "/run/postgresql", "/tmp"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in &dirs {
        if let Some(lock) = live::socket_lock_holder(dir, port) {
            return Some(format!(
                "PostgreSQL server PID {} (data directory `{}`) holds the socket lock `{}`",
                lock.pid,
                lock.data_dir.display(),
                dir.join(format!(".s.PGSQL.{port}.lock")).display()
            ));
        }
    }
    // A server with its socket anywhere else on this host: the restored
    // copy's socket may move to the backup's own directory, where that
    // server may be (see handover), so its port is taken too.
    if let Some(socket) = live::unix_sockets_for_port(port).into_iter().next() {
        let lock = PathBuf::from(format!("{}.lock", socket.display()));
        let holder = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|text| live::LockFile::parse(&text))
            .map(|lock| {
                format!(
                    "PostgreSQL server PID {} (data directory `{}`)",
                    lock.pid,
                    lock.data_dir.display()
                )
            })
            .unwrap_or_else(|| "a process".to_string());
        return Some(format!(
            "{holder} listens on the unix socket `{}`",
            socket.display()
        ));
    }
    // A listener on any address makes a bind to the wildcard fail; an
    // address family this host lacks is no evidence either way.
    let wildcards = [
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    ];
    for address in wildcards {
        if let Err(error) = TcpListener::bind(address) {
            if error.kind() == std::io::ErrorKind::AddrInUse {
                return Some(format!("a process is listening on TCP port {port}"));
            }
        }
    }
    None
}

/// The directory that will hold `--pgdata` (and pitr's work directories
/// beside it) must exist and be writable; a problem names that directory,
/// as the user gave it, never a hidden work directory inside it.
pub fn check_parent_writable(dir: &Path, what: &str) -> Result<(), Failure> {
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let problem = match check_dir(parent, Need::Write) {
        Ok(()) => return Ok(()),
        Err(Problem::Missing) => format!(
            "the parent directory `{}` of {what} does not exist; create it first",
            parent.display()
        ),
        Err(Problem::NotADirectory) => format!(
            "the parent `{}` of {what} is not a directory",
            parent.display()
        ),
        Err(Problem::Denied(why)) => format!(
            "cannot write into `{}`, the directory that holds {what} `{}`: {why}",
            parent.display(),
            dir.display()
        ),
    };
    Err(Failure::msg(FailureKind::Staging, problem).with_hint(
        "nothing was changed; run pitr as a user who may write there (or as root), or choose another directory",
    ))
}

/// `--in-place` restores a cluster over its own data directory: what is
/// there must be that cluster (the same system identifier in
/// `global/pg_control`), or unreadable (a damaged primary), never another
/// cluster's directory named by mistake.
pub fn refuse_other_cluster(pgdata: &Path, backup_system: Option<u64>) -> Result<(), Failure> {
    let Some(backup_system) = backup_system else {
        return Ok(());
    };
    let Some(found) = std::fs::read(pgdata.join("global/pg_control"))
        .ok()
        .and_then(|bytes| crate::repo::pg_control::parse(&bytes).ok())
    else {
        return Ok(());
    };
    if found.system_identifier == backup_system {
        return Ok(());
    }
    Err(Failure::msg(
        FailureKind::Staging,
        format!(
            "--in-place: `{}` holds another cluster (system identifier {}) than the backup's ({backup_system}); nothing was changed",
            pgdata.display(),
            found.system_identifier
        ),
    )
    .with_hint("check --pgdata; to replace another cluster's directory on purpose, use --force instead of --in-place"))
}

/// Asks before a non-empty `--pgdata` is moved aside: on a terminal, a
/// question; from a script (stdin not a terminal), `--yes` is required,
/// because a script that never meant to replace a directory must not do it
/// silently, nor hang waiting for an answer nobody can give.
pub fn confirm_replacement(pgdata: &Path, backup: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    let what = describe_contents(pgdata);
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::msg(
            FailureKind::Usage,
            format!(
                "`{}` ({what}) would be moved aside, and pitr asks before that, but its input is not a terminal; nothing was changed",
                pgdata.display()
            ),
        )
        .with_hint("pass --yes to confirm from a script"));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "`{}` ({what}) will be moved aside to `{}.pitr-replaced-<time>` (never deleted) and backup {backup} restored in its place.\nContinue? [y/N] ",
        pgdata.display(),
        pgdata.display()
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::msg(
            FailureKind::Usage,
            format!("not confirmed; `{}` was not changed", pgdata.display()),
        ))
    }
}

/// `a PostgreSQL 15 data directory, 24 entries`, or `12 entries`.
fn describe_contents(dir: &Path) -> String {
    let entries = std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0);
    let version = std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|v| v.trim().to_string());
    match version {
        Some(version) => format!("a PostgreSQL {version} data directory, {entries} entries"),
        None if entries == 1 => "1 entry".to_string(),
        None => format!("{entries} entries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupied_destination_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("data");
        fs::create_dir(&pgdata).unwrap();
        assert_eq!(
            inspect_destination(&pgdata, false).unwrap(),
            Destination::Empty
        );
        fs::write(pgdata.join("keep"), b"x").unwrap();
        let error = inspect_destination(&pgdata, false).unwrap_err();
        assert!(format!("{error:#}").contains("is not empty"));
        assert_eq!(fs::read(pgdata.join("keep")).unwrap(), b"x");
        assert_eq!(
            inspect_destination(&pgdata, true).unwrap(),
            Destination::Occupied
        );
        assert_eq!(
            inspect_destination(&dir.path().join("new"), false).unwrap(),
            Destination::Absent
        );
    }

    #[test]
    fn a_listening_port_is_taken_and_a_free_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reason = port_taken(port, &[]).unwrap();
        assert!(reason.contains(&format!("TCP port {port}")), "{reason}");
        drop(listener);
        assert_eq!(port_taken(port, &[]), None);
    }

    #[test]
    fn in_place_refuses_another_clusters_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pg_control/pg15"),
            dir.path().join("global/pg_control"),
        )
        .unwrap();
        assert!(refuse_other_cluster(dir.path(), Some(7711567971765019824)).is_ok());
        assert!(refuse_other_cluster(dir.path(), None).is_ok());
        let failure = refuse_other_cluster(dir.path(), Some(42)).unwrap_err();
        assert!(
            failure
                .to_string()
                .contains("another cluster (system identifier 7711567971765019824)"),
            "{failure}"
        );
        // A damaged primary's directory cannot tell: it is replaced.
        std::fs::write(dir.path().join("global/pg_control"), b"torn").unwrap();
        assert!(refuse_other_cluster(dir.path(), Some(42)).is_ok());
    }

    #[test]
    fn a_missing_parent_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let failure = check_parent_writable(&dir.path().join("a/b"), "--pgdata").unwrap_err();
        assert!(failure.to_string().contains("does not exist"), "{failure}");
        assert!(check_parent_writable(&dir.path().join("a"), "--pgdata").is_ok());
    }
}
