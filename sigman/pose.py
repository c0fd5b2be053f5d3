"""SMPL-X pose parameters: the one pose representation every body model in sigman accepts.

A pose file is an ``.npz`` in the SMPL-X convention the SIGMAN seed uses (single frame or a
sequence of frames), or an AMASS-style sequence with a flat ``poses`` array. Files are loaded with
``allow_pickle=False``: a pose file can never execute code.

Keys (per frame; a sequence adds a leading frame axis ``T``):

==================  ==========  =====================================================
key                 shape       meaning
==================  ==========  =====================================================
``global_orient``   ``(3,)``    root rotation, axis-angle
``body_pose``       ``(21, 3)`` body joints 1..21 (or flat ``(63,)``)
``jaw_pose``        ``(3,)``    optional
``leye_pose``       ``(3,)``    optional
``reye_pose``       ``(3,)``    optional
``left_hand_pose``  ``(15, 3)`` optional (or flat ``(45,)``)
``right_hand_pose`` ``(15, 3)`` optional (or flat ``(45,)``)
``transl``          ``(3,)``    optional root translation (metres)
``betas``           ``(K,)``    optional SMPL-X shape, shared by all frames
``expression``      ``(E,)``    optional
``poses``           ``(T, 165)`` AMASS SMPL-X (55 joints) or ``(T, 156)`` SMPL+H (52 joints)
``trans``           ``(T, 3)``  AMASS translation
``mocap_frame_rate`` scalar     AMASS frame rate (also ``fps``)
``up_axis``         scalar str  optional ``"y"`` or ``"z"``: the file's up axis (sigman writes ``"y"``)
==================  ==========  =====================================================

Up axis. sigman's world is +Y up (SMPL-X's own frame). Many files are Z-up: AMASS by
convention, and poses exported from Z-up tools (SIGMAN's own demo pose has a root rotation of about
117 degrees about (1, 1, 1)). :func:`load_pose_file` finds the file's up axis (``up_axis="auto"``):
the ``up_axis`` key when the file declares one; else the posed torso (the pelvis -> head direction
through the spine, averaged over the frames) when it points clearly along +Y or +Z; else the
file's convention (AMASS: Z). A Z-up pose is rotated into +Y up (-90 degrees about X, applied to
the root rotation and the translation) and :attr:`PoseFile.note` says so; ``up_axis="y"`` or
``"z"`` overrides the detection.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np
import roma
import torch
from torch import Tensor

# SMPL-X joint order (55 joints) and the kinematic tree.
SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2",
    "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2",
    "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)
NUM_SMPLX_JOINTS = 55
DEFAULT_FPS = 30.0

# Per-frame keys: (name, shape per frame, required).
_FRAME_KEYS: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("global_orient", (3,), True),
    ("body_pose", (21, 3), True),
    ("jaw_pose", (3,), False),
    ("leye_pose", (3,), False),
    ("reye_pose", (3,), False),
    ("left_hand_pose", (15, 3), False),
    ("right_hand_pose", (15, 3), False),
    ("transl", (3,), False),
)
MAX_POSE_FILE_BYTES = 512 * 1024 * 1024
UP_AXES = ("auto", "y", "z")
# -90 degrees about X: +Z -> +Y, +Y -> -Z (a Z-up pose into sigman's +Y-up world)
Z_UP_TO_Y_UP = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
SPINE_CHAIN = (0, 3, 6, 9, 12)  # pelvis, spine1..3, neck: the parents of the bones up to the head
UP_DETECTION_MIN = 0.5  # cosine: the torso must point at least this much along an axis to decide


class PoseFileError(ValueError):
    """A pose file or pose array is malformed. The message names the key and the expected shape."""


@dataclass
class SMPLXPose:
    """A batch of ``T`` SMPL-X poses (axis-angle, radians; metres). All tensors float32."""

    global_orient: Tensor  # [T, 3]
    body_pose: Tensor  # [T, 21, 3]
    jaw_pose: Tensor  # [T, 3]
    leye_pose: Tensor  # [T, 3]
    reye_pose: Tensor  # [T, 3]
    left_hand_pose: Tensor  # [T, 15, 3]
    right_hand_pose: Tensor  # [T, 15, 3]
    transl: Tensor  # [T, 3]
    betas: Tensor  # [K] shared by all frames
    expression: Tensor  # [E]
    fps: float = DEFAULT_FPS

    @property
    def num_frames(self) -> int:
        return self.global_orient.shape[0]

    @staticmethod
    def zeros(num_frames: int = 1, num_betas: int = 10) -> "SMPLXPose":
        """The SMPL-X zero pose (a T-pose) for ``num_frames`` frames."""
        z = lambda *s: torch.zeros(num_frames, *s)
        return SMPLXPose(z(3), z(21, 3), z(3), z(3), z(3), z(15, 3), z(15, 3), z(3),
                         torch.zeros(num_betas), torch.zeros(10))

    def full_pose(self) -> Tensor:
        """Axis-angle of all 55 joints in SMPL-X order: ``[T, 55, 3]``."""
        return torch.cat([
            self.global_orient[:, None], self.body_pose, self.jaw_pose[:, None],
            self.leye_pose[:, None], self.reye_pose[:, None], self.left_hand_pose,
            self.right_hand_pose,
        ], dim=1)

    @staticmethod
    def from_full_pose(full_pose: Tensor, transl: Optional[Tensor] = None,
                       betas: Optional[Tensor] = None, fps: float = DEFAULT_FPS) -> "SMPLXPose":
        """Inverse of :meth:`full_pose`: ``full_pose [T, 55, 3]``."""
        fp = full_pose.float()
        t = fp.shape[0]
        return SMPLXPose(
            global_orient=fp[:, 0], body_pose=fp[:, 1:22], jaw_pose=fp[:, 22],
            leye_pose=fp[:, 23], reye_pose=fp[:, 24], left_hand_pose=fp[:, 25:40],
            right_hand_pose=fp[:, 40:55],
            transl=torch.zeros(t, 3) if transl is None else transl.float().reshape(t, 3),
            betas=torch.zeros(10) if betas is None else betas.float(),
            expression=torch.zeros(10), fps=fps,
        )

    def local_rotmats(self) -> Tensor:
        """Local joint rotations (each relative to its parent, world-aligned rest frames):
        ``[T, 55, 3, 3]``."""
        return roma.rotvec_to_rotmat(self.full_pose())

    def global_rotmats(self) -> Tensor:
        """Accumulated world rotations of the 55 SMPL-X joints: ``[T, 55, 3, 3]``."""
        from sigman.lbs import chain_products

        local = self.local_rotmats()
        return chain_products(local, torch.tensor(SMPLX_PARENTS, device=local.device))

    def frame(self, index: Union[int, slice]) -> "SMPLXPose":
        """A sub-sequence (``int`` keeps a frame axis of length 1)."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        per_frame = {f.name: getattr(self, f.name)[sl] for f in fields(self)
                     if f.name not in ("betas", "expression", "fps")}
        return SMPLXPose(**per_frame, betas=self.betas, expression=self.expression, fps=self.fps)

    def to(self, *args, **kwargs) -> "SMPLXPose":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SMPLXPose(**{k: (v.to(*args, **kwargs) if isinstance(v, Tensor) else v)
                            for k, v in values.items()})

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """Arrays in the seed's SMPL-X ``.npz`` layout (a leading frame axis)."""
        out = {f.name: getattr(self, f.name).detach().cpu().numpy().astype(np.float32)
               for f in fields(self) if f.name != "fps"}
        out["fps"] = np.asarray(self.fps, dtype=np.float32)
        return out


