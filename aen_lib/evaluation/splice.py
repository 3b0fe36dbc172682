"""Spliced evaluation: how much of the LM's next-token prediction survives the SAE (paper Figure 1, book: paper facts, language-model protocols).

For each batch of held-out windows ``ids [B, T]`` the LM runs four times:

* **clean**: unchanged, logits ``z [B, T, V]``;
* **patched**: the output of block L is replaced by the SAE reconstruction, and the forward pass continues;
* **mean-ablated**: the output of block L is replaced by its mean ``μ [d]`` (the paper's baseline);
* **zero-ablated**: the output of block L is replaced by zeros (the baseline of SAELens and SAEBench).

With next-token cross-entropy CE (nats/token) and the KL divergence KL(p_clean ‖ p_patched) averaged over tokens::

    CE recovered (mean ablation) = 1 - (CE_patched - CE_clean) / (CE_mean_ablated - CE_clean)
    CE recovered (zero ablation) = 1 - (CE_patched - CE_clean) / (CE_zero_ablated - CE_clean)

Both are reported (:class:`SplicedEvalResult`); they differ a lot, because zeroing the residual stream hurts the LM
much more than replacing it by its mean, so the same SAE scores higher under zero ablation. Numbers quoted from
SAELens or SAEBench are zero-ablation scores; the paper's are mean-ablation scores.

**The mean.** μ is the average of block L's output over a fixed set of windows and the positions ``>= skip_first``,
computed once before scoring (:func:`activation_mean`), by default over the evaluation windows themselves, or passed
in with ``ablation_mean=``. The reference code took the mean of each evaluation batch instead, which makes the
ablated CE (and so CE recovered) depend on the batch size.

All of it is computed in float32 and averaged over every scored token of the held-out set.

**Normalisation.** The SAE was trained on tokens rescaled to norm √d (book: paper facts, model and loss). The correct splice normalises
each token, reconstructs, and multiplies the token's norm back: ``x̂ = SAE(x·√d/‖x‖)·‖x‖/√d``. The reference code fed
the *raw* activations to the SAE instead (book: paper facts, language-model protocols), which is why the paper's patched CE is worse than mean
ablation; ``reproduce_reference_bug=True`` does that so both numbers can be shown side by side.

**Position 0.** Training drops positions ``< skip_first`` (default 1, the attention sink; see
:mod:`aen_lib.data.harvest`), so the SAE never saw them. Here those positions keep their clean activation in the
patched and ablated runs, are left out of the ablation mean, and their predictions are not scored: CE and KL are
averaged over the predictions made at positions ``skip_first .. T-2`` (targets ``skip_first+1 .. T-1``). With causal
attention a position's logits depend only on itself and earlier positions, so scoring position 0 would only add
identical clean/patched terms. ``skip_first=0`` patches and scores every position.
"""

from __future__ import annotations

import math
from itertools import islice
from dataclasses import asdict, dataclass
from typing import Any, Callable, Collection, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.harvest import block_output, denormalize_per_token, iter_window_batches, normalize_per_token
from ..data.lm import model_device, residual_hook_module, rewrap_block_output, unwrap_block_output


