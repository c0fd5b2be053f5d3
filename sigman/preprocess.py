"""Person photo preprocessing: load and validate an image, find the person, crop them into a
centred square on a white background, resize to the image encoder's size.

The release conditions its DiT on exactly such crops: the person's mask bounding box padded to a
square (no margin), background outside the mask set to white, resized to 1024 x 1024.

Where the person is comes from, in order: a mask the caller gives; the image's alpha channel (if
not fully opaque); else MediaPipe's person segmentation (:mod:`sigman.person`; its pose detector is
also the person test: a photo of a cup or a cat is refused). Only when MediaPipe or its model is
unavailable, an estimate from the border colour stands in (works for plain studio-like backgrounds;
on a busy background the whole image is kept), and a note says so.

Every bad input raises :class:`ImageInputError` (a ``ValueError``) whose one-line message names the
problem and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

if TYPE_CHECKING:  # sigman.person imports this module; it is imported lazily below
    from sigman.observation import PersonObservation
    from sigman.person import PersonDetector

MIN_SIDE = 64  # px, shorter side
MAX_PIXELS = 50_000_000  # 50 MP
WORK_MAX_SIDE = 2048  # larger inputs are downscaled to this long side before processing
MIN_FOREGROUND_FRACTION = 0.005  # of the image area
BLANK_STD = 0.01  # luminance standard deviation below which an image is "flat"

ImageLike = Union[str, Path, Image.Image, np.ndarray, Tensor]


class ImageInputError(ValueError):
    """The input image (or mask) cannot be used; the message says why and what to do."""


@dataclass
class PersonImage:
    image: Tensor  # [1, 3, S, S] RGB in [0, 1], the person centred (on white where a mask is known)
    mask: Tensor  # [1, 1, S, S] in [0, 1], the person's mask in the crop
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the person in the input image, pixels, end exclusive
    mask_source: str  # "mask" | "alpha" | "segmented" (MediaPipe) | "estimated" (border colour) | "full" (whole image)
    observation: Optional["PersonObservation"] = None  # what MediaPipe saw (in the loaded image's pixels), if it ran
    notes: list[str] = field(default_factory=list)  # one-line messages for the user
    photo: Optional[np.ndarray] = None  # [H, W, 3] float32 the loaded photo (the observation's pixels)
    photo_mask: Optional[np.ndarray] = None  # [H, W] float32 the person's mask in it


# --- loading and validation ------------------------------------------------------------------

def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"image is {width}x{height} px ({width * height / 1e6:.1f} MP), over the {MAX_PIXELS // 1_000_000} MP limit: "
            f"downscale it (e.g. to {WORK_MAX_SIDE} px on its longer side)")
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"image is {width}x{height} px, under {MIN_SIDE} px on a side: use a larger photo "
            f"(at least {MIN_SIDE} px, ideally 512+ px, on its shorter side)")


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageInputError(f"image not found: {path}: check the path")
    if not path.is_file():
        raise ImageInputError(f"{path} is not a file: pass the path of an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{path.name} is far over the {MAX_PIXELS // 1_000_000} MP limit ({err}): "
                              f"downscale it (e.g. to {WORK_MAX_SIDE} px on its longer side)") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageInputError(f"cannot read {path.name} as an image ({type(err).__name__}): "
                              "pass a PNG, JPEG or WebP photo") from None
    _check_size(*img.size)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageInputError(f"{path.name} is corrupt or truncated ({err}): re-export or re-download the image") from None
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        pass
    return img


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> float32 ``[H, W, 3 or 4]`` in ``[0, 1]`` (alpha kept when present)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else 255.0
        arr = np.clip(arr / hi, 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=-1)
    img = img.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def _array_to_float(arr: np.ndarray, what: str) -> np.ndarray:
    """Numeric array -> float32 in ``[0, 1]`` (uint8 / uint16 scaled, bool as 0/1, floats checked)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageInputError(f"{what} has NaN or infinite values: pass finite values in [0, 1]")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ImageInputError(f"float {what} values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]: "
                                  "divide 8-bit values by 255")
        return np.clip(arr, 0.0, 1.0)
    raise ImageInputError(f"{what} has dtype {arr.dtype}: pass uint8, uint16, bool or float values")


