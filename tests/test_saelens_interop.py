"""Interop with the real SAELens package: exported folders splice correctly on raw activations, and SAELens-trained
folders load into aen_lib (or are refused clearly)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from aen_lib.sae.config import SAEConfig
from aen_lib.evaluation.splice import splice_sae
from aen_lib.sae.io import sae_tensors
from aen_lib.sae.model import SAE
from aen_lib.sae.saelens import hook_name, load_saelens_sae, read_saelens_folder, saelens_cfg

sae_lens = pytest.importorskip("sae_lens", reason="the optional test dependency sae-lens is not installed "
                                                   "(pip install 'aen-lib[test]')")

D_IN, D_SAE, K = 16, 48, 4
ARCHS = ("relu_l1", "elastic_net", "adaptive_lasso", "aen", "topk", "topk_auxk", "jumprelu", "batchtopk")
META = {"model_name": "tiny-llama", "hook_layer": 2, "context_size": 24, "dataset_path": "offline:pydoc"}


def _our_sae(arch: str) -> SAE:
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if arch in ("topk", "topk_auxk", "batchtopk") else 0,
                        seed=3))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(D_IN, generator=g) * 0.3)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.2)
        if arch == "jumprelu":
            sae.architecture.log_threshold[0].copy_((torch.rand(D_SAE, generator=g) * 0.3 + 0.05).log())
        if arch == "batchtopk":
            sae.architecture.threshold.fill_(0.15)
            sae.architecture.threshold_initialised.fill_(True)
    return sae.eval()


def _raw_activations(n_tokens: int = 40) -> torch.Tensor:
    """[2, n/2, d] raw residual-like activations: an offset, and token norms spread over two decades."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n_tokens, D_IN, generator=g) + 2.0
    scale = torch.logspace(0, 2, n_tokens)[torch.randperm(n_tokens, generator=g)]
    return (x * scale.unsqueeze(1)).reshape(2, n_tokens // 2, D_IN)


def _export(sae: SAE, folder, normalization: str) -> dict:
    folder.mkdir()
    cfg = saelens_cfg(sae.cfg, dtype="float32", normalization=normalization, metadata=META)
    save_file(sae_tensors(sae), str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_forward_on_raw_activations_equals_our_splice(arch, tmp_path):
    sae = _our_sae(arch)
    _export(sae, tmp_path / arch, "per_token_l2")
    sl = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
    resid = _raw_activations()
    ours = splice_sae(resid, sae, skip_first=0)  # normalise -> SAE -> multiply the norm back
    with torch.no_grad():
        theirs = sl(resid.reshape(-1, D_IN)).reshape(resid.shape)
    scale = resid.norm(dim=-1, keepdim=True)
    assert ((theirs - ours).norm(dim=-1, keepdim=True) / scale).max() < 1e-5
    # the splice is not the identity, and feeding SAELens the same weights without the normalisation differs a lot
    assert ((ours - resid).norm(dim=-1, keepdim=True) / scale).mean() > 0.05
    with torch.no_grad():
        raw = sae(resid.reshape(-1, D_IN)).x_hat.reshape(resid.shape)
    assert ((raw - ours).norm(dim=-1, keepdim=True) / scale).mean() > 0.05


@pytest.mark.parametrize("arch", ("aen", "topk", "batchtopk"))
def test_saelens_reads_the_metadata(arch, tmp_path):
    _export(_our_sae(arch), tmp_path / "f", "per_token_l2")
    sl = sae_lens.SAE.load_from_disk(str(tmp_path / "f"))
    assert sl.cfg.normalize_activations == "constant_norm_rescale"
    assert sl.cfg.architecture() == {"aen": "standard", "topk": "topk", "batchtopk": "jumprelu"}[arch]
    m = sl.cfg.metadata
    assert (m.model_name, m.hook_name, m.context_size, m.dataset_path) == ("tiny-llama", hook_name(2), 24,
                                                                           "offline:pydoc")
    assert m.prepend_bos is False
    assert m.hook_layer == 2
    assert int(m.sae_lens_version.split(".")[0]) >= 6


def test_no_normalisation_exports_none(tmp_path):
    sae = _our_sae("aen")
    cfg = _export(sae, tmp_path / "f", "none")
    assert cfg["normalize_activations"] == "none"
    sl = sae_lens.SAE.load_from_disk(str(tmp_path / "f"))
    x = _raw_activations().reshape(-1, D_IN) / 30
    with torch.no_grad():
        torch.testing.assert_close(sl(x), sae(x).x_hat, rtol=1e-5, atol=1e-5)


def test_normalisation_must_be_stated():
    with pytest.raises(ValueError, match="normalised"):
        saelens_cfg(SAEConfig(d_in=4, d_sae=8), dtype="float32")
    with pytest.raises(ValueError, match="normalization='layer_norm'"):
        saelens_cfg(SAEConfig(d_in=4, d_sae=8), dtype="float32", normalization="layer_norm")
    # the spelling chapter 8 used in its metadata is understood
    cfg = saelens_cfg(SAEConfig(d_in=4, d_sae=8), dtype="float32", metadata={"normalisation": "per_token_l2"})
    assert cfg["normalize_activations"] == "constant_norm_rescale"
    assert cfg["metadata"]["normalization"] == "per_token_l2" and "normalisation" not in cfg["metadata"]


@pytest.mark.parametrize("arch", ARCHS)
def test_our_export_reads_back(arch, tmp_path):
    sae = _our_sae(arch)
    _export(sae, tmp_path / "f", "per_token_l2")
    back, meta = load_saelens_sae(tmp_path / "f")
    assert back.cfg == sae.cfg and meta["normalization"] == "per_token_l2"
    x = _raw_activations().reshape(-1, D_IN) / 10
    with torch.no_grad():
        torch.testing.assert_close(back(x).x_hat, sae(x).x_hat)


# ------------------------------------------------------------------------------------------------------------
# SAELens-trained folders into aen_lib
# ------------------------------------------------------------------------------------------------------------


def _saelens_sae(arch: str, **cfg):
    from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    cls, cfg_cls = {"standard": (StandardSAE, StandardSAEConfig), "topk": (TopKSAE, TopKSAEConfig),
                    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig)}[arch]
    sl = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **cfg))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in sl.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.4 if name != "threshold" else 0.1))
    return sl


