"""Memory and time planner for SAE training at LLM scale, and a tracer that measures what it predicts.

Before renting GPUs for the paper's Llama-3.1-8B protocol (d 4096, m 131,072, batch 4,096 tokens, 100,000 steps) one
wants three numbers: the peak memory of one GPU, the FLOPs of one step, and the wall-clock time of the budget.

**Memory of one SAE training step** (Adam, parameters float32; B tokens per GPU, n = d_in, m = d_sae). Let
``W = n·m·4`` bytes (one weight matrix) and ``U = B·m·4`` bytes (one float32 ``[B, m]`` activation).

* Persistent: parameters (2W + biases), Adam's two moments and its scratch buffer (6W + biases; the scratch makes the
  common step allocation-free, :class:`aen_lib.sae.optim.MemberAdam`), adaptive EMA and dead-latent window [m].
* Per step, the largest of four phases, read off the autograd graph of :meth:`aen_lib.sae.model.SAE.loss` and the
  trainer (and checked with :class:`TensorMemoryTracer`, ``tests/test_planner.py``):

  ====================  =====================================================================  ============
  phase                 what is alive                                                          bytes
  ====================  =====================================================================  ============
  penalty backward      ``pre`` and ``h`` (kept), the l1/l2/TopK gradient branches of h        k_A · U
  decoder backward      the above, minus spent branches, plus grad(W_dec)                      k_B · U + W
  encoder backward      ``pre``, ``h``, grad(pre), grad(W_dec), grad(W_enc)                    k_C · U + 2W
  Adam step             ``pre``, ``h``, both gradients (Adam works in its scratch buffer)        2 · U + 2W
  ====================  =====================================================================  ============

  k_A counts the [B, m] buffers of the architecture's backward, declared by each architecture
  (:meth:`aen_lib.sae.architectures.Architecture.activation_counts`): 3 for TopK, 4 (and one more in the decoder phase)
  for the l1 family (the column sums Σ_b h broadcast back to [B, m] in backward), 5/8/6 for JumpReLU's
  straight-through functions. TopK+AuxK declares the count of a step in which its auxiliary loss runs (dead latents
  exist), an upper bound for steps in which none is dead.
  With bf16 autocast the encoder's fused matmul-plus-bias returns bf16, so every [B, m] activation is half of U, and
  bf16 copies of the weights live during the backward (+W/2): autocast saves memory as well as time.
  Small [B, n] terms (x, x − b_dec, x̂, residual: 4·B·n·4 bytes) are added. Allocator overhead and fragmentation
  are not modelled: budget some headroom.

**LM memory**: the weights of every block that is kept (``truncate=True`` drops the blocks after the hook, which
early exit never runs) in the LM dtype, plus the activations of one no-grad forward of ``lm_batch`` windows of T
tokens: the residual stream and attention (≈ 6·d per token) and the MLP (gate, up, product: 3·d_ffn per token), and a
float32 copy of the hooked activation and of its normalised version.

**FLOPs**: SAE ``10·B·n·m`` per step, matmuls only: forward 4Bnm (encoder, decoder), backward 6Bnm (both weight
gradients and the gradient of h). The encoder input ``x − b_dec`` gets no gradient: b_dec's encoder gradient flows
through a zero-valued [1, m] term instead (:meth:`aen_lib.sae.model.SAE._pre3`), which saves the fifth big matmul.
``benchmarks/bench_core.py`` uses the same count; a ``FlopCounterMode`` trace confirms it (``tests/test_planner.py``). Elementwise work is not counted. LM forward ``2·N·tokens`` with N the non-embedding parameters of the blocks that run,
plus the causal attention scores ``2·T·d`` per token per block.

**Time** on G GPUs of a given peak at a stated efficiency: ``FLOPs / G / (peak · efficiency)`` for the SAE (the fp32
peak without autocast: PyTorch does not use TF32 for fp32 matmuls by default; the bf16 peak with autocast) and the LM
(bf16), plus, with G > 1, a ring all-reduce of the float32 gradients, ``2 (G−1)/G · bytes / link bandwidth``, per
step, counted as if it did not overlap with the backward (the loop all-reduces after the backward, in place:
:class:`aen_lib.sae.reduce.ProcessGroupReducer`). In-place all-reduce needs no gradient buckets, so multi-GPU memory per
GPU is the one-GPU model at the per-GPU batch (PyTorch's DDP wrapper would add a bucket copy of the gradients).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..sae.architectures import get_architecture
from ..sae.config import SAEConfig

__all__ = [
    "GPUSpec",
    "GPUS",
    "LMSpec",
    "LM_SPECS",
    "activation_counts",
    "sae_step_flops",
    "sae_memory",
    "lm_memory",
    "lm_forward_flops",
    "Plan",
    "plan",
    "plan_table",
    "TensorMemoryTracer",
    "measure_train_step_memory",
    "PAPER_LLAMA",
]

GiB = 1024**3


# --------------------------------------------------------------------------------------------------------------
# Hardware and models
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPUSpec:
    """Peak dense throughput and memory of one accelerator (vendor datasheets; no sparsity)."""

    name: str
    bf16_tflops: float
    """Dense BF16 tensor-core peak, TFLOP/s."""
    fp32_tflops: float
    """FP32 (non-tensor-core) peak, TFLOP/s: what an fp32 matmul reaches with TF32 off (PyTorch's default)."""
    memory_gib: float
    """Memory, GiB (as sold: GB; converted)."""
    link_gb_s: float = 0.0
    """Assumed per-direction GPU-to-GPU bandwidth for the all-reduce, GB/s (0 = unknown: pass one to plan())."""


def _gb(x: float) -> float:
    return x * 1e9 / GiB


#: Datasheet numbers for the GPUs the paper and the book mention. RTX PRO 6000 Blackwell is left out: pass its
#: numbers to :func:`plan` yourself (GPUSpec(...)).
GPUS: Mapping[str, GPUSpec] = {
    "H200-SXM": GPUSpec("H200-SXM", bf16_tflops=989.0, fp32_tflops=67.0, memory_gib=_gb(141), link_gb_s=450.0),
    "H100-SXM": GPUSpec("H100-SXM", bf16_tflops=989.0, fp32_tflops=67.0, memory_gib=_gb(80), link_gb_s=450.0),
    "A100-SXM-80GB": GPUSpec("A100-SXM-80GB", bf16_tflops=312.0, fp32_tflops=19.5, memory_gib=_gb(80),
                             link_gb_s=300.0),
    "L40S": GPUSpec("L40S", bf16_tflops=362.0, fp32_tflops=91.6, memory_gib=_gb(48), link_gb_s=32.0),
}


@dataclass(frozen=True)
class LMSpec:
    """The shape of a Llama-style decoder (what the planner needs to count weights, activations and FLOPs)."""

    name: str
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, config: Any, name: str = "") -> "LMSpec":
        """From a ``transformers`` LlamaConfig-like object."""
        return cls(name or getattr(config, "_name_or_path", "") or config.model_type, config.num_hidden_layers,
                   config.hidden_size, config.intermediate_size, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads, config.vocab_size,
                   bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def block_params(self) -> int:
        """Parameters of one block: q, o [d, d]; k, v [d, d·kv/heads]; gate, up, down [d, d_ffn]; two RMSNorms."""
        d, kv = self.d_model, self.d_model * self.n_kv_heads // self.n_heads
        return 2 * d * d + 2 * d * kv + 3 * d * self.d_ffn + 2 * d

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.d_model

    @property
    def n_params(self) -> int:
        """All parameters (embedding, blocks, final norm, unembedding unless tied)."""
        head = 0 if self.tied_embeddings else self.vocab * self.d_model
        return self.embedding_params + self.n_layers * self.block_params + self.d_model + head

    def params_kept(self, layer: int, truncate: bool) -> int:
        """Parameters held in memory when harvesting block ``layer``: all of them, or with ``truncate`` the embedding,
        blocks 0..layer and the final norm (:func:`aen_lib.training.distributed.drop_blocks_after`)."""
        if not truncate:
            return self.n_params
        return self.embedding_params + (layer + 1) * self.block_params + self.d_model


#: Llama-3.1-8B (the paper's model, book: paper facts, language-model protocols) and SmolLM2-135M (our offline stand-in), from their configs.
LM_SPECS: Mapping[str, LMSpec] = {
    "llama-3.1-8b": LMSpec("meta-llama/Llama-3.1-8B", n_layers=32, d_model=4096, d_ffn=14336, n_heads=32,
                           n_kv_heads=8, vocab=128256, tied_embeddings=False),
    "smollm2-135m": LMSpec("smollm2-135m", n_layers=30, d_model=576, d_ffn=1536, n_heads=9, n_kv_heads=3,
                           vocab=49152, tied_embeddings=True),
}

#: [B, m]-buffer counts (k_A, k_B, k_C) of the backward phases of one step, per architecture (module docstring).
def activation_counts(architecture: str) -> tuple[float, float, float]:
    """[B, m]-sized tensors alive in the penalty, decoder and encoder backward of one step, as the architecture
    declares them (:meth:`aen_lib.sae.architectures.Architecture.activation_counts`)."""
    return get_architecture(architecture).activation_counts(architecture)


# --------------------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------------------


def _check_pos(**kw: Any) -> None:
    for k, v in kw.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k}={v!r} must be a positive integer")


