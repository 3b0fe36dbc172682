"""The sweep engine (aen_lib.training.sweep): a member trained in a stack equals the same SAE trained alone."""

import math

import pytest
import torch

from aen_lib import SAE, SAEConfig
from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from aen_lib.sae.io import load_sae, save_sae
from aen_lib.sae.architectures import ARCHITECTURES
from aen_lib.training.planner import sae_memory
from aen_lib.training.sweep import AUTHORS_SPIKED_GRID, expand_grid, largest_tensor_bytes, member_bytes, plan_chunks, train_sweep
from aen_lib.training.train import TrainConfig, Trainer, train

DATA = SpikedDictionaryConfig(n=8, m=32, k=2, rho=0.3, seed=1)
BASE = dict(d_in=8, d_sae=32)
TC = TrainConfig(steps=30, batch_size=16, log_every=5, dead_window_steps=10, final_avg_logs=3, progress=False)


def every_architecture() -> list[SAEConfig]:
    """Two members per architecture with different hyperparameters, chosen so that every running state moves
    within 30 steps (adaptive weights switch on after a short warmup; JumpReLU thresholds sit inside the kernel)."""
    c = [
        SAEConfig(**BASE, architecture="aen", l1=1e-2, l2=1e-3, gamma=1.0, ema_beta=0.9, ref_top_pct=0.1,
                  warmup_steps=5, ramp_steps=5, seed=3),
        SAEConfig(**BASE, architecture="topk", k=5, seed=0),
        SAEConfig(**BASE, architecture="relu_l1", l1=1e-2, seed=1),
        SAEConfig(**BASE, architecture="elastic_net", l1=1e-2, l2=1e-2, seed=2),
        SAEConfig(**BASE, architecture="adaptive_lasso", l1=2e-2, gamma=0.5, ema_beta=0.8, ref_top_pct=0.3,
                  warmup_steps=3, ramp_steps=0, seed=4),
        SAEConfig(**BASE, architecture="topk", k=2, seed=5),
        SAEConfig(**BASE, architecture="batchtopk", k=2, seed=6),
        SAEConfig(**BASE, architecture="batchtopk", k=4, seed=7, batchtopk_threshold_beta=0.5),
        SAEConfig(**BASE, architecture="jumprelu", l0=1e-2, jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.5,
                  seed=8),
        SAEConfig(**BASE, architecture="jumprelu", l0=1e-1, jumprelu_init_threshold=0.05, jumprelu_bandwidth=0.3,
                  seed=9),
        SAEConfig(**BASE, architecture="aen", l1=5e-3, l2=1e-2, gamma=0.5, ema_beta=0.5, ref_top_pct=0.5,
                  warmup_steps=0, ramp_steps=10, seed=10),
        SAEConfig(**BASE, architecture="relu_l1", l1=1e-3, seed=11),
        SAEConfig(**BASE, architecture="topk_auxk", k=2, seed=12, options={"auxk_dead_tokens": 32, "auxk_k": 4}),
        SAEConfig(**BASE, architecture="topk_auxk", k=3, seed=13, options={"auxk_dead_tokens": 48, "auxk_coef": 0.5}),
    ]
    return c


