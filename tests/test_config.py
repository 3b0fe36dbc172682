"""SAEConfig validation and JSON round trip."""

import json

import pytest

from aen_lib import SAEConfig


def test_json_round_trip(tmp_path):
    cfg = SAEConfig(d_in=8, d_sae=32, architecture="aen", l1=5e-3, l2=1e-4, gamma=1.0, ema_beta=0.999)
    p = tmp_path / "c.json"
    cfg.to_json(p)
    assert SAEConfig.from_json(p) == cfg
    assert SAEConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(l1=-1.0), "l1"),
        (dict(l2=-1e-3), "l2"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=-0.5), "gamma"),
        (dict(ema_beta=1.0), "ema_beta"),
        (dict(ema_beta=-0.1), "ema_beta"),
        (dict(w_min=5.0, w_max=1.0), "w_min"),
        (dict(ref_top_pct=0.0), "ref_top_pct"),
        (dict(ref_top_pct=1.5), "ref_top_pct"),
        (dict(architecture="topk", k=33), "k"),
        (dict(architecture="topk", k=0), "k"),
        (dict(architecture="batchtopk", k=40), "k"),
        (dict(architecture="gated"), "architecture"),
        (dict(architecture="relu_l1", l2=1e-3), "l2"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(d_sae=0), "d_sae"),
        (dict(l1=float("nan")), "l1"),
        (dict(k=2.5), "k"),
    ],
)
def test_bad_values_raise_naming_the_field(kwargs, field):
    base = dict(d_in=8, d_sae=32)
    base.update(kwargs)
    with pytest.raises(ValueError) as e:
        SAEConfig(**base)
    assert str(e.value).startswith(f"{field}=")


def test_unknown_field_and_corrupt_json(tmp_path):
    with pytest.raises(ValueError, match="unknown SAEConfig field"):
        SAEConfig.from_dict({"d_in": 4, "d_sae": 8, "lambda1": 0.1})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        SAEConfig.from_json(bad)
    with pytest.raises(FileNotFoundError):
        SAEConfig.from_json(tmp_path / "missing.json")
