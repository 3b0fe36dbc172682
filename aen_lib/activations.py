"""Residual-stream activations: harvesting from a frozen LM, per-token normalisation, an on-disk cache, and an
iterator of SAE training batches.

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
* **Order.** The paper used a FIFO buffer without shuffling, so SAE batches hold contiguous tokens.
  :class:`ActivationSource` does the same unless ``shuffle_buffer > 0``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from .io import atomic_write
from .lm import lm_dtype, model_device, residual_hook_module, tokenizer_fingerprint, unwrap_block_output, weights_fingerprint

NORMALIZATIONS: tuple[str, ...] = ("per_token_l2", "none")
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_KEY_STRIDE = 1 << 20  # row key = window_index * _KEY_STRIDE + position
_CACHE_FORMAT = "aen_lib.activation_cache"
_CACHE_VERSION = 2  # 2: the manifest records the LM's identity, shards hold a hash of every window
_READABLE_VERSIONS = (1, 2)
_LM_DTYPES = ("", "float32", "float16", "bfloat16", "float64")


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


def _check_harvest_args(layer: int, normalization: str, drop_first: int, outlier_norm_multiple: float | None,
                        batch_size: int, eps: float) -> None:
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

    ``windows``: token ids ``[n_windows, T]`` or an iterable of ``[T]`` windows (see :func:`aen_lib.text.iter_windows`).
    Per window, positions ``< drop_first`` are dropped; with ``outlier_norm_multiple=c``, tokens whose norm exceeds
    ``c`` times the median norm of the window's remaining tokens are dropped too (the per-window median keeps the
    result independent of ``batch_size``). Rows are then normalised per token (``normalization="per_token_l2"``) or
    left raw (``"none"``), cast to ``dtype`` and moved to ``device``. ``window_index`` counts from ``start_window``.
    The progress bar (tqdm, tokens/s through the LM) is off with ``progress=False``.
    """
    _check_harvest_args(layer, normalization, drop_first, outlier_norm_multiple, batch_size, eps)
    from tqdm.auto import tqdm

    lm_device = model_device(model)
    next_window = start_window
    with tqdm(desc=f"harvest L{layer}", unit="tok", unit_scale=True, disable=not progress) as bar:
        for ids in iter_window_batches(windows, batch_size):
            n_win, T = ids.shape
            if drop_first >= T:
                raise ValueError(f"drop_first={drop_first} leaves nothing of windows of length {T}")
            if T >= _KEY_STRIDE:
                raise ValueError(f"window length {T} too long (max {_KEY_STRIDE - 1})")
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


# --------------------------------------------------------------------------------------------------------------
# On-disk cache
# --------------------------------------------------------------------------------------------------------------


class CorruptCacheError(ValueError):
    """An activation-cache shard does not match the checksum in its manifest."""


