"""What trained SAE latents do on language-model activations: firing accounting, top-activating contexts and the
logit effect of a decoder direction.

These are the tools of the book's chapters on real language models (book: paper facts, language-model protocols "Interpretability probe").

* **Dead and dense latents under three definitions**, those of the common SAE libraries: a latent is dead when it did not fire
  during the last *N training steps* (SAELens' window), during the last *N tokens* (10M tokens in sparsify,
  dictionary_learning and OpenAI's code), or *on a held-out evaluation set* (SAEBench's ``frac_alive``).
  :class:`FiringTracker` records, for every latent, how long ago it last fired, so one pass over a stream answers
  every window length; :func:`dead_dense_accounting` puts the three definitions and the dense counts side by side.
* **Top-activating contexts**: :func:`top_activations` streams codes over a set of activations and keeps the ``k``
  largest per latent; :func:`feature_contexts` turns those rows back into the text around each firing token
  (harvested rows carry their token id, window and position, :class:`aen_lib.data.harvest.Activations`), and
  :func:`render_contexts_html` / :func:`render_contexts_text` print them with the firing token highlighted.
* **Logit effect** (direct logit attribution of a decoder atom, book: paper facts, language-model protocols): ``W_U diag(g) d_i`` where ``W_U`` is
  the unembedding and ``g`` the final norm's gain (:func:`unembedding_directions`, :func:`logit_effect`,
  :func:`top_logit_tokens`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data.harvest import Activations
from .dead import DEAD_THRESHOLD, FiringTracker  # FiringTracker re-exported (the dead-latent module)

__all__ = [
    "FiringTracker",
    "FiringStats",
    "firing_statistics",
    "dead_dense_accounting",
    "top_activations",
    "Context",
    "feature_contexts",
    "render_contexts_html",
    "render_contexts_text",
    "unembedding_directions",
    "logit_effect",
    "top_logit_tokens",
]


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# Firing accounting: dead and dense latents
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FiringStats:
    """Per-latent statistics of codes over a set of tokens (see :func:`firing_statistics`)."""

    counts: Tensor
    """[m] int64 tokens on which the latent fired (|h| > threshold)."""
    max: Tensor
    """[m] float32 largest activation."""
    sum: Tensor
    """[m] float64 sum of activations."""
    n_tokens: int

    @property
    def rates(self) -> Tensor:
        """[m] float64 firing frequency (share of tokens)."""
        return self.counts.double() / self.n_tokens


def _encode_fn(sae: Any) -> Callable[[Tensor], Tensor]:
    if hasattr(sae, "encode") and callable(sae.encode):
        return sae.encode
    if callable(sae):
        return sae
    raise TypeError(f"expected an SAE with .encode or a callable x -> h, got {type(sae).__name__}")


def _chunks(n: int, chunk_size: int) -> Iterable[slice]:
    _check_int("chunk_size", chunk_size, 1)
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def _sae_param(sae: Any) -> Tensor | None:
    if isinstance(sae, nn.Module):
        return next(iter(sae.parameters()), None)
    owner = getattr(getattr(sae, "encode", None), "__self__", None)
    return next(iter(owner.parameters()), None) if isinstance(owner, nn.Module) else None


def _encode_chunk(encode: Callable[[Tensor], Tensor], x: Tensor, ref: Tensor | None) -> Tensor:
    if ref is not None:
        x = x.to(device=ref.device, dtype=ref.dtype)
    return encode(x).float()


@torch.no_grad()
def firing_statistics(sae: Any, acts: Tensor, *, chunk_size: int = 4096,
                      threshold: float = DEAD_THRESHOLD) -> FiringStats:
    """Firing counts, maximum and summed activation of every latent of ``sae`` over ``acts [N, d]`` (book: paper facts, language-model protocols).

    ``sae`` is an :class:`aen_lib.sae.model.SAE` (its ``encode`` is used) or any callable ``x -> h [n, m]``. Codes are
    computed ``chunk_size`` rows at a time, so ``[N, m]`` is never held in memory.
    """
    if not isinstance(acts, Tensor) or acts.dim() != 2 or acts.shape[0] == 0:
        raise ValueError(f"acts must be a non-empty [N, d] tensor, got {getattr(acts, 'shape', type(acts).__name__)}")
    encode, ref = _encode_fn(sae), _sae_param(sae)
    counts = mx = total = None
    for sl in _chunks(acts.shape[0], chunk_size):
        h = _encode_chunk(encode, acts[sl], ref).cpu()  # [c, m]
        c, s, m = (h.abs() > threshold).sum(0), h.double().sum(0), h.amax(0)
        counts = c if counts is None else counts + c
        total = s if total is None else total + s
        mx = m if mx is None else torch.maximum(mx, m)
    assert counts is not None and mx is not None and total is not None
    return FiringStats(counts=counts.long(), max=mx, sum=total, n_tokens=int(acts.shape[0]))


def dead_dense_accounting(
    tracker: FiringTracker,
    eval_stats: FiringStats,
    *,
    step_window: int,
    token_window: int,
    dense_thresholds: Sequence[float] = (0.01, 0.1),
) -> dict[str, float]:
    """Dead and dense latents under the three definitions above (training steps, tokens, a held-out set), in percent of latents.

    * ``dead_steps_pct``: did not fire in the last ``step_window`` training steps of ``tracker`` (SAELens);
    * ``dead_tokens_pct``: did not fire in the last ``token_window`` tokens of ``tracker`` (10M tokens in sparsify,
      dictionary_learning, OpenAI);
    * ``never_fired_eval_pct``: never fired on the evaluation tokens of ``eval_stats`` (SAEBench ``frac_alive``);
    * ``dead_all_pct`` / ``dead_any_pct``: dead under all three / under at least one;
    * ``rare_alive_pct``: fired in evaluation but is dead under the step window (alive, yet rarely enough to be
      counted dead by a training window);
    * ``dense_<t>_pct`` for each ``t`` in ``dense_thresholds``: fired on more than a fraction ``t`` of the
      evaluation tokens (SAEBench ``freq_over_1_percent`` / ``_10_percent``).
    """
    if not isinstance(tracker, FiringTracker) or not isinstance(eval_stats, FiringStats):
        raise TypeError("tracker must be a FiringTracker and eval_stats a FiringStats")
    if eval_stats.counts.numel() != tracker.d_sae:
        raise ValueError(f"eval_stats has {eval_stats.counts.numel()} latents but the tracker {tracker.d_sae}")
    steps = tracker.dead_mask(step_window, "steps").cpu()
    tokens = tracker.dead_mask(token_window, "tokens").cpu()
    never = eval_stats.counts.cpu() == 0
    pct = lambda mask: 100.0 * float(mask.float().mean())  # noqa: E731
    out = {
        "dead_steps_pct": pct(steps),
        "dead_tokens_pct": pct(tokens),
        "never_fired_eval_pct": pct(never),
        "dead_all_pct": pct(steps & tokens & never),
        "dead_any_pct": pct(steps | tokens | never),
        "rare_alive_pct": pct(steps & ~never),
        "step_window": float(step_window),
        "token_window": float(token_window),
        "eval_tokens": float(eval_stats.n_tokens),
    }
    rates = eval_stats.rates.cpu()
    for t in dense_thresholds:
        if not 0 < t < 1:
            raise ValueError(f"dense_thresholds must lie in (0, 1), got {t!r}")
        out[f"dense_{t:g}_pct"] = pct(rates > t)
    return out


# --------------------------------------------------------------------------------------------------------------
# Top-activating contexts
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def top_activations(sae: Any, acts: Tensor, features: Sequence[int] | Tensor, k: int = 8, *,
                    chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """The ``k`` largest activations of each latent in ``features`` over ``acts [N, d]`` and their row indices.

    Returns ``(values [F, k] float32, rows [F, k] int64)``, each row sorted by decreasing value. Rows are indices
    into ``acts``; where a latent fired on fewer than ``k`` tokens the remaining values are <= 0 (not firing).
    Streams over ``acts`` in chunks, so the full code matrix is never built.
    """
    _check_int("k", k, 1)
    if not isinstance(acts, Tensor) or acts.dim() != 2 or acts.shape[0] == 0:
        raise ValueError(f"acts must be a non-empty [N, d] tensor, got {getattr(acts, 'shape', type(acts).__name__)}")
    feats = torch.as_tensor(features, dtype=torch.long).flatten()
    if feats.numel() == 0:
        raise ValueError("features is empty; give at least one latent index")
    encode, ref = _encode_fn(sae), _sae_param(sae)
    best_v = torch.full((feats.numel(), 0), -math.inf)
    best_r = torch.zeros((feats.numel(), 0), dtype=torch.long)
    for sl in _chunks(acts.shape[0], chunk_size):
        h = _encode_chunk(encode, acts[sl], ref).cpu()  # [c, m]
        if feats.max() >= h.shape[1] or feats.min() < 0:
            raise ValueError(f"features must lie in [0, {h.shape[1]}), got {feats.tolist()}")
        v = h[:, feats].T  # [F, c]
        r = torch.arange(sl.start, sl.stop).expand_as(v)
        cand_v, cand_r = torch.cat([best_v, v], dim=1), torch.cat([best_r, r], dim=1)
        top = cand_v.topk(min(k, cand_v.shape[1]), dim=1)
        best_v, best_r = top.values, cand_r.gather(1, top.indices)
    return best_v, best_r


@dataclass
class Context:
    """The text around one firing of a latent: tokens as strings, which one fired, and the latent's activations."""

    tokens: list[str]
    """Decoded tokens of the context, in order."""
    highlight: int
    """Index in ``tokens`` of the token where the activation was recorded."""
    activation: float
    """The latent's activation on that token."""
    token_acts: list[float] = field(default_factory=list)
    """The latent's activation on every token of the context (same length as ``tokens``)."""
    window: int = -1
    """Window index of the firing token in the harvested stream."""
    position: int = -1
    """Position of the firing token inside its window."""

    def text(self) -> str:
        return "".join(self.tokens)


