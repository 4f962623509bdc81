//! Test support: throwaway PostgreSQL clusters with WAL archiving, backups
//! and a workload of marker rows with known commit times.
//!
//! Each cluster lives in its own temporary directory, listens on a free port
//! with its unix socket in that directory, and is stopped by its own PID
//! when dropped (also when a test fails). As root, PostgreSQL's programs run
//! as the `postgres` OS user, as they must.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid, User};

pub mod archivers;
pub mod garage;
pub mod object_servers;

pub fn pg_bin() -> PathBuf {
    if let Some(chosen) = PG_BIN_CHOSEN.get() {
        return chosen.clone();
    }
    std::env::var_os("PITR_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The server programs a whole test binary uses instead of
/// `PITR_TEST_PG_BIN`, set once by [`use_pg_bin_of_major_at_least`].
static PG_BIN_CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

// ---------------------------------------------------------------------------
// Preconditions. libtest has no "skipped" status: a test that returns early
// is reported `ok`. Every precondition therefore goes through `require`,
// which says so on the terminal and, under `PITR_TEST_STRICT=1` (set by
// `.ci/run` and `make test`), fails the test unless its name is listed in
// `PITR_TEST_ALLOWED_SKIPS` (comma- or space-separated test names).
// ---------------------------------------------------------------------------

/// True when `met`; otherwise reports `SKIPPED: <test>: <why>` and returns
/// false (the caller then skips the test or the part that needs it), or
/// fails the test in strict mode when that skip is not allowed.
pub fn require(test: &str, met: bool, why: impl std::fmt::Display) -> bool {
    if met {
        return true;
    }
    let message = format!("SKIPPED: {test}: {why}");
    // Straight to the process's stderr: libtest captures `eprintln!` of a
    // passing test, and a skip must be seen.
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{message}");
    }
    if strict() && !skip_allowed(test) {
        panic!(
            "{message}\nPITR_TEST_STRICT=1 and `{test}` is not in PITR_TEST_ALLOWED_SKIPS ({}): \
             provide what it needs or list it there with the reason",
            std::env::var("PITR_TEST_ALLOWED_SKIPS").unwrap_or_default()
        );
    }
    false
}

/// `PITR_TEST_STRICT=1`: a skip fails the test unless it is allowed.
pub fn strict() -> bool {
    std::env::var("PITR_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Whether `test` is listed in `PITR_TEST_ALLOWED_SKIPS`.
pub fn skip_allowed(test: &str) -> bool {
    std::env::var("PITR_TEST_ALLOWED_SKIPS").is_ok_and(|list| {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .any(|name| name == test)
    })
}

/// Requires running as root (ownership changes, unreadable files, mounts).
pub fn require_root(test: &str) -> bool {
    require(
        test,
        Uid::effective().is_root(),
        "needs root (run the suite as root)",
    )
}

/// Requires a program on PATH (`tool --version` or `tool -V` runs).
pub fn require_tool(test: &str, tool: &str) -> bool {
    let found = ["--version", "-V"].iter().any(|flag| {
        Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    require(test, found, format!("needs `{tool}` on PATH"))
}

/// The major version of the server programs in `dir`, if it holds any.
pub fn major_of(dir: &Path) -> Option<u32> {
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    pitr::postgres::binaries::parse_version_output(&String::from_utf8_lossy(&output.stdout))
}

/// Cache of relocatable builds filled by `scripts/pg-matrix.sh` (same
/// rule as the script: `$PITR_PG_CACHE`, else /var/cache/pitr/postgres as
/// root, else `$XDG_CACHE_HOME` or `~/.cache`).
pub fn pg_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PITR_PG_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if Uid::effective().is_root() {
        return Some(PathBuf::from("/var/cache/pitr/postgres"));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|dir| dir.join("pitr/postgres"))
}

/// Server programs of at least `major` on this machine: the ones under
/// test, else `PITR_TEST_OTHER_PG_BIN`, else the newest in the matrix cache.
pub fn pg_bin_of_major_at_least(major: u32) -> Option<PathBuf> {
    let under_test = std::env::var_os("PITR_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    let mut candidates: Vec<PathBuf> = [
        Some(under_test),
        std::env::var_os("PITR_TEST_OTHER_PG_BIN").map(PathBuf::from),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(cache) = pg_cache_dir() {
        for cached in (major..=30).rev() {
            candidates.push(cache.join(cached.to_string()).join("postgresql/bin"));
        }
    }
    candidates
        .into_iter()
        .find(|dir| major_of(dir).is_some_and(|m| m >= major))
}

/// For a test binary whose tests all need PostgreSQL `major` or later
/// (incremental backups: 17): makes [`pg_bin`] return such programs for
/// the whole binary, so the tests run wherever that major is at hand
/// rather than only when it is the major under test. Call it first in
/// every test of that binary; false (after [`require`]) when there is none.
pub fn use_pg_bin_of_major_at_least(test: &str, major: u32) -> bool {
    let Some(found) = pg_bin_of_major_at_least(major) else {
        return require(
            test,
            false,
            format!(
                "needs PostgreSQL {major} or later (PITR_TEST_PG_BIN, PITR_TEST_OTHER_PG_BIN, or `scripts/pg-matrix.sh fetch {major}`)"
            ),
        );
    };
    let chosen = PG_BIN_CHOSEN.get_or_init(|| found.clone());
    assert!(
        major_of(chosen).is_some_and(|m| m >= major),
        "this test binary already uses {} (before {test} asked for {major}+)",
        chosen.display()
    );
    true
}

// ---------------------------------------------------------------------------
// Listings for "nothing was touched" and "nothing was left" checks. Both
// fail the test on any read error: a directory that pitr deleted or made
// unreadable must not read as "empty" or "unchanged".
// ---------------------------------------------------------------------------

/// The sorted names in `dir`; panics when `dir` cannot be read.
pub fn names_in(dir: &Path) -> Vec<String> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list `{}`: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list `{}`: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// What a tree entry is, with what identifies its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeEntry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        sha256: String,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Every entry under `root` (recursively, relative paths), with mode, size
/// and SHA-256 of files and targets of links: two equal snapshots mean
/// nothing was written, added, removed or re-permissioned. Panics on any
/// read error.
pub fn tree_snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, TreeEntry> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut found = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for name in names_in(&dir) {
            let path = dir.join(&name);
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("cannot stat `{}`: {e}", path.display()));
            let mode = meta.mode() & 0o7777;
            let entry = if meta.file_type().is_symlink() {
                TreeEntry::Symlink {
                    target: fs::read_link(&path).unwrap(),
                }
            } else if meta.is_dir() {
                pending.push(path.clone());
                TreeEntry::Dir { mode }
            } else {
                let bytes = fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
                let digest = sha2::Sha256::digest(&bytes);
                TreeEntry::File {
                    mode,
                    size: meta.size(),
                    sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                }
            };
            found.insert(relative, entry);
        }
    }
    found
}

/// Asserts that two snapshots of the same tree are equal, naming the
/// first differences.
pub fn assert_same_tree(
    what: &str,
    before: &std::collections::BTreeMap<PathBuf, TreeEntry>,
    after: &std::collections::BTreeMap<PathBuf, TreeEntry>,
) {
    if before == after {
        return;
    }
    let mut differences = Vec::new();
    for (path, entry) in before {
        match after.get(path) {
            None => differences.push(format!("removed: {}", path.display())),
            Some(now) if now != entry => differences.push(format!(
                "changed: {} ({entry:?} -> {now:?})",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        differences.push(format!("added: {}", path.display()));
    }
    differences.truncate(20);
    panic!("{what} was touched:\n{}", differences.join("\n"));
}

/// The major version of the PostgreSQL under test (`postgres --version` in
/// `PITR_TEST_PG_BIN`), for the tests whose expectations differ by major.
pub fn pg_major() -> u32 {
    static MAJOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MAJOR.get_or_init(|| {
        let output = Command::new(pg_bin().join("postgres"))
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/postgres: {e}", pg_bin().display()));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        pitr::postgres::binaries::parse_version_output(&text)
            .unwrap_or_else(|| panic!("unexpected `postgres --version` output: {text}"))
    })
}

/// Server programs of a major other than the one under test, if this
/// machine has some: `PITR_TEST_OTHER_PG_BIN` (set by the version matrix),
/// else Debian's PostgreSQL 15 when another major is under test.
pub fn other_pg_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("PITR_TEST_OTHER_PG_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
    ];
    candidates.into_iter().flatten().find(|dir| {
        let Ok(output) = Command::new(dir.join("postgres")).arg("--version").output() else {
            return false;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        pitr::postgres::binaries::parse_version_output(&text).is_some_and(|m| m != pg_major())
    })
}

/// The OS user that runs PostgreSQL: `postgres` when we are root.
pub fn pg_user() -> Option<User> {
    if Uid::effective().is_root() {
        Some(
            User::from_name("postgres")
                .ok()
                .flatten()
                .expect("the postgres OS user must exist when tests run as root"),
        )
    } else {
        None
    }
}

/// A command that runs as the PostgreSQL OS user.
pub fn as_pg_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    if let Some(user) = pg_user() {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        command.env("HOME", "/tmp");
    }
    command
}

/// Gives `path` to the PostgreSQL OS user (when root).
pub fn give_to_pg_user(path: &Path) {
    if let Some(user) = pg_user() {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    }
}

/// A directory every user can enter (tempfile makes 0700 directories).
pub fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

static PROCESS_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_process_dirs() {
    if let Ok(dirs) = PROCESS_DIRS.lock() {
        for dir in dirs.iter() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A shared temporary directory that lives as long as the test process
/// (for a scenario built once and used by several tests), removed at exit.
pub fn process_tempdir(prefix: &str) -> PathBuf {
    let dir = shared_tempdir(prefix).keep();
    if let Ok(mut dirs) = PROCESS_DIRS.lock() {
        if dirs.is_empty() {
            // SAFETY: registering a plain function to run at process exit.
            unsafe {
                nix::libc::atexit(remove_process_dirs);
            }
        }
        dirs.push(dir.clone());
    }
    dir
}

/// Creates a directory owned by the PostgreSQL OS user.
pub fn pg_owned_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    give_to_pg_user(path);
    path.to_path_buf()
}

pub fn check(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Quotes a value for postgresql.conf.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a word for `sh -c`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the postmaster PID of a data directory.
pub fn postmaster_pid(pgdata: &Path) -> Option<Pid> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
}

/// Stops the server of `pgdata` by its PID (fast shutdown), waiting for it.
pub fn stop_by_pid(pgdata: &Path) {
    let Some(pid) = postmaster_pid(pgdata) else {
        return;
    };
    if kill(pid, Signal::SIGINT).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if process_alive(pid) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(|s| s != "Z")
        })
        .unwrap_or(false)
}

/// Every live process whose working directory is `dir` (the postmaster and
/// all its children chdir into the data directory), found through /proc,
/// so a server whose postmaster.pid is gone is found too.
pub fn processes_working_in(dir: &Path) -> Vec<Pid> {
    let Ok(wanted) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Pid> = fs::read_dir("/proc")
        .expect("/proc must be readable")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == wanted)
                && process_alive(*pid)
        })
        .collect();
    found.sort();
    found
}

