"""The seed's per-item data layout: reading, writing and validating it.

One *item* (one person in one pose) is a folder::

    <item>/
    ├── camera_full_calibration.json   every view's calibration, keyed "0000", "0001", ...
    ├── smplx.npz                      the SMPL-X pose of the item (+ ``anny_phenotype`` (6,) for anny items)
    ├── rgb_map/0000.jpg ...           one RGB image per calibrated view (white background)
    ├── mask_map/0000.png ...          one 8-bit foreground mask per view (255 = person)
    └── UV/
        ├── uv_texture.png             the partial UV texture projected from the views (8-bit RGB, R x R,
        │                              black where not covered), in the body model's UV layout
        └── uv_mask.png                its coverage mask (8-bit, 255 = covered texel)

``camera_full_calibration.json`` follows the SIGMAN release (``core/dataset/camera_full_calibration.json``):
``{"0000": {"K": 3x3, "R": 3x3, "T": [3], "height": H, "width": W, "weight": W}, ...}``. ``R`` and ``T``
map world to camera coordinates, ``x_cam = R @ x_world + T``, OpenCV axes (+X right, +Y down, +Z
forward); ``K`` is in pixels of an ``H x W`` image, pixel ``(j, i)`` centred at ``(j + .5, i + .5)``.
The release spells the width ``"weight"``; sigman writes both keys and reads either.

The release stores its UV map as ``UV/smplxuv_albedo.png`` (a dilated SMPL-X texture, no mask). sigman
keeps the partial map and its mask apart, under layout-neutral names, because the layout is the one of
whichever body model made the item (anny items: anny's UV layout; see :mod:`sigman.uv`).

A *dataset* is a list of item folders saved as an index ``.npy``: a plain unicode string array (loaded
with ``allow_pickle=False``), each path relative to the index file's folder, so the folder can move.
``train.npy`` and ``val.npy`` are the split.
"""

from __future__ import annotations

import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from sigman.pose import PoseFileError, SMPLXPose, pose_from_arrays
from sigman.render.cameras import Camera

PathLike = Union[str, os.PathLike]

CAMERA_FILE = "camera_full_calibration.json"
POSE_FILE = "smplx.npz"
RGB_DIR = "rgb_map"
MASK_DIR = "mask_map"
UV_DIR = "UV"
UV_TEXTURE_FILE = "UV/uv_texture.png"
UV_MASK_FILE = "UV/uv_mask.png"
PHENOTYPE_KEY = "anny_phenotype"
TRAIN_INDEX, VAL_INDEX = "train.npy", "val.npy"
JPEG_QUALITY = 95


def view_name(i: int) -> str:
    """The key / file stem of view ``i``: ``"0007"``."""
    return f"{i:04d}"


def rgb_path(item: PathLike, name: str) -> Path:
    return Path(item) / RGB_DIR / f"{name}.jpg"


def mask_path(item: PathLike, name: str) -> Path:
    return Path(item) / MASK_DIR / f"{name}.png"


# --- cameras ---------------------------------------------------------------------------------

@dataclass
class Calibration:
    """The calibrated views of one item, in file order.

    Attributes:
        names: view keys (``"0000"`` ...), ``C`` of them.
        cameras: :class:`~sigman.render.Camera` with ``viewmats [C, 4, 4]`` and ``Ks [C, 3, 3]``.
    """

    names: list[str]
    cameras: Camera


def cameras_to_json(cameras: Camera, names: Optional[Sequence[str]] = None) -> dict:
    """The calibration dict of ``cameras`` (keys ``names`` or ``"0000"``, ``"0001"`` ...)."""
    names = [view_name(i) for i in range(len(cameras))] if names is None else list(names)
    if len(names) != len(cameras):
        raise ValueError(f"{len(names)} view names for {len(cameras)} cameras")
    vm = cameras.viewmats.detach().double().cpu()
    ks = cameras.Ks.detach().double().cpu()
    return {name: {"K": ks[i].tolist(), "R": vm[i, :3, :3].tolist(), "T": vm[i, :3, 3].tolist(),
                   "height": cameras.height, "width": cameras.width, "weight": cameras.width}
            for i, name in enumerate(names)}


def save_calibration(path: PathLike, cameras: Camera, names: Optional[Sequence[str]] = None) -> None:
    with open(path, "w") as f:
        json.dump(cameras_to_json(cameras, names), f, indent=1)


