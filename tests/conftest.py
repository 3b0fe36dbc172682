"""Shared pytest setup: offline Hugging Face Hub and a CPU thread budget that never oversubscribes the cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Under pytest-xdist every worker is a process of its own: with two threads each, two workers on a 2-core machine
# make OpenMP threads wait on each other at every op, and small steps run ~100x slower. One thread per worker.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))
