"""Every claim the book makes about its results, as library functions that can fail.

``CLAIMS`` maps each claim's name to a :class:`Claim`: call it on a results frame to get a :class:`Verdict`
(``holds``: True, False or None when not testable; the numbers it used; a sentence to glue). Each claim carries a
hand-made ``example()`` frame and a ``counterexample`` that must flip its verdict (``tests/test_claims.py`` tries
every one). The machinery is in :mod:`aen_lib.results.claims.core`; the claims live in one module per topic:

* :mod:`aen_lib.results.claims.outlier` — the input mean and dead latents (the outlier study's reference sets);
* :mod:`aen_lib.results.claims.factorial` — the 2 × 2 factorial at matched L0: what the ℓ2 term and the adaptive weights
  each do to dead latents, per seed;
* :mod:`aen_lib.results.claims.synthetic` — the synthetic Figure 2 (the paper's caption, and the book's questions at larger ρ),
  and the checks chapter 6 stops on (a complete grid, TopK's L0 ≤ k, the dictionary statistics);
* :mod:`aen_lib.results.claims.paper_size` — chapter 6 beyond Figure 2: methods at nearby L0, AuxK, dead latents out of
  reach, shrinkage with and without adaptive weights;
* :mod:`aen_lib.results.claims.geometry` — chapters 2 and 3: the lasso's regions, paths and instability, and the elastic
  net's Lipschitz bound and grouping effect, measured against closed forms and scikit-learn;
* :mod:`aen_lib.results.claims.starvation` — chapter 1: TopK against ReLU + ℓ1 on small SAEs (dead latents, revival, reach);
* :mod:`aen_lib.results.claims.reweighting` — chapter 4: the irrepresentable condition, support recovery and shrinkage of the
  exact coding maps, the adaptive weights of one code, the closed-form bias and the Hoffman diagnostics;
* :mod:`aen_lib.results.claims.language_model` — chapter 8's committed SmolLM2 sets: whether the dead % settled, how it
  moved, λ1 against L0, the splice against mean ablation, and what kind of death TopK's is;
* :mod:`aen_lib.results.claims.sensitivity` — chapter 7: what the adaptive rule's settings do to starvation;
* :mod:`aen_lib.results.claims.scale` — chapter 10: the memory planner, two processes against one, a complete run;
* :mod:`aen_lib.results.claims.aen_sae` — chapter 5: the amortisation gap, encoder and target slopes, the warmup and the
  dictionary the AEN-SAE learns.
"""

from . import outlier, synthetic  # noqa: F401  (register their claims)
from . import paper_size  # noqa: F401
from . import aen_sae, geometry, reweighting, starvation  # noqa: F401
from . import factorial  # noqa: F401
from . import language_model, scale, sensitivity  # noqa: F401
from .core import CLAIMS, DEAD_COLUMN, DEAD_MARGIN, DEAD_VARIANT, Claim, Verdict, over_seeds, register

__all__ = ["CLAIMS", "DEAD_COLUMN", "DEAD_MARGIN", "DEAD_VARIANT", "Claim", "Verdict", "over_seeds", "register"]
