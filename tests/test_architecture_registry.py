"""An architecture is one file: a throwaway one, registered from a temporary module, trains, sweeps, saves, loads,
plots and appears in the command line without any other file of the library changing; a file dropped in the
architectures folder registers itself; and every list of architectures the library and the chapters use (the
chapters' methods, the ℓ1 family, the hard-sparsity group, Figure 2's methods) is read from the specs, so it holds
the new one too."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import sys
from pathlib import Path

import pandas as pd
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


# --- every list of architectures outside the architecture files is read from the registry ----------------------------

BUILT_IN = ["relu_l1", "elastic_net", "adaptive_lasso", "aen", "topk", "topk_auxk", "batchtopk", "jumprelu"]
CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
REGISTRY_CHAPTERS = ("06_spiked_dictionary", "08_pythia_reproduction")


def _code_cells(chapter: str) -> list[ast.Module]:
    nb = json.loads((CHAPTERS / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    return [ast.parse("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"]


def chapter_value(chapter: str, name: str) -> object:
    """The value the chapter's assignment ``name = ...`` gives with the registry as it stands now."""
    from aen_lib.sae.architectures import SPECS, architecture_names

    for tree in _code_cells(chapter):
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                expr = compile(ast.Expression(node.value), f"{chapter}:{name}", "eval")
                return eval(expr, {"architecture_names": architecture_names, "SPECS": SPECS})
    raise AssertionError(f"{chapter} assigns no {name}")


def test_the_registry_keeps_the_books_order_and_reads_every_module_of_its_folder():
    import pkgutil

    import aen_lib.sae.architectures as pkg

    assert pkg.architecture_names() == list(pkg.SPECS) == list(pkg.ARCHITECTURES) == BUILT_IN
    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)} - {"base"}
    assert modules == set(pkg.BUILT_IN_ORDER) and all(f"{pkg.__name__}.{m}" in sys.modules for m in modules)
    with pytest.raises(ValueError, match="not a config field"):
        pkg.architecture_names(uses="lambda1")


def test_a_file_dropped_in_the_architectures_folder_registers_itself_after_the_built_in_ones(tmp_path):
    import aen_lib.sae.architectures as pkg

    (tmp_path / "a_dropped_test.py").write_text(THROWAWAY.replace(NAME, "dropped_test"))  # sorts first by name
    pkg.__path__.append(str(tmp_path))  # the folder, as pkgutil and the import system see it
    try:
        order = pkg._register_modules()
        assert order == [*pkg.BUILT_IN_ORDER, "a_dropped_test"]
        assert pkg.architecture_names() == [*BUILT_IN, "dropped_test"]
        assert pkg.architecture_spec("dropped_test").color == "#123456"
    finally:
        pkg.__path__.remove(str(tmp_path))
        pkg.unregister_architecture("dropped_test")
        sys.modules.pop(f"{pkg.__name__}.a_dropped_test", None)


def test_the_chapters_spell_out_no_list_the_registry_gives():
    """A literal list in a chapter that holds exactly the architectures of a registry group (all of them, those that
    read or do not read a config field, the paper's, Figure 2's) is one a new architecture would miss."""
    from aen_lib.results.records import FIGURE2_CORE
    from aen_lib.sae.architectures import CONFIG_FIELDS, architecture_names

    groups = [architecture_names(), architecture_names(in_paper=True), architecture_names(in_paper=False),
              list(FIGURE2_CORE)]
    groups += [architecture_names(uses=f) for f in CONFIG_FIELDS] + [architecture_names(lacks=f) for f in CONFIG_FIELDS]
    groups = {frozenset(g) for g in groups if len(g) >= 2}
    for chapter in REGISTRY_CHAPTERS:
        for tree in _code_cells(chapter):
            for node in ast.walk(tree):
                if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                    names = frozenset(e.value for e in node.elts if isinstance(e, ast.Constant))
                    assert names not in groups, f"{chapter} line {node.lineno} lists {sorted(names)}: read the registry"