def _to_array(source: ImageLike, what: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
    """Any accepted input -> (float32 ``[H, W, C]`` (C = 1, 3 or 4) in ``[0, 1]``, validated and
    downscaled to at most ``WORK_MAX_SIDE``; the input's ``(width, height)``)."""
    if isinstance(source, (str, Path)):
        img = _open_path(Path(source))
        return _pil_to_array(_downscale_pil(img)), img.size
    if isinstance(source, Image.Image):
        _check_size(*source.size)
        return _pil_to_array(_downscale_pil(source)), source.size
    if isinstance(source, Tensor):
        t = source.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        source = t.numpy()
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ImageInputError(f"{what} array has shape {tuple(source.shape)}: pass [H, W], [H, W, 3] or [H, W, 4]")
        _check_size(arr.shape[1], arr.shape[0])
        arr = _array_to_float(arr, what)
        return _downscale_array(arr), (arr.shape[1], arr.shape[0])
    raise ImageInputError(f"expected an image path, PIL image, numpy array or tensor as {what}, "
                          f"got {type(source).__name__}")


def _downscale_pil(img: Image.Image) -> Image.Image:
    w, h = img.size
    if max(w, h) <= WORK_MAX_SIDE:
        return img
    s = WORK_MAX_SIDE / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR, reducing_gap=2.0)


def _downscale_array(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if max(w, h) <= WORK_MAX_SIDE:
        return arr
    s = WORK_MAX_SIDE / max(w, h)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", antialias=True,
                      align_corners=False)
    return t[0].permute(1, 2, 0).numpy()


