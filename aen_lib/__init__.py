"""aen_lib: adaptive elastic net sparse autoencoders, the library behind aen-book.

Chaudhry, Yano & Monod (2026), "Feature Starvation as Geometric Instability in Sparse Autoencoders".
The subpackages follow the pipeline, each module's opening docstring says what it owns:

* ``sae``: the SAE (config, model, architectures registry, adaptive weights, optimiser, reducers, its files);
* ``data``: where rows come from (spiked dictionary, corpus and texts, language models, harvesting, activation cache,
  row sources);
* ``training``: the one loop, resumable sweeps, the torchrun launcher, the planner, run locks;
* ``evaluation``: metrics, dead latents, spliced language-model evaluation, feature analysis;
* ``theory``: classical sparse-coding solvers, the penalties' geometry, mechanism measures of trained encoders;
* ``results``: result records, reference sets (synthetic ``reference``, language-model ``lmref``), the factorial
  analysis and the claims the book checks;
* ``book``: notebook support and plotting.

Shared leaves: ``errors`` (one-line errors), ``palette`` (colours), ``store`` (durable writes), ``cli`` (aen-train).

Importing ``aen_lib`` changes nothing in the process: no environment variable, no random number generator, and it
does not import torch. The names below load on first use (PEP 562 ``__getattr__``), so that an entry point can call
:func:`configure_openmp` before torch starts its OpenMP runtime.
"""

import importlib
import os
import sys
from typing import Any

__all__ = [
    "SAE", "SAEConfig", "SAEOutput", "LossTerms", "ARCHITECTURES", "Architecture", "register_architecture",
    "TrainConfig", "Trainer", "TrainResult", "train", "configure_openmp",
]
__version__ = "0.2.0"

# name -> the submodule that defines it; loaded (with torch) the first time the name is used
_LAZY = {
    "ARCHITECTURES": "sae.architectures", "Architecture": "sae.architectures",
    "register_architecture": "sae.architectures",
    "SAEConfig": "sae.config",
    "SAE": "sae.model", "LossTerms": "sae.model", "SAEOutput": "sae.model",
    "TrainConfig": "training.train", "Trainer": "training.train", "TrainResult": "training.train",
    "train": "training.train",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _LAZY[name]
    module = importlib.import_module(f".{home}", __name__)
    # Bind every name of that submodule, so later lookups skip __getattr__.
    globals().update({n: getattr(module, n) for n, h in _LAZY.items() if h == home})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# Variables through which a user (or the Makefile) already chose how OpenMP threads wait: GNU libgomp's spin count,
# LLVM/Intel libomp's block time, or the standard policy.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def configure_openmp() -> bool:
    """Let torch's idle OpenMP worker threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``): busy-machine
    protection, called by the entry points (``aen-train``, the chapters' :func:`aen_lib.book.notebook.validate_parameters`,
    the benchmarks), never by importing the library.

    Why: with spinning workers, a small 2-thread training step ran 30-60x slower while another process held one of the
    two cores; sleeping costs nothing measurable at large shapes (``benchmarks/bench_busy_machine.py``).

    When it is too late: the GNU OpenMP runtime in torch's Linux wheels (torch 2.13) reads ``OMP_WAIT_POLICY`` once,
    while ``import torch`` loads it; its threads are started later but keep that setting. Called after torch is
    imported, this changes nothing in the current process, only in processes it starts afterwards (they inherit the
    environment). ``import aen_lib`` and ``aen_lib.book.notebook`` do not import torch, so call this right after them.

    A wait setting already in the environment (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME``) is the
    user's choice and is kept. Returns True when this process's OpenMP runtime will still read the environment (torch
    not imported yet), False when it is too late.
    """
    if not any(name in os.environ for name in _WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "torch" not in sys.modules
