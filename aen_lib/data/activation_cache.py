"""The on-disk activation cache: what it holds (:class:`CacheConfig`), where it lives (:func:`activation_cache_dir`),
writing and resuming it (:func:`write_activation_cache`) and reading it (:class:`ActivationCache`). Shards are
checksummed; the manifest records the LM's dtype, weight fingerprint and a hash of every window, so that a cache
is never extended with activations of another model, configuration or text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from .harvest import NORMALIZATIONS, Activations, iter_harvest
from ..store import atomic_write
from .lm import default_cache_dir, lm_dtype, tokenizer_fingerprint, weights_fingerprint

_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_CACHE_FORMAT = "aen_lib.activation_cache"
"""The manifest's format tag, written into every cache: kept from before the module moved into ``aen_lib.data``, so
caches harvested then still open (it names a file format, not where the code lives)."""
_CACHE_VERSION = 2  # 2: the manifest records the LM's identity, shards hold a hash of every window
_READABLE_VERSIONS = (1, 2)
_LM_DTYPES = ("", "float32", "float16", "bfloat16", "float64")


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
    """:func:`aen_lib.data.lm.weights_fingerprint` of the LM (``""``: not part of the key; :meth:`for_lm` fills it)."""
    tokenizer_fingerprint: str = ""
    """:func:`aen_lib.data.lm.tokenizer_fingerprint` of the tokenizer that made the windows (``""``: not recorded)."""

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
        weights lives in another folder (:func:`activation_cache_dir` hashes every field).
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
    """Write ``data`` durably (fsync) through :func:`aen_lib.store.atomic_write`: temp file, then rename."""

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

    ``windows`` must be the same deterministic sequence on every call (e.g. :func:`aen_lib.data.text.iter_windows` over the
    same documents): windows already stored are skipped without running the LM, after checking that each one
    hashes like the stored window (a different sequence is refused, naming the first differing window). A shard is
    flushed (written to a temporary file, renamed, then recorded in the manifest) once it holds ``shard_rows`` rows,
    always at a window boundary. Stops after ``max_windows`` windows in total, or when ``windows`` runs out
    (then the manifest says ``complete``).

    Refused with ``ValueError``, before anything is written: a cache with a different :class:`CacheConfig`; a
    cache harvested with an LM of another dtype or other weights (:func:`aen_lib.data.lm.weights_fingerprint`), or,
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


def activation_cache_dir(config: CacheConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/activations/<model>-L<layer>-<12 hex digits>`` for an activation cache of ``config`` (book: paper facts, language-model protocols).

    The hex digits hash every :class:`CacheConfig` field, so two chapters asking for the same activations share one
    cache, and a change of model, layer, normalisation, text or document range gets a fresh folder; build the config
    with :meth:`CacheConfig.for_lm` and the LM's dtype and weight fingerprint are in the key too (the cache itself
    also refuses to mix configurations, LMs of another dtype or weights, and other window sequences). ``<cache>`` is :func:`aen_lib.data.lm.default_cache_dir` (``cache_dir`` or
    ``~/.cache/aen_lib``), never the repository.
    """
    if not isinstance(config, CacheConfig):
        raise TypeError(f"config must be a CacheConfig, got {type(config).__name__}")
    key_hash = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(config.model).name or config.model).strip("_") or "model"
    return default_cache_dir(cache_dir) / "activations" / f"{model}-L{config.layer}-{key_hash}"
