"""The latent diffusion transformer (DiT) that turns noise into a latent UV map, conditioned on an image.

Architecture (the SIGMAN release's ``DiT3DModel``, a CogVideoX-style expert transformer, made 2-D):

* latent ``[B, C, H, W]`` → ``p×p``/stride-``p`` conv → ``N = (H/p)(W/p)`` latent tokens of width ``D``;
* image features ``[B, C_cond, h, w]`` → ``q×q``/stride-``q`` conv → ``M = (h/q)(w/q)`` condition tokens;
* timestep → sinusoids (width ``D``, cos first) → MLP → ``temb [B, time_embed_dim]``;
* ``num_layers`` blocks of joint self-attention over ``[condition; latent]`` (2-D RoPE on latent tokens,
  RMS-normed q/k) and a shared GELU MLP, each preceded by an *expert* adaptive LayerNorm: one LayerNorm
  whose shift/scale/gate come from ``temb``, with separate modulation for condition and latent tokens;
* LayerNorm → adaptive LayerNorm (shift, scale) → linear → unpatchify → ``v`` prediction ``[B, C, H, W]``.

The ``official`` config reproduces the release (30 layers, 32 heads × 64, 16 latent channels, patch 2,
Sapiens-1B features 1536 × 64 × 64 → 4×4 conv → 256 tokens) and its ``state_dict`` has exactly the
names and shapes of the release's ``transformer.safetensors`` (``tests/fixtures/official_dit_keys.txt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import ATTENTION_BACKENDS, JointAttention, rotary_2d_frequencies


@dataclass
class DiTConfig:
    """Everything that defines a :class:`SigmanDiT`. Defaults are the official release's values.

    The release's ``sample_frames=6``, ``max_text_seq_length=256``, ``condition_mode`` and
    ``spatial_interpolation_scale`` settings do nothing in its 2-D model (no sin-cos or learned position
    table is built when RoPE is on; the image encoder ignores the mode), so they are not fields here.
    RoPE positions are the integer patch coordinates, which is what the release uses at 512² (a 64×64
    latent, 32×32 patch grid) in training and inference.
    """

    num_layers: int = 30
    num_heads: int = 32
    head_dim: int = 64
    in_channels: int = 16  # latent channels
    out_channels: int = 16
    patch_size: int = 2  # latent p×p patches
    sample_size: int = 64  # latent H = W the model is trained at (any multiple of patch_size runs)
    time_embed_dim: int = 512
    condition_channels: int = 1536  # C_cond of the image features (Sapiens-1B: 1536)
    condition_size: int = 64  # h = w of the image feature map (Sapiens-1B on 1024²: 64)
    condition_patch_size: int = 4  # q×q/stride-q conv on the features
    mlp_ratio: float = 4.0
    attention_bias: bool = True  # bias on q/k/v projections
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    dropout: float = 0.0
    attention_backend: str = "sdpa"  # "sdpa" | "xformers" | "math"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.sample_size % self.patch_size or self.condition_size % self.condition_patch_size:
            raise ValueError("sample_size / condition_size must be multiples of patch_size / condition_patch_size")

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def num_latent_tokens(self) -> int:
        return (self.sample_size // self.patch_size) ** 2

    @property
    def num_condition_tokens(self) -> int:
        return (self.condition_size // self.condition_patch_size) ** 2


DIT_CONFIGS: dict[str, DiTConfig] = {
    # The SIGMAN release (core/model_config/DiT_DDPM.py "DiT" + core/modules/DiT.py defaults).
    "official": DiTConfig(),
    # Small model for the demo weights: the demo VAE's 16×16×16 latents (patch 2 → 64 tokens) and the demo
    # image encoder's 256 × 16 × 16 features (1×1 conv → 256 condition tokens); width 384, 6 layers.
    "demo": DiTConfig(
        num_layers=6, num_heads=6, head_dim=64, sample_size=16, time_embed_dim=256,
        condition_channels=256, condition_size=16, condition_patch_size=1,
    ),
}


def timestep_sinusoids(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal timestep features, cosines first (the CogVideoX/diffusers "flip_sin_to_cos" layout).

    ``timesteps [B] (int or float) -> [B, dim]`` float32; frequencies ``max_period^(-i/(dim/2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoids: ``[B, D] -> [B, time_embed_dim]`` (linear, SiLU, linear)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """Latent patches and condition patches to tokens of the same width.

    ``proj``: ``[B, C, H, W] -> [B, (H/p)(W/p), D]``; ``cond_proj``: ``[B, C_cond, h, w] -> [B, (h/q)(w/q), D]``.
    Tokens are row-major over the patch grid. No positional embedding here (RoPE is applied in attention).
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.proj = nn.Conv2d(cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size)
        self.cond_proj = nn.Conv2d(cfg.condition_channels, d, cfg.condition_patch_size, stride=cfg.condition_patch_size)

    def forward(self, latents: Tensor, features: Tensor) -> Tuple[Tensor, Tensor]:
        latent_tokens = self.proj(latents).flatten(2).transpose(1, 2)
        cond_tokens = self.cond_proj(features).flatten(2).transpose(1, 2)
        return latent_tokens, cond_tokens