// ---------------------------------------------------------------------------
// Running pitr and reading what it printed.
// ---------------------------------------------------------------------------

/// `pitr` with a clean environment for the settings it reads (no
/// repository from `PITR_REPO`, no libpq defaults) and times shown in UTC.
pub fn pitr(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("PITR_REPO")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env("TZ", "UTC");
    command
}

/// Runs `pitr ARGS` (see [`pitr`]) to its end.
pub fn run_pitr(binary: &Path, args: &[&str]) -> Output {
    pitr(binary).args(args).output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a `--json` command printed; the test fails, showing the text,
/// when it is not JSON.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", stdout(output)))
}

/// A time as `--to` takes it, to the microsecond.
pub fn rfc3339(time: chrono::DateTime<chrono::FixedOffset>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Runs `command` (a `pitr` command with the test's environment) as
/// `restore --pgdata PGDATA ARGS`, to its end, whatever the outcome.
pub fn restore_output<A: AsRef<OsStr>>(
    mut command: Command,
    pgdata: &Path,
    args: impl IntoIterator<Item = A>,
) -> Output {
    command
        .arg("restore")
        .arg("--pgdata")
        .arg(pgdata)
        .args(args)
        .output()
        .unwrap()
}

/// A server `pitr restore --json` left running, stopped when dropped.
pub struct Restored {
    pub summary: serde_json::Value,
    pub pgdata: PathBuf,
    _guard: ServerGuard,
}

impl Restored {
    /// The restored server's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        PathBuf::from(self.summary["socket_dir"].as_str().unwrap())
    }

    pub fn port(&self) -> u16 {
        self.summary["port"].as_u64().unwrap() as u16
    }

    pub fn sql(&self, sql: &str) -> String {
        summary_sql(&self.summary, sql)
    }
}

/// Runs SQL on the server a `pitr --json restore` summary describes (its
/// socket directory and port).
pub fn summary_sql(summary: &serde_json::Value, sql: &str) -> String {
    let socket = Path::new(summary["socket_dir"].as_str().unwrap());
    let port = summary["port"].as_u64().unwrap() as u16;
    psql(socket, port, sql)
}

/// The ids in `markers` on the server a restore summary describes, in
/// order, comma-separated.
pub fn restored_marker_ids(summary: &serde_json::Value) -> String {
    summary_sql(
        summary,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM markers",
    )
}

/// Runs `command` as `--json restore --pgdata PGDATA ARGS`, which must
/// succeed (the failure shows pitr's stderr and the server's recovery
/// log); the restored server is stopped when the result is dropped.
pub fn restore<A: AsRef<OsStr>>(
    mut command: Command,
    pgdata: &Path,
    args: impl IntoIterator<Item = A>,
) -> Restored {
    let args: Vec<A> = args.into_iter().collect();
    command.arg("--json");
    let output = restore_output(command, pgdata, &args);
    let guard = ServerGuard(pgdata.to_path_buf());
    let shown: Vec<_> = args
        .iter()
        .map(|arg| arg.as_ref().to_string_lossy())
        .collect();
    assert!(
        output.status.success(),
        "pitr restore {} failed ({}):\n{}\nlog:\n{}",
        shown.join(" "),
        output.status,
        stderr(&output),
        fs::read_to_string(pgdata.join("pitr-recovery.log")).unwrap_or_default()
    );
    Restored {
        summary: json(&output),
        pgdata: pgdata.to_path_buf(),
        _guard: guard,
    }
}

/// [`restore`] from `repo` to `target` (as `--to` takes it), with `extra`
/// arguments.
pub fn restore_from_repo(
    command: Command,
    pgdata: &Path,
    repo: &Path,
    target: &str,
    extra: &[&str],
) -> Restored {
    let mut args = vec![
        OsStr::new("--repo"),
        repo.as_os_str(),
        OsStr::new("--to"),
        OsStr::new(target),
    ];
    args.extend(extra.iter().map(OsStr::new));
    restore(command, pgdata, args)
}

/// Stops whatever server runs on a data directory when dropped.
pub struct ServerGuard(pub PathBuf);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        stop_by_pid(&self.0);
    }
}

