#!/usr/bin/env python3
"""The physical floors of issue 16's benchmark (bench/seekable.py runs it).

  floor.py list TREE > listing.json        the directories and file sizes of a tree
  floor.py write listing.json DEST [--jobs N]
        writes that tree (same directories, same file sizes) from memory into
        DEST.tmp, one syncfs on its filesystem, then renames DEST.tmp to DEST:
        what a restore must do at the least, with a restore's durability
  floor.py read DIR [--jobs N]
        reads every file under DIR once (what a delta restore must do at the
        least: look at the existing directory)

Each prints one JSON line: seconds, bytes, files, jobs. The work is done by N
threads (default: one per core, as `pitr restore --jobs`), with os.write and
os.readv of 1 MiB buffers, which release the GIL: the interpreter is not the
bottleneck (its CPU time is printed beside the wall time, and the write floor
is compared with dd by the benchmark).

Python 3.11 standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import sys
import threading
import time

CHUNK = 1 << 20


def tree_listing(root: str) -> dict:
    dirs, files = [], []
    for path, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(path, root)
        if rel != ".":
            dirs.append(rel)
        for name in filenames:
            full = os.path.join(path, name)
            st = os.lstat(full)
            if os.path.isfile(full) and not os.path.islink(full):
                files.append([os.path.normpath(os.path.join(rel, name)), st.st_size])
    return {"dirs": sorted(dirs), "files": files}


def run_workers(jobs: int, items, work) -> None:
    """Runs work(item) on `jobs` threads; the largest items first, as the
    restores do, so that one large file does not finish last alone."""
    todo: queue.Queue = queue.Queue()
    for item in items:
        todo.put(item)
    errors = []

    def worker():
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(item)
            except BaseException as error:  # reported after the join
                errors.append(error)
                return

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def syncfs(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def write_floor(listing_path: str, dest: str, jobs: int) -> dict:
    with open(listing_path) as f:
        listing = json.load(f)
    # Incompressible bytes, made before the clock starts: the data comes
    # from memory.
    data = memoryview(os.urandom(CHUNK))
    staging = dest + ".tmp"
    started = time.monotonic()
    os.mkdir(staging, 0o700)
    for rel in listing["dirs"]:
        os.makedirs(os.path.join(staging, rel), 0o700, exist_ok=True)

    def write(item):
        rel, size = item
        fd = os.open(os.path.join(staging, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left = size
            while left:
                n = os.write(fd, data[:min(left, CHUNK)])
                left -= n
        finally:
            os.close(fd)

    files = sorted(listing["files"], key=lambda item: -item[1])
    run_workers(jobs, files, write)
    syncfs(staging)
    os.rename(staging, dest)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "bytes": sum(s for _, s in files), "files": len(files), "jobs": jobs}


def read_floor(root: str, jobs: int) -> dict:
    started = time.monotonic()
    files = [(rel, size) for rel, size in tree_listing(root)["files"]]
    files.sort(key=lambda item: -item[1])
    total = [0] * 1
    lock = threading.Lock()

    def read(item):
        rel, _ = item
        buf = bytearray(CHUNK)
        n_total = 0
        fd = os.open(os.path.join(root, rel), os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [buf])
                if n == 0:
                    break
                n_total += n
        finally:
            os.close(fd)
        with lock:
            total[0] += n_total

    run_workers(jobs, files, read)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "bytes": total[0], "files": len(files), "jobs": jobs}


def main(argv: list[str]) -> int:
    jobs = os.cpu_count() or 1
    if "--jobs" in argv:
        i = argv.index("--jobs")
        jobs = int(argv[i + 1])
        del argv[i:i + 2]
    if len(argv) == 2 and argv[0] == "list":
        json.dump(tree_listing(argv[1]), sys.stdout)
    elif len(argv) == 3 and argv[0] == "write":
        print(json.dumps(write_floor(argv[1], argv[2], jobs)))
    elif len(argv) == 2 and argv[0] == "read":
        print(json.dumps(read_floor(argv[1], jobs)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
