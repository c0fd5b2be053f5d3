"""SMPL-X as a sigman :class:`BodyModel`, from the licensed files the user supplies.

The SMPL-X model files cannot be redistributed, so sigman never ships or downloads them: put
``SMPLX_NEUTRAL.npz`` (optionally ``SMPLX_MALE`` / ``SMPLX_FEMALE``, ``.npz`` or ``.pkl``) and the
UV layout ``smplx_uv.obj`` in :func:`sigman.paths.smplx_model_dir` (``SIGMAN_SMPLX_DIR``, default
``assets/body_models/smplx/``) or pass ``model_path``. ``assets/body_models/smplx/README.md`` says
where to get them.

Loading:

* ``.npz`` files are read by sigman with ``numpy.load(..., allow_pickle=False)``; only the plain
  arrays the model needs are touched (the official files also carry pickled dicts such as
  ``joint2num``; they are never loaded).
* ``.pkl`` files are pickles. sigman never unpickles anything itself: a ``.pkl`` is loaded by the
  ``smplx`` package (``smplx.SMPLX(..., ext="pkl")``), only when the user chose to supply one and
  no ``.npz`` of the same gender is there. Prefer the ``.npz`` files.
* UVs come from ``smplx_uv.obj`` beside the model file (its ``vt`` lines and the texture indices
  of its ``f`` lines; the faces must be the model's faces), else from the ``vt`` / ``ft`` arrays
  that some model ``.npz`` files carry.

The kinematics are exactly those of the ``smplx`` package (``smplx.lbs.lbs``): shape blend shapes
(betas), joints regressed from the shaped template, pose blend shapes from the local rotations of
joints 1..54 (``posedirs``), linear blend skinning with the model's weights, then ``transl``. The
tests check ``forward`` against ``smplx.SMPLX`` on random models, poses and shapes.

Hands: sigman's SMPL-X poses hold full 15-joint axis-angle hand rotations (the seed's ``.npz``
layout, AMASS), which SIGMAN's reference evaluates with ``flat_hand_mean=True``
(``core/modules/deformers/smplx_deformer.py``, ``body_model_45``), i.e. a zero hand pose is the
flat open hand. That is the default here. ``flat_hand_mean=False`` adds the model's mean hand pose
(``hands_meanl`` / ``hands_meanr``) to the given hand rotations, as ``smplx`` does.

Expression: ``pose.expression`` adds SMPL-X's expression blend shapes to the canonical vertices
(:meth:`SMPLXBody.pose_correctives`). Joints are regressed from the neutral-expression body
(:meth:`SMPLXBody.rest`), so every pose of a subject shares one joint set; the ``smplx`` package
also lets the expression move the regressed joints (the jaw and eyes by well under a millimetre on
the real model). With a zero expression the two agree exactly.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.paths import smplx_model_dir
from sigman.pose import NUM_SMPLX_JOINTS, SMPLX_JOINT_NAMES, SMPLX_PARENTS, SMPLXPose

SMPLX_URL = "https://smpl-x.is.tue.mpg.de/"
SMPLX_UV_URL = "https://download.is.tue.mpg.de/download.php?domain=smplx&sfile=smplx_uv.zip"
SMPLX_UV_FILE = "smplx_uv.obj"
SMPLX_DIR_ENV = "SIGMAN_SMPLX_DIR"
GENDERS = ("neutral", "male", "female")
NUM_HAND_JOINTS = 15
NUM_POSE_BASIS = (NUM_SMPLX_JOINTS - 1) * 9  # 486: (R - I) of joints 1..54
# Shape-space layouts of the official files: (total components, shape, expression).
SHAPE_LAYOUTS = ((400, 300, 100), (20, 10, 10))  # v1.1 (2020), v1.0 (2019)
REQUIRED_NPZ_KEYS = ("v_template", "f", "J_regressor", "kintree_table", "weights", "posedirs",
                     "shapedirs")
HAND_MEAN_KEYS = ("hands_meanl", "hands_meanr")


class BodyModelFilesMissing(FileNotFoundError):
    """The licensed body-model files are not where sigman looks for them (one-line message naming
    the expected path, the environment variable and where to get the files)."""


class BodyModelFileError(ValueError):
    """A body-model file exists but is not what it should be (wrong format, missing key, wrong
    shape). The message names the file and the problem."""


@dataclass
class SMPLXArrays:
    """The plain arrays of one SMPL-X model, in ``smplx``'s buffer layout."""

    v_template: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int64
    J_regressor: np.ndarray  # [J, V] float32
    parents: np.ndarray  # [J] int64, -1 for the root
    weights: np.ndarray  # [V, J] float32
    shapedirs: np.ndarray  # [V, 3, S] float32, the betas used
    exprdirs: np.ndarray  # [V, 3, E] float32, the expression components used
    posedirs: np.ndarray  # [486, V * 3] float32
    hands_mean: np.ndarray  # [2, 45] float32 (left, right)
    vt: Optional[np.ndarray] = None  # [T, 2] float32, when the file carries UVs
    ft: Optional[np.ndarray] = None  # [F, 3] int64


