"""Adam for one SAE or a stack of them, with a per-member step count and per-member skips (paper §2: Adam, constant LR).

Elementwise the same operations as ``torch.optim.Adam``'s single-tensor path (no weight decay, no amsgrad), so a
member follows exactly the trajectory of its own Adam (``tests/test_optim.py`` checks it against torch's). The step
count is per member, so ``step(apply=mask)`` can leave the members whose step was skipped untouched: parameters,
moments and count.

While every member has taken the same number of steps (no member ever skipped one) and the step applies to all, the
update runs as torch's fused Adam kernel (``torch._fused_adam_``, one pass over each tensor instead of nine; about 3x
faster on a CPU at the paper's synthetic size). It computes the same formula in another order, so it agrees with the
op-by-op path to a few float32 ulps, not bit for bit (``tests/test_optim.py``). ``fused=False`` keeps the op-by-op path;
where the kernel is missing or refuses the tensors, the op-by-op path is used from then on.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


class MemberAdam:
    """Adam over ``params``: ``(tensor, member_slice, has_member_dim)`` as :meth:`aen_lib.sae.model.SAE.member_params`
    gives them. A tensor without a member dimension (a single SAE's weights) is one member.

    ``lr``, ``betas`` and ``eps`` default to ``torch.optim.Adam``'s, whose drop-in this is; the trainer always passes
    its :class:`aen_lib.training.train.TrainConfig`'s, the home of the paper's values."""

    def __init__(
        self,
        params: Sequence[tuple[Tensor, slice, bool]],
        n_members: int,
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool = True,
    ) -> None:
        self.params = list(params)
        self.fused = bool(fused) and hasattr(torch, "_fused_adam_")
        self._uniform = True  # every member has taken the same number of steps (the fused kernel's one count)
        self.n_members = n_members
        for p, sl, has in self.params:
            want = len(range(*sl.indices(n_members)))
            if (p.shape[0] if has else 1) != want:
                raise ValueError(f"parameter of shape {tuple(p.shape)} does not match member slice {sl}")
        device = self.params[0][0].device
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0")
        self.lr = float(lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = torch.zeros(n_members, dtype=torch.float64, device=device)
        self.exp_avg = [torch.zeros_like(self._m(p, has)) for p, _, has in self.params]
        self.exp_avg_sq = [torch.zeros_like(self._m(p, has)) for p, _, has in self.params]
        # one scratch tensor per parameter: the common step allocates nothing (fresh allocations of large tensors are
        # slow on CPU, see aen_lib.training.sweep.CPU_MAX_TENSOR_BYTES)
        self._work = [torch.empty_like(self._m(p, has)) for p, _, has in self.params]

    @staticmethod
    def _m(t: Tensor, has_member_dim: bool) -> Tensor:
        return t if has_member_dim else t.unsqueeze(0)

    def tensors(self) -> list[Tensor]:
        """Every tensor the optimiser holds (moments and scratch), for memory accounting."""
        return self.exp_avg + self.exp_avg_sq + self._work

    def zero_grad(self) -> None:
        for p, _, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, apply: Tensor | None = None) -> None:
        """One Adam step for every member, or only where ``apply`` [M] is True."""
        if apply is None:
            self.steps += 1
            if self.fused and self._uniform and self._fused_step():
                return
        else:
            self.steps += apply.to(self.steps.dtype)
            self._uniform = self._uniform and bool(apply.all())
        bc1 = 1 - self.beta1**self.steps  # [M] float64, as the Python floats of torch's Adam
        bc2_sqrt = (1 - self.beta2**self.steps).sqrt()
        step_size = self.lr / bc1
        for (p, sl, has), m1, m2, buf in zip(self.params, self.exp_avg, self.exp_avg_sq, self._work):
            if p.grad is None:
                continue
            pm, g = self._m(p, has), self._m(p.grad, has)
            shape = (-1,) + (1,) * (pm.dim() - 1)
            if apply is None:
                # torch.optim.Adam's single-tensor step, op for op, in place:
                # denom = sqrt(v) / sqrt(bc2) + eps;  p += (-lr / bc1) * (m / denom)
                m1.lerp_(g, 1 - self.beta1)
                m2.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                torch.sqrt(m2, out=buf)
                buf.div_(bc2_sqrt[sl].to(pm.dtype).reshape(shape)).add_(self.eps)
                torch.div(m1, buf, out=buf)
                pm.add_(buf.mul_((-step_size[sl]).to(pm.dtype).reshape(shape)))
            else:
                keep = apply[sl].reshape(shape)
                n1 = m1.lerp(g, 1 - self.beta1)
                n2 = (m2 * self.beta2).addcmul_(g, g, value=1 - self.beta2)
                denom = (n2.sqrt() / bc2_sqrt[sl].to(pm.dtype).reshape(shape)).add_(self.eps)
                newp = pm + (n1 / denom) * (-step_size[sl]).to(pm.dtype).reshape(shape)
                m1.copy_(torch.where(keep, n1, m1))
                m2.copy_(torch.where(keep, n2, m2))
                pm.copy_(torch.where(keep, newp, pm))

    def _fused_step(self) -> bool:
        """One fused Adam step over every tensor with a gradient; False (and the op-by-op path from then on) if the
        kernel refuses them."""
        live = [(p, m1, m2) for (p, _, _), m1, m2 in zip(self.params, self.exp_avg, self.exp_avg_sq)
                if p.grad is not None]
        if not live:
            return True
        step = self.steps[:1].to(torch.float32).reshape(())  # the common count, on the parameters' device
        try:
            torch._fused_adam_([p for p, _, _ in live], [p.grad for p, _, _ in live], [m1 for _, m1, _ in live],
                               [m2 for _, _, m2 in live], [], [step] * len(live), lr=self.lr, beta1=self.beta1,
                               beta2=self.beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        except (RuntimeError, NotImplementedError, TypeError):  # checked before it writes: nothing was changed
            self.fused = False  # the count has advanced; the op-by-op path applies this same step
            return False
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps.clone(), "lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps,
                "exp_avg": [t.clone() for t in self.exp_avg], "exp_avg_sq": [t.clone() for t in self.exp_avg_sq]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["exp_avg"]) != len(self.exp_avg):
            raise ValueError(f"optimizer state has {len(state['exp_avg'])} parameters, this one {len(self.exp_avg)}")
        self.steps.copy_(state["steps"])
        self._uniform = bool((self.steps == self.steps[0]).all())
        for dst, src in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            if dst.shape != src.shape:
                raise ValueError(f"optimizer state tensor of shape {tuple(src.shape)}; expected {tuple(dst.shape)}")
            dst.copy_(src)