def _matrix(entry: dict, key: str, shape: tuple[int, ...], name: str) -> Tensor:
    if key not in entry:
        raise ValueError(f"view '{name}' has no '{key}'")
    value = np.asarray(entry[key], dtype=np.float64)
    if value.shape != shape or not np.isfinite(value).all():
        raise ValueError(f"view '{name}': '{key}' must be finite numbers of shape {shape}, got shape {value.shape}")
    return torch.from_numpy(value)


def calibration_from_json(data: object) -> Calibration:
    """Parse a calibration dict (see the module docstring). Raises ``ValueError`` naming the view."""
    if not isinstance(data, dict) or not data:
        raise ValueError("the calibration must be a non-empty JSON object of views")
    names = sorted(data)
    viewmats, ks, sizes = [], [], set()
    for name in names:
        entry = data[name]
        if not isinstance(entry, dict):
            raise ValueError(f"view '{name}' is not an object")
        k, r, t = _matrix(entry, "K", (3, 3), name), _matrix(entry, "R", (3, 3), name), _matrix(entry, "T", (3,), name)
        width = entry.get("width", entry.get("weight"))
        height = entry.get("height")
        if not isinstance(width, (int, float)) or not isinstance(height, (int, float)) or width <= 0 or height <= 0:
            raise ValueError(f"view '{name}' needs positive 'height' and 'width' (or 'weight')")
        if not torch.allclose(r @ r.T, torch.eye(3, dtype=r.dtype), atol=1e-4):
            raise ValueError(f"view '{name}': 'R' is not a rotation matrix")
        vm = torch.eye(4, dtype=torch.float64)
        vm[:3, :3], vm[:3, 3] = r, t
        viewmats.append(vm)
        ks.append(k)
        sizes.add((int(width), int(height)))
    if len(sizes) != 1:
        raise ValueError(f"all views must share one image size, found {sorted(sizes)}")
    (width, height), = sizes
    return Calibration(names, Camera(torch.stack(viewmats).float(), torch.stack(ks).float(), width, height))


def load_calibration(path: PathLike) -> Calibration:
    """Read ``camera_full_calibration.json`` (raises ``ValueError`` / ``OSError`` with the reason)."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{CAMERA_FILE} is not valid JSON ({err})") from err
    return calibration_from_json(data)


# --- pose + phenotype ---------------------------------------------------------------------------

def save_item_pose(path: PathLike, pose: SMPLXPose, phenotype: Optional[Tensor] = None) -> None:
    """Write ``smplx.npz``: the pose (one frame) and, for anny items, ``anny_phenotype (6,)``."""
    arrays = pose.to_npz_dict()
    if phenotype is not None:
        arrays[PHENOTYPE_KEY] = phenotype.detach().cpu().numpy().astype(np.float32).reshape(-1)
    np.savez(path, **arrays)


def load_item_pose(path: PathLike) -> tuple[SMPLXPose, Optional[Tensor]]:
    """Read ``smplx.npz``: the pose (frame axis of 1) and the anny phenotype ``[6]`` (``None`` if absent).

    Raises :class:`~sigman.pose.PoseFileError` (a ``ValueError``) for anything malformed.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise PoseFileError(f"{POSE_FILE} is not a readable .npz of plain arrays ({err.__class__.__name__}: {err})") from err
    phenotype = None
    if PHENOTYPE_KEY in arrays:
        p = np.asarray(arrays.pop(PHENOTYPE_KEY))
        if p.dtype.kind not in "fiu" or p.size != 6 or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise PoseFileError(f"{POSE_FILE}: '{PHENOTYPE_KEY}' must be 6 finite values in [0, 1], got shape {p.shape}")
        phenotype = torch.from_numpy(p.astype(np.float32).reshape(6))
    pose = pose_from_arrays(arrays)
    if pose.num_frames != 1:
        raise PoseFileError(f"{POSE_FILE} holds {pose.num_frames} frames; an item has one pose")
    return pose, phenotype


# --- images ----------------------------------------------------------------------------------

