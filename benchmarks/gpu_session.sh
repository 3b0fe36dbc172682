#!/usr/bin/env bash
# One prepared session on a lent GPU (under eight minutes): the GPU speed and correctness figures and as many
# paper-size reference sets as fit, in ONE JSON summary. Run it from the repository root on the GPU machine; OUT
# names the folder whose files you keep.
#
#   OUT=/path/to/out bash benchmarks/gpu_session.sh [seconds for the whole session, default 450] [gpu_session.py options]
#   DRY_RUN=1 OUT=/tmp/dry bash benchmarks/gpu_session.sh     # every stage on the CPU at tiny sizes (a test)
#
# What it writes into $OUT (benchmarks/gpu_session.py does the work; its docstring says what each stage measures):
#   env.txt                 the environment (GPU, driver, torch, commit)
#   summary.json            THE summary: per stage its status (ok / failed / timeout / skipped), seconds, limit,
#                           error and numbers, and the pass/fail lines of the goals; rewritten after every stage
#   session.txt             everything the stages printed
#   bench_sweep.json, .txt  32 stacked SAEs of the paper's synthetic shape against one at a time (goal >= 10x)
#   gpu_llama_shape.json    the Llama-3.1-8B SAE shape: step time and memory against the planner
#   reference.tar.gz        the reference sets that finished in the time left, each with its mechanism.json
#                           (gpu_session.py's REFERENCE_SETS, or SETS="study:rho:seed,...", PARALLEL side by side;
#                           sets trained on a GPU are named ..._cuda): copy its folders into reference/ and commit
#                           them. A set cut off by the budget writes nothing. reference.txt is their log.
# Stages have their own time limits (correctness 60 s, sweep 120 s, Pythia tokens/s 60 s, Llama shape 180 s); the
# reference sets get what is left of the budget. DEVICE, STEPS (reference sets with fewer steps), SETS, PARALLEL, WORK and PY
# (the Python to use) can be set; DRY_RUN=1 replaces the old QUICK=1.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
BUDGET=${1:-}
[ $# -gt 0 ] && shift  # any further arguments go to gpu_session.py as they are (e.g. --limit sweep=90)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
mkdir -p "$OUT"

{ date -u; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  git rev-parse HEAD 2>/dev/null; } 2>&1 | tee "$OUT/env.txt"

args=(--out "$OUT")
[ -n "$BUDGET" ] && args+=(--budget "$BUDGET")
[ "${DRY_RUN:-0}" != 0 ] && args+=(--dry-run)
[ -n "${DEVICE:-}" ] && args+=(--device "$DEVICE")
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
[ -n "${SETS:-}" ] && args+=(--sets "$SETS")
[ -n "${PARALLEL:-}" ] && args+=(--parallel "$PARALLEL")
if [ -n "${WORK:-}" ]; then args+=(--work "$WORK"); elif [ "${DRY_RUN:-0}" = 0 ]; then args+=(--work /tmp/aen_reference_work); fi
exec "$PY" benchmarks/gpu_session.py "${args[@]}" "$@"