def _decode_token(tokenizer: Any, token_id: int) -> str:
    if callable(getattr(tokenizer, "decode", None)):
        return tokenizer.decode([int(token_id)])
    if callable(tokenizer):
        return str(tokenizer(int(token_id)))
    raise TypeError("tokenizer must have .decode(ids) or be a callable id -> str")


@torch.no_grad()
def feature_contexts(
    sae: Any,
    data: Activations,
    feature: int,
    rows: Sequence[int] | Tensor,
    tokenizer: Any,
    *,
    left: int = 12,
    right: int = 4,
    values: Sequence[float] | Tensor | None = None,
) -> list[Context]:
    """Text contexts of latent ``feature`` around each of ``rows`` (row indices into ``data``, e.g. from
    :func:`top_activations`).

    The context is the harvested tokens of the same window at positions ``[p - left, p + right]`` (positions that
    were not harvested, such as the dropped attention sink, are simply absent). Rows are consecutive in a harvested
    stream, so the context is read from neighbouring rows; no tokenisation is repeated. ``tokenizer`` decodes
    single token ids (``.decode([id])``, or a callable ``id -> str``). Rows with ``values[i] <= 0`` are skipped.
    """
    if not isinstance(data, Activations):
        raise TypeError(f"data must be aen_lib.data.harvest.Activations, got {type(data).__name__}")
    _check_int("left", left, 0)
    _check_int("right", right, 0)
    encode, ref = _encode_fn(sae), _sae_param(sae)
    rows_t = torch.as_tensor(rows, dtype=torch.long).flatten()
    vals = None if values is None else torch.as_tensor(values, dtype=torch.float32).flatten()
    if vals is not None and vals.numel() != rows_t.numel():
        raise ValueError(f"values has {vals.numel()} entries but rows has {rows_t.numel()}")
    n = len(data)
    out: list[Context] = []
    for i, r in enumerate(rows_t.tolist()):
        if vals is not None and vals[i] <= 0:
            continue
        if not 0 <= r < n:
            raise ValueError(f"row {r} is out of range for {n} harvested rows")
        w, p = int(data.window_index[r]), int(data.position[r])
        lo, hi = max(0, r - left), min(n, r + right + 1)
        idx = torch.arange(lo, hi)
        keep = (data.window_index[idx] == w) & (data.position[idx] >= p - left) & (data.position[idx] <= p + right)
        idx = idx[keep]
        h = _encode_chunk(encode, data.acts[idx], ref).cpu()  # [c, m]
        if not 0 <= feature < h.shape[1]:
            raise ValueError(f"feature={feature} out of range [0, {h.shape[1]})")
        acts_f = h[:, feature]
        tokens = [_decode_token(tokenizer, t) for t in data.token_ids[idx].tolist()]
        hi_idx = int((idx == r).nonzero()[0, 0])
        out.append(Context(tokens=tokens, highlight=hi_idx, activation=float(acts_f[hi_idx]),
                           token_acts=[float(a) for a in acts_f], window=w, position=p))
    return out


