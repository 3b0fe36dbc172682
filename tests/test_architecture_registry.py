"""An architecture is one file: a throwaway one, registered from a temporary module, trains, sweeps, saves, loads,
plots and appears in the command line without any other file of the library changing."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

THROWAWAY = '''
import torch
from aen_lib.sae.architectures import Architecture, ArchitectureSpec, register_architecture


@register_architecture(ArchitectureSpec("shrunk_relu_test", "Shrunk ReLU (test)", "#123456", "h", uses=("l1",)))
class ShrunkReLU(Architecture):
    """ReLU after a fixed shrink of 0.01, an l1 penalty, and one running statistic (how often each latent fired),
    made up for the registry test."""

    ACTIVATION_COUNTS = (3, 4, 3)
    saelens_architecture = "standard"  # saved in SAELens's layout (its shrink is this library's to apply)

    def __init__(self, cfgs, start, device, dtype):
        super().__init__(cfgs, start, device, dtype)
        self.hyper("l1", [c.l1 for c in cfgs], device, dtype)
        self.register_buffer("fired", torch.zeros(len(cfgs), cfgs[0].d_sae, device=device, dtype=torch.float32))

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        if not cfg.l1 > 0:
            raise ValueError(f"shrunk_relu_test needs l1 > 0, got {cfg.l1!r}")

    @classmethod
    def label(cls, cfg):
        return f"shrunk λ1={cfg.l1:g}"

    def activate(self, pre, ctx):
        return torch.relu(pre - 0.01)

    def penalty(self, h, pre, x, x_hat, w_dec, ctx):
        if ctx.update:
            with torch.no_grad():
                self.fired += (h > 0).float().sum(dim=1)
        z = h.new_zeros(self.size)
        return {"l1": self.l1 * h.sum(dim=(-2, -1)) / h.shape[-2], "l2": z, "aux": z}
'''

NAME = "shrunk_relu_test"


@pytest.fixture
def throwaway(tmp_path):
    path = tmp_path / "throwaway_architecture.py"
    path.write_text(THROWAWAY)
    spec = importlib.util.spec_from_file_location("throwaway_architecture", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throwaway_architecture"] = module
    spec.loader.exec_module(module)
    yield module
    from aen_lib.sae.architectures import unregister_architecture

    unregister_architecture(NAME)
    sys.modules.pop("throwaway_architecture", None)


def test_a_throwaway_architecture_works_everywhere_from_its_own_file(throwaway, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from aen_lib import SAE, SAEConfig
    from aen_lib.cli import main
    from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
    from aen_lib.sae.io import load_sae, save_sae
    from aen_lib.training.planner import sae_memory
    from aen_lib.book.plotting import architecture_color, architecture_label, dead_ev_vs_l0_figure
    from aen_lib.training.sweep import train_sweep
    from aen_lib.training.train import TrainConfig, train

    data = SpikedDictionaryConfig(n=8, m=32, k=2, rho=0.3, seed=1)
    tc = TrainConfig(steps=30, batch_size=16, log_every=10, dead_window_steps=10, final_avg_logs=2, progress=False)
    cfg = SAEConfig(d_in=8, d_sae=16, architecture=NAME, l1=0.01, seed=0)
    assert cfg.label == "shrunk λ1=0.01"
    with pytest.raises(ValueError, match="needs l1 > 0"):  # its own validation runs through SAEConfig
        SAEConfig(d_in=8, d_sae=16, architecture=NAME, l1=0.0)

    # trains, and its running state moves
    sae = SAE(cfg)
    res = train(sae, SpikedDictionaryData(data), tc)
    assert math.isfinite(res.final["total"]) and res.final["l0"] > 0
    assert float(sae.architecture.fired.sum()) > 0

    # sweeps beside a built-in architecture, each member as it trains alone
    cfgs = [cfg, SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3, seed=1)]
    sweep = train_sweep(cfgs, SpikedDictionaryData(data), tc, checkpoint_dir=tmp_path / "sweep")
    assert torch.allclose(sweep.members[0].sae.W_enc, sae.W_enc, atol=1e-5)
    assert torch.allclose(sweep.members[0].sae.architecture.fired, sae.architecture.fired)

    # saves and loads as itself (an inference export: the running state stays with the trainer's checkpoints)
    folder = save_sae(sae, tmp_path / "saved", normalization="none")
    back, _ = load_sae(folder)
    assert back.cfg.architecture == NAME and torch.equal(back.W_dec, sae.W_dec)
    x = SpikedDictionaryData(data).sample(64)[0]
    with torch.no_grad():
        assert torch.allclose(back.encode(x), sae.encode(x))
        assert bool((sae.encode(x) == torch.relu(sae.pre_activation(x) - 0.01)).all())  # its own activation

    # the planner and the plots know it
    assert sae_memory(8, 16, 16, architecture=NAME)["total"] > 0
    assert architecture_color(NAME) == "#123456" and architecture_label(NAME) == "Shrunk ReLU (test)"
    fig = dead_ev_vs_l0_figure([{"architecture": NAME, "l0": res.final["l0"], "dead_pct": res.final["dead_pct"],
                                 "explained_variance": res.final["ev"]}])
    assert any(line.get_color() == "#123456" for ax in fig.axes for line in ax.lines)

    # and the command line trains it
    assert main(["--architecture", NAME, "--l1", "0.01", "--out", str(tmp_path / "cli"), "--n", "16", "--m", "32",
                 "--data-k", "3", "--steps", "20", "--batch-size", "16", "--dead-window", "10", "--log-every", "10",
                 "--no-progress"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert NAME in capsys.readouterr().out


def test_a_name_cannot_be_registered_twice_and_specs_name_real_fields(throwaway):
    from aen_lib.sae.architectures import Architecture, ArchitectureSpec, register_architecture

    with pytest.raises(ValueError, match="already registered"):
        register_architecture(ArchitectureSpec(NAME, "again", "#000000", "o"))(type("Again", (Architecture,), {}))
    with pytest.raises(ValueError, match="config fields"):
        ArchitectureSpec("typo_test", "typo", "#000000", "o", uses=("lambda1",))
