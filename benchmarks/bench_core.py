"""Benchmark: SAE training throughput per architecture against the machine's measured matmul ceiling.

Prints, in one run on one machine:
  * the dense matmul ceiling (GFLOP/s) measured with square fp32 matmuls of the benchmark's size class;
  * for each architecture and shape: training samples/s and achieved GFLOP/s (10·B·n·m FLOPs per step, see below),
    as a fraction of the ceiling;
  * the AEN step time divided by the plain ReLU+l1 step time.

FLOP count of one training step (B samples, n = d_in, m = d_sae): encoder forward 2Bnm, decoder forward 2Bnm,
decoder backward 4Bnm (weight and input gradients), encoder backward 2Bnm (weight gradient only: the encoder input
x − b_dec needs no gradient, b_dec's flows through a [1, m] term) = 10·B·n·m, the same convention as
`aen_lib.training.planner.sae_step_flops`. (Before the single SAE shared the sweep's encoder, a step did 12·B·n·m; compare
samples/s across versions, not fractions.) Elementwise work, the optimiser and the decoder projection are not counted, so the
fraction of the ceiling is the share of time the step spends doing useful matmul work.

Usage:  python benchmarks/bench_core.py [--device cuda] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aen_lib import SAE, SAEConfig
from aen_lib.training.train import TrainConfig, Trainer


class FixedBatch:
    """A data source that returns the same pre-generated batch (excludes data generation from the timing)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def sample(self, batch_size: int) -> torch.Tensor:
        return self.x

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls (shared by the benchmarks)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_ceiling(size: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of a square [size, size] @ [size, size] matmul (best of ``repeats``)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


FLOPS_PER_SAMPLE = 10  # matmul FLOPs per sample per (n·m) in one training step (see the module docstring)

ARCHS = {
    "relu_l1": dict(l1=1e-3),
    "elastic_net": dict(l1=1e-3, l2=1e-4),
    "adaptive_lasso": dict(l1=1e-3, warmup_steps=0),
    "aen": dict(l1=1e-3, l2=1e-4, warmup_steps=0),
    "topk": dict(k=32),
    "batchtopk": dict(k=32),
    "jumprelu": dict(l0=1e-3),
}


def step_time(arch: str, n: int, m: int, batch: int, device: torch.device, repeats: int, autocast: str) -> float:
    """Median seconds per full training step (forward, loss, backward, Adam, decoder projection)."""
    sae = SAE(SAEConfig(d_in=n, d_sae=m, architecture=arch, **ARCHS[arch]), device=device)
    x = torch.randn(batch, n, device=device)
    tr = Trainer(sae, FixedBatch(x), TrainConfig(steps=10**9, batch_size=batch, progress=False, autocast=autocast))
    return timed(tr.train_step, device, 2, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--quick", action="store_true", help="small shapes only (a smoke test of the script)")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args()
    device = torch.device(args.device)
    shapes = [(256, 1024, 256), (512, 4096, 4096)] if not args.quick else [(32, 128, 64)]
    ceiling = matmul_ceiling(2048 if not args.quick else 256, device, torch.float32, args.repeats)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"matmul ceiling (fp32 square 2048): {ceiling:8.1f} GFLOP/s")
    rows = []
    for n, m, b in shapes:
        print(f"\nshape n={n} m={m} batch={b}  ({FLOPS_PER_SAMPLE * b * n * m / 1e9:.2f} GFLOP per step)")
        print(f"{'architecture':>15} {'ms/step':>9} {'samples/s':>11} {'GFLOP/s':>9} {'of ceiling':>10}")
        times = {}
        for arch in ARCHS:
            t = step_time(arch, n, m, b, device, args.repeats, args.autocast)
            times[arch] = t
            gflops = FLOPS_PER_SAMPLE * b * n * m / t / 1e9
            rows.append(dict(arch=arch, n=n, m=m, batch=b, ms=t * 1e3, samples_s=b / t, gflops=gflops,
                             frac=gflops / ceiling))
            print(f"{arch:>15} {t * 1e3:9.2f} {b / t:11.0f} {gflops:9.1f} {gflops / ceiling:10.1%}")
        print(f"AEN / ReLU+l1 step time: {times['aen'] / times['relu_l1']:.3f}x")
        rows.append(dict(n=n, m=m, batch=b, aen_over_relu=times["aen"] / times["relu_l1"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), ceiling_gflops=ceiling, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