# ----------------------------------------------------------------------------------------------
# Finding the files


def _missing(what: str, expected: Path, url: str) -> BodyModelFilesMissing:
    return BodyModelFilesMissing(
        f"{what} not found: expected {expected}; put the licensed file there (or set "
        f"{SMPLX_DIR_ENV} / pass model_path), get it from {url} "
        "(see assets/body_models/smplx/README.md)")


def find_smplx_file(model_path: Union[str, Path, None] = None, gender: str = "neutral") -> Path:
    """The SMPL-X model file to load: ``model_path`` itself when it is a file, else
    ``SMPLX_<GENDER>.npz`` (preferred) or ``.pkl`` in ``model_path`` (default
    :func:`~sigman.paths.smplx_model_dir`). Raises :class:`BodyModelFilesMissing`."""
    if gender not in GENDERS:
        raise ValueError(f"unknown SMPL-X gender '{gender}'; choose one of {GENDERS}")
    path = smplx_model_dir() if model_path is None else Path(model_path)
    if path.is_file():
        return path
    if path.suffix in (".npz", ".pkl"):
        raise _missing("SMPL-X model file", path, SMPLX_URL)
    stem = f"SMPLX_{gender.upper()}"
    for ext in (".npz", ".pkl"):
        if (path / f"{stem}{ext}").is_file():
            return path / f"{stem}{ext}"
    raise _missing(f"SMPL-X model file {stem}.npz (or .pkl)", path / f"{stem}.npz", SMPLX_URL)


# ----------------------------------------------------------------------------------------------
# Reading the model


def shape_space_split(total: int, num_betas: int, num_expression: int, name: str) -> tuple[slice, slice]:
    """Which ``shapedirs`` components are betas and which are expressions, as ``smplx`` reads
    them: 300 + 100 in the 400-component files, 10 + 10 in the 20-component ones."""
    for size, shape_max, expr_max in SHAPE_LAYOUTS:
        if total >= size:
            if not 0 < num_betas <= shape_max:
                raise ValueError(f"num_betas={num_betas} but {name} has {shape_max} shape components; choose 1..{shape_max}")
            if not 0 <= num_expression <= expr_max:
                raise ValueError(f"num_expression={num_expression} but {name} has {expr_max} expression components; choose 0..{expr_max}")
            return slice(0, num_betas), slice(shape_max, shape_max + num_expression)
    raise BodyModelFileError(f"{name}: shapedirs has {total} components; an SMPL-X model has 20 (10 shape + 10 expression) or 400 (300 + 100)")