def sae_step_flops(batch: int, d_in: int, d_sae: int) -> float:
    """FLOPs of one SAE training step, 10·B·n·m (matmuls only, as traced; see the module docstring)."""
    _check_pos(batch=batch, d_in=d_in, d_sae=d_sae)
    return 10.0 * batch * d_in * d_sae


def sae_memory(d_in: int, d_sae: int, batch: int, *, architecture: str = "aen", autocast: str = "none",
               optimizer: str = "adam") -> dict[str, float]:
    """Predicted bytes of one SAE training step on one device (module docstring; book: paper facts, model and loss fp32 parameters).

    Returns ``params``, ``optimizer``, ``statistics`` (persistent), ``step_peak`` (largest phase of the step) and
    ``total`` = persistent + step_peak, plus ``phase`` naming the largest phase.
    """
    _check_pos(d_in=d_in, d_sae=d_sae, batch=batch)
    if autocast not in ("none", "bf16"):
        raise ValueError(f"autocast={autocast!r}; allowed: 'none', 'bf16'")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}; allowed: 'adam' (2 states per parameter), 'sgd' (none)")
    n, m, B = d_in, d_sae, batch
    W, U = 4.0 * n * m, 4.0 * B * m
    params = 2 * W + 4.0 * (n + m)
    states = 3 if optimizer == "adam" else 0  # two moments and the scratch buffer
    opt = states * params
    stats = 4.0 * m * 3  # adaptive EMA, dead-window max, weights of the current step
    kA, kB, kC = activation_counts(architecture)  # ValueError for an unknown architecture
    bf = autocast == "bf16"
    A = U / 2 if bf else U  # under autocast the [B, m] activations are bf16
    phases = {
        "penalty backward": kA * A + (0.5 * W if bf else 0.0),
        "decoder backward": kB * A + W + (0.5 * W if bf else 0.0),
        "encoder backward": kC * A + 2 * W + (0.5 * W if bf else 0.0),
        "optimizer step": 2 * A + 2 * W,
    }
    phase = max(phases, key=phases.__getitem__)
    step = phases[phase] + 4.0 * 4 * B * n
    return {"params": params, "optimizer": opt, "statistics": stats, "step_peak": step,
            "total": params + opt + stats + step, "phase": phase}  # type: ignore[dict-item]


