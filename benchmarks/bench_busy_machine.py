"""Benchmark: SAE training steps and chapter 1 on a machine where another process keeps one core busy.

torch's OpenMP worker threads spin-wait between parallel regions (GNU OpenMP spins 300,000 times before it sleeps when
no wait policy is set, and for minutes with ``OMP_WAIT_POLICY=ACTIVE``). When another process occupies one of the
cores, a 2-thread step has to wait for a worker that the scheduler has parked behind the busy process, and small steps
become tens of times slower. ``OMP_WAIT_POLICY=PASSIVE`` makes idle workers sleep instead of spinning: the entry points
(``aen-train``, the chapters' parameter check, this benchmark's child processes) set it with
``aen_lib.configure_openmp()`` before torch loads. This script measures the effect; it is not a test (timings depend on
the machine).

Each configuration runs in a fresh Python process (the wait policy is read when ``import torch`` loads the OpenMP
runtime). Wait policies (``--policies``):

* ``PASSIVE``: nothing in the environment; the child calls ``aen_lib.configure_openmp()``, so this measures the
  protection as the library ships it.
* ``ACTIVE``: ``OMP_WAIT_POLICY=ACTIVE`` (configure_openmp keeps a policy the user set).
* ``default``: torch's own behaviour, ``GOMP_SPINCOUNT=300000``, libgomp's spin count when no policy is set (a spin
  setting in the environment also makes configure_openmp leave the policy unset).

Two parts:

* ``steps``: median milliseconds of one ReLU+l1 training step for threads {1, 2} x the policies
  x {idle, one core busy}, at chapter 1's shape (n 64, m 256, batch 256) and at a large shape
  (n 512, m 4096, batch 4096) so that the choice does not cost the big runs.
* ``chapter``: wall-clock seconds of chapter 1 under papermill (``params/ci`` profile by default) with one core busy
  and idle, with 2 threads and the chapter's own setup (``PASSIVE``, as with the Makefile) and with torch's defaults.

"One core busy" is a child process running ``while True: pass``. "Idle" means no load started by this script: on a
shared machine other jobs may still run, so compare numbers from one run only.

Usage:  python benchmarks/bench_busy_machine.py [steps|chapter|all] [--repeats 20] [--policies ACTIVE,PASSIVE]
        [--profile ci] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEP_CODE = r"""
import sys, time
import aen_lib
aen_lib.configure_openmp()  # as the entry points do: before torch loads; a wait setting in the environment is kept
import torch
from aen_lib import SAE, SAEConfig
from aen_lib.training.train import TrainConfig, Trainer
n, m, b, reps = (int(v) for v in sys.argv[1:5])
torch.manual_seed(0)
x = torch.randn(b, n)
class Fixed:
    def sample(self, batch_size): return x
    def state_dict(self): return {}
    def load_state_dict(self, s): pass
sae = SAE(SAEConfig(d_in=n, d_sae=m, architecture="relu_l1", l1=1e-3))
tr = Trainer(sae, Fixed(), TrainConfig(steps=10**9, batch_size=b, progress=False))
for _ in range(3):
    tr.train_step()
times = []
for _ in range(reps):
    t0 = time.perf_counter(); tr.train_step(); times.append(time.perf_counter() - t0)
