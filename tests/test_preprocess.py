"""Person photo preprocessing (sigman.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sigman.preprocess import (
    ImageInputError,
    check_person_content,
    estimate_foreground,
    load_image,
    preprocess_person,
)


def person_rgb(h: int = 240, w: int = 160, box=(60, 40, 200, 110), bg=(0.5, 0.5, 0.5), seed: int = 0) -> np.ndarray:
    """A plain background with a textured "person" box (y0, x0, y1, x1): float [H, W, 3]."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = bg
    y0, x0, y1, x1 = box
    img[y0:y1, x0:x1] = rng.uniform(0.05, 0.35, size=(y1 - y0, x1 - x0, 3))  # dark, varied clothes
    return img


def crop_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    return xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1


# --- alpha, masks, crops ---------------------------------------------------------------------------

def test_alpha_is_composited_on_white():
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., 1] = 255  # green where transparent: must not leak
    rgba[50:150, 70:130] = (200, 30, 30, 255)  # opaque red person
    rgba[50:150, 70:130, 0] = np.random.default_rng(0).integers(150, 255, size=(100, 60))  # some texture
    img = Image.fromarray(rgba, "RGBA")
    out = preprocess_person(img, size=64)
    assert out.mask_source == "alpha" and out.bbox == (70, 50, 130, 150)
    assert out.image.shape == (1, 3, 64, 64) and out.mask.shape == (1, 1, 64, 64)
    assert out.image.min() >= 0 and out.image.max() <= 1
    assert torch.allclose(out.image[0, :, 0, 0], torch.ones(3), atol=1e-3)  # white, not green
    assert out.image[0, 2, 32, 32] < 0.2 and out.image[0, 0, 32, 32] > 0.5  # red person in the middle
    assert out.mask[0, 0, 32, 32] > 0.99 and out.mask[0, 0, 32, 2] < 0.01


def test_alpha_compositing_formula():
    """Crop size == output size (no resampling): a pixel of alpha a shows rgb * a + (1 - a)."""
    rgba = np.zeros((100, 100, 4), np.float32)
    rng = np.random.default_rng(0)
    rgba[:, 25:75, :3] = rng.uniform(0.0, 0.6, size=(100, 50, 3))
    rgba[:, 25:75, 3] = 1.0
    rgba[40:60, 40:60, 3] = 0.3  # semi-transparent patch inside the person
    out = preprocess_person(rgba, size=100)
    assert out.bbox == (25, 0, 75, 100)
    expected = rgba[50, 50, :3] * 0.3 + 0.7
    assert np.allclose(out.image[0, :, 50, 50].numpy(), expected, atol=1e-5)
    assert np.allclose(out.image[0, :, 10, 30].numpy(), rgba[10, 30, :3], atol=1e-5)
    assert abs(out.mask[0, 0, 50, 50].item() - 0.3) < 1e-5
    rgb, alpha = load_image(rgba)
    assert rgb.shape == (100, 100, 3) and alpha.shape == (100, 100)


def test_crop_centres_the_person_in_a_square():
    rgb = person_rgb(h=240, w=320, box=(30, 200, 210, 260))  # 180 tall x 60 wide, off to the right
    rgba = np.concatenate([rgb, np.zeros((240, 320, 1), np.float32)], axis=-1)
    rgba[30:210, 200:260, 3] = 1.0
    out = preprocess_person(rgba, size=90)
    assert out.bbox == (200, 30, 260, 210)
    x0, y0, x1, y1 = crop_box(out.mask)
    assert abs((x0 + x1) / 2 - 45) <= 1 and abs((y0 + y1) / 2 - 45) <= 1  # centred
    assert y1 - y0 >= 88  # longer side fills the square (no margin)
    assert abs((x1 - x0) - 30) <= 2  # aspect kept: 60/180 * 90
    with_margin = preprocess_person(rgba, size=90, margin=0.25)
    x0, y0, x1, y1 = crop_box(with_margin.mask)
    assert abs((y1 - y0) - 60) <= 2 and abs((y0 + y1) / 2 - 45) <= 1


def test_given_mask_overrides_and_is_checked():
    rgb = person_rgb()
    mask = np.zeros((240, 160), np.uint8)
    mask[60:200, 40:110] = 255
    out = preprocess_person((rgb * 255).astype(np.uint8), mask=mask, size=64)
    assert out.mask_source == "mask" and out.bbox == (40, 60, 110, 200)
    small = Image.fromarray(mask).resize((80, 120))  # same aspect: resized to the image
    assert preprocess_person(rgb, mask=small, size=64).bbox[0] in range(38, 43)
    with pytest.raises(ImageInputError, match=r"mask is 100x100 px but the image is 160x240 px"):
        preprocess_person(rgb, mask=np.ones((100, 100), np.float32))
    with pytest.raises(ImageInputError, match="no person found: the given mask covers 0.00%"):
        preprocess_person(rgb, mask=np.zeros((240, 160), np.float32))


