"""Harvesting residual-stream activations from a frozen LM, and their per-token normalisation.

Pipeline (book: paper facts, language-model protocols)::

    windows [N, T] --LM up to block L (early exit)--> resid [B, T, d]
        --drop positions < drop_first (attention sink), optional norm-outlier filter--> rows [n, d]
        --x * sqrt(d) / ||x||  (per_token_l2, eps 1e-6), norms kept so it can be undone--> SAE inputs

* **Early exit.** A forward hook on block L stores its output and raises a private exception, so blocks L+1..end
  and the unembedding never run.
* **Position 0.** The first position of every window is an attention sink with a norm about 100x larger than the
  other tokens (for SmolLM2-135M, ~22,000 against ~200 at block 15); it is dropped by default (``drop_first=1``).
  The paper's windows have no BOS, so its position 0 is an ordinary text token that it kept; ``drop_first=0``
  reproduces that.

Rows go on to the cache (:mod:`aen_lib.data.activation_cache`) or straight to training (:mod:`aen_lib.data.sources`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from .lm import model_device, residual_hook_module, unwrap_block_output

NORMALIZATIONS: tuple[str, ...] = ("per_token_l2", "none")
KEY_STRIDE = 1 << 20
"""Row key of a harvested token: ``window_index * KEY_STRIDE + position`` (windows are shorter than this)."""


# --------------------------------------------------------------------------------------------------------------
# Normalisation (book: paper facts, model and loss)
# --------------------------------------------------------------------------------------------------------------


def normalize_per_token(x: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Rescale every token to ℓ2 norm √d (book: paper facts, model and loss, mode ``per_token_l2``), in float32.

    ``x [..., d]`` -> ``(x * √d / max(||x||, eps) [..., d], ||x|| [...])``. No mean-centering (the SAE's ``b_dec``
    absorbs the mean). :func:`denormalize_per_token` undoes it with the returned norms.
    """
    xf = x.float()
    norms = xf.norm(dim=-1)
    scale = math.sqrt(xf.shape[-1]) / norms.clamp_min(eps)
    return xf * scale.unsqueeze(-1), norms


def denormalize_per_token(x_normed: Tensor, norms: Tensor, eps: float = 1e-6) -> Tensor:
    """Inverse of :func:`normalize_per_token`: ``x_normed [..., d] * max(norms, eps) / √d`` (float32)."""
    if x_normed.shape[:-1] != norms.shape:
        raise ValueError(f"norms shape {tuple(norms.shape)} must equal x_normed.shape[:-1]={tuple(x_normed.shape[:-1])}")
    scale = norms.float().clamp_min(eps) / math.sqrt(x_normed.shape[-1])
    return x_normed.float() * scale.unsqueeze(-1)


# --------------------------------------------------------------------------------------------------------------
# Capturing block L
# --------------------------------------------------------------------------------------------------------------


class _EarlyExit(Exception):
    """Raised by the capture hook to stop the forward pass after block L."""


def block_output(model: nn.Module, input_ids: Tensor, layer: int, *, early_exit: bool = True) -> Tensor:
    """Residual stream after block ``layer`` for ``input_ids [B, T]`` -> ``[B, T, d]`` in the model's dtype.

    Equals ``hidden_states[layer + 1]`` of a full forward for every block but the last (for the last block it is
    the output before the final norm, which ``hidden_states[-1]`` includes). With ``early_exit=True`` the forward pass stops right
    after block ``layer`` (no later blocks, no unembedding).
    """
    module = residual_hook_module(model, layer)
    store: dict[str, Tensor] = {}

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        store["resid"] = unwrap_block_output(out).detach()
        if early_exit:
            raise _EarlyExit

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    except _EarlyExit:
        pass
    finally:
        handle.remove()
    return store["resid"]


# --------------------------------------------------------------------------------------------------------------
# Harvesting
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Activations:
    """Harvested rows, one per kept token. ``acts`` is normalised unless ``normalization == "none"``."""

    acts: Tensor
    """[N, d] SAE inputs."""
    norms: Tensor
    """[N] float32 ℓ2 norm of each raw activation (undo the normalisation with :meth:`raw`)."""
    token_ids: Tensor
    """[N] int64 token at that position."""
    window_index: Tensor
    """[N] int64 index of the window in the harvested sequence."""
    position: Tensor
    """[N] int64 position inside the window."""
    normalized: bool = True
    """Whether ``acts`` are per-token normalised (False for ``normalization="none"``)."""

    _TENSORS = ("acts", "norms", "token_ids", "window_index", "position")

    def __len__(self) -> int:
        return int(self.acts.shape[0])

    def raw(self, eps: float = 1e-6) -> Tensor:
        """[N, d] the activations before normalisation (float32)."""
        return denormalize_per_token(self.acts, self.norms, eps) if self.normalized else self.acts.float()

    def to_tensors(self) -> dict[str, Tensor]:
        """The tensor fields by name (what a cache shard stores)."""
        return {name: getattr(self, name) for name in self._TENSORS}

    @staticmethod
    def cat(parts: list["Activations"]) -> "Activations":
        """Concatenate along rows (needs at least one part, all normalised alike)."""
        if not parts:
            raise ValueError("parts is empty; nothing to concatenate")
        if len({p.normalized for p in parts}) > 1:
            raise ValueError("cannot concatenate normalised and raw activations")
        cat = {name: torch.cat([getattr(p, name) for p in parts]) for name in Activations._TENSORS}
        return Activations(**cat, normalized=parts[0].normalized)


