"""SAE metrics: sparsity, reconstruction, starvation, geometry, recovery and utilisation (book: paper facts, synthetic protocol).

All functions take torch tensors and work on any device; scalar results are returned as 0-dim tensors on the
input's device (call ``float(...)`` to log them) unless stated otherwise. Shapes: inputs ``x, x_hat [B, n]``
(leading dimensions are flattened into the batch), codes ``h [B, m]``, dictionaries ``[m, n]`` with atoms as rows.

Two explained-variance definitions are provided on purpose, because they differ:

* :func:`explained_variance`, the **paper's** per-batch metric (book: paper facts, synthetic protocol):
  EV = 1 − Σ_j Var_b(x_j − x̂_j) / Σ_j Var_b(x_j) with biased (1/B) variances over the batch. The residual is
  centred, so a constant bias error x̂ = x + c is not penalised (EV = 1).
* :class:`StreamingExplainedVariance`, a globally centred cross-batch metric (penalises a constant offset):
  EV = 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²), accumulated over batches in float64. A constant bias error lowers it.
  ``compute(centre_residual=True)`` gives the streaming version of the paper's residual-centred formula, which on a
  single batch equals :func:`explained_variance`.

Both, and the trainer's logged EV (:func:`aen_lib.training.train.batch_metrics`), evaluate the one formula
:func:`explained_variance_from_sums` on float64 token sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["outlier_severity", 
    "l0",
    "mse",
    "explained_variance",
    "explained_variance_from_sums",
    "StreamingExplainedVariance",
    "DeadLatentTracker",
    "shrinkage_ratio",
    "nearest_neighbour_coherence",
    "AtomMatch",
    "match_atoms",
    "support_metrics",
    "firing_rates",
    "firing_entropy",
    "gini",
    "top_mass",
    "feature_utilisation",
    "firing_density_histogram",
]

from .dead import DEAD_THRESHOLD, DeadLatentTracker, latent_reach  # noqa: E402,F401  (re-exported; the dead-latent module)


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _as_2d(name: str, t: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape [batch, features] (or more leading dims), got {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    return t.reshape(-1, t.shape[-1])


def _pair(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    x2, xh2 = _as_2d("x", x), _as_2d("x_hat", x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    if x.device != x_hat.device:
        raise ValueError(f"x is on {x.device} but x_hat is on {x_hat.device}")
    return x2, xh2


def _float(t: Tensor) -> Tensor:
    """Upcast half/bfloat16 to float32; keep float32/float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t.float()


# ----------------------------------------------------------------------------------------------------------
# sparsity and reconstruction (book: paper facts, synthetic protocol)
# ----------------------------------------------------------------------------------------------------------