@dataclass(frozen=True)
class CacheConfig:
    """What a cache holds; two caches mix only if every field is equal (book: paper facts, language-model protocols data, §2.6 normalisation)."""

    model: str
    """Model name, hub id or path (identifies the LM)."""
    layer: int
    """Block whose output is stored."""
    d_model: int
    """Residual width."""
    window: int
    """Tokens per window."""
    normalization: str = "per_token_l2"
    """``"per_token_l2"`` or ``"none"``."""
    eps: float = 1e-6
    """Normalisation epsilon."""
    drop_first: int = 1
    """Positions dropped at the start of every window."""
    outlier_norm_multiple: float | None = None
    """Drop tokens above this multiple of their window's median norm (None: keep all)."""
    dtype: str = "float32"
    """Storage dtype of ``acts``: float32, float16 or bfloat16."""
    dataset: str = ""
    """Which text (e.g. ``"offline"`` or the Pile's hub id)."""
    doc_start: int = 0
    """First document."""
    doc_stop: int | None = None
    """End of the document range (exclusive), None for open-ended."""
    lm_dtype: str = ""
    """dtype the LM ran in (``""``: not part of the key; :meth:`for_lm` fills it)."""
    lm_fingerprint: str = ""
    """:func:`aen_lib.lm.weights_fingerprint` of the LM (``""``: not part of the key; :meth:`for_lm` fills it)."""
    tokenizer_fingerprint: str = ""
    """:func:`aen_lib.lm.tokenizer_fingerprint` of the tokenizer that made the windows (``""``: not recorded)."""

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"CacheConfig.normalization={self.normalization!r}; allowed: {list(NORMALIZATIONS)}")
        if self.dtype not in _STORAGE_DTYPES:
            raise ValueError(f"CacheConfig.dtype={self.dtype!r}; allowed: {list(_STORAGE_DTYPES)}")
        for name in ("layer", "d_model", "window", "drop_first", "doc_start"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"CacheConfig.{name} must be an int >= 0, got {v!r}")
        if self.drop_first >= self.window:
            raise ValueError(f"CacheConfig.drop_first={self.drop_first} must be < window={self.window}")
        if self.lm_dtype not in _LM_DTYPES:
            raise ValueError(f"CacheConfig.lm_dtype={self.lm_dtype!r}; allowed: {list(_LM_DTYPES)}")

    @classmethod
    def for_lm(cls, lm: nn.Module, tokenizer: Any = None, /, **fields_: Any) -> "CacheConfig":
        """A config whose key includes the LM's dtype and weight fingerprint (and the tokenizer's, if given).

        ``lm`` is the loaded model (``model=`` stays the name that identifies it); ``d_model`` defaults to its hidden
        size; every other field is passed through. Use it so that a cache harvested with another dtype or other
        weights lives in another folder (:func:`aen_lib.features.activation_cache_dir` hashes every field).
        """
        fields_.setdefault("d_model", int(lm.config.hidden_size))
        fields_.update(lm_dtype=lm_dtype(lm), lm_fingerprint=weights_fingerprint(lm))
        if tokenizer is not None:
            fields_["tokenizer_fingerprint"] = tokenizer_fingerprint(tokenizer)
        return cls(**fields_)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CacheConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a CacheConfig must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CacheConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def harvest_kwargs(self) -> dict[str, Any]:
        """The :func:`iter_harvest` arguments this config fixes."""
        return dict(layer=self.layer, normalization=self.normalization, eps=self.eps, drop_first=self.drop_first,
                    outlier_norm_multiple=self.outlier_norm_multiple, dtype=_STORAGE_DTYPES[self.dtype])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def window_hash(window: Tensor | Any) -> int:
    """A 63-bit hash of a window's token ids (first bytes of SHA-256 over them as int64)."""
    ids = torch.as_tensor(window).to(torch.int64).reshape(-1).contiguous()
    return int.from_bytes(hashlib.sha256(ids.numpy().tobytes()).digest()[:8], "little") >> 1


