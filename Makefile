# The README's two commands. Both set up .venv first (idempotent: pip skips what is installed).
PY := .venv/bin/python
IMAGE ?= xtask:latest
BASE ?= main
# CPU threads for the checks: CPU kernels split their sums by thread, so a run repeats itself bitwise for
# one thread count; 2 is what CI's machine has and what produced the committed metrics.
CHECK_THREADS ?= 2

.PHONY: setup repro test test-all test-slurm metrics-diff check-trace check-determinism check-metrics rehearse docker-build docker-repro image-test

.venv/.installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch .venv/.installed

setup: .venv/.installed

# Set up, then run the whole DVC pipeline on the default params (the embedded synthetic dataset).
repro: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro

# Set up, then run the test suite (slow tests excluded; `make test-all` runs them too).
test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

# The SLURM route for real (docs/slurm.md): installs Debian's SLURM if missing and starts a single-node one on
# localhost with fake GPUs (root needed; minutes); part of test-all as well.
test-slurm: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -q tests/test_slurm.py tests/test_sweep.py

# Reproduce, then the metrics and params diff against BASE (default main) as Markdown: the CI's PR comment.
metrics-diff: repro
	$(PY) -m xtask.tools.metrics_diff --base $(BASE)

# CI's tight check (.ci/run): the first optimiser steps of every loss, balancing and protocol variant in
# float64 against the committed tests/trace_f64.json, within 1e-9 on any x86-64 CPU (docs/ci.md). After an
# intended change of what training computes: `$(PY) -m xtask.tools.check_trace --write`, and commit the trace.
check-trace: setup
	$(PY) -m xtask.tools.check_trace

# CI's next check: a short run of the pipeline, twice, must write identical outputs here.
check-determinism: setup
	OMP_NUM_THREADS=$(CHECK_THREADS) PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m xtask.tools.check_determinism

# CI's second check: reproduce with CHECK_THREADS CPU threads, then every committed number must come back
# within its measured tolerance (benchmarks/tolerance.json; docs/ci.md). Also the way to produce the
# metrics files to commit.
check-metrics: setup
	OMP_NUM_THREADS=$(CHECK_THREADS) PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro
	$(PY) -m xtask.tools.check_metrics

# The paper's table shape on stand-in data through the routes users take: both raw formats, the real sections
# with -S overrides, 16 queued runs, the report, a folder remote and a clone that reproduces nothing
# (xtask/tools/rehearse.py; minutes on 2 cores). REHEARSE_DIR=<empty folder> keeps everything there.
rehearse: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m xtask.tools.rehearse $(if $(REHEARSE_DIR),--keep $(REHEARSE_DIR))

# The container route (docs/containers.md): build the image, then `dvc repro` inside it, as you (the
# ids are passed here, so this needs no .env; plain `docker compose` reads them from .env).
docker-build:
	docker build -t $(IMAGE) .

docker-repro:
	XTASK_UID=$$(id -u) XTASK_GID=$$(id -g) XTASK_IMAGE=$(IMAGE) docker compose run --rm repro

# Opt-in, not CI's (it has no engine): the image built for real with podman on a stand-in base made here
# (Debian 12), the synthetic default reproduced inside it with CHECK_THREADS threads and checked like
# check-metrics, then launch.where: docker through podman's docker socket (xtask/tools/image_test.py,
# docs/containers.md). Root, podman, debootstrap, runc, ~20 GB under IMAGE_TEST_DIR (outside the repo).
IMAGE_TEST_DIR ?= /var/tmp/xtask-image
image-test: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m xtask.tools.image_test --dir $(IMAGE_TEST_DIR) --threads $(CHECK_THREADS)