def params(sae: SAE) -> dict[str, torch.Tensor]:
    out = {n: getattr(sae, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    out.update({f"architecture.{k}": v for k, v in sae.architecture.state_dict().items()})
    return out


def assert_same_member(alone_sae, alone_result, member, *, atol, hist_rtol):
    pa, pm = params(alone_sae), params(member.sae)
    assert pa.keys() == pm.keys()
    for name in pa:
        a, b = pa[name], pm[name]
        if a.dtype == torch.bool or not a.is_floating_point():
            assert torch.equal(a, b), name
        else:
            # running statistics such as the adaptive EMA are float32 whatever the model dtype
            tol = atol if a.dtype == torch.float64 else max(atol, 1e-6)
            assert torch.allclose(a.double(), b.double(), atol=tol, rtol=0), (member.cfg.label, name)
    assert len(alone_result.history) == len(member.history)
    for ra, rm in zip(alone_result.history, member.history):
        assert ra.keys() == rm.keys()
        for k in ra:
            assert math.isclose(ra[k], rm[k], rel_tol=hist_rtol, abs_tol=1e-6), (member.cfg.label, ra["step"], k)
    assert alone_result.final.keys() == member.final.keys()
    assert member.skipped_steps == alone_result.skipped_steps == 0


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-7), (torch.float32, 2e-5)])
def test_sweep_member_equals_member_trained_alone_for_every_architecture(dtype, atol):
    cfgs = every_architecture()
    assert {c.architecture for c in cfgs} == set(ARCHITECTURES)  # the test covers the whole registry
    res = train_sweep(cfgs, SpikedDictionaryData(DATA, dtype=dtype), TC, dtype=dtype)
    assert [m.cfg for m in res.members] == cfgs  # results come back in the order given
    for cfg, member in zip(cfgs, res.members):
        sae = SAE(cfg, dtype=dtype)
        alone = train(sae, SpikedDictionaryData(DATA, dtype=dtype), TC)
        assert_same_member(sae, alone, member, atol=atol, hist_rtol=1e-4)
        # the running state really moved, so the comparison above tests it
        init = SAE(cfg, dtype=dtype)
        assert not torch.allclose(member.sae.W_enc, init.W_enc)
        run = member.sae.architecture
        if cfg.architecture == "jumprelu":
            assert not torch.allclose(run.log_threshold, init.architecture.log_threshold)
        if cfg.architecture in ("aen", "adaptive_lasso"):
            assert member.history[-1]["adaptive_factor"] == 1.0
            w = run.weights()
            assert float(w.max() - w.min()) > 0.1
        if cfg.architecture == "batchtopk":
            assert float(run.threshold[0]) > 0
        if cfg.architecture == "topk_auxk":
            assert member.history[-1]["auxk_dead_pct"] > 0 and any(r["aux"] > 0 for r in member.history)


def test_chunks_replay_the_stream_and_change_nothing():
    cfgs = every_architecture()
    whole = train_sweep(cfgs, SpikedDictionaryData(DATA), TC)
    chunked = train_sweep(cfgs, SpikedDictionaryData(DATA), TC, max_members_per_chunk=3)
    assert len(chunked.chunks) == 5 and sorted(len(idx) for idx in chunked.chunks) == [2, 3, 3, 3, 3]
    one_each = train_sweep(cfgs[:3], SpikedDictionaryData(DATA), TC,
                           memory_budget_bytes=member_bytes(cfgs[0], TC.batch_size))
    assert len(one_each.chunks) == 3
    for a, b in zip(whole.members, chunked.members):
        for name, t in params(a.sae).items():
            assert torch.allclose(t.double(), params(b.sae)[name].double(), atol=1e-6), (a.cfg.label, name)
        assert [r["l0"] for r in a.history] == pytest.approx([r["l0"] for r in b.history], abs=1e-4)
    for a, b in zip(whole.members[:3], one_each.members):
        assert torch.allclose(a.sae.W_dec, b.sae.W_dec, atol=1e-6)


def test_gradient_clipping_per_member_matches_alone():
    tc = TC.replace(grad_clip=0.05, steps=12)
    cfgs = [SAEConfig(**BASE, architecture="relu_l1", l1=1e-2, seed=1), SAEConfig(**BASE, architecture="topk", k=3)]
    res = train_sweep(cfgs, SpikedDictionaryData(DATA, dtype=torch.float64), tc, dtype=torch.float64)
    unclipped = train_sweep(cfgs, SpikedDictionaryData(DATA, dtype=torch.float64), tc.replace(grad_clip=0.0),
                            dtype=torch.float64)
    for cfg, member, free in zip(cfgs, res.members, unclipped.members):
        sae = SAE(cfg, dtype=torch.float64)
        alone = train(sae, SpikedDictionaryData(DATA, dtype=torch.float64), tc)
        assert_same_member(sae, alone, member, atol=1e-9, hist_rtol=1e-5)
        assert not torch.allclose(member.sae.W_enc, free.sae.W_enc)  # the clip was active


