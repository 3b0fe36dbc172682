"""aen_lib: adaptive elastic net sparse autoencoders, the library behind aen-book.

Chaudhry, Yano & Monod (2026), "Feature Starvation as Geometric Instability in Sparse Autoencoders".
Submodules are imported lazily by the chapters; the core names are re-exported here.
"""

from .config import SAEConfig
from .model import SAE, LossTerms, SAEOutput
from .objectives import OBJECTIVES, register_objective
from .train import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "SAE", "SAEConfig", "SAEOutput", "LossTerms", "OBJECTIVES", "register_objective",
    "TrainConfig", "Trainer", "TrainResult", "train",
]
__version__ = "0.1.0"
