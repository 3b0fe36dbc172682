"""The one SAE module shared by every architecture (DIGEST §2.1).

    h     = act( (x - b_dec) W_enc + b_enc )      # act = ReLU / TopK / BatchTopK / JumpReLU (the objective)
    x_hat = h W_dec + b_dec                       # rows of W_dec are unit-norm dictionary atoms

Parameters use the SAELens "standard" layout: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
``W_dec [d_sae, d_in]``, ``b_dec [d_in]``. ``b_dec`` is both the pre-encoder bias and the decoder output bias
(tied, as in Bricken et al. 2023). Initialisation follows PyTorch's ``nn.Linear`` default as the reference code
does: encoder weight and bias ~ U(±1/√d_in); decoder ~ U(±1/√d_sae) then each atom scaled to unit norm;
``b_dec = 0``. Encoder and decoder are untied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import SAEConfig
from .objectives import SparsityObjective, make_objective


@dataclass
class SAEOutput:
    """Result of a forward pass. Shapes: x_hat [..., d_in], h and pre [..., d_sae]."""

    x_hat: Tensor
    h: Tensor
    pre: Tensor


@dataclass
class LossTerms:
    """The loss of DIGEST §2.2 term by term; ``total = mse + l1 + l2 + aux``.

    ``mse`` is averaged over batch and dimensions; ``l1`` and ``l2`` are already multiplied by λ1 and λ2;
    ``aux`` holds any other penalty (JumpReLU's λ0·L0).
    """

    total: Tensor
    mse: Tensor
    l1: Tensor
    l2: Tensor
    aux: Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "mse", "l1", "l2", "aux")}


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32) * 2 - 1) * bound


class SAE(nn.Module):
    """A sparse autoencoder whose sparsity mechanism is ``self.objective`` (see :mod:`aen_lib.objectives`)."""

    def __init__(
        self,
        cfg: SAEConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise TypeError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        n, m = cfg.d_in, cfg.d_sae
        dtype = dtype or torch.float32
        if generator is None:
            generator = torch.Generator().manual_seed(cfg.seed)
        # Drawn on the generator's device in float32, then moved: the same seed gives the same SAE everywhere.
        w_enc = _uniform((m, n), n**-0.5, generator).T.contiguous()  # nn.Linear(n, m).weight is [m, n]
        b_enc = _uniform((m,), n**-0.5, generator)
        w_dec = _uniform((n, m), m**-0.5, generator).T.contiguous()  # nn.Linear(m, n).weight is [n, m]
        self.W_enc = nn.Parameter(w_enc.to(device=device, dtype=dtype))
        self.b_enc = nn.Parameter(b_enc.to(device=device, dtype=dtype))
        self.W_dec = nn.Parameter(w_dec.to(device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(n, device=device, dtype=dtype))
        self.project_decoder_()
        self.objective: SparsityObjective = make_objective(cfg, device=device)

    # --- shapes -------------------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [..., d_in={self.cfg.d_in}]")

    # --- the map ------------------------------------------------------------------------------------------
    def pre_activation(self, x: Tensor) -> Tensor:
        """Encoder pre-activations (x - b_dec) W_enc + b_enc. x [..., d_in] -> [..., d_sae]."""
        self._check_input(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Codes h [..., d_sae] (non-negative)."""
        return self.objective.activate(self.pre_activation(x))

    def decode(self, h: Tensor) -> Tensor:
        """Reconstruction h W_dec + b_dec. h [..., d_sae] -> [..., d_in]."""
        if h.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"h has shape {tuple(h.shape)}; expected [..., d_sae={self.cfg.d_sae}]")
        return h @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> SAEOutput:
        pre = self.pre_activation(x)
        h = self.objective.activate(pre)
        return SAEOutput(x_hat=self.decode(h), h=h, pre=pre)

    def loss(self, x: Tensor, *, update: bool = True) -> tuple[SAEOutput, LossTerms]:
        """Forward pass and the loss of DIGEST §2.2; ``update`` advances the adaptive-weight state (training)."""
        out = self(x)
        mse = (x - out.x_hat).pow(2).mean()
        pen = self.objective.penalty(out.h, out.pre, update=update)
        total = mse + pen["l1"] + pen["l2"] + pen["aux"]
        return out, LossTerms(total=total, mse=mse, l1=pen["l1"], l2=pen["l2"], aux=pen["aux"])

    # --- constraint ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def project_decoder_(self) -> None:
        """Scale every atom (row of W_dec) to unit norm: W_dec[i] /= max(‖W_dec[i]‖, 1e-12) (DIGEST §2.1)."""
        norms = self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.div_(norms)

    def extra_repr(self) -> str:
        return f"d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, architecture={self.cfg.architecture!r}"