def check_harvest_args(layer: int, normalization: str, drop_first: int, outlier_norm_multiple: float | None,
                       batch_size: int, eps: float) -> None:
    """Raise ``ValueError`` (``TypeError`` for ``layer``) for harvesting arguments outside their allowed values."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; allowed: {list(NORMALIZATIONS)}")
    if isinstance(drop_first, bool) or not isinstance(drop_first, int) or drop_first < 0:
        raise ValueError(f"drop_first must be an int >= 0, got {drop_first!r}")
    if outlier_norm_multiple is not None and not (outlier_norm_multiple > 0):
        raise ValueError(f"outlier_norm_multiple must be None or > 0, got {outlier_norm_multiple!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")


def iter_window_batches(windows: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """Token-id batches ``[<=batch_size, T]`` from a ``[n, T]`` tensor or an iterable of ``[T]`` windows."""
    if isinstance(windows, Tensor):
        if windows.ndim != 2:
            raise ValueError(f"windows must be a [n_windows, window] tensor, got shape {tuple(windows.shape)}")
        for i in range(0, windows.shape[0], batch_size):
            yield windows[i:i + batch_size]
        return
    it = iter(windows)
    while True:
        chunk = list(islice(it, batch_size))
        if not chunk:
            return
        yield torch.stack([torch.as_tensor(w) for w in chunk])


def iter_harvest(
    model: nn.Module,
    windows: Tensor | Iterable[Tensor],
    layer: int,
    *,
    batch_size: int = 64,
    normalization: str = "per_token_l2",
    eps: float = 1e-6,
    drop_first: int = 1,
    outlier_norm_multiple: float | None = None,
    early_exit: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    start_window: int = 0,
    progress: bool = True,
) -> Iterator[Activations]:
    """Harvest block-``layer`` activations batch by batch (book: paper facts, language-model protocols); yields one :class:`Activations` per LM batch.

    ``windows``: token ids ``[n_windows, T]`` or an iterable of ``[T]`` windows (see :func:`aen_lib.data.text.iter_windows`).
    Per window, positions ``< drop_first`` are dropped; with ``outlier_norm_multiple=c``, tokens whose norm exceeds
    ``c`` times the median norm of the window's remaining tokens are dropped too (the per-window median keeps the
    result independent of ``batch_size``). Rows are then normalised per token (``normalization="per_token_l2"``) or
    left raw (``"none"``), cast to ``dtype`` and moved to ``device``. ``window_index`` counts from ``start_window``.
    The progress bar (tqdm, tokens/s through the LM) is off with ``progress=False``.
    """
    check_harvest_args(layer, normalization, drop_first, outlier_norm_multiple, batch_size, eps)
    from tqdm.auto import tqdm

    lm_device = model_device(model)
    next_window = start_window
    with tqdm(desc=f"harvest L{layer}", unit="tok", unit_scale=True, disable=not progress) as bar:
        for ids in iter_window_batches(windows, batch_size):
            n_win, T = ids.shape
            if drop_first >= T:
                raise ValueError(f"drop_first={drop_first} leaves nothing of windows of length {T}")
            if T >= KEY_STRIDE:
                raise ValueError(f"window length {T} too long (max {KEY_STRIDE - 1})")
            resid = block_output(model, ids.to(lm_device), layer, early_exit=early_exit)  # [B, T, d]
            resid = resid[:, drop_first:].float()  # [B, T', d]
            norms = resid.norm(dim=-1)  # [B, T']
            keep = torch.ones_like(norms, dtype=torch.bool)
            if outlier_norm_multiple is not None:
                median = norms.median(dim=1, keepdim=True).values  # [B, 1]
                keep = norms <= outlier_norm_multiple * median
            pos = torch.arange(drop_first, T, device=resid.device).expand(n_win, -1)
            win = torch.arange(next_window, next_window + n_win, device=resid.device).unsqueeze(1).expand_as(pos)
            rows = resid[keep]  # [n, d]
            if normalization == "per_token_l2":
                rows, _ = normalize_per_token(rows, eps)
            yield Activations(
                acts=rows.to(device=device, dtype=dtype),
                norms=norms[keep].to(device),
                token_ids=ids[:, drop_first:].to(resid.device)[keep].to(device),
                window_index=win[keep].to(device),
                position=pos[keep].to(device),
                normalized=normalization == "per_token_l2",
            )
            next_window += n_win
            bar.update(n_win * T)


def harvest_activations(
    model: nn.Module,
    windows: Tensor | Iterable[Tensor],
    layer: int,
    *,
    max_windows: int | None = None,
    **kwargs: Any,
) -> Activations:
    """All rows of :func:`iter_harvest` over (at most ``max_windows``) ``windows``, concatenated in memory.

    Keyword arguments are those of :func:`iter_harvest` (``batch_size``, ``normalization``, ``drop_first``,
    ``outlier_norm_multiple``, ``early_exit``, ``dtype``, ``device``, ``progress``, ...).
    """
    if max_windows is not None:
        windows = windows[:max_windows] if isinstance(windows, Tensor) else islice(windows, max_windows)
    parts = list(iter_harvest(model, windows, layer, **kwargs))
    if not parts:
        raise ValueError("windows is empty; nothing was harvested")
    return Activations.cat(parts)
