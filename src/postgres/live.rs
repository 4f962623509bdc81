//! Is a directory in use by a live PostgreSQL server?
//!
//! The same evidence PostgreSQL itself trusts before it takes a data
//! directory (`CreateLockFile` in miscinit.c): the lock file
//! `postmaster.pid` (PID, data directory, start time, port, socket
//! directory, listen address, shared memory key, status; a negative PID is
//! a single-user backend) naming a process that exists, or, when that
//! process is gone, a shared memory segment still attached by orphaned
//! backends. A server also writes the same first five lines into
//! `<socket dir>/.s.PGSQL.<port>.lock`, which still names the data
//! directory when `postmaster.pid` was removed by hand.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Pid, Uid, User};

use super::binaries::Binaries;

/// Directories where servers commonly put their sockets, searched for a
/// socket lock naming the directory in question.
const COMMON_SOCKET_DIRS: [&str; 3] = ["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// A server found running on a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveServer {
    pub pid: i32,
    pub data_dir: PathBuf,
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    /// What proves it: the lock file and what about it.
    pub evidence: String,
}

/// The first lines of a PostgreSQL lock file (pidfile.h).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockFile {
    pub pid: i32,
    pub data_dir: PathBuf,
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    /// `key id` of the System V shared memory segment (line 7).
    pub shmem_id: Option<i32>,
}

impl LockFile {
    /// The data directory's `postmaster.pid`, when it is there and readable.
    pub fn read(pgdata: &Path) -> Option<LockFile> {
        let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
        LockFile::parse(&text)
    }

    pub fn parse(text: &str) -> Option<LockFile> {
        let lines: Vec<&str> = text.lines().collect();
        let pid: i32 = lines.first()?.trim().parse().ok()?;
        let line = |n: usize| lines.get(n).map(|l| l.trim()).filter(|l| !l.is_empty());
        Some(LockFile {
            // A standalone backend (single-user mode) writes its PID negated.
            pid: pid.checked_abs()?,
            data_dir: PathBuf::from(line(1).unwrap_or_default()),
            port: line(3).and_then(|p| p.parse().ok()),
            socket_dir: line(4).map(PathBuf::from),
            shmem_id: line(6)
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok()),
        })
    }
}

/// The live server using `dir` as its data directory, if any; `dir` need
/// not exist.
pub fn server_on(dir: &Path) -> Option<LiveServer> {
    if let Some(lock) = fs::read_to_string(dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| LockFile::parse(&text))
    {
        if process_exists(lock.pid) {
            return Some(live(
                dir,
                &lock,
                "its postmaster.pid names that running process".to_string(),
            ));
        }
        if let Some(attached) = lock.shmem_id.and_then(shared_memory_attached) {
            return Some(live(
                dir,
                &lock,
                format!(
                    "its postmaster (PID {}) is gone, but {attached} orphaned process(es) are still attached to its shared memory, ID {}",
                    lock.pid,
                    lock.shmem_id.unwrap_or_default()
                ),
            ));
        }
    }
    socket_lock_naming(dir)
}

/// The live server whose data directory is `dir`, one of its ancestors or
/// one of its subdirectories down to `depth` levels: any of them would be
/// moved aside or written into with `dir`.
pub fn server_in_or_around(dir: &Path, depth: usize) -> Option<LiveServer> {
    dir.ancestors()
        .find_map(server_on)
        .or_else(|| server_below(dir, depth))
}

fn server_below(dir: &Path, depth: usize) -> Option<LiveServer> {
    if depth == 0 {
        return None;
    }
    let entries = fs::read_dir(dir).ok()?;
    entries.flatten().find_map(|entry| {
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if !is_dir {
            return None;
        }
        let path = entry.path();
        server_on(&path).or_else(|| server_below(&path, depth - 1))
    })
}

fn live(dir: &Path, lock: &LockFile, evidence: String) -> LiveServer {
    LiveServer {
        pid: lock.pid,
        data_dir: dir.to_path_buf(),
        port: lock.port,
        socket_dir: lock.socket_dir.clone(),
        evidence,
    }
}

/// A socket lock file (`.s.PGSQL.<port>.lock`) in a common socket
/// directory whose data directory line is `dir` and whose PID runs.
fn socket_lock_naming(dir: &Path) -> Option<LiveServer> {
    let wanted = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut socket_dirs: Vec<PathBuf> = COMMON_SOCKET_DIRS.iter().map(PathBuf::from).collect();
    socket_dirs.push(dir.to_path_buf());
    // Wherever a server on this host has its socket.
    for socket in postgres_unix_sockets() {
        if let Some(parent) = socket.parent() {
            if !socket_dirs.iter().any(|known| known == parent) {
                socket_dirs.push(parent.to_path_buf());
            }
        }
    }
    socket_dirs.into_iter().find_map(|socket_dir| {
        let entries = fs::read_dir(&socket_dir).ok()?;
        entries.flatten().find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) {
                return None;
            }
            let lock = LockFile::parse(&fs::read_to_string(entry.path()).ok()?)?;
            let named = fs::canonicalize(&lock.data_dir).unwrap_or(lock.data_dir.clone());
            (named == wanted && process_exists(lock.pid)).then(|| {
                live(
                    dir,
                    &lock,
                    format!(
                        "postmaster.pid is missing, but the socket lock `{}` names this data directory and that running process",
                        entry.path().display()
                    ),
                )
            })
        })
    })
}

/// The live server holding the lock of a unix socket for `port` in
/// `socket_dir`, if any.
pub fn socket_lock_holder(socket_dir: &Path, port: u16) -> Option<LockFile> {
    let path = socket_dir.join(format!(".s.PGSQL.{port}.lock"));
    let lock = LockFile::parse(&fs::read_to_string(path).ok()?)?;
    process_exists(lock.pid).then_some(lock)
}

