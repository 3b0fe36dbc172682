"""The SAE: one module for one SAE or a stack of M SAEs of one shape (paper §2; Bricken et al. 2023).

    h     = act( (x - b_dec) W_enc + b_enc )      # act: the member's architecture (aen_lib.sae.architectures)
    x_hat = h W_dec + b_dec                       # rows of W_dec are unit-norm dictionary atoms

Parameters use the SAELens "standard" layout: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``, with a leading member dimension for a stack (``SAE([cfg1, cfg2, ...])``: ``W_enc [M, d_in, d_sae]``
…). ``b_dec`` is both the pre-encoder bias and the decoder bias (tied). Initialisation follows PyTorch's
``nn.Linear`` default, as the authors' reference implementation does: encoder weight and bias ~ U(±1/√d_in);
decoder ~ U(±1/√d_sae), then each atom scaled to unit norm; ``b_dec = 0``; encoder and decoder untied. Each member is
drawn from its own ``cfg.seed``, so member j of a stack starts exactly as ``SAE(cfgs[j])``.

Everything is computed with a member dimension (a single SAE is a stack of one whose parameters are stored without
it), so one SAE, a sweep stack and a DDP rank run the same code. Consecutive members of one architecture class form
a *run* handled by one :class:`~aen_lib.sae.architectures.Architecture` instance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .architectures import Architecture, StepContext, get_architecture
from .config import SAEConfig
from .reduce import LOCAL, Reducer


@dataclass
class SAEOutput:
    """A forward pass. Single SAE: x_hat [..., d_in], h and pre [..., d_sae]; stack: [M, B, ·]."""

    x_hat: Tensor
    h: Tensor
    pre: Tensor


@dataclass
class LossTerms:
    """The loss term by term, ``total = mse + l1 + l2 + aux``; each is 0-dim for one SAE and ``[M]`` for a stack.

    ``mse`` is averaged over batch and dimensions; ``l1`` and ``l2`` are already multiplied by λ1 and λ2; ``aux``
    holds any other term (JumpReLU's λ0·L0, TopK's AuxK loss).
    """

    total: Tensor
    mse: Tensor
    l1: Tensor
    l2: Tensor
    aux: Tensor

    NAMES = ("total", "mse", "l1", "l2", "aux")

    def as_floats(self) -> dict[str, float]:
        """Python floats of a single SAE's terms."""
        return {k: float(getattr(self, k).detach()) for k in self.NAMES}


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32) * 2 - 1) * bound


