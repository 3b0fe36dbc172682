"""A reader's summary of the paper's claims the book tests (book: the page "What the book finds"): each claim judged
by its registered function on the committed reference sets, with its evidence (chapter, sets, seeds) and a status.

:func:`paper_verdicts` is the whole table. A row's status is *reproduced* when the claim holds on its evidence (over
every seed where there are several), *not reproduced* when it fails, and *not testable here* when the evidence cannot
judge it (nothing committed, or no pair of SAEs to compare). Claims whose evidence is a chapter's own run rather than
a committed set are listed with the chapter that judges them; those that need models this machine cannot load (the
paper's Pythia-70M and Llama-3.1-8B results) are listed as not testable here, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ...store import shown_path
from ..records import read_result
from .core import CLAIMS, Verdict, over_seeds

__all__ = ["STATUS", "paper_verdicts", "lm_verdicts", "LIVE_CLAIMS", "OUT_OF_REACH"]

STATUS = {True: "reproduced", False: "not reproduced", None: "not testable here"}

LIVE_CLAIMS = {
    "irc_matches_authors": "chapter 4 (its statistics of random supports at the paper's sizes)",
    "irc_fails_from_rho_03": "chapters 4 and 6 (their statistics of random supports at the paper's sizes)",
    "warmup_keeps_latents_alive": "chapter 5 (its run with and without the warm-up)",
}
"""Paper claims judged on a chapter's own run, not on committed sets: where to find their verdict."""

OUT_OF_REACH = [
    ("Pythia-70M: TopK has 12-14% dead latents at L0 32 and 128, AEN 1.3-3.1% (204.8M tokens)",
     "the model cannot be loaded offline; chapter 8's committed SmolLM2-135M sets run the protocol at 1/20 of the "
     "paper's tokens, where the same comparison is judged (its row above)"),
    ("Llama-3.1-8B: AEN 39-68% dead against TopK 80-88%",
     "the model cannot be loaded offline; chapter 10 plans the run and checks its memory and step time"),
]
"""Paper claims on language models this book cannot test on its machine, with the reason."""


def _rho(folder: Path) -> float:
    return float(read_result(folder / "provenance.json", "provenance")["protocol"]["data"]["rho"])


def paper_verdicts(root: str | Path, device: str = "cpu") -> pd.DataFrame:
    """One row per paper claim: ``claim``, ``statement``, ``evidence``, ``status``, ``measured`` (the verdict's
    sentence, or the reason it is not judged here). Reads only committed reference sets under ``root``."""
    from ..lm_tables import lm_frame, lm_matched_table
    from ..sets import committed_sets
    from ..spiked_frames import outlier_frame, seeds_frame, set_frames
    from ..spiked_sets import SPIKED_PAPER_TRAIN
    from .synthetic import dead_definitions, figure2_verdicts

    root = Path(root)
    rows: list[dict[str, Any]] = []
    dead = "dead_pct_window"
    dead_name = dead_definitions(**{k: SPIKED_PAPER_TRAIN[k] for k in ("steps", "log_every", "dead_window_steps",
                                                                       "batch_size")})[dead]

    def add(name: str, evidence: str, judge: Callable[[], Verdict | None]) -> None:
        try:
            v = judge()
        except (ValueError, FileNotFoundError) as e:  # the evidence is not committed in this copy
            v = Verdict(name, None, {}, f"Not judged: {e}")
        rows.append({"claim": name, "statement": CLAIMS[name].statement, "evidence": evidence,
                     "status": STATUS[v.holds], "measured": v.sentence})

    paper = committed_sets(root, device=device, study="paper")
    frame = set_frames(paper)[0] if paper else pd.DataFrame()
    by_rho = {_rho(f): f for f in paper}
    def paper_set(rho: float) -> Path:
        if rho not in by_rho:
            raise ValueError(f"no paper set is committed at ρ = {rho:g} under {shown_path(root)}")
        return by_rho[rho]

    sets0 = by_rho.get(0.0)
    f2 = (figure2_verdicts(frame, k=16, target_l0=16, dead=dead, dead_name=dead_name) if sets0 is not None else
          {n: Verdict(n, None, {}, f"Not judged: no paper set is committed at ρ = 0 under {shown_path(root)}")
           for n in ("fig2_topk_starves_more", "fig2_aen_has_none", "fig2_equal_reconstruction",
                     "fig2_adaptive_lasso_near_k")})
    for name, v in f2.items():
        if CLAIMS[name].source == "paper":
            rows.append({"claim": name, "statement": CLAIMS[name].statement,
                         "evidence": f"chapter 6, set {sets0.name if sets0 else 'spiked_paper_rho0_seed0'} (one seed)",
                         "status": STATUS[v.holds], "measured": v.sentence})
    for rho in (0.0, 0.9):
        add("aen_fewer_dead_than_topk_nearby_l0", f"chapter 6 'Over seeds', ρ = {rho:g}, seeds 0-2",
            lambda rho=rho: over_seeds("aen_fewer_dead_than_topk_nearby_l0", seeds_frame(root, rho, device),
                                       dead=dead, dead_name=dead_name))
    add("aen_fewer_dead_than_vanilla_nearby_l0", "chapter 6 'Over seeds', ρ = 0, seeds 0-2",
        lambda: over_seeds("aen_fewer_dead_than_vanilla_nearby_l0", seeds_frame(root, 0.0, device), dead=dead,
                           dead_name=dead_name))
    add("aen_fewer_dead_than_vanilla_nearby_l0", "chapter 6, set spiked_paper_rho0.9_seed0 (one seed)",
        lambda: paper_set(0.9) and CLAIMS["aen_fewer_dead_than_vanilla_nearby_l0"](
            frame[frame["rho"] == 0.9], dead=dead, dead_name=dead_name))
    for rho in sorted(set(by_rho) | {0.0, 0.9}):  # every committed paper set's ρ; 0 and 0.9 named even if missing
        add("adaptive_weights_cut_shrinkage", f"chapter 6, set spiked_paper_rho{rho:g}_seed0 (one seed)",
            lambda rho=rho: paper_set(rho) and CLAIMS["adaptive_weights_cut_shrinkage"](frame[frame["rho"] == rho]))
    for treatment, how in (("biasmean", "every SAE's b_dec started at the data mean"),
                           ("centred", "every SAE on mean-centred inputs")):
        for rho in (0.5, 0.9):  # the outlier study's ρ (chapter 7's outlier_rhos and centring_rhos)
            add("aen_starves_less_at_matched_l0", f"chapter 7, sets spiked_paper_rho{rho:g}_seed0 and "
                f"spiked_{treatment}_rho{rho:g}_seed0 ({how}; one seed)",
                lambda rho=rho, treatment=treatment: CLAIMS["aen_starves_less_at_matched_l0"](
                    (lambda s: s[s["study"] == treatment])(outlier_frame(root, rho, treatment=treatment))))
    lm_sets = committed_sets(root, study=None, kind="language_model")

    def lm_full() -> pd.DataFrame:
        if not lm_sets:
            raise ValueError(f"no language-model set is committed under {shown_path(root)}")
        f = lm_frame(lm_sets)
        return f[f["steps"] == f["steps"].max()]

    add("lm_topk_more_dead_than_aen_at_matched_l0", "chapter 8, SmolLM2-135M at 10.24M tokens per SAE: the "
        "full-length SAE closest to L0 32 per method (one seed)",
        lambda: CLAIMS["lm_topk_more_dead_than_aen_at_matched_l0"](lm_matched_table(lm_full())))
    add("lm_aen_weights_end_at_w_max", "chapter 8, every full-length SmolLM2-135M AEN SAE (one seed)",
        lambda: CLAIMS["lm_aen_weights_end_at_w_max"](lm_full()[["label", "method", "w_frac_max"]]))
    for name, where in LIVE_CLAIMS.items():
        rows.append({"claim": name, "statement": CLAIMS[name].statement, "evidence": where,
                     "status": "judged in its chapter", "measured": f"Judged by {where} on its own run; see the "
                                                                   "verdict there."})
    for statement, why in OUT_OF_REACH:
        rows.append({"claim": "", "statement": statement, "evidence": "", "status": "not testable here",
                     "measured": why})
    return pd.DataFrame(rows)


