"""One-Euro filtering of fitted motion (Casiez, Roussel and Vogel, CHI 2012).

A One-Euro filter is a first-order low-pass whose cut-off rises with the signal's speed: slow
motion is smoothed hard (jitter goes), fast motion passes with little lag (steps stay steps).

Rotations are filtered as unit quaternions made sign-continuous along time (each frame's
quaternion is flipped onto the hemisphere of the previous one, so ``q`` and ``-q`` never
alternate), then renormalised; translations are filtered as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import roma
import torch
from torch import Tensor

from sigman.pose import SMPLXPose


@dataclass
class OneEuroConfig:
    """Parameters of the One-Euro filter (per channel)."""

    min_cutoff: float = 1.5  # Hz: the cut-off at rest (lower: smoother, more lag when slow)
    beta: float = 0.3  # how fast the cut-off rises with speed (per unit / s)
    d_cutoff: float = 1.0  # Hz: cut-off of the speed estimate


def _alpha(cutoff: Tensor, rate: float) -> Tensor:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


class OneEuroFilter:
    """Streaming One-Euro filter over a tensor of channels: ``filter(x)`` per sample at ``rate`` Hz."""

    def __init__(self, rate: float, config: OneEuroConfig = OneEuroConfig()) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = float(rate)
        self.config = config
        self._x: Optional[Tensor] = None
        self._dx: Optional[Tensor] = None

    def reset(self) -> None:
        self._x = self._dx = None

    def __call__(self, x: Tensor) -> Tensor:
        c = self.config
        if self._x is None:
            self._x, self._dx = x.clone(), torch.zeros_like(x)
            return x.clone()
        dx = (x - self._x) * self.rate
        a_d = _alpha(torch.tensor(c.d_cutoff, dtype=x.dtype), self.rate)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = c.min_cutoff + c.beta * self._dx.abs()
        a = _alpha(cutoff, self.rate)
        self._x = a * x + (1 - a) * self._x
        return self._x.clone()


def one_euro(signal: Tensor, rate: float, config: OneEuroConfig = OneEuroConfig()) -> Tensor:
    """Filter a whole sequence ``[T, ...]`` sampled at ``rate`` Hz (causal, frame by frame)."""
    f = OneEuroFilter(rate, config)
    return torch.stack([f(x) for x in signal])


def continuous_quaternions(q: Tensor) -> Tensor:
    """Flip quaternions ``[T, ..., 4]`` so consecutive frames lie on the same hemisphere."""
    out = q.clone()
    for t in range(1, q.shape[0]):
        flip = (out[t] * out[t - 1]).sum(-1, keepdim=True) < 0
        out[t] = torch.where(flip, -out[t], out[t])
    return out


def smooth_rotvecs(rotvecs: Tensor, rate: float, config: OneEuroConfig = OneEuroConfig()) -> Tensor:
    """One-Euro filter of axis-angle rotations ``[T, ..., 3]`` through continuous quaternions."""
    q = continuous_quaternions(roma.rotvec_to_unitquat(rotvecs.double()))
    smooth = one_euro(q, rate, config)
    smooth = smooth / smooth.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return roma.unitquat_to_rotvec(smooth).to(rotvecs.dtype)


def smooth_pose(pose: SMPLXPose, config: OneEuroConfig = OneEuroConfig(),
                transl_config: Optional[OneEuroConfig] = None) -> SMPLXPose:
    """A copy of the sequence ``pose`` with its root orientation, body joints and translation
    One-Euro filtered at the pose's own frame rate (hands, jaw and eyes are left as they are)."""
    if pose.num_frames < 2:
        return pose.frame(slice(0, pose.num_frames))
    out = pose.frame(slice(0, pose.num_frames))
    out.global_orient = smooth_rotvecs(pose.global_orient, pose.fps, config)
    out.body_pose = smooth_rotvecs(pose.body_pose, pose.fps, config)
    out.transl = one_euro(pose.transl, pose.fps, transl_config or config)
    return out