def lm_memory(lm: LMSpec, layer: int, lm_batch: int, seq_len: int, *, dtype_bytes: int = 2,
              truncate: bool = False) -> dict[str, float]:
    """Predicted bytes of the LM when harvesting block ``layer`` with early exit (book: paper facts, language-model protocols: bf16 = 2 bytes)."""
    _check_pos(lm_batch=lm_batch, seq_len=seq_len, dtype_bytes=dtype_bytes)
    if not 0 <= layer < lm.n_layers:
        raise ValueError(f"layer={layer} must lie in [0, {lm.n_layers})")
    weights = lm.params_kept(layer, truncate) * dtype_bytes
    tokens = lm_batch * seq_len
    acts = tokens * (6 * lm.d_model + 3 * lm.d_ffn) * dtype_bytes + tokens * lm.d_model * 4 * 2
    return {"weights": float(weights), "activations": float(acts), "total": float(weights + acts)}


def lm_forward_flops(lm: LMSpec, layer: int, tokens: int, seq_len: int) -> float:
    """FLOPs of the LM forward up to block ``layer`` (early exit): 2·N·tokens + causal attention 2·T·d per block."""
    _check_pos(tokens=tokens, seq_len=seq_len)
    blocks = layer + 1
    return 2.0 * blocks * lm.block_params * tokens + 2.0 * blocks * seq_len * lm.d_model * tokens


