#!/usr/bin/env bash
# One prepared session on a lent GPU (minutes, not hours): the GPU speed figures and as many paper-size reference
# sets as fit. Run it from the repository root on the GPU machine; OUT names the folder whose files you keep.
#
#   OUT=/path/to/out bash benchmarks/gpu_session.sh [seconds for the reference sets, default 360]
#
# 1. the environment (GPU, driver, torch) -> $OUT/env.txt
# 2. benchmarks/bench_sweep.py on the GPU: 32 stacked SAEs of the paper's synthetic shape against the same SAEs one
#    at a time (the target: >= 10x) -> $OUT/bench_sweep.json and .txt
# 3. python -m aen_lib.reference spiked --device cuda at ρ = 0, 0.9, 0.5, 0.3, 0.7 in that order, each with the time
#    left; a set that finishes writes its records (sets trained on a GPU are named ..._cuda), all packed into
#    $OUT/reference.tar.gz (copy its folders into reference/ and commit them). A set cut off by the budget writes
#    nothing: its checkpoints stay in $WORK on that machine.
# DEVICE, STEPS (a smoke run with fewer steps) and QUICK=1 (bench_sweep --quick) are for trying the script on a CPU.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
BUDGET=${1:-360}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/aen_reference_work}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
start=$(date +%s)

{ date -u; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  git rev-parse HEAD 2>/dev/null; } 2>&1 | tee "$OUT/env.txt"

"$PY" benchmarks/bench_sweep.py --device "$DEVICE" --members 32 ${QUICK:+--quick} --json "$OUT/bench_sweep.json" 2>&1 \
  | tee "$OUT/bench_sweep.txt"

for rho in 0.0 0.9 0.5 0.3 0.7; do
  left=$(( BUDGET - ($(date +%s) - start) ))
  if [ "$left" -lt 60 ]; then echo "budget spent: no time for ρ = $rho" | tee -a "$OUT/reference.txt"; break; fi
  echo "== ρ = $rho, $left s left" | tee -a "$OUT/reference.txt"
  timeout "$left" "$PY" -m aen_lib.reference spiked --rho "$rho" --device "$DEVICE" ${STEPS:+--steps $STEPS} \
    --out "$OUT/reference" --work "$WORK" --no-progress 2>&1 | tail -n 5 | tee -a "$OUT/reference.txt"
done
if [ -d "$OUT/reference" ]; then
  tar -czf "$OUT/reference.tar.gz" -C "$OUT" reference && rm -rf "$OUT/reference"
  "$PY" -c "import tarfile; print('\n'.join(tarfile.open('$OUT/reference.tar.gz').getnames()))" | grep provenance
fi
echo "total $(( $(date +%s) - start )) s"