/// Runs SQL over the unix socket in `socket_dir`.
pub fn psql(socket_dir: &Path, port: u16, sql: &str) -> String {
    let output = as_pg_user(pg_bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-h",
        ])
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-c", sql])
        .output()
        .unwrap();
    check(output, &format!("psql {sql}")).trim().to_string()
}

/// initdb a cluster in `dir/source` (not started), with its socket in
/// `dir/run` and a free port: commit timestamps on, no fsync, UTC, no
/// autovacuum. Returns the data directory, the socket directory and the
/// port.
pub fn initdb(dir: &Path) -> (PathBuf, PathBuf, u16) {
    let pgdata = pg_owned_dir(&dir.join("source"));
    let run_dir = pg_owned_dir(&dir.join("run"));
    check(
        as_pg_user(pg_bin().join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&pgdata)
            .output()
            .unwrap(),
        "initdb",
    );
    let port = free_port();
    append_conf(
        &pgdata,
        &format!(
            "port = {port}\nlisten_addresses = ''\nunix_socket_directories = {}\ntrack_commit_timestamp = on\nfsync = off\nmax_wal_size = 256MB\ntimezone = 'UTC'\nlog_timezone = 'UTC'\nautovacuum = off\n",
            conf_quote(&run_dir.to_string_lossy())
        ),
    );
    (pgdata, run_dir, port)
}

