"""Benchmark: SAE training throughput at the paper's Llama-3.1-8B shape (d 4096, m 131,072, batch 4,096; book: paper facts, language-model protocols),
in fp32 and with bf16 autocast, as achieved TFLOP/s over the measured matmul ceiling; peak memory against the planner.

What it measures, on one device:
  1. the matmul ceiling in fp32 and bf16: the best of a square [s, s] @ [s, s] product and of the SAE's own encoder
     product [B, n] @ [n, m] (TF32 is left off, PyTorch's default, so fp32 means true fp32);
  2. for each architecture (AEN, TopK) and precision: median seconds per full training step of
     ``aen_lib.training.train.Trainer`` (forward, loss, backward, clip 1.0, Adam, decoder projection), achieved TFLOP/s with
     10·B·n·m FLOPs per step (``aen_lib.training.planner.sae_step_flops``: matmuls only), and the fraction of the ceiling of
     the matmul precision (bf16 ceiling with autocast, fp32 ceiling without);
  3. peak memory of one step (``torch.cuda.max_memory_allocated`` on CUDA; the tensor tracer on CPU) against
     ``aen_lib.training.planner.sae_memory``;
  4. the step time against the planner's prediction (``aen_lib.training.planner.plan`` with cached activations, at its
     default efficiency of 0.4 of the peak): the planner's datasheet entry for this GPU when it has one, else a GPU
     whose peaks are the ceilings measured in step 1. ``measured_over_planner`` above 1 means slower than planned;
     ``fraction_of_planner_peak`` is the efficiency that would make the plan exact.

Usage:
  python benchmarks/gpu_llama_shape.py --json results/gpu_llama_shape.json          # GPU, about 2-4 minutes
  python benchmarks/gpu_llama_shape.py --quick --device cpu --json /tmp/quick.json  # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import timed  # noqa: E402

from aen_lib import SAE, SAEConfig  # noqa: E402
from aen_lib.data.sources import TensorStream  # noqa: E402
from aen_lib.training.planner import GPUS, GPUSpec, measure_train_step_memory, plan, sae_memory, sae_step_flops  # noqa: E402
from aen_lib.training.train import TrainConfig, Trainer  # noqa: E402

LLAMA_SHAPE = (4096, 4096, 131_072)  # batch, d_in, d_sae
QUICK_SHAPE = (64, 64, 512)
ARCHS = {
    "aen": dict(l1=1e-3, l2=1e-4, gamma=0.5, ema_beta=0.9999, ref_top_pct=0.05, warmup_steps=0),
    "topk": dict(k=64),
}
PLANNER_EFFICIENCY = 0.4  # aen_lib.training.planner.plan's default


def planner_gpu(name: str, ceil: dict[str, dict[str, float]], memory_gib: float) -> tuple[GPUSpec, str]:
    """The planner's datasheet entry whose model (``H200``, ``A100``, ...) is in the device name, else a GPU whose
    peaks are the ceilings measured in this run."""
    for key, spec in GPUS.items():
        if key.split("-")[0].lower() in name.lower():
            return spec, "datasheet"
    return GPUSpec("measured in this run", bf16_tflops=ceil["bf16"]["ceiling"], fp32_tflops=ceil["fp32"]["ceiling"],
                   memory_gib=memory_gib), "measured ceilings"



def matmul_ceiling(device: torch.device, dtype: torch.dtype, square: int, shape: tuple[int, int, int],
                   repeats: int) -> dict[str, float]:
    """TFLOP/s of a square matmul and of the SAE encoder matmul [B, n] @ [n, m] in ``dtype``; the best is the ceiling."""
    out = {}
    a = torch.randn(square, square, device=device, dtype=dtype)
    b = torch.randn(square, square, device=device, dtype=dtype)
    out["square"] = 2 * square**3 / timed(lambda: a @ b, device, 2, repeats) / 1e12  # noqa: F821 (a, b deleted after)
    del a, b
    B, n, m = shape
    x = torch.randn(B, n, device=device, dtype=dtype)
    w = torch.randn(n, m, device=device, dtype=dtype)
    out["sae_encoder"] = 2 * B * n * m / timed(lambda: x @ w, device, 2, repeats) / 1e12  # noqa: F821
    del x, w
    out["ceiling"] = max(out["square"], out["sae_encoder"])
    return out


def step_time(arch: str, shape: tuple[int, int, int], device: torch.device, autocast: str, warmup: int,
              repeats: int) -> float:
    B, n, m = shape
    sae = SAE(SAEConfig(d_in=n, d_sae=m, architecture=arch, **ARCHS[arch]), device=device)
    rows = torch.randn(2 * B, n, device=device)
    tr = Trainer(sae, TensorStream(rows), TrainConfig(steps=10**9, batch_size=B, progress=False, grad_clip=1.0,
                                                      autocast=autocast, lr=5e-4))
    t = timed(tr.train_step, device, warmup, repeats)
    del tr, sae, rows
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help=f"small shape {QUICK_SHAPE} (a smoke test, seconds on CPU)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--archs", default="aen,topk")
    ap.add_argument("--json", default="", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    shape = QUICK_SHAPE if args.quick else LLAMA_SHAPE
    B, n, m = shape
    square = 256 if args.quick else 8192
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "shape": {"batch": B, "d_in": n, "d_sae": m}, "flops_per_step": sae_step_flops(B, n, m),
            "threads": torch.get_num_threads(), "tf32": False}
    print(f"device {info['gpu_name'] or device}  torch {torch.__version__}  shape B={B} n={n} m={m}  "
          f"({info['flops_per_step'] / 1e12:.2f} TFLOP per step, 10·B·n·m)")
    ceil = {name: matmul_ceiling(device, dt, square, shape, args.repeats)
            for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name, c in ceil.items():
        print(f"matmul ceiling {name}: square {square}: {c['square']:8.2f} TFLOP/s  "
              f"SAE encoder product: {c['sae_encoder']:8.2f} TFLOP/s  -> ceiling {c['ceiling']:8.2f}")
    mem_gib = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 0.0
    spec, source = planner_gpu(info["gpu_name"] or "", ceil, mem_gib)
    info["planner"] = {"gpu": spec.name, "source": source, "efficiency": PLANNER_EFFICIENCY,
                       "bf16_tflops": spec.bf16_tflops, "fp32_tflops": spec.fp32_tflops}
    print(f"planner: {spec.name} ({source}: bf16 {spec.bf16_tflops:.4g}, fp32 {spec.fp32_tflops:.4g} TFLOP/s) at "
          f"efficiency {PLANNER_EFFICIENCY}")
    rows = []
    print(f"\n{'arch':>5} {'precision':>10} {'ms/step':>9} {'tokens/s':>11} {'TFLOP/s':>8} {'of ceiling':>10} "
          f"{'planner ms':>10} {'peak MiB':>9} {'planner MiB':>11}")
    for arch in args.archs.split(","):
        for autocast in ("none", "bf16"):
            t = step_time(arch, shape, device, autocast, warmup=2, repeats=args.repeats)
            tflops = info["flops_per_step"] / t / 1e12
            prec = "bf16" if autocast == "bf16" else "fp32"
            cfg = SAEConfig(d_in=n, d_sae=m, architecture=arch, **ARCHS[arch])
            meas = measure_train_step_memory(cfg, B, autocast=autocast, device=device)
            measured = meas.get("cuda_total", meas["total"])
            pred = sae_memory(n, m, B, architecture=arch, autocast=autocast)["total"]
            planned = plan(d_in=n, d_sae=m, batch=B, steps=1, gpu=spec, architecture=arch, autocast=autocast,
                           efficiency=PLANNER_EFFICIENCY, cached_activations=True).step_ms
            peak = (spec.bf16_tflops if autocast == "bf16" else spec.fp32_tflops)
            row = {"arch": arch, "autocast": autocast, "ms_per_step": t * 1e3, "tokens_per_s": B / t,
                   "tflops": tflops, "ceiling_precision": prec, "ceiling_tflops": ceil[prec]["ceiling"],
                   "fraction_of_ceiling": tflops / ceil[prec]["ceiling"], "peak_bytes_measured": measured,
                   "peak_bytes_traced": meas["total"], "peak_bytes_planner": pred,
                   "planner_over_measured": pred / measured, "planner_step_ms": planned,
                   "measured_over_planner": t * 1e3 / planned, "fraction_of_planner_peak": tflops / peak}
            rows.append(row)
            print(f"{arch:>5} {prec:>10} {t * 1e3:9.2f} {B / t:11.0f} {tflops:8.2f} {row['fraction_of_ceiling']:10.1%} "
                  f"{planned:10.2f} {measured / 2**20:9.1f} {pred / 2**20:11.1f}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    res = {"info": info, "ceilings": ceil, "rows": rows}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {path}")
    return res


if __name__ == "__main__":
    main()
