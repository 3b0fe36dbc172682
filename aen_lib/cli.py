"""Command line: train one SAE on spiked-dictionary data with the paper's synthetic protocol (book: paper facts, synthetic protocol).

    aen-train --architecture aen --l1 0.005 --l2 0.0001 --rho 0.0
    aen-train --architecture topk --k 16 --rho 0.9 --steps 2000 --out runs/topk

Defaults are the paper's: n = 256, m = 1024, k = 16, batch 256, Adam 1e-3, 50k steps, T_w = 10k,
10k-step dead window. Prints the final L0, dead %, EV and support F1 (and writes them as JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from .config import SAEConfig
from .data import SpikedDictionaryConfig, SpikedDictionaryData
from .io import save_sae
from .metrics import recovery_metrics
from .model import SAE
from .train import TrainConfig, Trainer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aen-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--architecture", default="aen", help="relu_l1 | elastic_net | adaptive_lasso | aen | topk | topk_auxk | batchtopk | jumprelu")
    p.add_argument("--l1", type=float, default=5e-3, help="λ1 (l1 family)")
    p.add_argument("--l2", type=float, default=None, help="λ2 (elastic_net, aen; default 1e-4 for them, else 0)")
    p.add_argument("--k", type=int, default=16, help="k (topk, batchtopk)")
    p.add_argument("--l0", type=float, default=1e-3, help="L0 coefficient (jumprelu)")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--ema-beta", type=float, default=0.9999)
    p.add_argument("--ref-top-pct", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=10_000, help="T_w")
    p.add_argument("--ramp-steps", type=int, default=2_000, help="R")
    p.add_argument("--n", type=int, default=256, help="input dimension")
    p.add_argument("--m", type=int, default=1024, help="dictionary size (true and learned)")
    p.add_argument("--data-k", type=int, default=16, help="active atoms per sample")
    p.add_argument("--rho", type=float, default=0.0, help="spike strength ρ in [0, 1)")
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dead-window", type=int, default=10_000, help="dead-latent window in steps")
    p.add_argument("--log-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="seed of the data generator and of the SAE init")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", default="none", choices=["none", "bf16"])
    p.add_argument("--out", default="", help="folder for the trained SAE, metrics.jsonl, checkpoint and final.json")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        l2 = args.l2 if args.l2 is not None else (1e-4 if args.architecture in ("elastic_net", "aen") else 0.0)
        uses_l1 = args.architecture in ("relu_l1", "elastic_net", "adaptive_lasso", "aen")
        sae_cfg = SAEConfig(
            d_in=args.n, d_sae=args.m, architecture=args.architecture,
            l1=args.l1 if uses_l1 else 0.0, l2=l2, k=args.k if args.architecture in ("topk", "topk_auxk", "batchtopk") else 0,
            l0=args.l0 if args.architecture == "jumprelu" else 0.0,
            gamma=args.gamma, ema_beta=args.ema_beta, ref_top_pct=args.ref_top_pct,
            warmup_steps=args.warmup_steps, ramp_steps=args.ramp_steps, seed=args.seed,
        )
        data_cfg = SpikedDictionaryConfig(n=args.n, m=args.m, k=args.data_k, rho=args.rho, seed=args.seed)
        out = Path(args.out) if args.out else None
        train_cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, dead_window_steps=args.dead_window,
            log_every=args.log_every, progress=not args.no_progress, autocast=args.autocast, seed=args.seed,
            checkpoint_every=args.checkpoint_every, checkpoint_dir=str(out) if out else "",
        )
    except ValueError as e:
        print(f"aen-train: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    data = SpikedDictionaryData(data_cfg, device=device)
    sae = SAE(sae_cfg, device=device)
    trainer = Trainer(sae, data, train_cfg)
    if args.resume:
        if out is None:
            print("aen-train: --resume needs --out (the folder holding checkpoint.pt)", file=sys.stderr)
            return 2
        trainer.resume(out / "checkpoint.pt")
    result = trainer.run()
    # Recovery is measured on fresh samples that continue the training stream (never seen in training).
    eval_data = copy.deepcopy(data)
    x, h_true = eval_data.sample(4096)
    rec = recovery_metrics(sae, data.dictionary, x, h_true)
    final = {**result.final, **rec, "skipped_steps": result.skipped_steps, "seconds": result.seconds}
    print(f"{sae_cfg.label}  rho={args.rho:g}  steps={result.steps}")
    print(
        f"L0 {final['l0']:.2f}   dead {final['dead_pct']:.2f}%   EV {final['ev']:.4f}   "
        f"support F1 {final['support_f1']:.3f}   matched cos {final['dictionary_mean_cos']:.3f}"
    )
    if out is not None:
        save_sae(sae, out / "sae", metadata={"data": data_cfg.to_dict()}, normalization="none", overwrite=True)
        (out / "final.json").write_text(json.dumps(final, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