def _visible(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", "⇥")


def render_contexts_text(contexts: Sequence[Context], *, max_chars: int = 110) -> str:
    """Plain-text rendering: one line per context, the firing token in ``[[...]]``, activation first.

    Newlines inside tokens are shown as ``⏎``; lines are cut to about ``max_chars`` characters around the firing
    token.
    """
    lines = []
    for c in contexts:
        before = "".join(_visible(t) for t in c.tokens[: c.highlight])
        after = "".join(_visible(t) for t in c.tokens[c.highlight + 1:])
        mark = f"[[{_visible(c.tokens[c.highlight])}]]"
        room = max(10, max_chars - len(mark))
        before = before[-(2 * room // 3):]
        after = after[: room - len(before)]
        lines.append(f"{c.activation:7.2f}  {before}{mark}{after}")
    return "\n".join(lines)


def render_contexts_html(
    contexts: Mapping[str, Sequence[Context]],
    *,
    color: str = "#D55E00",
    notes: Mapping[str, str] | None = None,
) -> str:
    """HTML rendering: for each title in ``contexts``, one line per context; every token is shaded by the latent's
    activation on it (relative to the largest in that group), and the firing token is bold and underlined.

    ``notes[title]`` (optional) is shown under the title, e.g. the latent's top logit tokens. All text is escaped.
    """
    rgb = tuple(int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    parts = ['<div style="font-family: monospace; font-size: 12px; line-height: 1.6">']
    for title, ctxs in contexts.items():
        parts.append(f'<div style="margin-top: 0.6em"><b>{html.escape(str(title))}</b>')
        if notes and title in notes:
            parts.append(f'<div style="color: #555">{html.escape(notes[title])}</div>')
        scale = max((max(c.token_acts, default=0.0) for c in ctxs), default=0.0) or 1.0
        for c in ctxs:
            spans = []
            for j, tok in enumerate(c.tokens):
                a = c.token_acts[j] if j < len(c.token_acts) else 0.0
                alpha = max(0.0, min(1.0, a / scale))
                style = f"background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.2f})"
                if j == c.highlight:
                    style += "; font-weight: bold; text-decoration: underline"
                spans.append(f'<span style="{style}" title="{a:.2f}">{html.escape(_visible(tok))}</span>')
            parts.append(f'<div><span style="color: #888">{c.activation:6.2f} </span>{"".join(spans)}</div>')
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Logit effect of a decoder direction
# --------------------------------------------------------------------------------------------------------------

# Final normalisation before the unembedding, by config.model_type (attribute path from the CausalLM module).
_FINAL_NORM_PATHS: Mapping[str, tuple[str, ...]] = {
    "llama": ("model", "norm"),
    "mistral": ("model", "norm"),
    "qwen2": ("model", "norm"),
    "gpt_neox": ("gpt_neox", "final_layer_norm"),
}


def unembedding_directions(model: nn.Module) -> tuple[Tensor, bool]:
    """``(W_U diag(g) [V, d], centred)``: the unembedding with the final norm's gain ``g`` folded in (float32).

    For a residual-stream direction ``u`` orthogonal to the current residual, the logits move by
    ``W_U diag(g) u / s`` with ``s`` the final norm's per-token scale (RMS for RMSNorm, standard deviation for
    LayerNorm). LayerNorm (GPT-NeoX) also subtracts the mean over dimensions, so ``u`` must be centred first:
    ``centred`` says so, and :func:`logit_effect` does it. Raises ``ValueError`` for an architecture whose final
    norm is not known.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _FINAL_NORM_PATHS:
        raise ValueError(f"unsupported architecture model_type={model_type!r}; supported: {sorted(_FINAL_NORM_PATHS)}")
    norm: Any = model
    for attr in _FINAL_NORM_PATHS[model_type]:
        norm = getattr(norm, attr)
    W_U = model.get_output_embeddings().weight.detach().float()  # [V, d]
    g = norm.weight.detach().float()  # [d]
    return W_U * g, isinstance(norm, nn.LayerNorm)


@torch.no_grad()
def logit_effect(directions: Tensor, unembedding: tuple[Tensor, bool] | Tensor) -> Tensor:
    """Direct logit effect ``[F, V]`` of residual directions ``directions [F, d]`` (e.g. decoder atoms
    ``sae.W_dec[features]``), book: paper facts, language-model protocols's ``D[:, i]ᵀ W_U`` with the final norm's gain.

    ``unembedding`` is the output of :func:`unembedding_directions` (or a plain ``[V, d]`` matrix). The values are
    logits per unit length of the direction *before* the final norm divides by the token's scale; they rank the
    vocabulary, and their size is comparable across latents of one SAE, not across models.
    """
    W, centred = unembedding if isinstance(unembedding, tuple) else (unembedding, False)
    D = directions.detach().float().to(W.device)
    if D.dim() != 2 or D.shape[1] != W.shape[1]:
        raise ValueError(f"directions must be [F, d={W.shape[1]}], got {tuple(directions.shape)}")
    if centred:
        D = D - D.mean(dim=1, keepdim=True)
    return D @ W.T


def top_logit_tokens(effects: Tensor, tokenizer: Any, k: int = 8) -> list[dict[str, list[tuple[str, float]]]]:
    """For each row of ``effects [F, V]``: the ``k`` most promoted and most suppressed tokens with their values,
    as ``{"up": [(token, value), ...], "down": [...]}``."""
    _check_int("k", k, 1)
    if effects.dim() != 2:
        raise ValueError(f"effects must be [F, V], got {tuple(effects.shape)}")
    out = []
    for row in effects:
        up, down = row.topk(k), (-row).topk(k)
        out.append({
            "up": [(_decode_token(tokenizer, i), float(v)) for v, i in zip(up.values, up.indices.tolist())],
            "down": [(_decode_token(tokenizer, i), -float(v)) for v, i in zip(down.values, down.indices.tolist())],
        })
    return out
