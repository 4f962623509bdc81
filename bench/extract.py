#!/usr/bin/env python3
"""Extract benchmark of pitr (issue 18). Run through bench/extract.sh.

One run: a cluster holding the pgbench database at SCALE and a small
database with one small table; two backups of it by `pitr backup` (the
default zstd tar, and `--seekable`); a short write workload and a marker
after them. Then, for each backup form, ROUNDS times, interleaved:

- extract: `pitr extract --table public.items --database small --to xid:N
  --backup ID --into LIVE --as items_x_<n>` (the copy, the dump, the load
  into the live cluster, the copy removed);
- manual: `pitr restore --to xid:N --backup ID` of the whole cluster, the
  table renamed in the restored copy, `pg_dump -Fc -t` of it, `pg_restore`
  into the live cluster; then the clean-up: the restored cluster stopped
  (fast shutdown, as `pg_ctl stop` does) and its directory removed.

The issue's chore ends with "clean up", and extract removes its copy
before it returns, so the ratio that decides is the one with both
clean-ups timed; the ratio without them (extract's total less its
`removal` phase, the manual way up to the rows loaded) is shown beside it.

Each load is checked against the rows at the marker (count and md5). The
target of issue 18: extract <= 0.2 x manual, in the same run. Bytes written
are pitr's count of staged bytes (from its JSON report) and the block
writes the kernel charged to the processes waited for (pitr, pg_dump,
pg_restore; not the servers).

Python 3.11 standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore as base  # noqa: E402  (bench/restore.py: the shared helpers and environment)
from restore import log, run, alive, PG_BIN, PITR_BUILD, BENCH_DIR, KEEP  # noqa: E402

# Defaults of this benchmark's own (bench/extract.sh sets ROUNDS too).
SCALE = int(os.environ.get("SCALE", "300"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
WORKLOAD_SECONDS = int(os.environ.get("WORKLOAD_SECONDS", "30"))
TARGET_RATIO = 0.2


def mkdir_pg(path: Path, mode: int = 0o755) -> Path:
    """restore.py's, but every directory of this benchmark is readable by
    default (restore.py's are the postgres user's alone)."""
    return base.mkdir_pg(path, mode)


def written_blocks() -> int:
    """Bytes the kernel charged as written to the children waited for."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


def gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB"


