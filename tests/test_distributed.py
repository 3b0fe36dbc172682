"""DDP training (aen_lib.distributed) on CPU with the gloo backend.

The central check: N steps on 2 ranks equal N steps of one process on the concatenated batches, parameters, Adam,
adaptive EMA, dead-latent window and logged metrics included; and a rank that crashes fails the launch with its own
error while the last checkpoint stays loadable.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from aen_lib import SAE, SAEConfig
from aen_lib.adaptive import AdaptiveWeights
from aen_lib.distributed import (
    DistContext,
    DistributedTrainer,
    ReducedAdaptiveWeights,
    RunConfig,
    StridedShard,
    TensorStream,
    main,
    shard_windows,
)
from aen_lib.io import load_sae
from aen_lib.train import TrainConfig, Trainer, load_checkpoint

D_IN, D_SAE, PER_RANK, STEPS = 8, 24, 6, 12
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, D_IN, generator=g) * torch.linspace(0.5, 2.0, D_IN)


def _sae_cfg(arch: str = "aen") -> SAEConfig:
    extra = dict(k=4) if arch == "topk" else dict(l1=3e-2, l2=1e-3, warmup_steps=3, ramp_steps=4, ema_beta=0.9,
                                                 ref_top_pct=0.1)
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, seed=7, **extra)


def _train_cfg(batch: int, ckpt_dir: str = "", ckpt_every: int = 0) -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=batch, lr=1e-2, grad_clip=1.0, log_every=4, dead_window_steps=5,
                       progress=False, checkpoint_dir=ckpt_dir, checkpoint_every=ckpt_every)


def _final_state(tr: Trainer) -> dict:
    return {
        "sae": {k: v.detach().clone() for k, v in tr.sae.state_dict().items()},
        "adam": [(s["exp_avg"].clone(), s["exp_avg_sq"].clone()) for s in tr.opt.state.values()],
        "dead": tr.dead.max_abs.clone(),
        "dead_steps": tr.dead.total_steps,
        "dead_tokens": tr.dead.total_tokens,
        "history": tr.history,
    }


# --------------------------------------------------------------------------------------------------------------
# worker of the 2-process gloo group (module level so that torch.multiprocessing.spawn can pickle it)
# --------------------------------------------------------------------------------------------------------------


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank)
    result = {}
    # (a) the EMA rule alone: different codes on each rank
    w = ReducedAdaptiveWeights(D_SAE, gamma=0.5, beta=0.9, top_pct=0.1, w_min=0.01, w_max=10.0, warmup_steps=0,
                               ramp_steps=0, ctx=ctx)
    g = torch.Generator().manual_seed(1000 + rank)
    for _ in range(3):
        w.update(torch.relu(torch.randn(5, D_SAE, generator=g)))
    result["ema_unit"] = w.ema.clone()
    result["weights_unit"] = w.weights().clone()
    # (b) full training, one SAE per architecture
    for arch in ("aen", "topk"):
        ckpt = os.path.join(out, f"ckpt_{arch}")
        tr = DistributedTrainer(SAE(_sae_cfg(arch)), StridedShard(TensorStream(_rows()), rank, world),
                                _train_cfg(PER_RANK, ckpt, 6), ctx)
        tr.run()
        result[arch] = _final_state(tr)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _one_process(arch: str, tmp: Path | None = None) -> Trainer:
    ckpt = str(tmp) if tmp else ""
    tr = DistributedTrainer(SAE(_sae_cfg(arch)), TensorStream(_rows()), _train_cfg(2 * PER_RANK, ckpt, 6 if tmp else 0))
    tr.run()
    return tr


def test_reduced_ema_equals_one_process_ema_on_concatenated_batch(two_rank_run):
    r0, r1 = (torch.load(two_rank_run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(r0["ema_unit"], r1["ema_unit"])  # identical on every rank, bit for bit
    ref = AdaptiveWeights(D_SAE, gamma=0.5, beta=0.9, top_pct=0.1, w_min=0.01, w_max=10.0, warmup_steps=0,
                          ramp_steps=0)
    per_rank = AdaptiveWeights(D_SAE, gamma=0.5, beta=0.9, top_pct=0.1, w_min=0.01, w_max=10.0, warmup_steps=0,
                               ramp_steps=0)
    g0, g1 = torch.Generator().manual_seed(1000), torch.Generator().manual_seed(1001)
    for _ in range(3):
        h0, h1 = torch.relu(torch.randn(5, D_SAE, generator=g0)), torch.relu(torch.randn(5, D_SAE, generator=g1))
        ref.update(torch.cat([h0, h1]))
        per_rank.update(h0)
    torch.testing.assert_close(r0["ema_unit"], ref.ema, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(r0["weights_unit"], ref.weights(), rtol=1e-5, atol=1e-6)
    # a per-rank EMA (what DDP alone would keep) is measurably different: the test can fail
    assert (per_rank.ema - ref.ema).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["aen", "topk"])
def test_two_ranks_equal_one_process_on_concatenated_batches(two_rank_run, arch):
    r0, r1 = (torch.load(two_rank_run / f"rank{r}.pt", weights_only=False)[arch] for r in (0, 1))
    one = _final_state(_one_process(arch))
    # every rank holds the same state, bit for bit
    for k in r0["sae"]:
        assert torch.equal(r0["sae"][k], r1["sae"][k]), k
    assert torch.equal(r0["dead"], r1["dead"])
    # ... and it is the one-process state on the concatenated batches, to float tolerance
    for k, v in one["sae"].items():
        torch.testing.assert_close(r0["sae"][k], v, rtol=1e-4, atol=1e-5, msg=f"{arch}: {k}")
    for (m2, v2), (m1, v1) in zip(r0["adam"], one["adam"]):
        torch.testing.assert_close(m2, m1, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(v2, v1, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(r0["dead"], one["dead"], rtol=1e-5, atol=1e-6)
    assert (r0["dead_steps"], r0["dead_tokens"]) == (one["dead_steps"], one["dead_tokens"]) == (STEPS, STEPS * 12)
    if arch == "aen":
        assert float(one["sae"]["objective.weights.step"]) == STEPS
        assert (one["sae"]["objective.weights.ema"] - 1).abs().max() > 0.1  # the EMA moved: a real comparison
    assert [r["step"] for r in r0["history"]] == [r["step"] for r in one["history"]] == [4, 8, 12]
    for rec2, rec1 in zip(r0["history"], one["history"]):
        for key in ("total", "mse", "l1", "l2", "l0", "ev", "mse_metric", "shrinkage", "dead_pct"):
            assert rec2[key] == pytest.approx(rec1[key], rel=1e-4, abs=1e-6), (arch, key)


def test_two_rank_checkpoint_loads_and_needs_same_world_size(two_rank_run, tmp_path):
    state = load_checkpoint(two_rank_run / "ckpt_aen" / "checkpoint.pt")
    assert state["world_size"] == 2 and state["step"] == STEPS and len(state["data"]) == 2
    # rank 0's and rank 1's stream positions are both recorded (each read the whole stream)
    assert state["data"][0] == state["data"][1] == {"pos": (STEPS * 2 * PER_RANK) % 200}
    sae = SAE(SAEConfig.from_dict(state["sae_cfg"]))
    sae.load_state_dict(state["sae"])
    r0 = torch.load(two_rank_run / "rank0.pt", weights_only=False)["aen"]
    assert torch.equal(sae.W_dec, r0["sae"]["W_dec"])
    one = DistributedTrainer(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(2 * PER_RANK))
    with pytest.raises(ValueError, match="world_size=2"):
        one.resume(two_rank_run / "ckpt_aen" / "checkpoint.pt")


# --------------------------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------------------------


def test_single_process_is_the_trainer_bit_for_bit():
    a = Trainer(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(12))
    a.run()
    b = _one_process("aen")
    for k, v in a.sae.state_dict().items():
        assert torch.equal(v, b.sae.state_dict()[k]), k
    assert a.history == b.history


def test_resume_is_bit_identical(tmp_path):
    full = _one_process("aen")
    cut = DistributedTrainer(SAE(_sae_cfg()), TensorStream(_rows()),
                             _train_cfg(12, str(tmp_path), 4).replace(steps=8))
    cut.run()
    resumed = DistributedTrainer(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(12, str(tmp_path), 4))
    resumed.resume(tmp_path / "checkpoint.pt")
    assert resumed.step == 8
    resumed.run()
    for k, v in full.sae.state_dict().items():
        assert torch.equal(v, resumed.sae.state_dict()[k]), k
    assert resumed.history == full.history


def test_bf16_autocast_trains_on_cpu():
    cfg = _train_cfg(12).replace(autocast="bf16", steps=30)
    tr = DistributedTrainer(SAE(_sae_cfg()), TensorStream(_rows()), cfg)
    res = tr.run()
    assert tr.sae.W_enc.dtype == torch.float32  # parameters stay fp32
    assert res.skipped_steps == 0
    assert res.history[-1]["mse"] < res.history[0]["mse"]


def test_batchtopk_is_refused_across_ranks():
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="batchtopk", k=2)
    with pytest.raises(ValueError, match="batchtopk"):
        DistributedTrainer(SAE(cfg), TensorStream(_rows()), _train_cfg(6), DistContext(rank=0, world_size=2))


def test_strided_shard_partitions_the_stream():
    x = _rows(40)
    shards = [StridedShard(TensorStream(x), r, 3) for r in range(3)]
    got = torch.cat([torch.cat([s.sample(2) for s in shards]) for _ in range(2)])
    torch.testing.assert_close(got, x[:12], rtol=0, atol=0)
    with pytest.raises(ValueError, match="rank=3"):
        StridedShard(TensorStream(x), 3, 3)
    w = torch.arange(10).reshape(10, 1)
    assert shard_windows(w, 1, 3).flatten().tolist() == [1, 4, 7]
    assert [int(t) for t in shard_windows(lambda: iter(w), 2, 3)()] == [2, 5, 8]


def test_strided_shard_of_an_activation_source_resumes():
    from aen_lib.activations import ActivationSource

    x = _rows(30)

    class Rows:  # the row-provider protocol of ActivationSource
        def iter_from(self, key):
            yield x[key:], torch.arange(key, 30)

    src = StridedShard(ActivationSource(Rows(), 4, loop=True), 1, 2)
    first = [src.sample(4) for _ in range(3)]
    state = src.state_dict()
    nxt = src.sample(4)
    again = StridedShard(ActivationSource(Rows(), 4, loop=True), 1, 2)
    again.load_state_dict(state)
    torch.testing.assert_close(again.sample(4), nxt, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(first), torch.cat([x[4:8], x[12:16], x[20:24]]), rtol=0, atol=0)


def test_cli_one_process_writes_results_and_skips_finished(tmp_path):
    torch.save(_rows(), tmp_path / "rows.pt")
    rc = {"out_dir": str(tmp_path / "out"), "device": "cpu",
          "train": {"steps": 8, "batch_size": 12, "lr": 1e-2, "log_every": 4, "progress": False, "grad_clip": 1.0,
                    "checkpoint_every": 4},
          "data": {"kind": "tensor", "path": str(tmp_path / "rows.pt")},
          "saes": [{"name": "aen", **_sae_cfg().to_dict()}, {"name": "topk", **_sae_cfg("topk").to_dict()}]}
    (tmp_path / "run.json").write_text(json.dumps(rc))
    assert main(["--config", str(tmp_path / "run.json")]) == 0
    res = json.loads((tmp_path / "out" / "aen" / "result.json").read_text())
    assert res["world_size"] == 1 and res["steps"] == 8
    sae, _ = load_sae(tmp_path / "out" / "aen" / "sae")
    ref = DistributedTrainer(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(12).replace(steps=8))
    ref.run()
    assert torch.equal(sae.W_enc, ref.sae.W_enc)
    mtime = (tmp_path / "out" / "aen" / "result.json").stat().st_mtime_ns
    assert main(["--config", str(tmp_path / "run.json")]) == 0  # finished SAEs are skipped
    assert (tmp_path / "out" / "aen" / "result.json").stat().st_mtime_ns == mtime
    bad = dict(rc, data={"kind": "parquet"})
    with pytest.raises(ValueError, match="data.kind"):
        RunConfig.from_dict(bad)
    with pytest.raises(ValueError, match="batch_size"):
        from aen_lib.distributed import run

        run(RunConfig.from_dict(dict(rc, out_dir=str(tmp_path / "o2"))), DistContext(rank=0, world_size=5))


# --------------------------------------------------------------------------------------------------------------
# torchrun: a crashing rank fails the launch; the checkpoint survives
# --------------------------------------------------------------------------------------------------------------

_CRASH_SCRIPT = """
import sys, torch
from aen_lib import SAE, SAEConfig
from aen_lib.distributed import DistributedTrainer, StridedShard, TensorStream, init_distributed, shutdown_distributed
from aen_lib.train import TrainConfig

