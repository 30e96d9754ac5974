#!/usr/bin/env bash
# One call on the GPU machine (device tool): build there, run the CUDA tests, run the GPU
# benchmarks, write every table under $OUT. Budget: under 6 minutes on an H200 (each part is capped:
# build ~1 min, tests 80 s, benchmarks 80 + 40 + 100 + 40 s).
#   run: bash benchmarks/gpu_check.sh        (timeout_s ~ 420)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hdas_gpu_out}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/gpu_check.log"; }
PY=${PYTHON:-python}

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
log "python: $($PY --version 2>&1); torch: $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)')"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
t0=$(date +%s)
if ! $PY -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  log "build FAILED (tail follows)"; tail -40 "$OUT/build.log" | tee -a "$OUT/gpu_check.log"; exit 1
fi
log "build ok in $(( $(date +%s) - t0 )) s: $($PY -c 'import hdas_ext, json; print(json.dumps(hdas_ext.build_info()))')"

# CUDA tests (and the op tests on CPU beside them, for the record).
if $PY -c "import pytest" 2>/dev/null; then
  timeout 80 $PY -m pytest -q -m cuda python_tests -p no:cacheprovider --continue-on-collection-errors 2>&1 | tail -25 | tee "$OUT/cuda_tests.txt"
else
  log "pytest missing on this machine: CUDA tests not run"
fi

# Benchmarks: each with its own time cap so one slow part cannot eat the budget.
timeout 80 $PY benchmarks/bench_mixed_op.py --device cuda --large --json "$OUT/mixed_op.json" 2>&1 | tee "$OUT/mixed_op.txt" | tail -20
timeout 40 $PY benchmarks/bench_stage_node.py --device cuda --json "$OUT/stage_node.json" 2>&1 | tee "$OUT/stage_node.txt" | tail -12
timeout 100 $PY benchmarks/bench_search_step.py --device cuda --reps 5 --compile-timeout 40 --profile-steps 1 --max-batch \
  --json "$OUT/search_step.json" 2>&1 | tail -30 > "$OUT/search_step.txt"
timeout 40 $PY benchmarks/bench_train_step.py --device cuda --amp bf16 --batch 96 --steps 20 --warmup 5 \
  --modes eager,channels_last --json "$OUT/train_step.json" 2>&1 | tail -20 > "$OUT/train_step.txt"
log "total $(( $(date +%s) - t0 )) s"
