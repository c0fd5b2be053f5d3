"""SIGMAN's VAE: multi-view images + an initial UV texture -> a latent UV map -> per-point Gaussian
attributes on the body template.

Encoder. The input views ``[B, V, 9, H, W]`` (RGB normalised with the ImageNet mean/std, then the
6 Plücker ray channels ``[o x d, d]``, see :func:`make_view_input`) go through a 3-D conv stack
(views stacked like video frames) down by 8 to ``[B, C, V, H/8, W/8]`` view tokens. A grid of
learned UV queries (``latent_size x latent_size``) is concatenated with an 8x-downsampled encoding
of the initial UV texture (``[B, 3, uv_size, uv_size]`` in ``[0, 1]``), a fixed sin-cos position
table is added, and the queries cross-attend to the view tokens, then pass through conv +
self-attention blocks. A linear layer gives the mean and log-variance of a
``[B, latent_channels, latent_size, latent_size]`` diagonal Gaussian.

Decoder. A 2-D conv decoder upsamples the latent by 8 to ``decoder_out_channels`` feature maps;
the first half feeds a 3x3 conv "geometry head" (opacity 1, offset 3, scale 3, rotation 3), the
second half a 3x3 conv "RGB head" (3). UV maps are sampled at each template point's UV with
``grid_sample``, then activated (:meth:`SigmanVAE.activate`):

==========  ====================================================================================
opacity     ``sigmoid(x)`` in (0, 1)
offset      ``x`` (no activation), metres, added to the canonical template point
rgb         ``sigmoid(x) * (1 + 2 s) - s`` with ``s = sigmoid_saturation`` (0.001): (-s, 1 + s)
scale       ``2 * sigmoid(x) * spacing``: (0, 2 * spacing) metres, where ``spacing`` is the root of
            the mean squared distance of a point to its 3 nearest neighbours among the offset
            template points (computed without gradient, floored at ``sqrt(1e-7)``)
rotation    ``r = (sigmoid(x) - 0.5) * pi`` in (-pi/2, pi/2)^3 is an axis-angle vector; the
            Gaussian's rotation is ``R_template @ exp(r)`` (template frame, then the local delta)
==========  ====================================================================================

The ``official`` config reproduces the release (``core/modules/autoencoder.py`` class ``VAE``,
which wraps ``Conv_VAE`` with overrides): its ``state_dict`` names and shapes equal the released
``autoencoder.safetensors``, so those weights load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigman.models.image_encoder import IMAGENET_MEAN, IMAGENET_STD
from sigman.models.plucker import RELEASE_FOVY, plucker_rays
from sigman.models.vae_blocks import UVCrossAttention, UVDecoder, ViewEncoder, sincos_position_table


@dataclass(frozen=True)
class VAEConfig:
    # --- inputs ---
    num_views: int = 6  # input views the model was trained with (any V >= 1 runs)
    image_size: int = 512  # view resolution (square)
    view_channels: int = 9  # RGB (ImageNet-normalised) + 6 Plücker channels
    uv_size: int = 512  # initial UV texture and decoded UV map resolution (square)
    uv_texture_bgr: bool = True  # the release fed its UV texture in B,G,R order (callers pass RGB)
    # --- latent ---
    latent_channels: int = 16
    latent_size: int = 64  # latent is [latent_channels, latent_size, latent_size]
    latent_scaling_factor: float = 0.6909025648433997  # DiT works on latent * this factor
    # --- encoder ---
    encoder_channels: tuple[int, ...] = (128, 256, 256, 512)
    encoder_layers_per_block: int = 2
    norm_groups: int = 32
    # --- UV queries and attention ---
    attention_heads: int = 8
    attention_head_dim: int = 64
    self_attention_layers: int = 6
    attention_dropout: float = 0.1
    # The release flattens its [B, C, h, w] UV-texture encoding to tokens with a plain reshape to
    # [B, h*w, C] (no transpose), which mixes channels and positions; its weights expect that.
    release_uv_token_order: bool = True
    # --- decoder ---
    decoder_channels: tuple[int, ...] = (256, 512, 512, 1024)  # listed from the output end
    decoder_layers_per_block: int = 4
    decoder_out_channels: int = 64  # split in halves: geometry head | RGB head
    # --- Gaussian activations ---
    sigmoid_saturation: float = 0.001
    rotation_range: float = math.pi  # axis-angle = (sigmoid - 0.5) * rotation_range
    knn_neighbours: int = 3
    min_knn_sq_dist: float = 1e-7
    # --- training / rendering facts of the release ---
    kl_weight: float = 1e-6
    render_size: int = 512
    render_fovy: float = RELEASE_FOVY
    camera_radius: float = 1.5
    # --- weight layout ---
    # The release keeps its template's UVs (x2-1) as a persistent buffer ``smplx_uvcoord``
    # [1, N, 2] (N = 50200 for its subdivided SMPL-X template); 0 = no such buffer.
    release_template_points: int = 50200
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        up = 2 ** (len(self.decoder_channels) - 1)
        down = 2 ** (len(self.encoder_channels) - 1)
        if self.latent_size * up != self.uv_size:
            raise ValueError(f"uv_size ({self.uv_size}) must be latent_size ({self.latent_size}) x {up} "
                             f"(the decoder upsamples {len(self.decoder_channels) - 1} times)")
        if self.image_size % down:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by {down}")
        if self.decoder_out_channels % 2:
            raise ValueError("decoder_out_channels must be even (split into geometry and RGB halves)")
        for ch in (*self.encoder_channels, *self.decoder_channels, 2 * self.encoder_channels[-1]):
            if ch % self.norm_groups:
                raise ValueError(f"channel count {ch} is not divisible by norm_groups={self.norm_groups}")

    @property
    def uv_stride(self) -> int:
        """Downsampling of the UV texture encoding (kernel = stride): uv_size / latent_size."""
        return self.uv_size // self.latent_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)


VAE_CONFIGS: dict[str, VAEConfig] = {
    # The release (core/model_config/VAE.py + the overrides in autoencoder.py class VAE).
    "official": VAEConfig(),
    # Small: 4 views at 128^2, UV 128^2 -> latent 16 x 16 x 16; trains in minutes on one GPU.
    "demo": VAEConfig(
        num_views=4, image_size=128, uv_size=128, uv_texture_bgr=False,
        latent_channels=16, latent_size=16, latent_scaling_factor=1.0,
        encoder_channels=(32, 64, 64, 128), encoder_layers_per_block=1, norm_groups=8,
        attention_heads=4, attention_head_dim=32, self_attention_layers=2, attention_dropout=0.0,
        release_uv_token_order=False,
        decoder_channels=(32, 64, 64, 128), decoder_layers_per_block=2, decoder_out_channels=32,
        render_size=256, release_template_points=0,
    ),
}

#: Channels of the decoded UV maps (:meth:`SigmanVAE.decode`), in the release's order.
UV_MAP_CHANNELS: dict[str, slice] = {
    "opacity": slice(0, 1),  # sigmoid
    "offset": slice(1, 4),  # linear (metres)
    "rgb": slice(4, 7),  # sigmoid
    "scale": slice(7, 10),  # sigmoid
    "rotation": slice(10, 13),  # sigmoid
}
NUM_UV_MAP_CHANNELS = 13


# --- helpers ---------------------------------------------------------------------------------

def make_view_input(images: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """The encoder's view input: ImageNet-normalised RGB followed by the Plücker rays.

    Args:
        images: ``[B, V, 3, H, W]`` RGB in ``[0, 1]``.
        viewmats: ``[B, V, 4, 4]`` world-to-camera (OpenCV). Ks: ``[B, V, 3, 3]`` or ``[3, 3]``.
    Returns:
        ``[B, V, 9, H, W]``.
    """
    mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    rays = plucker_rays(viewmats, Ks, images.shape[-2], images.shape[-1]).to(images)
    rays = rays.expand(*images.shape[:2], *rays.shape[-3:])
    return torch.cat([(images - mean) / std, rays], dim=2)


def uv_to_grid(uv: Tensor) -> Tensor:
    """UV coordinates (``u`` right, ``v`` up, both in ``[0, 1]``) to ``grid_sample``'s ``(x, y)``
    in ``[-1, 1]`` (``y`` down): ``x = 2u - 1``, ``y = 1 - 2v``. Row 0 of a UV map is ``v = 1``."""
    return torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)


def knn_spacing(points: Tensor, k: int = 3, min_sq_dist: float = 1e-7, chunk: int = 1024) -> Tensor:
    """``sqrt(max(mean of the squared distances to the k nearest other points, min_sq_dist))``.

    ``points [..., N, 3] -> [..., N]``. Exact (chunked brute force, O(N^2)); no gradient.
    """
    lead = points.shape[:-2]
    pts = points.detach().reshape(-1, *points.shape[-2:]).float()
    n = pts.shape[-2]
    if n <= k:
        raise ValueError(f"need more than k={k} points for the nearest-neighbour spacing, got {n}")
    out = torch.empty(pts.shape[:-1], dtype=pts.dtype, device=pts.device)
    idx = torch.arange(n, device=pts.device)
    for b in range(pts.shape[0]):
        for start in range(0, n, chunk):
            block = pts[b, start:start + chunk]
            d2 = torch.cdist(block, pts[b], compute_mode="donot_use_mm_for_euclid_dist").square()
            rows = torch.arange(block.shape[0], device=pts.device)
            d2[rows, idx[start:start + chunk]] = float("inf")
            out[b, start:start + chunk] = d2.topk(k, dim=-1, largest=False).values.mean(dim=-1)
    return out.clamp_min(min_sq_dist).sqrt().reshape(*lead, n).to(points.dtype)


def axis_angle_to_quat(rotvec: Tensor) -> Tensor:
    """Axis-angle ``[..., 3]`` (angle = norm) to unit quaternions ``(w, x, y, z)`` ``[..., 4]``."""
    angle = rotvec.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(half) / angle, with its limit 0.5 at angle -> 0
    k = torch.where(angle > 1e-6, torch.sin(half) / angle.clamp_min(1e-6), 0.5 - angle.square() / 48.0)
    return torch.cat([torch.cos(half), rotvec * k], dim=-1)


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of ``(w, x, y, z)`` quaternions (rotation ``b`` first)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL of ``N(mean, exp(logvar))`` from ``N(0, 1)``, summed over all but the batch dim: ``[B]``.
    The release's loss averages it over the batch and weights it by ``kl_weight`` (1e-6)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


# --- model -----------------------------------------------------------------------------------

class UVAutoencoder(nn.Module):
    """The encoder / latent / decoder trunk (the release's ``autoencoder`` submodule)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config.encoder_channels[-1]
        hw = config.latent_size * config.latent_size
        self.config = config
        self.uv_latent = nn.Parameter(torch.randn(1, hw, c))
        self.register_buffer("pos_embedding", sincos_position_table(hw, 2 * c))
        self.encoder = ViewEncoder(config.view_channels, config.encoder_channels, config.encoder_layers_per_block,
                                   config.norm_groups)
        self.uv_encoding = nn.Sequential(
            nn.Conv2d(3, c, kernel_size=config.uv_stride, stride=config.uv_stride),
            nn.GroupNorm(config.norm_groups, c, eps=1e-6),
            nn.SiLU(),
        )
        self.attention = UVCrossAttention(
            config.latent_size, config.latent_size, query_dim=2 * c, context_dim=c, heads=config.attention_heads,
            dim_head=config.attention_head_dim, num_layers=config.self_attention_layers, groups=config.norm_groups,
            dropout=config.attention_dropout)
        self.projection = nn.Linear(2 * c, 2 * config.latent_channels)
        self.decoder = UVDecoder(config.latent_channels, config.decoder_out_channels, config.decoder_channels,
                                 config.decoder_layers_per_block, config.norm_groups)

    def encode(self, views: Tensor, uv_texture: Tensor) -> Tensor:
        """``views [B, V, 9, H, W]``, ``uv_texture [B, 3, Huv, Wuv]`` (as the model expects it)
        -> posterior parameters ``[B, 2 * latent_channels, h, w]``."""
        cfg = self.config
        b = views.shape[0]
        feats = self.encoder(views.transpose(1, 2))  # [B, C, V, H/8, W/8]
        context = feats.permute(0, 2, 3, 4, 1).reshape(b, -1, feats.shape[1])  # tokens (view, row, col)
        uv = self.uv_encoding(uv_texture)  # [B, C, h, w]
        if uv.shape[-2:] != (cfg.latent_size, cfg.latent_size):
            raise ValueError(f"uv_texture must be {cfg.uv_size}x{cfg.uv_size}, got {tuple(uv_texture.shape[-2:])}")
        if cfg.release_uv_token_order:
            uv_tokens = uv.reshape(b, -1, uv.shape[1])
        else:
            uv_tokens = uv.flatten(2).transpose(1, 2)
        query = torch.cat([self.uv_latent.expand(b, -1, -1), uv_tokens], dim=-1) + self.pos_embedding
        tokens = self.projection(self.attention(query, context))  # [B, h*w, 2L]
        return tokens.transpose(1, 2).reshape(b, -1, cfg.latent_size, cfg.latent_size)


class SigmanVAE(nn.Module):
    """SIGMAN's Gaussian VAE. See the module docstring for the architecture and activations."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        if config.release_template_points > 0:
            self.register_buffer("smplx_uvcoord", torch.zeros(1, config.release_template_points, 2))
        else:
            self.register_buffer("smplx_uvcoord", None)
        self.autoencoder = UVAutoencoder(config)
        half = config.decoder_out_channels // 2
        self.decode_gaussian_geo = nn.Conv2d(half, 10, kernel_size=3, padding=1)
        self.decode_gaussian_rgb = nn.Conv2d(half, 3, kernel_size=3, padding=1)
        self.enable_gradient_checkpointing(config.gradient_checkpointing)

    # --- configuration ---

    @classmethod
    def from_name(cls, name: str, **overrides) -> "SigmanVAE":
        """Build a named config (``"official"``, ``"demo"``), optionally overriding fields."""
        if name not in VAE_CONFIGS:
            raise ValueError(f"unknown VAE config {name!r}; choose one of {sorted(VAE_CONFIGS)}")
        return cls(replace(VAE_CONFIGS[name], **overrides))

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute encoder blocks, attention blocks and decoder blocks in the backward pass."""
        ae = self.autoencoder
        for module in (ae.encoder, ae.attention, ae.decoder):
            module.gradient_checkpointing = enabled

    @property
    def template_uv(self) -> Optional[Tensor]:
        """The release template's UVs ``[N, 2]`` (u right, v up, in [0, 1]) carried by the
        official weights, or ``None`` for configs without that buffer."""
        return None if self.smplx_uvcoord is None else (self.smplx_uvcoord[0] + 1.0) * 0.5

    # --- encoder ---

    def encode(self, views: Tensor, uv_texture: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior of the latent UV map.

        Args:
            views: ``[B, V, 9, H, W]`` from :func:`make_view_input`.
            uv_texture: ``[B, 3, uv_size, uv_size]`` RGB in ``[0, 1]`` (the initial texture from the
                UV projection of the input views; row 0 is ``v = 1``).
        Returns:
            ``mean``, ``logvar``: ``[B, latent_channels, latent_size, latent_size]`` each
            (``logvar`` clamped to ``[-30, 20]``).
        """
        if views.dim() != 5 or views.shape[2] != self.config.view_channels:
            raise ValueError(f"views must be [B, V, {self.config.view_channels}, H, W], got {tuple(views.shape)}")
        if self.config.uv_texture_bgr:
            uv_texture = uv_texture.flip(1)
        params = self.autoencoder.encode(views, uv_texture)
        mean, logvar = params.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample_latent(mean: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Reparameterised sample ``mean + exp(logvar / 2) * eps``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    # --- decoder ---

    def decode(self, latent: Tensor) -> Tensor:
        """Latent ``[B, latent_channels, h, w]`` (unscaled: divide DiT latents by
        ``latent_scaling_factor`` first) -> UV maps ``[B, 13, uv_size, uv_size]``.

        Channels (:data:`UV_MAP_CHANNELS`): 0 opacity, 1-3 offset, 4-6 rgb, 7-9 scale,
        10-12 rotation; all sigmoid outputs except the offset, which is linear.
        """
        feats = self.autoencoder.decoder(latent)
        geo_feats, rgb_feats = feats.chunk(2, dim=1)
        opacity, offset, scale, rot = self.decode_gaussian_geo(geo_feats).split([1, 3, 3, 3], dim=1)
        rgb = self.decode_gaussian_rgb(rgb_feats)
        return torch.cat([opacity.sigmoid(), offset, rgb.sigmoid(), scale.sigmoid(), rot.sigmoid()], dim=1)

    @staticmethod
    def sample_points(uv_maps: Tensor, uv: Tensor) -> Tensor:
        """Bilinear samples of ``uv_maps [B, C, H, W]`` at ``uv [N, 2]`` or ``[B, N, 2]`` -> ``[B, N, C]``.

        ``u`` runs left to right and ``v`` bottom to top (row 0 is ``v = 1``), both in ``[0, 1]``;
        texel ``(row, col)`` has its centre at ``((col + .5) / W, 1 - (row + .5) / H)``. Sampling
        uses ``align_corners=False`` and border padding, as the release does.
        """
        b = uv_maps.shape[0]
        grid = uv_to_grid(uv.to(uv_maps.dtype))
        grid = grid.expand(b, *grid.shape[-2:]) if grid.dim() == 2 or grid.shape[0] == 1 else grid
        out = F.grid_sample(uv_maps, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
        return out[:, :, 0].transpose(1, 2)  # [B, N, C]

    def activate(self, samples: Tensor, template_points: Optional[Tensor] = None,
                 template_quats: Optional[Tensor] = None, point_spacing: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Per-point attributes from sampled UV-map values ``[B, N, 13]`` (see module docstring).

        Args:
            template_points: ``[N, 3]`` or ``[B, N, 3]`` canonical template positions (metres),
                used for the nearest-neighbour ``spacing`` of the scales.
            template_quats: ``[N, 4]`` or ``[B, N, 4]`` template frames ``(w, x, y, z)`` (the
                release uses each face's tangent/bitangent/normal frame); identity if ``None``.
            point_spacing: ``[N]`` or ``[B, N]`` precomputed spacing (metres); overrides the
                nearest-neighbour computation (which costs O(N^2)).
        Returns:
            dict with ``offset [B, N, 3]`` metres, ``scale [B, N, 3]`` metres, ``quat [B, N, 4]``
            unit ``(w, x, y, z)``, ``opacity [B, N]``, ``rgb [B, N, 3]``, and ``rotvec [B, N, 3]``
            (the local axis-angle delta).
        """
        cfg = self.config
        opacity = samples[..., UV_MAP_CHANNELS["opacity"]].squeeze(-1)
        offset = samples[..., UV_MAP_CHANNELS["offset"]]
        s = cfg.sigmoid_saturation
        rgb = samples[..., UV_MAP_CHANNELS["rgb"]] * (1.0 + 2.0 * s) - s
        scale_factor = samples[..., UV_MAP_CHANNELS["scale"]] * 2.0  # = (sigmoid - 0.5) * 2 + 1
        rotvec = (samples[..., UV_MAP_CHANNELS["rotation"]] - 0.5) * cfg.rotation_range
        if point_spacing is None:
            if template_points is None:
                raise ValueError("scales are relative to the point spacing: pass template_points (or point_spacing)")
            point_spacing = knn_spacing(template_points + offset, cfg.knn_neighbours, cfg.min_knn_sq_dist)
        scale = scale_factor * point_spacing.to(scale_factor)[..., None]
        quat = axis_angle_to_quat(rotvec)
        if template_quats is not None:
            quat = quat_mul(template_quats.to(quat), quat)
        return {"offset": offset, "scale": scale, "quat": quat, "opacity": opacity, "rgb": rgb, "rotvec": rotvec}

    def decode_attributes(self, latent: Tensor, uv: Tensor, template_points: Optional[Tensor] = None,
                          template_quats: Optional[Tensor] = None,
                          point_spacing: Optional[Tensor] = None) -> dict[str, Tensor]:
        """``latent [B, Cz, h, w]`` and template ``uv [N, 2]`` -> per-point attributes (see
        :meth:`activate` for the other arguments and the returned dict)."""
        return self.activate(self.sample_points(self.decode(latent), uv), template_points, template_quats,
                             point_spacing)

    def forward(self, views: Tensor, uv_texture: Tensor, uv: Tensor, template_points: Optional[Tensor] = None,
                template_quats: Optional[Tensor] = None, point_spacing: Optional[Tensor] = None,
                sample_posterior: bool = True,
                generator: Optional[torch.Generator] = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Training pass: encode, sample (or take the mean), decode at the template points.

        Returns ``(attributes, mean, logvar)``; the KL term is :func:`kl_divergence` ``(mean, logvar)``.
        """
        mean, logvar = self.encode(views, uv_texture)
        latent = self.sample_latent(mean, logvar, generator) if sample_posterior else mean
        attrs = self.decode_attributes(latent, uv, template_points, template_quats, point_spacing)
        return attrs, mean, logvar
