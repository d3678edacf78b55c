#!/usr/bin/env bash
# One command for a lent GPU machine (docs/ARCHITECTURE.md, "The GPU loop"): build, the persistent-kernel probe
# (scripts/persistent_probe.py), the benchmark's steps suite, CUDA tests, its gpu suite, then
# compute-sanitizer memcheck and racecheck on a small case (slowest to start, so last). Writes
# $OUT/status.json after every stage (so a timeout still returns what finished) and every stage's
# output to $OUT/log.txt. The default stages take under 5 minutes of a lease's 15 minutes of
# device time (H200, 2026-11-26: build 30 s, probe 36, steps 13, tests 89, bench 38, sanitizers
# 34); with the switch sweep (estimated 2 minutes, not yet run on a GPU) one call still does all
# (calls run at most 600 s; a warm machine keeps its build between them):
#   OUT=$OUT bash scripts/gpu_check.sh build probe steps tests bench sweep sanitize
# Arguments: the stages to run (default: build probe steps tests bench sanitize; not among the
# defaults: `sweep`, scripts/switch_sweep.py on the gpu suite; `ncu`, Nsight Compute on
# scripts/profile_case.py).
#   OUT          results folder (default ./gpu_out)
#   BENCH_ARGS   extra arguments for python -m packedrnn.bench (default: --repeat 10)
#   TESTS_K      pytest -k expression of the tests stage (default: cuda and not jit)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUBLAS_WORKSPACE_CONFIG=:4096:8
STATUS="$OUT/status.json"
echo "{}" > "$STATUS"
LOG="$OUT/log.txt"  # every stage's output, one after the other ($OUT brings back 8 files at most)
stage() {  # stage NAME COMMAND...: run, append the output to $LOG, record rc and seconds
  local name=$1; shift
  local t0=$SECONDS tmp
  tmp=$(mktemp)
  echo "=== $name: $*"
  "$@" > "$tmp" 2>&1
  local rc=$?
  { echo "=== $name (rc $rc): $*"; cat "$tmp"; } >> "$LOG"
  tail -n 15 "$tmp"
  rm -f "$tmp"
  python3 - "$STATUS" "$name" "$rc" "$((SECONDS - t0))" <<'PY'
import json, sys
path, name, rc, secs = sys.argv[1:]
d = json.load(open(path)); d[name] = {"rc": int(rc), "seconds": int(secs)}
json.dump(d, open(path, "w"), indent=1)
PY
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv  # printed only: $OUT holds 8 files at most
STAGES=${*:-build probe steps tests bench sanitize}
want() { [[ " $STAGES " == *" $1 "* ]]; }
want build && { stage build python3 setup.py -q build_ext --inplace || { tail -40 "$LOG"; exit 1; }; }
# The probe runs first under a timeout: a kernel that hangs shows as the last case it printed.
want probe && stage probe env PYTHONPATH="$PWD" timeout 300 python3 scripts/persistent_probe.py --latency
want steps && { stage steps python3 -m packedrnn.bench --suite steps --backends cuda --out "$OUT/steps" --repeat 10 --budget 6; rm -f "$OUT/steps/speedup.png"; }
want tests && stage tests timeout 400 python3 -m pytest -q -p no:cacheprovider --maxfail=10 tests/test_cuda.py \
  tests/test_equivalence.py tests/test_padding.py tests/test_gradcheck.py tests/test_ops.py \
  -k "${TESTS_K:-cuda and not jit}"
want bench && stage bench python3 -m packedrnn.bench --suite gpu --backends cuda --out "$OUT/bench" ${BENCH_ARGS:---repeat 10 --budget 6}
# Every developer switch on every row of the gpu suite (scripts/switch_sweep.py: checked, then
# timed, peak memory; tokens=0/1 among them, the A/B of packedrnn.plan.GATHER_FLOPS): which
# rule of a path by size to move for which row. Not among the defaults (about 2 minutes).
want sweep && stage sweep env PYTHONPATH="$PWD" timeout 400 python3 scripts/switch_sweep.py --out "$OUT/sweep"
# Nsight Compute on one persistent forward launch: stall reasons, L2 traffic. Not among the default stages (ask for it: ... gpu_check.sh ncu).
if want ncu && command -v ncu > /dev/null; then
  stage ncu env PYTHONPATH="$PWD" timeout 300 ncu --clock-control none -k regex:persistent_forward -c 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    python3 scripts/profile_case.py
fi
CASE=scripts/sanitize_case.py
if want sanitize && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    stage "sanitizer_$tool" env PYTHONPATH="$PWD" timeout 75 compute-sanitizer --tool $tool \
      --error-exitcode 3 python3 "$CASE"
  done
elif want sanitize; then
  echo "compute-sanitizer not found: skipped" | tee -a "$LOG"
fi
cat "$STATUS"
