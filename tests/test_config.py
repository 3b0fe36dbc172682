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


# --- the stored form: committed records keep their identity --------------------------------------------------------

def test_every_committed_record_keeps_its_variant_id_and_its_config():
    """A record's file name is the variant id of its stored config; rebuilding the config from it must give that id
    and that dict back, key order included (a field moved to an architecture's options must not change either)."""
    from pathlib import Path

    from aen_lib.results.records import read_result, variant_id

    paths = sorted((Path(__file__).resolve().parent.parent / "reference").glob("*/*-*.json"))
    assert len(paths) >= 100  # the committed sets are there
    for path in paths:
        stored = read_result(path, "sae")["sae_config"]
        cfg = SAEConfig.from_dict(dict(stored))
        assert variant_id(cfg) == path.stem, path
        assert list(cfg.to_dict().items()) == list(stored.items()), path


def test_a_top_level_option_is_one_setting_however_it_is_written():
    """JumpReLU's and BatchTopK's settings live in their files as options, yet stay keywords and top-level keys."""
    from aen_lib.results.records import variant_id
    from aen_lib.training.sweep import expand_grid

    base = dict(d_in=8, d_sae=16, architecture="jumprelu", l0=0.01)
    ways = [SAEConfig(**base, jumprelu_bandwidth=0.25),
            SAEConfig(**base, options={"jumprelu_bandwidth": 0.25}),
            SAEConfig.from_dict({**base, "jumprelu_bandwidth": 0.25}),
            SAEConfig(**base, jumprelu_bandwidth=0.5).replace(jumprelu_bandwidth=0.25),
            expand_grid(dict(d_in=8, d_sae=16), {"jumprelu": {"l0": [0.01], "jumprelu_bandwidth": [0.25]}})[0]]
    assert all(c == ways[0] for c in ways) and len({variant_id(c) for c in ways}) == 1
    d = ways[0].to_dict()
    assert (d["jumprelu_bandwidth"], d["jumprelu_init_threshold"], d["batchtopk_threshold_beta"]) == (0.25, 0.001, 0.99)
    assert d["options"] == {} and list(d)[-2:] == ["seed", "options"]
    # a default is not kept, an integer is the float it was as a field: one config, one id
    assert SAEConfig(**base, jumprelu_bandwidth=0.001).options == {}
    assert SAEConfig(**base, jumprelu_bandwidth=1).to_dict()["jumprelu_bandwidth"] == 1.0
    assert variant_id(SAEConfig(**base, jumprelu_bandwidth=1)) == variant_id(SAEConfig(**base, jumprelu_bandwidth=1.0))
    # checked by the architecture that declares it, named as the keyword
    with pytest.raises(ValueError, match=r"^jumprelu_bandwidth=-1\.0 is invalid: must be a finite number > 0"):
        SAEConfig(**base, jumprelu_bandwidth=-1.0)
    with pytest.raises(ValueError, match=r"^batchtopk_threshold_beta=1\.0 is invalid: must be a number in \[0, 1\)"):
        SAEConfig(d_in=8, d_sae=16, architecture="batchtopk", k=2, batchtopk_threshold_beta=1.0)
    # another architecture's setting: only its default, which every stored record holds
    assert SAEConfig(d_in=8, d_sae=16, jumprelu_bandwidth=0.001) == SAEConfig(d_in=8, d_sae=16)
    with pytest.raises(ValueError, match=r"^jumprelu_bandwidth=0\.5 is invalid: aen takes .*default 0\.001"):
        SAEConfig(d_in=8, d_sae=16, architecture="aen", jumprelu_bandwidth=0.5)
    with pytest.raises(ValueError, match="given twice"):
        SAEConfig(**base, jumprelu_bandwidth=0.2, options={"jumprelu_bandwidth": 0.3})