def _npz_array(data: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    if key not in data.files:
        raise BodyModelFileError(f"{name} has no '{key}' array; it is not an SMPL-X model file (expected keys {', '.join(REQUIRED_NPZ_KEYS)})")
    try:
        value = data[key]
    except ValueError as err:  # an object array: it would need pickle, which is refused
        raise BodyModelFileError(f"{name}: '{key}' is a pickled object array, which sigman never loads; expected a plain numeric array") from err
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        raise BodyModelFileError(f"{name}: '{key}' has dtype {value.dtype}; expected a numeric array")
    return value


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays an SMPL-X ``.npz`` needs, loaded without pickle."""
    name = path.name
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise BodyModelFileError(f"{path} is not an .npz archive of plain arrays (pickled content is never loaded); use the official SMPLX_*.npz files from {SMPLX_URL}") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise BodyModelFileError(f"{path} is not a readable .npz file ({err.__class__.__name__}); download the SMPL-X .npz files again from {SMPLX_URL}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise BodyModelFileError(f"{path} is a single .npy array, not an SMPL-X .npz model file")
    try:
        keys = REQUIRED_NPZ_KEYS + tuple(k for k in HAND_MEAN_KEYS + ("vt", "ft") if k in data.files)
        return {k: _npz_array(data, k, name) for k in keys}
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise BodyModelFileError(f"{path} is a corrupt .npz ({err.__class__.__name__}); download it again from {SMPLX_URL}") from err
    finally:
        data.close()


def _arrays_from_npz(path: Path, num_betas: int, num_expression: int) -> SMPLXArrays:
    raw = _read_npz(path)
    name = path.name
    if raw["v_template"].ndim != 2 or raw["v_template"].shape[1] != 3:
        raise BodyModelFileError(f"{name}: 'v_template' has shape {raw['v_template'].shape}; expected [V, 3]")
    v = raw["v_template"].shape[0]
    expected = {"v_template": (v, 3), "J_regressor": (NUM_SMPLX_JOINTS, v),
                "weights": (v, NUM_SMPLX_JOINTS), "posedirs": (v, 3, NUM_POSE_BASIS)}
    for key, shape in expected.items():
        if raw[key].shape != shape:
            raise BodyModelFileError(f"{name}: '{key}' has shape {raw[key].shape}; expected {shape} for an SMPL-X model")
    if raw["f"].ndim != 2 or raw["f"].shape[1] != 3:
        raise BodyModelFileError(f"{name}: 'f' has shape {raw['f'].shape}; expected [F, 3] triangles")
    if raw["kintree_table"].shape != (2, NUM_SMPLX_JOINTS):
        raise BodyModelFileError(f"{name}: 'kintree_table' has shape {raw['kintree_table'].shape}; expected (2, {NUM_SMPLX_JOINTS})")
    shapedirs = raw["shapedirs"]
    if shapedirs.ndim == 2:
        shapedirs = shapedirs[:, :, None]
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (v, 3):
        raise BodyModelFileError(f"{name}: 'shapedirs' has shape {raw['shapedirs'].shape}; expected ({v}, 3, S)")
    betas, expr = shape_space_split(shapedirs.shape[-1], num_betas, num_expression, name)
    hands = np.zeros((2, 3 * NUM_HAND_JOINTS), np.float32)
    for i, key in enumerate(HAND_MEAN_KEYS):
        if key in raw:
            hands[i] = raw[key].reshape(-1)[: 3 * NUM_HAND_JOINTS]
    parents = raw["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    vt, ft = raw.get("vt"), raw.get("ft")
    return SMPLXArrays(
        v_template=raw["v_template"].astype(np.float32), faces=raw["f"].astype(np.int64),
        J_regressor=raw["J_regressor"].astype(np.float32), parents=parents,
        weights=raw["weights"].astype(np.float32),
        shapedirs=shapedirs[:, :, betas].astype(np.float32),
        exprdirs=shapedirs[:, :, expr].astype(np.float32),
        posedirs=raw["posedirs"].reshape(-1, NUM_POSE_BASIS).T.astype(np.float32),
        hands_mean=hands,
        vt=None if vt is None else vt.astype(np.float32)[:, :2],
        ft=None if ft is None else ft.astype(np.int64),
    )


def _arrays_from_pkl(path: Path, num_betas: int, num_expression: int) -> SMPLXArrays:
    """A ``.pkl`` model, unpickled by the ``smplx`` package (never by sigman itself)."""
    import smplx

    try:
        model = smplx.SMPLX(str(path), ext="pkl", num_betas=num_betas,
                            num_expression_coeffs=num_expression, use_pca=False,
                            flat_hand_mean=False)
    except Exception as err:  # the package raises anything from pickle, chumpy or a bad layout
        raise BodyModelFileError(f"the smplx package could not load {path} ({err.__class__.__name__}: {err}); use the SMPLX_*.npz files instead") from err
    if model.num_betas != num_betas or model.num_expression_coeffs < num_expression:
        raise ValueError(f"num_betas={num_betas}, num_expression={num_expression} but {path.name} has "
                         f"{model.num_betas} shape and {model.num_expression_coeffs} expression components")
    n = lambda t: t.detach().cpu().numpy()
    return SMPLXArrays(
        v_template=n(model.v_template), faces=np.asarray(model.faces, dtype=np.int64),
        J_regressor=n(model.J_regressor), parents=n(model.parents).astype(np.int64),
        weights=n(model.lbs_weights), shapedirs=n(model.shapedirs),
        exprdirs=n(model.expr_dirs)[:, :, :num_expression], posedirs=n(model.posedirs),
        hands_mean=np.stack([n(model.left_hand_mean), n(model.right_hand_mean)]),
    )


def load_smplx_arrays(path: Path, num_betas: int = 10, num_expression: int = 10) -> SMPLXArrays:
    """Read and check an SMPL-X model file (``.npz`` by sigman, ``.pkl`` by ``smplx``)."""
    if path.suffix == ".pkl":
        arrays = _arrays_from_pkl(path, num_betas, num_expression)
    elif path.suffix == ".npz":
        arrays = _arrays_from_npz(path, num_betas, num_expression)
    else:
        raise BodyModelFileError(f"{path}: unknown SMPL-X model format '{path.suffix}'; expected SMPLX_<GENDER>.npz or .pkl")
    if tuple(arrays.parents.tolist()) != SMPLX_PARENTS:
        raise BodyModelFileError(f"{path.name}: its kinematic tree (kintree_table) is not SMPL-X's 55-joint tree")
    if arrays.faces.size and (arrays.faces.min() < 0 or arrays.faces.max() >= arrays.v_template.shape[0]):
        raise BodyModelFileError(f"{path.name}: 'f' indexes vertices outside 0..{arrays.v_template.shape[0] - 1}")
    return arrays


# ----------------------------------------------------------------------------------------------
# UVs


def _obj_index(token: str, count: int, what: str, path: Path, line_no: int) -> int:
    index = int(token)
    index = index - 1 if index > 0 else count + index  # OBJ: 1-based, negative = relative
    if not 0 <= index < count:
        raise BodyModelFileError(f"{path}:{line_no}: {what} index {token} is out of range")
    return index


def read_obj_uvs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the UV layout of a triangle ``.obj``: ``vt [T, 2]``, texture indices ``ft [F, 3]``
    and vertex indices ``faces [F, 3]`` (0-based). Only ``v``, ``vt`` and ``f`` lines are read."""
    num_v, vt, ft, faces = 0, [], [], []
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                num_v += 1
            elif parts[0] == "vt":
                try:
                    vt.append((float(parts[1]), float(parts[2])))
                except (IndexError, ValueError) as err:
                    raise BodyModelFileError(f"{path}:{line_no}: malformed 'vt' line") from err
            elif parts[0] == "f":
                corners = parts[1:]
                if len(corners) != 3:
                    raise BodyModelFileError(f"{path}:{line_no}: a face with {len(corners)} corners; the SMPL-X UV obj has triangles only")
                try:
                    split = [c.split("/") for c in corners]
                    faces.append([_obj_index(s[0], num_v, "vertex", path, line_no) for s in split])
                    ft.append([_obj_index(s[1], len(vt), "texture", path, line_no) for s in split])
                except (IndexError, ValueError) as err:
                    raise BodyModelFileError(f"{path}:{line_no}: face without texture indices (expected 'f v/vt v/vt v/vt')") from err
    if not vt or not ft:
        raise BodyModelFileError(f"{path} has no UV layout ('vt' and textured 'f' lines); use the smplx_uv.obj from {SMPLX_UV_URL}")
    return (np.asarray(vt, np.float32), np.asarray(ft, np.int64), np.asarray(faces, np.int64))


def _roll_to_min(faces: np.ndarray) -> np.ndarray:
    """Per-row corner order ``[F, 3]`` that starts each triangle at its smallest vertex index
    (same orientation)."""
    return (faces.argmin(axis=1)[:, None] + np.arange(3)) % 3


def align_face_uvs(obj_faces: np.ndarray, obj_ft: np.ndarray, faces: np.ndarray) -> Optional[np.ndarray]:
    """Texture indices ``[F, 3]`` for the model's ``faces [F, 3]`` from an obj whose triangles are
    the same but may be listed in another order or start at another corner; ``None`` when the
    triangles differ. (The official ``smplx_uv.obj`` lists them exactly as the model does.)"""
    if obj_faces.shape != faces.shape:
        return None
    if np.array_equal(obj_faces, faces):
        return obj_ft
    order = _roll_to_min(obj_faces)
    keys = {tuple(f): i for i, f in enumerate(np.take_along_axis(obj_faces, order, 1).tolist())}
    rolled_ft = np.take_along_axis(obj_ft, order, 1)
    model_order = _roll_to_min(faces)
    rows = [keys.get(tuple(f)) for f in np.take_along_axis(faces, model_order, 1).tolist()]
    if any(r is None for r in rows) or len(keys) != len(faces):
        return None
    ft = np.empty_like(obj_ft)
    np.put_along_axis(ft, model_order, rolled_ft[rows], 1)
    return ft


def load_smplx_uvs(model_file: Path, arrays: SMPLXArrays,
                   uv_path: Union[str, Path, None] = None) -> tuple[np.ndarray, np.ndarray]:
    """UV coordinates ``[T, 2]`` and per-face UV indices ``[F, 3]``: from ``uv_path``, else from
    ``smplx_uv.obj`` beside the model file, else from the model's own ``vt`` / ``ft`` arrays."""
    obj = model_file.parent / SMPLX_UV_FILE if uv_path is None else Path(uv_path)
    if obj.is_file():
        vt, ft, faces = read_obj_uvs(obj)
        aligned = align_face_uvs(faces, ft, arrays.faces)
        if aligned is None:
            raise BodyModelFileError(f"the faces of {obj} ({len(faces)}) do not match those of {model_file.name} ({len(arrays.faces)}); use the SMPL-X smplx_uv.obj from {SMPLX_UV_URL}")
        return vt, aligned
    if uv_path is not None:
        raise _missing("SMPL-X UV layout", obj, SMPLX_UV_URL)
    if arrays.vt is not None and arrays.ft is not None:
        if arrays.ft.shape != arrays.faces.shape or arrays.ft.min() < 0 or arrays.ft.max() >= len(arrays.vt):
            raise BodyModelFileError(f"{model_file.name}: 'ft' {arrays.ft.shape} does not index 'vt' {arrays.vt.shape} once per face")
        return arrays.vt, arrays.ft
    raise _missing(f"SMPL-X UV layout {SMPLX_UV_FILE} (and {model_file.name} has no vt/ft)", obj, SMPLX_UV_URL)


# ----------------------------------------------------------------------------------------------
# The body


def _fit_coefficients(values: Tensor, size: int, what: str) -> Tensor:
    """``values [K]`` padded with zeros or cut to ``[size]``; cutting non-zero entries is an error."""
    values = values.reshape(-1)
    if values.numel() > size and bool((values[size:] != 0).any()):
        raise ValueError(f"the pose has {values.numel()} non-zero {what} but this SMPL-X body uses {size}; load it with more")
    out = values.new_zeros(size)
    k = min(size, values.numel())
    out[:k] = values[:k]
    return out


class SMPLXBody(BodyModel):
    """SMPL-X (10,475 vertices, 55 joints) from the user's licensed model files.

    Shape: ``betas [B, shape_dim]`` (``shape_dim = num_betas``, default 10); zero is the template.
    Poses: :class:`~sigman.pose.SMPLXPose` (axis-angle, hand poses as full rotations).

    Args:
        model_path: a folder with ``SMPLX_<GENDER>.npz`` / ``.pkl`` or one model file (default:
            :func:`~sigman.paths.smplx_model_dir`).
        gender: ``"neutral"``, ``"male"`` or ``"female"`` (picks the file in a folder).
        num_betas: how many shape components to use.
        num_expression: how many expression components to use.
        flat_hand_mean: ``True`` (default, as SIGMAN for full hand rotations): a zero hand pose is
            the flat hand. ``False``: the model's mean hand pose is added to the hand poses.
        uv_path: the UV ``.obj`` (default: ``smplx_uv.obj`` beside the model file).
    """

    name = "smplx"

    def __init__(self, model_path: Union[str, Path, None] = None, gender: str = "neutral",
                 num_betas: int = 10, num_expression: int = 10, flat_hand_mean: bool = True,
                 uv_path: Union[str, Path, None] = None) -> None:
        super().__init__()
        model_file = find_smplx_file(model_path, gender)
        arrays = load_smplx_arrays(model_file, num_betas, num_expression)
        uvs, face_uvs = load_smplx_uvs(model_file, arrays, uv_path)
        self.model_file = model_file
        self.gender = gender
        self.shape_dim = arrays.shapedirs.shape[-1]
        self.num_expression = arrays.exprdirs.shape[-1]
        self.flat_hand_mean = flat_hand_mean
        t = torch.from_numpy
        v_template = t(arrays.v_template)
        j_regressor = t(arrays.J_regressor)
        self._set_assets(
            rest_vertices=v_template, faces=t(arrays.faces), uvs=t(uvs), face_uvs=t(face_uvs),
            rest_joints=j_regressor @ v_template, parents=t(arrays.parents),
            skin_weights=t(arrays.weights), joint_names=list(SMPLX_JOINT_NAMES),
        )
        self.register_buffer("J_regressor", j_regressor, persistent=False)  # [J, V]
        self.register_buffer("shapedirs", t(arrays.shapedirs), persistent=False)  # [V, 3, S]
        self.register_buffer("exprdirs", t(arrays.exprdirs), persistent=False)  # [V, 3, E]
        self.register_buffer("posedirs", t(arrays.posedirs), persistent=False)  # [486, V * 3]
        hands = t(arrays.hands_mean).reshape(2, NUM_HAND_JOINTS, 3)
        self.register_buffer("hands_mean", hands if not flat_hand_mean else torch.zeros_like(hands),
                             persistent=False)  # [2, 15, 3] (left, right), zero when flat

    # --- shape ---------------------------------------------------------------------------------

    def _check_shape(self, shape: Tensor) -> Tensor:
        if shape.dim() != 2 or shape.shape[-1] != self.shape_dim:
            raise ValueError(f"SMPL-X shape must be betas [B, {self.shape_dim}], got {tuple(shape.shape)}")
        return shape.to(self.rest_vertices)

    def rest(self, shape: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Shaped template ``[B, V, 3]`` and its regressed joints ``[B, J, 3]`` for
        ``betas [B, shape_dim]`` (``smplx``: ``v_template + blend_shapes``, ``vertices2joints``)."""
        if shape is None:
            return super().rest(None)
        betas = self._check_shape(shape)
        vertices = self.rest_vertices + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        return vertices, torch.einsum("bik,ji->bjk", vertices, self.J_regressor)

    def betas_from_pose(self, pose: SMPLXPose) -> Tensor:
        """The pose file's ``betas`` as this body's shape ``[1, shape_dim]`` (zero-padded)."""
        return _fit_coefficients(pose.betas.to(self.rest_vertices), self.shape_dim, "betas")[None]

    # --- pose ----------------------------------------------------------------------------------

    def _with_hand_mean(self, pose: SMPLXPose) -> SMPLXPose:
        """The pose as ``smplx`` evaluates it: hand poses plus the mean hand (zero when flat)."""
        if self.flat_hand_mean:
            return pose
        mean = self.hands_mean.to(pose.left_hand_pose)
        return dataclasses.replace(pose, left_hand_pose=pose.left_hand_pose + mean[0],
                                   right_hand_pose=pose.right_hand_pose + mean[1])

    def global_rotations(self, pose: SMPLXPose) -> Tensor:
        """World rotations of the 55 joints ``[T, 55, 3, 3]`` (SMPL-X's own joint frames)."""
        return self._with_hand_mean(pose).global_rotmats().to(self.rest_vertices)

    def pose_correctives(self, pose: SMPLXPose, shape: Optional[Tensor]) -> Tensor:
        """Pose blend shapes plus expression blend shapes, canonical frame: ``[T, V, 3]``.

        ``posedirs`` are driven by ``(R_j - I)`` of the local rotations of joints 1..54, as in
        ``smplx.lbs.lbs``; they do not depend on the shape."""
        local = self._with_hand_mean(pose).local_rotmats().to(self.rest_vertices)  # [T, 55, 3, 3]
        t = local.shape[0]
        eye = torch.eye(3, dtype=local.dtype, device=local.device)
        feature = (local[:, 1:] - eye).reshape(t, NUM_POSE_BASIS)  # [T, 486]
        offsets = (feature @ self.posedirs).reshape(t, -1, 3)
        if self.num_expression:
            expression = _fit_coefficients(pose.expression.to(offsets), self.num_expression, "expression coefficients")
            offsets = offsets + torch.einsum("l,mkl->mk", expression, self.exprdirs)
        return offsets

    def canonical_pose(self) -> SMPLXPose:
        """The pose with identity transforms: zero, except hands at minus the mean hand when
        ``flat_hand_mean`` is off."""
        pose = super().canonical_pose()
        mean = self.hands_mean.cpu()
        pose.left_hand_pose[0] = -mean[0]
        pose.right_hand_pose[0] = -mean[1]
        return pose
