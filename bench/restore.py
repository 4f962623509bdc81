#!/usr/bin/env python3
"""Restore benchmark of pitr (issue 7). Run through bench/restore.sh.

One run: build a pgbench cluster, a gzip tar pg_basebackup in a pitr
repository, a pgBackRest stanza and full backup of the same cluster, a write
workload with marker rows around a target time, then restore to that target
ROUNDS times with each method, interleaved, verify each restore by its marker
count, and print medians, ratios and floors.

Python 3.11 standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALE = int(os.environ.get("SCALE", "300"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
# The workload runs until it has written WORKLOAD_WAL_MB of WAL (the issue's
# 440 MiB by default, whatever the machine's load), or for WORKLOAD_SECONDS.
WORKLOAD_WAL_MB = int(os.environ.get("WORKLOAD_WAL_MB", "440"))
WORKLOAD_SECONDS = int(os.environ.get("WORKLOAD_SECONDS", "600"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PITR_BUILD = Path(os.environ.get("PITR_BUILD", "target/release/pitr"))
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp"))
KEEP = os.environ.get("KEEP", "") not in ("", "0")
PG_USER = "postgres"
BACKUP_ID = "base1"
STANZA = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IS_ROOT = os.geteuid() == 0

# PITR_COMPARE: a second pitr binary (another branch, a candidate fix), run
# with the same arguments as `pitr`, as one more method.
PITR_COMPARE = os.environ.get("PITR_COMPARE", "")
METHODS = ["manual", "pgbackrest", "pgbackrest-async", "pitr", "pitr-no-verify"] + \
    (["pitr-compare"] if PITR_COMPARE else []) + ["replay-floor", "replay-floor-early"]
LABELS = {
    "manual": "manual runbook (tar -xzf, cp)",
    "pgbackrest": "pgBackRest restore, sync archive-get",
    "pgbackrest-async": "pgBackRest restore, async archive-get",
    "pitr": "pitr restore",
    "pitr-no-verify": "pitr restore --no-verify",
    "pitr-compare": "pitr restore, PITR_COMPARE binary",
    "replay-floor": "PostgreSQL alone, WAL in pg_wal",
    "replay-floor-early": "... promoted as pitr does (at redo start)",
}

T0 = time.monotonic()


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp} +{time.monotonic() - T0:6.0f}s] {message}", flush=True)


def as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if IS_ROOT else cmd


def run(cmd, pg=False, check=True, capture=False, **kw) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    if pg:
        cmd = as_pg(cmd)
    result = subprocess.run(
        cmd, check=False, text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None, **kw)
    if check and result.returncode != 0:
        # The end of what it said (the error is there), not a page of it.
        detail = (result.stderr or "").strip()[-3000:] if capture else ""
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{detail}")
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def chown_pg(path: Path) -> None:
    if IS_ROOT:
        shutil.chown(path, PG_USER, PG_USER)


def mkdir_pg(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    chown_pg(path)
    return path


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1, unit=""):
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def initdb(pgdata: Path, port: int, sock: Path, settings: str) -> None:
    """A new cluster in `pgdata` for the postgres OS user, listening only on
    the socket in `sock` at `port`, with wal_level replica and `settings`."""
    mkdir_pg(pgdata)
    run([PG_BIN / "initdb", "-U", "postgres", "--auth=trust", "-D", pgdata], pg=True, capture=True)
    with open(pgdata / "postgresql.conf", "a") as f:
        f.write(f"""
port = {port}
listen_addresses = ''
unix_socket_directories = '{sock}'
wal_level = replica
{settings}""")


# --- machine probes ------------------------------------------------------------

class Probe:
    """CPU (all cores), disk writes and memory dirty pages between two points."""

    def __init__(self, device: tuple[int, int]):
        self.device = device
        self.start = self.sample()

    def sample(self):
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        total = sum(fields[:8])
        written = 0
        with open("/proc/diskstats") as f:
            for line in f:
                parts = line.split()
                if (int(parts[0]), int(parts[1])) == self.device:
                    written = int(parts[9]) * 512
        return (time.monotonic(), total, idle, fields[4], written)

    def since(self, start=None):
        start = start or self.start
        now = self.sample()
        total = max(1, now[1] - start[1])
        return {
            "busy_pct": 100.0 * (total - (now[2] - start[2])) / total,
            "iowait_pct": 100.0 * (now[3] - start[3]) / total,
            "disk_mb": (now[4] - start[4]) / 1e6,
            "seconds": now[0] - start[0],
        }


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def proc_cpu(pid: int, children=False) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # rest[0] is field 3 (state); utime/stime are fields 14/15, cutime/cstime 16/17.
    index = 13 if children else 11
    return (int(rest[index]) + int(rest[index + 1])) / CLK_TCK


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one), all threads."""
    on_cpu = waiting = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            on_cpu += int(fields[0])
            waiting += int(fields[1])
    except OSError:
        return None
    return on_cpu / 1e9, waiting / 1e9


def dirty_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) / 1024
    return 0.0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


# --- the bench -----------------------------------------------------------------