@dataclass
class SplicedEvalResult:
    """Token-averaged downstream metrics of book: paper facts, language-model protocols (nats/token)."""

    ce_clean: float
    ce_patched: float
    ce_ablated: float
    """CE with block L's output replaced by its mean over a fixed held-out set (mean ablation, the paper's baseline)."""
    ce_zero_ablated: float
    """CE with block L's output replaced by zeros (zero ablation, the SAELens/SAEBench baseline)."""
    ce_recovered_mean_ablation: float
    """1 - (CE_patched - CE_clean)/(CE_ablated - CE_clean); NaN if CE_ablated == CE_clean."""
    ce_recovered_zero_ablation: float
    """1 - (CE_patched - CE_clean)/(CE_zero_ablated - CE_clean); NaN if CE_zero_ablated == CE_clean."""
    ce_recovered: float
    """Alias of :attr:`ce_recovered_mean_ablation` (kept for existing readers)."""
    kl: float
    """Mean over tokens of KL(p_clean ‖ p_patched)."""
    n_tokens: int
    """Scored predictions."""
    n_windows: int
    reproduce_reference_bug: bool
    """True when raw (un-normalised) activations were fed to the SAE, as the reference code did."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sae_reconstruct(sae: Callable[[Tensor], Any], x: Tensor) -> Tensor:
    """``x_hat [B, d]`` of an SAE whose forward returns a tensor, an ``SAEOutput`` (``.x_hat``) or a tuple."""
    out = sae(x)
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "x_hat"):
        return out.x_hat
    if isinstance(out, tuple):
        return out[0]
    raise TypeError(f"cannot read a reconstruction from an SAE output of type {type(out).__name__}")


def _sae_dtype(sae: Any) -> torch.dtype:
    params = list(sae.parameters()) if isinstance(sae, nn.Module) else []
    return params[0].dtype if params else torch.float32


def splice_sae(
    resid: Tensor,
    sae: Callable[[Tensor], Any],
    *,
    skip_first: int = 1,
    normalize: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Replace block-L activations ``resid [B, T, d]`` by their SAE reconstruction (positions ``>= skip_first``).

    ``normalize=True``: ``x̂ = SAE(x·√d/‖x‖)·‖x‖/√d`` per token (book: paper facts, model and loss). ``normalize=False`` feeds the raw
    activations (the reference code's behaviour). Returns a tensor of ``resid``'s shape and dtype.
    """
    x = resid[:, skip_first:]  # [B, T', d]
    B, Tp, d = x.shape
    flat = x.reshape(B * Tp, d).float()
    sdt = _sae_dtype(sae)
    if normalize:
        xn, norms = normalize_per_token(flat, eps)
        x_hat = denormalize_per_token(sae_reconstruct(sae, xn.to(sdt)).float(), norms, eps)
    else:
        x_hat = sae_reconstruct(sae, flat.to(sdt)).float()
    out = resid.clone()
    out[:, skip_first:] = x_hat.reshape(B, Tp, d).to(resid.dtype)
    return out


def mean_ablate(resid: Tensor, *, skip_first: int = 1, mean: Tensor | None = None) -> Tensor:
    """Replace positions ``>= skip_first`` of ``resid [B, T, d]`` by ``mean [d]``.

    Without ``mean``, the mean of ``resid`` over batch and those positions is used (the reference code's per-batch
    baseline, which depends on the batch); :func:`spliced_evaluation` passes a fixed one (:func:`activation_mean`).
    """
    out = resid.clone()
    if mean is None:
        mean = resid[:, skip_first:].float().mean(dim=(0, 1))  # [d]
    elif mean.shape != resid.shape[-1:]:
        raise ValueError(f"mean has shape {tuple(mean.shape)}; expected [d={resid.shape[-1]}]")
    out[:, skip_first:] = mean.to(device=resid.device, dtype=resid.dtype)
    return out


def zero_ablate(resid: Tensor, *, skip_first: int = 1) -> Tensor:
    """Replace positions ``>= skip_first`` of ``resid [B, T, d]`` by zeros (the SAELens/SAEBench baseline)."""
    out = resid.clone()
    out[:, skip_first:] = 0
    return out


@torch.no_grad()
def activation_mean(model: nn.Module, windows: Tensor | Iterable[Tensor], layer: int, *, skip_first: int = 1,
                    batch_size: int = 16) -> Tensor:
    """Mean ``μ [d]`` (float32) of block ``layer``'s output over ``windows`` and positions ``>= skip_first``.

    The baseline of mean ablation (paper Figure 1). Accumulated in float64 over every token, so it does not depend on
    ``batch_size``; compute it once on a fixed held-out set and pass it to :func:`spliced_evaluation_many`.
    """
    total: Tensor | None = None
    n = 0
    dev = model_device(model)
    for ids in iter_window_batches(windows, batch_size):
        if skip_first >= ids.shape[1]:
            raise ValueError(f"skip_first={skip_first} leaves no positions in windows of length {ids.shape[1]}")
        resid = block_output(model, ids.to(dev), layer)[:, skip_first:].double()  # [B, T', d]
        s = resid.sum(dim=(0, 1))
        total = s if total is None else total + s
        n += resid.shape[0] * resid.shape[1]
    if total is None:
        raise ValueError("windows is empty; no activations to average")
    return (total / n).float()