def test_non_finite_member_is_skipped_and_the_others_are_untouched():
    cfgs = [SAEConfig(**BASE, architecture="adaptive_lasso", l1=1e-2, warmup_steps=0, ema_beta=0.9, seed=1),
            SAEConfig(**BASE, architecture="aen", l1=1e-2, l2=1e-3, warmup_steps=0, ema_beta=0.9, seed=2)]
    stack = SAE(cfgs)
    with torch.no_grad():
        stack.W_enc[1, 0, 0] = float("nan")
    poisoned = {n: getattr(stack, n)[1].clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    ema0 = stack.runs[0].ema.clone()
    tr = Trainer(stack, SpikedDictionaryData(DATA), TC.replace(steps=6))
    tr.run()
    assert tr.skipped.tolist() == [0, 6]
    for n, t in poisoned.items():  # the poisoned member never moved (NaN compared as a number)
        assert torch.equal(getattr(stack, n)[1].nan_to_num(7.0), t.nan_to_num(7.0)), n
    run = stack.runs[0]
    assert torch.equal(run.ema[1], ema0[1]) and int(run.step[1]) == 0  # its adaptive state was rolled back
    assert int(run.step[0]) == 6  # the healthy member's was not
    assert tr.histories[1][-1]["skipped_steps"] == 6
    assert tr.dead.max_abs.reshape(2, -1)[1].max() == 0  # and it added nothing to the dead statistics
    sae = SAE(cfgs[0])
    alone = train(sae, SpikedDictionaryData(DATA), TC.replace(steps=6))
    assert torch.allclose(stack.member(0).W_dec, sae.W_dec, atol=1e-6)
    assert alone.history[-1]["l0"] == pytest.approx(tr.histories[0][-1]["l0"])


def test_export_and_restack_reproduce_the_stack(tmp_path):
    cfgs = every_architecture()
    res = train_sweep(cfgs, SpikedDictionaryData(DATA), TC.replace(steps=8))
    x, _ = SpikedDictionaryData(DATA.__class__(**{**DATA.to_dict(), "seed": 5})).sample(10)
    stack = SAE.stack(res.saes).eval()
    h = stack.encode(x)  # [M, B, m]
    for j in range(stack.n_members):
        sae = res.saes[j].eval()
        assert torch.allclose(h[j], sae.encode(x), atol=1e-6)
        assert torch.allclose(stack.decode(h)[j], sae.decode(sae.encode(x)), atol=1e-5)
    # a plain SAE that aen_lib.sae.io writes and reads back
    member = res.members[0]
    with pytest.raises(ValueError, match="stack of"):
        save_sae(stack, tmp_path / "stack")
    folder = save_sae(member.sae, tmp_path / "aen", normalization="none")
    loaded, _ = load_sae(folder)
    assert torch.allclose(loaded.encode(x), member.sae.eval().encode(x))


def test_expand_grid_counts_and_values():
    cfgs = expand_grid(dict(d_in=256, d_sae=1024, warmup_steps=10_000), AUTHORS_SPIKED_GRID, seeds=[0, 1])
    counts = {}
    for c in cfgs:
        counts[c.architecture] = counts.get(c.architecture, 0) + 1
    assert counts == {"relu_l1": 8, "elastic_net": 18, "adaptive_lasso": 48, "aen": 144, "topk": 10}
    auxk = expand_grid(BASE, {"topk_auxk": {"k": [2, 4], "auxk_coef": [0.1]}})
    assert [c.options for c in auxk] == [{"auxk_coef": 0.1}] * 2  # an architecture's own options go to options
    aen = [c for c in cfgs if c.architecture == "aen" and c.seed == 0]
    assert len({(c.l1, c.l2, c.gamma, c.ema_beta, c.ref_top_pct) for c in aen}) == 72
    assert all(c.warmup_steps == 10_000 and c.d_sae == 1024 for c in cfgs)


@pytest.mark.parametrize(
    "grid,match",
    [
        ({"gated": {"l1": [1e-3]}}, "architecture 'gated' is unknown"),
        ({"topk": {"kk": [8]}}, "field 'kk' is not allowed"),
        ({"topk": {"k": []}}, "non-empty list"),
        ({"topk": {"k": 8}}, "non-empty list"),
        ({"topk": {"k": [8, 8]}}, "duplicates"),
        ({"topk": {"k": [0]}}, r"grid\['topk'\] with \{'k': 0\}: k=0 is invalid"),
        ({"relu_l1": {"l1": [-1.0]}}, "l1=-1.0 is invalid"),
        ({"relu_l1": {"d_sae": [8]}}, "field 'd_sae' is not allowed"),
        ({}, "non-empty mapping"),
    ],
)
def test_expand_grid_rejects_bad_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        expand_grid(BASE, grid)


def test_bad_sweep_inputs_raise():
    with pytest.raises(ValueError, match="seeds"):
        expand_grid(BASE, {"topk": {"k": [2]}}, seeds=[0, 0])
    with pytest.raises(ValueError, match="base field 'architecture'"):
        expand_grid({**BASE, "architecture": "aen"}, {"topk": {"k": [2]}})
    with pytest.raises(ValueError, match="at least one"):
        train_sweep([], SpikedDictionaryData(DATA), TC)
    with pytest.raises(TypeError, match=r"configs\[0\] must be an SAEConfig"):
        train_sweep([{"d_in": 8}], SpikedDictionaryData(DATA), TC)
    with pytest.raises(ValueError, match="instead"):
        train_sweep([SAEConfig(**BASE)], SpikedDictionaryData(DATA), TC.replace(checkpoint_every=5, checkpoint_dir="x"))
    with pytest.raises(ValueError, match="checkpoint_every=0 must be"):
        train_sweep([SAEConfig(**BASE)], SpikedDictionaryData(DATA), TC, checkpoint_dir="x", checkpoint_every=0)


def test_plan_chunks_balances_and_splits_shapes():
    a = [SAEConfig(d_in=8, d_sae=32, architecture="relu_l1", l1=1e-3, seed=s) for s in range(7)]
    b = [SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=s) for s in range(2)]
    per = member_bytes(a[0], 16)
    chunks = plan_chunks(a + b, 16, memory_budget_bytes=3 * per)
    sizes = sorted(len(idx) for idx in chunks if all(i < 7 for i in idx))
    assert sizes == [2, 2, 3]  # 7 members, at most 3 per chunk -> 3 balanced chunks
    assert sorted(i for idx in chunks for i in idx) == list(range(9))
    assert any(sorted(idx) == [7, 8] for idx in chunks)  # the other shape is its own stack
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        plan_chunks(a, 16, memory_budget_bytes=0)
    # the per-tensor cap (CPU: no stacked tensor of 32 MiB or more) splits a stack the memory budget would allow
    largest = largest_tensor_bytes(a[0], 16)
    assert largest == 4 * max(16 * 32, 8 * 32, 16 * 8)
    capped = plan_chunks(a, 16, memory_budget_bytes=2**40, max_tensor_bytes=2 * largest + 1)
    assert sorted(len(idx) for idx in capped) == [1, 2, 2, 2]
    assert len(plan_chunks(a, 16, memory_budget_bytes=2**40)) == 1
    # one memory model: the sweep sizes its chunks with the planner's estimate
    big = SAEConfig(d_in=256, d_sae=1024)
    assert member_bytes(big, 256) == int(sae_memory(256, 1024, 256, architecture="aen")["total"])


