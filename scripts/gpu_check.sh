#!/usr/bin/env bash
# One call on a GPU machine whose python3 already has cupy (and torch, jax for their tests):
# install cugroupgemm without dependencies, run the whole test suite (GPU tests included)
# and the quick benchmark. Logs go to $1, else $OUT (the device tool), else ./gpu-logs.
#   bash scripts/gpu_check.sh [LOG_DIR] [extra pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${1:-${OUT:-./gpu-logs}}
shift || true
mkdir -p "$LOG_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 CUGROUPGEMM_CACHE_DIR=${CUGROUPGEMM_CACHE_DIR:-/tmp/cugroupgemm-cache}
export XLA_PYTHON_CLIENT_PREALLOCATE=false

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } \
  > "$LOG_DIR/device.txt" 2>&1
$PY -m pip install -q --no-deps --no-build-isolation . > "$LOG_DIR/install.log" 2>&1 \
  || { echo "install failed"; tail -20 "$LOG_DIR/install.log"; exit 1; }
$PY -m cugroupgemm info 2>&1 | tee "$LOG_DIR/info.txt"
# Eight workers share the GPU when pytest-xdist is there (the device image has it): the
# suite is mostly compiles and small launches, and runs in about a minute that way.
PARALLEL=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
# shellcheck disable=SC2086
$PY -m pytest -q -p no:cacheprovider $PARALLEL --junitxml="$LOG_DIR/junit.xml" "$@" 2>&1 \
  | tee "$LOG_DIR/tests.log" | tail -40
tests_rc=${PIPESTATUS[0]}
# The GPU's state right after the suite, beside the quick bench it may slow (a hot GPU
# clocks lower: log item 41's em64 outlier came right after the suite).
nvidia-smi --query-gpu=temperature.gpu,clocks.sm,power.draw,clocks_event_reasons.active \
  --format=csv 2>&1 | tee "$LOG_DIR/after-tests-state.txt"
$PY -m cugroupgemm bench --quick --json "$LOG_DIR/bench.json" --plot "$LOG_DIR/bench.png" 2>&1 | tee "$LOG_DIR/bench.log"
echo "summary: $(head -1 "$LOG_DIR/device.txt") | $(sed -n 2p "$LOG_DIR/device.txt") | $(tail -1 "$LOG_DIR/tests.log")"
exit "$tests_rc"
