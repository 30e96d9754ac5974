#!/usr/bin/env bash
# One call on the GPU machine (device tool): build there for the visible GPU, run the CUDA tests,
# measure the fused ops against issue 14's bars (bandwidth against the card found: H100 or H200),
# run the GPU benchmarks, write every result under $OUT. The whole script
# keeps to BUDGET seconds (default 420; a device command may run 600 s, and a session has 15 minutes
# of device time, machine start included): each part has its own cap and is cut to the time left,
# and parts are ordered by what matters most (the CUDA kernels have never run on a GPU, so the tests
# come first, then the bars; the module-level torch.compile runs, slow to build, come last). Every
# benchmark writes its JSON after each row, so a part stopped at its cap keeps what it finished.
#   run: bash benchmarks/gpu_check.sh        (device timeout_s ~ 480)
# $OUT gets at most 8 files (what the device tool brings back): gpu_check.log (everything printed,
# test output and the bars' PASS/FAIL lines included) and one JSON per benchmark script (the bars
# and the torch.compile part print only).
# It runs with the machine's own python3 and torch (2.11.0+cu130 there) and fetches nothing.
# Dry run of the mechanics on a machine without a GPU: DEVICE=cpu SKIP_BUILD=1 BUDGET=120.
# Exit status: 0 when every part ran to its end with exit 0 or was capped or skipped for time;
# the PASS/FAIL lines are the verdicts on the GPU (on a CPU they mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hdas_gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-420}
export PYTHONUNBUFFERED=1
t0=$(date +%s)
log() { echo "[$(date +%T) +$(( $(date +%s) - t0 ))s] $*" | tee -a "$LOG"; }
failed=()
# part NAME CAP COMMAND...: runs COMMAND with its output in the log, capped at min(CAP, time left);
# skipped when under 15 s are left.
part() {
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - t0) ))
  (( cap > left )) && cap=$left
  if (( cap < 15 )); then log "SKIPPED $name: ${left} s of the ${BUDGET} s budget left"; return; fi
  log "start $name (cap ${cap} s)"
  timeout -k 5 "$cap" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if (( rc == 124 || rc == 137 )); then log "CAPPED $name at ${cap} s"; else log "end $name: exit $rc"; fi
  if (( rc != 0 && rc != 124 && rc != 137 )); then failed+=("$name"); fi
}

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
log "python: $($PY --version 2>&1); torch: $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)')"
# The visible GPU's architecture only (docs/building.md): a fraction of the default list's compile.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-native} MAX_JOBS=${MAX_JOBS:-16}
if [[ -z "${SKIP_BUILD:-}" ]]; then
  if ! timeout 150 $PY -m pip install --no-build-isolation --no-deps -e . >/tmp/hdas_build.log 2>&1; then
    log "build FAILED (tail follows)"; tail -60 /tmp/hdas_build.log | tee -a "$LOG"; exit 1
  fi
fi
log "build ok: $($PY -c 'import hdas_ext, json; print(json.dumps(hdas_ext.build_info()))')"

if $PY -c "import pytest" 2>/dev/null; then
  part "CUDA tests" 70 $PY -m pytest -q -m cuda python_tests -p no:cacheprovider --continue-on-collection-errors -rs
else
  log "pytest missing on this machine: CUDA tests not run"
fi

# --- issue 14's bars: mixed_node and pair_concat on 103 MB tensors (above the L2), fused vs eager vs
# torch.compile, achieved bandwidth vs the card's nominal peak (H100 SXM 3.35 TB/s, H200 4.8) and vs
# a device-to-device copy measured first; PASS/FAIL lines in the log. The JSON stays out of $OUT
# (8 files at most come back): the model's prediction below reads it.
small=""
[[ $DEVICE == cpu ]] && small=--small
BARS_JSON=/tmp/hdas_bars.json
rm -f "$BARS_JSON"
part "bars (bandwidth, x eager, x torch.compile)" 120 $PY benchmarks/bench_bars.py --device "$DEVICE" $small \
  --json "$BARS_JSON"

