"""The run folder the training loop writes through (aen_lib.training.run_files), and the loop's use of it."""

import json

import torch

from aen_lib import SAE, SAEConfig
from aen_lib.data.sources import TensorStream
from aen_lib.training.run_files import RunFiles
from aen_lib.training.train import TrainConfig, Trainer, load_checkpoint


def test_run_files_start_append_and_replace_on_resume(tmp_path):
    files = RunFiles(tmp_path / "run")
    assert not files.holds_run()
    files.start()
    files.append_metrics(['{"step": 1}\n', '{"step": 2}\n'])
    assert files.holds_run() and files.metrics.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
    files.start(['{"step": 1}\n'])  # a resume from step 1 drops the lines logged after the checkpoint
    assert files.metrics.read_text() == '{"step": 1}\n'
    path = files.save_checkpoint({"version": 0, "x": torch.arange(3)})
    assert path == tmp_path / "run" / "checkpoint.pt" and torch.equal(torch.load(path)["x"], torch.arange(3))


class _Memory:
    """A sink with RunFiles' interface that keeps everything in memory."""

    checkpoint = "in memory"

    def __init__(self):
        self.lines, self.states, self.started = [], [], []

    def holds_run(self):
        return False

    def start(self, resumed_lines=None):
        self.started.append(resumed_lines)

    def append_metrics(self, lines):
        self.lines.extend(lines)

    def save_checkpoint(self, state):
        self.states.append(state)


def test_the_loop_writes_only_through_its_sink(tmp_path, monkeypatch):
    """With an injected sink the trainer opens no file, not even the config's folder: every log line and
    checkpoint reaches the sink."""
    monkeypatch.chdir(tmp_path)
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=0))
    rows = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    sink = _Memory()
    cfg = TrainConfig(steps=6, batch_size=8, log_every=2, dead_window_steps=4, checkpoint_every=3, progress=False,
                      checkpoint_dir="never_made")
    Trainer(sae, TensorStream(rows), cfg, files=sink).run()
    assert [json.loads(line)["step"] for line in sink.lines] == [2, 4, 6]
    assert [s["step"] for s in sink.states] == [3, 6] and sink.started == [None]
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_dir_gets_the_same_files_as_before(tmp_path):
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="relu_l1", l1=1e-3, seed=0))
    rows = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=4, batch_size=8, log_every=2, dead_window_steps=4, checkpoint_every=2, progress=False,
                      checkpoint_dir=str(tmp_path / "run"))
    Trainer(sae, TensorStream(rows), cfg).run()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [2, 4]