class Bench:
    def __init__(self):
        self.work = Path(tempfile.mkdtemp(prefix="pitr-bench-extract.", dir=BENCH_DIR))
        os.chmod(self.work, 0o755)
        self.sock = mkdir_pg(self.work / "sock")
        self.repo = mkdir_pg(self.work / "repo")
        mkdir_pg(self.repo / "base")
        self.wal = mkdir_pg(self.repo / "wal")
        self.scratch = mkdir_pg(self.work / "scratch")
        self.primary = self.work / "primary"
        self.port = 5700 + random.randrange(200)
        self.servers: list[Path] = []
        self.pitr = mkdir_pg(self.work / "bin") / "pitr"
        shutil.copy2(PITR_BUILD, self.pitr)
        os.chmod(self.pitr, 0o755)
        self.results: list[dict] = []

    def psql(self, sql: str, db: str = "postgres", port: int | None = None, host: Path | None = None) -> str:
        return run([PG_BIN / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host or self.sock,
                    "-p", port or self.port, "-U", "postgres", "-d", db, "-c", sql],
                   pg=True, capture=True).stdout.strip()

    def stop(self, pgdata: Path) -> None:
        try:
            pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not alive(pid):
            return
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 120
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        for pgdata in reversed(self.servers):
            self.stop(pgdata)
        if KEEP:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- setup --

    def setup(self) -> None:
        free = shutil.disk_usage(self.work).free
        need = SCALE * 40 * 2**20 + 2 * 2**30
        log(f"{self.work}: {free / 1e9:.1f} GB free, ~{need / 1e9:.1f} GB needed at peak")
        if free < need:
            raise RuntimeError("not enough free space")
        archive = f"test ! -f {self.wal}/%f && cp %p {self.wal}/%f"
        base.initdb(self.primary, self.port, self.sock, """archive_mode = on
archive_command = '/bin/true'
max_wal_size = 1GB
checkpoint_timeout = 30min
shared_buffers = 256MB
""")
        self.servers.append(self.primary)
        run([PG_BIN / "pg_ctl", "start", "-w", "-s", "-D", self.primary, "-l", self.sock / "primary.log"], pg=True)
        self.psql("CREATE DATABASE bench")
        self.psql("CREATE DATABASE small")
        self.psql("CREATE TABLE markers (id int PRIMARY KEY)")
        self.psql("CREATE TABLE items (id int PRIMARY KEY, label text, price numeric)", db="small")
        self.psql("INSERT INTO items SELECT g, md5(g::text), g * 0.25 FROM generate_series(1, 10000) g", db="small")
        log(f"pgbench -i -s {SCALE} (database bench)")
        run([PG_BIN / "pgbench", "-i", "-q", "-s", SCALE, "-h", self.sock, "-p", self.port, "-U", "postgres", "bench"],
            pg=True, capture=True)
        # Archiving from here on: the WAL of pgbench -i (as large as the
        # data) is not needed by restores from the backups below.
        self.psql(f"ALTER SYSTEM SET archive_command = '{archive}'")
        self.psql("SELECT pg_reload_conf()")
        self.psql("SELECT pg_switch_wal()")
        size = int(self.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        log(f"cluster: {size / 1e9:.2f} GB")
        self.cluster_bytes = size
        self.psql("CHECKPOINT")
        self.backups = {}
        for form, extra in (("default", []), ("seekable", ["--seekable"])):
            started = time.monotonic()
            out = run([self.pitr, "--json", "backup", "--fast", *extra, "--repo", self.repo,
                       "-d", f"host={self.sock} port={self.port} user=postgres"], capture=True)
            report = json.loads(out.stdout)
            self.backups[form] = report["id"] if "id" in report else report["backup"]["id"]
            log(f"pitr backup {' '.join(extra) or '(default)'}: {self.backups[form]} "
                f"in {time.monotonic() - started:.0f}s")
        log(f"workload: pgbench -c 2 -T {WORKLOAD_SECONDS}, then changes to small.items and a marker")
        run([PG_BIN / "pgbench", "-c", "2", "-T", WORKLOAD_SECONDS, "-h", self.sock, "-p", self.port,
             "-U", "postgres", "bench"], pg=True, capture=True)
        self.psql("UPDATE items SET price = price + 1 WHERE id % 7 = 0", db="small")
        self.expected = self.psql(
            "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM items t", db="small")
        xid = self.psql("INSERT INTO markers VALUES (1) RETURNING xmin::text")
        self.target = f"xid:{xid}"
        self.psql("UPDATE items SET label = 'wrong'", db="small")
        self.psql("INSERT INTO markers VALUES (2)")
        self.psql("SELECT pg_switch_wal()")
        self.psql("CHECKPOINT")
        time.sleep(5)
        log(f"target {self.target}; expected rows: {self.expected}")

    def check_loaded(self, table: str) -> None:
        got = self.psql(f"SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t",
                        db="small")
        if got != self.expected:
            raise RuntimeError(f"{table}: {got}, expected {self.expected}")
        self.psql(f"DROP TABLE {table}", db="small")

    # -- the two ways --

    def extract(self, form: str, n: int) -> dict:
        table = f"items_x_{form}_{n}"
        live = f"host={self.sock} port={self.port} user=postgres dbname=small"
        run(["sync", "-f", self.work])
        blocks = written_blocks()
        started = time.monotonic()
        out = run([self.pitr, "--json", "extract", "--table", "public.items", "--database", "small",
                   "--to", self.target, "--backup", self.backups[form], "--repo", self.repo,
                   "--scratch", self.scratch, "--into", live, "--as", table], capture=True)
        seconds = time.monotonic() - started
        summary = json.loads(out.stdout)
        self.check_loaded(table)
        written = summary["written"]
        return {"way": "extract", "form": form, "seconds": seconds,
                "without_cleanup": seconds - summary["seconds"]["removal"],
                "staged": written["bytes"], "sparse": written.get("sparse_bytes") or 0,
                "why": written.get("all_written_because"),
                "rusage": written_blocks() - blocks,
                "phases": summary["seconds"]}

    def manual(self, form: str, n: int) -> dict:
        table = f"items_m_{form}_{n}"
        pgdata = self.work / f"manual-{form}-{n}"
        dump = self.work / f"manual-{form}-{n}.dump"
        run(["sync", "-f", self.work])
        blocks = written_blocks()
        started = time.monotonic()
        out = run([self.pitr, "--json", "restore", "--to", self.target, "--backup", self.backups[form],
                   "--repo", self.repo, "--pgdata", pgdata], capture=True)
        restored = time.monotonic() - started
        self.servers.append(pgdata)
        report = json.loads(out.stdout)
        sock, port = Path(report["socket_dir"]), int(report["port"])
        self.psql(f"ALTER TABLE items RENAME TO {table}; ALTER INDEX items_pkey RENAME TO {table}_pkey",
                  db="small", port=port, host=sock)
        run([PG_BIN / "pg_dump", "-Fc", "-t", f"public.{table}", "-h", sock, "-p", port, "-U", "postgres",
             "-f", dump, "small"], pg=False, capture=True)
        run([PG_BIN / "pg_restore", "--no-owner", "-h", self.sock, "-p", self.port, "-U", "postgres",
             "-d", "small", dump], capture=True)
        loaded = time.monotonic() - started
        rusage = written_blocks() - blocks
        cleanup_started = time.monotonic()
        self.stop(pgdata)
        shutil.rmtree(pgdata, ignore_errors=True)
        dump.unlink(missing_ok=True)
        cleanup = time.monotonic() - cleanup_started
        self.check_loaded(table)
        return {"way": "manual", "form": form, "seconds": loaded + cleanup, "without_cleanup": loaded,
                "cleanup_seconds": cleanup, "restore_seconds": restored,
                "staged": report["bytes_staged"], "sparse": 0, "why": None, "rusage": rusage}

    def measure(self) -> None:
        for n in range(1, ROUNDS + 1):
            for form in ("default", "seekable"):
                for way in ((self.extract, self.manual) if n % 2 else (self.manual, self.extract)):
                    result = way(form, n)
                    self.results.append(result)
                    log(f"round {n} {form:8} {result['way']:7}: {result['seconds']:6.1f}s "
                        f"({result['without_cleanup']:.1f}s without clean-up), "
                        f"staged {gb(result['staged'])}, left sparse {gb(result['sparse'])}, "
                        f"written (rusage) {gb(result['rusage'])}"
                        + (f", all written: {result['why']}" if result["why"] else "")
                        + (f", phases {json.dumps(result['phases'])}" if "phases" in result else ""))

    def report(self) -> int:
        load = os.getloadavg()[0]
        print()
        print(f"pitr extract vs the manual way (pitr restore + pg_dump + pg_restore, then the restored cluster "
              f"stopped and removed), scale {SCALE} ({self.cluster_bytes / 1e9:.1f} GB cluster), {ROUNDS} rounds, "
              f"load {load:.1f}, {os.cpu_count()} cores, {dt.date.today()}")
        print("Both ways timed with their clean-up (extract removes its copy before it returns; the manual way "
              "stops and removes its restored cluster): that ratio decides; without clean-up beside it.")
        print(f"{'backup form':28} {'extract':>9} {'manual':>9} {'ratio':>6}  {'w/o clean-up':>20} {'ratio':>6}  "
              f"{'staged (extract / manual)':>27}  {'written, rusage (extract / manual)':>36}  target <= {TARGET_RATIO}")
        met = []
        for form, label in (("default", "pitr backup (zstd stream)"), ("seekable", "pitr backup --seekable")):
            rows = [r for r in self.results if r["form"] == form]
            med = lambda way, key: statistics.median(r[key] for r in rows if r["way"] == way)
            x, m = med("extract", "seconds"), med("manual", "seconds")
            xw, mw = med("extract", "without_cleanup"), med("manual", "without_cleanup")
            ratio = x / m
            ok = ratio <= TARGET_RATIO
            met.append((label, ok))
            print(f"{label:28} {x:8.1f}s {m:8.1f}s {ratio:6.2f}  {xw:8.1f}s / {mw:8.1f}s {xw / mw:6.2f}  "
                  f"{gb(med('extract', 'staged')):>12} / {gb(med('manual', 'staged')):>12}  "
                  f"{gb(med('extract', 'rusage')):>17} / {gb(med('manual', 'rusage')):>16}  "
                  f"{'MET' if ok else 'NOT MET'}")
        print("(medians; the manual way's clean-up alone: "
              + ", ".join(f"{form} {statistics.median(r['cleanup_seconds'] for r in self.results if r['form'] == form and r['way'] == 'manual'):.1f}s"
                          for form in ("default", "seekable"))
              + "; extract's phases per round are in the log above)")
        # The floor: what no extract can skip, measured inside extract
        # itself (the copy's server started and its WAL replayed to the
        # target, promotion included, then the dump and the load).
        for form in ("default", "seekable"):
            rows = [r for r in self.results if r["form"] == form]
            floor = statistics.median(r["phases"]["restore_phases"]["recovery"] + r["phases"]["dump_and_load"]
                                      for r in rows if r["way"] == "extract")
            manual = statistics.median(r["seconds"] for r in rows if r["way"] == "manual")
            manual_loaded = statistics.median(r["without_cleanup"] for r in rows if r["way"] == "manual")
            print(f"floor ({form}): server start + replay to the target + dump and load {floor:.1f}s = "
                  f"{floor / manual:.2f}x the manual way with clean-up, {floor / manual_loaded:.2f}x without")
        return 0 if any(ok for _, ok in met) else 1


def main() -> int:
    bench = Bench()
    interrupted = []
    signal.signal(signal.SIGTERM, lambda *_: interrupted.append(1) or (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        bench.setup()
        bench.measure()
        return bench.report()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
