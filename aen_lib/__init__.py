"""aen_lib: adaptive elastic net sparse autoencoders, the library behind aen-book.

Chaudhry, Yano & Monod (2026), "Feature Starvation as Geometric Instability in Sparse Autoencoders".
The data path: ``architectures`` (what differs between SAEs) -> ``model`` (the SAE, one or a stack) -> ``train``
(the one loop; ``reduce`` for DDP) -> ``sweep`` (grids, resumable) -> ``io`` (SAELens folders).
"""

from .architectures import ARCHITECTURES, Architecture, register_architecture
from .config import SAEConfig
from .model import SAE, LossTerms, SAEOutput
from .train import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "SAE", "SAEConfig", "SAEOutput", "LossTerms", "ARCHITECTURES", "Architecture", "register_architecture",
    "TrainConfig", "Trainer", "TrainResult", "train",
]
__version__ = "0.2.0"
