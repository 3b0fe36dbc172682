"""Every claim the book makes about its results, as library functions that can fail.

``CLAIMS`` maps each claim's name to a :class:`Claim`: call it on a results frame to get a :class:`Verdict`
(``holds``: True, False or None when not testable; the numbers it used; a sentence to glue). Each claim carries a
hand-made ``example()`` frame and a ``counterexample`` that must flip its verdict (``tests/test_claims.py`` tries
every one). The machinery is in :mod:`aen_lib.claims.core`; the claims live in one module per topic:

* :mod:`aen_lib.claims.outlier` — the input mean and dead latents (the outlier study's reference sets);
* :mod:`aen_lib.claims.synthetic` — the synthetic Figure 2 (the paper's caption, and the book's questions at larger ρ).
"""

from . import outlier, synthetic  # noqa: F401  (register their claims)
from .core import CLAIMS, DEAD_COLUMN, DEAD_MARGIN, DEAD_VARIANT, Claim, Verdict, register

__all__ = ["CLAIMS", "DEAD_COLUMN", "DEAD_MARGIN", "DEAD_VARIANT", "Claim", "Verdict", "register"]
