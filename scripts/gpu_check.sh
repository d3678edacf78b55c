#!/usr/bin/env bash
# One command for a lent GPU machine (DESIGN.md section 6): build, CUDA tests, the benchmark's gpu
# and steps suites, then compute-sanitizer memcheck and racecheck on a small case (slowest to
# start, so last). Writes $OUT/status.json after every stage (so a timeout still returns what
# finished) and every stage's output to $OUT/log.txt. About 5-8 minutes.
#   OUT          results folder (default ./gpu_out)
#   BENCH_ARGS   extra arguments for python -m packedrnn.bench (default: --repeat 10)
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
stage build python3 setup.py -q build_ext --inplace || { tail -40 "$LOG"; exit 1; }
stage tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_equivalence.py \
  tests/test_padding.py tests/test_gradcheck.py tests/test_ops.py -k "cuda and not jit"
stage bench python3 -m packedrnn.bench --suite gpu --backends cuda --out "$OUT/bench" ${BENCH_ARGS:---repeat 10 --budget 6}
stage steps python3 -m packedrnn.bench --suite steps --backends cuda --out "$OUT/steps" --repeat 10 --budget 6
rm -f "$OUT/steps/speedup.png"
CASE=scripts/sanitize_case.py
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    stage "sanitizer_$tool" env PYTHONPATH="$PWD" timeout 100 compute-sanitizer --tool $tool \
      --error-exitcode 3 python3 "$CASE"
  done
else
  echo "compute-sanitizer not found: skipped" | tee -a "$LOG"
fi
cat "$STATUS"
