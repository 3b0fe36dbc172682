"""Chapter 6's headline check (TopK starves more latents than AEN at ρ = 0 and matched L0) can fail.

The check is the function ``check_topk_starves_more_than_aen`` defined in a cell of chapters/06_spiked_dictionary.ipynb;
it is read from the notebook (so the test checks the chapter's own code) and run on matched tables built by hand: the
right one passes, and each deliberately broken one fails with a message naming the problem.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "06_spiked_dictionary.ipynb"
NAME = "check_topk_starves_more_than_aen"


def _load_check():
    nb = nbformat.read(CHAPTER, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == NAME]
        if defs:
            ns: dict = {}
            exec(compile(ast.Module(body=defs, type_ignores=[]), str(CHAPTER), "exec"), ns)
            return ns[NAME]
    raise AssertionError(f"{CHAPTER.name} defines no function {NAME}")


check = _load_check()


def _matched(rows: dict[tuple[float, str], tuple[float, float, float]]) -> pd.DataFrame:
    """(rho, method) -> (l0, dead_pct, dead_pct_window), as closest_to_target lays the matched table out."""
    return pd.DataFrame([{"rho": rho, "method": m, "l0": l0, "dead_pct": d, "dead_pct_window": w}
                         for (rho, m), (l0, d, w) in rows.items()])


# Figure 2 as the paper describes it: at ρ = 0 TopK leaves latents dead, AEN none; ReLU+l1 in between.
RIGHT = {(0.0, "topk"): (4.0, 12.0, 8.0), (0.0, "aen"): (4.3, 0.5, 0.0), (0.0, "relu_l1"): (4.1, 3.0, 1.0),
         (0.9, "topk"): (4.0, 40.0, 35.0), (0.9, "aen"): (4.2, 20.0, 15.0)}


def test_the_right_input_passes():
    found = check(_matched(RIGHT), target_l0=4.0)
    assert found == {"dead_pct": (12.0, 0.5), "dead_pct_window": (8.0, 0.0)}


def test_methods_swapped_fail():
    swapped = {(rho, {"topk": "aen", "aen": "topk"}.get(m, m)): v for (rho, m), v in RIGHT.items()}
    with pytest.raises(AssertionError, match="dead_pct: TopK 0.50% is not above AEN 12.00%"):
        check(_matched(swapped), target_l0=4.0)


def test_aen_without_adaptive_weights_fails():
    # With the adaptive weights switched off the AEN is a plain elastic net, which starves like TopK here.
    broken = dict(RIGHT)
    broken[(0.0, "aen")] = (4.2, 14.0, 9.0)
    with pytest.raises(AssertionError, match="not above AEN"):
        check(_matched(broken), target_l0=4.0)


def test_a_tie_fails_and_each_definition_is_checked():
    broken = dict(RIGHT)
    broken[(0.0, "aen")] = (4.3, 0.5, 8.0)  # fine in the paper's dead %, a tie over the last complete window
    with pytest.raises(AssertionError, match="dead_pct_window: TopK 8.00% is not above AEN 8.00%"):
        check(_matched(broken), target_l0=4.0)


def test_unmatched_sparsity_fails():
    # An AEN at L0 = 40 is not comparable with TopK at k = 4: fewer dead latents there say nothing.
    broken = dict(RIGHT)
    broken[(0.0, "aen")] = (40.0, 0.0, 0.0)
    with pytest.raises(AssertionError, match="aen at rho = 0.0 has L0 40.00, not matched"):
        check(_matched(broken), target_l0=4.0)


def test_a_missing_method_fails():
    broken = {k: v for k, v in RIGHT.items() if k != (0.0, "topk")}
    with pytest.raises(AssertionError, match="no topk row at rho = 0.0"):
        check(_matched(broken), target_l0=4.0)