def test_every_registry_driven_list_takes_in_a_new_architecture(throwaway):
    """The throwaway (an l1 penalty, not in the paper) and two more names on its class, one the paper would train and
    one with a hard k rule, land in every list the library and the chapters derive from the specs."""
    from aen_lib.results.records import FIGURE2_CORE, figure2_findings
    from aen_lib.sae.architectures import ArchitectureSpec, architecture_names, register_architecture
    from aen_lib.sae.architectures import unregister_architecture

    assert architecture_names(uses="l1")[-1] == NAME and NAME not in architecture_names(lacks="l1")
    assert NAME not in FIGURE2_CORE
    register_architecture(ArchitectureSpec("paper_test", "Paper (test)", "#654321", "h", in_paper=True, uses=("l1",)),
                          ArchitectureSpec("hard_test", "Hard (test)", "#abcdef", "h", uses=("k",))
                          )(throwaway.ShrunkReLU)
    try:
        # the chapters' lists: chapter 6's row order, chapter 8's hard-sparsity group
        assert chapter_value("06_spiked_dictionary", "METHODS") == [*BUILT_IN, NAME, "paper_test", "hard_test"]
        assert chapter_value("08_pythia_reproduction", "HARD") == ["topk", "topk_auxk", "batchtopk", "jumprelu",
                                                                   "hard_test"]
        # Figure 2's methods: the paper's, adaptive lasso apart, AEN last
        assert list(FIGURE2_CORE) == ["relu_l1", "elastic_net", "topk", "paper_test", "aen"]
        rows = [{"rho": 0.0, "method": a, "variant": a, "seed": 0, "l0": 16.0, "dead_pct": 0.0, "ev": 0.9}
                for a in ["relu_l1", "elastic_net", "topk", "paper_test", "aen"]]
        found = figure2_findings(pd.DataFrame(rows), k=16, target_l0=16).set_index("statement")["measured here"]
        equal = found["ρ = 0: all methods reconstruct about equally well"]
        assert "TopK 0.90, Paper (test) 0.90, AEN (ours) 0.90" in equal
    finally:
        unregister_architecture("paper_test")
        unregister_architecture("hard_test")


def test_the_theory_measures_read_the_spec_of_a_new_architecture(throwaway):
    from aen_lib import SAE, SAEConfig
    from aen_lib.theory import geometry, mechanism

    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture=NAME, l1=0.01, seed=0))
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    gap = mechanism.amortisation_gap(sae, x)
    assert gap["gap_reference"] == "exact" and gap["gap_rel_mean"] >= -1e-6  # the ℓ1 family's exact reference
    assert mechanism.jacobian_norms(sae, x).shape == (32,)
    assert mechanism.weights_vs_firing(sae, x) is None  # no adaptive weights (its spec reads no γ)
    assert math.isfinite(geometry.amortisation_gap(sae, x).rel_code_error)
    jump = SAE(SAEConfig(d_in=8, d_sae=16, architecture="jumprelu", l0=0.01, seed=0))
    with pytest.raises(ValueError, match=f"l1-family SAE .*{NAME}"):
        geometry.amortisation_gap(jump, x)
    with pytest.raises(ValueError, match=f"supported: .*{NAME}"):
        mechanism.amortisation_gap(jump, x)


JUMP_THROWAWAY = '''
from aen_lib.sae.architectures import ArchitectureSpec, register_architecture
from aen_lib.sae.architectures.jumprelu import JumpReLU


@register_architecture(ArchitectureSpec("jump_test", "Jump (test)", "#123456", "h",
                                        uses=("l0", "jumprelu_init_threshold", "jumprelu_bandwidth")))
class JumpTest(JumpReLU):
    """JumpReLU under another name: SAELens's jumprelu layout, with its threshold."""
'''


