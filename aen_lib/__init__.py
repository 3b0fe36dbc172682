"""aen_lib: adaptive elastic net sparse autoencoders, the library behind aen-book.

Chaudhry, Yano & Monod (2026), "Feature Starvation as Geometric Instability in Sparse Autoencoders".
The data path: ``architectures`` (what differs between SAEs) -> ``model`` (the SAE, one or a stack) -> ``train``
(the one loop; ``reduce`` for DDP) -> ``sweep`` (grids, resumable) -> ``io`` (SAELens folders).
"""

import os

# OpenMP threads that spin while waiting make a small training step ~40x slower when another process holds a core
# (benchmarks/bench_busy_machine.py); passive waiting costs nothing measurable on big shapes. The OpenMP runtime reads
# this when torch first loads it, so it only takes effect when aen_lib is imported before torch; a value the user
# set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .architectures import ARCHITECTURES  # noqa: E402, Architecture, register_architecture
from .config import SAEConfig  # noqa: E402
from .model import SAE, LossTerms, SAEOutput  # noqa: E402
from .train import TrainConfig, Trainer, TrainResult, train  # noqa: E402

__all__ = [
    "SAE", "SAEConfig", "SAEOutput", "LossTerms", "ARCHITECTURES", "Architecture", "register_architecture",
    "TrainConfig", "Trainer", "TrainResult", "train",
]
__version__ = "0.2.0"
