"""Saving and loading trained SAEs.

A trained SAE is written as a folder with ``cfg.json`` + ``sae_weights.safetensors`` in the SAELens layout
(``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``; the
SAELens "standard" format). Each architecture says what it exports to (:mod:`aen_lib.sae.architectures`): at inference
an AEN-SAE *is* a standard ReLU SAE with ``apply_b_dec_to_input=True``, so the folder loads anywhere a standard SAE
loads; TopK (with or without AuxK) is written as ``architecture: "topk"`` with ``k``; JumpReLU and BatchTopK as
``"jumprelu"`` with a per-latent ``threshold``. An architecture without an export is refused, never written as
another one. The full :class:`SAEConfig` is kept
under ``cfg.json["aen_lib"]`` so that :func:`load_sae` rebuilds the exact module. Training-only state (adaptive
EMA, optimiser, data position) lives in training checkpoints (:mod:`aen_lib.training.train`), not here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .model import SAE
from .saelens import load_saelens_sae, saelens_cfg

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"


def _exportable(sae: SAE) -> SAE:
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be an aen_lib SAE, got {type(sae).__name__}")
    if sae.stacked:
        raise ValueError(f"this SAE is a stack of {sae.n_members} members; save each with save_sae(sae.member(j), ...)")
    if sae.architecture.saelens_architecture is None:
        raise ValueError(f"architecture={sae.cfg.architecture!r} has no SAELens export; give its class a "
                         "saelens_architecture and saelens_tensors() before saving it")
    return sae


def sae_tensors(sae: SAE) -> dict[str, torch.Tensor]:
    """The inference tensors of a single SAE in SAELens layout (contiguous CPU copies)."""
    _exportable(sae)
    t = {"W_enc": sae.W_enc.detach(), "W_dec": sae.W_dec.detach(), "b_enc": sae.b_enc.detach(),
         "b_dec": sae.b_dec.detach(), **sae.architecture.saelens_tensors(0)}
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in t.items()}


def save_sae(sae: SAE, folder: str | Path, *, metadata: dict[str, Any] | None = None,
             normalization: str | None = None, overwrite: bool = False) -> Path:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` into ``folder``.

    The folder is assembled in a temporary sibling and renamed into place, so a failed save never leaves a
    half-written SAE, and an existing folder is only replaced when ``overwrite=True``.
    ``metadata`` (e.g. model_name, hook_name, hook_layer, normalisation) goes to ``cfg.json["metadata"]``.
    """
    _exportable(sae)
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(sae_tensors(sae), str(tmp / WEIGHTS_NAME))
        cfg = saelens_cfg(sae.cfg, dtype=str(sae.W_enc.dtype), normalization=normalization, metadata=metadata)
        (tmp / CFG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_sae(
    folder: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[SAE, dict[str, Any]]:
    """Load an SAE folder: one written by :func:`save_sae`, or one trained by SAELens (standard, topk, jumprelu;
    :func:`aen_lib.sae.saelens.read_saelens_folder` says what is refused). Returns ``(sae, metadata)``; the SAE is in eval
    mode and expects inputs normalised as ``metadata["normalization"]`` says."""
    return load_saelens_sae(folder, device=device, dtype=dtype)