RESUME_SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from aen_lib.data.synthetic import SpikedDictionaryData
from aen_lib.training.sweep import train_sweep
from aen_lib.training.train import TrainConfig
sys.path.insert(0, {tests!r})
from test_sweep import DATA, every_architecture

class KillAt(SpikedDictionaryData):
    calls = 0
    def sample(self, b):
        KillAt.calls += 1
        if KillAt.calls == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9: nothing gets to clean up
        return super().sample(b)

tc = TrainConfig(steps=30, batch_size=16, log_every=5, dead_window_steps=10, final_avg_logs=3, progress=False)
train_sweep(every_architecture(), KillAt(DATA), tc, checkpoint_dir={folder!r}, checkpoint_every=4,
            max_members_per_chunk=7)
"""


@pytest.mark.parametrize("kill_at", [13, 45])  # in the first chunk; in the second (after the first finished)
def test_killed_sweep_resumes_bit_identical(tmp_path, kill_at):
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "sweep"
    script = RESUME_SCRIPT.format(tests=str(Path(__file__).parent), kill_at=kill_at, folder=str(folder))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # it really died by SIGKILL
    assert (folder / "sweep.json").exists()
    tc = TC
    resumed = train_sweep(every_architecture(), SpikedDictionaryData(DATA), tc, checkpoint_dir=folder,
                          checkpoint_every=4, max_members_per_chunk=7)
    assert resumed.resumed_chunks == ([0] if kill_at == 13 else [0, 1])
    assert resumed.member_steps < len(every_architecture()) * tc.steps  # it did not start over
    whole = train_sweep(every_architecture(), SpikedDictionaryData(DATA), TC, max_members_per_chunk=7)
    for a, b in zip(whole.members, resumed.members):
        for name, t in params(a.sae).items():
            assert torch.equal(t, params(b.sae)[name]), (a.cfg.label, name)
        assert a.history == b.history
    # a finished sweep is loaded, not retrained; a different sweep in the same folder is refused
    again = train_sweep(every_architecture(), SpikedDictionaryData(DATA), tc, checkpoint_dir=folder,
                        checkpoint_every=4, max_members_per_chunk=7)
    assert again.member_steps == 0 and torch.equal(again.members[3].sae.W_enc, resumed.members[3].sae.W_enc)
    with pytest.raises(ValueError, match="different sweep"):
        train_sweep(every_architecture()[:3], SpikedDictionaryData(DATA), tc, checkpoint_dir=folder)


def test_final_window_firing_counts_are_recorded_and_survive_a_finished_resume(tmp_path):
    """Every row of a TopK SAE fires exactly k latents, so the final window's counts sum to k x its tokens; a latent
    the window calls dead has count 0 (and only those); the counts come back when a finished sweep is loaded."""
    cfgs = [SAEConfig(**BASE, architecture="topk", k=3, seed=0), SAEConfig(**BASE, architecture="relu_l1", l1=5e-2, seed=1)]
    tc = TC.replace(steps=25)  # windows of 10: training ends 5 steps into the third
    res = train_sweep(cfgs, SpikedDictionaryData(DATA), tc, checkpoint_dir=tmp_path / "s")
    for m in res.members:
        fw = m.final_window
        assert fw["steps"] == 5 and fw["tokens"] == 5 * tc.batch_size
        c = fw["firing_counts"]
        assert c.shape == (32,) and bool((c >= 0).all())
        assert math.isclose(float(c.max()), float(c.max().round()))  # whole rows
    topk, relu = res.members
    assert float(topk.final_window["firing_counts"].sum()) == 3 * 5 * tc.batch_size
    assert 0 < float(relu.final_window["firing_counts"].sum()) < 32 * 5 * tc.batch_size
    again = train_sweep(cfgs, SpikedDictionaryData(DATA), tc, checkpoint_dir=tmp_path / "s")
    assert again.member_steps == 0
    for a, b in zip(res.members, again.members):
        assert torch.equal(a.final_window["firing_counts"], b.final_window["firing_counts"])