def forward_logits(model: nn.Module, ids: Tensor, layer: int,
                    replace: Callable[[Tensor], Tensor] | None = None, capture: dict[str, Tensor] | None = None) -> Tensor:
    """Logits [B, T, V] (float32); optionally capture and/or replace block ``layer``'s output."""
    handle = None
    if replace is not None or capture is not None:
        def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
            h = unwrap_block_output(out)
            if capture is not None:
                capture["resid"] = h.detach()
            if replace is not None:
                return rewrap_block_output(out, replace(h))
            return None

        handle = residual_hook_module(model, layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits.float()
    finally:
        if handle is not None:
            handle.remove()


def ce_sum(logits: Tensor, ids: Tensor, s: int) -> Tensor:
    """Sum of next-token CE over predictions at positions s..T-2. logits [B, T, V], ids [B, T]."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, s:-1].reshape(-1, V), ids[:, s + 1:].reshape(-1), reduction="sum")


def kl_sum(logits_p: Tensor, logits_q: Tensor, s: int) -> Tensor:
    """Sum over predictions at positions s..T-2 of KL(softmax p ‖ softmax q)."""
    lp = F.log_softmax(logits_p[:, s:-1], dim=-1)
    lq = F.log_softmax(logits_q[:, s:-1], dim=-1)
    return (lp.exp() * (lp - lq)).sum()


def spliced_evaluation(
    model: nn.Module,
    sae: Callable[[Tensor], Any],
    windows: Tensor | Iterable[Tensor],
    layer: int,
    *,
    batch_size: int = 16,
    skip_first: int = 1,
    reproduce_reference_bug: bool = False,
    eps: float = 1e-6,
    max_windows: int | None = None,
    ablation_mean: Tensor | None = None,
    progress: bool = True,
) -> SplicedEvalResult:
    """Clean, SAE-patched, mean- and zero-ablated CE, both CE recovered scores and KL over held-out ``windows``
    (paper Figure 1).

    ``sae`` is any callable module mapping ``[n, d]`` to a reconstruction (``aen_lib.sae.model.SAE`` or a stand-in),
    trained on per-token-normalised activations of block ``layer``. ``reproduce_reference_bug=True`` feeds it raw
    activations instead, as the reference code did. See the module docstring for the handling of positions
    ``< skip_first``. ``windows``: ``[n, T]`` token ids or an iterable of ``[T]`` windows (e.g. a held-out
    document range packed by :func:`aen_lib.data.text.iter_windows`). ``ablation_mean [d]``: the mean-ablation baseline
    (default: :func:`activation_mean` over ``windows``).
    """
    if max_windows is not None:
        windows = windows[:max_windows] if isinstance(windows, Tensor) else islice(windows, max_windows)
    out = spliced_evaluation_many(model, {"sae": sae}, windows, layer, raw_input=("sae",) if reproduce_reference_bug else (),
                                  batch_size=batch_size, skip_first=skip_first, eps=eps, ablation_mean=ablation_mean,
                                  progress=progress)
    return out["sae"]


@torch.no_grad()
def spliced_evaluation_many(
    model: nn.Module,
    saes: Mapping[str, Callable[[Tensor], Any]],
    windows: Tensor | Iterable[Tensor],
    layer: int,
    *,
    raw_input: Collection[str] = (),
    batch_size: int = 16,
    skip_first: int = 1,
    eps: float = 1e-6,
    ablation_mean: Tensor | None = None,
    progress: bool = True,
) -> dict[str, SplicedEvalResult]:
    """:func:`spliced_evaluation` for every SAE in ``saes`` on the same held-out ``windows``
    (book: paper facts, language-model protocols, Figure 1), sharing the clean and mean-ablated forward passes.

    Per batch the LM runs once clean, once mean-ablated, once zero-ablated and once per SAE, instead of four times
    per SAE; each result equals what ``spliced_evaluation`` returns for that SAE alone. SAEs named in ``raw_input``
    get the raw activations, as the reference code did (``reproduce_reference_bug=True``); the others the per-token
    normalised ones with the norm multiplied back. ``ablation_mean [d]`` is the mean-ablation baseline; by default it
    is :func:`activation_mean` over ``windows`` (one extra pass up to block ``layer``), so it is the same whatever
    ``batch_size`` is.
    """
    if not isinstance(saes, Mapping) or not saes:
        raise ValueError("saes must be a non-empty mapping name -> SAE")
    unknown = set(raw_input) - set(saes)
    if unknown:
        raise ValueError(f"raw_input names {sorted(unknown)} that are not in saes {sorted(saes)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be an int >= 0, got {skip_first!r}")
    residual_hook_module(model, layer)  # validates layer / architecture up front
    from tqdm.auto import tqdm

    if ablation_mean is None:
        if not isinstance(windows, Tensor):
            windows = list(windows)  # read twice: once for the mean, once to score
        ablation_mean = activation_mean(model, windows, layer, skip_first=skip_first, batch_size=batch_size)
    elif not isinstance(ablation_mean, Tensor) or ablation_mean.ndim != 1:
        raise ValueError(f"ablation_mean must be a [d] tensor, got {ablation_mean!r:.80}")
    elif not torch.isfinite(ablation_mean).all():
        raise ValueError("ablation_mean holds NaN or infinite values")

    modules = [s for s in saes.values() if isinstance(s, nn.Module)]
    was_training = [s.training for s in modules]
    for s in modules:
        s.eval()
    dev = model_device(model)
    sums = {name: {"patched": 0.0, "kl": 0.0} for name in saes}
    clean_sum = ablated_sum = zero_sum = 0.0
    n_tok = n_win = 0
    try:
        with tqdm(desc=f"spliced eval x{len(saes)} L{layer}", unit="tok", unit_scale=True, disable=not progress) as bar:
            for ids in iter_window_batches(windows, batch_size):
                ids = ids.to(dev)
                B, T = ids.shape
                if skip_first > T - 2:
                    raise ValueError(f"skip_first={skip_first} leaves no predictions in windows of length {T}")
                clean = forward_logits(model, ids, layer)
                clean_sum += float(ce_sum(clean, ids, skip_first))
                ablated = forward_logits(model, ids, layer,
                                         replace=lambda h: mean_ablate(h, skip_first=skip_first, mean=ablation_mean))
                ablated_sum += float(ce_sum(ablated, ids, skip_first))
                del ablated
                zeroed = forward_logits(model, ids, layer, replace=lambda h: zero_ablate(h, skip_first=skip_first))
                zero_sum += float(ce_sum(zeroed, ids, skip_first))
                del zeroed
                for name, sae in saes.items():
                    normalize = name not in raw_input
                    patched = forward_logits(
                        model, ids, layer,
                        replace=lambda h, sae=sae, normalize=normalize: splice_sae(
                            h, sae, skip_first=skip_first, normalize=normalize, eps=eps))
                    sums[name]["patched"] += float(ce_sum(patched, ids, skip_first))
                    sums[name]["kl"] += float(kl_sum(clean, patched, skip_first))
                    del patched
                n_tok += B * (T - 1 - skip_first)
                n_win += B
                bar.update(B * T)
    finally:
        for s, t in zip(modules, was_training):
            s.train(t)
    if n_tok == 0:
        raise ValueError("windows is empty; nothing to evaluate")
    ce_c, ce_a, ce_z = clean_sum / n_tok, ablated_sum / n_tok, zero_sum / n_tok

    def recovered(ce_p: float, ce_ablated: float) -> float:
        return 1.0 - (ce_p - ce_c) / (ce_ablated - ce_c) if ce_ablated != ce_c else math.nan

    out = {}
    for name in saes:
        ce_p = sums[name]["patched"] / n_tok
        out[name] = SplicedEvalResult(
            ce_clean=ce_c, ce_patched=ce_p, ce_ablated=ce_a, ce_zero_ablated=ce_z,
            ce_recovered_mean_ablation=recovered(ce_p, ce_a), ce_recovered_zero_ablation=recovered(ce_p, ce_z),
            ce_recovered=recovered(ce_p, ce_a),
            kl=sums[name]["kl"] / n_tok, n_tokens=n_tok, n_windows=n_win,
            reproduce_reference_bug=name in raw_input)
    return out
