"""Save/load in the SAELens standard layout."""

import json

import pytest
import torch
from safetensors.torch import load_file

from aen_lib import SAE, SAEConfig
from aen_lib.sae.io import load_sae, save_sae


@pytest.mark.parametrize(
    "arch, kw", [("aen", dict(l1=1e-3, l2=1e-4)), ("topk", dict(k=4)), ("jumprelu", dict(l0=1e-3)),
                 ("batchtopk", dict(k=4)), ("topk_auxk", dict(k=4, options={"auxk_coef": 0.1}))]
)
def test_round_trip_gives_the_same_codes(tmp_path, arch, kw):
    sae = SAE(SAEConfig(d_in=6, d_sae=20, architecture=arch, seed=5, **kw))
    x = torch.randn(12, 6)
    sae.train()
    sae(x)  # BatchTopK learns its inference threshold in training mode
    with torch.no_grad():
        sae.b_dec.add_(0.3)
    sae.eval()
    folder = save_sae(sae, tmp_path / "sae", metadata={"hook_name": "blocks.3.hook_resid_post"}, normalization="none")
    loaded, meta = load_sae(folder)
    assert meta["hook_name"] == "blocks.3.hook_resid_post" and meta["normalization"] == "none"
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded(x).x_hat, sae(x).x_hat)


def test_saelens_layout(tmp_path):
    sae = SAE(SAEConfig(d_in=6, d_sae=20, architecture="aen", l1=1e-3, l2=1e-4))
    save_sae(sae, tmp_path / "s", normalization="none")
    t = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "W_enc": (6, 20), "W_dec": (20, 6), "b_enc": (20,), "b_dec": (6,)
    }
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["apply_b_dec_to_input"] is True
    assert cfg["d_in"] == 6 and cfg["d_sae"] == 20
    # training-only state (the adaptive EMA) is not part of the inference file
    assert not any("ema" in k for k in t)


def test_no_silent_overwrite_and_failed_save_keeps_old(tmp_path, monkeypatch):
    a = SAE(SAEConfig(d_in=4, d_sae=8, architecture="relu_l1", l1=1e-3, seed=1))
    b = SAE(SAEConfig(d_in=4, d_sae=8, architecture="relu_l1", l1=1e-3, seed=2))
    save_sae(a, tmp_path / "s", normalization="none")
    with pytest.raises(FileExistsError):
        save_sae(b, tmp_path / "s", normalization="none")
    import aen_lib.sae.io as io_mod

    def boom(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod, "save_file", boom)
    with pytest.raises(OSError):
        save_sae(b, tmp_path / "s", overwrite=True, normalization="none")
    loaded, _ = load_sae(tmp_path / "s")
    assert torch.equal(loaded.W_enc, a.W_enc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path)
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="relu_l1", l1=1e-3))
    save_sae(sae, tmp_path / "s", normalization="none")
    w = tmp_path / "s" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt"):
        load_sae(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("{oops")
    with pytest.raises(ValueError, match="corrupt"):
        load_sae(tmp_path / "s")


def test_shown_path_hides_the_machine_folders_of_the_checkout(tmp_path):
    from aen_lib.store import CHECKOUT, shown_path

    assert shown_path(CHECKOUT / "reference") == "reference"
    assert shown_path("reference/x") == "reference/x"  # a relative path is left as given
    assert shown_path(tmp_path) == str(tmp_path)  # outside the checkout: as given
