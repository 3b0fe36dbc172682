"""Memory/time planner (aen_lib.training.planner): predictions against measurements and hand counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aen_lib import SAE, SAEConfig
from aen_lib.training.planner import (
    GPUS,
    LM_SPECS,
    LMSpec,
    TensorMemoryTracer,
    lm_forward_flops,
    lm_memory,
    measure_train_step_memory,
    plan,
    plan_table,
    sae_memory,
    sae_step_flops,
)


def _cfg(arch: str, n: int, m: int) -> SAEConfig:
    if arch == "topk":
        return SAEConfig(d_in=n, d_sae=m, architecture="topk", k=8)
    return SAEConfig(d_in=n, d_sae=m, architecture=arch, l1=1e-3, l2=1e-4 if arch == "aen" else 0.0, warmup_steps=0)


def test_tracer_counts_new_storages_until_freed():
    with TensorMemoryTracer() as t:
        a = torch.ones(1000)  # 4000 B
        b = a + 1  # 4000 B
        v = b.view(10, 100)  # a view: nothing new
        b.mul_(2)  # in place: nothing new
        del a
        c = torch.zeros(500, dtype=torch.float64)  # 4000 B, after a was freed
    assert t.peak == 8000
    assert t.current == 8000  # b (through v) and c are alive
    del v, b, c


# Shapes chosen so that each phase of the model is the largest somewhere: activations (B >> n), weights (n >> B).
SHAPES = [(512, 64, 2048), (64, 128, 2048), (256, 256, 1024)]


@pytest.mark.parametrize("arch", ["aen", "topk"])
@pytest.mark.parametrize("autocast", ["none", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%d-n%d-m%d" % s)
def test_predicted_peak_within_20pct_of_measured(arch, autocast, shape):
    B, n, m = shape
    meas = measure_train_step_memory(_cfg(arch, n, m), B, autocast=autocast)
    pred = sae_memory(n, m, B, architecture=arch, autocast=autocast)
    assert pred["total"] == pytest.approx(meas["total"], rel=0.20)
    assert pred["step_peak"] == pytest.approx(meas["step_peak"], rel=0.20)
    # the persistent part is exact bookkeeping: params + 2 Adam moments + Adam's scratch (+ small [m] statistics)
    assert pred["params"] + pred["optimizer"] == pytest.approx(meas["persistent"], rel=0.01)


def test_sae_flops_match_a_flop_counter():
    B, n, m = 32, 16, 64
    sae = SAE(_cfg("aen", n, m))
    x = torch.randn(B, n)
    with FlopCounterMode(display=False) as fc:
        _, terms = sae.loss(x)
        terms.total.backward()
    # 4Bnm forward + 6Bnm backward, plus 4nm for b_dec's zero-valued [1, n] x [n, m] encoder term (forward, backward)
    assert fc.get_total_flops() == sae_step_flops(B, n, m) + 4 * n * m


def test_lm_param_counts_match_models():
    from transformers import AutoModelForCausalLM, LlamaConfig

    for tied in (False, True):
        cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
        model = AutoModelForCausalLM.from_config(cfg)
        spec = LMSpec.from_hf_config(cfg)
        n_unique = sum(p.numel() for p in model.parameters())  # tied weights counted once
        assert spec.n_params == n_unique
    # published sizes: Llama-3.1-8B has 8,030,261,248 parameters; SmolLM2-135M 134,515,008
    assert LM_SPECS["llama-3.1-8b"].n_params == 8_030_261_248
    assert LM_SPECS["smollm2-135m"].n_params == 134_515_008


def test_lm_flops_and_memory_against_a_tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    from aen_lib.data.harvest import block_output

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    spec = LMSpec.from_hf_config(cfg)
    ids = torch.randint(0, 256, (4, 32))
    with FlopCounterMode(display=False) as fc:
        block_output(model, ids, layer=1)
    # the counter sees matmuls and attention; RMSNorm/SiLU/RoPE are elementwise and not FLOP-counted either way
    assert lm_forward_flops(spec, 1, tokens=4 * 32, seq_len=32) == pytest.approx(fc.get_total_flops(), rel=0.10)
    with TensorMemoryTracer() as t:
        r = block_output(model, ids, layer=1).float()
    pred = lm_memory(spec, 1, lm_batch=4, seq_len=32, dtype_bytes=4)
    assert r.shape == (4, 32, 64)
    # activations of one no-grad forward: an order-of-magnitude model (weights are exact bookkeeping)
    assert 0.5 < pred["activations"] / t.peak < 2.0
    assert pred["weights"] == 4 * sum(p.numel() for p in model.parameters())


def test_plan_arithmetic_by_hand():
    gpu = GPUS["H200-SXM"]
    p1 = plan(d_in=4096, d_sae=131072, batch=4096, steps=100_000, gpu="H200-SXM", n_gpus=1, autocast="bf16",
              efficiency=0.5)
    t_step = 10 * 4096 * 4096 * 131072 / (gpu.bf16_tflops * 1e12 * 0.5)
    assert p1.hours == pytest.approx(100_000 * t_step / 3600)
    assert p1.allreduce_ms == 0
    p2 = plan(d_in=4096, d_sae=131072, batch=4096, steps=100_000, gpu="H200-SXM", n_gpus=2, autocast="bf16",
              efficiency=0.5, link_gb_s=100.0)
    grad_bytes = 4 * (2 * 4096 * 131072 + 4096 + 131072)
    assert p2.allreduce_ms == pytest.approx(1e3 * grad_bytes / 100e9)  # 2(G-1)/G = 1 for G = 2
    assert p2.per_gpu_batch == 2048 and p2.memory_gib < p1.memory_gib
    rows = plan_table((1, 2, 8), d_in=4096, d_sae=131072, batch=4096, steps=100_000, gpu="H200-SXM",
                      lm="llama-3.1-8b", layer=16)
    assert [r["n_gpus"] for r in rows] == [1, 2, 8]
    assert rows[0]["lm_memory_gib"] == pytest.approx(LM_SPECS["llama-3.1-8b"].n_params * 2 / 2**30, rel=0.05)
    assert all(r["fits"] for r in rows)


def test_planner_rejects_bad_input():
    with pytest.raises(ValueError, match="batch=100"):
        plan(d_in=8, d_sae=16, batch=100, steps=1, gpu="H200-SXM", n_gpus=8)
    with pytest.raises(ValueError, match="gpu='RTX"):
        plan(d_in=8, d_sae=16, batch=8, steps=1, gpu="RTX PRO 6000")
    with pytest.raises(ValueError, match="architecture"):
        sae_memory(8, 16, 8, architecture="lasso")
    with pytest.raises(ValueError, match="efficiency"):
        plan(d_in=8, d_sae=16, batch=8, steps=1, gpu="H200-SXM", efficiency=1.5)
    with pytest.raises(ValueError, match="layer=40"):
        lm_memory(LM_SPECS["llama-3.1-8b"], 40, 1, 1)
    assert math.isfinite(plan(d_in=8, d_sae=16, batch=8, steps=1, gpu="L40S").hours)


def test_gpu_benchmark_script_runs_quick_on_cpu(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "quick.json"
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "gpu_llama_shape.py"), "--quick", "--device", "cpu",
                           "--repeats", "2", "--json", str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    B, n, m = (res["info"]["shape"][k] for k in ("batch", "d_in", "d_sae"))
    assert res["info"]["flops_per_step"] == 10 * B * n * m
    assert {(r["arch"], r["autocast"]) for r in res["rows"]} == {(a, c) for a in ("aen", "topk") for c in ("none", "bf16")}
    for r in res["rows"]:
        assert r["tflops"] == pytest.approx(res["info"]["flops_per_step"] / (r["ms_per_step"] / 1e3) / 1e12)
        assert r["fraction_of_ceiling"] == pytest.approx(r["tflops"] / res["ceilings"][r["ceiling_precision"]]["ceiling"])
        assert 0.8 < r["planner_over_measured"] < 1.2


def test_truncated_lm_matches_planner_and_harvest():
    from transformers import AutoModelForCausalLM, LlamaConfig

    from aen_lib.data.harvest import block_output
    from aen_lib.training.distributed import drop_blocks_after

    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 97, (2, 9))
    before = block_output(model, ids, layer=1)
    drop_blocks_after(model, 1)
    assert sum(p.numel() for p in model.parameters()) == LMSpec.from_hf_config(cfg).params_kept(1, truncate=True)
    torch.testing.assert_close(block_output(model, ids, layer=1), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layer=5"):
        drop_blocks_after(model, 5)
