"""Optimisation steps whose energy and gradient replay from one CUDA graph.

The body fit's step is a few hundred small kernels on tensors of a few thousand numbers (forward
kinematics, 33 markers, a few hundred silhouette points). On a GPU each launch costs more than its
arithmetic, so a step takes ~15 ms of launches and a photo fit's 150 steps ~2.5 s, slower than two CPU
cores. Captured once as a CUDA graph, the forward and backward pass is one launch per step.

    taken = run_steps(loss_fn, opt, steps, after_step=clamp)     # loss_fn() -> scalar loss

What it needs from ``loss_fn``: no host synchronisation and no copies from the host (every constant
already on the device), and the same tensors (the optimiser's parameters, in place) every call, which
is how the fit is written (:mod:`sigman.fit_kinematics`). The first ``warmup`` steps run eagerly on a
side stream (as PyTorch's capture recipe asks), the graph is captured with the gradients' buffers
inside it, and each later step replays it and then runs the optimiser (``opt.step()``, eager: its
step sizes change every step). The trajectory is the eager one up to rounding. When capture fails
(``loss_fn`` does something a graph cannot hold) the remaining steps run eagerly, so the caller gets
the same result either way.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's recipe uses a few)


def _eager_step(loss_fn: Callable[[], Tensor], opt, after_step: Optional[Callable[[], None]]) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn().backward()
    opt.step()
    if after_step is not None:
        after_step()


def run_steps(loss_fn: Callable[[], Tensor], opt, steps: int, after_step: Optional[Callable[[], None]] = None,
              graph: bool = True, warmup: int = GRAPH_WARMUP_STEPS) -> bool:
    """Take ``steps`` optimiser steps on ``loss_fn`` (``opt``: :class:`sigman.adam.Adam` or a torch
    optimiser over the tensors ``loss_fn`` reads). ``after_step()``: run after every step (e.g. a clamp,
    in place). With ``graph`` and CUDA parameters, steps after ``warmup`` replay a CUDA graph of the
    forward and backward pass. Returns whether a graph was used."""
    params = [p for group in opt.param_groups for p in group["params"]]
    use_graph = graph and steps > warmup + 1 and bool(params) and all(p.is_cuda for p in params)
    if not use_graph:
        for _ in range(steps):
            _eager_step(loss_fn, opt, after_step)
        return False
    side = torch.cuda.Stream(device=params[0].device)
    side.wait_stream(torch.cuda.current_stream(params[0].device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            _eager_step(loss_fn, opt, after_step)
    torch.cuda.current_stream(params[0].device).wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # the backward in the capture allocates the gradients in the graph's pool
    try:
        # thread_local: only this thread's unsafe calls break the capture, not other threads' CUDA work
        with torch.cuda.graph(cuda_graph, capture_error_mode="thread_local"):
            loss_fn().backward()
    except RuntimeError:  # something in loss_fn cannot be captured: finish eagerly
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(params[0].device)
        for _ in range(steps - warmup):
            _eager_step(loss_fn, opt, after_step)
        return False
    for _ in range(steps - warmup):
        cuda_graph.replay()  # overwrites every parameter's .grad with this step's gradient
        opt.step()
        if after_step is not None:
            after_step()
    opt.zero_grad(set_to_none=True)  # release the graph's gradient buffers
    return True
