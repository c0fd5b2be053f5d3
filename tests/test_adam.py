"""sigman.adam.Adam against torch.optim.Adam on the same problems."""
import torch

from sigman.adam import Adam


def _trajectories(make, steps=25, drop_grad_at=None):
    torch.manual_seed(0)
    a0, b0 = torch.randn(7, 3), torch.randn(5)
    target = torch.randn(7, 3)
    out = []
    for kind in ("torch", "sigman"):
        a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        groups = [{"params": [a], "lr": 0.05}, {"params": [b], "lr": 0.2}]
        opt = make(kind, groups)
        path = []
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = ((a - target) ** 2).sum() * 3.0 + (b.sin() * b).sum()
            if step == drop_grad_at:
                loss = ((a - target) ** 2).sum()  # b gets no gradient on this step
            loss.backward()
            opt.step()
            path.append(torch.cat([a.detach().flatten(), b.detach()]).clone())
        out.append(torch.stack(path))
    return out


def _make(betas):
    def make(kind, groups):
        cls = torch.optim.Adam if kind == "torch" else Adam
        return cls(groups, betas=betas)
    return make


def test_adam_matches_torch_with_groups():
    ref, ours = _trajectories(_make((0.9, 0.99)))
    assert (ref[-1] - ref[0]).abs().max() > 0.1  # the parameters really moved
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_adam_matches_torch_default_betas_and_missing_gradients():
    ref, ours = _trajectories(_make((0.9, 0.999)), drop_grad_at=3)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_adam_rejects_non_leaf():
    x = torch.zeros(3, requires_grad=True) * 2
    try:
        Adam([x])
    except ValueError as err:
        assert "leaf" in str(err)
    else:
        raise AssertionError("a non-leaf tensor was accepted")