@dataclass
class Plan:
    """One row of the planner: a protocol on G GPUs of one kind."""

    gpu: str
    n_gpus: int
    per_gpu_batch: int
    memory_gib: float
    """Predicted peak per GPU (SAE + LM), GiB."""
    fits: bool
    sae_memory_gib: float
    lm_memory_gib: float
    sae_tflop_per_step: float
    lm_tflop_per_step: float
    step_ms: float
    allreduce_ms: float
    hours: float
    """Wall-clock hours for the whole budget."""
    efficiency: float
    autocast: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The paper's Llama protocol (book: paper facts, language-model protocols).
PAPER_LLAMA: Mapping[str, Any] = {
    "lm": "llama-3.1-8b", "layer": 16, "d_in": 4096, "d_sae": 131_072, "batch": 4096, "steps": 100_000,
    "seq_len": 128, "lm_batch": 16,
}


def plan(*, d_in: int, d_sae: int, batch: int, steps: int, gpu: GPUSpec | str, n_gpus: int = 1,
         architecture: str = "aen", autocast: str = "bf16", efficiency: float = 0.4,
         lm: LMSpec | str | None = None, layer: int = 0, lm_batch: int = 16, seq_len: int = 128,
         lm_dtype_bytes: int = 2, truncate_lm: bool = False, link_gb_s: float | None = None,
         cached_activations: bool = False) -> Plan:
    """Memory per GPU, FLOPs per step and hours for ``steps`` steps of global batch ``batch`` on ``n_gpus`` GPUs.

    ``efficiency`` is the assumed fraction of the peak the matmuls reach (measure it with
    ``benchmarks/gpu_llama_shape.py``). With ``cached_activations=True`` the LM does not run (activations are read
    from disk), so its memory and FLOPs are left out. Each GPU trains on ``batch / n_gpus`` tokens (DDP).
    """
    _check_pos(d_in=d_in, d_sae=d_sae, batch=batch, steps=steps, n_gpus=n_gpus)
    if batch % n_gpus:
        raise ValueError(f"batch={batch} must be divisible by n_gpus={n_gpus}")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency={efficiency!r} must lie in (0, 1]")
    if isinstance(gpu, str):
        if gpu not in GPUS:
            raise ValueError(f"gpu={gpu!r} is not in the table {sorted(GPUS)}; pass a GPUSpec with its datasheet numbers")
        gpu = GPUS[gpu]
    if isinstance(lm, str):
        if lm not in LM_SPECS:
            raise ValueError(f"lm={lm!r}; known: {sorted(LM_SPECS)} (or pass an LMSpec)")
        lm = LM_SPECS[lm]
    per = batch // n_gpus
    sm = sae_memory(d_in, d_sae, per, architecture=architecture, autocast=autocast)
    sae_flops = sae_step_flops(batch, d_in, d_sae)
    sae_peak = (gpu.bf16_tflops if autocast == "bf16" else gpu.fp32_tflops) * 1e12
    t_sae = sae_flops / n_gpus / (sae_peak * efficiency)
    lm_mem, lm_flops, t_lm = 0.0, 0.0, 0.0
    if lm is not None and not cached_activations:
        lm_mem = lm_memory(lm, layer, lm_batch, seq_len, dtype_bytes=lm_dtype_bytes, truncate=truncate_lm)["total"]
        lm_flops = lm_forward_flops(lm, layer, batch, seq_len)
        t_lm = lm_flops / n_gpus / (gpu.bf16_tflops * 1e12 * efficiency)
    t_comm = 0.0
    if n_gpus > 1:
        bw = gpu.link_gb_s if link_gb_s is None else link_gb_s
        if not bw > 0:
            raise ValueError(f"link_gb_s must be > 0 for n_gpus > 1 (no default for {gpu.name})")
        t_comm = 2 * (n_gpus - 1) / n_gpus * sm["params"] / (bw * 1e9)
    step_s = t_sae + t_lm + t_comm
    mem = sm["total"] + lm_mem
    return Plan(gpu=gpu.name, n_gpus=n_gpus, per_gpu_batch=per, memory_gib=mem / GiB, fits=mem < gpu.memory_gib * GiB,
                sae_memory_gib=sm["total"] / GiB, lm_memory_gib=lm_mem / GiB, sae_tflop_per_step=sae_flops / 1e12,
                lm_tflop_per_step=lm_flops / 1e12, step_ms=step_s * 1e3, allreduce_ms=t_comm * 1e3,
                hours=steps * step_s / 3600, efficiency=efficiency, autocast=autocast,
                details={"sae": sm, "t_sae_ms": t_sae * 1e3, "t_lm_ms": t_lm * 1e3})


