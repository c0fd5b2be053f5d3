"""The release's photo preprocessing (``scripts/test_DiT.py``), reproduced to float rounding.

The script opens the photo with PIL, converts it to RGB (an alpha channel is dropped, not
composited), resizes the *whole* photo to 512 x 512 with Lanczos (a non-square photo is
stretched), and scales it to ``[0, 1]``; the image encoder then resizes it bilinearly to
1024 x 1024 and normalises it with the ImageNet mean and std
(:meth:`sigman.models.image_encoder.ImageEncoder.prepare` does those last two steps).

sigman's default for the official weights is the person crop instead
(:func:`sigman.preprocess.preprocess_person`), which is how the release's training data loader
(``core/dataset/dataloader_DiT.py``, ``condition_img``) made every conditioning image the DiT
was trained on: the person's mask box padded to a square, white outside the mask. See
docs/OFFICIAL.md for why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sigman.preprocess import ImageInputError, ImageLike, PersonImage, _check_size, _open_path

RELEASE_PHOTO_SIZE = 512  # the script's PIL resize
PREPROCESS_MODES = ("crop", "release")


def _to_pil(source: ImageLike) -> Image.Image:
    if isinstance(source, (str, Path)):
        return _open_path(Path(source))
    if isinstance(source, Image.Image):
        _check_size(*source.size)
        return source
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
        source = t.permute(1, 2, 0).numpy() if t.dim() == 3 and t.shape[0] in (1, 3, 4) else t.numpy()
    if isinstance(source, np.ndarray):
        arr = source[..., None] if source.ndim == 2 else source
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ImageInputError(f"image array has shape {tuple(source.shape)}: pass [H, W], [H, W, 3] or [H, W, 4]")
        if arr.dtype != np.uint8:  # float in [0, 1]: the 8-bit values a saved photo would hold
            if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise ImageInputError(f"image array has dtype {arr.dtype}: pass uint8, or float values in [0, 1]")
            arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
        _check_size(arr.shape[1], arr.shape[0])
        return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    raise ImageInputError(f"expected an image path, PIL image, numpy array or tensor, got {type(source).__name__}")


def release_preprocess(image: ImageLike) -> PersonImage:
    """The release script's photo: ``[1, 3, 512, 512]`` RGB in ``[0, 1]`` (the encoder resizes it to
    its input size and normalises it, as the script does)."""
    pil = _to_pil(image).convert("RGB")
    w, h = pil.size
    resized = pil.resize((RELEASE_PHOTO_SIZE, RELEASE_PHOTO_SIZE), Image.LANCZOS)
    pixels = torch.from_numpy(np.asarray(resized).astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
    mask = torch.ones(1, 1, RELEASE_PHOTO_SIZE, RELEASE_PHOTO_SIZE)
    return PersonImage(image=pixels, mask=mask, bbox=(0, 0, w, h), mask_source="full")
