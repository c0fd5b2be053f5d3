"""Colour spaces: sRGB <-> CIELAB (D65 white, 2 degree observer), as IEC 61966-2-1 and CIE 15.

Colours are ``[..., 3]`` tensors; sRGB in [0, 1], CIELAB with L in 0..100. The results keep the input's
dtype and device (the conversion itself runs in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

# sRGB (D65) -> CIE XYZ, and the D65 white
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_DELTA = 6 / 29


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """CIELAB ``[..., 3]`` of sRGB colours ``[..., 3]`` in [0, 1] (clipped), in float64."""
    c = rgb.double().clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _XYZ_FROM_RGB.to(c.device).T / _D65_WHITE.to(c.device)
    eps = _DELTA ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * _DELTA ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], dim=-1)


def lab_to_srgb(lab: Tensor) -> Tensor:
    """sRGB ``[..., 3]`` in [0, 1] (out-of-gamut colours clipped) of CIELAB colours ``[..., 3]``: the
    inverse of :func:`srgb_to_lab`, in ``lab``'s dtype."""
    x = lab.double()
    fy = (x[..., 0] + 16) / 116
    f = torch.stack([fy + x[..., 1] / 500, fy, fy - x[..., 2] / 200], dim=-1)
    xyz = torch.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4 / 29)) * _D65_WHITE.to(x.device)
    linear = (xyz @ torch.linalg.inv(_XYZ_FROM_RGB).to(x.device).T).clamp(0, 1)
    rgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1).to(lab.dtype)
