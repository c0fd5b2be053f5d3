"""Pose sequences as users give them: presets or ``.npz`` files, read only as far as needed, and
the one rule that caps a motion's length. Shared by ``scripts/generate.py`` and the app.

* A **pose** (what the avatar is generated in) is one frame: :func:`load_pose_frame` takes the
  first frame of a sequence and reads only that frame from the file, however long it is.
* A **motion** (what ``motion.mp4`` shows) is a sequence of at least two frames:
  :func:`load_motion` keeps every ``k``-th frame so that at most ``max_frames`` remain, the frame
  rate divided by ``k`` (:func:`motion_plan`; a motion too long to show whole at
  ``MIN_MOTION_FPS`` keeps its beginning), reading only those frames. A single pose given as a
  motion is refused: it would make a still clip.

Limits: see :mod:`sigman.settings` (``MAX_POSE_FILE_FRAMES``, ``MAX_MOTION_FRAMES``, ...).

Files are read straight from the ``.npz`` (a zip of ``.npy`` arrays) with the array headers checked
first, so a 200,000-frame file costs a few kilobytes as a pose, and a zip of other files or a
renamed image is named for what it is. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch

from sigman.pose import _FRAME_KEYS, DEFAULT_FPS, MAX_POSE_FILE_BYTES, PoseFileError, SMPLXPose, pose_file_from_arrays
from sigman.presets import MOTION_PRESETS, POSE_PRESETS, resolve_pose
from sigman.settings import (  # noqa: F401 - the limits are re-exported here, beside the rule
    MAX_ARRAY_ELEMENTS, MAX_MOTION_FRAMES, MAX_MOTION_FRAMES_CPU, MAX_POSE_FILE_FRAMES, MIN_MOTION_FPS,
)


PoseSource = Union[str, Path, bytes, SMPLXPose]

# Keys sigman reads (every other array in a file is skipped unread) and their one-frame shapes.
_PER_FRAME = {name: shape for name, shape, _ in _FRAME_KEYS} | {"poses": None, "trans": (3,)}
_FIRST_ROW_ONLY = ("betas", "expression")  # shared by all frames: only the first row is used
_SCALARS = ("mocap_frame_rate", "mocap_framerate", "fps")
_WANTED = set(_PER_FRAME) | set(_FIRST_ROW_ONLY) | set(_SCALARS)

_MAGIC = (  # what a file that is not an .npz usually is
    (b"\x93NUMPY", "a single .npy array"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"),
    (b"\x80", "a Python pickle"), (b"BM", "a BMP image"),
)


# --- the motion rule -------------------------------------------------------------------------

def motion_frame_limit(device: Union[str, torch.device]) -> int:
    """How many frames a motion may render on ``device``."""
    return MAX_MOTION_FRAMES if torch.device(device).type == "cuda" else MAX_MOTION_FRAMES_CPU


def motion_plan(num_frames: int, fps: float, max_frames: int) -> tuple[int, int]:
    """``(stride, count)``: keep frames ``0, stride, 2·stride, ...`` (``count`` of them, at most
    ``max_frames``) of a motion of ``num_frames`` frames at ``fps``. The whole motion is spread over
    the frames kept, unless that would leave fewer than ``MIN_MOTION_FPS`` frames per second: then
    the clip shows the motion's beginning at ``MIN_MOTION_FPS`` or more."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    stride = max(1, math.ceil(num_frames / max_frames))
    stride = min(stride, max(1, math.floor(fps / MIN_MOTION_FPS + 1e-9)))
    return stride, min(math.ceil(num_frames / stride), max_frames)


def _plan_note(num_frames: int, fps: float, stride: int, count: int, max_frames: int) -> Optional[str]:
    if count == num_frames:
        return None
    every = "every frame" if stride == 1 else f"1 frame in {stride}"
    if count * stride < num_frames:
        return (f"the motion has {num_frames:,} frames ({num_frames / fps:.1f} s), over the {max_frames}-frame limit: "
                f"its first {count * stride / fps:.1f} s are kept, {every} ({count} frames at {fps / stride:.3g} fps)")
    return (f"the motion has {num_frames:,} frames, over the {max_frames}-frame limit: {every} is kept "
            f"({count} frames at {fps / stride:.3g} fps)")


