"""What chapter 7 ("What stops starvation") reads off the committed synthetic sets, one call per question, so that the
chapter shows the call and the verdict rather than the bookkeeping: the factorial's verdicts per ρ
(:func:`factorial_verdicts`), whether each survives reading the other machine's copy of a cell trained twice
(:func:`other_copy_sentence`), the floor that two machines set (:func:`replicate_sentence`), and the outlier study
on mean-centred inputs against b_dec started at the mean (:func:`centring_study`).

The numbers come from :mod:`aen_lib.results.factorial`, :mod:`aen_lib.results.spiked_frames` and the claims of
:mod:`aen_lib.results.claims`; this module only judges and words them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..results.claims import CLAIMS, Verdict
from ..results.claims.outlier import outlier_explanation
from ..results.factorial import factorial_frame, replicate_spread, set_machine
from ..results.spiked_frames import centring_at_size, centring_histories, centring_missing, outlier_frame
from ..results.spiked_sets import set_name
from .plotting import architecture_label

__all__ = ["FACTORIAL_CLAIMS", "FACTORIAL_METRICS_JUDGED", "CentringStudy", "centring_studies", "centring_study",
           "factorial_verdicts",
           "other_copy_sentence", "replicate_sentence", "verdict_key"]

FACTORIAL_CLAIMS = ("factorial_l2_lowers_death", "factorial_adaptive_lowers_death", "factorial_adaptive_smaller_than_l2")
"""The factorial's three claims, judged at every ρ on every metric of :data:`FACTORIAL_METRICS_JUDGED`."""

FACTORIAL_METRICS_JUDGED = ("dead_pct_window", "eval_dead_pct")
"""Dead % over the last complete window and on fresh samples."""


def verdict_key(claim: str, metric: str, rho: float) -> str:
    """The name a factorial verdict is glued under: ``l2_lowers_death_dead_0_9`` for the ℓ2 claim on the last window at
    ρ = 0.9."""
    return f"{claim.removeprefix('factorial_')}_{metric.split('_')[0]}_{rho:g}".replace(".", "_")


def factorial_verdicts(frames: Mapping[float, pd.DataFrame]) -> dict[str, Verdict]:
    """Every claim of :data:`FACTORIAL_CLAIMS` on every metric of :data:`FACTORIAL_METRICS_JUDGED` for each ρ's
    :func:`aen_lib.results.factorial.factorial_frame`, by :func:`verdict_key`."""
    return {verdict_key(name, metric, rho): CLAIMS[name](frame, metric=metric)
            for rho, frame in frames.items() for name in FACTORIAL_CLAIMS for metric in FACTORIAL_METRICS_JUDGED}


def other_copy_sentence(root: str | Path, rho: float, frame: pd.DataFrame, verdicts: Mapping[str, Verdict]) -> str:
    """Whether the factorial's verdicts at ``rho`` survive reading every cell trained twice (on two CPU models) from
    its other copy (:func:`aen_lib.results.factorial.factorial_frame` with ``replicate="other"``): one sentence naming
    each verdict that turns over, with its numbers from the other copy. ``frame`` is the factorial frame the
    ``verdicts`` were judged on."""
    copies = replicate_spread(frame)
    if not len(copies):
        return "No cell at this ρ was trained on two machines, so no verdict here can be read from another copy."
    other = factorial_verdicts({rho: factorial_frame(root, rho, replicate="other")})
    flipped = {k: v for k, v in other.items() if v.holds != verdicts[k].holds}
    head = f"Read with the other machine's copy of each of the {len(copies)} cells trained twice at this ρ"
    if not flipped:
        return head + ", every verdict is the same."
    return (head + ", " + "; ".join(
        f"the claim that {CLAIMS[v.claim].statement} on {'fresh samples' if '_eval_' in k else 'the last window'} "
        f"turns over to “{v.status}” ({v.sentence.rstrip('.')})" for k, v in flipped.items())
        + ". A verdict that turns over with the CPU model a run was trained on is not evidence either way.")


def replicate_sentence(root: str | Path, frames: Mapping[float, pd.DataFrame]) -> str:
    """The floor two machines set: how many factorial cells were trained twice, on which CPU models, torch versions
    and commits (from their provenance), and how far their L0 and last-window dead % lie apart."""
    reps = pd.concat([replicate_spread(f).assign(rho=r) for r, f in frames.items()], ignore_index=True)
    if not len(reps):
        return ("No factorial cell was trained twice on different machines, so the run-to-run floor of float rounding is "
                "not measured here.")
    pairs = [[set_machine(Path(root) / name) for name in sets] for sets in reps["replicate_sets"]]
    cpus = sorted({cpu for pair in pairs for m in pair for cpu in m[2]})
    same_torch = all(len({m[1] for m in pair}) == 1 for pair in pairs)
    same_commit = all(len({m[0] for m in pair}) == 1 for pair in pairs)
    methods = ", ".join(sorted({architecture_label(m) for m in reps["method"]}))
    return (f"{len(reps)} of the factorial's cells ({methods} at ρ = "
            f"{', '.join(f'{r:g}' for r in sorted(reps['rho'].unique()))}, seed "
            f"{', '.join(str(s) for s in sorted(reps['seed'].unique()))}) were trained twice, in two sets on different "
            f"CPU models ({' and '.join(cpus)}), with {'the same' if same_torch else 'different'} torch and "
            f"{'the same commit' if same_commit else 'different commits'}: their last-window dead % differ by up to "
            f"{reps['replicate_dead_diff'].max():.2f} points and their L0 by up to {reps['replicate_l0_diff'].max():.2f}, "
            "with the same config, seed and data, so the difference comes from the machine"
            f"{'' if same_commit else ' and the code version'} alone, grown over 50,000 steps. An effect of that size "
            "cannot be told apart from the machine it was trained on.")


