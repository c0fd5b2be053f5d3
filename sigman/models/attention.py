"""Attention for the DiT: one function with selectable backends, 2-D rotary embeddings, and the joint
(condition + latent) self-attention layer with RMS-normalised queries and keys.

Backends of :func:`attention` (all take and return ``[B, heads, N, head_dim]``):

* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels on CUDA, a fused kernel on CPU).
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` when xformers is installed; asking for it
  without xformers raises an error that says so.
* ``"math"``: :func:`naive_attention`, the plain softmax(QKᵀ/√d)V reference the tests compare against.

The rotary embedding follows the CogVideoX/diffusers convention the official weights were trained with:
the first half of each head's channels rotates with the token's column index, the second half with its
row index; channel pairs ``(2i, 2i+1)`` rotate together (interleaved layout).
"""

from __future__ import annotations

import importlib.util
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_BACKENDS = ("sdpa", "xformers", "math")


def xformers_available() -> bool:
    """True when ``xformers`` can be imported (it is optional)."""
    return importlib.util.find_spec("xformers") is not None


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Reference attention in float32.

    Args:
        q, k, v: ``[B, heads, N, D]`` (k and v may have another length ``M``).
    Returns:
        ``[B, heads, N, D]`` in the dtype of ``q``.
    """
    scale = q.shape[-1] ** -0.5
    weights = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)
    return (weights @ v.float()).to(q.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
    """Non-causal multi-head attention without a mask.

    Args:
        q, k, v: ``[B, heads, N, D]``.
        backend: one of :data:`ATTENTION_BACKENDS`.
    Returns:
        ``[B, heads, N, D]``.
    """
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend == "xformers":
        if not xformers_available():
            raise RuntimeError('attention backend "xformers" was asked for but xformers is not installed; '
                               'pip install xformers, or use backend="sdpa"')
        import xformers.ops as xops

        # xformers wants [B, N, heads, D].
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    if backend == "math":
        return naive_attention(q, k, v)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")


def rotary_2d_frequencies(
    head_dim: int, grid_h: int, grid_w: int, theta: float = 10000.0, device: Optional[torch.device] = None
) -> Tuple[Tensor, Tensor]:
    """Cos/sin tables of the 2-D rotary embedding for a ``grid_h × grid_w`` token grid (row-major tokens).

    Channels ``[0, head_dim/2)`` encode the column index, ``[head_dim/2, head_dim)`` the row index; within
    each half, channel pair ``(2i, 2i+1)`` uses frequency ``theta^(-2i/(head_dim/2))``.

    Returns:
        ``(cos, sin)``, each ``[grid_h * grid_w, head_dim]`` float32.
    """
    if head_dim % 4:
        raise ValueError(f"2-D rotary embeddings need head_dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half))  # [half/2]
    rows = torch.arange(grid_h, dtype=torch.float32, device=device)
    cols = torch.arange(grid_w, dtype=torch.float32, device=device)
    row_idx, col_idx = torch.meshgrid(rows, cols, indexing="ij")  # [gh, gw] each
    angles = torch.cat([torch.outer(col_idx.reshape(-1), inv_freq), torch.outer(row_idx.reshape(-1), inv_freq)], dim=1)
    angles = angles.repeat_interleave(2, dim=1)  # [N, head_dim], pairs share an angle
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of ``x`` by the given angles (computed in float32).

    Args:
        x: ``[B, heads, N, D]``.
        cos, sin: ``[N, D]``.
    Returns:
        ``[B, heads, N, D]`` in the dtype of ``x``.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, H, N, D/2, 2]
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-x_odd, x_even)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension with a learned scale; statistics in float32.

    ``x: [..., dim] -> [..., dim]``.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class JointAttention(nn.Module):
    """Self-attention over ``[condition tokens, latent tokens]`` with RMS-normed q/k per head and 2-D
    RoPE on the latent tokens only (the condition tokens carry no position).

    Parameter names match the official checkpoint: ``norm_q``, ``norm_k``, ``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, bias: bool = True, qk_norm_eps: float = 1e-6,
                 backend: str = "sdpa"):
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.backend = backend
        self.norm_q = RMSNorm(head_dim, eps=qk_norm_eps)
        self.norm_k = RMSNorm(head_dim, eps=qk_norm_eps)
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(dim, inner, bias=bias)
        self.to_v = nn.Linear(dim, inner, bias=bias)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=True), nn.Dropout(0.0))

    def forward(self, latent: Tensor, cond: Tensor, rope: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """
        Args:
            latent: ``[B, N, dim]`` latent tokens.
            cond: ``[B, M, dim]`` condition tokens.
            rope: ``(cos, sin)``, each ``[N, head_dim]``, for the latent tokens.
        Returns:
            ``(latent_out [B, N, dim], cond_out [B, M, dim])``.
        """
        m = cond.shape[1]
        x = torch.cat([cond, latent], dim=1)  # [B, M+N, dim]
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))  # [B, heads, M+N, head_dim]
        q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:
            cos, sin = rope
            q = torch.cat([q[:, :, :m], apply_rotary(q[:, :, m:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :m], apply_rotary(k[:, :, m:], cos, sin)], dim=2)
        out = attention(q, k, v, self.backend)  # [B, heads, M+N, head_dim]
        out = self.to_out(out.transpose(1, 2).flatten(2))  # [B, M+N, dim]
        return out[:, m:], out[:, :m]