def plan_table(gpu_counts: tuple[int, ...] = (1, 2, 8), **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`plan` for several GPU counts, as flat dicts (for a DataFrame). ``kwargs`` as in :func:`plan`."""
    rows = []
    for g in gpu_counts:
        p = plan(n_gpus=g, **kwargs)
        d = p.to_dict()
        d.pop("details")
        rows.append(d)
    return rows


# --------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------


def _storage_key(t: Tensor) -> Any:
    from torch.multiprocessing.reductions import StorageWeakRef

    return StorageWeakRef(t.untyped_storage())


class TensorMemoryTracer(TorchDispatchMode):
    """Peak bytes of tensor storages allocated by ATen ops while active: the CPU analogue of
    ``torch.cuda.max_memory_allocated`` (used to check :func:`sae_memory`).

    Every op's outputs whose storage is new (not shared with one of its inputs: views and in-place ops allocate
    nothing) are recorded with their byte size and a weak reference; a storage counts until it is freed. Sees the
    backward pass too (dispatch modes follow autograd). Limits: storages that exist on entry (parameters, optimiser
    state) are not counted, so add them yourself; allocator rounding and fragmentation, Python objects and
    non-ATen allocations (e.g. inside a C extension) are invisible; RSS (what the OS sees) may be larger.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[Any, tuple[Any, int]] = {}
        self.current = 0
        self.peak = 0

    def _collect(self) -> None:
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for k in dead:
            self.current -= self._live.pop(k)[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._collect()
        inputs = {_storage_key(a).cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                ref = _storage_key(t)
                if ref.cdata not in self._live and ref.cdata not in inputs:
                    nbytes = t.untyped_storage().nbytes()
                    self._live[ref.cdata] = (ref, nbytes)
                    self.current += nbytes
        self.peak = max(self.peak, self.current)
        return out


def measure_train_step_memory(sae_cfg: SAEConfig, batch: int, *, autocast: str = "none",
                              device: str | torch.device = "cpu", grad_clip: float = 1.0) -> dict[str, float]:
    """Measured bytes of one training step of :class:`aen_lib.training.train.Trainer` (after a warm-up step that creates Adam's
    state), to compare with :func:`sae_memory`: ``persistent`` (parameters, Adam, statistics), ``step_peak`` and
    ``total``. On CPU the step is traced with :class:`TensorMemoryTracer`; on CUDA ``torch.cuda.max_memory_allocated``
    is read as well (``cuda_total``).
    """
    from ..data.sources import TensorStream
    from ..sae.model import SAE
    from .train import TrainConfig, Trainer

    dev = torch.device(device)
    sae = SAE(sae_cfg, device=dev)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(2 * batch, sae_cfg.d_in, generator=gen).to(dev)
    tr = Trainer(sae, TensorStream(rows), TrainConfig(steps=10, batch_size=batch, progress=False, grad_clip=grad_clip,
                                                       autocast=autocast))
    tr.train_step()
    tr.opt.zero_grad()
    persistent = sum(p.numel() * p.element_size() for p in sae.parameters())
    persistent += sum(b.numel() * b.element_size() for b in sae.buffers())
    persistent += sum(v.numel() * v.element_size() for v in tr.opt.tensors())
    persistent += tr.dead.max_abs.numel() * tr.dead.max_abs.element_size()
    out: dict[str, float] = {}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        tr.train_step()
        torch.cuda.synchronize(dev)
        out["cuda_total"] = float(torch.cuda.max_memory_allocated(dev) - base + persistent)
        tr.opt.zero_grad()
    with TensorMemoryTracer() as tracer:
        tr.train_step()
    out.update(persistent=float(persistent), step_peak=float(tracer.peak), total=float(persistent + tracer.peak))
    return out
