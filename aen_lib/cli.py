"""Command line: train one SAE on spiked-dictionary data with the paper's synthetic protocol (book: paper facts, synthetic protocol).

    aen-train --architecture aen --l1 0.005 --l2 0.0001 --rho 0.0
    aen-train --architecture topk --k 16 --rho 0.9 --steps 2000 --out runs/topk

Defaults are the paper's: n = 256, m = 1024, k = 16, batch 256, Adam 1e-3, 50k steps, T_w = 10k,
10k-step dead window. Prints the final L0, dead %, EV and support F1 (and writes them as JSON with ``--out``).
A problem you can fix (a bad value, no CUDA GPU for ``--device cuda``, an ``--out`` that cannot be written, a checkpoint
that ``--resume`` cannot use) stops it before training with one line naming the problem and the fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import configure_openmp

if TYPE_CHECKING:  # main() imports torch after configure_openmp(): torch's OpenMP runtime reads the setting on import
    import torch

PROG = "aen-train"


def _options(items: list[str]) -> dict[str, Any]:
    """``--option NAME=VALUE`` arguments as an options dict; the architecture validates names and values."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--option {item!r} is not NAME=VALUE (e.g. --option auxk_k=64)")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[name.strip()] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # after configure_openmp (main), so torch's OpenMP starts with sleeping waits
    from .sae.architectures import SPECS
    from .sae.config import SAEConfig
    from .data.synthetic import SpikedDictionaryConfig
    from .training.train import TrainConfig

    sae, data, train = (_defaults(c) for c in (SAEConfig, SpikedDictionaryConfig, TrainConfig))  # the paper's values
    p.add_argument("--architecture", default="aen", help=" | ".join(SPECS) + " (the registered architectures)")
    p.add_argument("--l1", type=float, default=5e-3, help="λ1 (l1 family)")
    p.add_argument("--l2", type=float, default=None, help="λ2 (elastic_net, aen; default 1e-4 for them, else 0)")
    p.add_argument("--k", type=int, default=16, help="k (topk, batchtopk)")
    p.add_argument("--l0", type=float, default=1e-3, help="L0 coefficient (jumprelu)")
    p.add_argument("--gamma", type=float, default=sae["gamma"])
    p.add_argument("--ema-beta", type=float, default=sae["ema_beta"])
    p.add_argument("--ref-top-pct", type=float, default=sae["ref_top_pct"])
    p.add_argument("--warmup-steps", type=int, default=sae["warmup_steps"], help="T_w")
    p.add_argument("--ramp-steps", type=int, default=sae["ramp_steps"], help="R")
    from .sae.architectures.base import declared_options

    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an architecture's own setting, repeatable; VALUE is read as JSON (a number, true/false) or "
                        "else as text. Declared: " + ", ".join(f"{n} ({o.doc})" for n, o in declared_options().items()))
    p.add_argument("--n", type=int, default=data["n"], help="input dimension")
    p.add_argument("--m", type=int, default=data["m"], help="dictionary size (true and learned)")
    p.add_argument("--data-k", type=int, default=data["k"], help="active atoms per sample")
    p.add_argument("--rho", type=float, default=data["rho"], help="spike strength ρ in [0, 1)")
    p.add_argument("--steps", type=int, default=train["steps"])
    p.add_argument("--batch-size", type=int, default=train["batch_size"])
    p.add_argument("--lr", type=float, default=train["lr"])
    p.add_argument("--dead-window", type=int, default=train["dead_window_steps"], help="dead-latent window in steps")
    p.add_argument("--log-every", type=int, default=train["log_every"])
    p.add_argument("--seed", type=int, default=0, help="seed of the data generator and of the SAE init")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--autocast", default="none", choices=["none", "bf16"])
    p.add_argument("--out", default="", help="folder for the trained SAE, metrics.jsonl, checkpoint and final.json")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    return p


def _defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (fields without a default left out): the flags' defaults live there."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _one_line(problem: Exception | str) -> str:
    """``aen-train: <problem and fix>`` on one line (library messages may wrap a multi-line cause)."""
    return f"{PROG}: {' '.join(str(problem).split())}"


