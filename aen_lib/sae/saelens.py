"""SAELens interchange: the ``cfg.json`` that makes an exported SAE splice correctly, and reading SAELens folders.

An SAE folder in the SAELens layout is ``cfg.json`` + ``sae_weights.safetensors`` holding ``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]`` (and ``threshold [d_sae]`` for JumpReLU).
:mod:`aen_lib.sae.io` writes the tensors; this module writes and reads the configuration around them.

**Normalisation.** The book's SAEs are trained on tokens rescaled to norm √d (``x·√d/‖x‖``, mode ``per_token_l2`` of
:func:`aen_lib.data.harvest.normalize_per_token`), and the spliced evaluation multiplies each token's norm back. That
map and its inverse are exactly SAELens's ``normalize_activations="constant_norm_rescale"``, so writing it in
``cfg.json`` lets a SAELens user feed *raw* residual-stream activations and get our spliced reconstruction. Writing
``"none"`` instead would silently reproduce the raw-splice bug of the reference code (see :mod:`aen_lib.evaluation.splice`).

**Metadata.** SAELens reads ``cfg.json["metadata"]`` only when ``metadata.sae_lens_version`` is 6.0 or later;
otherwise it treats the file as a pre-6.0 config, drops the model and hook names and the normalisation, and assumes
``prepend_bos=True``. :func:`saelens_cfg` therefore always writes a 6.x version, ``prepend_bos: false`` (our
windows carry no BOS) and the hook in TransformerLens naming (``blocks.L.hook_resid_post``).

Architectures, aen_lib → SAELens: ``relu_l1``, ``elastic_net``, ``adaptive_lasso``, ``aen`` → ``standard`` (at
inference they are all ``ReLU((x - b_dec) W_enc + b_enc)``); ``topk`` (and ``topk_auxk``) → ``topk``; ``jumprelu``
and ``batchtopk`` → ``jumprelu`` with a per-latent ``threshold`` (BatchTopK's inference rule is one global threshold,
written once per latent). SAELens → aen_lib (:func:`read_saelens_folder`): ``standard`` → ``relu_l1``, ``topk`` →
``topk``, ``jumprelu`` → ``jumprelu``; anything else is refused with a message naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from .architectures import get_architecture
from .config import SAEConfig

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"

#: ``metadata.sae_lens_version`` written into exported configs: the SAELens release these files were checked against
#: (any version >= 6.0 makes SAELens read the metadata instead of treating the file as a pre-6.0 config).
SAELENS_FORMAT_VERSION = "6.54.12"

#: aen_lib normalisation (:data:`aen_lib.data.harvest.NORMALIZATIONS`) -> SAELens ``normalize_activations``.
NORMALIZATION_TO_SAELENS: Mapping[str, str] = {"per_token_l2": "constant_norm_rescale", "none": "none"}
_SAELENS_TO_NORMALIZATION = {v: k for k, v in NORMALIZATION_TO_SAELENS.items()}

#: SAELens architectures that :func:`read_saelens_folder` can turn into an aen_lib SAE, and what they become.
SAELENS_TO_ARCHITECTURE: Mapping[str, str] = {"standard": "relu_l1", "topk": "topk", "jumprelu": "jumprelu"}


def saelens_architecture(architecture: str) -> str:
    """The SAELens inference architecture of an aen_lib ``architecture``, as the architecture declares it
    (:attr:`aen_lib.sae.architectures.Architecture.saelens_architecture`); ``ValueError`` if it has none."""
    target = get_architecture(architecture).saelens_architecture
    if target is None:
        raise ValueError(f"architecture={architecture!r} has no SAELens export; give its class a saelens_architecture "
                         "(and saelens_tensors) before saving it")
    return target


def hook_name(layer: int) -> str:
    """TransformerLens/SAELens name of the residual stream after block ``layer``: ``blocks.L.hook_resid_post``."""
    return f"blocks.{int(layer)}.hook_resid_post"


def _normalization(normalization: str | None, metadata: Mapping[str, Any]) -> str:
    if normalization is None:  # chapters have passed it as metadata under either spelling
        normalization = metadata.get("normalization", metadata.get("normalisation"))
    if normalization is None:
        raise ValueError("say how the SAE's training inputs were normalised: normalization='per_token_l2' "
                         "(x·√d/‖x‖, the book's LM activations) or 'none' (raw inputs, e.g. synthetic data)")
    if normalization not in NORMALIZATION_TO_SAELENS:
        raise ValueError(f"normalization={normalization!r}; allowed: {sorted(NORMALIZATION_TO_SAELENS)}")
    return normalization


def saelens_cfg(
    sae_config: Mapping[str, Any] | Any,
    *,
    dtype: str,
    normalization: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The SAELens ``cfg.json`` dict of a saved aen_lib SAE (SAELens >= 6 format).

    ``sae_config`` is an :class:`aen_lib.sae.config.SAEConfig` or its ``to_dict()`` (needs ``d_in``, ``d_sae``,
    ``architecture``, and ``k`` for TopK); it is also stored whole under ``cfg["aen_lib"]`` so aen_lib can rebuild the
    exact module. ``dtype`` is the weights' dtype name (``"float32"``). ``normalization`` is how training normalised
    its inputs: ``"per_token_l2"`` -> ``normalize_activations="constant_norm_rescale"``, ``"none"`` -> ``"none"``;
    if omitted it is read from ``metadata["normalization"]`` (or ``"normalisation"``), and it is an error to give
    neither. ``metadata`` keys go to ``cfg["metadata"]``; ``hook_layer`` also fills ``hook_name`` when that is
    missing. Always written: ``sae_lens_version`` (a 6.x version), ``prepend_bos=False``, ``normalization``.
    Keys SAELens understands: ``model_name``, ``hook_name``, ``hook_layer``, ``context_size``, ``dataset_path``,
    ``hf_hook_name``, ``model_class_name``, ``exclude_special_tokens``, ``seqpos_slice``.
    """
    c = dict(sae_config.to_dict() if hasattr(sae_config, "to_dict") else sae_config)
    for key in ("d_in", "d_sae", "architecture"):
        if key not in c:
            raise ValueError(f"sae_config lacks {key!r}; pass an SAEConfig or its to_dict()")
    meta = dict(metadata or {})
    norm = _normalization(normalization, meta)
    arch = saelens_architecture(c["architecture"])
    meta.pop("normalisation", None)
    meta["normalization"] = norm
    meta.setdefault("sae_lens_version", SAELENS_FORMAT_VERSION)
    meta.setdefault("sae_lens_training_version", None)  # not trained by SAELens
    meta.setdefault("prepend_bos", False)
    if "hook_layer" in meta and meta["hook_layer"] is not None and not meta.get("hook_name"):
        meta["hook_name"] = hook_name(meta["hook_layer"])
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": int(c["d_in"]),
        "d_sae": int(c["d_sae"]),
        "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": NORMALIZATION_TO_SAELENS[norm],
        "reshape_activations": "none",
        "metadata": meta,
        "aen_lib": c,
    }
    cfg.update(get_architecture(c["architecture"]).saelens_fields(SAEConfig.from_dict(c)))
    return cfg


