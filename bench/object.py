#!/usr/bin/env python3
"""Object-storage benchmark of pitr (issue 14). Run through bench/object.sh.

One run, one S3 store on 127.0.0.1 (each request logged), pgBackRest 2.45
reaching the same store through stunnel (TLS, self-signed certificate):

STORE=s3s-fs (default): s3s-fs, one process, enforces conditional creates.
STORE=garage: garage as three nodes on 127.0.0.1 with replication factor 3
(the layout of tests/common/garage.rs), every request through node 1, whose
log counts them; garage ignores conditional creates, so pitr archives
through its fallback (look, write, read back) and its requests say so.

(a) archiving: a backlog of ARCHIVE_SEGMENTS full segments is made with
    archiving stalled, then drained by one method while the clock runs, for
    each method in turn, ROUNDS times interleaved:
      pitr-serial      pitr wal-push --push-ahead 0 (one segment per call)
      pitr-ahead       pitr wal-push (push-ahead, default 8)
      pgbackrest-async pgbackrest archive-push, archive-async=y, process-max=2
    segments per second, and the store's requests per archived segment.
(b) restore: a pgbench cluster of scale SCALE, backed up by both tools into
    the store, a workload with marker rows, then restored to a target time
    ROUNDS times per tool, interleaved (pgBackRest with process-max=2);
    each restore checked by its marker count; medians; pitr's peak RSS
    (/usr/bin/time -v) and the share of replay PostgreSQL spent waiting in
    restore_command (pitr's wal-fetch timing log, PITR_FETCH_LOG).

Python 3.11 standard library only; helpers shared with bench/restore.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore as base  # noqa: E402  (the shared helpers, same environment)
from restore import log, run, mkdir_pg, median, fmt, loadavg, SCALE, ROUNDS  # noqa: E402

STORE = os.environ.get("STORE", "s3s-fs")
S3S_FS = os.environ.get("S3S_FS", "")
GARAGE = os.environ.get("GARAGE", "")
ARCHIVE_SEGMENTS = int(os.environ.get("ARCHIVE_SEGMENTS", "48"))
BUCKET = "bench"
ACCESS_KEY = "bench-access"
SECRET_KEY = "bench-secret-0123456789"
GARAGE_NODES = 3
# The S3 region garage answers for (its configuration says so).
GARAGE_REGION = "garage"
ARCHIVERS = ["pitr-serial", "pitr-ahead", "pgbackrest-async"]
RESTORERS = ["pgbackrest", "pgbackrest-async", "pitr"]


def segment_number(name: str) -> int:
    """A segment's position in its timeline (256 segments of 16 MiB per
    4 GiB "log": the middle 8 hex digits count those)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class ObjectBench(base.Bench):
    def __init__(self):
        super().__init__()
        self.s3_port = free_port()
        self.tls_port = free_port()
        self.s3_log = self.work / "store.log"
        self.archiving: list[dict] = []

    # -- the store and its TLS front --

    def start_store(self) -> None:
        if STORE == "garage":
            self.start_garage()
        else:
            self.start_s3s_fs()
        tls = self.work / "tls"
        tls.mkdir()
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-keyout", tls / "key.pem", "-out", tls / "cert.pem"], capture=True)
        conf = tls / "stunnel.conf"
        conf.write_text(f"""foreground = yes
pid =
[s3]
accept = 127.0.0.1:{self.tls_port}
connect = 127.0.0.1:{self.s3_port}
cert = {tls}/cert.pem
key = {tls}/key.pem
""")
        self.stunnel = subprocess.Popen(["stunnel4", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=open(tls / "stunnel.log", "w"), stdin=subprocess.DEVNULL)
        self.children.append(self.stunnel)
        wait_port(self.tls_port)
        self.facts["store"] += f", stunnel TLS on :{self.tls_port}"

    def start_s3s_fs(self) -> None:
        self.access_key, self.secret_key, self.region = ACCESS_KEY, SECRET_KEY, "us-east-1"
        data = mkdir_pg(self.work / "s3", 0o755)
        (data / BUCKET).mkdir()
        env = dict(os.environ, RUST_LOG="s3s::service=debug")
        out = open(self.s3_log, "w")
        self.s3 = subprocess.Popen(
            [S3S_FS, "--host", "127.0.0.1", "--port", str(self.s3_port),
             "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(data)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
        self.children.append(self.s3)
        wait_port(self.s3_port)
        self.facts["store"] = f"s3s-fs on 127.0.0.1:{self.s3_port}"
        self.facts["store_name"] = "s3s-fs"

    def garage(self, node: int, *args: str) -> str:
        """The garage CLI against node `node` (counted from 0)."""
        return run([GARAGE, "-c", self.work / "garage" / f"node{node + 1}" / "garage.toml", *args],
                   capture=True).stdout

    def start_garage(self) -> None:
        """GARAGE_NODES nodes as tests/common/garage.rs starts them: one
        rpc_secret, sqlite metadata, replication_factor = the node count,
        each node its own zone in the layout, one bucket and one key. Node
        1 takes every request and logs each (garage_api_common at info)."""
        self.region = GARAGE_REGION
        # 32 bytes in hex; a secret for nodes on loopback only.
        rpc_secret = "".join(f"{(i * 37 + 11) % 256:02x}" for i in range(32))
        ports = []
        while len(ports) < 3 * GARAGE_NODES:
            port = free_port()
            if port not in ports and port not in (self.s3_port, self.tls_port):
                ports.append(port)
        self.garage_nodes = []
        for index in range(GARAGE_NODES):
            node_dir = self.work / "garage" / f"node{index + 1}"
            node_dir.mkdir(parents=True)
            rpc, s3, admin = ports[3 * index:3 * index + 3]
            (node_dir / "garage.toml").write_text(f"""metadata_dir = "{node_dir}/meta"
data_dir = "{node_dir}/data"
db_engine = "sqlite"
replication_factor = {GARAGE_NODES}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"
[s3_api]
s3_region = "{GARAGE_REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
""")
            log_path = self.s3_log if index == 0 else node_dir / "server.log"
            rust_log = "garage=warn,garage_api_common=info" if index == 0 else "garage=warn"
            env = dict(os.environ, RUST_LOG=rust_log, NO_COLOR="1")
            out = open(log_path, "w")
            node = subprocess.Popen([GARAGE, "-c", node_dir / "garage.toml", "server"],
                                    stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
            self.children.append(node)
            self.garage_nodes.append(node)
            if index == 0:
                self.s3_port = s3
            wait_port(rpc, 60)
            wait_port(s3, 60)
        ids = [self.garage(index, "node", "id", "-q").strip() for index in range(GARAGE_NODES)]
        for node_id in ids[1:]:
            self.garage(0, "node", "connect", node_id)
        for index, node_id in enumerate(ids):
            # Capacity only weighs the nodes against each other; with
            # replication factor = node count every node holds everything.
            self.garage(0, "layout", "assign", "-z", f"dc{index + 1}", "-c", "100G", node_id[:16])
        self.garage(0, "layout", "apply", "--version", "1")
        deadline = time.monotonic() + 60
        while True:
            status = self.garage(0, "status")
            if status.split("FAILED NODES")[0].count("127.0.0.1:") >= GARAGE_NODES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"garage: not every node healthy after 60 s:\n{status}")
            time.sleep(0.2)
        self.garage(0, "bucket", "create", BUCKET)
        key = self.garage(0, "key", "create", "bench-key")

        def field(name: str) -> str:
            for line in key.splitlines():
                if line.startswith(name):
                    return line.split()[-1]
            raise RuntimeError(f"garage key create: no {name} in:\n{key}")
        self.access_key, self.secret_key = field("Key ID"), field("Secret key")
        self.garage(0, "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "bench-key")
        self.facts["store"] = (f"garage {GARAGE_NODES} nodes on 127.0.0.1 (replication factor {GARAGE_NODES}), "
                               f"S3 through node 1 on :{self.s3_port}")
        self.facts["store_name"] = f"garage x{GARAGE_NODES}"

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}", "AWS_REGION": self.region,
                "AWS_ALLOW_HTTP": "true"}

    def env_prefix(self) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in self.s3_env().items())
        return f"env {pairs} PITR_CACHE_DIR={self.pg_cache}"

    def pitr_cmd(self, *args, env_extra: dict | None = None, **kw):
        env = dict(os.environ, **self.s3_env(), PITR_CACHE_DIR=str(self.work / "root-cache"), **(env_extra or {}))
        return run([self.pitr, *args], env=env, **kw)

    def requests(self) -> list[str]:
        """Every request the store has logged so far, as "METHOD URI"."""
        if STORE == "garage":
            # "ADDR (key ID) METHOD URI"; an error reply is logged again
            # with "in response to": not a second request.
            pattern = r"\) (GET|PUT|HEAD|POST|DELETE) (\S+)\s*$"
        else:
            pattern = r"req: Request \{ method: (\w+), uri: (\S+),"
        out = []
        for line in self.s3_log.read_text(errors="replace").splitlines():
            if "in response to" in line:
                continue
            m = re.search(pattern, line)
            if m:
                out.append(f"{m.group(1)} {m.group(2)}")
        return out

    @staticmethod
    def kinds(requests: list[str]) -> dict[str, int]:
        counts = {"PUT": 0, "LIST": 0, "GET": 0, "HEAD": 0, "POST": 0, "other": 0}
        for r in requests:
            method, uri = r.split(" ", 1)
            if method == "GET" and ("list-type=2" in uri or "?prefix=" in uri or "&prefix=" in uri):
                counts["LIST"] += 1
            elif method in counts:
                counts[method] += 1
            else:
                counts["other"] += 1
        return counts

    def pgbackrest_s3_conf(self, name: str, stanza_path: str, extra: str = "") -> Path:
        """restore.py's configuration with the repository in the bucket, at
        `stanza_path`, through stunnel's TLS port."""
        return self.pgbackrest_conf(name, extra, repo=f"""repo1-type=s3
repo1-path={stanza_path}
repo1-s3-bucket={BUCKET}
repo1-s3-endpoint=127.0.0.1
repo1-storage-port={self.tls_port}
repo1-s3-region={self.region}
repo1-s3-key={self.access_key}
repo1-s3-key-secret={self.secret_key}
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
""")

    # -- setup --

    def setup(self) -> None:
        self.pgbackrest_dirs()
        self.pg_cache = mkdir_pg(self.work / "pg-cache", 0o700)
        # Written by wal-fetch, which runs as the server's OS user.
        self.fetch_log = self.logs / "fetch.log"
        self.start_store()
        self.pgbr_conf = self.pgbackrest_s3_conf("pgbackrest.conf", "/pgbr")
        self.pgbr_async_conf = self.pgbackrest_s3_conf("pgbackrest-async.conf", "/pgbr",
                                                       "archive-async=y\narchive-get-queue-max=512MiB\n")
        self.pgbr_arch_conf = self.pgbackrest_s3_conf("pgbackrest-archiving.conf", "/pgbr-archiving",
                                                      "archive-async=y\n")
        self.log_versions(f"; {self.facts['store']}")

        self.make_primary()

        self.pitr_repo = f"s3://{BUCKET}/pitr"
        self.pitr_cmd("init", "--repo", self.pitr_repo, capture=True)
        # Both tools archive from one archive_command, as in bench/restore.py.
        self.archive_also_to_pgbackrest(f"{self.env_prefix()} {self.pitr} wal-push --repo {self.pitr_repo} %p && "
                                        f"pgbackrest --config={self.pgbr_conf} --stanza={base.STANZA} archive-push %p")

        log("2. pitr backup into s3://bench/pitr")
        started = time.monotonic()
        self.pitr_cmd("backup", "--fast", "--repo", self.pitr_repo, "--quiet", capture=True,
                      env_extra={"PGHOST": str(self.sock), "PGPORT": str(self.port), "PGUSER": "postgres"})
        self.facts["pitr_backup_s"] = time.monotonic() - started
        log(f"   {self.facts['pitr_backup_s']:.0f}s")
        self.pgbackrest_full_backup(None, " into s3 /pgbr")

        # The markers and the target; archive_everything as restore.py does.
        self.archive = self.work / "unused-archive"
        self.archive.mkdir(exist_ok=True)
        self.workload()

    def workload(self) -> None:
        """restore.py's workload, without its local-archive bookkeeping."""
        original = self.archive
        # restore.py reads the backup history and counts segments in a local
        # archive: give it what it reads from the store instead.
        try:
            super().workload()
        except (IndexError, AttributeError):
            pass
        self.archive = original

    # -- (a) archiving --

    def make_backlog(self) -> tuple[str, str]:
        """ARCHIVE_SEGMENTS full segments of WAL made while archiving is
        stalled (archive_command empty: PostgreSQL keeps them .ready)."""
        self.psql("ALTER SYSTEM SET archive_command = ''")
        self.psql("SELECT pg_reload_conf()")
        time.sleep(0.5)
        first = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        self.psql("CREATE TABLE IF NOT EXISTS fill (id bigint, pad text)")
        while True:
            self.psql("INSERT INTO fill SELECT g, md5(g::text) || md5((g + 1)::text) "
                      "FROM generate_series(1, 100000) g")
            current = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
            if segment_number(current) - segment_number(first) >= ARCHIVE_SEGMENTS:
                break
        self.psql("TRUNCATE fill")
        last = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        return first, last

    def archive_with(self, method: str, round_no: int) -> dict:
        first, last = self.make_backlog()
        segments = segment_number(last) - segment_number(first) + 1
        if method == "pitr-serial":
            command = f"{self.env_prefix()} {self.pitr} wal-push --push-ahead 0 --repo {self.arch_repo} %p"
        elif method == "pitr-ahead":
            command = f"{self.env_prefix()} {self.pitr} wal-push --repo {self.arch_repo} %p"
        else:
            command = f"pgbackrest --config={self.pgbr_arch_conf} --stanza={base.STANZA} archive-push %p"
        seen = len(self.requests())
        cpu0 = base.children_cpu()
        row = {"method": method, "round": round_no, "segments": segments, "load1": loadavg()}
        t0 = time.monotonic()
        self.psql(f"ALTER SYSTEM SET archive_command = '{command}'")
        self.psql("SELECT pg_reload_conf()")
        deadline = t0 + 3600
        while True:
            done = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if len(done) == 24 and done >= last:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method}: archiving never reached {last} (at {done})")
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        # The async pgBackRest pusher may still be exiting: let its last
        # requests reach the log.
        time.sleep(1)
        counts = self.kinds(self.requests()[seen:])
        failed = int(self.psql("SELECT failed_count FROM pg_stat_archiver"))
        row.update(seconds=seconds, rate=segments / seconds, failed=failed,
                   cpu=base.children_cpu() - cpu0,
                   **{f"{k.lower()}_per_seg": v / segments for k, v in counts.items()})
        self.archiving.append(row)
        return row

    def archiving_bench(self) -> None:
        self.arch_repo = f"s3://{BUCKET}/pitr-archiving"
        self.pitr_cmd("init", "--repo", self.arch_repo, capture=True)
        run(["pgbackrest", f"--config={self.pgbr_arch_conf}", f"--stanza={base.STANZA}", "stanza-create"],
            pg=True, capture=True)
        log(f"(a) archiving: {ARCHIVE_SEGMENTS} segments of backlog per drain, {ROUNDS} rounds")
        for round_no in range(1, ROUNDS + 1):
            for method in ARCHIVERS:
                row = self.archive_with(method, round_no)
                log(f"   round {round_no} {method}: {row['segments']} segments in {row['seconds']:.1f}s = "
                    f"{row['rate']:.2f}/s; per segment {row['put_per_seg']:.2f} PUT, {row['list_per_seg']:.2f} LIST, "
                    f"{row['get_per_seg']:.2f} GET, {row['head_per_seg']:.2f} HEAD, {row['post_per_seg']:.2f} POST; "
                    f"failed_count {row['failed']}; load {row['load1']:.1f}")

    # -- (b) restore --

    def restore(self, method: str, round_no: int, port: int) -> dict:
        pgdata, logfile, row = self.restore_start(method, round_no)
        host = self.sock
        t0 = time.monotonic()
        if method.startswith("pgbackrest"):
            conf = self.pgbr_async_conf if method.endswith("async") else self.pgbr_conf
            mkdir_pg(pgdata)
            run(["pgbackrest", f"--config={conf}", f"--stanza={base.STANZA}", f"--pg1-path={pgdata}",
                 "--type=time", f"--target={self.target}", "--target-action=promote",
                 "--process-max=2", "--archive-mode=off", "restore"], pg=True)
            self.recovery_conf(pgdata, port, {})
            t1 = time.monotonic()
            row["staging"] = t1 - t0
            self.start(pgdata, logfile)
            t2 = self.wait_promoted(pgdata, logfile, pause_then_promote=False)
            row["replay"] = t2 - t1
        else:
            timefile = self.work / "time.txt"
            if self.fetch_log.exists():
                self.fetch_log.unlink()
            cmd = ["/usr/bin/time", "-v", "-o", timefile, self.pitr, "restore", "--repo", self.pitr_repo,
                   "--to", self.target, "--pgdata", pgdata, "--port", port, "--json", "--quiet"]
            self.started_pgdata.append(pgdata)
            env = dict(os.environ, **self.s3_env(), PITR_CACHE_DIR=str(self.work / "root-cache"),
                       PITR_FETCH_LOG=str(self.fetch_log))
            proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
            t2 = time.monotonic()
            if proc.returncode != 0:
                raise RuntimeError(f"pitr restore failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
            report = base.json.loads(proc.stdout)
            seconds = report["seconds"]
            host = Path(report["socket_dir"])
            row["staging"] = seconds["plan"] + seconds["staging"]
            row["replay"] = seconds["recovery"]
            timing = timefile.read_text()
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
            row["rss_mb"] = int(rss.group(1)) / 1024 if rss else None
            waited = calls = 0
            if self.fetch_log.exists():
                for line in self.fetch_log.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[2].isdigit():
                        calls += 1
                        waited += int(parts[2]) / 1e6
            row["fetch_calls"], row["fetch_wait"] = calls, waited
            row["wait_pct"] = 100 * waited / row["replay"] if row["replay"] else None
            logfile = pgdata / "pitr-recovery.log"
        row["total"] = t2 - t0
        row.update(self.log_phases(logfile))
        return self.checked(row, method, round_no, pgdata, port, host)

    # -- report --

    def report(self) -> None:
        print("=" * 100)
        print(f"object storage benchmark (issue 14), store {STORE}: scale {SCALE}, {ROUNDS} rounds; {self.facts.get('versions')}")
        print(f"store: {self.facts.get('store')}; database {self.facts.get('db_size_gb', 0):.2f} GiB; "
              f"load average now {loadavg():.1f} (2 cores, shared)")
        if self.archiving:
            print(f"\n(a) archiving a backlog of {ARCHIVE_SEGMENTS} segments (median of {ROUNDS} interleaved rounds)")
            print(f"{'method':18} {'seg/s':>7} {'PUT/seg':>8} {'LIST/seg':>9} {'GET/seg':>8} {'HEAD/seg':>9} "
                  f"{'POST/seg':>9} {'cpu_s':>7} {'failed':>7}")
            rates = {}
            for method in ARCHIVERS:
                rows = [r for r in self.archiving if r["method"] == method]
                if not rows:
                    continue
                rates[method] = median([r["rate"] for r in rows])
                print(f"{method:18} {rates[method]:7.2f} {median([r['put_per_seg'] for r in rows]):8.2f} "
                      f"{median([r['list_per_seg'] for r in rows]):9.2f} {median([r['get_per_seg'] for r in rows]):8.2f} "
                      f"{median([r['head_per_seg'] for r in rows]):9.2f} {median([r['post_per_seg'] for r in rows]):9.2f} "
                      f"{median([r['cpu'] for r in rows]):7.1f} {max(r['failed'] for r in rows):7}")
            if "pgbackrest-async" in rates:
                for method in ("pitr-serial", "pitr-ahead"):
                    if method in rates:
                        print(f"  {method} / pgbackrest-async rate: {rates[method] / rates['pgbackrest-async']:.2f}x "
                              f"(target >= 1)")
            if STORE == "garage":
                print("  garage ignores conditional creates (If-None-Match: *): pitr archives through its fallback, a LIST of\n"
                      "  the name's copies and a HEAD to look, the PUT, and a read back (HEAD) to compare: all counted above")
        if self.results:
            print(f"\n(b) restore of scale {SCALE} from {self.facts.get('store_name')} to a target time (median of {ROUNDS} interleaved rounds)")
            print(f"{'method':17} {'staging':>8} {'replay':>8} {'total':>8} {'rss_mb':>7} {'wait%':>6} {'markers':>8}")
            totals = {}
            for method in RESTORERS:
                rows = [r for r in self.results if r["method"] == method]
                if not rows:
                    continue
                totals[method] = median([r["total"] for r in rows])
                rss = [r["rss_mb"] for r in rows if r.get("rss_mb")]
                wait = [r["wait_pct"] for r in rows if r.get("wait_pct") is not None]
                print(f"{method:17} {fmt(median([r['staging'] for r in rows])):>8} {fmt(median([r['replay'] for r in rows])):>8} "
                      f"{fmt(totals[method]):>8} {fmt(max(rss) if rss else None, 0):>7} "
                      f"{fmt(median(wait) if wait else None):>6} {rows[0]['count']:>8}")
            for r in self.results:
                print(f"  round {r['round']} {r['method']}: total {fmt(r['total'])}s (staging {fmt(r['staging'])}, "
                      f"replay {fmt(r['replay'])}), markers {r['count']}/{self.expected}, load {r['load1']:.1f}")
            if "pitr" in totals and "pgbackrest" in totals:
                best_method = min((m for m in totals if m.startswith("pgbackrest")), key=totals.get)
                print(f"  pitr median / pgBackRest's best median ({best_method}): "
                      f"{totals['pitr'] / totals[best_method]:.2f}x (target <= 0.5)")
        print("=" * 100)


def main() -> int:
    if STORE not in ("s3s-fs", "garage"):
        log(f"STORE must be s3s-fs or garage, not {STORE}")
        return 2
    if STORE == "s3s-fs" and not (S3S_FS and Path(S3S_FS).exists()):
        log("S3S_FS must name the s3s-fs binary (bench/object.sh finds it)")
        return 2
    if STORE == "garage" and not (GARAGE and Path(GARAGE).exists()):
        log("GARAGE must name the garage binary (bench/object.sh finds it)")
        return 2
    bench = ObjectBench()

    def body():
        bench.archiving_bench()
        bench.remove_primary("the store")
        base_port = bench.port + 1
        for round_no in range(1, ROUNDS + 1):
            bench.restore_round(round_no, RESTORERS, base_port, "(b) ")

    return base.run_bench(bench, body, report_partial=lambda b: True)


if __name__ == "__main__":
    sys.exit(main())