def _init_member(cfg: SAEConfig, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    n, m = cfg.d_in, cfg.d_sae
    w_enc = _uniform((m, n), n**-0.5, generator).T.contiguous()  # nn.Linear(n, m).weight is [m, n]
    b_enc = _uniform((m,), n**-0.5, generator)
    w_dec = _uniform((n, m), m**-0.5, generator).T.contiguous()  # nn.Linear(m, n).weight is [n, m]
    return w_enc, b_enc, w_dec


class SAE(nn.Module):
    """One SAE (``SAE(cfg)``) or a stack of SAEs of one shape (``SAE([cfg, ...])``), trained by :mod:`aen_lib.training.train`."""

    def __init__(
        self,
        cfg: SAEConfig | Sequence[SAEConfig],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.stacked = not isinstance(cfg, SAEConfig)
        cfgs = list(cfg) if self.stacked else [cfg]  # type: ignore[arg-type]
        if not cfgs:
            raise ValueError("an SAE stack needs at least one SAEConfig")
        for i, c in enumerate(cfgs):
            if not isinstance(c, SAEConfig):
                raise TypeError(f"cfg must be an SAEConfig or a list of them; item {i} is {type(c).__name__}")
        n, m = cfgs[0].d_in, cfgs[0].d_sae
        for c in cfgs:
            if (c.d_in, c.d_sae) != (n, m):
                raise ValueError(f"all members of a stack need one shape; got (d_in, d_sae) = {(c.d_in, c.d_sae)} "
                                 f"and {(n, m)} (train_sweep splits shapes into separate stacks)")
        if generator is not None and self.stacked:
            raise ValueError("generator= initialises a single SAE; a stack draws each member from its cfg.seed")
        self.cfgs = cfgs
        self.d_in, self.d_sae = n, m
        dtype = dtype or torch.float32
        # Drawn on the generator's device in float32, then moved: the same seed gives the same SAE everywhere.
        draws = [_init_member(c, generator if generator is not None else torch.Generator().manual_seed(c.seed))
                 for c in cfgs]
        w_enc, b_enc, w_dec = (torch.stack(t) if self.stacked else t[0] for t in zip(*draws))
        self.W_enc = nn.Parameter(w_enc.to(device=device, dtype=dtype))
        self.b_enc = nn.Parameter(b_enc.to(device=device, dtype=dtype))
        self.W_dec = nn.Parameter(w_dec.to(device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(*self.member_shape, n, device=device, dtype=dtype))
        self.project_decoder_()
        runs, start = [], 0
        for arch, group in itertools.groupby(cfgs, key=lambda c: get_architecture(c.architecture)):
            members = list(group)
            runs.append(arch(members, start, self.W_enc.device, dtype))
            start += len(members)
        self.runs: nn.ModuleList = nn.ModuleList(runs)

    # --- shapes -------------------------------------------------------------------------------------------
    @property
    def cfg(self) -> SAEConfig:
        """The config of a single SAE (a stack has ``cfgs``)."""
        if self.stacked:
            raise TypeError("a stack of SAEs has no single cfg; use .cfgs[j] or .member(j).cfg")
        return self.cfgs[0]

    @property
    def n_members(self) -> int:
        return len(self.cfgs)

    @property
    def member_shape(self) -> tuple[int, ...]:
        """``()`` for one SAE, ``(M,)`` for a stack: the leading shape of every parameter and loss term."""
        return (len(self.cfgs),) if self.stacked else ()

    @property
    def architecture(self) -> Architecture:
        """The architecture object of a single SAE (its run of one member)."""
        if self.stacked:
            raise TypeError("a stack has several runs; use .run_of(j)")
        return self.runs[0]  # type: ignore[return-value]

    def run_of(self, j: int) -> tuple[Architecture, int]:
        """The run holding member ``j`` and ``j``'s index inside it."""
        for r in self.runs:
            if r.start <= j < r.stop:  # type: ignore[operator]
                return r, j - r.start  # type: ignore[return-value,operator]
        raise IndexError(f"member {j} out of range [0, {self.n_members})")

    def _m3(self, p: Tensor) -> Tensor:
        """A parameter with its member dimension (a view; a single SAE's gets a leading 1)."""
        return p if self.stacked else p.unsqueeze(0)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        ok = x.dim() >= 1 if not self.stacked else x.dim() in (2, 3)
        if not ok or x.shape[-1] != self.d_in or (self.stacked and x.dim() == 3 and x.shape[0] != self.n_members):
            want = "[..., d_in]" if not self.stacked else f"[B, d_in] or [M={self.n_members}, B, d_in]"
            raise ValueError(f"x has shape {tuple(x.shape)}; expected {want} with d_in={self.d_in}")

    def _ctx(self, update: bool, reducer: Reducer) -> StepContext:
        return StepContext(update=update, training=self.training, reducer=reducer)

    # --- the map, with a member dimension ---------------------------------------------------------------------
    def _pre3(self, x3: Tensor) -> Tensor:
        """(x - b_dec) W_enc + b_enc for every member. x3 [1 or M, B, n] -> [M, B, m]."""
        w = self._m3(self.W_enc)
        b_dec = self._m3(self.b_dec).unsqueeze(1)  # [M, 1, n]
        xc = x3 - b_dec.detach()  # [M, B, n], no gradient path
        # b_dec's gradient through the encoder, -Σ_b (∂L/∂pre_b) W_encᵀ, flows through this zero-valued term instead of
        # through xc, so autograd skips the [M, B, n] input gradient (one of the six big matmuls of a step); the value
        # is exactly (x - b_dec) W_enc + b_enc. (W_enc is detached there: its gradient from a zero term is zero.)
        bias = self._m3(self.b_enc).unsqueeze(1) - torch.bmm(b_dec - b_dec.detach(), w.detach())  # [M, 1, m]
        return torch.baddbmm(bias, xc.expand(w.shape[0], -1, -1), w)

    def _split(self, t3: Tensor) -> list[Tensor]:
        """t3 [M, ...] as one piece per run. One ``split`` instead of a slice per run: autograd then joins the pieces'
        gradients with one ``cat``, where each slice would have zero-filled and added a gradient of the full size."""
        return list(t3.split([r.stop - r.start for r in self.runs])) if len(self.runs) > 1 else [t3]  # type: ignore[misc]

    def _act3(self, pre3: Tensor, ctx: StepContext) -> Tensor:
        hs = [r.activate(p, ctx) for r, p in zip(self.runs, self._split(pre3))]  # type: ignore[misc]
        return torch.cat(hs) if len(hs) > 1 else hs[0]

    def _dec3(self, h3: Tensor) -> Tensor:
        return torch.baddbmm(self._m3(self.b_dec).unsqueeze(1), h3, self._m3(self.W_dec))

    def _as3(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """x as [1 or M, B, n] and the leading shape to restore (single SAE: any leading dims)."""
        self._check_input(x)
        if self.stacked:
            return (x if x.dim() == 3 else x.unsqueeze(0)), ()
        return x.reshape(1, -1, self.d_in), tuple(x.shape[:-1])

    def _out(self, t3: Tensor, lead: tuple[int, ...]) -> Tensor:
        return t3 if self.stacked else t3.reshape(*lead, t3.shape[-1])

    # --- public map -------------------------------------------------------------------------------------------
    def pre_activation(self, x: Tensor) -> Tensor:
        """Encoder pre-activations. Single: x [..., d_in] -> [..., d_sae]; stack: [B or M×B, d_in] -> [M, B, d_sae]."""
        x3, lead = self._as3(x)
        return self._out(self._pre3(x3), lead)

    def encode(self, x: Tensor) -> Tensor:
        """Codes h (non-negative), shaped like :meth:`pre_activation`."""
        x3, lead = self._as3(x)
        return self._out(self._act3(self._pre3(x3), self._ctx(False, LOCAL)), lead)

    def decode(self, h: Tensor) -> Tensor:
        """h W_dec + b_dec. Single: h [..., d_sae] -> [..., d_in]; stack: [M, B, d_sae] -> [M, B, d_in]."""
        if h.shape[-1] != self.d_sae or (self.stacked and (h.dim() != 3 or h.shape[0] != self.n_members)):
            raise ValueError(f"h has shape {tuple(h.shape)}; expected "
                             f"{'[..., d_sae]' if not self.stacked else f'[M={self.n_members}, B, d_sae]'} "
                             f"with d_sae={self.d_sae}")
        if self.stacked:
            return self._dec3(h)
        return self._dec3(h.reshape(1, -1, self.d_sae)).reshape(*h.shape[:-1], self.d_in)

    def forward(self, x: Tensor) -> SAEOutput:
        x3, lead = self._as3(x)
        pre = self._pre3(x3)
        h = self._act3(pre, self._ctx(False, LOCAL))
        return SAEOutput(x_hat=self._out(self._dec3(h), lead), h=self._out(h, lead), pre=self._out(pre, lead))

    def loss(self, x: Tensor, *, update: bool = True, reducer: Reducer = LOCAL) -> tuple[SAEOutput, LossTerms]:
        """Forward pass and every member's loss (paper §2): MSE over batch and dimensions + the penalties.

        ``update`` advances the running statistics (training). ``reducer`` makes batch statistics global under DDP.
        x: [B, d_in] (one SAE, or shared by a stack) or [M, B, d_in].
        """
        x3, lead = self._as3(x)
        if not self.stacked and len(lead) != 1:
            raise ValueError(f"loss expects a batch x [B, d_in]; got shape {tuple(x.shape)}")
        ctx = self._ctx(update, reducer)
        pre = self._pre3(x3)
        pres = self._split(pre)
        hs = [r.activate(p, ctx) for r, p in zip(self.runs, pres)]  # type: ignore[misc]
        h = torch.cat(hs) if len(hs) > 1 else hs[0]
        x_hat = self._dec3(h)
        mse = (x3 - x_hat).pow(2).mean(dim=(1, 2))  # [M]
        xs = [x3] * len(self.runs) if x3.shape[0] == 1 else self._split(x3)
        parts = [r.penalty(*args, ctx) for r, *args in zip(self.runs, hs, pres, xs, self._split(x_hat),  # type: ignore[misc]
                                                           self._split(self._m3(self.W_dec)))]
        l1, l2, aux = (torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in ("l1", "l2", "aux"))
        terms = LossTerms(total=mse + l1 + l2 + aux, mse=mse, l1=l1, l2=l2, aux=aux)
        if not self.stacked:
            terms = LossTerms(*(t.squeeze(0) for t in (terms.total, terms.mse, terms.l1, terms.l2, terms.aux)))
        return SAEOutput(x_hat=self._out(x_hat, lead), h=self._out(h, lead), pre=self._out(pre, lead)), terms

    @torch.no_grad()
    def set_b_dec_(self, value: Tensor) -> None:
        """Start the pre-encoder (and decoder) bias at ``value [d_in]`` for every member, e.g. the data mean, as
        SAELens and others initialise it from a data statistic (the paper and this library start it at 0)."""
        if not isinstance(value, Tensor) or value.shape != (self.d_in,):
            raise ValueError(f"b_dec value must be a tensor of shape ({self.d_in},), got "
                             f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError("b_dec value has non-finite entries")
        self.b_dec.copy_(value.to(self.b_dec.device, self.b_dec.dtype).expand_as(self.b_dec))

    # --- constraint ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def project_decoder_(self, members: Tensor | None = None) -> None:
        """Scale every atom (row of W_dec) to unit norm: W_dec[i] /= max(‖W_dec[i]‖, 1e-12); with ``members``
        [M] bool, only those members (a skipped step leaves the others as they were)."""
        norms = self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if members is None:
            self.W_dec.div_(norms)
        else:
            keep = members.reshape(*self.member_shape, *([1] * (self.W_dec.dim() - len(self.member_shape))))
            self.W_dec.copy_(torch.where(keep, self.W_dec / norms, self.W_dec))

    # --- members, state -------------------------------------------------------------------------------------
    def member_params(self) -> list[tuple[Tensor, slice, bool]]:
        """Every parameter with the members its leading dimension covers and whether it has that dimension
        (a single SAE's weights have none; architecture parameters always do)."""
        out = [(p, slice(0, self.n_members), self.stacked) for p in (self.W_enc, self.b_enc, self.W_dec, self.b_dec)]
        for r in self.runs:
            for p in r.parameters(recurse=False):
                out.append((p, slice(r.start, r.stop), True))  # type: ignore[arg-type]
        return out

    def snapshot_state(self) -> list[list[Tensor]]:
        """Copies of every run's running state (see :meth:`restore_state`)."""
        return [r.snapshot() for r in self.runs]  # type: ignore[operator]

    def restore_state(self, snap: list[list[Tensor]], keep: Tensor) -> None:
        """Roll back the running state of members where ``keep`` [M] is False (their step was skipped)."""
        keep = keep.reshape(-1)
        for r, s in zip(self.runs, snap):
            r.restore(s, keep[r.start : r.stop])  # type: ignore[operator,index]

    @torch.no_grad()
    def member(self, j: int, *, device: torch.device | str | None = None) -> "SAE":
        """Member ``j`` as a single SAE (weights and architecture state copied)."""
        if not 0 <= j < self.n_members:
            raise IndexError(f"member {j} out of range [0, {self.n_members})")
        device = device if device is not None else self.W_enc.device
        sae = SAE(self.cfgs[j], device=device, dtype=self.W_enc.dtype)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(self._m3(getattr(self, name))[j])
        run, jj = self.run_of(j)
        sae.architecture.load_member_state(0, run.member_state(jj))
        sae.train(self.training)
        return sae

    @classmethod
    @torch.no_grad()
    def stack(cls, saes: Sequence["SAE"]) -> "SAE":
        """Single SAEs stacked into one module (weights and state copied; e.g. to resume or evaluate them at once)."""
        if not saes:
            raise ValueError("stack() needs at least one SAE")
        for s in saes:
            if not isinstance(s, SAE) or s.stacked:
                raise TypeError("stack() takes single aen_lib SAEs")
        ref = saes[0].W_enc
        out = cls([s.cfg for s in saes], device=ref.device, dtype=ref.dtype)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(out, name).copy_(torch.stack([getattr(s, name).detach() for s in saes]))
        for j, s in enumerate(saes):
            run, jj = out.run_of(j)
            run.load_member_state(jj, s.architecture.member_state(0))
        out.train(saes[0].training)
        return out

    def summary(self, j: int = 0) -> dict[str, Any]:
        """Architecture diagnostics of member ``j`` for the training log (e.g. adaptive-weight statistics)."""
        run, jj = self.run_of(j)
        return run.summary(jj)

    def extra_repr(self) -> str:
        archs = sorted({c.architecture for c in self.cfgs})
        return f"d_in={self.d_in}, d_sae={self.d_sae}, members={self.n_members}, architectures={archs}"
