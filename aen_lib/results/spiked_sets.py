"""The paper-size synthetic reference sets (book: chapters 6 and 7; README, reference results): the protocol, the
grids and studies, and :func:`run_spiked`, which trains one set resumably (one process, or members split over
one-thread workers) and writes its records and provenance. The command line is :mod:`aen_lib.results.reference`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from ..store import CHECKOUT, atomic_write
from ..evaluation.dead import DEAD_THRESHOLD
from ..evaluation.metrics import outlier_severity, latent_reach, recovery_metrics
from ..sae.config import SAEConfig
from ..sae.model import SAE
from ..training.runlock import RunLock
from ..data.sources import CentredSource
from .records import member_record, variant_id, write_result
from .ledger import InvocationLedger, settled_invocations
from ..training.sweep import expand_grid, train_sweep
from ..training.train import TrainConfig


def _defaults(cls: type, *names: str) -> dict[str, Any]:
    """The field defaults of the config dataclass ``cls``: the one home of the paper's values."""
    return {name: cls.__dataclass_fields__[name].default for name in names}


PAPER_ADAPTIVE_RULE = _defaults(SAEConfig, "gamma", "ema_beta", "ref_top_pct")
"""The paper's adaptive-weight rule (γ, β, p): :class:`aen_lib.sae.config.SAEConfig`'s defaults."""
_ADAPTIVE = {name: [value] for name, value in PAPER_ADAPTIVE_RULE.items()}

REFERENCE_SPIKED_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.01, 0.005, 0.001]},
    "elastic_net": {"l1": [0.005], "l2": [0.001]},
    "adaptive_lasso": {"l1": [0.005], **_ADAPTIVE},
    "aen": {"l1": [0.01, 0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [8, 16, 32, 64, 128]},
    "topk_auxk": {"k": [8, 16, 32]},
}
"""The minimum grid of the paper-size synthetic reference sets (16 SAEs per ρ; the authors' full v1 grid is
:data:`aen_lib.training.sweep.AUTHORS_SPIKED_GRID`)."""

SEEDS_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.005]},
    "elastic_net": {"l1": [0.005], "l2": [0.001]},
    "aen": {"l1": [0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [8, 16, 32]},
    "topk_auxk": {"k": [32]},
}
"""The subset of :data:`REFERENCE_SPIKED_GRID` trained again at further seeds (8 SAEs), so that every verdict on the
paper's statements can give a seed range."""

OUTLIER_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.005, 0.001]},
    "aen": {"l1": [0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [16, 32]},
}
"""The SAEs trained again with the input mean taken out of the picture (6 SAEs; Simon, Adams & Zou 2026 tie feature
death to the activation mean): once with the pre-encoder bias started at the data mean, once on mean-centred inputs.
Their configs are those of the same SAEs in :data:`REFERENCE_SPIKED_GRID`, so each pairs with its plain twin."""


SENSITIVITY_AXES: dict[str, list[Any]] = {"gamma": [0.5, 1.0], "ema_beta": [0.999, 0.9999],
                                          "ema_init": ["one", "first_batch"]}
"""The adaptive rule's settings varied one grid at a time: γ, β and where the EMA starts (the authors' 1, or the first
batch's mean |h|), 8 combinations; the paper's setting is γ 0.5, β 0.9999, EMA from 1."""
SENSITIVITY_AEN_GRID = {"aen": {"l1": [0.005], "l2": [0.001], "ref_top_pct": [PAPER_ADAPTIVE_RULE["ref_top_pct"]],
                                **SENSITIVITY_AXES}}
SENSITIVITY_ADALASSO_GRID = {"adaptive_lasso": {"l1": [0.005], "ref_top_pct": [PAPER_ADAPTIVE_RULE["ref_top_pct"]],
                                                **SENSITIVITY_AXES}}


FACTORIAL_TARGET_L0 = 22.5
"""The matched L0 of the 2 × 2 factorial (near the paper-size AEN's 24.0 at ρ = 0); every SAE within 10% of it."""
FACTORIAL_TOLERANCE = 0.10


def _factorial_grid(l1: dict[str, list[float]]) -> dict[str, dict[str, list[Any]]]:
    """{ℓ1 alone, ℓ1 + ℓ2} × {fixed, adaptive weights} at the given λ1 lists (λ2 0.001, the paper's adaptive rule)."""
    return {"relu_l1": {"l1": l1["relu_l1"]}, "elastic_net": {"l1": l1["elastic_net"], "l2": [0.001]},
            "adaptive_lasso": {"l1": l1["adaptive_lasso"], **_ADAPTIVE},
            "aen": {"l1": l1["aen"], "l2": [0.001], **_ADAPTIVE}}


