#!/usr/bin/env python3
"""Benchmark of issue 16 (seekable backups, delta restore). Run through
bench/seekable.sh.

One run: a pgbench cluster of SCALE; two pitr backups of it (`--seekable` and
the default) and a pgBackRest full backup, all three repositories on a loop
device of their own (so that the bytes read from "the repository" are that
device's counters, nobody else's); a workload with marker rows around a target
time. Then

  part 1, full restore: ROUNDS interleaved rounds of pitr from the seekable
    backup (--jobs default), pitr from the default backup, pgBackRest
    (process-max=2, asynchronous archive-get: its best in bench/restore.py),
    the write floor (bench/floor.py: the backup's tree, same directories and
    file sizes, written from memory with one syncfs) and the replay floor
    (PostgreSQL alone with every segment in pg_wal, from the seekable backup);
  part 2, delta restore: a restored copy is started and changed by pgbench
    until DELTA_PCT % of the backup's pages differ (measured page by page
    against the backup's tree), then stopped; every round gives each method an
    identical copy of it (copied outside the timed part): the read floor
    (bench/floor.py reads the copy once), `pitr restore --delta` from the
    seekable and from the default backup, `pgbackrest restore --delta`, and
    pitr's full restore of the seekable backup into an empty directory.

Every timed run starts with `sync; echo 3 > /proc/sys/vm/drop_caches` (cold
caches, every method alike) and every restore is checked by its marker count.

Bytes: "repo read" is the repository loop device's read counter
(/proc/diskstats) around the whole run, replay's WAL reads included; "tool
read" is the restore tool's process tree (pitr, pgbackrest and their workers;
the floor tool) reading from storage (wait4's ru_inblock = /proc/PID/io
read_bytes), "tool written" what that tree passed to write(2) (/proc/PID/io
wchar: a reaped child's counters go to its parent). PostgreSQL's own replay is
excluded (it is not the tool's child once started). The kernel's write_bytes
("dirtied") is shown too, but it overstates a delta restore's writes on
kernels with large page-cache folios (see timed()).

Python 3.11 standard library only; reuses bench/restore.py's helpers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore as R  # noqa: E402  (bench/restore.py: cluster, pgBackRest, recovery helpers)
from restore import fmt, log, median, mkdir_pg, chown_pg, run, loadavg  # noqa: E402

SCALE = R.SCALE
ROUNDS = R.ROUNDS
PG_BIN = R.PG_BIN
DELTA_PCT = float(os.environ.get("DELTA_PCT", "5"))
PARTS = os.environ.get("PARTS", "full,delta").split(",")
HERE = Path(__file__).resolve().parent
FLOOR = HERE / "floor.py"
PAGE = 8192
# Frame sizes (KiB) whose share of touched blocks page_diff reports.
SMALL_FRAMES_KIB = (64, 128, 256, 1024)
JOBS = os.cpu_count() or 1
# PERF_DIR: record a perf profile of every pitr restore into this directory.
PERF_DIR = os.environ.get("PERF_DIR", "")

FULL_METHODS = ["pitr-seekable", "pitr-default", "pgbackrest", "write-floor", "replay-floor"]
DELTA_METHODS = ["read-floor", "pitr-delta-seekable", "pitr-delta-default", "pgbackrest-delta", "pitr-full"]
LABELS = {
    "pitr-seekable": "pitr restore, seekable backup (--jobs default)",
    "pitr-default": "pitr restore, default backup",
    "pgbackrest": "pgBackRest restore, process-max=2, async archive-get",
    "write-floor": "write floor (the tree from memory, one syncfs)",
    "replay-floor": "replay floor (PostgreSQL alone, WAL in pg_wal)",
    "read-floor": "read floor (the changed copy read once)",
    "pitr-delta-seekable": "pitr restore --delta, seekable backup",
    "pitr-delta-default": "pitr restore --delta, default backup",
    "pgbackrest-delta": "pgBackRest restore --delta, process-max=2, async",
    "pitr-full": "pitr restore (full), seekable backup, empty dir",
}


def drop_caches() -> None:
    """Cold caches before every timed run, every method alike: dirty pages
    written back first, then the page cache, dentries and inodes dropped."""
    run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def device_bytes(device: tuple[int, int]) -> tuple[int, int]:
    """(bytes read, bytes written) of one block device since boot."""
    with open("/proc/diskstats") as f:
        for line in f:
            parts = line.split()
            if (int(parts[0]), int(parts[1])) == device:
                return int(parts[5]) * 512, int(parts[9]) * 512
    return 0, 0


def timed(cmd: list, pg: bool = False, cwd=None) -> dict:
    """Runs cmd to completion; wall seconds, exit code, stdout, stderr, and the
    rusage of its whole process tree (wait4: the command and every descendant
    it waited for), so the bytes it read from and wrote to storage."""
    cmd = [str(c) for c in cmd]
    if pg:
        cmd = R.as_pg(cmd)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        io_before = self_io()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        io_after = self_io()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"seconds": seconds, "code": proc.returncode, "stdout": out.read(), "stderr": err.read(),
                "tool_read": usage.ru_inblock * 512,
                # What the tree passed to write(2) and friends: a reaped
                # child's counters are added to its parent's /proc/PID/io,
                # and this process does no I/O while it waits.
                "tool_written": io_after["wchar"] - io_before["wchar"],
                # The kernel's write_bytes (ru_oublock): pages dirtied. On
                # kernels with large page-cache folios (ext4, 6.x) an 8 KiB
                # pwrite into a 2 MiB folio read before counts the whole
                # folio, though writeback writes only the dirty blocks: it
                # overstates a delta restore's writes, so it is only shown.
                "tool_dirtied": usage.ru_oublock * 512,
                "tool_cpu": usage.ru_utime + usage.ru_stime}


def self_io() -> dict[str, int]:
    """This process's /proc/self/io, which includes its reaped children's."""
    counters = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, value = line.split(":")
            counters[key] = int(value)
    return counters


def check(result: dict, what: str) -> dict:
    if result["code"] != 0:
        raise RuntimeError(f"{what} failed ({result['code']}):\n{result['stderr']}\n{result['stdout']}")
    return result


def page_diff(backup: Path, copy: Path) -> dict:
    """Pages (8 KiB) of the backup's tree that differ in the copy (a page past
    the copy's end, or of a file the copy lacks, differs), over the backup's
    pages; plus what the copy has beyond the backup (new files, pg_wal)."""
    total = differ = blocks = blocks_touched = 0
    # Blocks of smaller sizes touched too: the frames a delta restore would
    # decompress if a seekable backup's frames were that small.
    touched_bytes = {kib: 0 for kib in SMALL_FRAMES_KIB}
    total_bytes = 0
    for path, _, names in os.walk(backup):
        for name in names:
            b = Path(path) / name
            if not b.is_file() or b.is_symlink():
                continue
            rel = b.relative_to(backup)
            c = copy / rel
            size = b.stat().st_size
            total_bytes += size
            pages = (size + PAGE - 1) // PAGE
            total += pages
            file_blocks = (size + (1 << 20) - 1) >> 20
            blocks += file_blocks
            if not c.is_file():
                differ += pages
                blocks_touched += file_blocks
                for kib in SMALL_FRAMES_KIB:
                    touched_bytes[kib] += size
                continue
            with open(b, "rb") as fb, open(c, "rb") as fc:
                while True:
                    x = fb.read(1 << 20)
                    if not x:
                        break
                    y = fc.read(len(x))
                    if x == y:
                        continue
                    blocks_touched += 1
                    hit = set()
                    for off in range(0, len(x), PAGE):
                        if x[off:off + PAGE] != y[off:off + PAGE]:
                            differ += 1
                            hit.update((kib, off // (kib << 10)) for kib in SMALL_FRAMES_KIB)
                    for kib, block in hit:
                        start = block * (kib << 10)
                        touched_bytes[kib] += min(kib << 10, len(x) - start)
    extra_files = extra_bytes = wal_bytes = 0
    for path, _, names in os.walk(copy):
        for name in names:
            c = Path(path) / name
            rel = c.relative_to(copy)
            if (backup / rel).exists() or not c.is_file():
                continue
            if rel.parts[0] == "pg_wal":
                wal_bytes += c.stat().st_size
            else:
                extra_files += 1
                extra_bytes += c.stat().st_size
    return {"pages": total, "differ": differ, "pct": 100.0 * differ / max(1, total),
            "blocks": blocks, "blocks_touched": blocks_touched,
            "touched_bytes": touched_bytes, "total_bytes": total_bytes,
            "extra_files": extra_files, "extra_mb": extra_bytes / 1e6, "wal_mb": wal_bytes / 1e6}


class SeekBench(R.Bench):
    def __init__(self):
        super().__init__()
        self.loop_dev: str | None = None
        self.mnt = self.work / "repos"
        self.stats: dict[str, object] = {}

    # -- the repositories' own device --

    def mount_repos(self) -> None:
        """The repositories on a loop device (a file on the same disk, direct
        I/O) so that its counters are the bytes read from the repositories."""
        image = self.work / "repos.img"
        size_gb = max(4, SCALE // 25 + 2)
        run(["truncate", "-s", f"{size_gb}G", image])
        run(["mkfs.ext4", "-q", "-F", image], capture=True)
        self.loop_dev = run(["losetup", "--find", "--show", "--direct-io=on", image],
                            capture=True).stdout.strip()
        self.mnt.mkdir()
        run(["mount", self.loop_dev, self.mnt])
        os.chmod(self.mnt, 0o755)
        st = os.stat(self.loop_dev)
        self.repo_device = (os.major(st.st_rdev), os.minor(st.st_rdev))
        # bench/restore.py's layout, moved onto the loop device.
        for name in ("repo", "pgbr-repo"):
            shutil.rmtree(self.work / name, ignore_errors=True)
        self.repo = mkdir_pg(self.mnt / "repo", 0o755)
        self.archive = mkdir_pg(self.repo / "wal", 0o755)
        mkdir_pg(self.repo / "base", 0o755)
        mkdir_pg(self.mnt / "pgbr-repo", 0o750)
        (self.work / "pgbr-repo").symlink_to(self.mnt / "pgbr-repo")
        log(f"repositories on {self.loop_dev} ({image}, {size_gb} GB, direct I/O) mounted at {self.mnt}")

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for pgdata in reversed(self.started_pgdata):
            try:
                self.stop(pgdata, timeout=60)
            except Exception as error:
                print(f"cleanup: stopping {pgdata}: {error}", file=sys.stderr)
        self.kill_strays()
        if self.loop_dev:
            run(["umount", self.mnt], check=False)
            run(["losetup", "-d", self.loop_dev], check=False)
        super().cleanup()

    # -- setup --

    def setup(self) -> None:
        self.mount_repos()
        self.pgbackrest_dirs()
        self.pgbr_conf = self.pgbackrest_conf("pgbackrest.conf")
        self.pgbr_async_conf = self.pgbackrest_conf(
            "pgbackrest-async.conf", "archive-async=y\narchive-get-queue-max=512MiB\n")
        self.log_versions()

        self.make_primary()
        self.archive_also_to_pgbackrest(f"cp %p {self.archive}/%f && pgbackrest --config={self.pgbr_conf} "
                                        f"--stanza={R.STANZA} archive-push %p")

        env = {**os.environ, "PGHOST": str(self.sock), "PGPORT": str(self.port), "PGUSER": "postgres"}
        self.backup_ids = {}
        for kind, extra in (("default", []), ("seekable", ["--seekable"])):
            log(f"2. pitr backup {' '.join(extra) or '(default: zstd)'} --fast")
            started = time.monotonic()
            before = set(p.name for p in (self.repo / "base").iterdir())
            out = run([self.pitr, "backup", "--repo", self.repo, "--fast", "--quiet", *extra],
                      capture=True, env=env)
            new = sorted(set(p.name for p in (self.repo / "base").iterdir()) - before)
            if len(new) != 1:
                raise RuntimeError(f"pitr backup {extra}: expected one new backup, found {new}\n{out.stdout}")
            self.backup_ids[kind] = new[0]
            seconds = time.monotonic() - started
            mib = sum(p.stat().st_size for p in (self.repo / "base" / new[0]).rglob("*") if p.is_file()) / 2**20
            self.facts[f"pitr_backup_{kind}_s"] = seconds
            self.facts[f"pitr_backup_{kind}_mib"] = mib
            log(f"   {new[0]}: {seconds:.0f}s, {mib:.0f} MiB")
            if kind == "default":
                time.sleep(1.1)  # backup ids are UTC seconds
        self.pgbackrest_full_backup(self.mnt / "pgbr-repo")

        self.workload()
        self.remove_primary()

        # The backup's tree: the write floor's listing, the page comparison's reference.
        self.tree = self.work / "backup-tree"
        mkdir_pg(self.tree)
        base = self.repo / "base" / self.backup_ids["default"]
        run(["tar", "--zstd", "-xf", base / "base.tar.zst", "-C", self.tree])
        self.listing = self.work / "tree.json"
        with open(self.listing, "w") as f:
            subprocess.run(["python3", str(FLOOR), "list", str(self.tree)], stdout=f, check=True)
        listing = json.loads(self.listing.read_text())
        self.facts["tree_gb"] = sum(s for _, s in listing["files"]) / 1e9
        self.facts["tree_files"] = len(listing["files"])
        log(f"   the backup's tree: {self.facts['tree_files']} files, {self.facts['tree_gb']:.2f} GB")

    # -- one timed restore --

    def pitr_restore(self, pgdata: Path, port: int, backup: str, extra: list[str]) -> dict:
        cmd = [self.pitr, "restore", "--repo", self.repo, "--to", self.target, "--backup", backup,
               "--pgdata", pgdata, "--port", port, "--json", "--quiet", *extra]
        if PERF_DIR:
            # Where the time goes: a profile of each pitr restore (perf's
            # overhead is in the times then; not for the figures).
            self.perf_runs = getattr(self, "perf_runs", 0) + 1
            data = Path(PERF_DIR) / f"pitr-{self.perf_runs}{'-delta' if '--delta' in extra else ''}-{backup}.data"
            cmd = ["perf", "record", "-q", "-g", "-o", data, "--", *cmd]
        self.started_pgdata.append(pgdata)
        res = check(timed(cmd), f"pitr restore {' '.join(extra)}")
        report = json.loads(res["stdout"])
        seconds = report["seconds"]
        row = {"staging": seconds["plan"] + seconds["staging"], "replay": seconds["recovery"],
               "total": res["seconds"], "host": Path(report["socket_dir"]), **res}
        if report.get("delta"):
            # pitr's own account: pages rewritten, bytes written and read from the repository.
            row["pitr_delta"] = report["delta"]
        return row

    def pgbackrest_restore(self, pgdata: Path, port: int, logfile: Path, delta: bool) -> dict:
        started = time.monotonic()
        res = check(timed(["pgbackrest", f"--config={self.pgbr_async_conf}", f"--stanza={R.STANZA}",
                           f"--pg1-path={pgdata}", "--type=time", f"--target={self.target}",
                           "--target-action=promote", "--process-max=2", "--archive-mode=off",
                           *(["--delta"] if delta else []), "restore"], pg=True), "pgbackrest restore")
        self.recovery_conf(pgdata, port, {})
        staged = time.monotonic()
        self.start(pgdata, logfile)
        promoted = self.wait_promoted(pgdata, logfile, pause_then_promote=False)
        return {"staging": staged - started, "replay": promoted - staged, "total": promoted - started,
                "host": self.sock, **res}

    def prepare_replay_floor(self, pgdata: Path, port: int) -> None:
        """Not timed: the seekable backup (the one pitr-seekable replays from)
        extracted, every segment replay reads in pg_wal."""
        mkdir_pg(pgdata)
        base = self.repo / "base" / self.backup_ids["seekable"]
        run(["tar", "--zstd", "-xf", base / "base.tar.zst", "-C", pgdata], pg=True)
        hi, lo = (int(part, 16) for part in self.target_lsn.split("/"))
        last = f"00000001{hi:08X}{(lo >> 24):08X}"
        segments = sorted(p.name for p in self.archive.iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name))
        later = [s for s in segments if s > last][:1]
        last = later[0] if later else last
        for name in segments:
            if name <= last and not (pgdata / "pg_wal" / name).exists():
                shutil.copyfile(self.archive / name, pgdata / "pg_wal" / name)
                chown_pg(pgdata / "pg_wal" / name)
        self.recovery_conf(pgdata, port, {
            "restore_command": "false", "recovery_target_time": self.target,
            "recovery_target_action": "pause", "recovery_init_sync_method": "syncfs"})

    def replay_floor(self, pgdata: Path, logfile: Path) -> dict:
        started = time.monotonic()
        self.start(pgdata, logfile)
        promoted = self.wait_promoted(pgdata, logfile, pause_then_promote=True)
        return {"replay": promoted - started, "host": self.sock}

    def measure(self, method: str, round_no: int, port: int, pgdata: Path) -> dict:
        """One timed run of one method into pgdata (empty, absent, or the
        changed copy), caches dropped first; verified by its marker count."""
        logfile = self.logs / f"{method}-r{round_no}.log"
        row = {"method": method, "round": round_no}
        if method == "replay-floor":
            self.prepare_replay_floor(pgdata, port)
            drop_caches()
            row["load1"] = loadavg()
            before = device_bytes(self.repo_device)
            row.update(self.replay_floor(pgdata, logfile))
        else:
            for spool in (self.work / "pgbr-spool").iterdir():
                shutil.rmtree(spool, ignore_errors=True)
            if method in ("pgbackrest", "write-floor") or (method.startswith("pitr") and not pgdata.exists()):
                mkdir_pg(pgdata.parent, 0o755)
            if method == "pgbackrest":
                mkdir_pg(pgdata)
            drop_caches()
            row["load1"] = loadavg()
            before = device_bytes(self.repo_device)
            if method == "pitr-seekable" or method == "pitr-full":
                row.update(self.pitr_restore(pgdata, port, self.backup_ids["seekable"], []))
            elif method == "pitr-default":
                row.update(self.pitr_restore(pgdata, port, self.backup_ids["default"], []))
            elif method == "pitr-delta-seekable":
                row.update(self.pitr_restore(pgdata, port, self.backup_ids["seekable"], ["--delta"]))
            elif method == "pitr-delta-default":
                row.update(self.pitr_restore(pgdata, port, self.backup_ids["default"], ["--delta"]))
            elif method in ("pgbackrest", "pgbackrest-delta"):
                row.update(self.pgbackrest_restore(pgdata, port, logfile, delta=method.endswith("delta")))
            elif method == "write-floor":
                res = check(timed(["python3", FLOOR, "write", self.listing, pgdata, "--jobs", JOBS]), "write floor")
                row.update(res, staging=res["seconds"], floor=json.loads(res["stdout"]))
            elif method == "read-floor":
                res = check(timed(["python3", FLOOR, "read", pgdata, "--jobs", JOBS]), "read floor")
                row.update(res, staging=res["seconds"], floor=json.loads(res["stdout"]))
            else:
                raise ValueError(method)
        after = device_bytes(self.repo_device)
        row["repo_read"] = after[0] - before[0]
        row.setdefault("load1", loadavg())
        if method.endswith("-floor") and method != "replay-floor":
            return row
        host = row.pop("host")
        row.update(self.log_phases(pgdata / "pitr-recovery.log" if method.startswith("pitr") else logfile))
        count = int(self.psql("SELECT count(*) FROM markers", port=port, host=host))
        self.stop(pgdata)
        self.kill_strays()
        row["count"] = count
        if count != self.expected:
            raise RuntimeError(f"{method} round {round_no}: {count} markers, expected {self.expected}")
        return row

    # -- part 1 --

    def dd_floor(self) -> None:
        f = self.work / "dd.tmp"
        mib = 2048 if SCALE >= 100 else 512
        drop_caches()
        started = time.monotonic()
        run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fdatasync"], capture=True)
        self.stats.setdefault("dd_mbs", []).append(mib * 2**20 / 1e6 / (time.monotonic() - started))
        f.unlink()

    def disk_rates(self) -> None:
        """The disk's read:write ratio, which decides whether a delta restore
        (read everything, write little) can beat a full one (write
        everything): one large file written with dd conv=fdatasync, then read
        back cold with dd, 1 MiB at a time."""
        f = self.work / "dd-rw.tmp"
        mib = 2048 if SCALE >= 100 else 512
        drop_caches()
        started = time.monotonic()
        run(["dd", "if=/dev/urandom", f"of={f}", "bs=1M", f"count={mib}", "conv=fdatasync"], capture=True)
        write = mib * 2**20 / 1e6 / (time.monotonic() - started)
        drop_caches()
        started = time.monotonic()
        run(["dd", f"if={f}", "of=/dev/null", "bs=1M"], capture=True)
        read = mib * 2**20 / 1e6 / (time.monotonic() - started)
        f.unlink()
        self.stats.setdefault("disk_write_mbs", []).append(write)
        self.stats.setdefault("disk_read_mbs", []).append(read)
        log(f"   disk: dd conv=fdatasync {write:.0f} MB/s, cold dd read {read:.0f} MB/s ({mib} MiB, one file)")

    def part_full(self, base_port: int) -> None:
        for round_no in range(1, ROUNDS + 1):
            for index, method in enumerate(FULL_METHODS):
                pgdata = self.work / "restore" / f"{method}-r{round_no}"
                row = self.measure(method, round_no, base_port + index, pgdata)
                row["part"] = "full"
                self.results.append(row)
                self.log_row(row)
                shutil.rmtree(pgdata, ignore_errors=True)
            self.dd_floor()
            log(f"   dd conv=fdatasync: {self.stats['dd_mbs'][-1]:.0f} MB/s")

    # -- part 2 --

    def make_changed_copy(self, port: int) -> None:
        """A copy restored from the seekable backup, started, changed by
        pgbench until DELTA_PCT % of the backup's pages differ, stopped."""
        self.changed = self.work / "changed"
        log(f"delta: the copy: pitr restore into {self.changed}, then pgbench until {DELTA_PCT:g}% of the pages differ")
        mkdir_pg(self.changed.parent, 0o755)
        res = self.pitr_restore(self.changed, port, self.backup_ids["seekable"], [])
        host = res["host"]
        diff = page_diff(self.tree, self.changed)
        log(f"   restored: {diff['pct']:.2f}% of {diff['pages']} pages differ already (the workload's WAL replayed)")
        transactions = 0
        steps = 0
        while diff["pct"] < DELTA_PCT and steps < 6:
            steps += 1
            missing = (DELTA_PCT - diff["pct"]) / 100 * diff["pages"]
            # About two pages per pgbench transaction (an account's heap page
            # and its index leaf); a smaller first step, then extrapolated.
            per_tx = (diff["differ"] - self.stats.get("differ0", diff["differ"])) / transactions if transactions else 2.0
            n = max(200, int(missing / max(per_tx, 0.2) * (0.6 if steps == 1 else 0.95)))
            per_client = max(100, n // 2)
            run([PG_BIN / "pgbench", "-n", "-c", "2", "-j", "2", "-t", per_client,
                 "-h", host, "-p", port, "-U", "postgres", "postgres"], pg=True, capture=True)
            self.stats.setdefault("differ0", diff["differ"])
            transactions += 2 * per_client
            self.psql("CHECKPOINT", port=port, host=host)
            diff = page_diff(self.tree, self.changed)
            log(f"   +{2 * per_client} transactions ({transactions} in all): {diff['pct']:.2f}% of the pages differ")
        self.stop(self.changed)
        diff = page_diff(self.tree, self.changed)
        self.stats["changed"] = diff
        self.stats["changed_transactions"] = transactions
        log(f"   stopped: {diff['differ']} of {diff['pages']} pages ({diff['pct']:.2f}%) differ from the backup; "
            f"the copy also has {diff['extra_files']} files ({diff['extra_mb']:.0f} MB) not in the backup "
            f"and {diff['wal_mb']:.0f} MB in pg_wal")

    def part_delta(self, base_port: int) -> None:
        help_text = run([self.pitr, "restore", "--help"], capture=True).stdout
        if "--delta" not in help_text:
            log("   this pitr has no `restore --delta`: its delta methods are left out (NOT measured)")
            self.stats["no_delta"] = True
            DELTA_METHODS.remove("pitr-delta-seekable")
            DELTA_METHODS.remove("pitr-delta-default")
        self.make_changed_copy(base_port - 1)
        for round_no in range(1, ROUNDS + 1):
            target = self.work / "restore" / "delta-target"
            fresh = False
            for index, method in enumerate(DELTA_METHODS):
                if method == "pitr-full":
                    # Into an empty directory; the copy is not needed any more
                    # (less disk at the peak).
                    shutil.rmtree(target, ignore_errors=True)
                    pgdata = self.work / "restore" / f"pitr-full-r{round_no}"
                else:
                    # An identical copy of the changed directory for each
                    # method that changes it; the read floor only reads it,
                    # so the first delta method gets the same copy after it.
                    if not fresh:
                        shutil.rmtree(target, ignore_errors=True)
                        mkdir_pg(target.parent, 0o755)
                        run(["cp", "-a", self.changed, target])
                    fresh = method == "read-floor"
                    pgdata = target
                row = self.measure(method, round_no, base_port + index, pgdata)
                row["part"] = "delta"
                self.results.append(row)
                self.log_row(row)
                if method == "pitr-full":
                    shutil.rmtree(pgdata, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            self.disk_rates()

    # -- report --

    @staticmethod
    def log_row(row: dict) -> None:
        log(f"   round {row['round']} {row['method']}: staging {fmt(row.get('staging'))}s, replay "
            f"{fmt(row.get('replay'))}s, total {fmt(row.get('total'))}s; repo read {row['repo_read'] / 1e6:.0f} MB, "
            f"tool read {row.get('tool_read', 0) / 1e6:.0f} MB, written {row.get('tool_written', 0) / 1e6:.0f} MB; "
            f"markers {row.get('count', '-')}; load {row['load1']:.1f}")

    def report(self) -> None:
        facts = self.facts
        keys = ("staging", "replay", "total", "repo_read", "tool_read", "tool_written", "tool_cpu", "load1")
        med = {}
        for m in FULL_METHODS + DELTA_METHODS:
            rows = [r for r in self.results if r["method"] == m]
            med[m] = {k: median([r.get(k) for r in rows]) for k in keys}
        for m in LABELS:
            med.setdefault(m, {k: None for k in keys})
        print()
        print("=" * 110)
        print(f"Seekable and delta restore benchmark (issue 16), pgbench scale {SCALE}, {ROUNDS} round(s), "
              f"{dt.datetime.now():%Y-%m-%d %H:%M}")
        print(f"  {facts.get('versions')}; {os.cpu_count()} CPUs; {Path('/proc/meminfo').read_text().split()[1]} kB RAM")
        print(f"  database {facts.get('db_size_gb', 0):.2f} GiB; the backup's tree {facts.get('tree_files')} files, "
              f"{facts.get('tree_gb', 0):.2f} GB")
        print(f"  pitr backups: default {facts.get('pitr_backup_default_mib', 0):.0f} MiB in "
              f"{facts.get('pitr_backup_default_s', 0):.0f}s, --seekable {facts.get('pitr_backup_seekable_mib', 0):.0f} MiB "
              f"in {facts.get('pitr_backup_seekable_s', 0):.0f}s; pgBackRest {facts.get('pgbackrest_backup_mib', 0):.0f} MiB "
              f"in {facts.get('pgbackrest_backup_s', 0):.0f}s")
        print(f"  workload {facts.get('workload_wal_mib', 0):.0f} MiB of WAL at {facts.get('tps')} tps; "
              f"{facts.get('replay_wal_mib', 0):.0f} MiB from the backup's start to the target; target "
              f"{facts.get('target')}: {facts.get('expected')} of {facts.get('markers')} markers")
        changed = self.stats.get("changed")
        if changed:
            print(f"  delta: the changed copy differs from the backup in {changed['differ']} of {changed['pages']} "
                  f"pages ({changed['pct']:.2f}%, 8 KiB pages compared with the backup's tree) after "
                  f"{self.stats.get('changed_transactions')} pgbench transactions; it also has "
                  f"{changed['extra_files']} files ({changed['extra_mb']:.0f} MB) not in the backup, "
                  f"{changed['wal_mb']:.0f} MB in pg_wal")
            if "blocks" in changed:
                print(f"  ... and in {changed['blocks_touched']} of its {changed['blocks']} 1 MiB blocks "
                      f"({100.0 * changed['blocks_touched'] / max(1, changed['blocks']):.1f}%; a seekable backup's "
                      f"frames are 1 MiB: the frames a delta restore must read)")
                smaller = ", ".join(
                    f"{kib} KiB {100.0 * changed['touched_bytes'][kib] / max(1, changed['total_bytes']):.1f}%"
                    for kib in SMALL_FRAMES_KIB if kib in changed.get("touched_bytes", {}))
                if smaller:
                    print(f"      the data's bytes in blocks holding a changed page (the share of a seekable backup "
                          f"a delta restore decompresses, if its frames were that large): {smaller}")
        print("  every timed run began with sync; echo 3 > /proc/sys/vm/drop_caches (cold caches, all methods);")
        print("  repo read = the repositories' loop device (/proc/diskstats), whole run incl. replay's WAL;")
        print("  tool read = the restore tool's process tree reading storage (/proc/PID/io read_bytes), tool written =")
        print("  what it passed to write(2) (wchar); dirtied = the kernel's write_bytes, which counts a whole large")
        print("  page-cache folio for an 8 KiB write into it (overstates delta writes; writeback writes only the dirty")
        print("  blocks); PostgreSQL's replay excluded (pitr's WAL prefetch into pg_wal is pitr's, pgBackRest's")
        print("  async archive-get daemon is not in the tree); MB = 10^6 bytes. pitr's WAL archive is plain segments")
        print("  (archive_command cp, as bench/restore.py), pgBackRest's is gzip: repo read counts both as stored.")
        print()
        head = (f"{'method':20} {'rnd':>3} {'staging':>8} {'replay':>7} {'total':>7} | {'repo rd':>8} {'tool rd':>8} "
                f"{'tool wr':>8} {'dirtied':>8} {'tool cpu':>8} | {'markers':>7} {'load':>5}")
        print(head)
        print("-" * len(head))
        for r in self.results:
            print(f"{r['method']:20} {r['round']:>3} {fmt(r.get('staging')):>8} {fmt(r.get('replay')):>7} "
                  f"{fmt(r.get('total')):>7} | {r['repo_read'] / 1e6:8.0f} {r.get('tool_read', 0) / 1e6:8.0f} "
                  f"{r.get('tool_written', 0) / 1e6:8.0f} {r.get('tool_dirtied', 0) / 1e6:8.0f} "
                  f"{fmt(r.get('tool_cpu')):>8} | {str(r.get('count', '-')):>7} "
                  f"{fmt(r.get('load1'), 1):>5}")
        print()
        print(f"Medians of {ROUNDS} round(s) (seconds; MB)")
        head = (f"{'':52} {'staging':>8} {'replay':>7} {'total':>7} | {'repo rd':>8} {'tool rd':>8} {'tool wr':>8}")
        print(head)
        print("-" * len(head))

        def mb(v):
            return "-" if v is None else f"{v / 1e6:8.0f}"
        for part, methods in (("full", FULL_METHODS), ("delta", DELTA_METHODS)):
            if part not in PARTS:
                continue
            for m in methods:
                x = med[m]
                if x["total"] is None and x["staging"] is None and x["replay"] is None:
                    continue
                print(f"{LABELS[m]:52} {fmt(x['staging']):>8} {fmt(x['replay']):>7} {fmt(x['total']):>7} | "
                      f"{mb(x['repo_read']):>8} {mb(x['tool_read']):>8} {mb(x['tool_written']):>8}")
            print()

        def ratio(a, b):
            return a / b if a is not None and b else None
        dd = median(self.stats.get("dd_mbs", []))
        wf = med["write-floor"]
        rf = med["read-floor"]
        print("Floors")
        if wf["staging"]:
            floors = [r["floor"] for r in self.results if r["method"] == "write-floor"]
            rate = floors[0]["bytes"] / 1e6 / wf["staging"]
            print(f"  write floor: {fmt(wf['staging'])}s for {floors[0]['bytes'] / 1e9:.2f} GB in {floors[0]['files']} files "
                  f"({rate:.0f} MB/s, {floors[0]['jobs']} threads; CPU {fmt(wf['tool_cpu'])}s); dd conv=fdatasync of one "
                  f"file: {fmt(dd, 0)} MB/s (rounds: {', '.join(fmt(v, 0) for v in self.stats.get('dd_mbs', []))})")
        if med["replay-floor"]["replay"]:
            print(f"  replay floor: {fmt(med['replay-floor']['replay'])}s (the seekable backup extracted, its WAL to the "
                  f"target in pg_wal; start -> promoted: pause at the target, then pg_ctl promote)")
        if rf["staging"]:
            floors = [r["floor"] for r in self.results if r["method"] == "read-floor"]
            print(f"  read floor: {fmt(rf['staging'])}s for {floors[0]['bytes'] / 1e9:.2f} GB in {floors[0]['files']} files "
                  f"({floors[0]['bytes'] / 1e6 / rf['staging']:.0f} MB/s cold, {floors[0]['jobs']} threads)")
        if self.stats.get("disk_read_mbs"):
            rd, wr = median(self.stats["disk_read_mbs"]), median(self.stats["disk_write_mbs"])
            print(f"  disk (part 2): one {2048 if SCALE >= 100 else 512} MiB file written with dd conv=fdatasync "
                  f"{fmt(wr, 0)} MB/s, read back cold with dd {fmt(rd, 0)} MB/s: read:write {fmt(rd / wr, 1)} "
                  f"(rounds: write {', '.join(fmt(v, 0) for v in self.stats['disk_write_mbs'])}; "
                  f"read {', '.join(fmt(v, 0) for v in self.stats['disk_read_mbs'])})")
        print()
        if self.stats.get("no_delta"):
            print("NOTE: this pitr build has no `restore --delta`: its delta restores were NOT measured")
        print("Targets (issue 16)")
        s, d = med["pitr-seekable"], med["pitr-delta-seekable"]
        checks = []
        if "full" in PARTS:
            checks += [
                ("full: staging <= 1.15 x write floor", ratio(s["staging"], wf["staging"]), 1.15),
                ("full: replay <= 1.0 x replay floor", ratio(s["replay"], med["replay-floor"]["replay"]), 1.0),
                ("full: total <= 0.6 x pgBackRest", ratio(s["total"], med["pgbackrest"]["total"]), 0.6),
            ]
        if "delta" in PARTS:
            checks += [
                ("delta: total <= 0.4 x pitr full restore", ratio(d["total"], med["pitr-full"]["total"]), 0.4),
                ("delta: total <= 0.5 x pgBackRest --delta", ratio(d["total"], med["pgbackrest-delta"]["total"]), 0.5),
                ("  (default backup) <= 0.4 x pitr full", ratio(med["pitr-delta-default"]["total"],
                                                            med["pitr-full"]["total"]), 0.4),
                ("  (default backup) <= 0.5 x pgBackRest --delta", ratio(med["pitr-delta-default"]["total"],
                                                                     med["pgbackrest-delta"]["total"]), 0.5),
            ]
        for name, value, limit in checks:
            verdict = "-" if value is None else ("met" if value <= limit else "NOT met")
            print(f"  {name:48} {fmt(value, 2):>6}  {verdict}")
        if "delta" in PARTS:
            print(f"  {'delta staging / read floor (reported)':48} {fmt(ratio(d['staging'], rf['staging']), 2):>6}")
            print(f"  {'delta total / read floor (reported)':48} {fmt(ratio(d['total'], rf['staging']), 2):>6}")
            # A delta restore reads the whole directory (no mtime shortcut by
            # default): when that read alone exceeds 0.4x the full restore,
            # the 0.4x target is out of reach on this disk whatever pitr does.
            floor_ratio = ratio(rf["staging"], med["pitr-full"]["total"])
            print(f"  {'read floor / pitr full restore total':48} {fmt(floor_ratio, 2):>6}  "
                  + ("(> 0.4: no delta restore that reads the directory can meet 0.4x here)"
                     if floor_ratio is not None and floor_ratio > 0.4 else "(the 0.4x target is within reach)"))
        for m in ("pitr-delta-seekable", "pitr-delta-default"):
            stats = [r["pitr_delta"] for r in self.results if r["method"] == m and r.get("pitr_delta")]
            if stats:
                x = stats[0]
                print(f"  {m}, pitr's own account (round 1): kept {x.get('files_kept')} files, patched "
                      f"{x.get('files_patched')} ({x.get('pages_rewritten')} of "
                      f"{(x.get('pages_kept') or 0) + (x.get('pages_rewritten') or 0)} compared pages rewritten), rewrote "
                      f"{x.get('files_rewritten')} in full, removed {x.get('files_removed')}; wrote "
                      f"{(x.get('bytes_written') or 0) / 1e6:.0f} MB, read {(x.get('repository_bytes') or 0) / 1e6:.0f} MB "
                      f"from the repository")
        loads = [r["load1"] for r in self.results if r.get("load1") is not None]
        print()
        print(f"Machine load (1-min load average at the start of each timed run): median {fmt(median(loads), 1)}, "
              f"max {fmt(max(loads) if loads else None, 1)} on {os.cpu_count()} CPUs"
              + ("  -- the machine was busy; compare ratios, not absolute times" if loads and median(loads) > 1.5 else ""))
        print("=" * 110)


def main() -> int:
    if os.geteuid() != 0:
        print("bench/seekable.py must run as root (loop device, drop_caches, PostgreSQL as postgres)", file=sys.stderr)
        return 2
    bench = SeekBench()

    def body():
        if "full" in PARTS:
            log("part 1: full restores")
            bench.part_full(bench.port + 1)
        if "delta" in PARTS:
            log("part 2: delta restores")
            bench.part_delta(bench.port + 20)

    return R.run_bench(bench, body)


if __name__ == "__main__":
    sys.exit(main())
