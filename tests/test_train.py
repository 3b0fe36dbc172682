"""Trainer: bit-identical resume, NaN guard, bad input, checkpoints (book: paper facts, model and loss)."""

import json

import pytest
import torch

from aen_lib import SAE, SAEConfig
from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from aen_lib.training.train import TrainConfig, Trainer, final_metrics, load_checkpoint, train

SMALL = dict(n=8, m=24, k=3, rho=0.3, seed=1)


def make(arch="aen", **kw):
    extra = {"topk": dict(k=3), "batchtopk": dict(k=3), "jumprelu": dict(l0=1e-3)}.get(
        arch, dict(l1=1e-2, l2=1e-3 if arch in ("aen", "elastic_net") else 0.0)
    )
    cfg = SAEConfig(d_in=8, d_sae=16, architecture=arch, warmup_steps=3, ramp_steps=4, ema_beta=0.9, **extra, **kw)
    return SAE(cfg), SpikedDictionaryData(SpikedDictionaryConfig(**SMALL))


def tcfg(**kw):
    base = dict(steps=20, batch_size=16, log_every=5, dead_window_steps=10, progress=False)
    base.update(kw)
    return TrainConfig(**base)


class CrashAt:
    def __init__(self, data, call):
        self.data, self.call, self.calls = data, call, 0

    def sample(self, b):
        self.calls += 1
        if self.calls == self.call:
            raise RuntimeError("simulated crash")
        return self.data.sample(b)

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, s):
        self.data.load_state_dict(s)


@pytest.mark.parametrize("arch", ["aen", "topk", "batchtopk", "jumprelu"])
def test_resume_is_bit_identical(tmp_path, arch):
    sae_a, data_a = make(arch)
    res_a = train(sae_a, data_a, tcfg())

    sae_b, data_b = make(arch)
    crashing = CrashAt(data_b, call=11)  # the run dies during step 11; the last checkpoint is at step 8
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(sae_b, crashing, tcfg(checkpoint_every=4, checkpoint_dir=str(tmp_path)))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 8
    # a fresh process rebuilds everything from scratch and resumes
    sae_c, data_c = make(arch)
    res_c = train(sae_c, data_c, tcfg(checkpoint_dir=str(tmp_path)), resume_from=tmp_path / "checkpoint.pt")
    for (name, p), q in zip(sae_a.state_dict().items(), sae_c.state_dict().values()):
        assert torch.equal(p, q), name
    assert res_a.history == res_c.history
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l) for l in lines] == res_a.history


def test_history_metrics_and_final_average():
    sae, data = make("aen")
    res = train(sae, data, tcfg(steps=30, final_avg_logs=2))
    assert [r["step"] for r in res.history] == [5, 10, 15, 20, 25, 30]
    for key in ("total", "mse", "l1", "l2", "l0", "ev", "dead_pct", "adaptive_factor", "shrinkage"):
        assert key in res.history[-1]
    assert res.final["l0"] == pytest.approx((res.history[-1]["l0"] + res.history[-2]["l0"]) / 2)
    assert final_metrics([]) == {}
    # warmup: factor 0 at step 2 (< T_w=3), 1 from step 7 on
    assert res.history[0]["adaptive_factor"] == pytest.approx(0.5)  # step 5: (5-3)/4
    assert res.history[1]["adaptive_factor"] == 1.0


def test_decoder_unit_norm_after_training():
    sae, data = make("relu_l1")
    train(sae, data, tcfg(steps=10))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)


class PoisonAt:
    """Wraps a source and scales the SAE's encoder to produce an infinite loss at chosen steps."""

    def __init__(self, data, sae, bad_steps):
        self.data, self.sae, self.bad, self.calls = data, sae, set(bad_steps), 0

    def sample(self, b):
        self.calls += 1
        x, h = self.data.sample(b)
        if self.calls in self.bad:
            x = x * 1e30  # finite input whose square overflows float32 -> inf loss
        return x, h

    def state_dict(self):
        return self.data.state_dict()

    def load_state_dict(self, s):
        self.data.load_state_dict(s)


def test_non_finite_step_is_skipped_and_counted():
    sae, data = make("aen")
    src = PoisonAt(data, sae, bad_steps=[3, 7])
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    tr = Trainer(sae, src, tcfg(steps=3))
    tr.run()
    assert tr.skipped.tolist() == [1]
    # the adaptive state rolled back: two applied updates only
    assert int(sae.architecture.step[0]) == 2
    res = Trainer(sae, src, tcfg(steps=10)).run()
    assert res.skipped_steps == 1 and res.history[-1]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in sae.state_dict().values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in sae.state_dict().items())