FACTORIAL_BRACKET_L1: dict[float, dict[str, list[float]]] = {
    0.9: {"relu_l1": [0.0011, 0.0016, 0.0022], "elastic_net": [0.0026, 0.0038, 0.0053],
          "adaptive_lasso": [0.00047, 0.00067, 0.00093], "aen": [0.00096, 0.0014, 0.0019]},
}
"""Calibration runs of the factorial at ρ = 0.9: for each method its λ1 guess for L0 = :data:`FACTORIAL_TARGET_L0`
(:func:`aen_lib.results.records.l1_for_l0` on the committed paper set of that ρ, two significant digits; a test keeps the two
equal) and the guess × 0.7 and × 1.4. At ρ = 0 the paper set already has all four methods within 10% of the target
at λ1 0.005, so no bracket is needed there."""

FACTORIAL_L1: dict[float, dict[str, list[float]]] = {
    0.0: {"relu_l1": [0.005], "elastic_net": [0.005], "adaptive_lasso": [0.005], "aen": [0.005]},
    0.9: {"relu_l1": [0.0018], "elastic_net": [0.0023], "adaptive_lasso": [0.0009], "aen": [0.0013]},
}
"""λ1 of each method at which the factorial is trained, per ρ: at ρ = 0 the paper set's L0 are 20.5, 24.3, 20.4 and
24.0 at λ1 0.005 (within 10% of 22.5; a test checks it against the records). At ρ = 0.9 each is
:func:`aen_lib.results.records.l1_for_l0` on the committed bracket set (``spiked_factorial_bracket_rho0.9_seed0``), two
significant digits (a test keeps the two equal): a guess that the factorial set itself must confirm, since L0 is not
linear in log λ1 (elastic net's 0.0023 lies just outside its bracket, whose smallest λ1 0.0026 gave L0 20.6)."""


@dataclass(frozen=True)
class Study:
    """What one kind of reference set trains: a grid, and how the inputs meet the SAE.

    ``b_dec_init``: ``"zero"`` (the paper and the authors' code) or ``"mean"`` (the pre-encoder bias starts at the
    exact population mean of the inputs, as SAELens and others start it at a data statistic). ``inputs``: ``"raw"``
    or ``"centred"`` (the exact population mean subtracted from every sample, training and evaluation alike)."""

    grid: dict[str, dict[str, list[Any]]] | None
    b_dec_init: str = "zero"
    inputs: str = "raw"
    doc: str = ""
    by_rho: dict[float, dict[str, dict[str, list[Any]]]] | None = None
    """A grid per ρ instead of one grid (calibrated λ1 differ with ρ)."""

    def grid_at(self, rho: float) -> dict[str, dict[str, list[Any]]]:
        """The grid trained at ``rho``; ``ValueError`` naming the ρ values it has when there is none."""
        if self.by_rho is None:
            assert self.grid is not None
            return self.grid
        if float(rho) not in self.by_rho:
            raise ValueError(f"this study has no grid at ρ = {rho:g} (it has ρ in {sorted(self.by_rho)}); at another ρ "
                             "calibrate λ1 first (the factorial_bracket study) and add its grid")
        return self.by_rho[float(rho)]


STUDIES: dict[str, Study] = {
    "paper": Study(REFERENCE_SPIKED_GRID, doc="the paper's statements"),
    "seeds": Study(SEEDS_GRID, doc="seed ranges: 8 SAEs of the paper grid at another seed"),
    "biasmean": Study(OUTLIER_GRID, b_dec_init="mean", doc="the outlier explanation: pre-encoder bias at the data mean"),
    "centred": Study(OUTLIER_GRID, inputs="centred", doc="the outlier explanation: mean-centred inputs"),
    "factorial_bracket": Study(None, by_rho={r: _factorial_grid(v) for r, v in FACTORIAL_BRACKET_L1.items()},
                               doc="calibration of the 2 × 2 factorial: 3 λ1 per method around the guess"),
    "factorial": Study(None, by_rho={r: _factorial_grid(v) for r, v in FACTORIAL_L1.items()},
                       doc="the 2 × 2 factorial {ℓ1, ℓ1+ℓ2} × {fixed, adaptive} at matched L0"),
    "sensitivity_aen": Study(SENSITIVITY_AEN_GRID, doc="the adaptive rule's γ, β and EMA start, AEN"),
    "sensitivity_adaptive_lasso": Study(SENSITIVITY_ADALASSO_GRID,
                                        doc="the adaptive rule's γ, β and EMA start, adaptive lasso"),
}
"""Every kind of spiked reference set, by the name that starts its folder (``spiked_<study>_rho<ρ>_seed<s>``)."""