def save_pose(path: Union[str, Path], pose: SMPLXPose) -> None:
    """Write ``pose`` as an SMPL-X ``.npz`` of plain arrays (read back by :func:`load_pose` with
    ``allow_pickle=False``), declaring its frame (``up_axis = "y"``), with its frame rate as ``fps``
    and AMASS's ``mocap_frame_rate``. The file is written to a temporary name beside ``path`` and
    renamed: never half-written."""
    from sigman.atomic import atomic_savez

    arrays = pose.to_npz_dict()
    arrays["mocap_frame_rate"] = arrays["fps"]
    arrays["up_axis"] = np.asarray("y")
    atomic_savez(path, arrays)


@dataclass
class PoseFile:
    """A loaded pose and what was done to its frame."""

    pose: SMPLXPose  # in sigman's +Y-up world
    up_axis: str  # the file's up axis: "y" or "z"
    reason: str  # how it was decided: "override", "declared", "detected", "convention", "default"
    converted: bool  # the pose was rotated from Z up to Y up
    note: str  # one line for the user ("" when nothing needed saying)


def torso_up(pose: SMPLXPose) -> Tensor:
    """Unit direction from the pelvis up the spine to the head, ``[T, 3]`` (each spine bone taken
    as +Y at rest, as in SMPL-X's rest pose, turned by its parent's world rotation)."""
    rot = pose.global_rotmats()[:, list(SPINE_CHAIN)]  # [T, 5, 3, 3]
    up = rot[..., :, 1].sum(dim=1)  # sum of R @ (0, 1, 0)
    return up / up.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def detect_up_axis(pose: SMPLXPose) -> tuple[Optional[str], Tensor]:
    """``("y" | "z" | None, mean torso direction [3])``: the axis the posed torso points along
    (None when it points along neither clearly, e.g. a pose lying on its side)."""
    up = torso_up(pose).mean(dim=0)
    up = up / up.norm().clamp_min(1e-9)
    if float(up[1]) >= UP_DETECTION_MIN:
        return "y", up
    if float(up[2]) >= UP_DETECTION_MIN:
        return "z", up
    return None, up