SAELENS_CASES = {
    "standard": ("standard", {}),
    "standard_no_b_dec_in": ("standard", {"apply_b_dec_to_input": False}),
    "standard_constant_norm": ("standard", {"normalize_activations": "constant_norm_rescale"}),
    "topk": ("topk", {"k": K}),
    "topk_rescaled": ("topk", {"k": K, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {}),
}


@pytest.mark.parametrize("case", sorted(SAELENS_CASES))
def test_saelens_trained_folder_loads_into_aen_lib(case, tmp_path):
    arch, cfg = SAELENS_CASES[case]
    sl = _saelens_sae(arch, **cfg)
    sl.save_model(tmp_path / case)
    sae, meta = load_saelens_sae(tmp_path / case)
    x = _raw_activations().reshape(-1, D_IN) / 10
    with torch.no_grad():
        want = sl(x)
        if meta["normalization"] == "per_token_l2":
            got = splice_sae(x.unsqueeze(0), sae, skip_first=0)[0]
        else:
            got = sae(x).x_hat
    assert meta["saelens_architecture"] == arch
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_unsupported_saelens_architecture_is_refused(tmp_path):
    from sae_lens.saes import GatedSAE, GatedSAEConfig

    GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(tmp_path / "gated")
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        read_saelens_folder(tmp_path / "gated")


def test_unsupported_saelens_normalisation_is_refused(tmp_path):
    _saelens_sae("standard", normalize_activations="layer_norm").save_model(tmp_path / "ln")
    with pytest.raises(ValueError, match="normalize_activations='layer_norm' is not supported"):
        read_saelens_folder(tmp_path / "ln")


def test_build_sae_rejects_wrong_shapes(tmp_path):
    sl = _saelens_sae("standard")
    sl.save_model(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["d_sae"] = D_SAE + 1
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"W_enc has shape \(16, 48\), expected \(16, 49\)"):
        read_saelens_folder(tmp_path / "s")
