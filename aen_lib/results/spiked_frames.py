"""The committed synthetic sets as frames for the chapters (book: chapters 6 and 7): every SAE's records
(:func:`set_frames`), the outlier study's twins (:func:`outlier_frame`, over several ρ :func:`outlier_frames`), the step-0 measures (:func:`outlier_at_init`,
:func:`initial_reach`), the bias/centring equivalence and the seed ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from ..store import CHECKOUT, shown_path
from ..evaluation.metrics import latent_reach
from ..sae.config import SAEConfig
from ..sae.model import SAE
from ..data.sources import CentredSource
from .records import read_result
from .ledger import _short_commit
from .sets import check_set, committed_sets, set_study
from ..evaluation.metrics import outlier_severity
from .spiked_sets import EVAL_SAMPLES, LEGACY_RECOVERY_THRESHOLD, _study, eval_samples, set_name, step0_sae
from ..training.sweep import train_sweep
from ..training.train import TrainConfig


REPOSITORY_SETS = CHECKOUT / "reference"
"""Where the repository keeps its committed sets (a clone's ``reference/`` folder)."""


def set_frames(folders: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed sets as two tables: every trained SAE (:func:`aen_lib.results.records.records_frame` with ``rho``,
    one row per record, its set's name in ``set``) and every set's provenance (one row per set: ρ, seed, SAEs,
    device, CPU/GPU model, invocations, commits, first start and last end, wall and CPU hours, member-steps/s).
    Each set is checked first (:func:`check_set`)."""
    from .records import load_records, records_frame

    runs, provs = [], []
    for folder in folders:
        prov = check_set(folder)
        frame = records_frame(load_records(folder, pattern="*-*.json")).rename(columns={"data_rho": "rho"})
        if "firing_threshold" not in frame:  # records written before one threshold: held-out L0/support/reach at 1e-6
            frame["firing_threshold"] = LEGACY_RECOVERY_THRESHOLD
        runs.append(frame.assign(set=prov["set"], study=prov.get("study", "paper")))
        calls = prov["invocations"]
        cpu_s = [c["cpu_seconds"] for c in calls if c.get("cpu_seconds")]
        provs.append({
            "set": prov["set"], "study": prov.get("study", "paper"), "rho": prov["protocol"]["data"]["rho"], "seed": prov["protocol"]["data"]["seed"],
            "SAEs": prov["members"], "device": calls[-1]["device"], "hardware": calls[-1].get("gpu") or calls[-1]["cpu"],
            "invocations": len(calls), "commits": ", ".join(dict.fromkeys(_short_commit(c["commit"]) for c in calls)),
            "started": calls[0]["started"][:16], "ended": calls[-1]["ended"][:16],
            "wall hours": prov["wall_seconds"] / 3600, "CPU hours (logged)": sum(cpu_s) / 3600 if cpu_s else None,
            "member-steps/s": prov["member_steps_per_s"], "member-steps per CPU s": prov.get("member_steps_per_cpu_s"),
        })
    if not runs:
        raise ValueError("set_frames got no set folders; see committed_sets")
    twice = pd.DataFrame(provs).groupby(["study", "rho", "seed"])["set"].agg(list)
    twice = twice[twice.map(len) > 1]
    if len(twice):
        raise ValueError(f"several sets share a (study, ρ, seed): {twice.to_dict()}; pass one of each (e.g. only the CPU sets) "
                         "so that their SAEs are not averaged as if they were seeds")
    return pd.concat(runs, ignore_index=True), pd.DataFrame(provs)


def initial_reach(folder: str | Path) -> pd.DataFrame:
    """For every SAE of a committed set, which latents the data could reach at step 0: the SAE rebuilt from its
    config (its seed fixes the initialisation), b_dec set as the study sets it, on the set's
    :data:`EVAL_SAMPLES` fresh evaluation samples (centred for a centred study). One row per variant with
    ``init_dead_pct`` and ``init_negative_pct`` (:func:`aen_lib.evaluation.metrics.latent_reach`). Sets written before the
    records carried these fields get them here; for later sets the two agree with the records."""
    from .records import load_records

    prov = check_set(folder)
    spec = _study(prov.get("study", "paper"))
    data_cfg = SpikedDictionaryConfig.from_dict(prov["protocol"]["data"])
    data, x_eval, _ = eval_samples(data_cfg)
    mean = data.population_mean()
    if spec.inputs == "centred":
        x_eval = x_eval - mean
    rows = []
    for rec in load_records(folder, pattern="*-*.json"):
        reach = latent_reach(step0_sae(SAEConfig.from_dict(rec["sae_config"]), spec, mean), x_eval)
        rows.append({"variant": rec["variant"], "init_dead_pct": reach["eval_dead_pct"],
                     "init_negative_pct": reach["eval_negative_pct"]})
    return pd.DataFrame(rows)


MEAN_TREATMENTS = ("biasmean", "centred")
"""The outlier study's two ways of taking the input mean away, by study name: b_dec started at the data mean, and
b_dec at 0 on mean-centred inputs."""


def _treatment(treatment: str) -> str:
    if treatment not in MEAN_TREATMENTS:
        raise ValueError(f"treatment={treatment!r} is not a way of taking the mean away; choose one of {MEAN_TREATMENTS}")
    return treatment


def _missing_set(root: Path, studies: Sequence[str], rho: float, seed: int, device: str,
                 steps: int | None) -> tuple[list[Path], str | None]:
    """The set folders of ``studies`` at one (ρ, seed), and ``None``; or, for the first one not committed, the message
    that names it and the command that trains it."""
    folders = [root / (set_name(rho, seed, device, study) + (f"_steps{steps}" if steps else "")) for study in studies]
    for study, folder in zip(studies, folders):
        if not (folder / "provenance.json").is_file():
            return folders, (f"the outlier study at ρ = {rho:g}, seed {seed} needs the set {folder.name} under "
                             f"{shown_path(root)}; train it with python -m aen_lib.reference spiked --study "
                             f"{study} --rho {rho:g} --seed {seed}")
    return folders, None


def _outlier_sets(root: str | Path, rho: float, seed: int, device: str, steps: int | None,
                  treatment: str = "biasmean") -> tuple[list[Path], str | None]:
    """The outlier study's two set folders at one (ρ, seed), paper then ``treatment``, and ``None``; or, for the first
    one not committed, the message that names it and the command that trains it."""
    return _missing_set(Path(root), ("paper", _treatment(treatment)), rho, seed, device, steps)


def outlier_frame(root: str | Path, rho: float, seed: int = 0, device: str = "cpu",
                  steps: int | None = None, treatment: str = "biasmean") -> pd.DataFrame:
    """The SAEs of the outlier study at one (ρ, seed): the paper set's SAEs (b_dec at 0, raw inputs) and the
    ``treatment`` set's (``"biasmean"``: b_dec started at the mean; ``"centred"``: mean-centred inputs) side by side,
    one row per SAE (:func:`set_frames` columns, ``study``, and :func:`initial_reach`'s ``init_dead_pct`` /
    ``init_negative_pct``). Only the paper set's SAEs whose config the treatment set also trained are kept, so that
    every row has its twin. Raises ``ValueError`` naming the set that is not committed. ``steps`` reads smoke sets
    (``..._steps<N>``)."""
    folders, missing = _outlier_sets(root, rho, seed, device, steps, treatment)
    if missing:
        raise ValueError(missing)
    runs, _ = set_frames(folders)
    reach = pd.concat([initial_reach(f).assign(set=f.name) for f in folders], ignore_index=True)
    runs = runs.drop(columns=[c for c in ("init_dead_pct", "init_negative_pct") if c in runs.columns])
    runs = runs.merge(reach, on=["set", "variant"], how="left")
    twins = set(runs.loc[runs["study"] == treatment, "variant"])
    return runs[runs["variant"].isin(twins)].reset_index(drop=True)


def outlier_frames(root: str | Path, rhos: Sequence[float], seed: int = 0, device: str = "cpu",
                   steps: int | None = None, treatment: str = "biasmean") -> tuple[pd.DataFrame, dict[float, str]]:
    """:func:`outlier_frame` at each ρ of ``rhos`` whose two sets are committed, stacked (its ``rho`` column tells
    them apart), and for each ρ whose sets are not, the message that names the set missing and the command that
    trains it. Raises ``ValueError`` when ``rhos`` is empty or lists a ρ twice."""
    rhos = [float(r) for r in rhos]
    if not rhos:
        raise ValueError("outlier_frames needs at least one ρ")
    if len(set(rhos)) != len(rhos):
        raise ValueError(f"outlier_frames got a ρ twice: {rhos}")
    frames, missing = [], {}
    for rho in rhos:
        why = _outlier_sets(root, rho, seed, device, steps, treatment)[1]
        if why:
            missing[rho] = why
        else:
            frames.append(outlier_frame(root, rho, seed=seed, device=device, steps=steps,
                                        treatment=treatment).assign(rho=rho))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, missing


CENTRING_METRICS = ("l0", "ev", "mse", "dead_pct")
"""The logged metrics :func:`centring_at_size` compares over training."""


def centring_missing(root: str | Path, rho: float, seed: int = 0, device: str = "cpu",
                     steps: int | None = None) -> str | None:
    """``None`` when the three sets :func:`centring_histories` reads are committed at (ρ, seed); otherwise the message
    that names the first one missing and the command that trains it."""
    return _missing_set(Path(root), ("paper", "biasmean", "centred"), rho, seed, device, steps)[1]


def centring_histories(root: str | Path, rho: float, seed: int = 0, device: str = "cpu",
                       steps: int | None = None) -> pd.DataFrame:
    """The logged history of every SAE trained in all three sets of the outlier study at one (ρ, seed): ``paper``
    (b_dec at 0, raw inputs), ``biasmean`` (b_dec started at the mean) and ``centred`` (mean-centred inputs). A long
    frame: ``variant``, ``SAE`` (its label), ``method``, ``study``, ``step``, :data:`CENTRING_METRICS`, and the set's
    final dead % over the last window in ``dead_pct_window``. Raises ``ValueError`` naming a set that is not committed,
    when the sets share no SAE, or when one SAE was logged at different steps in different sets."""
    from .records import load_records

    studies = ("paper", "biasmean", "centred")
    folders, missing = _missing_set(Path(root), studies, rho, seed, device, steps)
    if missing:
        raise ValueError(missing)
    recs = {}
    for study, folder in zip(studies, folders):
        check_set(folder)
        recs[study] = {r["variant"]: r for r in load_records(folder, pattern="*-*.json")}
    shared = [v for v in recs["biasmean"] if v in recs["centred"] and v in recs["paper"]]
    if not shared:
        raise ValueError(f"the paper, biasmean and centred sets at ρ = {rho:g}, seed {seed} share no SAE config")
    parts = []
    for variant in shared:
        steps_seen = {s: [h["step"] for h in recs[s][variant]["history"]] for s in studies}
        if len({tuple(v) for v in steps_seen.values()}) > 1:
            raise ValueError(f"{variant}: the sets logged it at different steps; compare sets trained with one protocol")
        for s in studies:
            r = recs[s][variant]
            h = pd.DataFrame(r["history"])[["step", *CENTRING_METRICS]]
            parts.append(h.assign(variant=variant, SAE=recs["biasmean"][variant]["label"], method=r["method"], study=s,
                                  dead_pct_window=r["final"].get("dead_pct_window")))
    return pd.concat(parts, ignore_index=True)


def centring_at_size(histories: pd.DataFrame) -> pd.DataFrame:
    """The two remedies at the paper's size, SAE by SAE, from :func:`centring_histories`: one row per SAE in the
    columns of :func:`bias_centring_equivalence` (``SAE``, ``max_diff_<metric>``, the largest difference over the
    logged history between b_dec started at the mean and centred inputs, and ``max_diff_raw_<metric>``, between b_dec
    at the mean and the paper's start, for :data:`CENTRING_METRICS`) and each set's final dead % over the last window
    (``dead_paper``, ``dead_biasmean``, ``dead_centred``)."""
    rows = []
    for variant, h in histories.groupby("variant", sort=False):
        by = {s: part.set_index("step") for s, part in h.groupby("study")}
        row: dict[str, Any] = {"SAE": h["SAE"].iloc[0], "variant": variant, "method": h["method"].iloc[0]}
        for metric in CENTRING_METRICS:
            row[f"max_diff_{metric}"] = float((by["biasmean"][metric] - by["centred"][metric]).abs().max())
            row[f"max_diff_raw_{metric}"] = float((by["biasmean"][metric] - by["paper"][metric]).abs().max())
        for s in ("paper", "biasmean", "centred"):
            row[f"dead_{s}"] = float(by[s]["dead_pct_window"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def outlier_at_init(rhos: Sequence[float], *, seed: int = 0, k: int = 32, samples: int = EVAL_SAMPLES,
                    n: int = 256, m: int = 1024, data_k: int = 16) -> pd.DataFrame:
    """The outlier measures at step 0, before any training, for each ρ of the spiked-dictionary protocol (paper size
    by default): the outlier severity ||mean|| / ||std|| of the inputs, and for one SAE initialised as every SAE of
    seed ``seed`` is (uniform encoder, b_dec 0) the % of latents out of reach (pre-activation ≤ 0 on every one of
    ``samples`` fresh samples) and, for TopK with ``k``, the % never among the k largest (dead at step 0); then the same
    with b_dec started at the data mean. One row per ρ."""

    rows = []
    for rho in rhos:
        data, x, _ = eval_samples(SpikedDictionaryConfig(n=n, m=m, k=data_k, rho=float(rho), seed=seed), samples)
        mean = data.population_mean()
        sae = SAE(SAEConfig(n, m, architecture="topk", k=k, seed=seed))
        zero = latent_reach(sae, x)
        sae.set_b_dec_(mean)
        at_mean = latent_reach(sae, x)
        rows.append({"rho": float(rho), "outlier_severity": outlier_severity(x), "mean_norm": float(mean.norm()),
                     "out_of_reach_pct": zero["eval_negative_pct"], "topk_dead_pct": zero["eval_dead_pct"],
                     "out_of_reach_pct_at_mean": at_mean["eval_negative_pct"],
                     "topk_dead_pct_at_mean": at_mean["eval_dead_pct"]})
    return pd.DataFrame(rows)


def bias_centring_equivalence(*, rho: float = 0.9, steps: int = 300, n: int = 64, m: int = 256, k: int = 4,
                              seed: int = 0) -> pd.DataFrame:
    """Train the same small SAEs (TopK, ReLU+ℓ1, AEN) three ways on one spiked stream: b_dec started at the data mean,
    b_dec at 0 on mean-centred inputs, and b_dec at 0 on the raw inputs (the paper). Returns one row per SAE with the
    largest difference over the logged history between the first two (``max_diff_<metric>``) and between the first
    and the third (``max_diff_raw_<metric>``), for L0, EV, MSE and dead %. With a tied pre-encoder bias the first
    two follow one path (their b_dec differ by the mean throughout), so their differences are rounding; the third
    shows the change is not a no-op."""

    cfgs = [SAEConfig(n, m, architecture="topk", k=k, seed=seed),
            SAEConfig(n, m, architecture="relu_l1", l1=0.01, seed=seed),
            SAEConfig(n, m, architecture="aen", l1=0.01, l2=0.001, warmup_steps=steps // 5, ramp_steps=steps // 25,
                      seed=seed)]
    tcfg = TrainConfig(steps=steps, batch_size=64, log_every=max(1, steps // 10), dead_window_steps=max(1, steps // 5),
                       progress=False, seed=seed)
    dcfg = SpikedDictionaryConfig(n=n, m=m, k=k, rho=rho, seed=seed)
    mean = SpikedDictionaryData(dcfg).population_mean()
    runs = {"mean": train_sweep(cfgs, SpikedDictionaryData(dcfg), tcfg, b_dec_init=mean),
            "centred": train_sweep(cfgs, CentredSource(SpikedDictionaryData(dcfg), mean), tcfg),
            "raw": train_sweep(cfgs, SpikedDictionaryData(dcfg), tcfg)}
    rows = []
    for j, c in enumerate(cfgs):
        hist = {name: pd.DataFrame(r.members[j].history) for name, r in runs.items()}
        row: dict[str, Any] = {"SAE": c.label}
        for metric in ("l0", "ev", "mse", "dead_pct"):
            row[f"max_diff_{metric}"] = float((hist["mean"][metric] - hist["centred"][metric]).abs().max())
            row[f"max_diff_raw_{metric}"] = float((hist["mean"][metric] - hist["raw"][metric]).abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_frame(root: str | Path, rho: float, device: str = "cpu") -> pd.DataFrame:
    """One row per trained SAE of :data:`SEEDS_GRID` at one ρ and every committed seed (seed 0 from the paper set,
    restricted to the seeds grid's variants so that every seed is judged on the same SAEs; further seeds from the
    ``seeds`` sets), in :func:`set_frames`'s columns. Raises ``ValueError`` when no seeds set is committed at this ρ."""
    root = Path(root)
    folders = [f for f in committed_sets(root, device=device, study="paper") + committed_sets(root, device=device,
                                                                                               study="seeds")
               if read_result(f / "provenance.json", "provenance")["protocol"]["data"]["rho"] == rho]
    if not any(set_study(f) == "seeds" for f in folders):
        raise ValueError(f"no seeds set is committed at ρ = {rho:g} under {shown_path(root)}; train one with "
                         f"python -m aen_lib.results.reference spiked --study seeds --rho {rho:g} --seed 1")
    runs, _ = set_frames(folders)
    keep = set(runs.loc[runs["study"] == "seeds", "variant"])
    return runs[runs["variant"].isin(keep)].reset_index(drop=True)


def seed_ranges(root: str | Path, rho: float, device: str = "cpu",
                metrics: Sequence[str] = ("l0", "dead_pct_window", "eval_dead_pct", "ev")) -> pd.DataFrame:
    """The SAEs of :data:`SEEDS_GRID` at one ρ over every committed seed (:func:`seeds_frame`). One row per SAE
    (variant) with ``seeds`` (how many), and each metric's ``<m>_min``, ``<m>_max`` and ``<m>_mean`` over seeds.
    Raises ``ValueError`` when no seeds set is committed at this ρ."""
    runs = seeds_frame(root, rho, device)
    agg = runs.groupby(["variant", "method", "label"])[list(metrics)].agg(["min", "max", "mean"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["seeds"] = runs.groupby(["variant", "method", "label"])["seed"].nunique()
    return agg.reset_index()


def provenance_table(folders: Sequence[str | Path]) -> str:
    """A Markdown table of the committed sets' provenance (set, ρ, hardware, invocations, dates, wall and CPU hours,
    member-steps/s), as the README shows it: the README's numbers about the reference runs are this function's."""
    _, prov = set_frames(folders)
    lines = ["| set | ρ | seed | SAEs | hardware | invocations | started (UTC) | ended (UTC) | wall h | CPU h (logged) "
             "| member-steps/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in prov.to_dict("records"):
        cpu_h = r["CPU hours (logged)"]
        lines.append(f"| `{r['set']}` | {r['rho']:g} | {r['seed']} | {r['SAEs']} | {r['hardware']} ({r['device']}) "
                     f"| {r['invocations']} | {r['started'].replace('T', ' ')} | {r['ended'].replace('T', ' ')} "
                     f"| {r['wall hours']:.1f} | {'-' if pd.isna(cpu_h) else f'{cpu_h:.1f}'} "
                     f"| {r['member-steps/s']:.1f} |")
    return "\n".join(lines)