class ExpertAdaLayerNorm(nn.Module):
    """One LayerNorm, two modulations ("experts"): latent and condition tokens each get their own
    shift/scale/gate from ``temb``.

    ``linear: temb [B, T] -> [B, 6D]`` split as (shift, scale, gate, cond_shift, cond_scale, cond_gate).
    """

    def __init__(self, time_embed_dim: int, dim: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(time_embed_dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, latent: Tensor, cond: Tensor, temb: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``latent [B, N, D], cond [B, M, D], temb [B, T]`` -> modulated latent, modulated cond,
        latent gate ``[B, 1, D]``, cond gate ``[B, 1, D]``."""
        shift, scale, gate, c_shift, c_scale, c_gate = self.linear(F.silu(temb))[:, None].chunk(6, dim=-1)
        latent = self.norm(latent) * (1 + scale) + shift
        cond = self.norm(cond) * (1 + c_scale) + c_shift
        return latent, cond, gate, c_gate


class GELUProjection(nn.Module):
    """``[..., D_in] -> [..., D_out]``: linear then tanh-approximated GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """``[B, L, D] -> [B, L, D]``: linear to ``mlp_ratio·D``, tanh-GELU, dropout, linear back.

    Laid out as ``net.0.proj`` / ``net.2`` to match the official checkpoint names.
    """

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(GELUProjection(dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DiTBlock(nn.Module):
    """Expert adaLN → joint attention → gated residual; expert adaLN → shared MLP → gated residual."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = ExpertAdaLayerNorm(cfg.time_embed_dim, d, cfg.norm_eps)
        self.attn1 = JointAttention(d, cfg.num_heads, cfg.head_dim, bias=cfg.attention_bias,
                                    qk_norm_eps=cfg.qk_norm_eps, backend=cfg.attention_backend)
        self.norm2 = ExpertAdaLayerNorm(cfg.time_embed_dim, d, cfg.norm_eps)
        self.ff = FeedForward(d, int(cfg.mlp_ratio * d), cfg.dropout)

    def forward(self, latent: Tensor, cond: Tensor, temb: Tensor, rope: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        """``latent [B, N, D], cond [B, M, D], temb [B, T]`` -> updated ``(latent, cond)``."""
        n_lat, n_cond, gate, c_gate = self.norm1(latent, cond, temb)
        a_lat, a_cond = self.attn1(n_lat, n_cond, rope)
        latent = latent + gate * a_lat
        cond = cond + c_gate * a_cond

        n_lat, n_cond, gate, c_gate = self.norm2(latent, cond, temb)
        m = cond.shape[1]
        ff = self.ff(torch.cat([n_cond, n_lat], dim=1))  # one matmul for both token sets
        return latent + gate * ff[:, m:], cond + c_gate * ff[:, :m]


class FinalLayer(nn.Module):
    """``[B, N, D] -> [B, N, D]``: LayerNorm whose shift/scale (in that order) come from ``temb``."""

    def __init__(self, time_embed_dim: int, dim: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(time_embed_dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        shift, scale = self.linear(F.silu(temb))[:, None].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class SigmanDiT(nn.Module):
    """Image-conditioned v-prediction transformer on latent UV maps.

    Module names (``patch_embed``, ``time_embedding``, ``transformer_blocks``, ``norm_final``, ``norm_out``,
    ``proj_out``) follow the official checkpoint so release weights load with a strict check.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embed = PatchEmbed(config)
        self.time_embedding = TimestepEmbedding(d, config.time_embed_dim)
        self.transformer_blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.norm_final = nn.LayerNorm(d, eps=config.norm_eps)
        self.norm_out = FinalLayer(config.time_embed_dim, d, config.norm_eps)
        self.proj_out = nn.Linear(d, config.patch_size ** 2 * config.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Init for training from scratch (adaLN-Zero, as in DiT): Xavier linears, zero modulations and
        output projection, so every block starts as the identity. Loading weights overrides all of it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for conv in (self.patch_embed.proj, self.patch_embed.cond_proj):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.time_embedding.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embedding.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            for norm in (block.norm1, block.norm2):
                nn.init.zeros_(norm.linear.weight)
                nn.init.zeros_(norm.linear.bias)
        nn.init.zeros_(self.norm_out.linear.weight)
        nn.init.zeros_(self.norm_out.linear.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _check_inputs(self, latents: Tensor, features: Tensor) -> None:
        c = self.config
        if latents.ndim != 4 or latents.shape[1] != c.in_channels:
            raise ValueError(f"latents must be [B, {c.in_channels}, H, W], got {tuple(latents.shape)}")
        if latents.shape[2] % c.patch_size or latents.shape[3] % c.patch_size:
            raise ValueError(f"latent H, W must be multiples of patch_size={c.patch_size}, got {tuple(latents.shape[2:])}")
        if features.ndim != 4 or features.shape[1] != c.condition_channels or features.shape[0] != latents.shape[0]:
            raise ValueError(f"image_features must be [B={latents.shape[0]}, {c.condition_channels}, h, w], "
                             f"got {tuple(features.shape)}")
        if features.shape[2] % c.condition_patch_size or features.shape[3] % c.condition_patch_size:
            raise ValueError(f"feature h, w must be multiples of condition_patch_size={c.condition_patch_size}, "
                             f"got {tuple(features.shape[2:])}")

    def forward(self, latents: Tensor, timesteps: Union[Tensor, int, float], image_features: Tensor) -> Tensor:
        """Predict the velocity ``v = √ᾱ·ε − √(1−ᾱ)·x₀``.

        Args:
            latents: ``[B, C_in, H, W]`` noisy latents (VAE latents × ``VAE_SCALING_FACTOR``).
            timesteps: ``[B]`` or scalar, int or float, in ``[0, 1000)``.
            image_features: ``[B, C_cond, h, w]`` image-encoder features (zeros = unconditional).
        Returns:
            ``[B, C_out, H, W]``.
        """
        self._check_inputs(latents, image_features)
        b, _, h, w = latents.shape
        p, c = self.config.patch_size, self.config
        t = torch.as_tensor(timesteps, device=latents.device)
        t = t.expand(b) if t.ndim == 0 else t
        temb = self.time_embedding(timestep_sinusoids(t, c.hidden_size).to(latents.dtype))  # [B, T]

        latent, cond = self.patch_embed(latents, image_features.to(latents.dtype))  # [B, N, D], [B, M, D]
        rope = rotary_2d_frequencies(c.head_dim, h // p, w // p, c.rope_theta, device=latents.device)
        for block in self.transformer_blocks:
            if self.training and c.gradient_checkpointing:
                latent, cond = checkpoint(block, latent, cond, temb, rope, use_reentrant=False)
            else:
                latent, cond = block(latent, cond, temb, rope)

        x = self.proj_out(self.norm_out(self.norm_final(latent), temb))  # [B, N, C_out·p·p]
        x = x.reshape(b, h // p, w // p, c.out_channels, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c.out_channels, h, w)


def dit_config(name: str, **overrides) -> DiTConfig:
    """A fresh copy of the named config in :data:`DIT_CONFIGS`, with optional field overrides
    (e.g. ``dit_config("official", gradient_checkpointing=True)``)."""
    if name not in DIT_CONFIGS:
        raise KeyError(f"unknown DiT config {name!r}; choose one of {sorted(DIT_CONFIGS)}")
    return replace(DIT_CONFIGS[name], **overrides)


def build_dit(name: str = "demo", **overrides) -> SigmanDiT:
    """A :class:`SigmanDiT` from a named config (see :func:`dit_config`)."""
    return SigmanDiT(dit_config(name, **overrides))
