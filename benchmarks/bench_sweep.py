"""Benchmark: the sweep engine (one stacked training step for M SAEs) against training the same M SAEs one after
another with ``aen_lib.training.train.Trainer``, with both as a fraction of the machine's measured matmul ceiling.

Prints, in one run on one machine:
  * the dense matmul ceiling (GFLOP/s), measured as in ``bench_core.py``;
  * member-steps/s of the sweep (``Trainer.train_step`` of one stacked SAE of all M members, in the chunks
    ``train_sweep`` would use) and of sequential training (the sum
    of one ``Trainer.train_step`` per member), the speed-up, achieved GFLOP/s and the fraction of the ceiling;
  * on CUDA, the peak memory of the stacked step.

FLOP convention (``bench_core.py``, ``aen_lib.training.planner.sae_step_flops``): 10·B·n·m FLOPs per member-step (encoder and
decoder forward 2Bnm each, decoder backward 4Bnm, encoder backward 2Bnm: the weight gradient only). Both sides train on one fixed pre-generated batch, so data generation is
not timed. Sequential time is measured once per distinct (architecture, k) and weighted by how many members share it;
hyperparameters such as λ1 do not change the work of a step.

Members: ``--members`` of the authors' synthetic grid taken evenly across it, plus one BatchTopK, one JumpReLU and
one TopK+AuxK, so every architecture is in the stack.

Usage:  python benchmarks/bench_sweep.py [--device cuda] [--members 32] [--quick] [--threads N] [--json out.json]
Targets (issue 5): on a GPU >= 10x over sequential for 32+ members of the paper's shape; on CPU the sweep at >= 60%
of the matmul ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import FixedBatch, matmul_ceiling, timed  # noqa: E402

from aen_lib import SAE, SAEConfig  # noqa: E402
from aen_lib.training.planner import sae_step_flops  # noqa: E402
from aen_lib.training.sweep import CPU_MAX_TENSOR_BYTES, AUTHORS_SPIKED_GRID, expand_grid, plan_chunks  # noqa: E402
from aen_lib.training.train import TrainConfig, Trainer  # noqa: E402


def members(n: int, m: int, count: int, k_scale: float) -> list[SAEConfig]:
    """``count`` configs spread evenly over the paper grid, plus BatchTopK and JumpReLU (TopK k scaled to m)."""
    grid = {a: dict(v) for a, v in AUTHORS_SPIKED_GRID.items()}
    grid["topk"] = {"k": sorted({max(1, min(m, round(k * k_scale))) for k in grid["topk"]["k"]})}
    allc = expand_grid(dict(d_in=n, d_sae=m, warmup_steps=0), grid)
    idx = sorted({round(i * (len(allc) - 1) / max(1, count - 4)) for i in range(max(1, count - 3))})
    pick = [allc[i] for i in idx]
    k = max(1, round(16 * k_scale))
    pick += [SAEConfig(d_in=n, d_sae=m, architecture="batchtopk", k=k),
             SAEConfig(d_in=n, d_sae=m, architecture="jumprelu", l0=1e-3),
             SAEConfig(d_in=n, d_sae=m, architecture="topk_auxk", k=k)]
    return pick



def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--members", type=int, default=32, help="number of SAEs in the stack (>= 4)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shape and 8 members (< 3 minutes on a CPU)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (both sides)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.quick:
        n, m, b, count, ceil_size = 64, 256, 128, 8, 256
    else:
        n, m, b, count, ceil_size = 256, 1024, 256, args.members, 2048
    if count < 4:
        raise SystemExit(f"--members={count} must be >= 4")
    cfgs = members(n, m, count, k_scale=m / 1024)
    x = torch.randn(b, n, device=device)
    tc = TrainConfig(steps=10**9, batch_size=b, progress=False)
    ceiling = matmul_ceiling(ceil_size, device, torch.float32, args.repeats)
    flop = sae_step_flops(b, n, m)  # per member-step
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, tf32 {args.tf32}")
    print(f"matmul ceiling (fp32 square {ceil_size}): {ceiling:8.1f} GFLOP/s")
    print(f"shape n={n} m={m} batch={b}, {len(cfgs)} members: "
          + ", ".join(f"{a} {c}" for a, c in Counter(c.architecture for c in cfgs).items()))

    # sequential: one Trainer step per member, timed per distinct (architecture, k) and weighted by its count
    kinds = Counter((c.architecture, c.k) for c in cfgs)
    seq = 0.0
    for (arch, k), count_k in kinds.items():
        cfg = next(c for c in cfgs if (c.architecture, c.k) == (arch, k))
        tr = Trainer(SAE(cfg, device=device), FixedBatch(x), tc)
        seq += count_k * timed(tr.train_step, device, 2, args.repeats)

    # sweep: one stacked step for all members, chunked exactly as train_sweep chunks them
    budget = int(0.8 * torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else 4 * 2**30
    chunks = plan_chunks(cfgs, b, memory_budget_bytes=budget,
                         max_tensor_bytes=CPU_MAX_TENSOR_BYTES if device.type == "cpu" else None)
    print(f"sweep chunks: {[len(idx) for idx in chunks]} members")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    swp = 0.0
    for idx in chunks:
        stack = SAE([cfgs[i] for i in idx], device=device)
        st = Trainer(stack, FixedBatch(x), tc)
        swp += timed(st.train_step, device, 2, args.repeats)
        del stack, st
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    rows = []
    print(f"\n{'':>12} {'ms/step(all)':>13} {'member-steps/s':>15} {'GFLOP/s':>9} {'of ceiling':>10}")
    for name, t in (("sequential", seq), ("sweep", swp)):
        rate = len(cfgs) / t
        gflops = flop * rate / 1e9
        rows.append(dict(mode=name, seconds_per_step=t, member_steps_per_s=rate, gflops=gflops, frac=gflops / ceiling))
        print(f"{name:>12} {t * 1e3:13.2f} {rate:15.1f} {gflops:9.1f} {gflops / ceiling:10.1%}")
    print(f"speed-up of the sweep over sequential training: {seq / swp:.2f}x")
    if device.type == "cuda":
        print(f"peak CUDA memory of the stacked step: {peak:.2f} GiB")
    res = dict(device=str(device), torch=torch.__version__, n=n, m=m, batch=b, members=len(cfgs),
               ceiling_gflops=ceiling, speedup=seq / swp, peak_gib=peak, rows=rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
