"""FP8 (e4m3) matrix products for the DiT's large linear layers, for :class:`sigman.fast.FastDiT`.

Weights are quantized once, per output row: ``w ≈ w_fp8 · s_w`` with ``s_w = amax(|w_row|) / 448``
(448 is e4m3's largest finite value). Activations are quantized at each call, per token (row):
``x ≈ x_fp8 · s_x``. The product ``x wᵀ = (x_fp8 w_fp8ᵀ) ⊙ (s_x s_wᵀ)`` then runs on the GPU's FP8
tensor cores through ``torch._scaled_mm`` with row-wise scales (Hopper and Ada: compute capability
8.9 or newer), with bf16 output. Elsewhere (the CPU, older GPUs) :func:`fp8_linear` computes the same
quantized product in float32 from the dequantized operands, so that tests can check the arithmetic
on any machine; it is not faster there.

Shapes: ``x [..., K]`` bf16, ``w_fp8 [N, K]`` float8_e4m3fn, ``w_scale [1, N]`` float32,
``bias [N]`` or ``None`` -> ``[..., N]`` in ``x.dtype``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
_MIN_SCALE = 1e-12  # keeps all-zero rows finite


def fp8_matmul_supported(device: torch.device) -> bool:
    """True where ``torch._scaled_mm`` multiplies e4m3 with row-wise scales (CUDA, capability >= 8.9)."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_rows(t: Tensor) -> Tuple[Tensor, Tensor]:
    """``t [R, K]`` -> (``t_fp8 [R, K]`` e4m3, ``scale [R, 1]`` float32) with ``t ≈ t_fp8 · scale``."""
    tf = t.float()
    scale = (tf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp_min(_MIN_SCALE)
    return (tf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def quantize_weight(weight: Tensor) -> Tuple[Tensor, Tensor]:
    """A linear layer's ``weight [N, K]`` -> (``w_fp8 [N, K]``, ``w_scale [1, N]``), the layout
    :func:`fp8_linear` takes (``K`` must be a multiple of 16 for the FP8 matmul)."""
    w_fp8, scale = quantize_rows(weight.detach())
    return w_fp8.contiguous(), scale.reshape(1, -1).contiguous()


def fp8_linear(x: Tensor, w_fp8: Tensor, w_scale: Tensor, bias: Optional[Tensor] = None,
               fp8_matmul: Optional[bool] = None) -> Tensor:
    """``x wᵀ + bias`` with both operands in e4m3 (see the module docstring). ``fp8_matmul``: use
    ``torch._scaled_mm`` (``None``: where :func:`fp8_matmul_supported`; callers in a hot loop decide once)."""
    lead, k = x.shape[:-1], x.shape[-1]
    x_fp8, x_scale = quantize_rows(x.reshape(-1, k))
    if fp8_matmul_supported(x.device) if fp8_matmul is None else fp8_matmul:
        out = torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=torch.bfloat16)
        out = out.to(x.dtype)
    else:  # the same quantized product, in float32
        out = ((x_fp8.float() * x_scale) @ (w_fp8.float() * w_scale.reshape(-1, 1)).t()).to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.reshape(*lead, w_fp8.shape[0])
