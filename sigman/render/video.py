"""Writing images and videos (imageio; mp4 through imageio-ffmpeg's bundled ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


def to_uint8(images) -> np.ndarray:
    """Images as a uint8 numpy array: uint8 passes through; floats (numpy or torch) are read as [0, 1]."""
    if torch.is_tensor(images):
        images = images.detach().cpu()
        if images.dtype != torch.uint8:
            images = (images.float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        return images.numpy()
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"images must be uint8 or float in [0, 1], got {images.dtype}")


def _writable_target(path: PathLike) -> Path:
    """``path`` as a Path whose folder exists (created if missing) and is writable; else a clear OSError."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot write {path}: its folder {folder} is not writable ({err})") from err
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {path}: its folder {folder} is not writable")
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder")
    return path


def write_image(path: PathLike, image) -> Path:
    """Write one image ``[H, W, 3]``, ``[H, W, 4]`` or ``[H, W]`` (uint8, or float in [0, 1]).

    The format follows the suffix (``.png``, ``.jpg``, ...)."""
    import imageio.v3 as iio

    image = to_uint8(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"image must be [H, W], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    path = _writable_target(path)
    iio.imwrite(path, image)
    return path


def write_video(path: PathLike, frames, fps: float = 30) -> Path:
    """Write frames ``[T, H, W, 3]`` (uint8, or float in [0, 1]) as a video (``.mp4`` etc. via ffmpeg,
    H.264, yuv420p) or an animated ``.gif``. Odd frame sizes are padded by one edge pixel (H.264
    needs even sizes)."""
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T, H, W, 3] with T > 0, got {frames.shape}")
    path = _writable_target(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        import imageio.v3 as iio

        iio.imwrite(path, frames, duration=1000.0 / fps, loop=0)
        return path
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"unsupported video format {suffix!r}: use one of {sorted(VIDEO_SUFFIXES | {'.gif'})}")
    import imageio.v2 as iio2

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    with iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec=codec, pixelformat="yuv420p",
                         macro_block_size=1, quality=8) as writer:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
    return path