/// Every listening unix socket on this host named `.s.PGSQL.<port>`, from
/// the kernel's table (`/proc/net/unix`: the path is the last column).
pub fn unix_sockets_for_port(port: u16) -> Vec<PathBuf> {
    let name = format!(".s.PGSQL.{port}");
    postgres_unix_sockets()
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n == name.as_str()))
        .collect()
}

/// Every bound unix socket on this host named like PostgreSQL's
/// (`.s.PGSQL.<port>`).
fn postgres_unix_sockets() -> Vec<PathBuf> {
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .map(PathBuf::from)
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_prefix(".s.PGSQL."))
                .is_some_and(|port| port.parse::<u16>().is_ok())
        })
        .collect()
}

/// True when `pid` names a process. Unlike PostgreSQL (which runs as the
/// server's own user and takes EPERM for someone else's process), pitr
/// may run as another user than the server: EPERM means it exists.
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s == "Z"))
        })
        .unwrap_or(false)
}

/// How many processes are attached to System V shared memory segment `id`
/// (PostgreSQL's `PGSharedMemoryIsInUse`): None when it is gone or unused.
fn shared_memory_attached(id: i32) -> Option<u64> {
    // SAFETY: shmid_ds is plain data; shmctl(IPC_STAT) only fills it.
    let mut info: nix::libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a shmid_ds we own, for the call's duration.
    let result = unsafe { nix::libc::shmctl(id, nix::libc::IPC_STAT, &mut info) };
    if result != 0 {
        // EACCES: the segment exists and belongs to someone else; count it
        // as in use, as PostgreSQL does.
        return (Errno::last() == Errno::EACCES).then_some(1);
    }
    (info.shm_nattch > 0).then_some(info.shm_nattch as u64)
}

impl LiveServer {
    /// The OS user owning the data directory (who runs the server).
    pub fn owner(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata(&self.data_dir).ok()?.uid();
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|user| user.name)
    }

    /// The server's major version, from the data directory's PG_VERSION.
    pub fn major_version(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir.join("PG_VERSION"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `pg_ctl` of that server: beside the running postgres binary when it
    /// can be seen, else the installed programs of its major.
    pub fn pg_ctl(&self) -> PathBuf {
        let beside_exe = fs::read_link(format!("/proc/{}/exe", self.pid))
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("pg_ctl")))
            .filter(|path| path.is_file());
        beside_exe
            .or_else(|| {
                let major = self.major_version()?;
                Binaries::find(None, major)
                    .ok()
                    .map(|bins| bins.program("pg_ctl"))
            })
            .unwrap_or_else(|| PathBuf::from("pg_ctl"))
    }

    /// The command that stops it, ready to paste.
    pub fn stop_command(&self) -> String {
        let pg_ctl = self.pg_ctl();
        let command = format!(
            "{} stop -D {} -m fast",
            super::commands::shell_word(&pg_ctl.to_string_lossy()),
            super::commands::shell_word(&self.data_dir.to_string_lossy())
        );
        match self.owner() {
            Some(owner) => super::commands::as_user(&owner, &command),
            None => command,
        }
    }

    /// One sentence for an error: which server, why we think so, how to
    /// stop it.
    pub fn describe(&self) -> String {
        let port = self
            .port
            .map(|port| format!(" on port {port}"))
            .unwrap_or_default();
        format!(
            "PostgreSQL (PID {}{port}) is running on the data directory `{}` ({})",
            self.pid,
            self.data_dir.display(),
            self.evidence
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_lines() {
        let text = "4242\n/srv/pg\n1764790000\n5433\n/var/run/postgresql\nlocalhost\n  5433001     32789\nready   \n";
        let lock = LockFile::parse(text).unwrap();
        assert_eq!(lock.pid, 4242);
        assert_eq!(lock.data_dir, PathBuf::from("/srv/pg"));
        assert_eq!(lock.port, Some(5433));
        assert_eq!(lock.socket_dir, Some(PathBuf::from("/var/run/postgresql")));
        assert_eq!(lock.shmem_id, Some(32789));
        // Single-user mode writes a negative PID and no more than five lines.
        let lock = LockFile::parse("-77\n/srv/pg\n1\n5432\n\n").unwrap();
        assert_eq!(lock.pid, 77);
        assert_eq!(lock.socket_dir, None);
        assert!(LockFile::parse("").is_none());
        assert!(LockFile::parse("garbage\n").is_none());
    }

    #[test]
    fn a_stale_pid_file_is_not_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        // PID 2^22 + 1 is above Linux's pid_max ceiling: never running.
        fs::write(
            dir.path().join("postmaster.pid"),
            "4194305\n/x\n1\n5432\n/tmp\n",
        )
        .unwrap();
        assert_eq!(server_on(dir.path()), None);
    }

    #[test]
    fn a_pid_file_naming_a_running_process_is_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n/x\n1\n5499\n/tmp\n", child.id()),
        )
        .unwrap();
        let nested = dir.path().join("a");
        fs::create_dir(&nested).unwrap();
        let found = server_on(dir.path());
        let above = server_in_or_around(&nested, 2);
        let below = server_in_or_around(dir.path().parent().unwrap(), 1).is_some()
            || server_below(dir.path().parent().unwrap(), 1).is_some();
        let _ = child.kill();
        let _ = child.wait();
        let found = found.unwrap();
        assert_eq!(found.port, Some(5499));
        assert_eq!(found.pid, child.id() as i32);
        assert_eq!(above.map(|s| s.data_dir), Some(dir.path().to_path_buf()));
        assert!(below);
    }
}