def l0(h: Tensor, thresh: float = DEAD_THRESHOLD) -> Tensor:
    """Mean number of latents with |h| > ``thresh`` per sample (book: paper facts, synthetic protocol "L0"). ``h [B, m]`` → 0-dim."""
    h2 = _as_2d("h", h)
    return (h2.abs() > thresh).sum(dim=1).float().mean()


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error averaged over batch *and* dimensions (book: paper facts, model and loss, the training loss's MSE term)."""
    x2, xh2 = _pair(x, x_hat)
    d = _float(x2) - _float(xh2)
    return (d * d).mean()


def explained_variance_from_sums(count: int | Tensor, sum_x: Tensor, sum_sq_x: Tensor, sum_e: Tensor,
                                 sum_sq_e: Tensor, *, centre_residual: bool = True) -> Tensor:
    """Explained variance from token sums, the one EV formula of the library (book: paper facts, synthetic protocol
    "EV"); :func:`explained_variance`, :class:`StreamingExplainedVariance` and the trainer's logs all call it.

        EV = 1 − (Σ‖e‖²/N − c·‖Σe/N‖²) / (Σ‖x‖²/N − ‖Σx/N‖²),   e = x − x̂, sums over the N tokens.

    ``centre_residual=True`` (c = 1) is the paper's 1 − Σ_j Var(e_j) / Σ_j Var(x_j) with biased variances: a constant
    offset error is not counted. ``centre_residual=False`` (c = 0) centres only x, so a constant offset lowers EV.

    ``count``: N, a number or a tensor ``[...]``; ``sum_x, sum_e [..., n]``: Σ_tokens x and e per feature;
    ``sum_sq_x, sum_sq_e [...]``: Σ over tokens and features of x² and e². Pass float64 sums: the one-pass variance
    subtracts two nearly equal numbers when the mean is large. Returns ``[...]``; NaN or ±inf where Var(x) is 0.
    """
    n_tok = torch.as_tensor(count, dtype=sum_x.dtype, device=sum_x.device)
    mean_x = sum_x / n_tok.unsqueeze(-1)  # [..., n]
    var_x = sum_sq_x / n_tok - (mean_x * mean_x).sum(-1)
    err = sum_sq_e / n_tok
    if centre_residual:
        mean_e = sum_e / n_tok.unsqueeze(-1)
        err = err - (mean_e * mean_e).sum(-1)
    return 1.0 - err / var_x


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    """The paper's per-batch explained variance (book: paper facts, synthetic protocol "EV"):

        EV = 1 − Σ_j Var_b(x_j − x̂_j) / Σ_j Var_b(x_j),

    with biased variances (divide by B) over the batch rows (:func:`explained_variance_from_sums`, float64, in the
    inputs' float dtype, at least float32). Because the residual is centred, a constant offset error is ignored
    (x̂ = x + c gives EV = 1); use :class:`StreamingExplainedVariance` for the globally centred metric that penalises
    it. Returns NaN when the inputs have zero variance.
    """
    x2, xh2 = _pair(x, x_hat)
    x2, xh2 = _float(x2), _float(xh2)
    x64 = x2.to(torch.float64)  # [B, n]
    e64 = x64 - xh2.to(torch.float64)
    # centred first (two passes), so the sums keep every digit of the variance and a constant x gives exactly 0 / 0
    xc, ec = x64 - x64.mean(0), e64 - e64.mean(0)
    ev = explained_variance_from_sums(x64.shape[0], xc.sum(0), (xc * xc).sum(), ec.sum(0), (ec * ec).sum())
    return ev.to(x2.dtype)


class StreamingExplainedVariance:
    """Cross-batch explained variance with float64 accumulators (centred by the global mean, not per batch).

    ``compute()`` returns EV = 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²), expectations over all tokens seen. It penalises
    a constant bias error, unlike the paper's :func:`explained_variance`. ``compute(centre_residual=True)``
    returns 1 − (E‖e‖² − ‖E e‖²) / (E‖x‖² − ‖E x‖²) with e = x − x̂, the streaming form of the paper's formula.
    Accumulators live on the device of the first batch (or ``device``).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self._device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self.n_tokens = 0
        self._sum_x: Tensor | None = None  # [n] float64
        self._sum_e: Tensor | None = None  # [n] float64
        self._sum_sq_x: Tensor | None = None  # 0-dim float64
        self._sum_sq_e: Tensor | None = None  # 0-dim float64

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add a batch ``x, x_hat [B, n]``."""
        x2, xh2 = _pair(x, x_hat)
        dev = self._device if self._device is not None else x2.device
        x64 = x2.to(device=dev, dtype=torch.float64)
        e64 = x64 - xh2.to(device=dev, dtype=torch.float64)
        if self._sum_x is None:
            self._device = dev
            n = x64.shape[1]
            self._sum_x = torch.zeros(n, dtype=torch.float64, device=dev)
            self._sum_e = torch.zeros(n, dtype=torch.float64, device=dev)
            self._sum_sq_x = torch.zeros((), dtype=torch.float64, device=dev)
            self._sum_sq_e = torch.zeros((), dtype=torch.float64, device=dev)
        elif x64.shape[1] != self._sum_x.shape[0]:
            raise ValueError(f"x has {x64.shape[1]} features but earlier batches had {self._sum_x.shape[0]}")
        self._sum_x += x64.sum(0)
        self._sum_e += e64.sum(0)
        self._sum_sq_x += (x64 * x64).sum()
        self._sum_sq_e += (e64 * e64).sum()
        self.n_tokens += x64.shape[0]

    def compute(self, centre_residual: bool = False) -> Tensor:
        """EV over all tokens seen so far (float64, 0-dim). Raises ``ValueError`` before the first update."""
        if self._sum_x is None or self.n_tokens == 0:
            raise ValueError("StreamingExplainedVariance.compute() called before any update()")
        return explained_variance_from_sums(self.n_tokens, self._sum_x, self._sum_sq_x, self._sum_e, self._sum_sq_e,
                                            centre_residual=centre_residual)

    def state_dict(self) -> dict:
        """Accumulators for checkpointing."""
        return {
            "n_tokens": self.n_tokens,
            "sum_x": self._sum_x,
            "sum_e": self._sum_e,
            "sum_sq_x": self._sum_sq_x,
            "sum_sq_e": self._sum_sq_e,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore accumulators saved by :meth:`state_dict` (moved to this object's device if it has one)."""
        self.n_tokens = int(state["n_tokens"])
        dev = self._device
        for key in ("sum_x", "sum_e", "sum_sq_x", "sum_sq_e"):
            val = state[key]
            if val is not None and dev is not None:
                val = val.to(dev)
            setattr(self, "_" + key, val)
        if self._sum_x is not None and self._device is None:
            self._device = self._sum_x.device


# ----------------------------------------------------------------------------------------------------------
# shrinkage and decoder geometry (book: paper facts, synthetic protocol)
# ----------------------------------------------------------------------------------------------------------


def shrinkage_ratio(x: Tensor, x_hat: Tensor) -> Tensor:
    """Shrinkage ratio mean_b ‖x̂_b‖₁ / mean_b ‖x_b‖₁ (book: paper facts, synthetic protocol); < 1 means the reconstruction is shrunk."""
    x2, xh2 = _pair(x, x_hat)
    return _float(xh2).abs().sum() / _float(x2).abs().sum()


def nearest_neighbour_coherence(W_dec: Tensor, chunk_size: int = 4096) -> tuple[Tensor, dict[str, float]]:
    """Per-atom nearest-neighbour coherence max_{j≠i} |cos(d_i, d_j)| and its summary (book: paper facts, synthetic protocol).

    Args:
        W_dec: decoder ``[m, n]`` (rows = atoms; normalised here, zero rows give cosine 0).
        chunk_size: rows of the cosine matrix computed at once (memory ``chunk_size × m``).

    Returns:
        ``(per_atom [m], summary)`` with summary keys ``p10, p50, p90, mean, max`` (quantiles with linear
        interpolation, as numpy's default).
    """
    W = _as_2d("W_dec", W_dec)
    if W.dim() != 2 or W_dec.dim() != 2 or W.shape[0] < 2:
        raise ValueError(f"W_dec must be [m, n] with m >= 2, got shape {tuple(W_dec.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    W = _float(W)
    Wn = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    m = Wn.shape[0]
    out = torch.empty(m, dtype=Wn.dtype, device=Wn.device)
    for start in range(0, m, chunk_size):
        stop = min(start + chunk_size, m)
        c = (Wn[start:stop] @ Wn.T).abs()  # [chunk, m]
        rows = torch.arange(stop - start, device=Wn.device)
        c[rows, rows + start] = -1.0  # exclude self
        out[start:stop] = c.amax(dim=1)
    q = torch.quantile(out.double().cpu(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    summary = {
        "p10": float(q[0]),
        "p50": float(q[1]),
        "p90": float(q[2]),
        "mean": float(out.double().mean()),
        "max": float(out.max()),
    }
    return out, summary


# ----------------------------------------------------------------------------------------------------------
# recovery against a known dictionary (book: paper facts, synthetic protocol "Recovery metrics")
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AtomMatch:
    """Hungarian matching of learned atoms to true atoms on |cos| (book: paper facts, synthetic protocol)."""

    learned_idx: Tensor
    """[K] int64 learned-latent index of each matched pair (K = min(m_learned, m_true))."""
    true_idx: Tensor
    """[K] int64 true-atom index of each pair (sorted ascending)."""
    cos: Tensor
    """[K] float64 signed cosine of each pair."""
    mean_abs_cos: float
    """Mean matched |cos| (1 = perfect recovery up to permutation)."""
    dictionary_error: float
    """1 − mean matched |cos|."""
    frobenius_error: float
    """‖Ŵ_matched − D_matched‖_F / ‖D_matched‖_F on unit-normalised rows, signs not flipped."""


def match_atoms(W_learned: Tensor, D_true: Tensor) -> AtomMatch:
    """Match learned decoder rows to true atoms by the Hungarian algorithm on |cos| (book: paper facts, synthetic protocol).

    Uses ``scipy.optimize.linear_sum_assignment`` (maximising the total |cos|) on CPU in float64.
    ``W_learned [m_l, n]`` and ``D_true [m_t, n]`` may have different numbers of atoms.
    """
    Wl, Dt = _as_2d("W_learned", W_learned), _as_2d("D_true", D_true)
    if W_learned.dim() != 2 or D_true.dim() != 2:
        raise ValueError("W_learned and D_true must be 2-D [atoms, n]")
    if Wl.shape[1] != Dt.shape[1]:
        raise ValueError(f"W_learned has n={Wl.shape[1]} but D_true has n={Dt.shape[1]}; they must agree")
    Wn = Wl.detach().double().cpu()
    Dn = Dt.detach().double().cpu()
    Wn = Wn / Wn.norm(dim=1, keepdim=True).clamp_min(1e-12)
    Dn = Dn / Dn.norm(dim=1, keepdim=True).clamp_min(1e-12)
    C = Wn @ Dn.T  # [m_l, m_t]
    rows, cols = linear_sum_assignment(C.abs().numpy(), maximize=True)
    order = np.argsort(cols)
    rows, cols = rows[order], cols[order]
    li = torch.as_tensor(rows, dtype=torch.long)
    ti = torch.as_tensor(cols, dtype=torch.long)
    cos = C[li, ti]
    mean_abs = float(cos.abs().mean())
    fro = float((Wn[li] - Dn[ti]).norm() / Dn[ti].norm())
    return AtomMatch(li, ti, cos, mean_abs, 1.0 - mean_abs, fro)


def support_metrics(
    h: Tensor,
    h_true: Tensor,
    thresh: float = DEAD_THRESHOLD,
    assignment: AtomMatch | tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Support precision, recall, F1 and Jaccard of learned codes vs true codes (book: paper facts, synthetic protocol).

    A learned latent l "fires" when |h_l| > ``thresh``; a true atom t is active when h_true_t ≠ 0. With the
    assignment pairs (l_k, t_k) (default: identity, which needs m_l = m_t), a true positive is a sample where
    both l_k fires and t_k is active. Every other firing is a false positive (including any firing of an
    unmatched learned latent), every other true activation a false negative (including unmatched true atoms).
    Counts are pooled over the batch (micro average): precision = TP/(TP+FP), recall = TP/(TP+FN),
    F1 = 2PR/(P+R), Jaccard = TP/(TP+FP+FN); 0/0 gives NaN.

    Returns a dict with ``precision, recall, f1, jaccard, tp, fp, fn``.
    """
    h2, t2 = _as_2d("h", h), _as_2d("h_true", h_true)
    if h2.shape[0] != t2.shape[0]:
        raise ValueError(f"h and h_true must have the same batch size, got {h2.shape[0]} and {t2.shape[0]}")
    if assignment is None:
        if h2.shape[1] != t2.shape[1]:
            raise ValueError(
                f"without an assignment h and h_true need the same number of latents, got {h2.shape[1]} and {t2.shape[1]}"
            )
        li = torch.arange(h2.shape[1])
        ti = li
    else:
        li, ti = (assignment.learned_idx, assignment.true_idx) if isinstance(assignment, AtomMatch) else assignment
        li, ti = torch.as_tensor(li, dtype=torch.long), torch.as_tensor(ti, dtype=torch.long)
        if li.shape != ti.shape or li.dim() != 1:
            raise ValueError("assignment must be two 1-D index tensors of equal length")
        if li.numel() and (li.max() >= h2.shape[1] or ti.max() >= t2.shape[1] or li.min() < 0 or ti.min() < 0):
            raise ValueError("assignment indices out of range for h / h_true")
    pred = h2.abs() > thresh  # [B, m_l]
    true = t2.to(pred.device) != 0  # [B, m_t]
    li, ti = li.to(pred.device), ti.to(pred.device)
    tp = int((pred[:, li] & true[:, ti]).sum())
    fp = int(pred.sum()) - tp
    fn = int(true.sum()) - tp

    def _div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    p, r = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = _div(2 * p * r, p + r) if not (math.isnan(p) or math.isnan(r)) else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "jaccard": _div(tp, tp + fp + fn), "tp": tp, "fp": fp, "fn": fn}


# ----------------------------------------------------------------------------------------------------------
# feature utilisation (book: paper facts, language-model protocols)
# ----------------------------------------------------------------------------------------------------------


def firing_rates(h: Tensor, thresh: float = DEAD_THRESHOLD) -> Tensor:
    """Per-latent firing rate: share of samples with |h| > ``thresh``. ``h [B, m]`` → ``[m]`` float."""
    h2 = _as_2d("h", h)
    return (h2.abs() > thresh).float().mean(dim=0)


def _rates(h_or_rates: Tensor) -> Tensor:
    if not isinstance(h_or_rates, Tensor):
        raise TypeError(f"expected codes [B, m] or firing rates [m] as a tensor, got {type(h_or_rates).__name__}")
    r = firing_rates(h_or_rates) if h_or_rates.dim() >= 2 else h_or_rates
    if r.dim() != 1 or r.numel() < 2:
        raise ValueError(f"firing rates must be a 1-D tensor with at least 2 latents, got shape {tuple(r.shape)}")
    r = r.double()
    if (r < 0).any():
        raise ValueError("firing rates must be >= 0")
    return r


def firing_entropy(h_or_rates: Tensor) -> float:
    """Normalised entropy of the firing distribution, H(q)/log m with q = rates/Σ rates (book: paper facts, language-model protocols).

    1 = every latent fires equally often, 0 = one latent does all the firing. Accepts codes ``[B, m]``
    (rates via :func:`firing_rates`) or rates ``[m]``; NaN when nothing fires.
    """
    r = _rates(h_or_rates)
    total = r.sum()
    if total <= 0:
        return float("nan")
    q = r / total
    ent = -(q * torch.log(q.clamp_min(1e-300))).sum()
    return float(ent / math.log(r.numel()))


def gini(h_or_rates: Tensor) -> float:
    """Gini coefficient of the firing rates, Σ_i (2i − m − 1) p_(i) / (m Σ p) over ascending p (book: paper facts, language-model protocols).

    0 = equal use; (m−1)/m = a single latent fires. NaN when nothing fires.
    """
    r = _rates(h_or_rates)
    total = r.sum()
    if total <= 0:
        return float("nan")
    m = r.numel()
    p = torch.sort(r).values
    i = torch.arange(1, m + 1, dtype=torch.float64, device=p.device)
    return float(((2 * i - m - 1) * p).sum() / (m * total))


def top_mass(h_or_rates: Tensor, frac: float) -> float:
    """Share of all firing done by the top ``frac`` of latents, with max(1, ⌊frac·m⌋) latents (book: paper facts, language-model protocols)."""
    if not (isinstance(frac, (int, float)) and 0 < frac <= 1):
        raise ValueError(f"frac must be in (0, 1], got {frac!r}")
    r = _rates(h_or_rates)
    total = r.sum()
    if total <= 0:
        return float("nan")
    k = max(1, int(math.floor(frac * r.numel())))
    return float(torch.topk(r, k).values.sum() / total)


def feature_utilisation(h_or_rates: Tensor) -> dict[str, float]:
    """Feature-utilisation summary (book: paper facts, language-model protocols): ``normalised_entropy``, ``gini``, ``top1_mass``, ``top10_mass``.

    Masses are fractions in [0, 1] (the paper's table prints them in percent).
    """
    r = _rates(h_or_rates)
    return {
        "normalised_entropy": firing_entropy(r),
        "gini": gini(r),
        "top1_mass": top_mass(r, 0.01),
        "top10_mass": top_mass(r, 0.10),
    }


# ----------------------------------------------------------------------------------------------------------
# one-call ground-truth recovery of a trained SAE (synthetic data)
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def firing_density_histogram(counts: Tensor, tokens: int, *, lowest_decade: int = -7) -> dict[str, Any]:
    """How often the latents fire, as a histogram of log10 firing density (the usual SAE feature-density plot).

    ``counts [m]``: tokens each latent fired on out of ``tokens``. Returns ``never`` (latents with count 0), and for
    each decade ``e`` of ``decades`` (``lowest_decade .. -1``) the latents whose density ``counts / tokens`` lies in
    ``[10**e, 10**(e+1))`` (densities below ``10**lowest_decade`` go to the lowest decade, a density of exactly 1 to
    the top one), so ``never + sum(latents) == m``. ``tokens`` and ``m`` are kept so the histogram reads alone."""
    if not isinstance(counts, Tensor) or counts.dim() != 1:
        raise ValueError(f"counts must be a 1-d tensor [m], got {getattr(counts, 'shape', type(counts).__name__)}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be an int >= 1, got {tokens!r}")
    if bool((counts < 0).any()) or float(counts.max()) > tokens:
        raise ValueError(f"counts must lie in [0, tokens={tokens}]; got [{float(counts.min())}, {float(counts.max())}]")
    if isinstance(lowest_decade, bool) or not isinstance(lowest_decade, int) or lowest_decade >= 0:
        raise ValueError(f"lowest_decade must be a negative int, got {lowest_decade!r}")
    c = counts.double()
    fired = c[c > 0] / tokens
    e = torch.floor(torch.log10(fired)).clamp(lowest_decade, -1).long() - lowest_decade
    per = torch.bincount(e, minlength=-lowest_decade) if fired.numel() else torch.zeros(-lowest_decade, dtype=torch.long)
    return {"tokens": tokens, "m": int(counts.numel()), "never": int((c == 0).sum()),
            "decades": list(range(lowest_decade, 0)), "latents": [int(v) for v in per.tolist()]}


@torch.no_grad()
def recovery_metrics(sae: "torch.nn.Module", D_true: Tensor, x: Tensor, h_true: Tensor, thresh: float = DEAD_THRESHOLD,
                     recovered_cos: float = 0.9) -> dict[str, float]:
    """Dictionary and support recovery of a trained SAE against the true dictionary (book: paper facts, synthetic protocol recovery).

    Learned atoms (rows of ``sae.W_dec``) are matched to the true atoms ``D_true [m, n]`` with :func:`match_atoms`;
    the codes ``sae.encode(x)`` are then scored against ``h_true`` with :func:`support_metrics` under that
    assignment. ``x [B, n]`` should be fresh samples the SAE was not trained on.
    Returns ``dictionary_mean_cos``, ``dictionary_error``, ``atoms_recovered`` (the fraction of true atoms whose
    matched |cos| exceeds ``recovered_cos``), ``support_precision``, ``support_recall``, ``support_f1``,
    ``support_jaccard`` and ``eval_l0`` (mean active latents per sample of ``x``, above ``thresh``).
    """
    match = match_atoms(sae.W_dec, D_true)
    h = sae.encode(x.to(sae.W_enc.device, sae.W_enc.dtype)).float().cpu()
    s = support_metrics(h, h_true.cpu(), thresh=thresh, assignment=match)
    return {
        "dictionary_mean_cos": match.mean_abs_cos,
        "dictionary_error": match.dictionary_error,
        "atoms_recovered": float((match.cos.abs() > recovered_cos).float().mean()),
        "eval_l0": float((h.abs() > thresh).sum(1).float().mean()),
        "support_precision": s["precision"],
        "support_recall": s["recall"],
        "support_f1": s["f1"],
        "support_jaccard": s["jaccard"],
    }


def outlier_severity(x: torch.Tensor) -> float:
    """||mean|| / ||std|| of samples ``x [B, n]`` (per-coordinate mean and standard deviation; Simon, Adams & Zou 2026):
    how far the data's centre lies from the origin relative to its spread. 0 for centred data."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be [B, n] samples with B >= 2, got shape {tuple(x.shape)}")
    x = x.double()
    return float(x.mean(0).norm() / x.std(0).norm())