SPIKED_PAPER_SAE = dict(d_in=256, d_sae=1024, **_defaults(SAEConfig, "warmup_steps", "ramp_steps"))
"""The paper-size SAE (n = 256, m = 1024) with the paper's warm-up T_w and ramp R (:class:`SAEConfig`'s defaults)."""
SPIKED_PAPER_TRAIN = _defaults(TrainConfig, "steps", "batch_size", "lr", "dead_window_steps", "log_every")
"""The paper's synthetic protocol (steps, batch, Adam's learning rate, dead window, log interval):
:class:`aen_lib.training.train.TrainConfig`'s defaults."""

LEGACY_RECOVERY_THRESHOLD = 1e-6
"""The firing threshold of the recovery measures (held-out L0, support, dead and out of reach on fresh samples) in
records without a ``firing_threshold`` field; later records use :data:`aen_lib.evaluation.dead.DEAD_THRESHOLD` (re-measured on the
sets at hand, the dead and out-of-reach shares are identical and L0 moves by at most 4e-4)."""
EVAL_SAMPLES = 8192
"""Fresh samples for dictionary and support recovery (:func:`aen_lib.evaluation.metrics.recovery_metrics`)."""
EVAL_SEED_OFFSET = 1_000_000
"""The recovery samples come from the set's dictionary with the sample stream reseeded to this + seed."""


def set_name(rho: float, seed: int, device: str = "cpu", study: str = "paper") -> str:
    """``spiked_<study>_rho<ρ>_seed<s>``, with ``_<device type>`` for sets trained off the CPU (their numbers differ in
    the last bits, so a CPU set and a GPU set of the same ρ are kept apart)."""
    _study(study)
    kind = torch.device(device).type
    return f"spiked_{study}_rho{rho:g}_seed{seed}" + ("" if kind == "cpu" else f"_{kind}")


def _study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"study={name!r} is not a reference study; choose one of {sorted(STUDIES)}")
    return STUDIES[name]


def eval_samples(data_cfg: SpikedDictionaryConfig, samples: int = EVAL_SAMPLES,
                 device: torch.device | str | None = None) -> tuple[SpikedDictionaryData, torch.Tensor, torch.Tensor]:
    """A set's fresh evaluation samples: the same dictionary as training, the sample stream reseeded to
    :data:`EVAL_SEED_OFFSET` + seed (no training batch is reused). Returns the data object, ``x [B, n]``, ``h [B, m]``."""
    data = SpikedDictionaryData(data_cfg, device=device)
    data.generator.manual_seed(EVAL_SEED_OFFSET + data_cfg.seed)
    x, h = data.sample(samples)
    return data, x, h


def step0_sae(cfg: Any, spec: Study, mean: torch.Tensor, device: torch.device | str | None = None) -> SAE:
    """The SAE of ``cfg`` at step 0 as its study starts it (its seed fixes the initialisation; b_dec at the mean
    for a ``biasmean`` study)."""
    sae = SAE(cfg, device=device)
    if spec.b_dec_init == "mean":
        sae.set_b_dec_(mean)
    return sae


def part_folder(work: Path, part: int, workers: int) -> Path:
    """Where part ``part`` of ``workers`` keeps its sweep and its invocations (``<work>/part<i>of<W>``)."""
    return work / f"part{part}of{workers}"


def _check_layout(work: Path, workers: int) -> None:
    """A set keeps the layout it was started with: one process (``sweep/``) or W parts (``part<i>of<W>/``)."""
    single = (work / "sweep" / "sweep.json").is_file()
    parts = sorted({p.name.split("of")[1] for p in work.glob("part*of*") if (p / "sweep" / "sweep.json").is_file()})
    if workers == 1 and parts:
        raise ValueError(f"{work} was started with --workers {parts[0]}; continue it with the same --workers")
    if workers > 1 and single:
        raise ValueError(f"{work} was started in one process; continue it without --workers (or with --workers 1)")
    if workers > 1 and parts and parts != [str(workers)]:
        raise ValueError(f"{work} was started with --workers {parts[0]}; continue it with the same --workers")