def z_up_to_y_up(pose: SMPLXPose) -> SMPLXPose:
    """The pose rotated from a Z-up world into sigman's +Y-up world (root rotation and
    translation; the body joints are relative and stay)."""
    fix = torch.tensor(Z_UP_TO_Y_UP, dtype=pose.global_orient.dtype)
    root = fix @ roma.rotvec_to_rotmat(pose.global_orient)
    return SMPLXPose(global_orient=roma.rotmat_to_rotvec(root), body_pose=pose.body_pose, jaw_pose=pose.jaw_pose,
                     leye_pose=pose.leye_pose, reye_pose=pose.reye_pose, left_hand_pose=pose.left_hand_pose,
                     right_hand_pose=pose.right_hand_pose, transl=pose.transl @ fix.T, betas=pose.betas,
                     expression=pose.expression, fps=pose.fps)


def _declared_up_axis(arrays: dict) -> Optional[str]:
    if "up_axis" not in arrays:
        return None
    value = str(np.asarray(arrays["up_axis"]).reshape(-1)[0]).strip().lower() if np.asarray(arrays["up_axis"]).size else ""
    if value not in ("y", "z"):
        raise PoseFileError(f"pose key 'up_axis' is {value!r}; expected 'y' or 'z'")
    return value


def pose_file_from_arrays(arrays: dict[str, np.ndarray], up_axis: str = "auto") -> PoseFile:
    """:func:`pose_from_arrays` plus the up-axis handling described in the module docstring."""
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    pose = pose_from_arrays(arrays)
    if up_axis != "auto":
        axis, reason = up_axis, "override"
    elif (declared := _declared_up_axis(arrays)) is not None:
        axis, reason = declared, "declared"
    else:
        detected, _ = detect_up_axis(pose)
        amass = "poses" in arrays and "global_orient" not in arrays
        axis, reason = (detected, "detected") if detected else (("z", "convention") if amass else ("y", "default"))
    if axis == "y":
        return PoseFile(pose, "y", reason, False, "")
    how = {"override": "as requested (up_axis='z')", "declared": "as the file declares",
           "detected": "detected: its pelvis-to-head direction points along +Z",
           "convention": "by the AMASS convention"}[reason]
    note = (f"the pose file is Z-up ({how}); rotated into sigman's +Y-up frame"
            + ("" if reason == "override" else "; to keep it as it is, pass up_axis='y' (CLI: --up-axis y)"))
    return PoseFile(z_up_to_y_up(pose), "z", reason, True, note)