@dataclass
class CentringStudy:
    """The outlier study on mean-centred inputs at one ρ (:func:`centring_study`)."""

    rho: float
    histories: pd.DataFrame
    """:func:`aen_lib.results.spiked_frames.centring_histories`: every SAE's logged history in the three sets."""
    table: pd.DataFrame
    """:func:`aen_lib.results.spiked_frames.centring_at_size`: one row per SAE."""
    verdicts: dict[str, Verdict]
    """``same`` (``centring_equals_biasmean``), ``removal`` (``mean_removal_cuts_death`` on the centred twins) and
    ``aen_mean`` (``aen_starves_less_at_matched_l0`` with every SAE on centred inputs)."""
    explanation: str
    """The answer to "which explanation?" with this remedy, set beside the answer with b_dec at the mean."""
    machines: str
    """Which CPU models trained the two remedies' sets, and their end-of-training gap beside the machines' floor."""


def centring_study(root: str | Path, rho: float, *, with_mean: Mapping[str, Verdict] | None = None,
                   floor: pd.DataFrame | None = None, steps: int | None = None) -> CentringStudy:
    """Read the outlier study's three sets at one ρ, seed 0 (``paper``, ``biasmean``, ``centred``) and judge the
    centred one: do the two remedies train the same SAE, does centring cut death, does AEN still starve less at
    matched L0. ``with_mean`` holds the same question's verdicts with b_dec at the mean (keys ``removal`` and
    ``aen_mean``), to say whether the answer changes; ``floor`` is a :func:`aen_lib.results.factorial.replicate_spread`
    frame (with a ``rho`` column, if it is to be named), the gap two machines alone set. Raises ``ValueError`` naming a set that is not committed."""
    histories = centring_histories(root, rho, steps=steps)
    table = centring_at_size(histories)
    at = outlier_frame(root, rho, steps=steps, treatment="centred")
    verdicts = {"same": CLAIMS["centring_equals_biasmean"](table),
                "removal": CLAIMS["mean_removal_cuts_death"](at),
                "aen_mean": CLAIMS["aen_starves_less_at_matched_l0"](at[at["study"] == "centred"])}
    explanation = outlier_explanation(verdicts["removal"], verdicts["aen_mean"], treatment="centred")
    if with_mean is None:
        explanation += f" (There is no b_dec-at-the-mean answer at ρ = {rho:g} to set beside it.)"
    elif (with_mean["removal"].holds == verdicts["removal"].holds
          and with_mean["aen_mean"].holds == verdicts["aen_mean"].holds
          and with_mean["aen_mean"].numbers.get("beats") == verdicts["aen_mean"].numbers.get("beats")):
        explanation += " Every verdict, and so the answer, is the one given with b_dec started at the mean."
    else:
        explanation += (" The answer differs from the one given with b_dec started at the mean: "
                        + outlier_explanation(with_mean["removal"], with_mean["aen_mean"]))
    cpu = {st: ", ".join(set_machine(Path(root) / (set_name(rho, 0, study=st) + (f"_steps{steps}" if steps else "")))[2])
           for st in ("biasmean", "centred")}
    gap = float((table["dead_biasmean"] - table["dead_centred"]).abs().max())
    if cpu["biasmean"] == cpu["centred"]:
        machines = (f"Both sets were trained on one CPU model ({cpu['centred']}); at the end of training their dead % "
                    f"differ by up to {gap:.2f} points.")
    else:
        machines = (f"The biasmean set was trained on {cpu['biasmean']}, the centred set on {cpu['centred']}, so their "
                    f"differences also hold the rounding of different kernels: at the end of training their dead % "
                    f"differ by up to {gap:.2f} points, "
                    + (f"where the factorial's SAEs trained twice on different machines differ by up to "
                       f"{floor['replicate_dead_diff'].max():.2f}"
                       + (f" (at ρ = {', '.join(f'{r:g}' for r in sorted(floor['rho'].unique()))}, the only ρ with such "
                          f"pairs)" if "rho" in floor.columns else "") + "."
                       if floor is not None and len(floor) else
                       "and no SAE of the factorial was trained twice to measure that gap alone."))
    return CentringStudy(float(rho), histories, table, verdicts, explanation, machines)


def centring_studies(root: str | Path, rhos: Sequence[float], *, with_mean: Mapping[float, Mapping[str, Verdict]],
                     floor: pd.DataFrame | None = None, steps: int | None = None
                     ) -> tuple[dict[float, CentringStudy], dict[float, str]]:
    """:func:`centring_study` at every ρ of ``rhos`` whose sets are committed, and for the others the message that
    names the missing set and the command that trains it."""
    done, missing = {}, {}
    for rho in map(float, rhos):
        why = centring_missing(root, rho, steps=steps)
        if why:
            missing[rho] = why
        else:
            done[rho] = centring_study(root, rho, with_mean=with_mean.get(rho), floor=floor, steps=steps)
    return done, missing