torch.set_num_threads(1)
ctx = init_distributed("cpu")

class Crashing(StridedShard):
    def __init__(self, *a):
        super().__init__(*a)
        self.n = 0
    def sample(self, b):
        self.n += 1
        if ctx.rank == 1 and self.n == 6:
            raise RuntimeError("injected failure on rank 1 at step 6")
        return super().sample(b)

rows = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="aen", l1=1e-2, l2=1e-3, warmup_steps=2, ramp_steps=2))
cfg = TrainConfig(steps=20, batch_size=4, grad_clip=1.0, progress=False, log_every=2,
                  checkpoint_every=2, checkpoint_dir=sys.argv[1])
DistributedTrainer(sae, Crashing(TensorStream(rows), ctx.rank, ctx.world_size), cfg, ctx).run()
shutdown_distributed()
"""


def test_crashing_rank_fails_the_torchrun_launch_and_checkpoint_loads(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(_CRASH_SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(script), str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log
    assert "injected failure on rank 1 at step 6" in log
    state = load_checkpoint(tmp_path / "ckpt" / "checkpoint.pt")
    assert state["step"] == 4 and state["world_size"] == 2
    sae = SAE(SAEConfig.from_dict(state["sae_cfg"]))
    sae.load_state_dict(state["sae"])
    assert torch.isfinite(sae.W_enc).all()
    lines = (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]