def _run_parts(work: Path, argv: Sequence[str], workers: int) -> None:
    """Start ``workers`` one-thread processes, part i training every ``workers``-th SAE from the i-th, and wait for
    all; each logs to its part folder. Raises ``RuntimeError`` naming a part that failed, with its log's tail."""
    repo = str(CHECKOUT)  # the parts import this very checkout's aen_lib
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    procs = []
    try:
        for i in range(workers):
            folder = part_folder(work, i, workers)
            folder.mkdir(parents=True, exist_ok=True)
            log = (folder / "log.txt").open("a")
            procs.append((i, folder, subprocess.Popen(
                [sys.executable, "-m", "aen_lib.results.reference", *argv, "--part", f"{i}/{workers}"],
                stdout=log, stderr=subprocess.STDOUT, env=env)))
        for i, folder, proc in procs:
            if proc.wait() != 0:
                tail = "".join((folder / "log.txt").read_text().splitlines(keepends=True)[-5:])
                raise RuntimeError(f"part {i} of {workers} failed (exit {proc.returncode}); its log "
                                   f"{folder / 'log.txt'} ends:\n{tail}")
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.terminate()


def study_source(spec: Study, data_cfg: SpikedDictionaryConfig, device: torch.device | str = "cpu"
                 ) -> tuple[Any, torch.Tensor]:
    """The training stream a study's SAEs see, and the exact population mean of the inputs: the spiked dictionary's
    own stream, or for a ``centred`` study that stream with the mean subtracted. Whatever reads a set's checkpoints
    back must pass this same stream, or the sweep's manifest refuses them."""
    data = SpikedDictionaryData(data_cfg, device=torch.device(device))
    mean = data.population_mean()  # exact E[x] of this dictionary (no sampling noise)
    return (CentredSource(data, mean) if spec.inputs == "centred" else data), mean