# --------------------------------------------------------------------------------------------------------------
# Reading a SAELens folder
# --------------------------------------------------------------------------------------------------------------


def _read_cfg(folder: Path) -> dict[str, Any]:
    path = folder / CFG_NAME
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected an SAE folder with {CFG_NAME} + {WEIGHTS_NAME}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; expected an SAE folder with {CFG_NAME} + {WEIGHTS_NAME}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object; not an SAE config")
    return raw


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; expected an SAE folder with {CFG_NAME} + {WEIGHTS_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{path} could not be read ({e}); the file is truncated or corrupt") from e


def _check_shapes(path: Path, tensors: Mapping[str, torch.Tensor], d_in: int, d_sae: int, threshold: bool) -> None:
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if threshold:
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"{path} lacks tensor {name!r} (has {sorted(tensors)})")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, expected {shape} "
                             f"for d_in={d_in}, d_sae={d_sae}")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{path}: {name} holds NaN or infinite values")


def read_saelens_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read an SAE folder in the SAELens layout: ``(tensors, sae_config_dict, metadata)``.

    Works for folders written by aen_lib (they carry ``cfg["aen_lib"]``, returned as is) and for SAELens-trained
    SAEs of architecture ``standard``, ``topk`` or ``jumprelu``. ``tensors`` holds ``W_enc, W_dec, b_enc, b_dec`` (and
    ``threshold [d_sae]`` for JumpReLU/BatchTopK) in the aen_lib convention: ``h = act((x - b_dec) W_enc + b_enc)``,
    ``x_hat = h W_dec + b_dec``. ``sae_config_dict`` builds an :class:`aen_lib.sae.config.SAEConfig`; a SAELens
    ``standard`` SAE becomes ``relu_l1`` with ``l1=0`` (the same map at inference; its training coefficient is not
    part of the inference file). ``metadata`` is ``cfg["metadata"]`` with ``normalization`` set to the aen_lib name
    (``per_token_l2`` or ``none``): feed the SAE inputs normalised that way.

    Exact conversions: ``apply_b_dec_to_input=False`` is folded into ``b_enc`` (``b_enc + b_dec W_enc``); TopK's
    ``rescale_acts_by_decoder_norm=True`` is folded into the weights (encoder columns times ‖W_dec,i‖, decoder rows
    divided by it); JumpReLU thresholds below 0 are clamped to 0 (SAELens applies a ReLU first, so they act as 0).
    Refused with ``ValueError`` naming the setting: other architectures (gated, batchtopk training checkpoints,
    matryoshka, transcoders...), ``normalize_activations`` other than ``none``/``constant_norm_rescale``
    (``expected_average_only_in`` needs a scaling factor the folder does not hold), ``reshape_activations="hook_z"``.
    """
    folder = Path(folder)
    raw = _read_cfg(folder)
    cfg_path, w_path = folder / CFG_NAME, folder / WEIGHTS_NAME
    meta = dict(raw.get("metadata") or {})
    if "aen_lib" in raw:  # written by aen_lib: the full config is there

        if not isinstance(raw["aen_lib"], dict):
            raise ValueError(f"{cfg_path}: the 'aen_lib' section is a {type(raw['aen_lib']).__name__}, not an object")
        c = SAEConfig.from_dict(dict(raw["aen_lib"])).to_dict()  # validates every field, naming a bad one
        meta.setdefault("normalization", _SAELENS_TO_NORMALIZATION.get(raw.get("normalize_activations", "none"), "none"))
        tensors = _read_tensors(folder)
        threshold = get_architecture(c["architecture"]).saelens_architecture == "jumprelu"  # a layout with thresholds
        _check_shapes(w_path, tensors, c["d_in"], c["d_sae"], threshold)
        return tensors, c, meta

    arch = raw.get("architecture", "standard")
    if arch not in SAELENS_TO_ARCHITECTURE:
        raise ValueError(f"{cfg_path}: SAELens architecture {arch!r} is not supported by aen_lib; "
                         f"supported: {sorted(SAELENS_TO_ARCHITECTURE)}")
    for key in ("d_in", "d_sae"):
        if not isinstance(raw.get(key), int) or raw[key] <= 0:
            raise ValueError(f"{cfg_path}: {key}={raw.get(key)!r} must be a positive integer")
    norm_sl = raw.get("normalize_activations", "none")
    if norm_sl is None or norm_sl is False:
        norm_sl = "none"
    if norm_sl not in _SAELENS_TO_NORMALIZATION:
        raise ValueError(f"{cfg_path}: normalize_activations={norm_sl!r} is not supported by aen_lib; supported: "
                         f"{sorted(_SAELENS_TO_NORMALIZATION)} (expected_average_only_in needs a dataset scaling "
                         "factor that the folder does not store)")
    if raw.get("reshape_activations", "none") not in ("none", None):
        raise ValueError(f"{cfg_path}: reshape_activations={raw['reshape_activations']!r} (attention hook_z SAEs) "
                         "is not supported by aen_lib")
    d_in, d_sae = raw["d_in"], raw["d_sae"]
    tensors = _read_tensors(folder)
    _check_shapes(w_path, tensors, d_in, d_sae, arch == "jumprelu")
    t = {k: tensors[k].clone() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if not raw.get("apply_b_dec_to_input", True):
        # SAELens encodes x W_enc + b_enc; ours subtracts b_dec first, so add it back through b_enc
        t["b_enc"] = (t["b_enc"].double() + t["b_dec"].double() @ t["W_enc"].double()).to(t["b_enc"].dtype)
    sae_config: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "architecture": SAELENS_TO_ARCHITECTURE[arch]}
    if arch == "topk":
        k = raw.get("k")
        if not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(f"{cfg_path}: topk SAE with k={k!r}; need an integer 1 <= k <= d_sae={d_sae}")
        sae_config["k"] = k
        if raw.get("rescale_acts_by_decoder_norm", False):
            n = t["W_dec"].double().norm(dim=1)  # [d_sae]
            if not (n > 0).all():
                raise ValueError(f"{w_path}: a decoder row has norm 0; rescale_acts_by_decoder_norm cannot be folded")
            t["W_enc"] = (t["W_enc"].double() * n).to(t["W_enc"].dtype)
            t["b_enc"] = (t["b_enc"].double() * n).to(t["b_enc"].dtype)
            t["W_dec"] = (t["W_dec"].double() / n.unsqueeze(1)).to(t["W_dec"].dtype)
    if arch == "jumprelu":
        t["threshold"] = tensors["threshold"].clamp_min(0)
    meta["normalization"] = _SAELENS_TO_NORMALIZATION[norm_sl]
    meta["saelens_architecture"] = arch
    return t, sae_config, meta


def build_sae(tensors: Mapping[str, torch.Tensor], sae_config: Mapping[str, Any], *,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """An :class:`aen_lib.sae.model.SAE` in eval mode holding ``tensors`` (the output of :func:`read_saelens_folder`)."""
    from .model import SAE

    cfg = SAEConfig.from_dict(dict(sae_config))
    sae = SAE(cfg, device=device, dtype=dtype or tensors["W_enc"].dtype)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(tensors[name])
        sae.architecture.load_saelens_tensors(0, {k: v.to(sae.W_enc.device) for k, v in tensors.items()})
    sae.eval()
    return sae


def load_saelens_sae(folder: str | Path, *, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None):
    """``(sae, metadata)`` from any folder :func:`read_saelens_folder` accepts. Feed the SAE inputs normalised as
    ``metadata["normalization"]`` says (``per_token_l2``: :func:`aen_lib.data.harvest.normalize_per_token`)."""
    tensors, sae_config, meta = read_saelens_folder(folder)
    return build_sae(tensors, sae_config, device=device, dtype=dtype), meta

