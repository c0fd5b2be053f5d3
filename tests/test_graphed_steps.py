"""CUDA-graph replay of optimisation steps (sigman.graphed_steps): the same trajectory as eager steps."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from sigman.adam import Adam
from sigman.graphed_steps import run_steps

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _problem(device):
    """A small non-linear least-squares problem with two parameter groups and a clamp."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, generator=g).to(device)
    target = torch.randn(64, generator=g).to(device)
    x = torch.zeros(8, device=device, requires_grad=True)
    s = torch.ones(1, device=device, requires_grad=True)
    loss = lambda: ((torch.tanh(a @ x) * s - target).square().mean() + 0.1 * x.square().sum())
    opt = Adam([{"params": [x], "lr": 0.05}, {"params": [s], "lr": 0.02}])
    clamp = lambda: s.data.clamp_(0.5, 1.5)
    return x, s, loss, opt, clamp


def test_run_steps_on_the_cpu_is_the_eager_loop():
    x, s, loss, opt, clamp = _problem("cpu")
    assert run_steps(loss, opt, 40, clamp) is False  # no graph off CUDA
    x2, s2, loss2, opt2, clamp2 = _problem("cpu")
    for _ in range(40):
        opt2.zero_grad()
        loss2().backward()
        opt2.step()
        clamp2()
    assert torch.equal(x, x2) and torch.equal(s, s2)
    with torch.no_grad():
        assert float(loss()) < 0.9 * float(_problem("cpu")[2]())


@cuda
def test_graph_replay_follows_the_eager_trajectory():
    x, s, loss, opt, clamp = _problem("cuda")
    assert run_steps(loss, opt, 60, clamp, graph=True) is True
    x2, s2, loss2, opt2, clamp2 = _problem("cuda")
    assert run_steps(loss2, opt2, 60, clamp2, graph=False) is False
    torch.testing.assert_close(x, x2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s, s2, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in (x, s))  # the graph's gradient buffers are released


@cuda
def test_a_step_that_cannot_be_captured_finishes_eagerly():
    x, s, loss, opt, clamp = _problem("cuda")
    syncing = lambda: loss() + 0.0 * float(x.detach().sum())  # reads a value back to the host: not capturable
    assert run_steps(syncing, opt, 30, clamp, graph=True) is False
    x2, s2, loss2, opt2, clamp2 = _problem("cuda")
    run_steps(loss2, opt2, 30, clamp2, graph=False)
    torch.testing.assert_close(x, x2, atol=1e-5, rtol=1e-4)


@cuda
def test_the_cuda_fit_with_graphs_matches_the_eager_fit(anny_body):
    from sigman.fit import FitConfig, fit_body
    from sigman.presets import resolve_pose
    from sigman.synthetic_observation import front_camera, synthetic_observation

    body = copy.deepcopy(anny_body).to("cuda")
    obs = synthetic_observation(anny_body, resolve_pose("walking").frame(0), front_camera(3.2, azimuth_deg=20), seed=2)
    config = FitConfig(init_iterations=20, iterations=60)
    graphed = fit_body(body, obs, config)
    eager = fit_body(body, obs, replace(config, cuda_graphs=False))
    assert float((graphed.joints - eager.joints).norm(dim=-1).max()) < 2e-3  # metres
    assert abs(graphed.reprojection_px - eager.reprojection_px) < 0.2