/// `pg_ctl ARGS -D PGDATA -l LOG` as the PostgreSQL user; a failure shows
/// the server log.
pub fn pg_ctl(pgdata: &Path, log: &Path, args: &[&str]) {
    let output = as_pg_user(pg_bin().join("pg_ctl"))
        .args(args)
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(log)
        .output()
        .unwrap();
    let text = fs::read_to_string(log).unwrap_or_default();
    check(output, &format!("pg_ctl {args:?} (server log:\n{text})"));
}

/// Waits until `condition` holds, looking every `every`; the test fails
/// after `timeout`, naming `what` it waited for.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Appends `text` to the cluster's postgresql.conf.
pub fn append_conf(pgdata: &Path, text: &str) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(pgdata.join("postgresql.conf"))
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap();
}

/// A source cluster with archiving into `repo/wal`.
pub struct Cluster {
    pub dir: PathBuf,
    pub pgdata: PathBuf,
    pub port: u16,
    pub repo: PathBuf,
}

impl Cluster {
    /// `initdb` and start, archiving with `cp` like the PostgreSQL docs.
    pub fn start(dir: &Path, repo: &Path) -> Cluster {
        let wal = repo.join("wal");
        let archive_command = format!(
            "test ! -f {wal}/%f && cp %p {wal}/%f",
            wal = shell_quote(&wal.to_string_lossy())
        );
        Cluster::start_archiving(dir, repo, &archive_command)
    }

