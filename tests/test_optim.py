"""MemberAdam (aen_lib.optim) against torch.optim.Adam, member by member, with skipped steps."""

import pytest
import torch

from aen_lib.optim import MemberAdam


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