def _device(name: str) -> "torch.device":
    """The torch device for ``--device``; ``ValueError`` naming the fix when this machine has no such device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
            raise ValueError(f"--device {name}: torch sees no CUDA GPU on this machine{build}; "
                             "use --device cpu, or leave --device out to use a GPU only when there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0; use --device cuda:0")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)
        if backend is None or not backend.is_available():
            raise ValueError(f"--device {name}: torch has no {device.type} device on this machine; use --device cpu")
    return device


def _prepare_out(out: Path, resume: bool) -> None:
    """Create the ``--out`` folder and write a test file into it, so that a bad folder stops the run before training
    rather than at its end; ``ValueError`` naming the problem and the fix. (``--resume`` needs the folder to exist:
    its checkpoint is checked next.)"""
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder; give a folder path (it is created if missing)")
        if resume and not out.exists():
            return
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except (NotADirectoryError, FileExistsError):
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        where = f"{blocker} is a file" if blocker is not None else "a part of the path is not a folder"
        raise ValueError(f"--out {out} cannot be created: {where}; choose a path inside a folder") from None
    except PermissionError:
        raise ValueError(f"--out {out} is not writable (permission denied); choose a folder you can write to, "
                         "or change its permissions") from None
    except OSError as e:  # read-only file system, full disk, ...
        raise ValueError(f"--out {out} cannot be written ({e.strerror or e}); choose another folder") from None
    if not resume and any((out / f).exists() for f in ("checkpoint.pt", "metrics.jsonl")):
        raise ValueError(f"--out {out} already holds a run (checkpoint.pt / metrics.jsonl); add --resume to continue "
                         "it, or choose another --out")


# config field -> the flag (argparse dest) that sets it, where the names differ
_SAE_FLAGS = {"d_in": "n", "d_sae": "m"}
_DATA_FLAGS = {"k": "data_k"}


def _differences(saved: dict, mine: dict, renames: dict[str, str], flags: set[str]) -> dict[str, str]:
    """``{"--flag": "--flag SAVED (this command: MINE)"}`` for each config field whose value differs."""
    out = {}
    for field, value in mine.items():
        if field in saved and saved[field] != value:
            dest = renames.get(field, field)
            name = f"--{dest.replace('_', '-')}" if dest in flags else field
            out[name] = f"{name} {saved[field]} (this command: {value})"
    return out


def _resume_state(path: Path, args: argparse.Namespace, sae_cfg: Any, data_cfg: Any, device: "torch.device") -> dict:
    """Read ``OUT/checkpoint.pt`` for ``--resume``: ``ValueError`` naming the problem and the fix, with the flags
    whose values differ from those of the run that wrote it."""
    from .training.train import load_checkpoint

    try:
        state = load_checkpoint(path, map_location=device)
    except FileNotFoundError as e:
        raise ValueError(f"cannot resume: {e}; point --out at the folder of the run to continue, or drop --resume "
                         "to start a new run") from None
    except ValueError as e:  # corrupt, or not a training checkpoint
        raise ValueError(f"cannot resume: {e}; delete it (and metrics.jsonl beside it) to start a new run in "
                         f"{path.parent}, or choose another --out") from None
    flags = set(vars(args))
    saved_data = (state.get("per_rank") or [{}])[0].get("data", {}).get("config", {})  # one process: rank 0's
    differ = {**_differences(state["sae_cfgs"][0] if state["sae_cfgs"] else {}, sae_cfg.to_dict(), _SAE_FLAGS, flags),
              **_differences(saved_data, data_cfg.to_dict(), _DATA_FLAGS, flags)}
    if differ:
        raise ValueError(f"cannot resume: {path} was written by a run with {', '.join(differ.values())}; repeat that "
                         "run's flags to continue it, or drop --resume and choose another --out")
    return state


def main(argv: list[str] | None = None) -> int:
    """Run ``aen-train``. A problem the user can fix (a bad value, a missing device, an unusable ``--out``, a
    checkpoint that cannot be resumed) ends in one line on stderr, ``aen-train: <problem>; <fix>``, and exit code 2,
    before anything is trained."""
    configure_openmp()  # before the first torch import, or it has no effect (see its docstring)
    args = build_parser().parse_args(argv)

    from .sae.architectures import architecture_spec
    from .sae.config import SAEConfig
    from .data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
    from .sae.io import save_sae
    from .evaluation.metrics import recovery_metrics
    from .sae.model import SAE
    from .training.train import TrainConfig, Trainer
    from .results.records import write_result

    try:
        spec = architecture_spec(args.architecture)  # ValueError naming the registered architectures
        # the fields the architecture reads; the others at 0 (an explicit --l2 is passed on, for the config to judge)
        given = {f: (v if f in spec.uses else type(v)(0))
                 for f, v in {"l1": args.l1, "k": args.k, "l0": args.l0}.items()}
        given["l2"] = args.l2 if args.l2 is not None else float(spec.cli_defaults.get("l2", 0.0))
        sae_cfg = SAEConfig(
            d_in=args.n, d_sae=args.m, architecture=args.architecture, **given,
            gamma=args.gamma, ema_beta=args.ema_beta, ref_top_pct=args.ref_top_pct,
            warmup_steps=args.warmup_steps, ramp_steps=args.ramp_steps, seed=args.seed,
            options=_options(args.option),
        )
        data_cfg = SpikedDictionaryConfig(n=args.n, m=args.m, k=args.data_k, rho=args.rho, seed=args.seed)
        out = Path(args.out) if args.out else None
        train_cfg = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, dead_window_steps=args.dead_window,
            log_every=args.log_every, progress=not args.no_progress, autocast=args.autocast, seed=args.seed,
            checkpoint_every=args.checkpoint_every, checkpoint_dir=str(out) if out else "",
        )
        if args.resume and out is None:
            raise ValueError("--resume needs --out (the folder holding checkpoint.pt)")
        device = _device(args.device)
        if out is not None:
            _prepare_out(out, resume=args.resume)
        state = _resume_state(out / "checkpoint.pt", args, sae_cfg, data_cfg, device) if args.resume else None
        data = SpikedDictionaryData(data_cfg, device=device)
        sae = SAE(sae_cfg, device=device)
        trainer = Trainer(sae, data, train_cfg)
        if state is not None:
            try:
                trainer.load_state_dict(state)
            except ValueError as e:
                raise ValueError(f"cannot resume from {out / 'checkpoint.pt'}: {e}; drop --resume and choose "
                                 "another --out to start a new run") from None
    except ValueError as e:
        print(_one_line(e), file=sys.stderr)
        return 2
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
        # a stored result (versioned); rewritten when --resume continues a finished run (_prepare_out refuses a new
        # run in a folder that holds one)
        write_result(out / "final.json", "train_final", final, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
