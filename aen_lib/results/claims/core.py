"""Claims about results: each one a function from results to a :class:`Verdict`, with a counter-example that flips it.

A *claim* is a statement the book makes about its numbers ("with the pre-encoder bias at the data mean, TopK's dead
latents drop by more than 50 points at ρ = 0.9"). Here each claim is one function that takes a results frame and
returns a :class:`Verdict`: whether the statement holds, the numbers it used and a sentence the book can glue. Each
claim is registered with a *counter-example*: a function that takes the frame the claim was run on and returns a
copy changed so that the verdict must come out the other way. ``tests/test_claims.py`` runs every registered claim
on its counter-example and fails if any verdict does not flip, so a claim that cannot fail (an identity, a threshold
anything passes) is caught.

A verdict can also be *not testable* (``holds is None``): the frame lacks what the claim needs (a method, a matched
pair). Such a verdict says so in its sentence and is never counted as evidence either way.

This module holds the machinery (:class:`Verdict`, :class:`Claim`, :func:`register`, the registry ``CLAIMS``); the
claims themselves live in the package's topic modules (one file per question the book asks), all imported by
``aen_lib.results.claims``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

DEAD_MARGIN = 1.0
"""Points of dead % that a difference must exceed to count (the paper's own AEN dead % spans 0.7–2.1 over three
seeds on Pythia-70M, so a smaller gap between single runs is no evidence)."""

DEAD_COLUMN = "dead_pct_window"
DEAD_VARIANT = "no firing in the last complete dead window (10,000 steps × 256 samples = 2,560,000 samples)"
"""The dead-latent variant the reference-set claims use (:func:`aen_lib.training.train.final_metrics`)."""


@dataclass(frozen=True)
class Verdict:
    """What a claim says of one frame: ``holds`` (True, False, or None when not testable), the numbers it used and
    a sentence for the book."""

    claim: str
    holds: bool | None
    numbers: dict[str, Any]
    sentence: str

    @property
    def status(self) -> str:
        return {True: "holds", False: "does not hold", None: "not testable here"}[self.holds]


@dataclass(frozen=True)
class Claim:
    """A registered claim: its name, the statement, who makes it (``"paper"`` or ``"book"``), the function that
    judges a frame and the counter-example that must flip the verdict."""

    name: str
    statement: str
    source: str
    judge: Callable[..., Verdict]
    counterexample: Callable[[pd.DataFrame], pd.DataFrame]
    example: Callable[[], pd.DataFrame]
    needs: tuple[str, ...] = field(default=())

    def __call__(self, df: pd.DataFrame, **kwargs: Any) -> Verdict:
        missing = [c for c in self.needs if c not in df.columns]
        if missing:
            raise ValueError(f"claim {self.name!r} needs the columns {missing}; the frame has {sorted(df.columns)}")
        return self.judge(df, **kwargs)


CLAIMS: dict[str, Claim] = {}


def register(name: str, statement: str, *, source: str, counterexample: Callable[[pd.DataFrame], pd.DataFrame],
             example: Callable[[], pd.DataFrame], needs: tuple[str, ...] = ()) -> Callable[[Callable[..., Verdict]], Claim]:
    """Decorator: register ``judge`` as the claim ``name``. ``example()`` builds a small hand-made frame the claim
    can judge (so that its counter-example can be tried without any trained SAE); the real inputs are the reference
    sets."""
    if source not in ("paper", "book"):
        raise ValueError(f"source={source!r} must be 'paper' or 'book'")

    def wrap(judge: Callable[..., Verdict]) -> Claim:
        if name in CLAIMS:
            raise ValueError(f"a claim named {name!r} is already registered")
        CLAIMS[name] = Claim(name, statement, source, judge, counterexample, example, needs)
        return CLAIMS[name]

    return wrap




def over_seeds(name: str, frame: pd.DataFrame, **kwargs: Any) -> Verdict:
    """Judge the claim ``name`` on each seed of ``frame`` (a ``seed`` column) apart and combine the verdicts: it
    holds when it holds on every seed where it is testable, does not hold when it fails on any, and is not testable
    when no seed can test it. ``numbers`` gives ``per_seed`` ({seed: holds}), ``seeds``, ``holding`` and each seed's
    own ``verdicts`` ({seed: Verdict}); the sentence names the seeds on which it fails."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; registered: {sorted(CLAIMS)}")
    if "seed" not in frame.columns:
        raise ValueError(f"over_seeds({name!r}) needs a 'seed' column; the frame has {sorted(frame.columns)}")
    verdicts = {int(s): CLAIMS[name](g, **kwargs) for s, g in frame.groupby("seed")}
    if not verdicts:
        raise ValueError(f"over_seeds({name!r}): the frame has no rows")
    tested = {s: v.holds for s, v in verdicts.items() if v.holds is not None}
    failing = [s for s, h in tested.items() if h is False]
    holds = None if not tested else not failing
    seeds = sorted(verdicts)
    names = ", ".join(str(s) for s in seeds)
    if holds is None:
        sentence = f"{CLAIMS[name].statement}: not testable on seeds {names}."
    elif holds:
        sentence = (f"{CLAIMS[name].statement}: holds on every seed that tests it "
                    f"({len(tested)} of {len(seeds)}: seeds {', '.join(str(s) for s in sorted(tested))}).")
    else:
        sentence = (f"{CLAIMS[name].statement}: fails on seed{'s' if len(failing) > 1 else ''} "
                    f"{', '.join(str(s) for s in failing)} (holds on {sum(tested.values())} of {len(tested)} "
                    f"tested).")
    return Verdict(name, holds, {"per_seed": {s: v.holds for s, v in verdicts.items()}, "seeds": seeds,
                                 "holding": sum(bool(h) for h in tested.values()), "verdicts": verdicts}, sentence)