def load_image(source: ImageLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Load and validate an image (path, PIL image, ``[H, W(, C)]`` numpy array or ``[(1,) C, H, W]``
    tensor in ``[0, 1]``).

    Returns ``rgb [H, W, 3]`` float32 in ``[0, 1]`` and ``alpha [H, W]`` (``None`` if the image has
    no alpha channel). Inputs over ``WORK_MAX_SIDE`` px are downscaled to it.
    """
    return _split_alpha(_to_array(source, "image")[0])


def _split_alpha(arr: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    alpha = None
    if arr.shape[-1] == 4:
        arr, alpha = arr[..., :3], arr[..., 3]
    elif arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr), alpha


def load_mask(source: ImageLike, height: int, width: int,
              image_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A mask (same accepted types as images; RGB masks use their first channel, RGBA their alpha)
    as float32 ``[height, width]`` in ``[0, 1]``. A mask of another aspect ratio is refused; the
    message names the sizes the user gave: the mask's own and ``image_size`` (``(width, height)``
    of the image as given, before any downscaling; default ``(width, height)``)."""
    arr, (mw, mh) = _to_array(source, "mask")
    arr = arr[..., 3] if arr.shape[-1] == 4 else arr[..., 0]
    iw, ih = image_size or (width, height)
    if abs(mw / mh - iw / ih) > 0.01:
        raise ImageInputError(f"mask is {mw}x{mh} px but the image is {iw}x{ih} px: pass a mask of the image's size")
    if arr.shape != (height, width):
        t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
        arr = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    return arr.astype(np.float32)


# --- finding the person ----------------------------------------------------------------------

def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def estimate_foreground(rgb: np.ndarray) -> Optional[np.ndarray]:
    """Foreground mask ``[H, W]`` (float 0/1) of a subject on a plain background, from the colour
    of the image border; ``None`` when the border is not a plain colour (busy background)."""
    from scipy import ndimage

    h, w = rgb.shape[:2]
    bw = max(2, round(0.02 * min(h, w)))
    border = np.concatenate([rgb[:bw].reshape(-1, 3), rgb[-bw:].reshape(-1, 3),
                             rgb[:, :bw].reshape(-1, 3), rgb[:, -bw:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    border_dist = np.abs(border - bg).max(axis=-1)
    if np.mean(border_dist > 0.12) > 0.25:
        return None  # the border itself is not one colour
    threshold = max(0.08, float(np.quantile(border_dist, 0.98)) * 1.5)
    fg = np.abs(rgb - bg).max(axis=-1) > threshold
    k = max(1, round(0.004 * min(h, w)))
    fg = ndimage.binary_opening(fg, structure=np.ones((2 * k + 1, 2 * k + 1)))  # drop speckles
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg.astype(np.float32)
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1  # the subject may come in a few pieces
    fg = np.isin(labels, keep)
    fg = ndimage.binary_fill_holes(fg)
    fg = ndimage.binary_dilation(fg, structure=np.ones((2 * k + 1, 2 * k + 1)))  # err on keeping the person
    return fg.astype(np.float32)


def check_person_content(rgb: np.ndarray, mask: Optional[np.ndarray] = None, mask_source: str = "mask") -> None:
    """Cheap sanity check that there is a subject to reconstruct; raises :class:`ImageInputError`
    for blank / single-colour images, for a foreground covering under 0.5 % of the image, and for
    a flat-colour foreground."""
    lum = _luminance(rgb)
    if lum.std() < BLANK_STD and np.ptp(rgb) < 0.05:
        raise ImageInputError("image is blank (a single flat colour): pass a photo of a person")
    if mask is None:
        return
    fg = mask > 0.5
    frac = float(fg.mean())
    if frac < MIN_FOREGROUND_FRACTION:
        what = {"mask": "the given mask", "alpha": "the alpha channel", "segmented": "the person's segmentation",
                "estimated": "the estimated foreground"}.get(mask_source, "the foreground")
        raise ImageInputError(
            f"no person found: {what} covers {100 * frac:.2f}% of the image (< {100 * MIN_FOREGROUND_FRACTION:.1f}%): "
            "pass a photo in which the person fills more of the frame, or a correct mask")
    if lum[fg].std() < BLANK_STD / 2 and np.ptp(rgb[fg]) < 0.03:
        raise ImageInputError("the foreground is a single flat colour, not a person: pass a photo of a person")


def mask_bbox(mask: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (end exclusive) of ``mask > threshold``."""
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        raise ImageInputError("the mask is empty: pass a mask that covers the person")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _square_crop(arr: np.ndarray, bbox: tuple[int, int, int, int], margin: float, fill: float) -> np.ndarray:
    """Square window centred on ``bbox`` with side ``max(w, h) * (1 + 2 margin)``; outside the
    image it is ``fill``. ``arr [H, W, C] -> [S, S, C]``."""
    x0, y0, x1, y1 = bbox
    side = max(1, int(round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    sx, sy = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    out = np.full((side, side, arr.shape[-1]), fill, dtype=np.float32)
    h, w = arr.shape[:2]
    ax0, ay0, ax1, ay1 = max(sx, 0), max(sy, 0), min(sx + side, w), min(sy + side, h)
    if ax1 > ax0 and ay1 > ay0:
        out[ay0 - sy:ay1 - sy, ax0 - sx:ax1 - sx] = arr[ay0:ay1, ax0:ax1]
    return out


def _observation_mask(observation: "PersonObservation", height: int, width: int) -> np.ndarray:
    """The observation's mask at ``height x width`` (an observation of the same photo at another size
    is resized; one of another aspect ratio is refused)."""
    ow, oh = observation.image_size
    if (oh, ow) == (height, width):
        return observation.mask.astype(np.float32)
    if abs(ow / oh - width / height) > 0.01:
        raise ImageInputError(f"the person observation is of a {ow}x{oh} px image but the image is {width}x{height} px: "
                              "observe this photo (sigman.person.observe_person) and pass that observation")
    t = torch.from_numpy(np.ascontiguousarray(observation.mask, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def preprocess_person(image: ImageLike, mask: Optional[ImageLike] = None, size: int = 1024, margin: float = 0.0,
                      background: float = 1.0, *, observation: Optional["PersonObservation"] = None,
                      detector: Optional["PersonDetector"] = None, segment: bool = True) -> PersonImage:
    """Load, validate, locate, crop and resize a person photo.

    Args:
        image: path, PIL image, numpy array ``[H, W(, 3|4)]`` or tensor ``[(1,) 3|4, H, W]``.
        mask: optional person mask (same types; ``[H, W]``), overrides the alpha channel.
        size: output side (the image encoder's input size, 1024 for Sapiens).
        margin: extra border around the person's box on each side, as a fraction of its longer
            side (0 = the release's tight square crop).
        background: grey level put behind the person and in the padding (1 = white).
        observation: what :func:`sigman.person.observe_person` saw in this photo, if already
            computed (so MediaPipe runs once per photo); its mask is used unless ``mask`` or an
            alpha channel is given.
        detector: a held :class:`sigman.person.PersonDetector`. When given, it always runs (when
            no ``observation`` is) and is the person test, even for masked or transparent photos.
            Without it, MediaPipe runs (loading its model for this call) only when there is no
            mask and no alpha channel.
        segment: ``False`` skips MediaPipe where it would run: the mask is then estimated from the
            border colour.
    Returns:
        :class:`PersonImage` with ``image [1, 3, size, size]``, ``mask [1, 1, size, size]``, the
        observation and notes.
    Raises:
        ImageInputError: bad input, or no person in the photo.
    """
    from sigman.person import PersonModelError, observe_person

    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    arr, (ow, oh) = _to_array(image, "image")
    rgb, alpha = _split_alpha(arr)
    h, w = rgb.shape[:2]
    check_person_content(rgb)  # blank images are refused before any model runs
    notes: list[str] = []
    if observation is None and detector is not None:
        observation = detector.observe(arr)
    if mask is not None:
        m, source = load_mask(mask, h, w, image_size=(ow, oh)), "mask"
    elif alpha is not None and float(alpha.min()) < 0.99:
        m, source = alpha, "alpha"
    else:
        if observation is None and segment:
            try:
                observation = observe_person(arr)
            except PersonModelError as err:
                notes.append(f"{err}; until then the person's mask is estimated from the background colour")
        if observation is not None:
            m, source = _observation_mask(observation, h, w), "segmented"
        else:
            m, source = estimate_foreground(rgb), "estimated"
            if m is None:
                m, source = np.ones((h, w), dtype=np.float32), "full"
                notes.append("the background is not plain: the whole photo is used")
    if observation is not None:
        notes = [*observation.notes, *notes]
    check_person_content(rgb, None if source == "full" else m, source)
    photo, photo_mask = rgb, m
    if source != "full":
        rgb = rgb * m[..., None] + background * (1.0 - m[..., None])
    bbox = mask_bbox(m) if source != "full" else (0, 0, w, h)

    both = np.concatenate([rgb, m[..., None]], axis=-1)
    crop = _square_crop(both, bbox, margin, fill=0.0)
    pad = _square_crop(np.zeros((h, w, 1), np.float32), bbox, margin, fill=1.0)  # 1 outside the image
    crop[..., :3] += background * pad  # fill the padding with the background colour
    t = torch.from_numpy(crop).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=t.shape[-1] > size).clamp(0.0, 1.0)

    # report the box in the caller's pixel units (inputs over WORK_MAX_SIDE were downscaled)
    sx, sy = ow / w, oh / h
    bbox_src = (int(round(bbox[0] * sx)), int(round(bbox[1] * sy)), int(round(bbox[2] * sx)), int(round(bbox[3] * sy)))
    return PersonImage(image=t[:, :3].contiguous(), mask=t[:, 3:].contiguous(), bbox=bbox_src, mask_source=source,
                       observation=observation, notes=notes, photo=photo, photo_mask=photo_mask)