class Bad:
    def __init__(self, x):
        self.x = x

    def sample(self, b):
        return self.x

    def state_dict(self):
        return {}

    def load_state_dict(self, s):
        pass


def test_bad_batches_raise():
    sae, _ = make("aen")
    x = torch.randn(16, 8)
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        train(sae, Bad(x), tcfg())
    with pytest.raises(ValueError, match="d_in=8"):
        train(sae, Bad(torch.randn(16, 9)), tcfg())


@pytest.mark.parametrize(
    "kw, field",
    [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(grad_clip=-1.0), "grad_clip"),
     (dict(autocast="fp8"), "autocast"), (dict(checkpoint_every=5), "checkpoint_dir")],
)
def test_bad_train_config(kw, field):
    with pytest.raises(ValueError) as e:
        tcfg(**kw)
    assert str(e.value).startswith(f"{field}=")


def test_missing_corrupt_and_mismatched_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    sae, data = make("aen")
    tr = Trainer(sae, data, tcfg(steps=2, checkpoint_every=2, checkpoint_dir=str(tmp_path)))
    tr.run()
    other, data2 = make("relu_l1")
    with pytest.raises(ValueError, match="different SAEConfig"):
        Trainer(other, data2, tcfg()).resume(tmp_path / "checkpoint.pt")


def test_failed_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch):
    sae, data = make("aen")
    tr = Trainer(sae, data, tcfg(steps=2, checkpoint_every=2, checkpoint_dir=str(tmp_path)))
    tr.run()
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        tr.save_checkpoint()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_grad_clip_bounds_the_update():
    sae, data = make("relu_l1")
    tr = Trainer(sae, data, tcfg(grad_clip=1e-3, lr=1.0))
    seen = []
    step = tr.opt.step

    def spy(*a, **k):  # the gradients Adam receives, after clipping
        seen.append(float(torch.sqrt(sum((p.grad**2).sum() for p in sae.parameters() if p.grad is not None))))
        return step(*a, **k)

    tr.opt.step = spy
    tr.train_step()
    assert seen[0] == pytest.approx(1e-3, rel=1e-4)  # the raw gradient is far larger: the clip acted


def test_training_leaves_the_global_rngs_alone_and_does_not_depend_on_them():
    """The trainer draws from its own generators: two runs with different global RNG states give the same SAE, and
    the caller's global torch, Python and NumPy states are what they were before."""
    import random

    import numpy as np

    def run(global_seed: int):
        torch.manual_seed(global_seed); random.seed(global_seed); np.random.seed(global_seed)
        before = (torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy())
        data = SpikedDictionaryData(SpikedDictionaryConfig(n=8, m=16, k=2, rho=0.5, seed=3))
        sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="aen", l1=0.01, l2=0.001, warmup_steps=5, ramp_steps=5,
                            ema_beta=0.9, seed=4))
        train(sae, data, TrainConfig(steps=30, batch_size=16, log_every=10, dead_window_steps=10, progress=False,
                                     seed=5))
        after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1])
        assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
        return sae

    a, b = run(0), run(12345)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_token_window_of_the_step_window_length_counts_the_same_and_is_finalised():
    """Two trackers over the same span (a token window of dead_window_steps x batch_size tokens) must agree at every
    log; final_metrics keeps the token window's last complete value apart from the partly filled average."""
    from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
    from aen_lib.training.train import TrainConfig, train

    cfg = SAEConfig(d_in=8, d_sae=32, architecture="topk", k=2, seed=0)
    tc = TrainConfig(steps=40, batch_size=16, log_every=5, dead_window_steps=10, dead_window_tokens=160,
                     final_avg_logs=3, progress=False)
    res = train(SAE(cfg), SpikedDictionaryData(SpikedDictionaryConfig(n=8, m=32, k=2, rho=0.3, seed=1)), tc)
    for r in res.history:
        assert r["dead_pct_tokens"] == r["dead_pct"] and r["dead_tokens_fill"] == r["dead_window_fill"]
    assert res.final["dead_pct_tokens_window"] == res.final["dead_pct_window"] == res.history[-1]["dead_pct"]
    assert "dead_tokens_fill" not in res.final
    tc2 = tc.replace(dead_window_tokens=480)  # three step windows: complete once, at step 30
    res2 = train(SAE(cfg), SpikedDictionaryData(SpikedDictionaryConfig(n=8, m=32, k=2, rho=0.3, seed=1)), tc2)
    (full,) = [r for r in res2.history if r["dead_tokens_fill"] >= 1.0]
    assert full["step"] == 30 and res2.final["dead_pct_tokens_window"] == full["dead_pct_tokens"]