BOOK_STATUS = {True: "holds", False: "does not hold", None: "not testable here"}


def lm_verdicts(root: str | Path) -> pd.DataFrame:
    """The book's own claims about its committed language-model sets (chapter 8; :mod:`aen_lib.results.claims.language_model`),
    one row each: ``claim``, ``statement``, ``evidence`` (the sets), ``status`` (holds, does not hold, not testable
    here) and ``measured`` (the verdict's sentence). Reads only the sets under ``root``."""
    from ..lm_tables import lm_dead_windows, lm_frame
    from ..sets import committed_sets

    sets = committed_sets(root, study=None, kind="language_model")
    rows: list[dict[str, Any]] = []

    def add(name: str, evidence: str, frame: pd.DataFrame | None) -> None:
        v = (CLAIMS[name](frame) if frame is not None and len(frame)
             else Verdict(name, None, {}, f"Not judged: no committed set under {shown_path(root)} gives it evidence."))
        rows.append({"claim": name, "statement": CLAIMS[name].statement, "evidence": evidence,
                     "status": BOOK_STATUS[v.holds], "measured": v.sentence})

    frame = lm_frame(sets) if sets else pd.DataFrame()
    pilot = [f for f in sets if read_result(f / "provenance.json", "provenance")["study"] == "pilot"]
    windows = lm_dead_windows(pilot) if pilot else pd.DataFrame()
    curve = windows[["label", "step", "dead_pct"]] if len(windows) else None
    where = f"chapter 8, set {pilot[0].name}" if pilot else "chapter 8, the pilot set (not committed)"
    add("lm_dead_settled", where, curve)
    add("lm_dead_grows", where, curve)
    evaluated = frame.dropna(subset=["ce_patched"]) if "ce_patched" in frame else None
    names = ", ".join(sorted(set(evaluated["set"]))) if evaluated is not None and len(evaluated) else "none evaluated"
    add("lm_topk_dead_outcompeted", f"chapter 8, held-out tokens of {names}",
        evaluated[["method", "label", "heldout_dead_pct", "dead_out_of_reach_pct"]] if evaluated is not None else None)
    full = evaluated[evaluated["steps"] == frame["steps"].max()] if evaluated is not None else None
    full_names = ", ".join(sorted(set(full["set"]))) if full is not None and len(full) else "none evaluated"
    add("lm_splice_beats_mean_ablation", f"chapter 8, 512 held-out windows, the full-length SAEs of {full_names} "
        "(calibration runs not judged)",
        full[["label", "ce_clean", "ce_patched", "ce_mean_ablated"]] if full is not None else None)
    l1 = frame[frame["l1"] > 0] if len(frame) else None
    add("lm_l0_falls_with_l1", "chapter 8, every committed ℓ1-family SAE",
        l1[["method", "l1", "l2", "steps", "heldout_l0"]] if l1 is not None and len(l1) else None)
    return pd.DataFrame(rows)