    /// `initdb` and start in `dir`, archiving with `cp` into a new
    /// repository `dir/repo` (its `repo` field).
    pub fn start_in(dir: &Path) -> Cluster {
        let repo = dir.join("repo");
        fs::create_dir_all(&repo).unwrap();
        Cluster::start(dir, &repo)
    }

    /// `initdb` and start with this `archive_command` (a shell command line
    /// with `%p` and `%f`); `repo/wal` is created for the postgres user.
    pub fn start_archiving(dir: &Path, repo: &Path, archive_command: &str) -> Cluster {
        pg_owned_dir(&repo.join("base"));
        pg_owned_dir(&repo.join("wal"));
        fs::set_permissions(repo, fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["base", "wal"] {
            fs::set_permissions(repo.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (pgdata, run_dir, port) = initdb(dir);
        append_conf(
            &pgdata,
            &format!(
                "wal_level = replica\narchive_mode = on\narchive_command = {archive}\nmax_wal_senders = 4\nmax_prepared_transactions = 4\n",
                archive = conf_quote(archive_command)
            ),
        );
        let started = as_pg_user(pg_bin().join("pg_ctl"))
            .args(["start", "-w", "-D"])
            .arg(&pgdata)
            .arg("-l")
            .arg(run_dir.join("server.log"))
            .output()
            .unwrap();
        let log = fs::read_to_string(run_dir.join("server.log")).unwrap_or_default();
        check(started, &format!("pg_ctl start (server log:\n{log})"));
        Cluster {
            dir: run_dir,
            pgdata,
            port,
            repo: repo.to_path_buf(),
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(&self.dir, self.port, sql)
    }

    /// `pg_basebackup` into `repo/base/<id>` with extra options.
    pub fn backup(&self, id: &str, options: &[&str]) {
        let target = self.repo.join("base").join(id);
        check(
            as_pg_user(pg_bin().join("pg_basebackup"))
                .arg("-D")
                .arg(&target)
                .args(["-U", "postgres", "-c", "fast", "-l", id, "-h"])
                .arg(&self.dir)
                .args(["-p", &self.port.to_string()])
                .args(options)
                .output()
                .unwrap(),
            "pg_basebackup",
        );
    }

    /// Commits one marker row in its own transaction; returns its xid and
    /// exact commit time (track_commit_timestamp).
    pub fn insert_marker(&self, id: i32) -> Marker {
        insert_marker(&self.dir, self.port, id)
    }

    /// Switches to a new segment and waits until everything is archived.
    pub fn archive_everything(&self) {
        archive_everything(&self.dir, self.port)
    }

    /// Makes `location` a directory the server may use (owned by the
    /// PostgreSQL user) and creates tablespace `name` there; returns the
    /// location.
    pub fn create_tablespace(&self, name: &str, location: &Path) -> PathBuf {
        let location = pg_owned_dir(location);
        self.sql(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            location.display()
        ));
        location
    }
}

/// A source cluster in `dir` archiving into a new repository `dir/repo`
/// (its `repo` field), with the `markers` table that
/// [`Cluster::insert_marker`] writes to.
pub fn cluster_with_markers(dir: &Path) -> Cluster {
    let cluster = Cluster::start_in(dir);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster
}

/// Waits until a restore into `parent` is staging: its staging directory
/// (hidden, beside the data directory) exists and holds a first file, so
/// that a signal sent now lands while files are copied.
pub fn wait_until_staging_under_way(parent: &Path) {
    let staging = || {
        names_in(parent)
            .into_iter()
            .find(|name| name.contains("pitr-staging"))
    };
    wait_for(
        "the staging directory",
        Duration::from_secs(60),
        Duration::from_millis(2),
        || staging().is_some(),
    );
    let staging_dir = parent.join(staging().unwrap());
    wait_for(
        "the first staged files",
        Duration::from_secs(60),
        Duration::from_millis(2),
        || fs::read_dir(&staging_dir).is_ok_and(|mut entries| entries.next().is_some()),
    );
}

/// Commits marker row `id` on the server at `socket_dir`:`port`.
pub fn insert_marker(socket_dir: &Path, port: u16, id: i32) -> Marker {
    let xid: u32 = psql(
        socket_dir,
        port,
        &format!("INSERT INTO markers VALUES ({id}) RETURNING xmin::text"),
    )
    .parse()
    .unwrap();
    let committed = psql(
        socket_dir,
        port,
        &format!(
            "SELECT to_char(pg_xact_commit_timestamp('{xid}'::xid) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ),
    );
    let committed = chrono::DateTime::parse_from_rfc3339(&committed).unwrap();
    Marker { id, xid, committed }
}

/// Switches to a new segment and waits until the server archived it.
pub fn archive_everything(socket_dir: &Path, port: u16) {
    let segment = psql(
        socket_dir,
        port,
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    );
    psql(socket_dir, port, "SELECT pg_switch_wal()");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut nudged = false;
    loop {
        let archived = psql(
            socket_dir,
            port,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        // Compare positions, not timelines: a new timeline's names sort
        // higher. The last file may be a backup history file
        // (`<segment>.<offset>.backup`): its segment is what counts.
        if archived.len() >= 24 && archived[8..24] >= segment[8..] {
            return;
        }
        // Right after a backup ends (its own switch), the current segment
        // may hold only records PostgreSQL deems unimportant, and
        // pg_switch_wal() then leaves it open: write one record that
        // counts (no transaction, so no commit to change what the tests
        // expect) and switch again.
        if !nudged && started.elapsed() > Duration::from_secs(2) {
            nudged = true;
            psql(
                socket_dir,
                port,
                "SELECT pg_logical_emit_message(false, 'pitr-test', 'switch')",
            );
            psql(socket_dir, port, "SELECT pg_switch_wal()");
        }
        assert!(
            Instant::now() < deadline,
            "WAL {segment} was not archived in time (last {archived})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// Restarts the server (for settings that need it, after ALTER SYSTEM).
    pub fn restart(&self) {
        check(
            as_pg_user(pg_bin().join("pg_ctl"))
                .args(["restart", "-w", "-m", "fast", "-D"])
                .arg(&self.pgdata)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .output()
                .unwrap(),
            "pg_ctl restart",
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_by_pid(&self.pgdata);
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Marker {
    pub id: i32,
    pub xid: u32,
    pub committed: chrono::DateTime<chrono::FixedOffset>,
}

/// The midpoint between two commits: a target that lies strictly between.
pub fn between(a: &Marker, b: &Marker) -> chrono::DateTime<chrono::FixedOffset> {
    a.committed + (b.committed - a.committed) / 2
}

/// A copy of the `pitr` binary that every user can execute (the checkout
/// may be in a private home directory).
pub fn shared_pitr_binary(dir: &Path) -> PathBuf {
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let target = bin_dir.join("pitr");
    fs::copy(env!("CARGO_BIN_EXE_pitr"), &target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    // A child forked by another test thread while the copy was open holds
    // its write descriptor until that child execs: running the copy fails
    // with ETXTBSY for that moment. Wait it out once here.
    for _ in 0..200 {
        match Command::new(&target).arg("--version").output() {
            Err(error) if error.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => break,
        }
    }
    target
}
