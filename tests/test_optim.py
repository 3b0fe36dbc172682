"""MemberAdam (aen_lib.sae.optim) against torch.optim.Adam, member by member, with skipped steps."""

import pytest
import torch

from aen_lib.sae.optim import MemberAdam


def test_member_adam_equals_torch_adam_per_member_with_skips():
    g = torch.Generator().manual_seed(0)
    M = 3
    a = torch.randn(M, 4, 5, generator=g, dtype=torch.float64)
    b = torch.randn(M, 5, generator=g, dtype=torch.float64)
    stack = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    opt = MemberAdam([(stack[0], slice(0, 3), True), (stack[1], slice(0, 3), True)], M, lr=1e-2, betas=(0.8, 0.99),
                     eps=1e-6)
    refs = [[a[i].clone().requires_grad_(), b[i].clone().requires_grad_()] for i in range(M)]
    ref_opts = [torch.optim.Adam(refs[i], lr=1e-2, betas=(0.8, 0.99), eps=1e-6) for i in range(M)]
    for t in range(12):
        ga = torch.randn(M, 4, 5, generator=g, dtype=torch.float64)
        gb = torch.randn(M, 5, generator=g, dtype=torch.float64)
        apply = torch.tensor([True, t % 3 != 1, t != 5])  # member 1 skips every third step, member 2 once
        stack[0].grad, stack[1].grad = ga.clone(), gb.clone()
        opt.step(apply=None if bool(apply.all()) else apply)
        for i in range(M):
            if apply[i]:
                refs[i][0].grad, refs[i][1].grad = ga[i].clone(), gb[i].clone()
                ref_opts[i].step()
    for i in range(M):
        assert torch.allclose(stack[0][i], refs[i][0], rtol=0, atol=1e-14)
        assert torch.allclose(stack[1][i], refs[i][1], rtol=0, atol=1e-14)
    assert opt.steps.tolist() == [12, 8, 11]
    assert not torch.allclose(stack[0][0], a[0])


def test_single_sae_parameters_without_member_dimension():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    p, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    opt = MemberAdam([(p, slice(0, 1), False)], 1, lr=1e-2)
    ref_opt = torch.optim.Adam([ref], lr=1e-2)
    for _ in range(5):
        grad = torch.randn(4, 5, generator=g, dtype=torch.float64)
        p.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    assert torch.allclose(p, ref, rtol=0, atol=1e-14)
    state = opt.state_dict()
    fresh = MemberAdam([(p, slice(0, 1), False)], 1, lr=1e-2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.exp_avg[0], opt.exp_avg[0]) and torch.equal(fresh.steps, opt.steps)


def test_bad_optimizer_inputs():
    with pytest.raises(ValueError, match="lr"):
        MemberAdam([(torch.zeros(2, 3), slice(0, 2), True)], 2, lr=-1.0)
    with pytest.raises(ValueError, match="member slice"):
        MemberAdam([(torch.zeros(3, 3), slice(0, 2), True)], 2)


def _adam_run(fused: bool, skip_at: int | None = None, steps: int = 8) -> tuple[MemberAdam, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    p = torch.randn(4, 16, 8, generator=g).requires_grad_()
    opt = MemberAdam([(p, slice(0, 4), True)], 4, lr=1e-2, fused=fused)
    for t in range(steps):
        p.grad = torch.randn(4, 16, 8, generator=g)
        opt.step(apply=torch.tensor([True, False, True, True]) if t == skip_at else None)
    return opt, p


@pytest.mark.skipif(not hasattr(torch, "_fused_adam_"), reason="this torch has no fused Adam kernel")
def test_fused_step_agrees_with_the_op_by_op_step_to_float_tolerance():
    (fa, pf), (oa, po) = _adam_run(True), _adam_run(False)
    assert fa.fused and not oa.fused
    # another order of the same formula: a few float32 ulps apart
    assert torch.allclose(pf, po, rtol=1e-6, atol=1e-6)
    assert torch.allclose(fa.exp_avg_sq[0], oa.exp_avg_sq[0], rtol=1e-6, atol=1e-9)
    # and it is Adam: a member against torch's own optimiser over the same gradients
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(4, 16, 8, generator=g)[2].clone().requires_grad_()
    ref_opt = torch.optim.Adam([ref], lr=1e-2)
    for _ in range(8):
        ref.grad = torch.randn(4, 16, 8, generator=g)[2].clone()
        ref_opt.step()
    assert torch.allclose(pf[2], ref, rtol=1e-6, atol=1e-6)


def test_after_a_skipped_step_the_counts_differ_and_the_op_by_op_path_takes_over():
    opt, p = _adam_run(True, skip_at=2)
    assert opt.steps.tolist() == [8, 7, 8, 8] and not opt._uniform
    ref, pr = _adam_run(False, skip_at=2)
    # up to the skip both were fused/op-by-op; after it both run op by op: the same to float tolerance
    assert torch.allclose(p, pr, rtol=1e-6, atol=1e-6)
    fresh = MemberAdam([(p, slice(0, 4), True)], 4, lr=1e-2)
    fresh.load_state_dict(opt.state_dict())
    assert not fresh._uniform  # a resumed optimiser knows the counts differ
