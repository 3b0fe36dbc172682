"""One prepared GPU session: every speed and correctness figure the book needs from a lent GPU, in one run of under
eight minutes, written to ONE JSON summary; then as many paper-size reference sets as the time left allows.

Stages, in order, each in its own process with its own time limit (a stage that fails, or runs past its limit, is
recorded as ``failed`` / ``timeout`` with its error, and the next stage starts):

  correctness    a stacked training step equals the same SAEs trained alone (one member per architecture, 10 steps,
                 in float64 and float32: largest parameter difference against a stated tolerance), and a bf16-autocast
                 step against the fp32 step (relative error of loss, reconstruction and gradients; a short training run
                 in each precision, final loss) against stated tolerances;
  sweep          ``bench_sweep.py``: 32 stacked SAEs of the paper's synthetic shape against the same SAEs one after
                 another (goal >= 10x on a GPU); also writes ``bench_sweep.json`` / ``.txt``;
  pythia_tokens  tokens/s of ``aen_lib.training.train.train`` for a Pythia-70M-shaped SAE (d_in 512, d_sae 4,096, batch
                 8,192, bf16 autocast) reading cached activations; the cache is a synthetic stand-in (random float32
                 rows in memory: on the host, as a loaded cache, and on the device); goal >= 1M tokens/s on an H200
                 (for the host rows, the realistic case);
  llama_shape    ``gpu_llama_shape.py``: the paper's Llama-3.1-8B SAE shape, step time against the planner's
                 prediction (``aen_lib.training.planner.plan``) and peak memory against its model; writes
                 ``gpu_llama_shape.json``;
  pythia_slice   the paper's Pythia-70M protocol on a slice of its grid (``params/pythia_slice``: TopK k 32 and AEN at
                 the paper's L0-32 row, one seed, 204.8M tokens each) through chapter 8 with papermill, where the
                 Hugging Face Hub is reachable and switched on (``HF_HUB_OFFLINE=0`` in the session's environment);
                 otherwise it records why it did not run, in seconds. A run cut off by its limit resumes from its
                 results folder (``OUT/pythia_slice``) next time;
  reference      ``python -m aen_lib.results.reference spiked`` for the sets of ``REFERENCE_SETS`` (or ``--sets``) in order of
                 priority, ``--parallel`` side by side, with the time left; each finished set gets its mechanism
                 measures (``python -m aen_lib.results.reference mechanism``) and is packed into ``reference.tar.gz`` at
                 once. A set cut off by the budget writes nothing; its saved progress is reported.

The summary (``OUT/summary.json``) is rewritten after every stage, so a session killed half-way keeps what it
measured. Every stage's output also goes to ``OUT/session.txt``.

``--dry-run`` runs every stage on the CPU at tiny sizes (and one reference set of a single step) in well under a
minute on an idle machine, and writes the same JSON shape: a test of the script, not a measurement.

Usage:
  python benchmarks/gpu_session.py --out OUT [--budget 450] [--work DIR]          # on the GPU machine
  python benchmarks/gpu_session.py --out /tmp/dry --dry-run                       # anywhere, seconds
  benchmarks/gpu_session.sh wraps it (and records the environment in OUT/env.txt).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable, TextIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUMMARY_VERSION = 1
STAGES = ("correctness", "sweep", "pythia_tokens", "llama_shape", "pythia_slice", "reference")
#: seconds each stage may run: (on the GPU, in a dry run). The reference sets get whatever the budget leaves.
LIMITS = {"correctness": (60, 40), "sweep": (120, 40), "pythia_tokens": (60, 40), "llama_shape": (180, 40),
          "pythia_slice": (600, 20)}
PYTHIA_SLICE = REPO / "params" / "pythia_slice" / "08_pythia_reproduction.yaml"
PYTHIA_SLICE_CHAPTER = REPO / "chapters" / "08_pythia_reproduction.ipynb"
HUB_PROBE = "https://huggingface.co/api/models/EleutherAI/pythia-70m-deduped"
#: the reference sets the session trains, in order of priority (study, ρ, seed): what the book still lacks, the
#: smallest first (the factorial at ρ = 0.9, seeds 0 to 2), then the larger sets
REFERENCE_SETS = (("factorial", 0.9, 0), ("factorial", 0.9, 1), ("factorial", 0.9, 2), ("centred", 0.9, 0),
                  ("seeds", 0.9, 2), ("sensitivity_aen", 0.0, 0), ("sensitivity_adaptive_lasso", 0.0, 0),
                  ("paper", 0.5, 0))
REFERENCE_PARALLEL = 3  # sets trained side by side (one process each): one small set leaves most of a GPU idle
MIN_REFERENCE_S = {False: 60, True: 5}  # a reference set is not started with less time than this left
#: seconds kept back at the end of the reference stage for reporting what the sets cut off had saved, and packing
#: (the first loan lost that report: the sets ran to the stage's own limit)
REFERENCE_RESERVE_S = {False: 30, True: 3}

# tolerances of the correctness stage
STACK_TOL = {"float64": 1e-7, "float32": 1e-4}  # largest |stacked - alone| of any parameter or state after the steps
#: bf16 autocast against fp32: relative errors of one step's loss, reconstruction and gradients and of the final loss
#: of a short training run (upper bounds), and for TopK the share of tokens whose active set is the same (lower bound)
BF16_TOL = {"loss": 2e-2, "x_hat": 3e-2, "grad": 5e-2, "train_loss": 5e-2, "support_agreement": 0.8}

PYTHIA_GOAL_TOK_S = 1e6
SWEEP_GOAL = 10.0


# --------------------------------------------------------------------------------------------------------------
# Stages (each runs in a worker process: ``gpu_session.py --stage NAME``)
# --------------------------------------------------------------------------------------------------------------


def _rel(a: Any, b: Any) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def stage_correctness(device: str, dry: bool, out: Path, **_: Any) -> dict[str, Any]:
    import torch

    from aen_lib import SAE, SAEConfig
    from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
    from aen_lib.data.sources import TensorStream
    from aen_lib.training.train import TrainConfig, Trainer, autocast_context

    dev = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    n, m, B, steps = (16, 64, 32, 3) if dry else (64, 256, 128, 10)
    k = max(2, m // 32)
    base = dict(d_in=n, d_sae=m)
    cfgs = [
        SAEConfig(**base, architecture="aen", l1=1e-2, l2=1e-3, gamma=1.0, ema_beta=0.9, warmup_steps=0, seed=1),
        SAEConfig(**base, architecture="relu_l1", l1=1e-2, seed=2),
        SAEConfig(**base, architecture="elastic_net", l1=1e-2, l2=1e-2, seed=3),
        SAEConfig(**base, architecture="adaptive_lasso", l1=2e-2, ema_beta=0.8, warmup_steps=0, seed=4),
        SAEConfig(**base, architecture="topk", k=k, seed=5),
        SAEConfig(**base, architecture="topk_auxk", k=k, seed=6, options={"auxk_dead_tokens": B, "auxk_k": 4}),
        SAEConfig(**base, architecture="batchtopk", k=k, seed=7),
        SAEConfig(**base, architecture="jumprelu", l0=1e-2, jumprelu_init_threshold=0.1, seed=8),
    ]
    data = SpikedDictionaryData(SpikedDictionaryConfig(n=n, m=2 * n, k=4, rho=0.3, seed=0))
    x_all = data.sample(steps * B)[0]
    tc = TrainConfig(steps=steps, batch_size=B, log_every=steps, dead_window_steps=steps, grad_clip=1.0, lr=1e-3,
                     progress=False)

    def state(sae: Any) -> dict[str, Any]:
        s = {name: getattr(sae, name).detach() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        s.update({f"architecture.{k}": v for k, v in sae.architecture.state_dict().items()})
        return s

    stacked = {}
    for dt_name, tol in STACK_TOL.items():
        dt = getattr(torch, dt_name)
        rows = x_all.to(dev, dt)
        stack = SAE(cfgs, device=dev, dtype=dt)
        Trainer(stack, TensorStream(rows), tc).run()
        members = []
        for j, cfg in enumerate(cfgs):
            alone = SAE(cfg, device=dev, dtype=dt)
            Trainer(alone, TensorStream(rows), tc).run()
            a, b = state(alone), state(stack.member(j))
            diff = max(float((a[key].double() - b[key].double()).abs().max()) if a[key].is_floating_point()
                       else float(not torch.equal(a[key], b[key])) for key in a)
            members.append({"architecture": cfg.architecture, "max_abs_diff": diff, "pass": diff <= tol})
        worst = max(r["max_abs_diff"] for r in members)
        stacked[dt_name] = {"tolerance": tol, "max_abs_diff": worst, "pass": all(r["pass"] for r in members),
                            "members": members}
        print(f"stacked vs alone, {dt_name}: largest difference {worst:.3g} (tolerance {tol:g})")

    bf16 = {}
    x = x_all[:B].to(dev)
    train_steps = 20 if dry else 200
    for arch, fields in (("aen", dict(l1=1e-2, l2=1e-3, warmup_steps=0)), ("topk", dict(k=k))):
        cfg = SAEConfig(**base, architecture=arch, **fields)
        errs: dict[str, float] = {}
        results = {}
        xs, agreement = x, None
        if arch == "topk":
            # TopK's map jumps where bf16 rounding swaps the k-th and the (k+1)-th pre-activation of a token: count
            # those tokens, and compare the precisions on the tokens whose active set both agree on
            sae = SAE(cfg, device=dev)
            with torch.no_grad():
                h32 = sae.encode(x)
                with autocast_context(TrainConfig(autocast="bf16"), dev):
                    h16 = sae.encode(x)
            same = ((h32 > 0) == (h16 > 0)).all(dim=-1)
            agreement = float(same.float().mean())
            xs = x[same]
        for prec in ("fp32", "bf16"):
            sae = SAE(cfg, device=dev)
            with autocast_context(TrainConfig(autocast="bf16" if prec == "bf16" else "none"), dev):
                out_, terms = sae.loss(xs, update=False)
            terms.total.float().backward()
            results[prec] = (terms.total.detach().float(), out_.x_hat.detach().float(), sae.W_enc.grad.detach(),
                             sae.W_dec.grad.detach())
        (l32, xh32, ge32, gd32), (l16, xh16, ge16, gd16) = results["fp32"], results["bf16"]
        errs["loss"] = float(abs(l16 - l32) / abs(l32))
        errs["x_hat"] = _rel(xh16, xh32)
        errs["grad"] = max(_rel(ge16, ge32), _rel(gd16, gd32))
        final = {}
        for prec in ("none", "bf16"):
            sae = SAE(cfg, device=dev)
            src = SpikedDictionaryData(SpikedDictionaryConfig(n=n, m=2 * n, k=4, rho=0.3, seed=1), device=dev)
            tr = Trainer(sae, src, TrainConfig(steps=train_steps, batch_size=B, log_every=train_steps,
                                               final_avg_logs=1, autocast=prec, progress=False))
            final[prec] = tr.run().final["total"]
        errs["train_loss"] = abs(final["bf16"] - final["none"]) / abs(final["none"])
        ok = all(v <= BF16_TOL[key] for key, v in errs.items())
        if agreement is not None:
            ok = ok and agreement >= BF16_TOL["support_agreement"]
        bf16[arch] = {"relative_errors": errs, "support_agreement": agreement, "tolerances": dict(BF16_TOL),
                      "tokens_compared": int(xs.shape[0]), "train_steps": train_steps,
                      "final_loss": {"fp32": final["none"], "bf16": final["bf16"]}, "pass": ok}
        print(f"bf16 vs fp32, {arch}: " + ", ".join(f"{key} {v:.2e} (tol {BF16_TOL[key]:g})" for key, v in errs.items())
              + ("" if agreement is None else f", support agreement {agreement:.1%}"))

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads()}
    return {"shape": {"d_in": n, "d_sae": m, "batch": B}, "steps": steps,
            "architectures": [c.architecture for c in cfgs], "stacked_vs_alone": stacked, "bf16_vs_fp32": bf16,
            "pass": all(v["pass"] for v in stacked.values()) and all(v["pass"] for v in bf16.values()),
            "env": info}


class _Tee:
    """Write to several text streams at once (the session log and a stage's own text file)."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def _benchmark(module: str, argv: list[str], text: Path | None = None) -> dict[str, Any]:
    """Run ``benchmarks/<module>.py``'s ``main(argv)`` in this process (printing to stdout and ``text``)."""
    sys.path.insert(0, str(HERE))
    mod = __import__(module)
    if text is None:
        return mod.main(argv)
    with open(text, "w") as fh, redirect_stdout(_Tee(sys.stdout, fh)):
        return mod.main(argv)


def stage_sweep(device: str, dry: bool, out: Path, **_: Any) -> dict[str, Any]:
    argv = ["--device", device, "--json", str(out / "bench_sweep.json")]
    argv += ["--quick", "--repeats", "1"] if dry else ["--members", "32"]
    res = _benchmark("bench_sweep", argv, out / "bench_sweep.txt")
    rows = {r["mode"]: r for r in res["rows"]}
    return {"members": res["members"], "shape": {"d_in": res["n"], "d_sae": res["m"], "batch": res["batch"]},
            "speedup": res["speedup"], "goal": SWEEP_GOAL, "goal_applies": device.startswith("cuda"),
            "sequential_s_per_step": rows["sequential"]["seconds_per_step"],
            "sweep_s_per_step": rows["sweep"]["seconds_per_step"],
            "sweep_fraction_of_ceiling": rows["sweep"]["frac"], "ceiling_gflops": res["ceiling_gflops"],
            "peak_gib": None if math.isnan(res["peak_gib"]) else res["peak_gib"], "file": "bench_sweep.json"}


def stage_pythia_tokens(device: str, dry: bool, out: Path, **_: Any) -> dict[str, Any]:
    import torch

    from aen_lib import SAE, SAEConfig
    from aen_lib.data.sources import TensorStream
    from aen_lib.training.train import TrainConfig, train

    dev = torch.device(device)
    B, n, m = (256, 32, 128) if dry else (8192, 512, 4096)
    steps, warm = (3, 1) if dry else (300, 20)
    gen = torch.Generator().manual_seed(0)
    host = torch.randn(16 * B, n, generator=gen)  # float32, as the cache stores it by default
    placements = {"host": host, "device": host.to(dev)} if dev.type != "cpu" else {"host": host}
    archs = {"aen": dict(l1=5e-3, l2=1e-4, warmup_steps=0), "topk": dict(k=min(32, m // 4))}
    tc = TrainConfig(batch_size=B, autocast="bf16", grad_clip=1.0, lr=5e-4, progress=False)
    rows = []
    for where, data in placements.items():
        for arch, fields in archs.items():
            cfg = SAEConfig(d_in=n, d_sae=m, architecture=arch, **fields)
            train(SAE(cfg, device=dev), TensorStream(data), tc.replace(steps=warm))  # kernels, allocator, cuBLAS
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            res = train(SAE(cfg, device=dev), TensorStream(data), tc.replace(steps=steps))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter() - t0
            row = {"rows_on": where, "arch": arch, "steps": steps, "seconds": t, "ms_per_step": 1e3 * t / steps,
                   "tokens_per_s": steps * B / t, "final_l0": res.final["l0"]}
            rows.append(row)
            print(f"{arch:>5} rows on the {where:<6}: {row['tokens_per_s']:12.0f} tokens/s "
                  f"({row['ms_per_step']:.2f} ms/step)")
    goal_row = next(r for r in rows if r["rows_on"] == "host" and r["arch"] == "aen")
    return {"shape": {"d_in": n, "d_sae": m, "batch": B}, "autocast": "bf16",
            "data": f"synthetic stand-in for cached activations: {16 * B} random float32 rows held in memory "
                    "(on the host as a loaded cache would be; and on the device); read with "
                    "aen_lib.data.sources.TensorStream, trained with aen_lib.training.train.train",
            "rows": rows, "tokens_per_s": goal_row["tokens_per_s"], "goal": PYTHIA_GOAL_TOK_S,
            "goal_applies": dev.type == "cuda", "goal_measured_on": "aen, rows on the host"}


def stage_llama_shape(device: str, dry: bool, out: Path, **_: Any) -> dict[str, Any]:
    argv = ["--device", device, "--json", str(out / "gpu_llama_shape.json")]
    argv += ["--quick", "--repeats", "1"] if dry else ["--repeats", "5"]
    res = _benchmark("gpu_llama_shape", argv)
    rows = [{k: r[k] for k in ("arch", "autocast", "ms_per_step", "planner_step_ms", "measured_over_planner",
                               "fraction_of_ceiling", "fraction_of_planner_peak", "peak_bytes_measured",
                               "peak_bytes_planner", "planner_over_measured")} for r in res["rows"]]
    return {"shape": res["info"]["shape"], "planner": res["info"]["planner"], "rows": rows,
            "file": "gpu_llama_shape.json"}


def hub_unavailable(env: dict[str, str] | None = None, timeout: float = 5.0) -> str | None:
    """None when the Hugging Face Hub is switched on (``HF_HUB_OFFLINE`` unset or 0) and answers within ``timeout``
    seconds; otherwise the reason, in words."""
    import urllib.request

    env = os.environ if env is None else env
    if env.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return f"the Hub is switched off (HF_HUB_OFFLINE={env['HF_HUB_OFFLINE']}); set HF_HUB_OFFLINE=0 to run the slice"
    try:
        with urllib.request.urlopen(HUB_PROBE, timeout=timeout):
            return None
    except Exception as e:  # noqa: BLE001 - any failure means: no Hub here
        return f"the Hugging Face Hub is not reachable from this machine ({type(e).__name__}: {e})"


def stage_pythia_slice(device: str, dry: bool, out: Path, deadline: float, **_: Any) -> dict[str, Any]:
    """Chapter 8 under ``params/pythia_slice`` with papermill until ``deadline``, where the Hub is reachable."""
    import papermill as pm
    import yaml

    params = yaml.safe_load(PYTHIA_SLICE.read_text())
    unknown = sorted(set(params) - set(pm.inspect_notebook(str(PYTHIA_SLICE_CHAPTER))))
    if unknown:
        raise ValueError(f"{PYTHIA_SLICE.name}: parameters the chapter does not have: {unknown}")
    info: dict[str, Any] = {"profile": str(PYTHIA_SLICE.relative_to(REPO)), "saes": {
        "topk_k": params["topk_k"], "aen_l1": params["aen_l1"], "aen_l2": params["aen_l2"], "seeds": params["seeds"]},
        "tokens_per_sae": params["steps"] * params["batch_size"]}
    reason = "dry run: the slice needs a GPU and the Hub" if dry else hub_unavailable()
    if reason:
        print(f"pythia_slice not run: {reason}")
        return {**info, "ran": False, "reason": reason}
    results = out / "pythia_slice"
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[k] = "0"
    cmd = [sys.executable, "-m", "papermill", str(PYTHIA_SLICE_CHAPTER), str(results / "08_pythia_slice.ipynb"),
           "--cwd", str(PYTHIA_SLICE_CHAPTER.parent), "-f", str(PYTHIA_SLICE), "-p", "results_root", str(results),
           "-p", "device", device, "--no-progress-bar"]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=env, timeout=max(deadline - time.time() - 10, 1), capture_output=True,
                              text=True)
        finished, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        finished, tail = False, "stopped at the stage's limit; run the stage again to resume (resume: true)"
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))
    return {**info, "ran": True, "finished": finished, "seconds": round(time.time() - t0, 1),
            "results_folder": "pythia_slice", "json_files": files, "log_tail": tail}


def parse_sets(text: str) -> list[tuple[str, float, int]]:
    """``"factorial:0.9:0,paper:0.5:0"`` → [(study, ρ, seed), ...]; ``ValueError`` naming the bad item."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        try:
            study, rho, seed = parts
            out.append((study, float(rho), int(seed)))
        except ValueError:
            raise ValueError(f"--sets item {item!r}: expected STUDY:RHO:SEED, e.g. factorial:0.9:0") from None
    return out


def stage_reference(device: str, dry: bool, out: Path, deadline: float, work: str | None = None,
                    steps: int | None = None, sets: str | None = None, parallel: int | None = None,
                    **_: Any) -> dict[str, Any]:
    """The reference sets of ``sets`` (default :data:`REFERENCE_SETS`) in that order of priority, ``parallel`` at a
    time, each in its own process; a finished set gets its mechanism measures and is packed into
    ``reference.tar.gz`` at once, so a session stopped later keeps it. A set is not started with less than
    ``MIN_REFERENCE_S`` left; one cut off by the deadline writes nothing, and its saved progress is reported."""
    import tarfile

    todo = parse_sets(sets) if sets else list(REFERENCE_SETS[:2] if dry else REFERENCE_SETS)
    parallel = parallel or (2 if dry else REFERENCE_PARALLEL)
    steps = steps if steps is not None else (1 if dry else None)
    deadline -= REFERENCE_RESERVE_S[dry]
    tmp = tempfile.TemporaryDirectory(prefix="aen_reference_work_") if work is None else None
    work_dir = work or tmp.name  # type: ignore[union-attr]
    log = out / "reference.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    tarball = out / "reference.tar.gz"

    def pack() -> list[str]:
        folders = sorted(q.name for q in (out / "reference").glob("*") if (q / "provenance.json").is_file()) \
            if (out / "reference").is_dir() else []
        if folders:
            part = tarball.with_suffix(".part")
            with tarfile.open(part, "w:gz") as tar:
                tar.add(out / "reference", arcname="reference")
            part.replace(tarball)
        return folders

    def one(study: str, rho: float, seed: int) -> None:
        label = f"{study} ρ={rho:g} seed={seed}"
        cmd = [sys.executable, "-m", "aen_lib.results.reference", "spiked", "--study", study, "--rho", str(rho), "--seed",
               str(seed), "--device", device, "--out", str(out / "reference"), "--work", work_dir, "--no-progress"]
        cmd += ["--steps", str(steps)] if steps else []
        t0 = time.time()
        rc, tail = _run_logged(cmd, deadline - t0 - 2, log, env=env, own_group=False)
        entry: dict[str, Any] = {"study": study, "rho": rho, "seed": seed, "seconds": round(time.time() - t0, 1),
                                 "status": "ok" if rc == 0 else ("timeout" if rc is None else "failed"),
                                 "error": None if rc == 0 else (f"cut off after {time.time() - t0:.0f} s" if rc is None
                                                                else tail)}
        folder = next((q for q in (out / "reference").glob(f"spiked_{study}_rho{rho:g}_seed{seed}*")
                       if (q / "provenance.json").is_file()), None) if rc == 0 else None
        if folder is not None:
            entry["set"] = folder.name
            left = deadline - time.time()
            if left > 10:
                t1 = time.time()
                mrc, mtail = _run_logged([sys.executable, "-m", "aen_lib.results.reference", "mechanism", str(folder),
                                          "--work", work_dir] + (["--samples", "64"] if dry else []),
                                         left - 2, log, env=env, own_group=False)
                entry["mechanism"] = {"status": "ok" if mrc == 0 else ("timeout" if mrc is None else "failed"),
                                      "seconds": round(time.time() - t1, 1), "error": None if mrc == 0 else mtail}
        with lock:
            results.append(entry)
            if folder is not None:
                pack()
        print(f"reference {label}: {entry['status']} in {entry['seconds']:.0f} s")

    threads: list[threading.Thread] = []
    queue = list(todo)
    while queue or any(t.is_alive() for t in threads):
        threads = [t for t in threads if t.is_alive()]
        while queue and len(threads) < parallel:
            study, rho, seed = queue.pop(0)
            left = deadline - time.time()
            if left < MIN_REFERENCE_S[dry]:
                results.append({"study": study, "rho": rho, "seed": seed, "status": "skipped", "seconds": 0.0,
                                "error": f"budget spent ({left:.0f} s left)"})
                continue
            with log.open("a") as fh:
                fh.write(f"== {study} ρ = {rho:g} seed {seed}, {left:.0f} s left\n")
            t = threading.Thread(target=one, args=(study, rho, seed), daemon=True)
            t.start()
            threads.append(t)
        time.sleep(0.2)
    # what the sets cut off had saved (their checkpoints stay in the work folder of that machine)
    unfinished = None
    if any(r["status"] == "timeout" for r in results):
        rc, tail = _run_logged([sys.executable, "-m", "aen_lib.results.reference", "status", "--work", work_dir], 20,
                               log, env=env, own_group=False)
        unfinished = tail
    with lock:
        folders = pack()
    if folders:
        _rmtree(out / "reference")
    if tmp is not None:
        tmp.cleanup()
    order = {s: i for i, s in enumerate(todo)}
    results.sort(key=lambda r: order.get((r["study"], r["rho"], r["seed"]), len(order)))
    return {"sets_asked": [f"{a}:{b:g}:{c}" for a, b, c in todo], "parallel": parallel, "steps": steps,
            "sets": results, "attempted": sum(r["status"] != "skipped" for r in results),
            "finished": sum(r["status"] == "ok" for r in results), "folders": folders,
            "seconds": round(max([r["seconds"] for r in results] or [0.0]), 1),
            "tarball": tarball.name if folders else None, "unfinished_progress": unfinished}


def readme_table(summary: dict[str, Any], date: str) -> str:
    """The README's table of a GPU session's figures, from its ``summary.json`` (a test keeps the two equal)."""
    st = summary["stages"]
    c = st["correctness"]["result"]
    bf16 = max(v for arch in ("aen", "topk") for v in c["bf16_vs_fp32"][arch]["relative_errors"].values())
    sw, py = st["sweep"]["result"], st["pythia_tokens"]["result"]
    tok_dev = next(r["tokens_per_s"] for r in py["rows"] if r["rows_on"] == "device" and r["arch"] == "aen")
    rows = {(r["arch"], r["autocast"]): r for r in st["llama_shape"]["result"]["rows"]}
    f32, b16 = rows[("aen", "none")], rows[("aen", "bf16")]
    lines = [
        f"| measured on the H200, {date} | figure | goal |", "|---|---|---|",
        "| stacked step against the same SAEs alone, largest parameter difference after 10 steps, float64 / float32 | "
        f"{c['stacked_vs_alone']['float64']['max_abs_diff']:.2g} / {c['stacked_vs_alone']['float32']['max_abs_diff']:.2g}"
        " | ≤ 1e-7 / 1e-4 |",
        "| bf16 autocast against fp32, largest relative error (AEN and TopK; loss, reconstruction, gradients, short run)"
        f" | {bf16:.2g} | ≤ 0.05 |",
        f"| {sw['members']} stacked SAEs ({sw['shape']['d_in']} × {sw['shape']['d_sae']}, batch {sw['shape']['batch']}) "
        f"against the same trained one after another | {sw['speedup']:.1f}× ({1e3 * sw['sweep_s_per_step']:.1f} ms per "
        f"step of all {sw['members']}) | ≥ 10× |",
        "| Pythia-70M-shaped SAE (512 × 4,096, batch 8,192, bf16), AEN, rows read from host memory | "
        f"{py['tokens_per_s'] / 1e6:.2f}M tokens/s ({tok_dev / 1e6:.2f}M from GPU memory) | ≥ 1M tokens/s |",
        "| Llama-3.1-8B SAE shape (4,096 × 131,072, batch 4,096), AEN, fp32 | "
        f"{f32['ms_per_step']:.0f} ms per step, {100 * f32['fraction_of_ceiling']:.0f}% of the fp32 matmul ceiling | |",
        f"| the same, bf16 autocast | {b16['ms_per_step']:.1f} ms per step, {100 * b16['fraction_of_ceiling']:.0f}% of "
        f"the bf16 ceiling ({100 * b16['fraction_of_planner_peak']:.0f}% of the datasheet peak); the planner predicted "
        f"{b16['planner_step_ms']:.1f} ms ({b16['measured_over_planner']:.2f}× slower than predicted), its peak memory "
        f"model {100 * (b16['planner_over_measured'] - 1):+.1f}% off the measured | |",
    ]
    return "\n".join(lines)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "correctness": stage_correctness, "sweep": stage_sweep, "pythia_tokens": stage_pythia_tokens,
    "llama_shape": stage_llama_shape, "pythia_slice": stage_pythia_slice, "reference": stage_reference,
}


def run_worker(args: argparse.Namespace) -> int:
    """``--stage NAME``: run one stage here and write its result (or its error) to ``--result``."""
    out = Path(args.out)
    try:
        if args.fail:
            raise RuntimeError(f"injected failure of stage {args.stage!r} (--inject-failure)")
        if args.hang:
            time.sleep(10**6)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = STAGE_FUNCTIONS[args.stage](device=args.device, dry=args.dry_run, out=out, deadline=args.deadline,
                                             work=args.work, steps=args.steps, sets=args.sets,
                                             parallel=args.parallel)
        payload: dict[str, Any] = {"result": result}
        rc = 0
    except BaseException as e:  # noqa: BLE001 - the error is the stage's result
        traceback.print_exc()
        payload = {"error": f"{type(e).__name__}: {e}"}
        rc = 1
    Path(args.result).write_text(json.dumps(payload, default=_jsonable))
    return rc


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------------------------
# The orchestrator (stdlib only: it never touches the GPU itself)
# --------------------------------------------------------------------------------------------------------------


def _run_logged(cmd: list[str], timeout: float, log: Path, *, env: dict[str, str] | None = None,
                session_log: TextIO | None = None, own_group: bool = True) -> tuple[int | None, str]:
    """Run ``cmd``, copying its output to stdout and ``log``, and stop it after ``timeout`` seconds. With
    ``own_group`` it runs in a process group of its own, and the whole group is stopped (a stage and anything it
    started); without, it stays in ours, so that stopping our group stops it too. Returns (exit code, or None when
    it was stopped, and the last lines of its output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
                            start_new_session=own_group, bufsize=1)
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        with log.open("a") as fh:
            for line in proc.stdout:
                sys.stdout.write(line)
                fh.write(line)
                if session_log is not None:
                    session_log.write(line)
                tail.append(line)
                del tail[:-20]

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        rc: int | None = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        if own_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
        rc = None
    t.join(timeout=5)
    return rc, "".join(tail[-8:]).strip()


def _numbers(obj: Any) -> list[float]:
    """Every finite number in a nested result."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)] if math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


def goals(stages: dict[str, Any], dry: bool) -> list[dict[str, Any]]:
    """The session's pass/fail lines, from the stage results (a failed stage's goals are missing values)."""
    def res(name: str) -> dict[str, Any]:
        return stages.get(name, {}).get("result") or {}

    c, s, p = res("correctness"), res("sweep"), res("pythia_tokens")
    out = [
        {"stage": "correctness", "name": "stacked step equals single SAEs (float64 and float32)",
         "value": max((v["max_abs_diff"] for v in c.get("stacked_vs_alone", {}).values()), default=None),
         "target": "<= " + ", ".join(f"{k} {v:g}" for k, v in STACK_TOL.items()),
         "pass": all(v["pass"] for v in c["stacked_vs_alone"].values()) if c else None, "applies": True},
        {"stage": "correctness", "name": "bf16 autocast against fp32 (relative errors)",
         "value": max((e for v in c.get("bf16_vs_fp32", {}).values() for e in v["relative_errors"].values()),
                      default=None),
         "target": "<= " + ", ".join(f"{k} {v:g}" for k, v in BF16_TOL.items() if k != "support_agreement")
                   + f"; TopK support agreement >= {BF16_TOL['support_agreement']:g}",
         "pass": all(v["pass"] for v in c["bf16_vs_fp32"].values()) if c else None, "applies": True},
        {"stage": "sweep", "name": "sweep over sequential, 32 members of the paper's synthetic shape",
         "value": s.get("speedup"), "target": f">= {SWEEP_GOAL:g}x",
         "pass": s["speedup"] >= SWEEP_GOAL if s else None, "applies": not dry},
        {"stage": "pythia_tokens", "name": "Pythia-70M-shaped SAE, bf16, tokens/s from cached activations (host)",
         "value": p.get("tokens_per_s"), "target": f">= {PYTHIA_GOAL_TOK_S:.0f} (on an H200)",
         "pass": p["tokens_per_s"] >= PYTHIA_GOAL_TOK_S if p else None, "applies": not dry},
    ]
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def orchestrate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    device = args.device or ("cpu" if dry else "cuda")
    budget = args.budget if args.budget is not None else (120 if dry else 450)
    chosen = [s for s in (args.stages.split(",") if args.stages else STAGES) if s]
    unknown = sorted(set(chosen + args.inject_failure + args.inject_hang) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    if args.sets:
        try:
            parse_sets(args.sets)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    limits = {k: v[1 if dry else 0] for k, v in LIMITS.items()}
    for item in args.limit:
        stage, _, secs = item.partition("=")
        if stage not in limits or not secs.replace(".", "", 1).isdigit():
            raise SystemExit(f"--limit {item!r}: expected STAGE=SECONDS with STAGE one of {sorted(limits)}")
        limits[stage] = float(secs)
    start = time.time()
    status = dict(dirty=bool(_git("status", "--porcelain", "--untracked-files=no")))
    summary: dict[str, Any] = {
        "summary_version": SUMMARY_VERSION, "dry_run": dry, "device": device, "budget_s": budget,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "commit": _git("rev-parse", "HEAD"), "uncommitted_changes": status["dirty"],
        "python": platform.python_version(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "stage_limits_s": limits, "stages": {}, "goals": [],
        "total_s": 0.0,
    }
    path = out / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    session_log = (out / "session.txt").open("a")
    try:
        for name in STAGES:
            if name not in chosen:
                continue
            elapsed = time.time() - start
            left = budget - elapsed
            limit = left if name == "reference" else min(limits[name], left)
            entry: dict[str, Any] = {"status": "skipped", "seconds": 0.0, "limit_s": round(max(limit, 0.0), 1),
                                     "error": None, "result": None}
            if limit < 1:
                entry["error"] = "budget spent before the stage could start"
            else:
                header = f"\n===== {name} (limit {limit:.0f} s, {left:.0f} s of the budget left) =====\n"
                sys.stdout.write(header)
                session_log.write(header)
                session_log.flush()
                with tempfile.TemporaryDirectory(prefix="gpu_session_") as tmp:
                    result_file = Path(tmp) / "result.json"
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--result",
                           str(result_file), "--out", str(out), "--device", device,
                           "--deadline", str(time.time() + limit)]
                    cmd += ["--dry-run"] if dry else []
                    cmd += ["--fail"] if name in args.inject_failure else []
                    cmd += ["--hang"] if name in args.inject_hang else []
                    cmd += ["--work", args.work] if args.work else []
                    cmd += ["--steps", str(args.steps)] if args.steps else []
                    cmd += ["--sets", args.sets] if args.sets else []
                    cmd += ["--parallel", str(args.parallel)] if args.parallel else []
                    cmd += ["--threads", str(args.threads)] if args.threads else []
                    t0 = time.time()
                    rc, tail = _run_logged(cmd, limit, Path(tmp) / "log.txt", env=env, session_log=session_log)
                    entry["seconds"] = round(time.time() - t0, 2)
                    payload = json.loads(result_file.read_text()) if result_file.is_file() else {}
                if rc is None:
                    entry.update(status="timeout", error=f"ran past its limit of {limit:.0f} s and was stopped")
                elif rc == 0 and "result" in payload:
                    entry.update(status="ok", result=payload["result"])
                else:
                    entry.update(status="failed",
                                 error=payload.get("error") or f"exit code {rc}; its output ends:\n{tail}")
            summary["stages"][name] = entry
            if name == "correctness" and entry["result"]:
                summary["env"] = entry["result"].get("env")
            summary["goals"] = goals(summary["stages"], dry)
            summary["total_s"] = round(time.time() - start, 1)
            _write_json(path, summary)
            line = f"-- {name}: {entry['status']} in {entry['seconds']:.1f} s" + (
                f" ({entry['error'].splitlines()[0]})" if entry["error"] else "") + "\n"
            sys.stdout.write(line)
            session_log.write(line)
    finally:
        session_log.close()
    print(f"\nsummary {path}  (total {summary['total_s']:.0f} s of {budget:.0f})")
    for g in summary["goals"]:
        mark = "PASS" if g["pass"] else ("FAIL" if g["pass"] is False else "----")
        value = "n/a" if g["value"] is None else f"{g['value']:.4g}"
        print(f"  {mark} {g['name']}: {value} (target {g['target']})" + ("" if g["applies"] else " [dry run]"))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for summary.json and the stages' files")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole session (default 450; 120 for a dry run)")
    ap.add_argument("--dry-run", action="store_true", default=os.environ.get("DRY_RUN", "0") not in ("", "0"),
                    help="every stage on the CPU at tiny sizes (also DRY_RUN=1)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu for a dry run)")
    ap.add_argument("--stages", default="", help=f"comma-separated subset of {list(STAGES)} (default: all)")
    ap.add_argument("--limit", action="append", default=[], metavar="STAGE=SECONDS",
                    help="change a stage's time limit (defaults: " + ", ".join(f"{k} {v[0]}" for k, v in LIMITS.items())
                    + " s; in a dry run " + ", ".join(f"{v[1]}" for v in LIMITS.values()) + ")")
    ap.add_argument("--inject-failure", action="append", default=[], metavar="STAGE",
                    help="make this stage fail (to test that a failure is recorded and the session goes on)")
    ap.add_argument("--inject-hang", action="append", default=[], metavar="STAGE",
                    help="make this stage hang (to test that its time limit stops it)")
    ap.add_argument("--work", default=None, help="checkpoints of the reference sets (default: a temporary folder)")
    ap.add_argument("--steps", type=int, default=None, help="reference sets: fewer steps (a smoke run)")
    ap.add_argument("--sets", default=None, metavar="STUDY:RHO:SEED,...",
                    help="reference sets to train, in order of priority (default: REFERENCE_SETS)")
    ap.add_argument("--parallel", type=int, default=None,
                    help=f"reference sets side by side (default {REFERENCE_PARALLEL}; 2 in a dry run)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every stage (0: torch's default)")
    # the worker side (one stage in its own process)
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    ap.add_argument("--fail", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hang", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        return run_worker(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