def _check_array(key: str, value: np.ndarray, expected: str) -> np.ndarray:
    if value.dtype == object or not (np.issubdtype(value.dtype, np.floating)
                                     or np.issubdtype(value.dtype, np.integer)):
        raise PoseFileError(f"pose key '{key}' has dtype {value.dtype}; expected a float array of shape {expected}")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise PoseFileError(f"pose key '{key}' contains NaN or Inf; expected finite values of shape {expected}")
    return value


def _frames(key: str, value: np.ndarray, shape: tuple[int, ...], num_frames: Optional[int]) -> np.ndarray:
    """Reshape one per-frame key to ``[T, *shape]``; accept flat and single-frame layouts."""
    size = int(np.prod(shape))
    expected = f"{shape} or (T, {', '.join(map(str, shape))})"
    value = _check_array(key, value, expected)
    if value.ndim == 0 or value.size % size != 0:
        raise PoseFileError(f"pose key '{key}' has shape {value.shape}; expected {expected}")
    if value.shape == shape or value.shape == (size,) or value.shape == (1, size):
        value = value.reshape(1, *shape)
    elif value.ndim >= 2 and value[0].size == size:
        value = value.reshape(value.shape[0], *shape)
    else:
        raise PoseFileError(f"pose key '{key}' has shape {value.shape}; expected {expected}")
    if num_frames is not None and value.shape[0] not in (1, num_frames):
        raise PoseFileError(f"pose key '{key}' has {value.shape[0]} frames but 'global_orient' has {num_frames}")
    return value


def pose_from_arrays(arrays: dict[str, np.ndarray]) -> SMPLXPose:
    """Validate a dict of arrays (SMPL-X layout or AMASS layout) and build a :class:`SMPLXPose`."""
    fps = DEFAULT_FPS
    for key in ("mocap_frame_rate", "mocap_framerate", "fps"):
        if key in arrays:
            rate = _check_array(key, np.asarray(arrays[key]), "a scalar").reshape(-1)
            if rate.size != 1 or rate[0] <= 0:
                raise PoseFileError(f"pose key '{key}' must be one positive number, got shape {rate.shape}")
            fps = float(rate[0])
    betas = np.zeros(10, np.float32)
    if "betas" in arrays:
        b = _check_array("betas", np.asarray(arrays["betas"]), "(K,) or (T, K)")
        if b.ndim == 2:
            b = b[0]
        if b.ndim != 1:
            raise PoseFileError(f"pose key 'betas' has shape {b.shape}; expected (K,) or (T, K)")
        betas = b
    expression = np.zeros(10, np.float32)
    if "expression" in arrays:
        e = _check_array("expression", np.asarray(arrays["expression"]), "(E,) or (T, E)")
        expression = e[0] if e.ndim == 2 else e.reshape(-1)

    if "poses" in arrays and "global_orient" not in arrays:
        poses = _check_array("poses", np.asarray(arrays["poses"]), "(T, 165) or (T, 156)")
        if poses.ndim == 1:
            poses = poses[None]
        if poses.ndim != 2 or poses.shape[1] not in (165, 156):
            raise PoseFileError(f"pose key 'poses' has shape {poses.shape}; expected (T, 165) (SMPL-X) or (T, 156) (SMPL+H)")
        t = poses.shape[0]
        full = np.zeros((t, NUM_SMPLX_JOINTS, 3), np.float32)
        if poses.shape[1] == 165:
            full[:] = poses.reshape(t, 55, 3)
        else:  # SMPL+H: 22 body joints then 15 + 15 hand joints, no jaw/eyes
            p = poses.reshape(t, 52, 3)
            full[:, :22] = p[:, :22]
            full[:, 25:55] = p[:, 22:52]
        transl = None
        if "trans" in arrays:
            transl = torch.from_numpy(_frames("trans", np.asarray(arrays["trans"]), (3,), t)).expand(t, 3)
        return SMPLXPose.from_full_pose(torch.from_numpy(full), transl, torch.from_numpy(betas), fps)

    for key, _, required in _FRAME_KEYS:
        if required and key not in arrays:
            raise PoseFileError(
                f"pose is missing key '{key}'; expected SMPL-X keys "
                "(global_orient (3,), body_pose (21,3), ...) or an AMASS 'poses' array")
    go = _frames("global_orient", np.asarray(arrays["global_orient"]), (3,), None)
    t = go.shape[0]
    values: dict[str, Tensor] = {}
    for key, shape, _ in _FRAME_KEYS:
        if key in arrays:
            v = _frames(key, np.asarray(arrays[key]), shape, t)
            values[key] = torch.from_numpy(np.broadcast_to(v, (t, *shape)).copy())
        else:
            values[key] = torch.zeros(t, *shape)
    return SMPLXPose(**values, betas=torch.from_numpy(betas), expression=torch.from_numpy(expression), fps=fps)


