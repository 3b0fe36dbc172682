"""DDP training (aen_lib.training.distributed) on CPU with the gloo backend.

The central check: N steps on 2 ranks equal N steps of one process on the concatenated batches — a stack of every
architecture DDP supports, with parameters, Adam, adaptive EMA, JumpReLU thresholds, AuxK counters, the dead-latent
window and logged metrics included; a 2-rank run resumes bit-identically; a rank that crashes fails the launch with
its own error while the last checkpoint stays loadable.
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
from aen_lib.sae.architectures import StepContext
from aen_lib.training.distributed import DistContext, RunConfig, main, train_distributed
from aen_lib.data.sources import StridedShard, TensorStream, shard_windows
from aen_lib.sae.io import load_sae
from aen_lib.sae.reduce import ProcessGroupReducer
from aen_lib.training.train import TrainConfig, Trainer, load_checkpoint

D_IN, D_SAE, PER_RANK, STEPS = 8, 24, 6, 12
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, D_IN, generator=g) * torch.linspace(0.5, 2.0, D_IN)


def _sae_cfg(arch: str = "aen", seed: int = 7) -> SAEConfig:
    extra = {
        "topk": dict(k=4),
        "topk_auxk": dict(k=2, options={"auxk_dead_tokens": 24, "auxk_k": 4}),
        "jumprelu": dict(l0=1e-2, jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.5),
        "relu_l1": dict(l1=3e-2),
        "elastic_net": dict(l1=3e-2, l2=1e-3),
        "adaptive_lasso": dict(l1=3e-2, warmup_steps=3, ramp_steps=4, ema_beta=0.9, ref_top_pct=0.1),
    }.get(arch, dict(l1=3e-2, l2=1e-3, warmup_steps=3, ramp_steps=4, ema_beta=0.9, ref_top_pct=0.1))
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, seed=seed, **extra)


#: every architecture that DDP supports (BatchTopK's batch-wide selection is refused across ranks), as one stack
DDP_ARCHS = ["relu_l1", "elastic_net", "adaptive_lasso", "aen", "topk", "topk_auxk", "jumprelu"]


def _stack() -> SAE:
    return SAE([_sae_cfg(a, seed=i) for i, a in enumerate(DDP_ARCHS)])


def _train_cfg(batch: int, ckpt_dir: str = "", ckpt_every: int = 0) -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=batch, lr=1e-2, grad_clip=1.0, log_every=4, dead_window_steps=5,
                       progress=False, checkpoint_dir=ckpt_dir, checkpoint_every=ckpt_every)


def _final_state(tr: Trainer) -> dict:
    return {
        "sae": {k: v.detach().clone() for k, v in tr.sae.state_dict().items()},
        "adam": [(m.clone(), v.clone()) for m, v in zip(tr.opt.exp_avg, tr.opt.exp_avg_sq)],
        "dead": tr.dead.max_abs.clone(),
        "dead_steps": tr.dead.total_steps,
        "dead_tokens": tr.dead.total_tokens,
        "histories": tr.histories,
    }


# --------------------------------------------------------------------------------------------------------------
# worker of the 2-process gloo group (module level so that torch.multiprocessing.spawn can pickle it)
# --------------------------------------------------------------------------------------------------------------


def _adaptive_run():
    cfg = SAEConfig(d_in=2, d_sae=D_SAE, architecture="aen", l1=1.0, gamma=0.5, ema_beta=0.9, ref_top_pct=0.1,
                    warmup_steps=0, ramp_steps=0)
    return SAE(cfg).architecture


def _ema_steps(run, batches, reducer=None):
    for h in batches:
        ctx = StepContext(update=True, training=True, **({"reducer": reducer} if reducer else {}))
        run.penalty(h.unsqueeze(0), h.unsqueeze(0), None, None, None, ctx)
    return run


def _codes(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + rank)
    return [torch.relu(torch.randn(5, D_SAE, generator=g)) for _ in range(3)]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank)
    reducer = ctx.reducer
    assert isinstance(reducer, ProcessGroupReducer)
    result = {}
    # (a) the adaptive EMA alone, different codes on each rank
    run = _ema_steps(_adaptive_run(), _codes(rank), reducer)
    result["ema_unit"] = run.ema[0].clone()
    result["weights_unit"] = run.weights()[0].clone()
    # (b) a stack of every DDP architecture, trained with checkpoints
    data = StridedShard(TensorStream(_rows()), rank, world)
    tr = Trainer(_stack(), data, _train_cfg(PER_RANK, os.path.join(out, "ckpt"), 6), reducer=reducer)
    tr.run()
    result["stack"] = _final_state(tr)
    # (c) stopped at step 8 and resumed from its checkpoint: the same state and history, bit for bit
    cut = Trainer(_stack(), StridedShard(TensorStream(_rows()), rank, world),
                  _train_cfg(PER_RANK, os.path.join(out, "cut"), 4).replace(steps=8), reducer=reducer)
    cut.run()
    resumed = Trainer(_stack(), StridedShard(TensorStream(_rows()), rank, world),
                      _train_cfg(PER_RANK, os.path.join(out, "cut"), 4), reducer=reducer)
    resumed.resume(os.path.join(out, "cut", "checkpoint.pt"))
    resumed.run()
    result["resumed"] = _final_state(resumed)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _one_process(tmp: Path | None = None) -> Trainer:
    ckpt = str(tmp) if tmp else ""
    tr = Trainer(_stack(), TensorStream(_rows()), _train_cfg(2 * PER_RANK, ckpt, 6 if tmp else 0))
    tr.run()
    return tr


def test_reduced_ema_equals_one_process_ema_on_concatenated_batch(two_rank_run):
    r0, r1 = (torch.load(two_rank_run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(r0["ema_unit"], r1["ema_unit"])  # identical on every rank, bit for bit
    both = [torch.cat([a, b]) for a, b in zip(_codes(0), _codes(1))]
    ref = _ema_steps(_adaptive_run(), both)
    per_rank = _ema_steps(_adaptive_run(), _codes(0))
    torch.testing.assert_close(r0["ema_unit"], ref.ema[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(r0["weights_unit"], ref.weights()[0], rtol=1e-5, atol=1e-6)
    # a per-rank EMA (what DDP alone would keep) is measurably different: the test can fail
    assert (per_rank.ema[0] - ref.ema[0]).abs().max() > 1e-2


def test_two_ranks_equal_one_process_on_concatenated_batches(two_rank_run):
    """Tolerances: the global batch is summed in a different order on 2 ranks (all-reduce of per-rank gradients
    and statistics), so results agree to float32 rounding, not bit for bit. JumpReLU's threshold gradient comes
    from a rectangle kernel of the pre-activations, which rounding can move across the kernel's edge; it gets
    a looser tolerance."""
    r0, r1 = (torch.load(two_rank_run / f"rank{r}.pt", weights_only=False)["stack"] for r in (0, 1))
    one = _final_state(_one_process())
    # every rank holds the same state, bit for bit
    for k in r0["sae"]:
        assert torch.equal(r0["sae"][k], r1["sae"][k]), k
    assert torch.equal(r0["dead"], r1["dead"])
    # ... and it is the one-process state on the concatenated batches, to float tolerance
    for k, v in one["sae"].items():
        tol = dict(rtol=1e-3, atol=1e-4) if "log_threshold" in k else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r0["sae"][k], v, **tol, msg=f"{k}")
    for (m2, v2), (m1, v1) in zip(r0["adam"], one["adam"]):
        torch.testing.assert_close(m2, m1, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(v2, v1, rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(r0["dead"], one["dead"], rtol=1e-5, atol=1e-6)
    assert (r0["dead_steps"], r0["dead_tokens"]) == (one["dead_steps"], one["dead_tokens"]) == (STEPS, STEPS * 12)
    # the running states really moved, so the comparison tests them
    stack = _stack()
    stack.load_state_dict(one["sae"])
    l1_run = stack.runs[0]
    assert (l1_run.ema[2:4] - 1).abs().max() > 0.1  # adaptive lasso and AEN
    assert int(l1_run.step[3]) == STEPS
    auxk = stack.runs[2]
    assert int(auxk.tokens_since_fired.max()) > 0
    assert [r["step"] for r in r0["histories"][0]] == [r["step"] for r in one["histories"][0]] == [4, 8, 12]
    for j, arch in enumerate(DDP_ARCHS):
        for rec2, rec1 in zip(r0["histories"][j], one["histories"][j]):
            for key in ("total", "mse", "l1", "l2", "aux", "l0", "ev", "mse_metric", "shrinkage", "dead_pct"):
                assert rec2[key] == pytest.approx(rec1[key], rel=1e-3, abs=1e-5), (arch, key)


def test_two_rank_resume_is_bit_identical(two_rank_run):
    for r in (0, 1):
        res = torch.load(two_rank_run / f"rank{r}.pt", weights_only=False)
        for k, v in res["stack"]["sae"].items():
            assert torch.equal(v, res["resumed"]["sae"][k]), (r, k)
        assert res["stack"]["histories"] == res["resumed"]["histories"]


def test_two_rank_checkpoint_loads_and_needs_same_world_size(two_rank_run, tmp_path):
    state = load_checkpoint(two_rank_run / "ckpt" / "checkpoint.pt")
    assert state["world_size"] == 2 and state["step"] == STEPS and len(state["per_rank"]) == 2
    # rank 0's and rank 1's stream positions are both recorded (each read the whole stream)
    assert state["per_rank"][0]["data"] == state["per_rank"][1]["data"] == {"pos": (STEPS * 2 * PER_RANK) % 200}
    stack = SAE([SAEConfig.from_dict(c) for c in state["sae_cfgs"]])
    stack.load_state_dict(state["sae"])
    r0 = torch.load(two_rank_run / "rank0.pt", weights_only=False)["stack"]
    assert torch.equal(stack.W_dec, r0["sae"]["W_dec"])
    one = Trainer(_stack(), TensorStream(_rows()), _train_cfg(2 * PER_RANK))
    with pytest.raises(ValueError, match="world_size=2"):
        one.resume(two_rank_run / "ckpt" / "checkpoint.pt")


# --------------------------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------------------------


def test_train_distributed_in_one_process_resumes_bit_identical(tmp_path):
    full = train_distributed(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(12))
    sae = SAE(_sae_cfg())
    train_distributed(sae, TensorStream(_rows()), _train_cfg(12, str(tmp_path), 4).replace(steps=8))
    again = SAE(_sae_cfg())
    resumed = train_distributed(again, TensorStream(_rows()), _train_cfg(12, str(tmp_path), 4),
                                resume_from=tmp_path / "checkpoint.pt")
    assert resumed.steps == STEPS and resumed.history == full.history
    ref = SAE(_sae_cfg())
    Trainer(ref, TensorStream(_rows()), _train_cfg(12)).run()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_bf16_autocast_trains_on_cpu():
    cfg = _train_cfg(12).replace(autocast="bf16", steps=30)
    tr = Trainer(SAE(_sae_cfg()), TensorStream(_rows()), cfg)
    res = tr.run()
    assert tr.sae.W_enc.dtype == torch.float32  # parameters stay fp32
    assert res.skipped_steps == 0
    assert res.history[-1]["mse"] < res.history[0]["mse"]


def test_batchtopk_is_refused_across_ranks():
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="batchtopk", k=2)
    class TwoRanks(ProcessGroupReducer):
        def __init__(self):  # no process group needed: the refusal comes first
            self.world_size, self.rank = 2, 0

    with pytest.raises(ValueError, match="batchtopk"):
        Trainer(SAE(cfg), TensorStream(_rows()), _train_cfg(6), reducer=TwoRanks())


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
    from aen_lib.data.sources import ActivationSource

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
    os.makedirs(tmp_path / "out")
    (tmp_path / "run.json").write_text(json.dumps(rc))
    assert main(["--config", str(tmp_path / "run.json")]) == 0
    res = json.loads((tmp_path / "out" / "aen" / "result.json").read_text())
    assert res["world_size"] == 1 and res["steps"] == 8
    sae, _ = load_sae(tmp_path / "out" / "aen" / "sae")
    ref = Trainer(SAE(_sae_cfg()), TensorStream(_rows()), _train_cfg(12).replace(steps=8))
    ref.run()
    assert torch.equal(sae.W_enc, ref.sae.W_enc)
    from aen_lib.training.runlock import RunLock

    with RunLock(tmp_path / "out"):  # another launch holds the folder: refused, naming it
        with pytest.raises(RuntimeError, match="in use by pid"):
            main(["--config", str(tmp_path / "run.json")])
    mtime = (tmp_path / "out" / "aen" / "result.json").stat().st_mtime_ns
    assert main(["--config", str(tmp_path / "run.json")]) == 0  # finished SAEs are skipped
    assert (tmp_path / "out" / "aen" / "result.json").stat().st_mtime_ns == mtime
    bad = dict(rc, data={"kind": "parquet"})
    with pytest.raises(ValueError, match="data.kind"):
        RunConfig.from_dict(bad)
    with pytest.raises(ValueError, match="batch_size"):
        from aen_lib.training.distributed import run

        run(RunConfig.from_dict(dict(rc, out_dir=str(tmp_path / "o2"))), DistContext(rank=0, world_size=5))


def test_result_json_is_a_versioned_result_and_a_legacy_one_is_still_skipped(tmp_path):
    from aen_lib.results.records import read_result
    from aen_lib.training.distributed import run

    torch.save(_rows(), tmp_path / "rows.pt")
    rc = {"out_dir": str(tmp_path / "out"), "device": "cpu",
          "train": {"steps": 4, "batch_size": 12, "lr": 1e-2, "log_every": 2, "progress": False},
          "data": {"kind": "tensor", "path": str(tmp_path / "rows.pt")},
          "saes": [{"name": "old", **_sae_cfg().to_dict()}, {"name": "new", **_sae_cfg("topk").to_dict()}]}
    legacy = {"name": "old", "sae_cfg": _sae_cfg().to_dict(), "final": {"l0": 1.0}, "steps": 4, "skipped_steps": 0,
              "seconds": 1.0, "world_size": 1}  # written before result.json had a version
    (tmp_path / "out" / "old").mkdir(parents=True)
    (tmp_path / "out" / "old" / "result.json").write_text(json.dumps(legacy, indent=2))
    results = run(RunConfig.from_dict(rc), DistContext())
    assert results["old"] == legacy  # finished: skipped, read as version 1
    written = read_result(tmp_path / "out" / "new" / "result.json", "distributed_result")
    assert written["record_version"] == 1 and written["steps"] == 4
    same = json.dumps(results["new"])  # as text: NaN metrics compare equal
    assert json.dumps({k: v for k, v in written.items() if k != "record_version"}) == same  # what a resume returns
    assert json.dumps(run(RunConfig.from_dict(rc), DistContext())["new"]) == same
    (tmp_path / "out" / "old" / "result.json").write_text(json.dumps({**legacy, "record_version": 2}))
    with pytest.raises(ValueError, match=r"old/result.json: record_version 2 is not supported .*update aen_lib.* "
                                         r"\(or delete .*old/result.json to retrain that SAE\)"):
        run(RunConfig.from_dict(rc), DistContext())
    (tmp_path / "out" / "old" / "result.json").write_text(json.dumps({"l0": 1.0}))
    with pytest.raises(ValueError, match="this distributed_result record lacks .*to retrain that SAE"):
        run(RunConfig.from_dict(rc), DistContext())


# --------------------------------------------------------------------------------------------------------------
# torchrun: a crashing rank fails the launch; the checkpoint survives
# --------------------------------------------------------------------------------------------------------------

_CRASH_SCRIPT = """
import sys, torch
from aen_lib import SAE, SAEConfig
from aen_lib.training.distributed import init_distributed, shutdown_distributed, train_distributed
from aen_lib.data.sources import StridedShard, TensorStream
from aen_lib.training.train import TrainConfig

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
train_distributed(sae, Crashing(TensorStream(rows), ctx.rank, ctx.world_size), cfg, ctx)
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
    sae = SAE(SAEConfig.from_dict(state["sae_cfgs"][0]))
    sae.load_state_dict(state["sae"])
    assert torch.isfinite(sae.W_enc).all()
    lines = (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]


def test_a_missing_or_invalid_run_file_ends_in_one_line(tmp_path, capsys):
    from aen_lib.training.distributed import main

    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m aen_lib.training.distributed:") and "none.yaml" in err and "\n" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_field: 1\n")
    assert main(["--config", str(bad)]) == 2
    assert "no_such_field" in capsys.readouterr().err