def test_foreground_estimated_from_plain_background():
    """The border-colour estimate: what stands in when MediaPipe is not used (segment=False) or
    not available (tests/test_person.py checks that fallback)."""
    rgb = person_rgb(bg=(0.8, 0.82, 0.85))
    out = preprocess_person(torch.from_numpy(rgb).permute(2, 0, 1), size=64, segment=False)  # a [3, H, W] tensor
    assert out.mask_source == "estimated"
    x0, y0, x1, y1 = out.bbox
    assert abs(x0 - 40) <= 3 and abs(y0 - 60) <= 3 and abs(x1 - 110) <= 3 and abs(y1 - 200) <= 3
    assert torch.allclose(out.image[0, :, 0, 0], torch.ones(3), atol=1e-3)  # background whitened
    fg = estimate_foreground(rgb)
    assert fg[130, 75] == 1 and fg[5, 5] == 0


def test_busy_background_keeps_the_whole_image():
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 1, size=(120, 90, 3)).astype(np.float32)
    out = preprocess_person(rgb, size=32, segment=False)
    assert out.mask_source == "full" and out.bbox == (0, 0, 90, 120)
    assert out.notes == ["the background is not plain: the whole photo is used"]
    assert torch.all(out.mask[0, 0, :, 8:24] > 0.99)  # the image, centred
    assert torch.allclose(out.image[0, :, 16, 0], torch.ones(3), atol=1e-3)  # white side padding


def test_path_input_and_exif_orientation(tmp_path):
    rgb = (person_rgb() * 255).astype(np.uint8)
    path = tmp_path / "person.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed as 240 wide x 160 tall
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    loaded, alpha = load_image(path)
    assert loaded.shape == (160, 240, 3) and alpha is None
    out = preprocess_person(str(path), size=64, segment=False)
    assert out.image.shape == (1, 3, 64, 64) and out.mask_source == "estimated"


def test_large_input_is_downscaled_and_bbox_reported_in_input_pixels():
    rgb = np.full((2600, 1300, 3), 255, np.uint8)
    rgb[400:2200, 300:900] = np.random.default_rng(1).integers(0, 90, size=(1800, 600, 3))
    out = preprocess_person(Image.fromarray(rgb), size=64, segment=False)
    x0, y0, x1, y1 = out.bbox
    assert abs(x0 - 300) <= 12 and abs(y0 - 400) <= 12 and abs(x1 - 900) <= 12 and abs(y1 - 2200) <= 12


# --- bad inputs --------------------------------------------------------------------------------

def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ImageInputError, match=r"cannot read notes.png as an image .*: pass a PNG, JPEG or WebP photo"):
        preprocess_person(path)
    with pytest.raises(ImageInputError, match=r"image not found: .*missing.png: check the path"):
        preprocess_person(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="expected an image path, PIL image, numpy array or tensor"):
        preprocess_person(12345)


def test_corrupt_image(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray((person_rgb() * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match=r"cut.png is corrupt or truncated .*: re-export or re-download the image"):
        preprocess_person(path)


def test_tiny_image():
    with pytest.raises(ImageInputError, match=r"image is 40x300 px, under 64 px on a side: use a larger photo"):
        preprocess_person(np.zeros((300, 40, 3), np.uint8))


def test_huge_image(tmp_path):
    big = Image.new("1", (8000, 6300))  # 50.4 MP
    with pytest.raises(ImageInputError, match=r"image is 8000x6300 px \(50.4 MP\), over the 50 MP limit: downscale it"):
        preprocess_person(big)
    path = tmp_path / "big.png"
    big.save(path)
    with pytest.raises(ImageInputError, match="over the 50 MP limit"):
        preprocess_person(path)


def test_blank_image_is_rejected():
    with pytest.raises(ImageInputError, match="image is blank \\(a single flat colour\\): pass a photo of a person"):
        preprocess_person(np.full((128, 128, 3), 200, np.uint8))
    with pytest.raises(ImageInputError, match="image is blank"):
        check_person_content(np.zeros((64, 64, 3), np.float32))


def test_speck_is_not_a_person():
    rgb = np.full((200, 200, 3), 0.9, np.float32)
    rgb[100:104, 100:104] = 0.1  # 16 px of 40000: far too small
    with pytest.raises(ImageInputError, match="no person found"):
        preprocess_person(rgb)


def test_bad_arrays():
    with pytest.raises(ImageInputError, match=r"float image values must be in \[0, 1\], got \[0, 255\]: divide 8-bit values by 255"):
        preprocess_person(np.full((80, 80, 3), 255.0, np.float32) * np.linspace(0, 1, 80)[None, :, None])
    with pytest.raises(ImageInputError, match=r"image array has shape \(80, 80, 5\)"):
        preprocess_person(np.zeros((80, 80, 5), np.uint8))
    with pytest.raises(ImageInputError, match="NaN"):
        preprocess_person(np.full((80, 80, 3), np.nan, np.float32))
    with pytest.raises(ImageInputError, match="dtype int64"):
        preprocess_person(np.zeros((80, 80, 3), np.int64))
    assert issubclass(ImageInputError, ValueError)