def load_pose(source: Union[str, Path, bytes, dict], up_axis: str = "auto") -> SMPLXPose:
    """Load an SMPL-X or AMASS pose ``.npz`` (path, raw bytes or a dict of arrays) into sigman's
    +Y-up world (see :func:`load_pose_file`, which also says what was done).

    Raises :class:`PoseFileError` with a one-line message for anything malformed.
    """
    return load_pose_file(source, up_axis).pose


def load_pose_file(source: Union[str, Path, bytes, dict], up_axis: str = "auto") -> PoseFile:
    """Load a pose ``.npz`` and bring it into +Y up: ``up_axis`` ``"auto"`` (declared, detected,
    else the file's convention), ``"y"`` (keep as is) or ``"z"`` (rotate from Z up)."""
    if isinstance(source, dict):
        return pose_file_from_arrays(source, up_axis)
    if isinstance(source, (bytes, bytearray)):
        handle: Union[io.BytesIO, Path] = io.BytesIO(source)
        name = "<bytes>"
    else:
        handle = Path(source)
        name = str(source)
        if not handle.is_file():
            raise PoseFileError(f"pose file not found: {name}")
        if handle.stat().st_size > MAX_POSE_FILE_BYTES:
            raise PoseFileError(f"pose file {name} is larger than {MAX_POSE_FILE_BYTES >> 20} MiB; pass a shorter sequence")
    try:
        data = np.load(handle, allow_pickle=False)
    except ValueError as err:  # not npz/npy: numpy would need pickle, which is refused
        raise PoseFileError(f"{name} is not an .npz of plain arrays (pickled or unknown content is never loaded); save SMPL-X parameters with numpy.savez") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise PoseFileError(f"{name} is not a readable .npz pose file ({err.__class__.__name__}); save SMPL-X parameters with numpy.savez") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise PoseFileError(f"{name} is a single .npy array, not an .npz with named SMPL-X keys; save with numpy.savez(global_orient=..., body_pose=...)")
    try:
        arrays = {k: data[k] for k in data.files}
    except ValueError as err:
        raise PoseFileError(f"{name} holds pickled object arrays, which are never loaded; save plain float arrays with numpy.savez") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise PoseFileError(f"{name} is a corrupt .npz ({err.__class__.__name__}); save it again with numpy.savez") from err
    finally:
        data.close()
    return pose_file_from_arrays(arrays, up_axis)
