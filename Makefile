# The README's two commands. Both set up .venv first (idempotent: pip skips what is installed).
PY := .venv/bin/python

.PHONY: setup repro test test-all

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
