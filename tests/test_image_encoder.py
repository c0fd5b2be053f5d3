"""Image encoders (sigman.models.image_encoder)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sigman.models.image_encoder import (
    IMAGE_ENCODER_CONFIGS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAPIENS_FILENAME,
    DemoImageEncoder,
    SapiensEncoder,
    build_image_encoder,
    imagenet_normalize,
)


class FakeSapiens(torch.nn.Module):
    """Stands in for the Sapiens-1B TorchScript file: same input and output shapes, and a
    parameter so dtype handling is exercised. Returns a 1-tuple like the real export."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        pooled = F.avg_pool2d(x, 16) * self.gain  # [B, 3, 64, 64]
        return (pooled.repeat(1, 512, 1, 1),)


def test_demo_encoder_shapes_and_gradients():
    enc = DemoImageEncoder(IMAGE_ENCODER_CONFIGS["demo"])
    assert enc.feature_shape == (256, 16, 16)
    images = torch.rand(2, 3, 300, 200)  # any size: resized to 256 x 256
    feats = enc(images)
    assert feats.shape == (2, 256, 16, 16)
    feats.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


def test_tiny_encoder_is_deterministic_and_fast():
    enc = build_image_encoder("tiny").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = enc(x), enc(x)
    assert a.shape == (1, 32, 16, 16) and torch.equal(a, b)


def test_prepare_resizes_and_normalises():
    enc = DemoImageEncoder(IMAGE_ENCODER_CONFIGS["tiny"])
    x = torch.rand(1, 3, 128, 128)
    got = enc.prepare(x)
    resized = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(got, (resized - mean) / std, atol=1e-6)
    assert torch.allclose(imagenet_normalize(mean.expand(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enc(torch.rand(3, 64, 64))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_sapiens_encoder_loads_torchscript(tmp_path):
    torch.jit.save(torch.jit.script(FakeSapiens()), str(tmp_path / SAPIENS_FILENAME))
    enc = SapiensEncoder(tmp_path)  # a folder holding the file, as in the weights folder
    assert enc.feature_shape == (1536, 64, 64)
    assert not any(p.requires_grad for p in enc.parameters())
    images = torch.rand(1, 3, 512, 512)
    feats = enc(images)
    assert feats.shape == (1, 1536, 64, 64)
    # the release's input: bilinear to 1024 x 1024, ImageNet mean/std
    x = F.interpolate(images, size=(1024, 1024), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = F.avg_pool2d((x - mean) / std, 16)
    assert torch.allclose(feats[:, :3], expected, atol=1e-5)
    enc.train()
    assert not enc.net.training
    direct = SapiensEncoder(tmp_path / SAPIENS_FILENAME, dtype=torch.bfloat16)
    assert direct(images).dtype == torch.bfloat16


def test_sapiens_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=SAPIENS_FILENAME):
        SapiensEncoder(tmp_path)
    with pytest.raises(ValueError, match="weights_dir"):
        build_image_encoder("sapiens")
    with pytest.raises(ValueError, match="unknown image encoder"):
        build_image_encoder("clip")