class Bench:
    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="pitr-bench.", dir=BENCH_DIR))
        os.chmod(self.work, 0o755)
        st = os.stat(self.work)
        self.device = (os.major(st.st_dev), os.minor(st.st_dev))
        self.started_pgdata: list[Path] = []
        self.children: list[subprocess.Popen] = []
        self.sock = mkdir_pg(self.work / "sock", 0o755)
        self.logs = mkdir_pg(self.work / "logs", 0o755)
        self.repo = mkdir_pg(self.work / "repo", 0o755)
        self.archive = mkdir_pg(self.repo / "wal", 0o755)
        mkdir_pg(self.repo / "base", 0o755)
        self.primary = self.work / "primary"
        self.port = 5400 + random.randrange(300)
        self.results: list[dict] = []
        self.floors: dict[str, list[float]] = {}
        self.facts: dict[str, object] = {}
        bindir = mkdir_pg(self.work / "bin", 0o755)
        self.pitr = bindir / "pitr"
        shutil.copy2(PITR_BUILD, self.pitr)
        os.chmod(self.pitr, 0o755)
        self.pitr_compare = bindir / "pitr-compare"
        if PITR_COMPARE:
            shutil.copy2(PITR_COMPARE, self.pitr_compare)
            os.chmod(self.pitr_compare, 0o755)

    # -- helpers --

    def psql(self, sql: str, port: int | None = None, host: Path | None = None) -> str:
        out = run([PG_BIN / "psql", "-X", "-q", "-A", "-t", "-h", host or self.sock,
                   "-p", port or self.port, "-U", "postgres", "-d", "postgres", "-c", sql],
                  pg=True, capture=True)
        return out.stdout.strip()

    def postmaster_pid(self, pgdata: Path) -> int | None:
        try:
            text = (pgdata / "postmaster.pid").read_text()
            return int(text.splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, pgdata: Path, timeout: float = 120) -> None:
        """Fast shutdown of the postmaster named by postmaster.pid, by PID."""
        pid = self.postmaster_pid(pgdata)
        if pid is None or not alive(pid):
            return
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGQUIT)
            time.sleep(2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def start(self, pgdata: Path, logfile: Path) -> None:
        self.started_pgdata.append(pgdata)
        run([PG_BIN / "pg_ctl", "start", "-W", "-s", "-D", pgdata, "-l", logfile], pg=True)

    def own_stray_processes(self) -> list[int]:
        """PIDs of processes (pgBackRest's async archive-get) whose command line
        names this run's directory: they are this run's, nobody else's."""
        pids = []
        marker = str(self.work).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if marker in cmdline and b"pgbackrest" in cmdline:
                pids.append(int(entry))
        return pids

    def kill_strays(self) -> None:
        for pid in self.own_stray_processes():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def sync(self) -> None:
        """syncfs on this run's filesystem, so that each measured restore
        starts without another's dirty pages to write back."""
        run(["sync", "-f", self.work])

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
        for pgdata in reversed(self.started_pgdata):
            try:
                self.stop(pgdata, timeout=60)
            except Exception as error:  # keep cleaning
                print(f"cleanup: stopping {pgdata}: {error}", file=sys.stderr)
        self.kill_strays()
        if KEEP:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- setup --

    def check_space(self) -> None:
        st = os.statvfs(self.work)
        free = st.f_bavail * st.f_frsize
        need = SCALE * 80 * 2**20 + 3 * 2**30
        self.facts["free_gb"] = free / 1e9
        log(f"temporary directory {self.work}: {free / 1e9:.1f} GB free, ~{need / 1e9:.1f} GB needed at peak")
        if free < need:
            raise RuntimeError(f"not enough free space in {self.work}: {free / 1e9:.1f} GB free, "
                               f"{need / 1e9:.1f} GB needed for scale {SCALE}")
        repo_dev = os.stat(Path(__file__).resolve().parent).st_dev
        if os.stat(self.work).st_dev != repo_dev:
            log("note: the temporary directory is not on the same filesystem as this repository")

    def pgbackrest_conf(self, name: str, extra: str = "", repo: str = "") -> Path:
        """A pgBackRest configuration file for the primary's stanza; `repo`,
        the repository's settings, defaults to the directory pgbr-repo."""
        path = self.work / name
        repo = repo or f"repo1-path={self.work}/pgbr-repo\n"
        path.write_text(f"""[global]
{repo}repo1-retention-full=1
compress-type=gz
process-max=2
start-fast=y
log-path={self.work}/pgbr-log
lock-path={self.work}/pgbr-lock
spool-path={self.work}/pgbr-spool
log-level-console=warn
log-level-file=info
{extra}
[{STANZA}]
pg1-path={self.primary}
pg1-port={self.port}
pg1-socket-path={self.sock}
""")
        os.chmod(path, 0o644)
        return path

    def make_primary(self) -> None:
        """The primary every benchmark restores: initdb, archiving on (to
        /bin/true until the benchmark sets its archive_command), pgbench -i
        at SCALE, and the markers table."""
        log(f"1. primary: initdb, pgbench -i -s {SCALE}")
        initdb(self.primary, self.port, self.sock, """archive_mode = on
archive_command = '/bin/true'
max_wal_size = 4GB
""")
        self.start(self.primary, self.logs / "primary.log")
        self.wait_ready(self.primary)
        started = time.monotonic()
        run([PG_BIN / "pgbench", "-i", "-s", SCALE, "-I", "dtGvp", "-q",
             "-h", self.sock, "-p", self.port, "-U", "postgres", "postgres"], pg=True, capture=True)
        self.psql("CREATE TABLE markers (n int PRIMARY KEY, at timestamptz NOT NULL)")
        self.facts["pgbench_init_s"] = time.monotonic() - started
        size = int(self.psql("SELECT pg_database_size('postgres')"))
        self.facts["db_size_gb"] = size / 2**30
        log(f"   pgbench -i took {self.facts['pgbench_init_s']:.0f}s; database {size / 2**30:.2f} GiB")

    # The steps of setup() that bench/object.py and bench/seekable.py take too.

    def pgbackrest_dirs(self, *more: str) -> None:
        """pgBackRest's log, lock and spool directories (and `more`) in the
        temporary directory, for the postgres OS user."""
        for d in (*more, "pgbr-log", "pgbr-lock", "pgbr-spool"):
            mkdir_pg(self.work / d, 0o750)

    def log_versions(self, more: str = "") -> None:
        version = run(["pgbackrest", "version"], capture=True).stdout.strip()
        pg_version = run([PG_BIN / "postgres", "--version"], capture=True).stdout.strip()
        self.facts["versions"] = f"{pg_version}; {version}"
        log(f"{pg_version}; {version}; pitr {PITR_BUILD}{more}")

    def archive_also_to_pgbackrest(self, archive_command: str) -> None:
        """The primary archives with `archive_command`, which pushes to
        pgBackRest too; the stanza is created and checked."""
        self.psql(f"ALTER SYSTEM SET archive_command = '{archive_command}'")
        self.psql("SELECT pg_reload_conf()")
        time.sleep(1)
        for step in ("stanza-create", "check"):
            run(["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}", step], pg=True, capture=True)

    def pgbackrest_full_backup(self, local_repo: Path | None, where: str = "") -> None:
        """`pgbackrest backup --type=full`, timed; with `local_repo` (the
        repository's directory), the size of what it stored too. `where`
        names the repository in the log."""
        log(f"3. pgbackrest backup --type=full{where} (gz, process-max 2)")
        started = time.monotonic()
        run(["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}", "--type=full", "backup"],
            pg=True, capture=True)
        self.facts["pgbackrest_backup_s"] = time.monotonic() - started
        if local_repo is None:
            log(f"   {self.facts['pgbackrest_backup_s']:.0f}s")
            return
        pgbr_bytes = sum(p.stat().st_size for p in (local_repo / "backup").rglob("*") if p.is_file())
        self.facts["pgbackrest_backup_mib"] = pgbr_bytes / 2**20
        log(f"   {self.facts['pgbackrest_backup_s']:.0f}s, {pgbr_bytes / 2**20:.0f} MiB in the repository")

    def remove_primary(self, restores_need: str = "the repositories") -> None:
        self.psql("CHECKPOINT")
        self.stop(self.primary)
        shutil.rmtree(self.primary)
        log(f"   primary stopped and removed (the restores need only {restores_need})")

    def setup(self) -> None:
        self.pgbackrest_dirs("pgbr-repo")
        self.pgbr_conf = self.pgbackrest_conf("pgbackrest.conf")
        self.pgbr_async_conf = self.pgbackrest_conf(
            "pgbackrest-async.conf",
            "archive-async=y\narchive-get-queue-max=512MiB\n")
        self.log_versions(f"; compared with {PITR_COMPARE}" if PITR_COMPARE else "")

        self.make_primary()

        # Archive into the pitr repository (cp, what the manual runbook reads
        # too) and into pgBackRest, from one archive_command.
        self.archive_also_to_pgbackrest(f"cp %p {self.archive}/%f && pgbackrest --config={self.pgbr_conf} "
                                        f"--stanza={STANZA} archive-push %p")

        log(f"2. pg_basebackup -Ft -z -X fetch into repo/base/{BACKUP_ID}")
        started = time.monotonic()
        run([PG_BIN / "pg_basebackup", "-h", self.sock, "-p", self.port, "-U", "postgres",
             "-D", self.repo / "base" / BACKUP_ID, "-Ft", "-z", "-X", "fetch", "-c", "fast", "-l", BACKUP_ID],
            pg=True, capture=True)
        self.facts["basebackup_s"] = time.monotonic() - started
        self.base_tar = self.repo / "base" / BACKUP_ID / "base.tar.gz"
        self.facts["base_tar_mib"] = self.base_tar.stat().st_size / 2**20
        log(f"   {self.facts['basebackup_s']:.0f}s, base.tar.gz {self.facts['base_tar_mib']:.0f} MiB")

        self.pgbackrest_full_backup(self.work / "pgbr-repo")

        self.workload()
        self.remove_primary()

    def wait_ready(self, pgdata: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run([PG_BIN / "pg_isready", "-q", "-h", self.sock, "-p", self.port], check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{pgdata} did not start")

    def workload(self) -> None:
        log(f"4. workload: pgbench -c 2 -j 2 until {WORKLOAD_WAL_MB} MiB of WAL (at most {WORKLOAD_SECONDS}s), "
            f"a marker row every second; the target after 85% of it")
        start_lsn = self.psql("SELECT pg_current_wal_lsn()")
        history0 = int(self.psql("SELECT count(*) FROM pgbench_history"))
        # pgbench is a client: it runs as this user, so it can be stopped by its PID.
        bench = subprocess.Popen(
            [str(PG_BIN / "pgbench"), "-n", "-T", str(WORKLOAD_SECONDS), "-c", "2", "-j", "2",
             "-h", str(self.sock), "-p", str(self.port), "-U", "postgres", "postgres"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.children.append(bench)
        started = time.monotonic()
        n = 0
        self.target = None
        try:
            while bench.poll() is None:
                n += 1
                wal = int(self.psql(f"INSERT INTO markers VALUES ({n}, clock_timestamp()) "
                                    f"RETURNING pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')::bigint"))
                done = max(wal / (WORKLOAD_WAL_MB * 2**20), (time.monotonic() - started) / WORKLOAD_SECONDS)
                if done >= 1 and self.target is not None:
                    # SIGTERM: a job started in the background from a script
                    # ignores SIGINT, and so would pgbench.
                    bench.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.5)
                if self.target is None and done >= 0.85:
                    row = self.psql(
                        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),"
                        " pg_current_wal_lsn()")
                    stamp, self.target_lsn = row.split("|")
                    self.target = stamp + "+00:00"
                    self.expected = n
                time.sleep(0.5)
        finally:
            if bench.poll() is None:
                bench.send_signal(signal.SIGTERM)
            output = bench.communicate()[0]
        seconds = time.monotonic() - started
        if self.target is None:
            raise RuntimeError(f"pgbench ended before the target was chosen:\n{output}")
        transactions = int(self.psql("SELECT count(*) FROM pgbench_history")) - history0
        self.facts["workload_s"] = seconds
        tps = transactions / seconds
        n += 1
        self.psql(f"INSERT INTO markers VALUES ({n}, clock_timestamp())")
        end_lsn = self.psql("SELECT pg_current_wal_lsn()")
        segment = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 1800
        while True:
            last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last >= segment:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"archiving did not reach {segment} (last archived {last})")
            time.sleep(0.5)
        wal = int(self.psql(f"SELECT pg_wal_lsn_diff('{end_lsn}', '{start_lsn}')"))
        self.facts.update(
            tps=round(tps), markers=n, expected=self.expected,
            target=self.target, target_lsn=self.target_lsn, workload_wal_mib=wal / 2**20)
        # WAL each restore replays: from its backup's start to the target.
        history = sorted(self.archive.glob("*.backup"))[0].read_text()
        backup_start = re.search(r"START WAL LOCATION: ([0-9A-F/]+)", history).group(1)
        self.facts["replay_wal_mib"] = self.lsn_diff(self.target_lsn, backup_start) / 2**20
        self.facts["archive_segments"] = len([p for p in self.archive.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name)])
        log(f"   {seconds:.0f}s at {self.facts['tps']} tps, {wal / 2**20:.0f} MiB of WAL; target {self.target} "
            f"(after marker {self.expected} of {n}); {self.facts['replay_wal_mib']:.0f} MiB of WAL "
            f"from the backup's start to the target; archived through {segment}")

    @staticmethod
    def lsn_diff(a: str, b: str) -> int:
        def value(lsn):
            hi, lo = lsn.split("/")
            return (int(hi, 16) << 32) + int(lo, 16)
        return value(a) - value(b)

    # -- one restore --

    def recovery_conf(self, pgdata: Path, port: int, settings: dict[str, str]) -> None:
        lines = ["", "# bench"]
        base = {"port": str(port), "unix_socket_directories": str(self.sock), "listen_addresses": "",
                "archive_mode": "off"}
        for key, value in {**base, **settings}.items():
            lines.append(f"{key} = '{value}'")
        with open(pgdata / "postgresql.auto.conf", "a") as f:
            f.write("\n".join(lines) + "\n")
        signal_file = pgdata / "recovery.signal"
        signal_file.touch()
        chown_pg(signal_file)

    def wait_promoted(self, pgdata: Path, logfile: Path, pause_then_promote: bool,
                      timeout: float = 3600, early: bool = False) -> float:
        """Follows the server log until the server accepts writes; returns the
        monotonic time at which that line was seen."""
        deadline = time.monotonic() + timeout
        offset = 0
        pending = ""
        promoted_asked = False
        pid = None
        while True:
            try:
                with open(logfile) as f:
                    f.seek(offset)
                    chunk = f.read()
                    offset = f.tell()
            except FileNotFoundError:
                chunk = ""
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                if "database system is ready to accept connections" in line:
                    return time.monotonic()
                if "FATAL:" in line or "PANIC:" in line:
                    raise RuntimeError(f"{pgdata}: {line}")
                # early: promote as pitr does, once replay starts; archive
                # recovery acts on it only when it pauses at the target.
                trigger = "redo starts at" if early else "pausing at the end of recovery"
                if pause_then_promote and trigger in line and not promoted_asked:
                    promoted_asked = True
                    run([PG_BIN / "pg_ctl", "promote", "-W", "-s", "-D", pgdata], pg=True)
            pid = pid or self.postmaster_pid(pgdata)
            if pid is not None and not alive(pid):
                raise RuntimeError(f"{pgdata}: the server exited; see {logfile}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pgdata}: not promoted after {timeout}s; see {logfile}")
            time.sleep(0.05)

    @staticmethod
    def log_phases(logfile: Path) -> dict:
        """Phases of recovery from the server log's timestamps (log_line_prefix '%m')."""
        stamps = {}
        restored = 0
        stamp_re = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})")
        try:
            text = logfile.read_text(errors="replace")
        except OSError:
            return {}
        for line in text.splitlines():
            m = stamp_re.match(line)
            if not m:
                continue
            t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            stamps.setdefault("first", t)
            for key, needle in (("redo", "redo starts at"), ("stop", "recovery stopping"),
                                ("ready", "database system is ready to accept connections")):
                if needle in line:
                    stamps.setdefault(key, t)
            if "restored log file" in line:
                restored += 1

        def span(a, b):
            return (stamps[b] - stamps[a]).total_seconds() if a in stamps and b in stamps else None
        return {"startup": span("first", "redo"), "redo": span("redo", "stop"),
                "end": span("stop", "ready"), "restored": restored}

    def verify_and_remove(self, pgdata: Path, port: int, host: Path) -> int:
        count = int(self.psql("SELECT count(*) FROM markers", port=port, host=host))
        self.stop(pgdata)
        self.kill_strays()
        shutil.rmtree(pgdata)
        return count

    def checked(self, row: dict, method: str, round_no: int, pgdata: Path, port: int, host: Path) -> dict:
        """`row` with the markers the restored server holds (it is then
        stopped and removed); a failure unless they are the expected ones."""
        row["count"] = self.verify_and_remove(pgdata, port, host)
        row["ok"] = row["count"] == self.expected
        if not row["ok"]:
            raise RuntimeError(f"{method} round {round_no}: {row['count']} markers, expected {self.expected}")
        return row

    def restore_round(self, round_no: int, methods: list[str], base_port: int, prefix: str = "") -> None:
        """One restore by each method (each on its own port), its row kept."""
        for index, method in enumerate(methods):
            log(f"{prefix}round {round_no}/{ROUNDS}: {method}")
            row = self.restore(method, round_no, base_port + index)
            self.results.append(row)
            log(f"   staging {fmt(row.get('staging'))}s, replay {fmt(row.get('replay'))}s, total {fmt(row.get('total'))}s; "
                f"{row['count']} markers (expected {self.expected}); load {row['load1']:.1f}")

    def restore_start(self, method: str, round_no: int) -> tuple[Path, Path, dict]:
        """Before a timed restore: its data directory and log file, the disk
        synced, pgBackRest's spool emptied; the row of figures begun."""
        pgdata = self.work / "restore" / f"{method}-r{round_no}"
        mkdir_pg(pgdata.parent, 0o755)
        logfile = self.logs / f"{method}-r{round_no}.log"
        self.sync()
        for spool in (self.work / "pgbr-spool").iterdir():
            shutil.rmtree(spool, ignore_errors=True)
        return pgdata, logfile, {"method": method, "round": round_no, "load1": loadavg()}

    def restore(self, method: str, round_no: int, port: int) -> dict:
        pgdata, logfile, row = self.restore_start(method, round_no)
        probe = Probe(self.device)
        cpu0 = children_cpu()
        host = self.sock
        t0 = time.monotonic()
        staged_at = replay_cpu = None
        if method == "manual":
            mkdir_pg(pgdata)
            run(["tar", "-xzf", self.base_tar, "-C", pgdata], pg=True)
            self.recovery_conf(pgdata, port, {
                "restore_command": f"cp {self.archive}/%f %p",
                "recovery_target_time": self.target,
                "recovery_target_action": "promote"})
        elif method.startswith("pgbackrest"):
            conf = self.pgbr_async_conf if method.endswith("async") else self.pgbr_conf
            mkdir_pg(pgdata)
            run(["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", f"--pg1-path={pgdata}",
                 "--type=time", f"--target={self.target}", "--target-action=promote",
                 "--process-max=2", "--archive-mode=off", "restore"], pg=True)
            self.recovery_conf(pgdata, port, {})
            auto = (pgdata / "postgresql.auto.conf").read_text()
            row["restore_command"] = re.findall(r"restore_command = '(.*)'", auto)[0]
        elif method.startswith("replay-floor"):
            # Not timed: extraction, every archived segment into pg_wal, sync.
            mkdir_pg(pgdata)
            run(["tar", "-xzf", self.base_tar, "-C", pgdata], pg=True)
            if "uncompressed_gb" not in self.facts:
                size = run(["du", "-sb", pgdata], capture=True).stdout.split()[0]
                self.facts["uncompressed_gb"] = int(size) / 1e9
            # The segments replay reads: up to the one after the target's
            # (the stop record may be there). Later ones would only be
            # recycled at promotion, which pitr's restores never do.
            hi, lo = (int(part, 16) for part in self.target_lsn.split("/"))
            last = f"00000001{hi:08X}{(lo >> 24):08X}"
            needed = sorted(p.name for p in self.archive.iterdir()
                            if re.fullmatch(r"[0-9A-F]{24}", p.name) and p.name > last)[:1]
            last = needed[0] if needed else last
            for segment in self.archive.iterdir():
                if re.fullmatch(r"[0-9A-F]{24}", segment.name) and segment.name <= last \
                        and not (pgdata / "pg_wal" / segment.name).exists():
                    shutil.copyfile(segment, pgdata / "pg_wal" / segment.name)
                    chown_pg(pgdata / "pg_wal" / segment.name)
            self.recovery_conf(pgdata, port, {
                "restore_command": "false",
                "recovery_target_time": self.target,
                "recovery_target_action": "pause",
                "recovery_init_sync_method": "syncfs"})
            self.sync()
            probe = Probe(self.device)
            cpu0 = children_cpu()
            t0 = time.monotonic()
        if method.startswith("pitr"):
            timefile = self.work / "time.txt"
            binary = self.pitr_compare if method == "pitr-compare" else self.pitr
            cmd = ["/usr/bin/time", "-v", "-o", timefile, binary, "restore", "--repo", self.repo,
                   "--to", self.target, "--backup", BACKUP_ID, "--pgdata", pgdata, "--port", port,
                   "--json", "--quiet"] + (["--no-verify"] if method == "pitr-no-verify" else [])
            self.started_pgdata.append(pgdata)
            proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.children.append(proc)
            pitr_pid = None
            stage_probe = None
            stage_cpu = None
            while proc.poll() is None:
                if pitr_pid is None:
                    try:
                        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                        pitr_pid = int(kids[0]) if kids else None
                    except OSError:
                        pass
                if pitr_pid is not None:
                    cpu = proc_cpu(pitr_pid)
                    sched = schedstat(pitr_pid)
                    if (pgdata / "postmaster.pid").exists() and staged_at is None:
                        staged_at = time.monotonic()
                        stage_cpu = cpu
                        stage_probe = probe.since()
                        row["dirty_mb"] = dirty_mb()
                        if sched:
                            row["stage_oncpu"], row["stage_runwait"] = sched
                            row["stage_wall"] = staged_at - t0
                            row["stage_blocked"] = row["stage_wall"] - sched[0] - sched[1]
                time.sleep(0.05)
            out, err = proc.communicate()
            t2 = time.monotonic()
            if proc.returncode != 0:
                raise RuntimeError(f"pitr restore failed ({proc.returncode}):\n{err}\n{out}")
            report = json.loads(out)
            seconds = report["seconds"]
            host = Path(report["socket_dir"])
            row["staging"] = seconds["plan"] + seconds["staging"]
            row["replay"] = seconds["recovery"]
            row["pitr_plan"] = seconds["plan"]
            row["pitr_total_internal"] = seconds["total"]
            row["state"] = report["state"]
            timing = timefile.read_text()
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
            row["rss_mb"] = int(rss.group(1)) / 1024 if rss else None
            user = float(re.search(r"User time \(seconds\): ([0-9.]+)", timing).group(1))
            system = float(re.search(r"System time \(seconds\): ([0-9.]+)", timing).group(1))
            row["pitr_cpu"] = user + system
            row["stage_cpu"] = stage_cpu
            if stage_probe:
                row["stage_busy_pct"] = stage_probe["busy_pct"]
                row["stage_disk_mb"] = stage_probe["disk_mb"]
            logfile = pgdata / "pitr-recovery.log"
        else:
            t1 = time.monotonic()
            floor = method.startswith("replay-floor")
            row["staging"] = None if floor else t1 - t0
            row["stage_cpu"] = None if floor else children_cpu() - cpu0
            stage = probe.since()
            row["stage_busy_pct"], row["stage_disk_mb"] = stage["busy_pct"], stage["disk_mb"]
            row["dirty_mb"] = dirty_mb()
            self.start(pgdata, logfile)
            t2 = self.wait_promoted(pgdata, logfile, pause_then_promote=floor,
                                    early=(method == "replay-floor-early"))
            row["replay"] = t2 - t1
        pm = self.postmaster_pid(pgdata)
        # The startup process (and the restore_command it ran) has exited and
        # been reaped by the postmaster by now: its CPU is in cutime/cstime.
        replay_cpu = proc_cpu(pm, children=True) if pm else None
        row["replay_cpu"] = replay_cpu
        row["total"] = None if method.startswith("replay-floor") else t2 - t0
        overall = probe.since()
        row["busy_pct"], row["iowait_pct"], row["disk_mb"] = overall["busy_pct"], overall["iowait_pct"], overall["disk_mb"]
        row.update(self.log_phases(logfile))
        if method.startswith("pitr"):
            shutil.copyfile(logfile, self.logs / f"{method}-r{round_no}.log")
        return self.checked(row, method, round_no, pgdata, port, host)

    # -- floors --

    def floor_round(self) -> None:
        self.sync()
        f = self.work / "dd.tmp"
        mib = 2048 if SCALE >= 100 else 1024
        started = time.monotonic()
        run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fdatasync"], capture=True)
        self.floors.setdefault("disk write MB/s (dd conv=fdatasync)", []).append(mib * 2**20 / 1e6 / (time.monotonic() - started))
        f.unlink()
        for tool in ("gzip", "pigz"):
            if shutil.which(tool):
                started = time.monotonic()
                run(["sh", "-c", f"{tool} -dc '{self.base_tar}' > /dev/null"])
                self.floors.setdefault(f"{tool} -dc base.tar.gz > /dev/null, s", []).append(time.monotonic() - started)

    # -- report --

    def report(self) -> None:
        by = {m: [r for r in self.results if r["method"] == m] for m in METHODS}
        med = {m: {k: median([r.get(k) for r in rows]) for k in
                   ("staging", "replay", "total", "startup", "redo", "end", "stage_cpu", "replay_cpu", "dirty_mb",
                    "stage_oncpu", "stage_runwait", "stage_wall", "stage_blocked",
                    "busy_pct", "iowait_pct", "stage_busy_pct", "disk_mb", "stage_disk_mb", "restored", "load1")}
               for m, rows in by.items()}
        facts = self.facts
        print()
        print("=" * 100)
        print(f"Restore benchmark, pgbench scale {SCALE}, {ROUNDS} round(s), {dt.datetime.now():%Y-%m-%d %H:%M}")
        print(f"  {facts.get('versions')}; {os.cpu_count()} CPUs; {Path('/proc/meminfo').read_text().split()[1]} kB RAM")
        print(f"  database {facts.get('db_size_gb', 0):.2f} GiB ({facts.get('uncompressed_gb', 0):.2f} GB in the backup); "
              f"base.tar.gz {facts.get('base_tar_mib', 0):.0f} MiB; pgBackRest backup {facts.get('pgbackrest_backup_mib', 0):.0f} MiB")
        print(f"  workload {facts.get('workload_wal_mib', 0):.0f} MiB of WAL in {facts.get('workload_s', 0):.0f}s at {facts.get('tps')} tps (pgbench -c 2); "
              f"{facts.get('replay_wal_mib', 0):.0f} MiB of WAL from the backup's start to the target")
        print(f"  target {facts.get('target')}: {facts.get('expected')} of {facts.get('markers')} markers")
        print(f"  setup: pgbench -i {facts.get('pgbench_init_s', 0):.0f}s, pg_basebackup {facts.get('basebackup_s', 0):.0f}s, "
              f"pgbackrest backup {facts.get('pgbackrest_backup_s', 0):.0f}s")
        print()
        print("Per restore (seconds; staging = extraction until the server is started, replay = server start until")
        print("promoted; startup/redo/end = from the server log: start->redo starts, redo->target, target->accepting writes;")
        print("cpu = user+sys of the staging tools, and of the startup process with its restore_commands;")
        print("busy = all CPUs of the machine, other users included; disk = MB written to the device, other users")
        print("included; dirty = MB of dirty page cache when the server was started; load = 1-min load average)")
        head = (f"{'method':18} {'rnd':>3} {'staging':>8} {'replay':>7} {'total':>7} | {'startup':>7} {'redo':>6} {'end':>5} "
                f"{'segs':>4} | {'stg cpu':>7} {'rpl cpu':>7} | {'busy%':>5} {'iow%':>4} {'disk MB':>7} {'dirty':>5} {'load':>5}")
        print(head)
        print("-" * len(head))
        for r in self.results:
            print(f"{r['method']:18} {r['round']:>3} {fmt(r.get('staging')):>8} {fmt(r.get('replay')):>7} {fmt(r.get('total')):>7} | "
                  f"{fmt(r.get('startup')):>7} {fmt(r.get('redo')):>6} {fmt(r.get('end')):>5} {r.get('restored', 0):>4} | "
                  f"{fmt(r.get('stage_cpu')):>7} {fmt(r.get('replay_cpu')):>7} | {fmt(r.get('busy_pct'), 0):>5} "
                  f"{fmt(r.get('iowait_pct'), 0):>4} {fmt(r.get('disk_mb'), 0):>7} {fmt(r.get('dirty_mb'), 0):>5} {fmt(r.get('load1'), 1):>5}")
        print()
        print(f"Medians of {ROUNDS} round(s), and pitr's ratio to each")
        head = (f"{'method':40} {'staging':>8} {'replay':>7} {'total':>7} | {'pitr/it staging':>15} {'replay':>7} {'total':>7}")
        print(head)
        print("-" * len(head))
        p = med["pitr"]

        def ratio(a, b):
            return a / b if a is not None and b else None
        for m in METHODS:
            x = med[m]
            print(f"{LABELS[m]:40} {fmt(x['staging']):>8} {fmt(x['replay']):>7} {fmt(x['total']):>7} | "
                  f"{fmt(ratio(p['staging'], x['staging']), 2):>15} {fmt(ratio(p['replay'], x['replay']), 2):>7} "
                  f"{fmt(ratio(p['total'], x['total']), 2):>7}")
        print()
        print("Floors (median of the rounds)")
        for name, values in self.floors.items():
            print(f"  {name:45} {fmt(median(values), 1):>8}   (rounds: {', '.join(fmt(v, 1) for v in values)})")
        disk = median(self.floors.get("disk write MB/s (dd conv=fdatasync)", []))
        size = facts.get("uncompressed_gb")
        if disk and size:
            print(f"  {'writing the backup at that speed, s':45} {size * 1e3 / disk:8.1f}   ({size:.2f} GB)")
        print(f"  {'PostgreSQL replay, all WAL in pg_wal, s':45} {fmt(med['replay-floor']['replay']):>8}   "
              f"(start -> promoted; pause at the target, then pg_ctl promote; data synced beforehand;"
              f" the segments up to the target's next one in pg_wal)")
        print(f"  {'... promoted as pitr does, s':45} {fmt(med['replay-floor-early']['replay']):>8}   "
              f"(the same, but pg_ctl promote once redo starts: acted on at the target's pause)")
        pitr_rows = by["pitr"]
        rss = [r.get("rss_mb") for r in pitr_rows if r.get("rss_mb")]
        print()
        print("pitr")
        print(f"  peak memory (max RSS, /usr/bin/time -v): {fmt(max(rss) if rss else None, 1)} MB "
              f"(rounds: {', '.join(fmt(v, 1) for v in rss)})")
        print(f"  staging: CPU {fmt(p['stage_cpu'])}s over {fmt(p['staging'])}s wall "
              f"({fmt(100 * p['stage_cpu'] / p['staging'] if p['stage_cpu'] and p['staging'] else None, 0)}% of one core); "
              f"machine busy {fmt(p['stage_busy_pct'], 0)}% of {os.cpu_count()} CPUs; {fmt(p['stage_disk_mb'], 0)} MB reached the disk while staging")
        if p["stage_wall"] is not None:
            blocked = p["stage_blocked"]
            print(f"  staging wall {fmt(p['stage_wall'])}s (pitr start to postmaster.pid) = on a CPU {fmt(p['stage_oncpu'])}s"
                  f" + runnable, waiting for a CPU {fmt(p['stage_runwait'])}s + blocked (disk, dirty-page throttling,"
                  f" children) {fmt(blocked)}s")
        print(f"  dirty page cache when the server started: {fmt(p['dirty_mb'], 0)} MB "
              f"(manual {fmt(med['manual']['dirty_mb'], 0)}, pgBackRest {fmt(med['pgbackrest']['dirty_mb'], 0)} MB)")
        print(f"  replay: startup {fmt(p['startup'])}s (reading the data directory, syncfs), redo {fmt(p['redo'])}s, "
              f"target to writable {fmt(p['end'])}s; startup process + restore_command CPU {fmt(p['replay_cpu'])}s")
        print(f"  plan (inside staging): {fmt(median([r.get('pitr_plan') for r in pitr_rows]), 2)}s")
        print()
        print("Targets (issue 7)")
        best_pgbr = min(v for v in (med["pgbackrest"]["total"], med["pgbackrest-async"]["total"]) if v is not None)
        checks = [
            ("total <= 0.7 x pgBackRest's best", ratio(p["total"], best_pgbr), 0.7),
            ("total <= 0.5 x manual runbook", ratio(p["total"], med["manual"]["total"]), 0.5),
            ("replay <= 1.2 x replay floor", ratio(p["replay"], med["replay-floor"]["replay"]), 1.2),
            ("  ... x the floor promoted as pitr does", ratio(p["replay"], med["replay-floor-early"]["replay"]), 1.2),
            ("peak memory < 200 MB", (max(rss) if rss else None), 200),
        ]
        for name, value, limit in checks:
            verdict = "-" if value is None else ("met" if value <= limit else "MISSED")
            print(f"  {name:36} {fmt(value, 2):>8}  {verdict}")
        busy = median([r.get("load1") for r in self.results])
        print()
        print(f"Machine load (1-min load average at the start of each restore): median {fmt(busy, 1)}, "
              f"max {fmt(max(r['load1'] for r in self.results), 1)} on {os.cpu_count()} CPUs"
              + ("  -- the machine was busy; compare ratios, not absolute times" if busy and busy > 1.5 else ""))
        for r in self.results:
            if r.get("restore_command"):
                print(f"  {r['method']} restore_command: {r['restore_command']}")
                break
        async_log = self.work / "pgbr-log" / f"{STANZA}-archive-get-async.log"
        print(f"  pgBackRest asynchronous archive-get ran: {'yes' if async_log.exists() else 'NO'} ({async_log.name})")
        print("=" * 100)


def run_bench(bench, body, report_partial=None) -> int:
    """What every benchmark's main does around its own steps: SIGTERM and
    SIGHUP end it as Ctrl-C does, the space is checked, the primary set up,
    `body()` runs, the report is printed (on a failure too, when
    `report_partial(bench)` says there is something to report), and every
    server is stopped and the temporary directory removed whatever happens."""
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    report_partial = report_partial or (lambda b: bool(b.results))
    try:
        bench.check_space()
        bench.setup()
        body()
        bench.report()
        return 0
    except KeyboardInterrupt as error:
        log(f"interrupted ({error}); cleaning up")
        return 130
    except Exception as error:
        log(f"FAILED: {error}")
        if report_partial(bench):
            try:
                bench.report()
            except Exception as report_error:
                log(f"(no report: {report_error})")
        return 1
    finally:
        bench.cleanup()


def main() -> int:
    bench = Bench()

    def body():
        base_port = bench.port + 1
        for round_no in range(1, ROUNDS + 1):
            bench.restore_round(round_no, METHODS, base_port)
            log(f"round {round_no}/{ROUNDS}: floors (dd, gzip -dc, pigz -dc)")
            bench.floor_round()

    return run_bench(bench, body)


if __name__ == "__main__":
    sys.exit(main())