times.sort()
print(1e3 * times[len(times) // 2])
"""

SHAPES = {"chapter 1 (n64 m256 B256)": (64, 256, 256), "large (n512 m4096 B4096)": (512, 4096, 4096)}


@contextlib.contextmanager
def busy_core(active: bool):
    """Keep one core busy with a spinning Python process while the block runs (if ``active``)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if active else None
    try:
        if proc is not None:
            time.sleep(0.5)  # let it start spinning
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


POLICIES = {
    "PASSIVE": {},  # configure_openmp() in the child sets OMP_WAIT_POLICY=PASSIVE
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "default": {"GOMP_SPINCOUNT": "300000"},  # libgomp's own spin count without a policy; configure_openmp stays out
}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _env(threads: int | None, policy: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *WAIT_VARIABLES):
        env.pop(key, None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update(POLICIES[policy])
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def step_ms(shape: tuple[int, int, int], threads: int, policy: str, reps: int) -> float:
    n, m, b = shape
    reps = reps if n * m * b < 10**8 else max(3, reps // 5)
    out = subprocess.run([sys.executable, "-c", STEP_CODE, str(n), str(m), str(b), str(reps)], env=_env(threads, policy),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_steps(reps: int, shapes: list[str], rounds: int, policies: list[str]) -> list[dict]:
    """Every configuration once per round, rounds interleaved (so that a slow spell of a shared machine hits all
    configurations alike); reports the median over rounds of each configuration's median step time."""
    configs = [(name, shape, busy, threads, policy) for name, shape in SHAPES.items() if name.split()[0] in shapes
               for busy in (False, True) for threads in (1, 2) for policy in policies]
    times: dict[tuple, list[float]] = {c[:1] + c[2:]: [] for c in configs}
    for r in range(rounds):
        for name, shape, busy, threads, policy in configs:
            with busy_core(busy):
                times[(name, busy, threads, policy)].append(step_ms(shape, threads, policy, reps))
        print(f"round {r + 1}/{rounds} done", flush=True)
    rows = []
    print(f"{'shape':>26} {'load':>11} {'threads':>7} {'policy':>8} {'ms/step (median)':>17} {'all rounds':>30}")
    for (name, busy, threads, policy), ms in times.items():
        load = "1 core busy" if busy else "idle"
        med = sorted(ms)[len(ms) // 2]
        rows.append({"shape": name, "load": load, "threads": threads, "policy": policy, "ms": med, "rounds": ms})
        print(f"{name:>26} {load:>11} {threads:>7} {policy:>8} {med:17.2f} {' '.join(f'{v:.1f}' for v in ms):>30}")
    return rows


def chapter_seconds(profile: str, threads: int | None, policy: str) -> float:
    name = "01_feature_starvation"
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(threads, policy)
        cmd = [sys.executable, "-m", "papermill", str(ROOT / "chapters" / f"{name}.ipynb"), str(Path(tmp) / "out.ipynb"),
               "--kernel", "python3", "--cwd", str(ROOT / "chapters"), "--no-progress-bar",
               "-p", "results_root", str(Path(tmp) / "results")]
        if profile != "default":
            cmd += ["-f", str(ROOT / "params" / profile / f"{name}.yaml")]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def bench_chapter(profile: str) -> list[dict]:
    rows = []
    print(f"\nchapter 1 under papermill, profile {profile!r}")
    print(f"{'settings':>44} {'load':>12} {'seconds':>8}")
    settings = {"2 threads, chapter setup (PASSIVE)": (2, "PASSIVE"),
                "torch defaults (2 threads, default spinning)": (None, "default")}
    for label, (threads, policy) in settings.items():
        for busy in (False, True):
            with busy_core(busy):
                s = chapter_seconds(profile, threads, policy)
            load = "1 core busy" if busy else "idle"
            rows.append({"settings": label, "load": load, "seconds": s})
            print(f"{label:>44} {load:>12} {s:8.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", nargs="?", default="all", choices=["steps", "chapter", "all"])
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per configuration (large shape: a fifth)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all step configurations")
    ap.add_argument("--shapes", default="chapter,large", help="comma-separated: chapter (1's shape), large")
    ap.add_argument("--policies", default="ACTIVE,PASSIVE", help=f"comma-separated, of: {', '.join(POLICIES)}")
    ap.add_argument("--profile", default="ci", help="params/<profile>/01_feature_starvation.yaml, or 'default'")
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args()
    policies = args.policies.split(",")
    if unknown := sorted(set(policies) - set(POLICIES)):
        ap.error(f"--policies: unknown {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    print(f"{os.cpu_count()} CPUs visible; Python {sys.version.split()[0]}")
    result: dict = {}
    if args.part in ("steps", "all"):
        result["steps"] = bench_steps(args.repeats, args.shapes.split(","), args.rounds, policies)
    if args.part in ("chapter", "all"):
        result["chapter"] = bench_chapter(args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