def encode_rgb(path: PathLike, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write ``image [H, W, 3]`` uint8 as a JPEG."""
    from PIL import Image

    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def encode_gray(path: PathLike, image: np.ndarray) -> None:
    """Write ``image [H, W]`` uint8 as a PNG (fast compression: masks compress well anyway)."""
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def read_rgb(path: PathLike, size: Optional[int] = None) -> Tensor:
    """An RGB image as ``[3, H, W]`` float in [0, 1]; with ``size``, resized (antialiased) to
    ``size x size`` (JPEG decoding then skips the resolution it does not need)."""
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            im.draft("RGB", (size, size))  # DCT-domain downscale by a power of two, never below size
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        arr = np.asarray(im)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def read_gray(path: PathLike, size: Optional[int] = None) -> Tensor:
    """A single-channel image as ``[1, H, W]`` float in [0, 1] (the first channel of a colour one)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit / float masks
            arr = np.asarray(im).astype(np.float32)
            arr = arr / (1.0 if im.mode == "F" else 65535.0)
            im = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
        elif im.mode in ("1", "L", "P", "PA"):
            im = im.convert("L")
        else:  # RGB(A), LA, ...: the first channel
            im = im.getchannel(0)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        arr = np.asarray(im)
    return torch.from_numpy(arr.copy())[None].float().div_(255.0)


def save_uv_maps(item: PathLike, texture: Tensor, mask: Tensor) -> None:
    """Write ``texture [3, R, R]`` (float in [0, 1]) and ``mask [1, R, R]`` to ``UV/``."""
    folder = Path(item) / UV_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tex = (texture.detach().float().clamp(0, 1) * mask.float() * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
    from PIL import Image

    Image.fromarray(tex).save(Path(item) / UV_TEXTURE_FILE, format="PNG", compress_level=1)
    encode_gray(Path(item) / UV_MASK_FILE, ((mask[0] > 0.5).byte() * 255).cpu().numpy())


def load_uv_maps(item: PathLike) -> tuple[Tensor, Tensor]:
    """``texture [3, R, R]`` in [0, 1] and ``mask [1, R, R]`` in {0, 1} of an item."""
    texture = read_rgb(Path(item) / UV_TEXTURE_FILE)
    mask = (read_gray(Path(item) / UV_MASK_FILE) > 0.5).float()
    if texture.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"{UV_MASK_FILE} is {tuple(mask.shape[-2:])} but {UV_TEXTURE_FILE} is {tuple(texture.shape[-2:])}")
    return texture, mask


# --- index -----------------------------------------------------------------------------------

def save_index(path: PathLike, items: Iterable[PathLike]) -> Path:
    """Save item folders as an index ``.npy`` (unicode strings, relative to the index's folder when
    the item lies below it, else absolute)."""
    path = Path(path)
    base = path.parent.resolve()
    entries = []
    for item in items:
        p = Path(item).resolve()
        try:
            entries.append(p.relative_to(base).as_posix())
        except ValueError:
            entries.append(p.as_posix())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(entries, dtype=np.str_), allow_pickle=False)
    return path


def load_index(path: PathLike) -> list[Path]:
    """Item folders of an index ``.npy`` (relative entries resolved against the index's folder).
    The release's absolute-path indices load too, as long as they hold plain strings."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"index {path} holds pickled objects; save it as a plain string array (sigman.data.save_index)") from err
    if arr.dtype.kind not in "US" or arr.ndim != 1:
        raise ValueError(f"index {path} must be a 1-D string array, got dtype {arr.dtype} shape {arr.shape}")
    base = path.parent
    out = []
    for entry in arr.tolist():
        entry = entry.decode() if isinstance(entry, bytes) else entry
        p = Path(entry)
        out.append(p if p.is_absolute() else base / p)
    return out


def split_items(items: Sequence[PathLike], val_fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """A reproducible random train/val split (at least one val item when ``val_fraction > 0`` and
    there are two or more items; ``1.0``: all of them, a held-out evaluation set)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    items = [Path(p) for p in items]
    n_val = int(round(len(items) * val_fraction))
    if val_fraction > 0 and len(items) >= 2:
        n_val = max(n_val, 1)
    order = np.random.default_rng(seed).permutation(len(items))
    val = set(order[:n_val].tolist())
    return [p for i, p in enumerate(items) if i not in val], [p for i, p in enumerate(items) if i in val]


