"""Benchmark: a paper-size synthetic reference set end to end, where its time goes, and both cores.

Prints (and with ``--json`` writes), in one run on one machine:
  * the one-thread fp32 matmul ceiling (GFLOP/s), square matmuls of ``--ceiling-size`` (``bench_core.matmul_ceiling``);
  * the real set (``aen_lib.results.reference.run_spiked``: the paper grid's 16 SAEs at ρ = ``--rho``, n 256, m 1024, batch 256)
    for ``--steps`` steps in one thread: every step of training counted, data generation, logging and checkpoints
    included; member-steps/s, achieved GFLOP/s at 10·B·n·m matmul FLOPs per member-step (``bench_core``'s convention)
    and the fraction of the ceiling. The records written after training (recovery on fresh samples) are timed apart;
  * the profile of that run: seconds per stage of the training loop (data, forward and penalties with the adaptive
    weights' update, backward, finite check, Adam, decoder projection, dead-latent windows, logs, checkpoints, the rest)
    and the operators that took the most self CPU time over ``--op-steps`` further steps (``torch.profiler``);
  * the same set split over two one-thread processes (``--workers 2``): wall-clock member-steps/s and its ratio to one
    thread, and whether the two runs' records agree to float tolerance.

Run it on an idle machine: every figure is a ratio measured in this one run.

Usage:  python benchmarks/bench_reference_set.py [--steps 1000] [--rho 0] [--workers 2] [--json out.json]
Targets (issue 24): one thread at >= 60% of the ceiling; two cores >= 1.7x one thread.
"""

from __future__ import annotations

import aen_lib

aen_lib.configure_openmp()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import FLOPS_PER_SAMPLE, matmul_ceiling  # noqa: E402

from aen_lib.data import synthetic as data_mod  # noqa: E402
from aen_lib.results import reference  # noqa: E402
from aen_lib.sae import model as model_mod  # noqa: E402
from aen_lib.sae import optim as optim_mod  # noqa: E402
from aen_lib.training import train  # noqa: E402

N, M, BATCH = 256, 1024, 256
STAGES = {  # stage name: (object, attribute) whose calls are timed
    "data": (data_mod.SpikedDictionaryData, "sample"),
    "forward+penalties": (model_mod.SAE, "loss"),
    "finite check": (train.Trainer, "_member_ok"),
    "adam": (optim_mod.MemberAdam, "step"),
    "decoder projection": (model_mod.SAE, "project_decoder_"),
    "dead windows": (train.Trainer, "_update_dead"),
    "logs": (train.Trainer, "_log"),
    "checkpoints": (train.Trainer, "save_checkpoint"),
}


class StageTimer:
    """Wraps the stage methods (and ``torch.autograd.backward``) with wall-clock timers while active."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, name: str, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed

    def __enter__(self) -> "StageTimer":
        for name, (owner, attr) in STAGES.items():
            fn = getattr(owner, attr)
            self._saved.append((owner, attr, fn))
            setattr(owner, attr, self._wrap(name, fn))
        self._saved.append((torch.autograd, "backward", torch.autograd.backward))
        torch.autograd.backward = self._wrap("backward", torch.autograd.backward)
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, fn in reversed(self._saved):
            setattr(owner, attr, fn)
        self._saved.clear()


def set_matmul_gflops(members: int, repeats: int = 10) -> float:
    """GFLOP/s of the five batched matmuls of one training step at the set's shapes alone (encoder and decoder
    forward, decoder weight and input gradients, encoder weight gradient: 10·B·n·m per member), nothing else: the
    rate the set could reach if everything but its matmuls took no time."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(members, BATCH, N, generator=g)
    w_enc, w_dec = torch.randn(members, N, M, generator=g), torch.randn(members, M, N, generator=g)
    h, gx = torch.randn(members, BATCH, M, generator=g), torch.randn(members, BATCH, N, generator=g)

    def step() -> None:
        torch.bmm(x, w_enc)                   # pre = x W_enc
        torch.bmm(h, w_dec)                   # x_hat = h W_dec
        torch.bmm(h.transpose(1, 2), gx)      # dW_dec = hᵀ dx_hat
        dh = torch.bmm(gx, w_dec.transpose(1, 2))  # dh = dx_hat W_decᵀ
        torch.bmm(x.transpose(1, 2), dh)      # dW_enc = xᵀ dpre
    step()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return FLOPS_PER_SAMPLE * BATCH * N * M * members / best / 1e9


def train_seconds(work: Path) -> float:
    """Training seconds of a set from its invocation ledger(s) (the parts ran side by side: the longest)."""
    parts = sorted(work.glob("part*of*")) or [work]
    secs = []
    for p in parts:
        calls = [json.loads(f.read_text()) for f in sorted((p / "invocations").glob("*.json"))]
        secs.append(sum(c.get("seconds", 0.0) for c in calls))
    return max(secs)


def records(folder: Path) -> dict[str, dict]:
    return {f.name: json.loads(f.read_text()) for f in sorted(folder.glob("*.json")) if f.name != "provenance.json"}