def test_a_saelens_folder_is_checked_by_the_layout_its_architecture_exports_to(tmp_path):
    from safetensors.torch import load_file, save_file

    from aen_lib import SAE, SAEConfig
    from aen_lib.sae.architectures import unregister_architecture
    from aen_lib.sae.io import save_sae
    from aen_lib.sae.saelens import read_saelens_folder

    path = tmp_path / "jump_test_architecture.py"
    path.write_text(JUMP_THROWAWAY)
    spec = importlib.util.spec_from_file_location("jump_test_architecture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        folder = save_sae(SAE(SAEConfig(d_in=8, d_sae=16, architecture="jump_test", l0=0.01)), tmp_path / "saved",
                          normalization="none")
        tensors, cfg, _ = read_saelens_folder(folder)
        assert cfg["architecture"] == "jump_test" and tensors["threshold"].shape == (16,)
        weights = next(folder.glob("*.safetensors"))
        save_file({k: v for k, v in load_file(weights).items() if k != "threshold"}, weights)
        with pytest.raises(ValueError, match="lacks tensor 'threshold'"):
            read_saelens_folder(folder)
    finally:
        unregister_architecture("jump_test")


OPTION_THROWAWAY = '''
from aen_lib.sae.architectures import ArchitectureSpec, register_architecture
from aen_lib.sae.architectures.base import Option
from aen_lib.sae.architectures.topk import TopK


@register_architecture(ArchitectureSpec("damped_topk_test", "Damped TopK (test)", "#654321", "h", uses=("k",)))
class DampedTopK(TopK):
    """TopK whose kept codes are scaled by a damping factor of its own, made up for the options test."""

    OPTIONS = {"damping_test": Option(1.0, lambda v: isinstance(v, float) and 0 < v <= 1, "must be a float in (0, 1]",
                                      "factor every kept code is multiplied by")}

    def __init__(self, cfgs, start, device, dtype):
        super().__init__(cfgs, start, device, dtype)
        self.hyper("damping", [self.option(c, "damping_test") for c in cfgs], device, dtype)

    def activate(self, pre, ctx):
        return super().activate(pre, ctx) * self.damping.reshape(-1, 1, 1)
'''


def test_a_new_architecture_declares_and_checks_its_own_option_in_its_own_file(tmp_path):
    """Its option is set, swept, stored, checked (a bad value names the option and the allowed range) and used, all
    declared in its module: the config module never names it, and the stored form of every other config is as before."""
    import aen_lib.sae.config as config_module
    from aen_lib import SAE, SAEConfig
    from aen_lib.results.records import variant_id
    from aen_lib.sae.architectures import unregister_architecture
    from aen_lib.training.sweep import expand_grid

    topk = SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3)
    before = (topk.to_dict(), variant_id(topk))
    path = tmp_path / "option_test_architecture.py"
    path.write_text(OPTION_THROWAWAY)
    spec = importlib.util.spec_from_file_location("option_test_architecture", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        cfg = SAEConfig(d_in=8, d_sae=16, architecture="damped_topk_test", k=3, options={"damping_test": 0.5})
        assert cfg.to_dict()["options"] == {"damping_test": 0.5} and SAEConfig.from_dict(cfg.to_dict()) == cfg
        grid = expand_grid(dict(d_in=8, d_sae=16), {"damped_topk_test": {"k": [3], "damping_test": [0.5, 1.0]}})
        assert grid[0] == cfg and grid[1].options == {"damping_test": 1.0}
        for bad in (0.0, 1.5, "half"):
            with pytest.raises(ValueError) as e:
                SAEConfig(d_in=8, d_sae=16, architecture="damped_topk_test", k=3, options={"damping_test": bad})
            assert str(e.value) == f"options['damping_test']={bad!r} is invalid: must be a float in (0, 1]"
        with pytest.raises(ValueError, match=r"^options\['damping_test'\]=0\.5 is invalid: topk takes the options"):
            SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3, options={"damping_test": 0.5})  # not topk's
        # the option reaches the architecture: codes are TopK's, halved
        damped, plain = SAE(cfg), SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3))
        plain.load_state_dict(damped.state_dict())
        x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(damped.encode(x), 0.5 * plain.encode(x))
        assert (topk.to_dict(), variant_id(topk)) == before  # no other config's stored form moved
        source = Path(config_module.__file__).read_text(encoding="utf-8")
        assert "damping_test" not in source and "damped_topk_test" not in source
    finally:
        unregister_architecture("damped_topk_test")