def run_spiked(rho: float, seed: int, *, out_root: Path, work_root: Path, device: str = "cpu", steps: int | None = None,
               command: str = "", progress: bool = True, study: str = "paper", workers: int = 1,
               part: tuple[int, int] | None = None, argv: Sequence[str] = ()) -> Path | None:
    """Train (or continue) the set and, once complete, write its records under ``out_root/<set>/``.

    ``workers > 1`` splits the SAEs over that many one-thread processes (part i trains every W-th SAE from the i-th
    on its own copy of the data stream, so each SAE sees the batches it would see in one process), which uses W cores
    where one process's threads scale poorly on these small matrices; ``argv`` is the command line the parts are
    started with (``part`` is set in them). A set keeps the layout it was started with. Returns the set folder when
    the records were written, None when the set is already there (nothing is overwritten: delete the folder to
    regenerate it) or when this call was one part."""
    spec = _study(study)
    name = set_name(rho, seed, device, study) + (f"_steps{steps}" if steps else "")
    out = out_root / name
    if (out / "provenance.json").exists():
        return None
    dev = torch.device(device)
    sae_base = dict(SPIKED_PAPER_SAE)
    grid = spec.grid_at(rho)
    configs = expand_grid(sae_base, grid, seeds=[seed])
    tcfg = TrainConfig(**{**SPIKED_PAPER_TRAIN, **({"steps": steps} if steps else {})}, progress=progress, seed=seed)
    data_cfg = SpikedDictionaryConfig(n=256, m=1024, k=16, rho=rho, seed=seed)
    source, mean = study_source(spec, data_cfg, dev)
    work = work_root / name
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer (processes, one thread each)")
    b_dec = mean if spec.b_dec_init == "mean" else None
    if part is not None:  # one part of a split set: train its SAEs, leave the records to the parent
        i, w = part
        folder = part_folder(work, i, w)
        mine = configs[i::w]
        with RunLock(folder):
            ledger = InvocationLedger(folder / "invocations", sweep_dir=folder / "sweep", device=dev)
            with ledger:
                ledger.record["part"] = f"{i}/{w}"
                train_sweep(mine, source, tcfg, device=dev, checkpoint_dir=folder / "sweep", b_dec_init=b_dec)
        return None
    _check_layout(work, workers)
    with RunLock(work):  # one process per set: a second one fails at once, naming the first
        if workers == 1:
            ledger = InvocationLedger(work / "invocations", sweep_dir=work / "sweep", device=dev)
            with ledger:
                result = train_sweep(configs, source, tcfg, device=dev, checkpoint_dir=work / "sweep",
                                     b_dec_init=b_dec)
            calls = ledger.settle(total=len(configs) * tcfg.steps)
            members = result.members
            wall_s = sum(c["seconds"] for c in calls)
        else:
            _run_parts(work, argv, workers)
            members, calls, part_seconds = [None] * len(configs), [], []
            for i in range(workers):
                folder = part_folder(work, i, workers)
                idx = list(range(len(configs)))[i::workers]
                # every chunk is finished: this loads the trained SAEs (done.pt) without training; with the source
                # the parts trained on (centred for a centred study), or the sweep's manifest refuses it
                res = train_sweep([configs[j] for j in idx], source, tcfg,
                                  device=dev, checkpoint_dir=folder / "sweep", b_dec_init=b_dec)
                for j, m in zip(idx, res.members):
                    members[j] = m
                part_calls = settled_invocations(folder / "invocations", len(idx) * tcfg.steps)
                calls += [{**c, "part": f"{i}/{workers}"} for c in part_calls]
                part_seconds.append(sum(c["seconds"] for c in part_calls))
            wall_s = max(part_seconds)  # the parts ran side by side
    total_s = wall_s
    total_steps = sum(c["member_steps"] for c in calls)
    cpu = [c for c in calls if c.get("cpu_seconds")]
    provenance = {
        "set": name,
        "command": command,
        "study": study,
        "protocol": {"sae": sae_base, "grid": grid, "train": tcfg.to_dict(), "data": data_cfg.to_dict(),
                     "b_dec_init": spec.b_dec_init, "inputs": spec.inputs},
        "members": len(configs),
        "workers": workers,
        "invocations": calls,
        "wall_seconds": round(total_s, 1),
        "member_steps": total_steps,
        "member_steps_per_s": round(total_steps / total_s, 2) if total_s > 0 else None,
        # CPU time is not inflated by pauses or by other jobs' waiting: the fairer speed on a shared machine
        "member_steps_per_cpu_s": (round(sum(c["member_steps"] for c in cpu) / sum(c["cpu_seconds"] for c in cpu), 2)
                                   if cpu else None),
    }
    eval_data, x_eval, h_eval = eval_samples(data_cfg, device=dev)  # recovery on fresh samples
    # the outlier measures (Simon, Adams & Zou 2026) of the inputs as the SAEs saw them
    inputs = {"outlier_severity_raw": outlier_severity(x_eval), "input_mean_norm": float(mean.norm())}
    if spec.inputs == "centred":
        x_eval = x_eval - mean
    inputs["outlier_severity"] = outlier_severity(x_eval)
    provenance["inputs"] = inputs
    tmp_files = {}
    for m in members:
        recovery = recovery_metrics(m.sae.to(dev).eval(), eval_data.dictionary, x_eval, h_eval)
        recovery.update(latent_reach(m.sae, x_eval))  # dead on fresh samples, and out of every sample's reach
        init = step0_sae(m.cfg, spec, mean, device=dev)  # which latents the data could reach at the start
        recovery.update({f"init_{k.removeprefix('eval_')}": v for k, v in latent_reach(init, x_eval).items()})
        rec = member_record(m.cfg, m.final, m.history, train_config=tcfg.replace(progress=False), data=data_cfg,
                            extra={"set": name, "skipped_steps": m.skipped_steps, **recovery,
                                   "eval_samples": EVAL_SAMPLES, "eval_seed": EVAL_SEED_OFFSET + seed,
                                   "firing_threshold": DEAD_THRESHOLD})
        tmp_files[f"{variant_id(m.cfg)}.json"] = rec
    out.mkdir(parents=True, exist_ok=False)
    for fname, rec in tmp_files.items():
        write_result(out / fname, "sae", rec)
    notes = work / "notes.md"  # what a person noted about the run (e.g. an invocation reconstructed by hand)
    if notes.is_file():
        atomic_write(out / "notes.md", lambda p: p.write_text(notes.read_text()))
    write_result(out / "provenance.json", "provenance", provenance)
    return out


def studies_table() -> str:
    """A Markdown table of every study (name, SAEs per set, ρ it is defined at, what it asks), as the README shows it."""
    lines = ["| study | SAEs per set | ρ | b_dec start | inputs | what it is for |", "|---|---|---|---|---|---|"]
    for name, st in STUDIES.items():
        grids = st.by_rho or {None: st.grid}
        sizes = sorted({len(expand_grid(dict(SPIKED_PAPER_SAE), g)) for g in grids.values() if g is not None})
        rhos = "any" if st.by_rho is None else ", ".join(f"{r:g}" for r in sorted(st.by_rho))
        lines.append(f"| `{name}` | {', '.join(map(str, sizes))} | {rhos} | {st.b_dec_init} | {st.inputs} | {st.doc} |")
    return "\n".join(lines)
