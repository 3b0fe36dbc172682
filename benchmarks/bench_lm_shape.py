"""Benchmark: one SAE training step at a language-model shape, this project's trainer beside SAELens's.

Shape: d_in 576 (SmolLM2-135M's residual stream) x d_sae 4,608 (8x), batch 4,096 tokens. For each architecture,
in one run, in one process (same threads, same dtype, same fixed batch):

  * **ours**: ``aen_lib.training.train.Trainer.train_step`` (forward, loss, backward, finite check, gradient clip 1.0, Adam,
    decoder projection) followed by the dead-latent window update that ``Trainer.run`` does after every step;
  * **SAELens**: ``sae_lens.training.sae_trainer.SAETrainer.step`` of the installed SAELens, the step its ``fit()``
    loop runs (the SAE's ``training_forward_pass`` under its autocast, its dead-feature and firing-frequency
    counters, backward, ``clip_grad_norm_(1.0)``, ``torch.optim.Adam``, ``zero_grad``, the LR and coefficient
    schedulers). SAELens does not renormalise the decoder during training: its standard SAE weights the l1 term by
    the decoder row norms and its TopK SAE divides by them (``rescale_acts_by_decoder_norm``, its default) instead.

Pairs (ours -> SAELens): ``relu_l1`` -> ``standard``; ``aen`` -> ``standard`` (SAELens has no adaptive elastic net;
the question is what AEN costs against the plain SAE a SAELens user would train); ``topk`` (k 32) -> ``topk``
(k 32, no latent dead yet, so its AuxK term is skipped); ``topk_auxk`` -> ``topk`` with dead latents. For the last
pair half the latents are marked dead before every timed step on both sides (our ``tokens_since_fired``, SAELens's
``n_forward_passes_since_fired``), so both compute their auxiliary loss with k_aux = d_in / 2 on every step: a
fixed batch would otherwise leave the dead set to chance.

Reported per architecture: median seconds per step (the two sides alternate, repeat by repeat, so a change in the
machine's load hits both), the fraction of the matmul ceiling measured in the same run (the best of a square matmul
and of the SAE's own encoder product in the step's matmul dtype), and SAELens's time divided by ours. FLOPs per
step are 10·B·n·m for both sides (``aen_lib.training.planner.sae_step_flops``, as ``bench_core.py``): the useful matmul work
of a step. SAELens's step does 12·B·n·m (the gradient reaches ``x − b_dec`` through the encoder input) and its AuxK
another 6·B·n·m; ours decodes over the dead latents alone, 6·B·n·D for D dead (here m/2). Neither extra is
credited in the fraction the target judges; for TopK+AuxK the output also prints the fraction counting our
auxiliary decode. Targets (printed, not asserted): >= 70% of the ceiling and
>= 1.2x SAELens at every architecture.

Usage:  python benchmarks/bench_lm_shape.py [--device cpu] [--repeats 5] [--autocast none|bf16] [--threads N]
                                            [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import FixedBatch, sync  # noqa: E402
from gpu_llama_shape import matmul_ceiling  # noqa: E402

from aen_lib import SAE, SAEConfig  # noqa: E402
from aen_lib.training.planner import sae_step_flops  # noqa: E402
from aen_lib.training.train import TrainConfig, Trainer  # noqa: E402

LM_SHAPE = (4096, 576, 4608)  # batch, d_in, d_sae
QUICK_SHAPE = (128, 32, 256)
TARGET_FRACTION = 0.70
TARGET_SPEEDUP = 1.2
LR = 3e-4  # SAELens's default learning rate; the value does not change the work of a step

#: our architecture -> (its SAEConfig fields, the SAELens architecture it is timed against, dead latents forced)
PAIRS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "relu_l1": (dict(l1=1e-3), "standard", False),
    "aen": (dict(l1=1e-3, l2=1e-4, warmup_steps=0), "standard", False),
    "topk": (dict(k=32), "topk", False),
    "topk_auxk": (dict(k=32), "topk", True),
}


def k_for(m: int) -> int:
    """TopK's k: 32 at the LM shape, fewer for the tiny shape of ``--quick``."""
    return min(32, max(1, m // 32))


def ours_step(arch: str, shape: tuple[int, int, int], x: torch.Tensor, autocast: str) -> Callable[[], None]:
    """One step of our trainer, as ``Trainer.run`` does it (train_step, then the dead-latent windows)."""
    B, n, m = shape
    fields, _, force_dead = PAIRS[arch]
    fields = {**fields, **({"k": k_for(m)} if "k" in fields else {})}
    sae = SAE(SAEConfig(d_in=n, d_sae=m, architecture=arch, **fields), device=x.device)
    tr = Trainer(sae, FixedBatch(x), TrainConfig(steps=10**9, batch_size=B, lr=LR, grad_clip=1.0, autocast=autocast,
                                                 progress=False))
    sae.train()
    run = sae.architecture

    def step() -> None:
        if force_dead:  # half the latents dead, on every step (see the module docstring)
            run.tokens_since_fired[:, : m // 2] = run.dead_tokens.unsqueeze(-1)
        _, _, out, _, ok = tr.train_step()
        tr._update_dead(out, ok, B)

    return step


def saelens_step(arch: str, shape: tuple[int, int, int], x: torch.Tensor, autocast: str) -> Callable[[], None]:
    """One ``SAETrainer.step`` of the installed SAELens for the SAELens architecture paired with ``arch``."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    B, n, m = shape
    _, target, force_dead = PAIRS[arch]
    common = dict(d_in=n, d_sae=m, dtype="float32", device=str(x.device))
    if target == "standard":
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(**common, l1_coefficient=1.0))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=k_for(m)))
    cfg = SAETrainerConfig(total_training_samples=10**12, train_batch_size_samples=B, lr=LR, lr_end=LR,
                           device=str(x.device), autocast=autocast == "bf16")
    tr = SAETrainer(cfg, sae, data_provider=iter(()))

    def step() -> None:
        if force_dead:
            tr.n_forward_passes_since_fired[: m // 2] = cfg.dead_feature_window + 1
        tr.step(x)
        tr.n_training_steps += 1  # as fit() does after each step

    return step


def interleaved(fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
                ) -> dict[str, float]:
    """Median seconds of each function, calling them in turn ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def saelens_version() -> str | None:
    try:
        import sae_lens
    except ImportError:
        return None
    return str(sae_lens.__version__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"], help="bf16 autocast on both sides")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    ap.add_argument("--archs", default=",".join(PAIRS), help=f"comma-separated subset of {list(PAIRS)}")
    ap.add_argument("--no-saelens", action="store_true", help="time our trainer only")
    ap.add_argument("--quick", action="store_true", help=f"tiny shape {QUICK_SHAPE} (a smoke test, seconds)")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(archs) - set(PAIRS))
    if unknown:
        raise SystemExit(f"--archs: unknown {unknown}; choose from {list(PAIRS)}")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    shape = QUICK_SHAPE if args.quick else LM_SHAPE
    B, n, m = shape
    version = None if args.no_saelens else saelens_version()
    flops = sae_step_flops(B, n, m)
    mm_dtype = torch.bfloat16 if args.autocast == "bf16" else torch.float32
    ceil = matmul_ceiling(device, mm_dtype, 256 if args.quick else 2048 if device.type == "cpu" else 8192, shape,
                          max(3, args.repeats))
    ceiling = ceil["ceiling"] * 1e12
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "sae_lens": version, "threads": torch.get_num_threads(), "autocast": args.autocast,
            "matmul_dtype": str(mm_dtype).removeprefix("torch."), "params_dtype": "float32",
            "shape": {"batch": B, "d_in": n, "d_sae": m}, "k": k_for(m), "flops_per_step": flops,
            "flop_convention": "10*B*n*m per step (matmuls only), both sides", "repeats": args.repeats,
            "warmup": args.warmup, "timing": "median s/step, ours and SAELens alternating"}
    print(f"device {device}, torch {torch.__version__}, SAELens {version or 'not installed'}, "
          f"threads {info['threads']}, autocast {args.autocast}")
    print(f"shape B={B} n={n} m={m} (k {k_for(m)}), {flops / 1e9:.2f} GFLOP per step (10·B·n·m)")
    print(f"matmul ceiling ({info['matmul_dtype']}): square {ceil['square'] * 1e3:.1f}, SAE encoder product "
          f"{ceil['sae_encoder'] * 1e3:.1f} -> {ceiling / 1e9:.1f} GFLOP/s")

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, n, generator=gen).to(device)
    rows = []
    saelens_cache: dict[tuple[str, bool], float] = {}  # one SAELens timing per distinct SAELens step
    print(f"\n{'ours':>10} {'ms/step':>9} {'of ceil':>8} | {'SAELens':>14} {'ms/step':>9} {'of ceil':>8} | "
          f"{'SAELens/ours':>12}")
    for arch in archs:
        _, target, dead = PAIRS[arch]
        fns = {"ours": ours_step(arch, shape, x, args.autocast)}
        key = (target, dead)
        if version is not None and key not in saelens_cache:
            fns["saelens"] = saelens_step(arch, shape, x, args.autocast)
        t = interleaved(fns, device, args.warmup, args.repeats)
        if "saelens" in t:
            saelens_cache[key] = t["saelens"]
        t_sl = saelens_cache.get(key)
        label = (target + (" +dead" if dead else "")) if version is not None else "-"
        row = {"arch": arch, "seconds_per_step": t["ours"], "tokens_per_s": B / t["ours"],
               "gflops": flops / t["ours"] / 1e9, "fraction_of_ceiling": flops / t["ours"] / ceiling,
               "saelens_arch": label if version is not None else None, "saelens_seconds_per_step": t_sl,
               "saelens_fraction_of_ceiling": flops / t_sl / ceiling if t_sl else None,
               "speedup_vs_saelens": t_sl / t["ours"] if t_sl else None}
        if dead:  # the auxiliary decode's own work: ours over the m/2 dead latents, SAELens's over all m
            row["aux_flops_per_step"] = 6 * B * n * (m // 2)
            row["fraction_of_ceiling_with_aux"] = (flops + row["aux_flops_per_step"]) / t["ours"] / ceiling
        rows.append(row)
        sl = (f"{label:>14} {t_sl * 1e3:9.1f} {row['saelens_fraction_of_ceiling']:8.1%}" if t_sl
              else f"{label:>14} {'-':>9} {'-':>8}")
        print(f"{arch:>10} {t['ours'] * 1e3:9.1f} {row['fraction_of_ceiling']:8.1%} | {sl} | "
              + (f"{row['speedup_vs_saelens']:11.2f}x" if t_sl else f"{'-':>12}"))
        del fns
    for row in rows:
        if "fraction_of_ceiling_with_aux" in row:
            print(f"{row['arch']}: its auxiliary decode runs over the {m // 2} dead latents only, 6·B·n·{m // 2} = "
                  f"{row['aux_flops_per_step'] / 1e9:.1f} GFLOP more per step (SAELens's over all {m}); counting "
                  f"them, {row['fraction_of_ceiling_with_aux']:.1%} of the ceiling")
    targets = []
    print()
    for row in rows:
        checks = [("fraction_of_ceiling", row["fraction_of_ceiling"], TARGET_FRACTION, "{:.1%}")]
        if row["speedup_vs_saelens"] is not None:
            checks.append(("speedup_vs_saelens", row["speedup_vs_saelens"], TARGET_SPEEDUP, "{:.2f}x"))
        for metric, value, goal, fmt in checks:
            ok = bool(value >= goal)
            targets.append({"arch": row["arch"], "metric": metric, "value": value, "target": goal, "pass": ok})
            print(f"{'PASS' if ok else 'FAIL'} {row['arch']}: {metric} {fmt.format(value)} (target >= "
                  f"{fmt.format(goal)})")
    res = {"info": info, "ceiling": {k: v * 1e3 for k, v in ceil.items()}, "ceiling_unit": "GFLOP/s", "rows": rows,
           "targets": targets}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
