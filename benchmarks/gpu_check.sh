#!/usr/bin/env bash
# The GPU check for the day a GPU is lent (benchmarks/gpu_check.py says what it measures): the device, train
# and eval throughput and peak memory at the paper's shapes in fp32 / tf32 / bf16 / channels_last / compile,
# a 2-epoch synthetic run at the Cityscapes size through the stages, and the table time from the measured
# throughput; one JSON on stdout. On a CPU it runs cut down (about a minute), which is how CI tests it.
#
#   bash benchmarks/gpu_check.sh --out gpu_check.json      # arguments go to gpu_check.py (--help)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_check.py "$@"