def compare(a: dict[str, dict], b: dict[str, dict], rtol: float = 1e-4) -> float:
    """Largest relative difference of the final metrics between two sets' records (they must hold the same SAEs)."""
    if set(a) != set(b):
        raise RuntimeError(f"the two runs hold different SAEs: {sorted(set(a) ^ set(b))}")
    worst = 0.0
    for name in a:
        fa, fb = a[name]["final"], b[name]["final"]
        for k, va in fa.items():
            vb = fb.get(k)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va == va and vb == vb:
                worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-12))
    return worst


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rho", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the timed set (the paper: 50,000)")
    ap.add_argument("--workers", type=int, default=2, help="processes of the split run (0: skip it)")
    ap.add_argument("--op-steps", type=int, default=20, help="steps profiled operator by operator (0: skip)")
    ap.add_argument("--ceiling-size", type=int, default=2048, help="square matmul of the ceiling (bench_core's 2048)")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.steps < 2:
        raise SystemExit("--steps must be at least 2")
    torch.set_num_threads(1)
    ceiling = matmul_ceiling(args.ceiling_size, torch.device("cpu"), torch.float32, repeats=20)
    out: dict = {"rho": args.rho, "steps": args.steps, "torch": torch.__version__, "threads_one": 1,
                 "ceiling_gflops_1thread": round(ceiling, 1)}
    print(f"one-thread matmul ceiling ({args.ceiling_size}^2 fp32): {ceiling:.1f} GFLOP/s")
    flop_per_member_step = FLOPS_PER_SAMPLE * BATCH * N * M

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timer = StageTimer()
        t0 = time.perf_counter()
        with timer:
            folder = reference.run_spiked(args.rho, 0, out_root=tmp / "out1", work_root=tmp / "work1",
                                          steps=args.steps, progress=False)
        total = time.perf_counter() - t0
        assert folder is not None
        prov = json.loads((folder / "provenance.json").read_text())
        members = prov["members"]
        train_s = train_seconds(tmp / "work1" / folder.name)
        rate = members * args.steps / train_s
        gflops = rate * flop_per_member_step / 1e9
        out.update(members=members, train_seconds_1=round(train_s, 2), records_seconds=round(total - train_s, 2),
                   member_steps_per_s_1=round(rate, 2), gflops_1=round(gflops, 1),
                   fraction_of_ceiling_1=round(gflops / ceiling, 3))
        print(f"one thread: {members} SAEs x {args.steps} steps in {train_s:.1f} s training "
              f"(+{total - train_s:.1f} s records) = {rate:.1f} member-steps/s, {gflops:.1f} GFLOP/s, "
              f"{100 * gflops / ceiling:.0f}% of the ceiling")
        mm_rate = set_matmul_gflops(members)
        out.update(matmul_only_gflops=round(mm_rate, 1), matmul_only_fraction=round(mm_rate / ceiling, 3))
        print(f"the step's five matmuls alone at the set's shapes: {mm_rate:.1f} GFLOP/s, {100 * mm_rate / ceiling:.0f}% "
              f"of the ceiling (the most the set could reach); the set reaches {100 * gflops / mm_rate:.0f}% of that")
        stages = {k: round(v, 3) for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
        stages["the rest"] = round(train_s - sum(v for k, v in timer.seconds.items()), 3)
        out["stages_seconds"] = stages
        print("where the training time goes (s, share):")
        for k, v in stages.items():
            print(f"  {k:20s} {v:8.2f}  {100 * v / train_s:5.1f}%")

        if args.op_steps:
            from torch.profiler import ProfilerActivity, profile

            from aen_lib.training.sweep import expand_grid
            cfgs = expand_grid(dict(reference.SPIKED_PAPER_SAE), reference.REFERENCE_SPIKED_GRID, seeds=[0])
            sae = model_mod.SAE(cfgs)
            src = data_mod.SpikedDictionaryData(data_mod.SpikedDictionaryConfig(n=N, m=M, k=16, rho=args.rho, seed=0))
            tr = train.Trainer(sae, src, train.TrainConfig(steps=10**9, batch_size=BATCH, progress=False))
            for _ in range(3):
                tr.train_step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.op_steps):
                    x, _, o, _, ok = tr.train_step()
                    tr._update_dead(o, ok, BATCH)
            ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
            tot = sum(e.self_cpu_time_total for e in prof.key_averages())
            out["top_ops"] = [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / args.op_steps, 3),
                               "share": round(e.self_cpu_time_total / tot, 3), "calls_per_step": e.count / args.op_steps}
                              for e in ev]
            print(f"top operators by self CPU time over {args.op_steps} steps (one stacked SAE of {len(cfgs)} members):")
            for r in out["top_ops"]:
                print(f"  {r['op']:40s} {r['self_ms_per_step']:8.2f} ms/step  {100 * r['share']:5.1f}%  "
                      f"x{r['calls_per_step']:g}")

        if args.workers > 1:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            cmd = [sys.executable, "-m", "aen_lib.results.reference", "spiked", "--rho", str(args.rho), "--steps",
                   str(args.steps), "--workers", str(args.workers), "--out", str(tmp / "out2"), "--work",
                   str(tmp / "work2"), "--no-progress"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            split_s = train_seconds(tmp / "work2" / folder.name)
            rate2 = members * args.steps / split_s
            diff = compare(records(folder), records(tmp / "out2" / folder.name))
            out.update(workers=args.workers, train_seconds_split=round(split_s, 2), wall_seconds_split=round(wall, 2),
                       member_steps_per_s_split=round(rate2, 2), split_over_one=round(rate2 / rate, 3),
                       split_records_max_rel_diff=diff)
            print(f"{args.workers} one-thread processes: {split_s:.1f} s training (longest part; {wall:.1f} s with "
                  f"start-up and records) = {rate2:.1f} member-steps/s, {rate2 / rate:.2f}x one thread; "
                  f"records agree to {diff:.1e} (relative)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
