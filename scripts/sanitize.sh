#!/usr/bin/env bash
# compute-sanitizer's memcheck, racecheck, synccheck and initcheck over
# scripts/sanitize_cases.py: every kernel that runs on this GPU (GEMM families, the
# portable kernel's sm_80 path, the quantizers) on a small and a tail-heavy problem.
#   bash scripts/sanitize.sh [LOG_DIR]      (default ./sanitize-logs; needs a GPU)
# SANITIZE_TOOLS picks tools (default all four); SANITIZE_TIMEOUT caps each run (400 s;
# initcheck once took longer with a cold kernel cache, 28 cases in 2-4 s with a warm one).
# Writes LOG_DIR/summary.txt (one verdict line per tool, also printed), cases.log (the
# cases without a sanitizer), canary.log, initcheck-canary-*.log and one <tool>.log per
# tool. Exit status 0 only when the cases are correct, both canaries are caught and every
# tool is clean.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${1:-./sanitize-logs}
mkdir -p "$LOG_DIR"
PY=${PYTHON:-python3}
SAN=${COMPUTE_SANITIZER:-compute-sanitizer}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# A warm kernel cache: the plain run below compiles, the sanitized runs only load.
export CUGROUPGEMM_CACHE_DIR=${CUGROUPGEMM_CACHE_DIR:-/tmp/cugroupgemm-sanitize-cache}
SUMMARY="$LOG_DIR/summary.txt"
LIMIT=${SANITIZE_TIMEOUT:-400}  # seconds per sanitized run
status=0

{ date -u
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  "$SAN" --version | tail -1; } > "$SUMMARY" 2>&1

say() { echo "$*" | tee -a "$SUMMARY"; }

start=$SECONDS
if $PY scripts/sanitize_cases.py > "$LOG_DIR/cases.log" 2>&1; then
  say "cases: $(grep -c '^ok ' "$LOG_DIR/cases.log") correct without a sanitizer ($((SECONDS - start))s)"
else
  say "cases: FAILED without a sanitizer (see cases.log)"
  status=1
fi

# Only our kernels are instrumented (their names all hold "fp8"): the reference's CuPy
# and cuBLAS kernels stay fast and out of the verdict.
FILTER=()
if "$SAN" --help 2>&1 | grep -q -- "--kernel-name"; then
  FILTER=(--kernel-name kns=fp8)
fi
PADDING=()
if "$SAN" --help 2>&1 | grep -q -- "--padding"; then
  PADDING=(--padding 512)  # room past each allocation, so a near overrun is attributed
fi

errors_in() {  # N of the last "ERROR SUMMARY: N error(s)" or (racecheck, which
  local n      # prints no such line) "RACECHECK SUMMARY: N hazards" of a log, or "?"
  n=$(grep -v "not printed" "$1" \
      | grep -oE "(ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard)" \
      | tail -1 | grep -oE "[0-9]+")
  echo "${n:-?}"
}

# The canary: a deliberate one-row overrun by the portable GEMM. memcheck must see it,
# or a clean verdict below would prove nothing (a filter matching no kernel, say).
run_canary() {
  timeout "$LIMIT" "$SAN" --tool memcheck "${FILTER[@]}" "${PADDING[@]}" --print-limit 5 \
    $PY scripts/sanitize_cases.py --canary > "$LOG_DIR/canary.log" 2>&1
  canary=$(errors_in "$LOG_DIR/canary.log")
}
run_canary
if [ "$canary" = "?" ] && [ $((${#FILTER[@]} + ${#PADDING[@]})) -gt 0 ]; then
  say "options ${FILTER[*]} ${PADDING[*]} refused? retrying without them (all kernels instrumented)"
  FILTER=()
  PADDING=()
  run_canary
fi
if [ "$canary" != "?" ] && [ "$canary" -gt 0 ]; then
  say "canary: caught ($canary errors for a deliberate out-of-bounds store)"
else
  say "canary: NOT CAUGHT (errors: $canary): the verdicts below are not evidence; see canary.log"
  status=1
fi
# initcheck's own canaries: the portable GEMM reading an a that nothing wrote (without
# its report, a clean initcheck could mean an instrumentation that follows no read of
# ours), and, for the record, what initcheck sees of the sm90 kernel's reads: a (by TMA)
# and a_scale (by cp.async).
unwritten() {  # FAMILY OPERAND: the errors initcheck reports for that canary
  local log="$LOG_DIR/initcheck-canary-$1-$2.log"
  timeout "$LIMIT" "$SAN" --tool initcheck "${FILTER[@]}" --print-limit 5 \
    $PY scripts/sanitize_cases.py --unwritten-canary "$1" "$2" > "$log" 2>&1
  errors_in "$log"
}
if [[ " ${SANITIZE_TOOLS:-initcheck} " == *" initcheck "* ]]; then
  n=$(unwritten portable a)
  if [ "$n" != "?" ] && [ "$n" -gt 0 ]; then
    say "initcheck canary: caught ($n errors for the portable kernel reading memory nothing wrote)"
  else
    say "initcheck canary: NOT CAUGHT (errors: $n): initcheck's verdict is not evidence"
    status=1
  fi
  if [[ " $($PY scripts/sanitize_cases.py --families) " == *" sm90 "* ]]; then
    say "initcheck on sm90 reads of memory nothing wrote: a (TMA) $(unwritten sm90 a) errors, a_scale (cp.async) $(unwritten sm90 a_scale) errors"
  fi
fi

for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
  extra=()
  [ "$tool" = memcheck ] && extra=("${PADDING[@]}")
  log="$LOG_DIR/$tool.log"
  start=$SECONDS
  timeout "$LIMIT" "$SAN" --tool "$tool" "${FILTER[@]}" "${extra[@]}" --print-limit 100 \
    --error-exitcode 99 \
    $PY scripts/sanitize_cases.py > "$log" 2>&1
  rc=$?
  n=$(errors_in "$log")
  if [ "$rc" -eq 0 ] && [ "$n" = 0 ]; then
    verdict="CLEAN"
  elif [ "$rc" -eq 99 ] || { [ "$n" != "?" ] && [ "$n" -gt 0 ]; }; then
    verdict="$n ERRORS"
    status=1
  else
    verdict="FAILED (exit $rc, no error summary)"
    status=1
  fi
  cases=$(grep -c '^ok ' "$log")
  say "$tool: $verdict ($cases cases ok, $((SECONDS - start))s) log=$tool.log"
done
exit "$status"