# --- HOOK (issue 23): the memory-traffic model's prediction beside each measurement of the bars, so
# that the first GPU run also tests the model. Runs once benchmarks/gpu_model.py exists, as
#   gpu_model.py --predict --measured BARS_JSON   (bench_bars' rows: op, shape, fused fwd_ms/both_ms)
if [[ -f benchmarks/gpu_model.py ]]; then
  part "model prediction beside the bars" 30 $PY benchmarks/gpu_model.py --predict --measured "$BARS_JSON"
else
  log "SKIPPED model prediction: benchmarks/gpu_model.py is not there yet"
fi

# --- compute-sanitizer on a small run of every CUDA kernel (memcheck: out-of-bounds and misaligned
# accesses, with PyTorch's caching allocator off so every tensor is its own allocation; racecheck:
# shared-memory hazards). Capped like the other parts; skipped where the tool is not installed.
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
if [[ "$DEVICE" == cuda && -x "$SANITIZER" ]]; then
  part "compute-sanitizer memcheck" 45 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
    --error-exitcode 1 $PY benchmarks/cuda_sanitizer_case.py
  part "compute-sanitizer racecheck" 45 "$SANITIZER" --tool racecheck --error-exitcode 1 \
    $PY benchmarks/cuda_sanitizer_case.py
else
  log "compute-sanitizer not found (or DEVICE=$DEVICE): sanitizer runs skipped"
fi
B=benchmarks
# One part, one cap for both scripts (as when one script did both): the timings first, then the profile.
search_step_and_glue() {
  $PY $B/bench_search_step.py --device "$DEVICE" --spaces hc,hs,cells,distribution --reps 5 --json "$OUT/search_step.json"
  $PY $B/profile_search_glue.py --device "$DEVICE" --spaces hc,hs,cells,distribution --steps 1 --json "$OUT/search_glue.json"
}
export -f search_step_and_glue
export PY B DEVICE OUT
part "search step (fused vs eager, glue profile)" 80 bash -c search_step_and_glue
# Lean mode: memory per sample (slope of the peak over the batches), largest batch for 80/141 GB and
# step time, eager vs fused vs lean; the table goes to the log only ($OUT holds 8 files at most).
part "memory per sample (eager/fused/lean)" 75 $PY $B/bench_memory.py --device "$DEVICE" --batches 16,32,64 \
  --rows cells,hc,pc-darts,hs,distribution,darts-fuse \
  --time-batch 64 --reps 3
# On the CPU (the dry run) memory runs out by swapping, not as an error: try two batch sizes only.
max_batch_limit=4096
[[ $DEVICE == cpu ]] && max_batch_limit=16
part "largest batch (Hc-DAS, Hs-DAS)" 60 $PY $B/search_max_batch.py --device "$DEVICE" --spaces hc,hs \
  --limit "$max_batch_limit" --json "$OUT/search_batch.json"
part "MixedOp (fused vs eager)" 35 $PY $B/bench_mixed_op.py --device "$DEVICE" --large --compile off --json "$OUT/mixed_op.json"
part "stage node and pair concat" 25 $PY $B/bench_stage_node.py --device "$DEVICE" --compile off --json "$OUT/stage_node.json"
part "train step (bf16)" 35 $PY $B/bench_train_step.py --device "$DEVICE" --amp bf16 --batch 96 --steps 20 --warmup 5 \
  --modes eager,channels_last --json "$OUT/train_step.json"
part "MixedOp vs torch.compile (first shape per set)" 45 $PY $B/bench_mixed_op.py --device "$DEVICE" --only-first \
  --json "$OUT/mixed_op_compile.json"
part "Hs-DAS step vs torch.compile" 60 $PY $B/bench_search_compile.py --device "$DEVICE" --spaces hs --compile-timeout 55
log "total $(( $(date +%s) - t0 )) s; verdicts: $(grep -c '^  PASS' "$LOG") PASS, $(grep -c '^  FAIL' "$LOG") FAIL"
if (( ${#failed[@]} )); then log "parts that exited non-zero: ${failed[*]}"; exit 1; fi
log "every part ran (or was capped or skipped for time)"