def write_split(folder: PathLike, items: Sequence[PathLike], val_fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """Split ``items`` and save ``folder/train.npy`` and ``folder/val.npy``."""
    train, val = split_items(items, val_fraction, seed)
    folder = Path(folder)
    return save_index(folder / TRAIN_INDEX, train), save_index(folder / VAL_INDEX, val)


# --- validation ------------------------------------------------------------------------------

def _check_image(path: Path, size: tuple[int, int], deep: bool) -> Optional[str]:
    from PIL import Image

    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            if im.size != size:
                return f"is {im.size[0]}x{im.size[1]} but the calibration says {size[0]}x{size[1]}"
            if deep:
                im.load()
    except Exception as err:  # PIL raises many types for corrupt files
        return f"unreadable ({err.__class__.__name__}: {err})"
    return None


def validate_item(path: PathLike, deep: bool = False) -> list[str]:
    """Problems with one item folder (empty list: fine).

    Checks the calibration, the pose file, one RGB image and one mask per calibrated view (present,
    readable header, size matching the calibration) and the UV maps. ``deep=True`` also decodes every
    image fully (catches truncated image data; slower).
    """
    item = Path(path)
    if not item.is_dir():
        return [f"item folder does not exist: {item}"]
    problems: list[str] = []
    calibration = None
    try:
        calibration = load_calibration(item / CAMERA_FILE)
    except FileNotFoundError:
        problems.append(f"{CAMERA_FILE} missing")
    except (ValueError, OSError, UnicodeDecodeError) as err:
        problems.append(f"{CAMERA_FILE}: {err}")
    if not (item / POSE_FILE).is_file():
        problems.append(f"{POSE_FILE} missing")
    else:
        try:
            load_item_pose(item / POSE_FILE)
        except PoseFileError as err:
            problems.append(f"{POSE_FILE}: {err}")
    if calibration is not None:
        size = (calibration.cameras.width, calibration.cameras.height)
        for name in calibration.names:
            for rel, p in ((f"{RGB_DIR}/{name}.jpg", rgb_path(item, name)), (f"{MASK_DIR}/{name}.png", mask_path(item, name))):
                issue = _check_image(p, size, deep)
                if issue:
                    problems.append(f"{rel} {issue}")
    from PIL import Image

    sizes: dict[str, tuple[int, int]] = {}
    for rel in (UV_TEXTURE_FILE, UV_MASK_FILE):
        p = item / rel
        if not p.is_file():
            problems.append(f"{rel} missing")
            continue
        try:
            with Image.open(p) as im:
                sizes[rel] = im.size
                if deep:
                    im.load()
        except Exception as err:  # PIL raises many types for corrupt files
            problems.append(f"{rel} unreadable ({err.__class__.__name__}: {err})")
            continue
        if sizes[rel][0] != sizes[rel][1]:
            problems.append(f"{rel} must be square, is {sizes[rel][0]}x{sizes[rel][1]}")
    if len(sizes) == 2 and sizes[UV_TEXTURE_FILE] != sizes[UV_MASK_FILE]:
        problems.append(f"{UV_MASK_FILE} is {sizes[UV_MASK_FILE]} but {UV_TEXTURE_FILE} is {sizes[UV_TEXTURE_FILE]}")
    return problems


@dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`: ``good`` item folders and ``bad`` ones with their problems."""

    good: list[Path] = field(default_factory=list)
    bad: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self, max_items: int = 10) -> str:
        """One line per bad item (the first ``max_items``), after a count line."""
        lines = [f"{len(self.good)} good items, {len(self.bad)} bad"]
        for item, problems in list(self.bad.items())[:max_items]:
            shown = "; ".join(problems[:3]) + (f"; ... ({len(problems) - 3} more)" if len(problems) > 3 else "")
            lines.append(f"  {item}: {shown}")
        if len(self.bad) > max_items:
            lines.append(f"  ... and {len(self.bad) - max_items} more bad items")
        return "\n".join(lines)


def validate_dataset(index: Union[PathLike, Sequence[PathLike]], deep: bool = False, workers: int = 8) -> ValidationReport:
    """Validate every item of an index ``.npy`` (or a list of item folders), ``workers`` threads at once."""
    items = load_index(index) if isinstance(index, (str, os.PathLike)) else [Path(p) for p in index]
    report = ValidationReport()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for item, problems in zip(items, pool.map(lambda p: validate_item(p, deep), items)):
            if problems:
                report.bad[item] = problems
            else:
                report.good.append(item)
    return report
