#!/usr/bin/env bash
# Everything a kernel change needs on the GPU, in one call of the device tool: the test
# suite and the quick benchmark (gpu_check.sh), the four sanitizers (sanitize.sh) and
# the full benchmark. The device tool brings back few files, so every log goes into one
# archive: $OUT/logs.tgz (or $1/logs.tgz), beside summary.txt (one line per step).
#   bash scripts/device_session.sh [OUT_DIR]
# SESSION_STEPS picks steps (default "check sanitize bench"). The step "deepgemm", put
# before "bench", builds DeepGEMM from $DEEPGEMM_DIR (default third_party/DeepGEMM;
# scripts/build_deepgemm.sh) and puts it on the path, so that the benchmark times it as
# a peer in the same run. Exit status 0 only when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-./device-logs}}
mkdir -p "$OUT_DIR"
LOGS=$(mktemp -d)
SUMMARY="$OUT_DIR/summary.txt"
PY=${PYTHON:-python3}
DEEPGEMM_DIR=${DEEPGEMM_DIR:-$PWD/third_party/DeepGEMM}
status=0

run_step() {  # name, then the command; its output goes to LOGS/<name>.txt
  local name=$1 start=$SECONDS rc
  shift
  "$@" > "$LOGS/$name.txt" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || status=1
  echo "$name: exit $rc in $((SECONDS - start))s | $(tail -1 "$LOGS/$name.txt")" | tee -a "$SUMMARY"
  # Archived after every step: a call cut off by the device tool's time limit still
  # brings back the logs of the steps that finished.
  archive
  return "$rc"
}

archive() {
  cp "$SUMMARY" "$LOGS/"
  tar czf "$OUT_DIR/logs.tgz" -C "$LOGS" .
}

: > "$SUMMARY"
for step in ${SESSION_STEPS:-check sanitize bench}; do
  case $step in
    check) run_step check bash scripts/gpu_check.sh "$LOGS/check" ;;
    sanitize) run_step sanitize bash scripts/sanitize.sh "$LOGS/sanitize" ;;
    deepgemm) run_step deepgemm bash scripts/build_deepgemm.sh "$DEEPGEMM_DIR" \
                && export PYTHONPATH="$DEEPGEMM_DIR${PYTHONPATH:+:$PYTHONPATH}" ;;
    bench) run_step bench env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m cugroupgemm bench \
             --json "$LOGS/bench.json" ;;
    *) echo "unknown step '$step' (check, sanitize, deepgemm, bench)" | tee -a "$SUMMARY"; status=1 ;;
  esac
done
archive
exit "$status"
