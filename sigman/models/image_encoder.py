"""Image encoders: a conditioning photo -> a feature map for the DiT.

Every encoder takes RGB images ``[B, 3, H, W]`` in ``[0, 1]`` (any size; it resizes) and returns
features ``[B, out_channels, out_size, out_size]``:

- :class:`SapiensEncoder` — the release's encoder: Meta's Sapiens-1B TorchScript file
  (``sapiens_1b_epoch_173_torchscript.pt2``, supplied by the user in the weights folder). Input
  resized bilinearly to 1024 x 1024 and normalised with the ImageNet mean/std, as the release does;
  output ``[B, 1536, 64, 64]``. Frozen.
- :class:`DemoImageEncoder` — a small conv encoder for the offline demo, randomly initialised and
  trained jointly with the DiT. No PyPI package ships a general pretrained vision backbone inside
  its wheel (those we checked download their weights from a hub at run time, or ship only face or
  nudity detectors), so the demo learns its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class DemoImageEncoderConfig:
    input_size: int = 256  # images are resized to input_size x input_size
    channels: tuple[int, ...] = (32, 64, 128, 256)  # one stride-2 stage each
    blocks_per_stage: int = 1
    out_channels: int = 256
    norm_groups: int = 8

    @property
    def out_size(self) -> int:
        return self.input_size // 2 ** len(self.channels)


IMAGE_ENCODER_CONFIGS: dict[str, DemoImageEncoderConfig] = {
    "demo": DemoImageEncoderConfig(),  # 256^2 -> [256, 16, 16]
    "tiny": DemoImageEncoderConfig(input_size=64, channels=(16, 32), out_channels=32),  # tests
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SAPIENS_FILENAME = "sapiens_1b_epoch_173_torchscript.pt2"
SAPIENS_INPUT_SIZE = 1024
SAPIENS_CHANNELS = 1536
SAPIENS_FEATURE_SIZE = 64


def imagenet_normalize(images: Tensor) -> Tensor:
    """``(images - mean) / std`` per RGB channel; ``images [B, 3, H, W]`` in ``[0, 1]``."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB in [0, 1], got {tuple(images.shape)}")


class ImageEncoder(nn.Module):
    """Interface: ``forward(images [B, 3, H, W] in [0, 1]) -> [B, out_channels, out_size, out_size]``."""

    input_size: int
    out_channels: int
    out_size: int

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.out_size, self.out_size)

    def prepare(self, images: Tensor) -> Tensor:
        """Resize to ``input_size`` (bilinear) and ImageNet-normalise."""
        _check_images(images)
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False)
        return imagenet_normalize(images)


class SapiensEncoder(ImageEncoder):
    """Frozen Sapiens-1B (TorchScript) features, as the release conditions its DiT.

    Args:
        path: the ``.pt2`` TorchScript file, or a folder holding ``sapiens_1b_epoch_173_torchscript.pt2``.
        dtype: run the network in this dtype (e.g. ``torch.bfloat16`` on GPU); outputs keep it.
    """

    input_size = SAPIENS_INPUT_SIZE
    out_channels = SAPIENS_CHANNELS
    out_size = SAPIENS_FEATURE_SIZE

    def __init__(self, path: Union[str, Path], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        path = Path(path)
        if path.is_dir():
            path = path / SAPIENS_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"Sapiens-1B TorchScript file not found at {path}: download {SAPIENS_FILENAME} "
                "(facebook/sapiens-pretrain-1b-torchscript) into the weights folder, or use the demo encoder")
        with warnings.catch_warnings():  # TorchScript is deprecated in recent torch, but it is the release's format
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location="cpu")
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.to(dtype)
        self.dtype = dtype

    def train(self, mode: bool = True) -> "SapiensEncoder":
        super().train(mode)
        self.net.eval()  # always frozen
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 1536, 64, 64]``."""
        x = self.prepare(images.float()).to(self.dtype)
        out = self.net(x)
        if isinstance(out, (tuple, list)):  # the release unpacks a 1-tuple
            out = out[0]
        return out


class _ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class DemoImageEncoder(ImageEncoder):
    """Small conv encoder: per stage a stride-2 conv + GroupNorm + SiLU and residual blocks, then a
    1x1 projection. ``[B, 3, H, W] -> [B, out_channels, input_size / 2**stages, ...]``."""

    def __init__(self, config: DemoImageEncoderConfig = DemoImageEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        self.input_size = config.input_size
        self.out_channels = config.out_channels
        self.out_size = config.out_size
        stages = []
        prev = 3
        for ch in config.channels:
            layers = [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.GroupNorm(config.norm_groups, ch), nn.SiLU()]
            layers += [_ResBlock(ch, config.norm_groups) for _ in range(config.blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Conv2d(prev, config.out_channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self.stages(self.prepare(images)))


def build_image_encoder(name: str, weights_dir: Union[str, Path, None] = None,
                        dtype: torch.dtype = torch.float32) -> ImageEncoder:
    """``"sapiens"`` (needs ``weights_dir`` holding the Sapiens file) or a named demo config."""
    if name == "sapiens":
        if weights_dir is None:
            raise ValueError("the sapiens encoder needs weights_dir (the folder holding the Sapiens file)")
        return SapiensEncoder(weights_dir, dtype=dtype)
    if name in IMAGE_ENCODER_CONFIGS:
        return DemoImageEncoder(IMAGE_ENCODER_CONFIGS[name]).to(dtype)
    raise ValueError(f"unknown image encoder {name!r}; choose 'sapiens' or one of {sorted(IMAGE_ENCODER_CONFIGS)}")