def limit_motion(pose: SMPLXPose, max_frames: int) -> tuple[SMPLXPose, Optional[str]]:
    """``pose`` cut to at most ``max_frames`` frames by :func:`motion_plan` (the frame rate divided
    by the stride) and a note saying what was dropped (``None`` when nothing was)."""
    stride, count = motion_plan(pose.num_frames, pose.fps, max_frames)
    if count == pose.num_frames:
        return pose, None
    kept = dataclasses.replace(pose.frame(slice(0, count * stride, stride)), fps=pose.fps / stride)
    return kept, _plan_note(pose.num_frames, pose.fps, stride, count, max_frames)


def check_motion(pose: SMPLXPose, name: str) -> SMPLXPose:
    """Refuse a single pose as a motion (it would make a still clip)."""
    if pose.num_frames < 2:
        raise PoseFileError(f"{name} holds a single pose, not a sequence: use it as the pose, or give a motion "
                            f"preset ({', '.join(MOTION_PRESETS)}) or an SMPL-X / AMASS sequence as the motion")
    return pose


# --- names -----------------------------------------------------------------------------------

def preset_list() -> str:
    return f"poses: {', '.join(POSE_PRESETS)}; motions: {', '.join(MOTION_PRESETS)}"


def _source_path(source: Union[str, Path]) -> Optional[Path]:
    """``None`` for a preset name; the path otherwise. Raises for an unknown name or a missing file."""
    name = str(source)
    if isinstance(source, str) and (name in POSE_PRESETS or name in MOTION_PRESETS):
        return None
    path = Path(source)
    if path.is_file():
        return path
    if path.exists():
        raise PoseFileError(f"{name} is not a file: pass an SMPL-X / AMASS .npz or a preset ({preset_list()})")
    if isinstance(source, str) and not path.suffix and len(path.parts) == 1:
        raise PoseFileError(f"unknown pose preset {name!r}; the presets are {preset_list()} (or pass an .npz file)")
    raise PoseFileError(f"pose file not found: {name} (presets: {preset_list()})")


# --- reading .npz files frame by frame -------------------------------------------------------

def _what_it_is(head: bytes) -> str:
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    return "a text file" if text and all(c.isprintable() or c in "\r\n\t" for c in text) else "unknown binary data"


def _open_zip(handle: Union[Path, BinaryIO], name: str) -> zipfile.ZipFile:
    if isinstance(handle, Path):
        with handle.open("rb") as f:
            head = f.read(16)
    else:
        head = handle.read(16)
        handle.seek(0)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        fix = ("save it with numpy.savez(path, global_orient=..., body_pose=...)" if head.startswith(b"\x93NUMPY")
               else "pass an SMPL-X / AMASS .npz saved with numpy.savez")
        raise PoseFileError(f"{name} is {_what_it_is(head)}, not an .npz pose file: {fix}")
    try:
        return zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PoseFileError(f"{name} is not a readable .npz pose file ({err.__class__.__name__}); save SMPL-X "
                            "parameters with numpy.savez") from None


