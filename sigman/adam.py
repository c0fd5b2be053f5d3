"""Adam for the few-tensor fits in sigman (body fit, photo refinement), without ``torch._dynamo``.

``torch.optim.Optimizer`` wraps its methods in ``torch._disable_dynamo``, whose first call imports
all of ``torch._dynamo`` and sympy: 4.0 s of a 7.9 s ``video_to_motion`` run on a 60-frame clip,
and the same on the first photo fit of every CLI call, for optimisers that are never compiled.
:class:`Adam` computes what ``torch.optim.Adam`` computes with its default options (no weight
decay, no amsgrad, bias-corrected moments; ``tests/test_adam.py`` checks the trajectories against
it), for parameter groups with their own learning rates. Training (``train/``) keeps torch's
optimisers.
"""

from __future__ import annotations

import math
from typing import Iterable, Union

import torch
from torch import Tensor

ParamGroups = Union[Iterable[Tensor], Iterable[dict]]


class Adam:
    """``Adam(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)``: ``groups`` is a list of tensors or
    of ``{"params": [...], "lr": ...}`` dicts, as for ``torch.optim.Adam``. ``zero_grad()`` and
    ``step()`` as there; ``param_groups`` holds the groups (``lr`` may be changed between steps)."""

    def __init__(self, groups: ParamGroups, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        groups = list(groups)
        if not groups:
            raise ValueError("Adam got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict] = []
        for group in groups:
            params = list(group["params"])
            for p in params:
                if not p.is_leaf or not p.requires_grad:
                    raise ValueError("Adam optimises leaf tensors that require grad")
            self.param_groups.append({"params": params, "lr": float(group.get("lr", lr)),
                                      "betas": tuple(group.get("betas", betas)), "eps": float(group.get("eps", eps))})
        self._state: dict[int, list] = {}  # id(param) -> [steps taken, first moment, second moment]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient: one batch of ``torch._foreach_*``
        kernels for all of them that share betas and eps (on CUDA a handful of launches per step
        instead of seven per parameter, as torch's own foreach implementation does)."""
        buckets: dict[tuple, list] = {}
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:  # as torch: a parameter without a gradient neither moves nor counts a step
                    continue
                state = self._state.get(id(p))
                if state is None:
                    state = self._state[id(p)] = [0, torch.zeros_like(p), torch.zeros_like(p)]
                state[0] += 1
                steps = state[0]
                step_size = group["lr"] / (1.0 - beta1 ** steps)
                correction2_sqrt = math.sqrt(1.0 - beta2 ** steps)
                key = (beta1, beta2, group["eps"], p.device, p.dtype)
                buckets.setdefault(key, []).append((p, p.grad, state[1], state[2], step_size, correction2_sqrt))
        for (beta1, beta2, eps, _, _), rows in buckets.items():
            params, grads, m, v, step_sizes, corrections = (list(c) for c in zip(*rows))
            torch._foreach_lerp_(m, grads, 1.0 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1.0 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, corrections)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m, denom, [-size for size in step_sizes])
