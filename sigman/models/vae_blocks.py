"""Building blocks of the SIGMAN VAE (:mod:`sigman.models.vae`).

Submodule and parameter names follow the official release's layout (``resnets``, ``downsamplers``,
``to_q``, ``norm_cross``, ...) so that its ``autoencoder.safetensors`` loads strictly; the code is
our own. Tensor layouts:

- view features: ``[B, C, V, H, W]`` (views stacked like video frames, 3-D convolutions over them);
- UV features:   ``[B, C, h, w]``;
- token sequences: ``[B, L, C]``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def maybe_checkpoint(module: nn.Module, *args: Tensor, enabled: bool) -> Tensor:
    """Run ``module(*args)``, through activation checkpointing when ``enabled`` (training only)."""
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


# --- view encoder (3-D convolutions over [B, C, V, H, W]) ------------------------------------

class ResBlock3d(nn.Module):
    """Pre-norm residual block: GN -> SiLU -> conv3d -> GN -> SiLU -> dropout -> conv3d, plus a
    1x1x1 shortcut when the channel count changes. ``[B, Cin, V, H, W] -> [B, Cout, V, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class ViewDownsample(nn.Module):
    """Halve H and W of every view: zero-pad right/bottom by one, 3x3 conv with stride 2.
    ``[B, C, V, H, W] -> [B, C, V, H/2, W/2]`` (views are not mixed)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        b, c, v, h, w = x.shape
        x = F.pad(x, (0, 1, 0, 1))
        x = x.transpose(1, 2).reshape(b * v, c, h + 1, w + 1)
        x = self.conv(x)
        return x.reshape(b, v, c, *x.shape[-2:]).transpose(1, 2)


class DownBlock3d(nn.Module):
    """``num_layers`` :class:`ResBlock3d` then an optional :class:`ViewDownsample`."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 add_downsample: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            ResBlock3d(in_channels if i == 0 else out_channels, out_channels, groups, dropout=dropout)
            for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([ViewDownsample(out_channels)]) if add_downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
        return x


class ViewEncoder(nn.Module):
    """3-D conv encoder over the stacked input views.

    ``[B, Cin, V, H, W] -> [B, channels[-1], V, H / 2**(len(channels)-1), W / ...]``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], layers_per_block: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv3d(in_channels, channels[0], kernel_size=3, padding=1)
        blocks = []
        prev = channels[0]
        for i, ch in enumerate(channels):
            blocks.append(DownBlock3d(prev, ch, layers_per_block, groups, add_downsample=i < len(channels) - 1))
            prev = ch
        self.down_blocks = nn.ModuleList(blocks)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = maybe_checkpoint(block, x, enabled=self.gradient_checkpointing)
        return x


# --- UV decoder (2-D convolutions) -----------------------------------------------------------

class ResBlock2d(nn.Module):
    """2-D twin of :class:`ResBlock3d`. ``[B, Cin, H, W] -> [B, Cout, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Upsample2d(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv. ``[B, C, H, W] -> [B, C, 2H, 2W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpBlock2d(nn.Module):
    """``num_layers`` :class:`ResBlock2d` then an optional :class:`Upsample2d`."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            ResBlock2d(in_channels if i == 0 else out_channels, out_channels, groups) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2d(out_channels)]) if add_upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x)
        return x


class UVDecoder(nn.Module):
    """Latent UV map to feature UV map.

    ``channels`` are listed from the output end (like the encoder's): the decoder runs them in
    reverse, upsampling x2 after every block but the last.
    ``[B, Cz, h, w] -> [B, out_channels, h * 2**(len(channels)-1), w * ...]``.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], layers_per_block: int,
                 groups: int) -> None:
        super().__init__()
        rev = list(reversed(channels))
        self.conv_in = nn.Conv2d(in_channels, rev[0], kernel_size=3, padding=1)
        blocks = []
        prev = rev[0]
        for i, ch in enumerate(rev):
            blocks.append(UpBlock2d(prev, ch, layers_per_block, groups, add_upsample=i < len(rev) - 1))
            prev = ch
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(groups, rev[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rev[-1], out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z)
        for block in self.up_blocks:
            x = maybe_checkpoint(block, x, enabled=self.gradient_checkpointing)
        return self.conv_out(F.silu(self.norm_out(x)))


# --- attention over UV tokens ----------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head (cross-)attention with the normalisations of the release.

    ``x [B, L, query_dim]``, ``context [B, S, context_dim]`` (``None``: self-attention on the
    group-normed ``x``) ``-> [B, L, query_dim]``. Order: GroupNorm over the channels of ``x``
    (``group_norm``); LayerNorm of the context (``norm_cross``, cross-attention only); linear
    q/k/v; per-head LayerNorm of q and k (``norm_q``/``norm_k``); softmax attention with scale
    ``dim_head**-0.5``; output projection + dropout (``to_out``); optional residual (+ ``x``).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, groups: int, context_dim: Optional[int] = None,
                 bias: bool = False, out_bias: bool = True, dropout: float = 0.0, eps: float = 1e-6,
                 residual: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.residual = residual
        self.group_norm = nn.GroupNorm(groups, query_dim, eps=eps)
        self.norm_q = nn.LayerNorm(dim_head, eps=eps)
        self.norm_k = nn.LayerNorm(dim_head, eps=eps)
        self.norm_cross = nn.LayerNorm(context_dim) if context_dim is not None else None
        kv_dim = context_dim if context_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        b, l, _ = x.shape
        h = self.group_norm(x.transpose(1, 2)).transpose(1, 2)
        if context is None:
            context = h
        elif self.norm_cross is not None:
            context = self.norm_cross(context)
        q = self.norm_q(self.to_q(h).view(b, l, self.heads, -1).transpose(1, 2))
        k = self.norm_k(self.to_k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2))
        v = self.to_v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, l, -1)
        out = self.to_out[1](self.to_out[0](out))
        return out + x if self.residual else out


class ConvAttentionBlock(nn.Module):
    """A 3x3 conv branch and a self-attention branch over the ``h x w`` token grid, summed, then
    GroupNorm + SiLU and a residual. ``[B, h*w, C] -> [B, h*w, C]`` (tokens row-major)."""

    def __init__(self, height: int, width: int, channels: int, heads: int, dim_head: int, groups: int,
                 dropout: float = 0.0, bias: bool = False, out_bias: bool = True) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attn = Attention(channels, heads, dim_head, groups, dropout=dropout, bias=bias, out_bias=out_bias)

    def forward(self, x: Tensor) -> Tensor:
        b, l, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, self.height, self.width)
        conv = self.conv(grid).flatten(2).transpose(1, 2)
        out = conv + self.attn(x)
        out = F.silu(self.norm(out.transpose(1, 2)).transpose(1, 2))
        return x + out


class UVCrossAttention(nn.Module):
    """Cross-attention of the UV queries to the view features (with a residual), then
    ``num_layers`` :class:`ConvAttentionBlock`. ``query [B, h*w, Cq]``, ``context [B, S, Cc]``
    ``-> [B, h*w, Cq]``."""

    def __init__(self, height: int, width: int, query_dim: int, context_dim: int, heads: int, dim_head: int,
                 num_layers: int, groups: int, dropout: float = 0.0, bias: bool = False, out_bias: bool = True) -> None:
        super().__init__()
        self.cross_attn = Attention(query_dim, heads, dim_head, groups, context_dim=context_dim, bias=bias,
                                    out_bias=out_bias, dropout=dropout, residual=True)
        self.middle_layers = nn.ModuleList([
            ConvAttentionBlock(height, width, query_dim, heads, dim_head, groups, dropout=dropout, bias=bias,
                               out_bias=out_bias) for _ in range(num_layers)])
        self.gradient_checkpointing = False

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        x = self.cross_attn(query, context)
        for layer in self.middle_layers:
            x = maybe_checkpoint(layer, x, enabled=self.gradient_checkpointing)
        return x


def sincos_position_table(num_positions: int, dim: int) -> Tensor:
    """``[1, num_positions, dim]`` sinusoidal table (float32): entry ``(p, j)`` is
    ``sin`` (even ``j``) or ``cos`` (odd ``j``) of ``p / 10000 ** (2 * (j // 2) / dim)``."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2.0 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]