def _read_exact(stream: BinaryIO, count: int, name: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise PoseFileError(f"{name} is truncated; save it again with numpy.savez")
    return data


def _read_header(stream: BinaryIO, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            return fmt.read_array_header_1_0(stream)
        if version == (2, 0):
            return fmt.read_array_header_2_0(stream)
        return fmt._read_array_header(stream, version)  # noqa: SLF001 - format 3.0 has no public reader
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as err:
        raise PoseFileError(f"{name} is not a numpy array ({err.__class__.__name__}); save the pose with numpy.savez") from None


def _frame_count(shape: tuple[int, ...], key: str) -> Optional[int]:
    """Frames of the array that defines the frame axis (``None``: a malformed shape)."""
    if key == "poses":
        return 1 if len(shape) == 1 else (shape[0] if len(shape) == 2 else None)
    if shape in ((3,), (1, 3)):
        return 1
    return shape[0] if len(shape) >= 2 and math.prod(shape[1:]) == 3 else None


def _read_array(stream: BinaryIO, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, rows: Optional[range],
                what: str) -> np.ndarray:
    """The rows ``rows`` of a C-order array along its first axis (``None``: the whole array),
    reading the stream only up to the last row needed."""
    row_elements = math.prod(shape[1:]) if shape else 1
    count = math.prod(shape) if rows is None or fortran else len(rows) * row_elements
    if count > MAX_ARRAY_ELEMENTS:
        raise PoseFileError(f"{what} has shape {shape}, over {MAX_ARRAY_ELEMENTS:,} values: "
                            "pass a shorter sequence or a pose file of SMPL-X parameters")
    if rows is None or fortran:
        data = np.frombuffer(_read_exact(stream, math.prod(shape) * dtype.itemsize, what), dtype)
        array = data.reshape(shape, order="F" if fortran else "C")
        return array if rows is None else array[rows.start:rows.stop:rows.step]
    row_bytes = row_elements * dtype.itemsize
    out = np.empty((len(rows), *shape[1:]), dtype)
    chunk = max(1, (1 << 20) // max(row_bytes, 1))  # rows per read: about 1 MiB
    position = 0  # the next row in the stream
    for i, row in enumerate(rows):
        if row > position:  # skip to the row, a bounded chunk at a time
            while position < row:
                n = min(chunk, row - position)
                _read_exact(stream, n * row_bytes, what)
                position += n
        out[i] = np.frombuffer(_read_exact(stream, row_bytes, what), dtype).reshape(shape[1:])
        position += 1
    return out


def read_pose_file(source: Union[str, Path, bytes], first_only: bool = False,
                   max_frames: Optional[int] = None, up_axis: str = "auto") -> tuple[SMPLXPose, Optional[str]]:
    """Read a pose ``.npz`` (path or bytes): its first frame (``first_only``), every frame, or the
    frames :func:`motion_plan` keeps for ``max_frames``; a Z-up file is turned +Y up
    (:func:`~sigman.pose.pose_file_from_arrays`, ``up_axis``). Returns the pose and the note on what
    was dropped or turned (``None``: nothing). Raises :class:`PoseFileError` with a one-line message."""
    if isinstance(source, (bytes, bytearray)):
        handle: Union[Path, BinaryIO] = io.BytesIO(source)
        name = "<bytes>"
    else:
        handle, name = Path(source), str(source)
        if not handle.is_file():
            raise PoseFileError(f"pose file not found: {name}")
        if not first_only and handle.stat().st_size > MAX_POSE_FILE_BYTES:
            raise PoseFileError(f"pose file {name} is larger than {MAX_POSE_FILE_BYTES >> 20} MiB; pass a shorter sequence")
    with _open_zip(handle, name) as archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        if not members:
            others = ", ".join(info.filename for info in archive.infolist()[:4]) or "nothing"
            raise PoseFileError(f"{name} is a zip archive of other files ({others}), not an .npz of numpy arrays: "
                                "save SMPL-X parameters with numpy.savez")
        try:
            return _read_members(archive, members, name, first_only, max_frames, up_axis)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise PoseFileError(f"{name} is a corrupt .npz ({err.__class__.__name__}); save it again with numpy.savez") from None


def _file_fps(arrays: dict[str, np.ndarray]) -> float:
    """The frame rate :func:`~sigman.pose.pose_from_arrays` will read (it checks the values)."""
    fps = DEFAULT_FPS
    for key in _SCALARS:
        if key in arrays:
            try:
                fps = float(np.asarray(arrays[key], dtype=np.float64).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                return DEFAULT_FPS
    return fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS


def _read_members(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str, first_only: bool,
                  max_frames: Optional[int], up_axis: str = "auto") -> tuple[SMPLXPose, Optional[str]]:
    headers = {}
    for key in sorted(_WANTED & set(members)):
        with archive.open(members[key]) as stream:
            headers[key] = _read_header(stream, f"{name}: '{key}'")
        if headers[key][2].hasobject:
            raise PoseFileError(f"{name} holds pickled object arrays, which are never loaded; save plain float "
                                "arrays with numpy.savez")

    def read(key: str, rows: Optional[range]) -> np.ndarray:
        shape, fortran, dtype = headers[key]
        with archive.open(members[key]) as stream:
            _read_header(stream, key)
            return _read_array(stream, shape, fortran, dtype, rows, f"{name}: pose key '{key}'")

    arrays = {key: read(key, None) for key in _SCALARS if key in headers}
    frame_key = "global_orient" if "global_orient" in headers else "poses" if "poses" in headers else None
    frames = _frame_count(headers[frame_key][0], frame_key) if frame_key else None
    if frames is not None and frames > MAX_POSE_FILE_FRAMES and not first_only:
        raise PoseFileError(f"{name} holds {frames:,} frames, over the limit of {MAX_POSE_FILE_FRAMES:,}: "
                            "pass a shorter sequence")
    fps = _file_fps(arrays)
    stride, count = 1, frames or 0
    if first_only:
        count = 1
    elif frames is not None and max_frames is not None:
        stride, count = motion_plan(frames, fps, max_frames)
    wanted = range(0, min(count * stride, frames or 0), stride) if frames else range(0)
    for key, (shape, _, _) in headers.items():
        if key in arrays:
            continue
        per_frame = frames is not None and frames > 1 and len(shape) >= 2 and shape[0] == frames
        if key in _PER_FRAME and per_frame and shape != _PER_FRAME[key]:
            arrays[key] = read(key, wanted)
        elif key in _FIRST_ROW_ONLY and len(shape) == 2 and shape[0] > 1:
            arrays[key] = read(key, range(0, 1))
        else:
            arrays[key] = read(key, None)
    pose_file = pose_file_from_arrays(arrays, up_axis)
    pose = pose_file.pose
    if stride > 1:
        pose = dataclasses.replace(pose, fps=pose.fps / stride)
    notes = [n for n in (pose_file.note, None if first_only or frames is None else
                         _plan_note(frames, fps, stride, pose.num_frames, max_frames or frames)) if n]
    return pose, "; ".join(notes) or None


# --- poses and motions -----------------------------------------------------------------------

def read_pose_frame(source: PoseSource, up_axis: str = "auto") -> tuple[SMPLXPose, Optional[str]]:
    """The one-frame pose to generate in: a preset, an :class:`SMPLXPose`, or the first frame of an
    ``.npz`` (path or bytes; the other frames are never read), and the note on its frame (a Z-up
    file is turned +Y up) or ``None``."""
    if isinstance(source, SMPLXPose):
        return source.frame(0), None
    if isinstance(source, (bytes, bytearray)):
        pose, note = read_pose_file(source, first_only=True, up_axis=up_axis)
        return pose.frame(0), note
    path = _source_path(source)
    if path is None:
        return resolve_pose(str(source)).frame(0), None
    pose, note = read_pose_file(path, first_only=True, up_axis=up_axis)
    return pose.frame(0), note


def load_pose_frame(source: PoseSource, up_axis: str = "auto") -> SMPLXPose:
    """:func:`read_pose_frame` without the note."""
    return read_pose_frame(source, up_axis)[0]


def load_motion(source: PoseSource, max_frames: int = MAX_MOTION_FRAMES,
                up_axis: str = "auto") -> tuple[SMPLXPose, Optional[str]]:
    """A motion of at most ``max_frames`` frames (:func:`motion_plan`'s rule; only the kept frames
    are read from a file) and the note saying what was dropped (or ``None``). A single pose is
    refused (:func:`check_motion`)."""
    if isinstance(source, SMPLXPose):
        return limit_motion(check_motion(source, "the motion"), max_frames)
    if isinstance(source, (bytes, bytearray)):
        path, name = None, "<bytes>"
    else:
        path, name = _source_path(source), str(source)
        if path is None:
            return limit_motion(check_motion(resolve_pose(name), f"{name!r}"), max_frames)
    pose, note = read_pose_file(source if path is None else path, max_frames=max_frames, up_axis=up_axis)
    return check_motion(pose, name), note