def lm_identity(model: nn.Module, tokenizer: Any = None) -> dict[str, Any]:
    """What a cache manifest records about the LM: dtype, weight fingerprint, tokenizer fingerprint (or None)."""
    return {"dtype": lm_dtype(model), "fingerprint": weights_fingerprint(model),
            "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None}


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` durably (fsync) through :func:`aen_lib.io.atomic_write`: temp file, then rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


class ActivationCache:
    """Read access to an activation cache directory: ``manifest.json`` + ``shard_#####.safetensors``.

    The manifest holds the :class:`CacheConfig`, the number of windows done, and per shard its file name, rows,
    window range and SHA-256. Create or extend a cache with :func:`write_activation_cache`.
    """

    MANIFEST = "manifest.json"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest = self.path / self.MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"no activation cache at {self.path} (missing {self.MANIFEST})")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise CorruptCacheError(f"{manifest} is not valid JSON ({e}); the manifest is truncated or corrupt: "
                                    f"delete {self.path} and harvest again") from e
        if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
            raise ValueError(f"{manifest} is not an {_CACHE_FORMAT} manifest (no format={_CACHE_FORMAT!r}); "
                             "is this folder something else?")
        if data.get("version") not in _READABLE_VERSIONS:
            raise ValueError(f"{manifest} has version {data.get('version')!r}; this aen_lib reads versions "
                             f"{list(_READABLE_VERSIONS)}")
        missing = [k for k in ("config", "shards", "n_windows", "complete") if k not in data]
        if missing:
            raise CorruptCacheError(f"{manifest} lacks {missing}; the manifest is corrupt: delete {self.path} "
                                    "and harvest again")
        self.version: int = data["version"]
        self.config = CacheConfig.from_dict(data["config"])
        self.shards: list[dict[str, Any]] = data["shards"]
        self.n_windows: int = data["n_windows"]
        self.complete: bool = data["complete"]
        self.lm: dict[str, Any] | None = data.get("lm")
        """The LM's dtype / weight fingerprint / tokenizer fingerprint at harvest time (None before version 2)."""

    @property
    def n_tokens(self) -> int:
        """Rows stored."""
        return sum(s["n_rows"] for s in self.shards)

    def _read(self, i: int, verify: bool) -> bytes:
        shard = self.shards[i]
        try:
            data = (self.path / shard["file"]).read_bytes()
        except FileNotFoundError as e:
            raise CorruptCacheError(f"shard {shard['file']} listed in {self.path / self.MANIFEST} is missing; "
                                    "delete the cache directory and harvest again") from e
        if verify and _sha256(data) != shard["sha256"]:
            raise CorruptCacheError(
                f"shard {shard['file']} in {self.path} is corrupt: SHA-256 differs from the manifest; "
                "delete the cache directory (or that shard and the manifest entries from it on) and harvest again"
            )
        return data

    def load_shard(self, i: int, verify: bool = True) -> Activations:
        """Shard ``i`` as :class:`Activations` (checksum checked unless ``verify=False``)."""
        from safetensors.torch import load

        tensors = load(self._read(i, verify))
        return Activations(**{k: tensors[k] for k in Activations._TENSORS},
                           normalized=self.config.normalization == "per_token_l2")

    def window_hashes(self, i: int) -> Tensor:
        """[n] int64 :func:`window_hash` of each window of shard ``i`` (windows ``shards[i]["windows"]``)."""
        from safetensors import safe_open

        with safe_open(str(self.path / self.shards[i]["file"]), "pt") as f:
            if "window_hash" not in f.keys():
                raise ValueError(f"shard {self.shards[i]['file']} in {self.path} stores no window hashes "
                                 f"(written by cache version {self.version})")
            return f.get_tensor("window_hash")

    def iter_shards(self, verify: bool = True) -> Iterator[Activations]:
        """Every shard in order."""
        for i in range(len(self.shards)):
            yield self.load_shard(i, verify)

    def verify(self) -> None:
        """Check every shard's checksum; raises :class:`CorruptCacheError` naming the first bad one."""
        for i in range(len(self.shards)):
            self._read(i, True)

    def load(self, verify: bool = True) -> Activations:
        """All rows in memory."""
        return Activations.cat(list(self.iter_shards(verify)))


def _write_manifest(path: Path, config: CacheConfig, shards: list[dict[str, Any]], n_windows: int, complete: bool,
                    lm: dict[str, Any]) -> None:
    data = {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "config": config.to_dict(), "lm": lm,
            "n_windows": n_windows, "complete": complete, "shards": shards}
    _atomic_write(path / ActivationCache.MANIFEST, (json.dumps(data, indent=1) + "\n").encode())


def write_activation_cache(
    path: str | os.PathLike[str],
    model: nn.Module,
    windows: Tensor | Iterable[Tensor],
    config: CacheConfig,
    *,
    max_windows: int | None = None,
    batch_size: int = 64,
    shard_rows: int = 1 << 18,
    early_exit: bool = True,
    progress: bool = True,
    tokenizer: Any = None,
) -> ActivationCache:
    """Harvest ``windows`` into a sharded cache at ``path``, resuming a partly written one (book: paper facts, language-model protocols harvesting).

    ``windows`` must be the same deterministic sequence on every call (e.g. :func:`aen_lib.text.iter_windows` over the
    same documents): windows already stored are skipped without running the LM, after checking that each one
    hashes like the stored window (a different sequence is refused, naming the first differing window). A shard is
    flushed (written to a temporary file, renamed, then recorded in the manifest) once it holds ``shard_rows`` rows,
    always at a window boundary. Stops after ``max_windows`` windows in total, or when ``windows`` runs out
    (then the manifest says ``complete``).

    Refused with ``ValueError``, before anything is written: a cache with a different :class:`CacheConfig`; a
    cache harvested with an LM of another dtype or other weights (:func:`aen_lib.lm.weights_fingerprint`), or,
    when ``tokenizer`` is given here and was given then, another tokenizer; a config whose ``lm_dtype`` /
    ``lm_fingerprint`` / ``tokenizer_fingerprint`` do not match ``model`` / ``tokenizer``; a cache written by an
    aen_lib too old to record these. Existing shards are checksum-verified first.
    """
    if not isinstance(config, CacheConfig):
        raise TypeError(f"config must be a CacheConfig, got {type(config).__name__}")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be an int >= 1, got {shard_rows!r}")
    if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int)
                                    or max_windows < 0):
        raise ValueError(f"max_windows must be None or an int >= 0, got {max_windows!r}")
    from safetensors.torch import save

    root = Path(path)
    lm = lm_identity(model, tokenizer)
    _check_config_matches_lm(config, lm)
    if (root / ActivationCache.MANIFEST).is_file():
        cache = ActivationCache(root)
        if cache.config != config:
            old, new = cache.config.to_dict(), config.to_dict()
            diff = ", ".join(f"{k}: cache has {old[k]!r}, requested {new[k]!r}" for k in old if old[k] != new[k])
            raise ValueError(f"refusing to mix activations in {root}: config differs ({diff}); use another directory")
        if cache.lm is None:
            raise ValueError(f"refusing to reuse {root}: it was written by an older aen_lib (cache version "
                             f"{cache.version}) that did not record the LM's dtype and weights or the token windows, "
                             "so it cannot be checked against this model; delete it and harvest again")
        _check_same_lm(root, cache.lm, lm)
        cache.verify()
        shards, n_done = list(cache.shards), cache.n_windows
    else:
        root.mkdir(parents=True, exist_ok=True)
        shards, n_done = [], 0
        _write_manifest(root, config, shards, n_done, False, lm)
        cache = None
    known = {s["file"] for s in shards}
    for stale in root.glob("shard_*.safetensors"):  # from an interrupted flush
        if stale.name not in known:
            stale.unlink()

    if max_windows is not None and n_done >= max_windows:
        return ActivationCache(root)
    it = iter(windows)  # a tensor iterates over its rows
    if cache is not None and n_done:
        _check_same_windows(cache, it)
    stop = None if max_windows is None else max_windows - n_done
    todo = _CountingIter(islice(it, 0, stop))

    pending: list[Activations] = []
    n_pending = 0

    def flush() -> None:
        nonlocal pending, n_pending
        if not pending:
            return
        acts = Activations.cat(pending)
        name = f"shard_{len(shards):05d}.safetensors"
        first = shards[-1]["windows"][1] if shards else 0
        n_windows = n_done + todo.n
        tensors = {k: v.contiguous().cpu() for k, v in acts.to_tensors().items()}
        tensors["window_hash"] = torch.tensor(todo.hashes[first - n_done:n_windows - n_done], dtype=torch.int64)
        data = save(tensors)
        _atomic_write(root / name, data)
        shards.append({"file": name, "n_rows": len(acts), "windows": [first, n_windows], "sha256": _sha256(data)})
        _write_manifest(root, config, shards, n_windows, False, lm)
        pending, n_pending = [], 0

    for acts in iter_harvest(model, todo, batch_size=batch_size, early_exit=early_exit, device="cpu",
                             start_window=n_done, progress=progress, **config.harvest_kwargs()):
        if acts.acts.shape[1] != config.d_model:
            raise ValueError(f"model gives d={acts.acts.shape[1]} but config.d_model={config.d_model}")
        pending.append(acts)
        n_pending += len(acts)
        if n_pending >= shard_rows:
            flush()
    flush()
    # windows after the last shard that gave no rows (all filtered) are not recorded; a later call redoes them
    covered = shards[-1]["windows"][1] if shards else 0
    _write_manifest(root, config, shards, covered, True, lm)
    return ActivationCache(root)


def _check_config_matches_lm(config: CacheConfig, lm: dict[str, Any]) -> None:
    pairs = (("lm_dtype", "dtype", "the model's dtype"), ("lm_fingerprint", "fingerprint", "the model's weights"),
             ("tokenizer_fingerprint", "tokenizer", "the tokenizer"))
    for field, key, what in pairs:
        want = getattr(config, field)
        if want and lm[key] is not None and want != lm[key]:
            raise ValueError(f"CacheConfig.{field}={want!r} but {what} gives {lm[key]!r}; build the config with "
                             "CacheConfig.for_lm(model, tokenizer, ...) for the model you harvest with")


def _check_same_lm(root: Path, stored: dict[str, Any], lm: dict[str, Any]) -> None:
    if stored.get("dtype") != lm["dtype"]:
        raise ValueError(f"refusing to mix activations in {root}: LM dtype differs (cache harvested in "
                         f"{stored.get('dtype')}, this model is {lm['dtype']}); load the LM in {stored.get('dtype')} "
                         "or use another directory")
    if stored.get("fingerprint") != lm["fingerprint"]:
        raise ValueError(f"refusing to mix activations in {root}: LM weights differ (fingerprint "
                         f"{stored.get('fingerprint')} in the cache, {lm['fingerprint']} for this model); "
                         "use the same checkpoint or another directory")
    if stored.get("tokenizer") and lm["tokenizer"] and stored["tokenizer"] != lm["tokenizer"]:
        raise ValueError(f"refusing to mix activations in {root}: tokenizer differs (fingerprint "
                         f"{stored['tokenizer']} in the cache, {lm['tokenizer']} now); use another directory")


def _check_same_windows(cache: ActivationCache, it: Iterator[Any]) -> None:
    """Consume the first ``cache.n_windows`` windows of ``it``, refusing any that differs from the stored one."""
    i = 0
    for s, shard in enumerate(cache.shards):
        stored = cache.window_hashes(s).tolist()
        first, last = shard["windows"]
        if len(stored) != last - first:
            raise CorruptCacheError(f"shard {shard['file']} in {cache.path} holds {len(stored)} window hashes for "
                                    f"windows {first}..{last - 1}; delete the cache directory and harvest again")
        for h in stored:
            w = next(it, None)
            if w is None:
                raise ValueError(f"refusing to extend {cache.path}: the windows given run out after {i} windows but "
                                 f"the cache already holds {cache.n_windows}; pass the window sequence that built it")
            if window_hash(w) != h:
                acts = cache.load_shard(s)
                kept = acts.window_index == i
                old = acts.token_ids[kept][:8].tolist()
                pos = acts.position[kept][:8].tolist()
                new = torch.as_tensor(w).reshape(-1)[pos].tolist() if pos else []
                raise ValueError(f"refusing to extend {cache.path}: the windows given differ from the stored ones, "
                                 f"first at window index {i} (stored tokens at positions {pos}: {old}; given: {new}); "
                                 "pass the same window sequence (same text, document range, tokenizer and window "
                                 "length) or use another directory")
            i += 1


class _CountingIter:
    """Iterator wrapper that counts the items taken and records their :func:`window_hash`."""

    def __init__(self, it: Iterable[Any]) -> None:
        self._it = iter(it)
        self.n = 0
        self.hashes: list[int] = []

    def __iter__(self) -> "_CountingIter":
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        self.n += 1
        self.hashes.append(window_hash(item))
        return item


# --------------------------------------------------------------------------------------------------------------
# SAE training batches
# --------------------------------------------------------------------------------------------------------------


class _CacheRows:
    """Rows of a cache; key = global row index."""

    def __init__(self, cache: ActivationCache, verify: bool) -> None:
        self.cache, self.verify = cache, verify

    def iter_from(self, key: int) -> Iterator[tuple[Tensor, Tensor]]:
        offset = 0
        for i, shard in enumerate(self.cache.shards):
            n = shard["n_rows"]
            if offset + n > key:
                acts = self.cache.load_shard(i, self.verify).acts
                lo = max(0, key - offset)
                yield acts[lo:], torch.arange(offset + lo, offset + n)
            offset += n


class _ModelRows:
    """Rows harvested on the fly; key = window_index * _KEY_STRIDE + position."""

    def __init__(self, model: nn.Module, windows: Callable[[], Iterable[Tensor]] | Tensor, harvest_kwargs: dict[str, Any]) -> None:
        self.model, self.windows, self.kwargs = model, windows, harvest_kwargs

    def iter_from(self, key: int) -> Iterator[tuple[Tensor, Tensor]]:
        # start at the LM batch that holds the key, so batches (and hence float results) match an unbroken run
        bs = self.kwargs["batch_size"]
        w0 = (key // _KEY_STRIDE) // bs * bs
        source = self.windows if isinstance(self.windows, Tensor) else self.windows()
        todo = islice(iter(source), w0, None)
        for acts in iter_harvest(self.model, todo, start_window=w0, **self.kwargs):
            keys = acts.window_index.cpu() * _KEY_STRIDE + acts.position.cpu()
            mask = keys >= key
            yield acts.acts[mask.to(acts.acts.device)], keys[mask]


class ActivationSource:
    """Iterator of SAE training batches ``x [batch_size, d]`` with a resumable state (book: paper facts, language-model protocols batching).

    Build it with :meth:`from_cache` (an :class:`ActivationCache`) or :meth:`from_model` (harvest while training).
    Rows come in stream order, like the paper's FIFO buffer, unless ``shuffle_buffer=n > 0``: then the stream is cut
    into consecutive blocks of ``n`` rows and each block is permuted with a generator seeded by
    ``(seed, epoch, block start)``. ``loop=True`` restarts the stream at its end (a new epoch), as the paper's
    training stream does; otherwise the last batch may be smaller (dropped with ``drop_last=True``).

    :meth:`state_dict` after a batch, passed to :meth:`load_state_dict` of a fresh source over the same data, makes
    it continue with exactly the next batch. Iterate over it, or call :meth:`sample` (the trainer's data-source
    protocol, :mod:`aen_lib.train`).
    """

    def __init__(self, rows: Any, batch_size: int, *, loop: bool = False, shuffle_buffer: int = 0, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        """``rows`` is a row provider: ``rows.iter_from(key)`` yields chunks ``(x [n, d], keys [n] int64)`` of every
        row whose key is ``>= key``, keys strictly increasing, the same rows on every call (see :meth:`from_cache`
        and :meth:`from_model` for the two built-in providers). Batches are moved to ``device``/``dtype`` if given.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be an int >= 0 (0 = no shuffling), got {shuffle_buffer!r}")
        self._rows = rows
        self.batch_size, self.loop, self.shuffle_buffer, self.seed = batch_size, loop, shuffle_buffer, seed
        self.drop_last, self.device, self.dtype = drop_last, device, dtype
        self._state = {"epoch": 0, "block_key": 0, "block_offset": 0, "batches": 0, "done": False}
        self._live: Iterator[Tensor] | None = None  # the iterator behind sample()

    @classmethod
    def from_cache(cls, cache: ActivationCache | str | os.PathLike[str], batch_size: int, *, verify: bool = True,
                   **kwargs: Any) -> "ActivationSource":
        """Batches from an on-disk cache (shard checksums checked on read unless ``verify=False``)."""
        if not isinstance(cache, ActivationCache):
            cache = ActivationCache(cache)
        return cls(_CacheRows(cache, verify), batch_size, **kwargs)

    @classmethod
    def from_model(cls, model: nn.Module, windows: Callable[[], Iterable[Tensor]] | Tensor, layer: int, batch_size: int,
                   *, lm_batch_size: int = 64, normalization: str = "per_token_l2", eps: float = 1e-6,
                   drop_first: int = 1, outlier_norm_multiple: float | None = None, progress: bool = False,
                   **kwargs: Any) -> "ActivationSource":
        """Batches harvested on the fly. ``windows`` is a ``[n, T]`` tensor or a zero-argument callable returning a
        fresh iterable of the same windows each time (called at every epoch and on resume)."""
        if not isinstance(windows, Tensor) and not callable(windows):
            raise TypeError("windows must be a [n, T] tensor or a callable returning an iterable of windows")
        _check_harvest_args(layer, normalization, drop_first, outlier_norm_multiple, lm_batch_size, eps)
        hk = dict(layer=layer, batch_size=lm_batch_size, normalization=normalization, eps=eps, drop_first=drop_first,
                  outlier_norm_multiple=outlier_norm_multiple, progress=progress, device=model_device(model))
        return cls(_ModelRows(model, windows, hk), batch_size, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch yielded (JSON-serialisable)."""
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        missing = set(self._state) - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        self._state = {k: state[k] for k in self._state}
        self._live = None

    def sample(self, batch_size: int) -> Tensor:
        """The next batch ``[batch_size, d]`` (the :class:`aen_lib.sources.DataSource` protocol).

        ``batch_size`` must equal the source's; raises ``StopIteration`` when a non-looping stream is exhausted.
        """
        if batch_size != self.batch_size:
            raise ValueError(f"batch_size={batch_size} differs from this source's batch_size={self.batch_size}")
        if self._live is None:
            self._live = iter(self)
        return next(self._live)

    def _perm(self, n: int, epoch: int, block_key: int) -> Tensor | None:
        if self.shuffle_buffer == 0:
            return None
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 7_919 + block_key) % (1 << 62))
        return torch.randperm(n, generator=g)

    def _blocks(self, key: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(block start key, rows [n, d], keys [n]) blocks of up to ``block`` rows starting at ``key``."""
        size = self.shuffle_buffer or self.batch_size
        rows: list[Tensor] = []
        keys: list[Tensor] = []
        n = 0
        for r, k in self._rows.iter_from(key):
            rows.append(r)
            keys.append(k)
            n += len(k)
            while n >= size:
                R, K = torch.cat(rows), torch.cat(keys)
                yield int(K[0]), R[:size], K[:size]
                rows, keys, n = [R[size:]], [K[size:]], n - size
        if n:
            R, K = torch.cat(rows), torch.cat(keys)
            yield int(K[0]), R, K

    def __iter__(self) -> Iterator[Tensor]:
        st = self._state
        if st["done"]:
            return
        pending: list[Tensor] = []
        n_pending = 0
        while True:
            epoch, start_key, skip = st["epoch"], st["block_key"], st["block_offset"]
            any_rows = False
            for block_key, rows, _ in self._blocks(start_key):
                any_rows = True
                perm = self._perm(len(rows), epoch, block_key)
                if perm is not None:
                    rows = rows[perm.to(rows.device)]
                offset = skip if block_key == start_key else 0
                while offset < len(rows):
                    take = min(self.batch_size - n_pending, len(rows) - offset)
                    pending.append(rows[offset:offset + take])
                    n_pending += take
                    offset += take
                    if n_pending == self.batch_size:
                        batch = torch.cat(pending)
                        pending, n_pending = [], 0
                        st.update(epoch=epoch, block_key=block_key, block_offset=offset, batches=st["batches"] + 1)
                        yield batch.to(device=self.device, dtype=self.dtype)
            if not any_rows and start_key == 0:
                raise ValueError("the activation stream is empty")
            if not self.loop:
                break
            st.update(epoch=epoch + 1, block_key=0, block_offset=0)
        st["done"] = True
        if n_pending and not self.drop_last:
            st["batches"] += 1
            yield torch.cat(pending).to(device=self.device, dtype=self.dtype)
