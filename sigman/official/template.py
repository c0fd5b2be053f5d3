"""The release's Gaussian template, built from the user's licensed files.

The official weights place one Gaussian per face of a subdivided SMPL-X mesh with the FLAME mouth
(``N`` faces, 50,200 for the real files), at the UV coordinates that the checkpoint carries in its
buffer ``smplx_uvcoord``. The release builds that mesh with its scripts under
``core/modules/deformers/`` (``preprocess_smplx.py``, ``subdivide_smplx.py``, ``utils_smplx.py``);
this module takes the same steps from the same files:

1. **Mouth.** The FLAME template with a mouth (``head_template_mesh_mouth.obj``) has faces and UVs
   that the plain FLAME template (``head_template.obj``) has not. Those extra UVs are squeezed into
   an empty corner of the SMPL-X layout (``uv * (0.1, 0.06) + (0.52, 0.55)``) and appended to
   ``smplx_uv.obj``'s UVs; the extra faces are mapped to SMPL-X vertices through
   ``SMPL-X__FLAME_vertex_ids.npy`` and appended to SMPL-X's faces (the extra UV faces are
   re-indexed past SMPL-X's UVs).
2. **Regions.** From ``smplx_vert_segmentation.json`` (eyes, hands) and ``FLAME_masks.pkl`` (face,
   ears, forehead, every FLAME region) each face is marked: to subdivide (it touches none of the
   front face without forehead and mouth interior, the ears, the eyeballs, the hands), in the
   face region, in the hands, in the "outside" (FLAME vertices in no FLAME region).
3. **Subdivision.** Every face to subdivide is split into 4 at its edge midpoints (positions, UVs,
   skinning weights and blend shapes interpolated at the midpoints); the others are kept. The
   children come first, in face order, then the kept faces.
4. **Per point** (one per face): its UV and position are the face's centroid; its frame is the
   face's tangent frame (:func:`sigman.official.frames.tbn_frames`); its skinning weights and
   blend shapes are the mean of the face's corners.

Positions are those of the male SMPL-X model in the release's canonical pose (T-pose, hands in
the PCA pose the release lists, lifted 0.35 m); the release's deformer then un-poses them with the
neutral model's transforms of that same pose (:meth:`ReleaseTemplate.rest_points`).

Each point's corners are kept as pairs of original vertices (a corner is a vertex or an edge
midpoint), so every per-vertex quantity (weights, blend-shape offsets) reaches the points through
one ``[N, 6]`` index table (:meth:`ReleaseTemplate.mix`).

The template is cached (keyed by the files' contents) and checked against the checkpoint
(:func:`check_against_checkpoint`): same ``N``, same UVs within float tolerance.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np

from sigman.atomic import atomic_savez, read_npz_cache
import torch
from torch import Tensor

from sigman.official.frames import tbn_frames
from sigman.paths import cache_dir, smplx_model_dir
from sigman.weights import WeightsError

TEMPLATE_CACHE_VERSION = 1
RELEASE_POINTS = 50200  # N of the release's template on the real files
UV_TOLERANCE = 1e-5  # max |difference| of smplx_uvcoord (in [-1, 1]) accepted as "the same template"
MOUTH_UV_SCALE = (0.1, 0.06)
MOUTH_UV_SHIFT = (0.52, 0.55)
MOUTH_INNER_FACES = 30  # the release takes the last 30 faces of the mouthed mesh as the mouth interior
CANONICAL_TRANSL = (0.0, 0.35, 0.0)  # the release's canonical pose lifts the body by 0.35 m
CANONICAL_HAND_PCA = (1.4624, -0.1615, 0.1361, 1.3851, -0.2597, 0.0247, -0.0683, -0.4478,
                      -0.6652, -0.7290, 0.0084, -0.4818)  # the release's 12 PCA hand coefficients
NUM_HAND_PCA = 12
TEMPLATE_GENDER = "male"  # the release subdivides the male model ...
DEFORMER_GENDER = "neutral"  # ... and poses with the neutral one

#: The files the template needs, by role: (file name, where to get it).
TEMPLATE_FILES: dict[str, tuple[str, str]] = {
    "smplx_template": ("SMPLX_MALE.npz", "https://smpl-x.is.tue.mpg.de/ (models_smplx_v1_1.zip)"),
    "smplx_deformer": ("SMPLX_NEUTRAL.npz", "https://smpl-x.is.tue.mpg.de/ (models_smplx_v1_1.zip)"),
    "smplx_uv": ("smplx_uv.obj", "https://download.is.tue.mpg.de/download.php?domain=smplx&sfile=smplx_uv.zip"),
    "flame_ids": ("SMPL-X__FLAME_vertex_ids.npy", "https://download.is.tue.mpg.de/download.php?domain=smplx&sfile=smplx_mano_flame_correspondences.zip"),
    "flame_mouth": ("head_template_mesh_mouth.obj", "https://github.com/philgras/neural-head-avatars (assets/flame/)"),
    "flame": ("head_template.obj", "https://github.com/yfeng95/DECA (data/)"),
    "flame_masks": ("FLAME_masks.pkl", "https://files.is.tue.mpg.de/tbolkart/FLAME/FLAME_masks.zip"),
    "segmentation": ("smplx_vert_segmentation.json", "https://github.com/Meshcapade/wiki (assets/SMPL_body_segmentation/smplx/)"),
}


class TemplateFilesMissing(FileNotFoundError):
    """Some of the files the release's template is built from are not in the folder."""


class TemplateError(WeightsError):
    """A template file is malformed, or the built template does not match the checkpoint (a
    :class:`~sigman.weights.WeightsError`: the template is part of the official model)."""


# ----------------------------------------------------------------------------------------------
# Files


def find_template_files(folder: Union[str, Path, None] = None) -> dict[str, Path]:
    """The template's files in ``folder`` (default :func:`~sigman.paths.smplx_model_dir`), by role.
    Raises :class:`TemplateFilesMissing` naming every missing file and where to get it."""
    folder = Path(folder) if folder is not None else smplx_model_dir()
    paths = {role: folder / name for role, (name, _) in TEMPLATE_FILES.items()}
    missing = [role for role, path in paths.items() if not path.is_file()]
    if missing:
        listed = "; ".join(f"{TEMPLATE_FILES[r][0]} (from {TEMPLATE_FILES[r][1]})" for r in missing)
        raise TemplateFilesMissing(
            f"the official weights need the release's Gaussian template, built from licensed files that are "
            f"missing in {folder}: {listed}. Put them there (or set SIGMAN_SMPLX_DIR); see docs/OFFICIAL.md")
    return paths


@dataclass
class ObjMesh:
    v: np.ndarray  # [V, 3] float64
    vt: np.ndarray  # [T, k] float64, as written (k = 2 or 3)
    f: np.ndarray  # [F, 3] int64 vertex indices (0-based)
    ft: np.ndarray  # [F, 3] int64 texture indices (0-based)


def read_obj(path: Path) -> ObjMesh:
    """``v``, ``vt`` and ``f v/vt`` lines of a triangle ``.obj`` (values as written, float64)."""
    v, vt, f, ft = [], [], [], []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, 1):
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "v":
                    v.append([float(x) for x in parts[1:4]])
                elif parts[0] == "vt":
                    vt.append([float(x) for x in parts[1:]])
                elif parts[0] == "f":
                    corners = [c.split("/") for c in parts[1:]]
                    if len(corners) != 3:
                        raise TemplateError(f"{path}:{line_no}: a face with {len(corners)} corners; expected triangles")
                    f.append([int(c[0]) - 1 for c in corners])
                    if all(len(c) > 1 and c[1] for c in corners):
                        ft.append([int(c[1]) - 1 for c in corners])
    except ValueError as err:
        raise TemplateError(f"{path}: malformed obj line ({err})") from err
    if not f or len(ft) != len(f) or not vt:
        raise TemplateError(f"{path} has no UV layout (expected 'vt' lines and faces 'f v/vt v/vt v/vt')")
    if len({len(r) for r in vt}) != 1:
        raise TemplateError(f"{path}: 'vt' lines of different lengths")
    return ObjMesh(np.asarray(v, np.float64).reshape(-1, 3), np.asarray(vt, np.float64),
                   np.asarray(f, np.int64), np.asarray(ft, np.int64))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts / lists of numpy arrays and nothing else (no code can run)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "set"), ("builtins", "frozenset"),
               ("_codecs", "encode")}  # protocol-2 pickles spell byte strings with _codecs.encode

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_flame_masks(path: Path) -> dict[str, np.ndarray]:
    """``FLAME_masks.pkl``: region name -> FLAME vertex indices. Read with an unpickler that only
    rebuilds numpy arrays (never arbitrary objects)."""
    try:
        data = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise TemplateError(f"{path} is not a FLAME mask file (a pickled dict of index arrays): {err}") from err
    if not isinstance(data, dict) or not data:
        raise TemplateError(f"{path}: expected a dict of FLAME vertex index arrays")
    out = {str(k): np.asarray(v).astype(np.int64).reshape(-1) for k, v in data.items()}
    for key in ("face", "left_ear", "right_ear", "forehead"):
        if key not in out:
            raise TemplateError(f"{path} has no '{key}' region; expected the FLAME_masks.pkl of FLAME_masks.zip")
    return out


def read_segmentation(path: Path) -> dict[str, list[int]]:
    try:
        segs = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TemplateError(f"{path} is not a JSON file: {err}") from err
    for key in ("leftEye", "rightEye", "leftHand", "rightHand", "leftHandIndex1", "rightHandIndex1"):
        if key not in segs:
            raise TemplateError(f"{path} has no '{key}' part; expected smplx_vert_segmentation.json")
    return segs


def _npz_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise TemplateError(f"{path.name} has no {missing}; the template needs the SMPL-X v1.1 .npz files")
        return {k: np.asarray(data[k]) for k in keys}


# ----------------------------------------------------------------------------------------------
# The steps


def add_mouth(smplx: ObjMesh, flame_mouth: ObjMesh, flame: ObjMesh, flame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1: SMPL-X faces, UVs and UV faces with the FLAME mouth appended:
    ``faces [F + M, 3]``, ``uvs [T + U, k]`` (float64), ``uv_faces [F + M, 3]``."""
    flame_uv_set = {tuple(r) for r in flame.vt.tolist()}
    extra_uvs = np.asarray([r for r in flame_mouth.vt.tolist() if tuple(r) not in flame_uv_set], np.float64)
    extra_uvs = extra_uvs.reshape(-1, flame_mouth.vt.shape[1])
    if len(extra_uvs):
        extra_uvs[:, :2] = extra_uvs[:, :2] * np.asarray(MOUTH_UV_SCALE) + np.asarray(MOUTH_UV_SHIFT)
    flame_face_set = {tuple(r) for r in flame.f.tolist()}
    extra_faces = np.asarray([r for r in flame_mouth.f.tolist() if tuple(r) not in flame_face_set], np.int64).reshape(-1, 3)
    flame_uvface_set = {tuple(r) for r in flame.ft.tolist()}
    extra_uv_faces = np.asarray([r for r in flame_mouth.ft.tolist() if tuple(r) not in flame_uvface_set], np.int64).reshape(-1, 3)
    if len(extra_faces) != len(extra_uv_faces):
        raise TemplateError(f"the FLAME mouth mesh adds {len(extra_faces)} faces but {len(extra_uv_faces)} UV faces; "
                            "expected head_template_mesh_mouth.obj of neural-head-avatars")
    if extra_faces.size and extra_faces.max() >= len(flame_ids):
        raise TemplateError(f"SMPL-X__FLAME_vertex_ids.npy has {len(flame_ids)} entries but the mouth uses FLAME vertex {extra_faces.max()}")
    extra_uv_faces = extra_uv_faces - len(flame.vt) + len(smplx.vt)
    if smplx.vt.shape[1] != extra_uvs.shape[1]:
        extra_uvs = extra_uvs[:, :smplx.vt.shape[1]] if extra_uvs.shape[1] > smplx.vt.shape[1] else np.pad(extra_uvs, ((0, 0), (0, smplx.vt.shape[1] - extra_uvs.shape[1])))
    faces = np.concatenate([smplx.f, flame_ids[extra_faces].astype(np.int64)])
    uvs = np.concatenate([smplx.vt, extra_uvs])
    uv_faces = np.concatenate([smplx.ft, extra_uv_faces])
    if uv_faces.min() < 0 or uv_faces.max() >= len(uvs):
        raise TemplateError("the FLAME mouth's UV faces do not index its extra UVs; check head_template*.obj")
    return faces, uvs, uv_faces


@dataclass
class RegionMasks:
    """Per face of the mouthed mesh (True = the face belongs there)."""

    subdivide: np.ndarray  # [F] bool
    face: np.ndarray  # [F] bool
    hands: np.ndarray  # [F] bool
    outside: np.ndarray  # [F] bool


def region_masks(faces: np.ndarray, num_vertices: int, segs: dict, flame_masks: dict[str, np.ndarray],
                 flame_ids: np.ndarray, mouth_inner_faces: int = MOUTH_INNER_FACES) -> RegionMasks:
    """Step 2: which faces are subdivided and which lie in the face / hands / outside regions."""
    def ids(indices) -> set[int]:
        return set(np.asarray(indices, np.int64).reshape(-1).tolist())

    eyeballs = ids(segs["leftEye"]) | ids(segs["rightEye"])
    hands = ids(segs["leftHand"]) | ids(segs["rightHand"]) | ids(segs["leftHandIndex1"]) | ids(segs["rightHandIndex1"])
    front_face = ids(flame_ids[flame_masks["face"]])
    ears = ids(flame_ids[flame_masks["left_ear"]]) | ids(flame_ids[flame_masks["right_ear"]])
    forehead = ids(flame_ids[flame_masks["forehead"]])
    labelled = set().union(*(ids(flame_ids[m]) for m in flame_masks.values()))
    outside = ids(flame_ids) - labelled
    mouth_inner = ids(faces[-mouth_inner_faces:]) if mouth_inner_faces > 0 else set()

    def touching(vertex_ids: set[int]) -> np.ndarray:
        hit = np.zeros(num_vertices, bool)
        hit[np.fromiter(vertex_ids, np.int64, len(vertex_ids))] = True
        return hit[faces].any(axis=1)

    keep_coarse = ((front_face - forehead) - mouth_inner) | ears | eyeballs | hands
    return RegionMasks(subdivide=~touching(keep_coarse), face=touching((front_face - forehead) | eyeballs),
                       hands=touching(hands), outside=touching(outside))


# children of a face (a, b, c) split at its edge midpoints, as corner pairs: (x, x) is a vertex,
# (x, y) the midpoint of edge x-y; the release's order and winding
_CHILDREN = (((0, 0), (0, 1), (2, 0)), ((0, 1), (1, 1), (1, 2)), ((2, 0), (1, 2), (2, 2)), ((0, 1), (1, 2), (2, 0)))


def subdivided_corners(faces: np.ndarray, subdivide: np.ndarray) -> np.ndarray:
    """Step 3: corners of the subdivided mesh as pairs of indices into ``faces``' index space:
    ``[N, 3, 2]`` (children of the subdivided faces first, 4 per face, then the kept faces)."""
    split = faces[subdivide]  # [S, 3]
    children = np.stack([np.stack([np.stack([split[:, i], split[:, j]], -1) for i, j in child], 1)
                         for child in _CHILDREN], 1)  # [S, 4, 3, 2]
    kept = faces[~subdivide]
    return np.concatenate([children.reshape(-1, 3, 2), np.stack([kept, kept], -1)])


def dense_region_masks(masks: RegionMasks) -> dict[str, np.ndarray]:
    """The region masks per point of the subdivided mesh (children inherit their face's; the
    release's hands mask is never set on subdivided faces)."""
    s = masks.subdivide
    return {
        "face_mask": np.concatenate([masks.face[s].repeat(4), masks.face[~s]]),
        "hands_mask": np.concatenate([np.zeros(4 * int(s.sum()), bool), masks.hands[~s]]),
        "outside_mask": np.concatenate([masks.outside[s].repeat(4), masks.outside[~s]]),
    }


def canonical_hand_pose(components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The release's canonical hand: its 12 PCA coefficients on the model's hand components plus
    the mean hand (``use_pca=True, flat_hand_mean=False``): ``[15, 3]``."""
    return (np.asarray(CANONICAL_HAND_PCA, np.float32) @ components[:NUM_HAND_PCA].astype(np.float32)
            + mean.reshape(-1)[:45].astype(np.float32)).reshape(15, 3)


def canonical_pose(model_file: Path):
    """The release's canonical SMPL-X pose for this model file (full hand rotations)."""
    from sigman.pose import SMPLXPose

    arrays = _npz_arrays(model_file, ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr"))
    pose = SMPLXPose.zeros(1)
    pose.left_hand_pose[0] = torch.from_numpy(canonical_hand_pose(arrays["hands_componentsl"], arrays["hands_meanl"]))
    pose.right_hand_pose[0] = torch.from_numpy(canonical_hand_pose(arrays["hands_componentsr"], arrays["hands_meanr"]))
    pose.transl[0] = torch.tensor(CANONICAL_TRANSL)
    return pose


# ----------------------------------------------------------------------------------------------
# The template


@dataclass
class ReleaseTemplate:
    """The release's ``N`` Gaussian sites (one per face of its subdivided SMPL-X mesh)."""

    uv: Tensor  # [N, 2] face centroid UVs, u right, v up, in [0, 1] (smplx_uvcoord = 2 uv - 1)
    positions: Tensor  # [N, 3] canonical positions (male model, the release's canonical pose)
    frames: Tensor  # [N, 3, 3] tangent frames [t, b, n] (columns), det -1
    corner_pairs: Tensor  # [N, 3, 2] int64 original-vertex pairs of each corner (see mix)
    face_mask: Tensor  # [N] bool
    hands_mask: Tensor  # [N] bool
    outside_mask: Tensor  # [N] bool

    @property
    def num_points(self) -> int:
        return self.uv.shape[0]

    @property
    def deformer_mask(self) -> Tensor:
        """Points the release skins with the template's own weights (face, hands, outside)."""
        return self.face_mask | self.hands_mask | self.outside_mask

    @property
    def uvcoord(self) -> Tensor:
        """The checkpoint buffer's form: ``2 uv - 1``, ``[N, 2]``."""
        return self.uv * 2.0 - 1.0

    def mix(self, vertex_values: Tensor) -> Tensor:
        """Per-vertex values ``[..., V, C]`` -> per-point values ``[..., N, C]``: the mean over the
        point's 3 corners, each corner the mean of its vertex pair (midpoints of edges)."""
        idx = self.corner_pairs.reshape(-1).to(vertex_values.device)
        gathered = vertex_values[..., idx, :].reshape(*vertex_values.shape[:-2], self.num_points, 3, 2, vertex_values.shape[-1])
        return gathered.mean(dim=-2).mean(dim=-2)

    def to(self, device) -> "ReleaseTemplate":
        return ReleaseTemplate(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def template_arrays(paths: dict[str, Path], mouth_inner_faces: int = MOUTH_INNER_FACES) -> dict[str, np.ndarray]:
    """Steps 1-4 on the files (no cache): the arrays of a :class:`ReleaseTemplate`."""
    from sigman.body.smplx_body import SMPLXBody

    smplx = read_obj(paths["smplx_uv"])
    flame_mouth, flame = read_obj(paths["flame_mouth"]), read_obj(paths["flame"])
    flame_ids = np.load(paths["flame_ids"], allow_pickle=False).astype(np.int64).reshape(-1)
    faces, uvs, uv_faces = add_mouth(smplx, flame_mouth, flame, flame_ids)
    body = SMPLXBody(model_path=paths["smplx_template"], uv_path=paths["smplx_uv"], flat_hand_mean=True)
    num_vertices = body.num_vertices
    if faces.max() >= num_vertices:
        raise TemplateError(f"the mouthed mesh indexes vertex {faces.max()} but {paths['smplx_template'].name} has {num_vertices}")
    masks = region_masks(faces, num_vertices, read_segmentation(paths["segmentation"]), read_flame_masks(paths["flame_masks"]),
                         flame_ids, mouth_inner_faces)
    corners = subdivided_corners(faces, masks.subdivide)  # [N, 3, 2] vertex pairs
    uv_corners = subdivided_corners(uv_faces, masks.subdivide)  # [N, 3, 2] uv pairs

    with torch.no_grad():
        verts = body(canonical_pose(paths["smplx_template"])).vertices[0].float()  # [V, 3] float32
    pos = verts[torch.from_numpy(corners)].mean(dim=-2)  # [N, 3, 3] corner positions (midpoints in float32)
    uv64 = uvs[:, :2][uv_corners].mean(axis=-2)  # midpoints in float64, as the release's obj holds them
    uvc = torch.from_numpy(uv64.astype(np.float32))  # [N, 3, 2]
    frames = tbn_frames(pos, uvc)
    arrays = {
        "uv": ((uvc[:, 0] + uvc[:, 1] + uvc[:, 2]) / 3.0).numpy(),
        "positions": ((pos[:, 0] + pos[:, 1] + pos[:, 2]) / 3.0).numpy(),
        "frames": frames.numpy(),
        "corner_pairs": corners.astype(np.int64),
    }
    arrays.update(dense_region_masks(masks))
    return arrays


def _files_key(paths: dict[str, Path], mouth_inner_faces: int) -> str:
    h = hashlib.sha1(f"v{TEMPLATE_CACHE_VERSION}-{mouth_inner_faces}".encode())
    for role in sorted(paths):
        h.update(role.encode())
        h.update(paths[role].read_bytes())
    return h.hexdigest()[:16]


def build_release_template(folder: Union[str, Path, None] = None, cache: bool = True,
                           cache_folder: Optional[Path] = None,
                           mouth_inner_faces: int = MOUTH_INNER_FACES) -> ReleaseTemplate:
    """The release's template from the files in ``folder`` (see :func:`find_template_files`),
    cached under :func:`~sigman.paths.cache_dir` keyed by the files' contents."""
    paths = find_template_files(folder)
    path = (cache_folder or cache_dir() / "release_template") / f"template_{_files_key(paths, mouth_inner_faces)}.npz"
    arrays = read_npz_cache(path) if cache else None
    if arrays is None:
        arrays = template_arrays(paths, mouth_inner_faces)
        if cache:
            atomic_savez(path, arrays)
    t = lambda k: torch.from_numpy(np.ascontiguousarray(arrays[k]))
    return ReleaseTemplate(uv=t("uv").float(), positions=t("positions").float(), frames=t("frames").float(),
                           corner_pairs=t("corner_pairs").long(), face_mask=t("face_mask").bool(),
                           hands_mask=t("hands_mask").bool(), outside_mask=t("outside_mask").bool())


def check_against_checkpoint(template: ReleaseTemplate, uvcoord: Tensor, tolerance: float = UV_TOLERANCE) -> float:
    """Check the built template is the checkpoint's: ``uvcoord`` is the buffer ``smplx_uvcoord``
    (``[1, N, 2]`` or ``[N, 2]``, ``2 uv - 1``). Returns the largest UV difference; raises
    :class:`TemplateError` naming the mismatch."""
    buffer = uvcoord.reshape(-1, 2).float().cpu()
    if buffer.shape[0] != template.num_points:
        raise TemplateError(
            f"the template built from your files has {template.num_points} points but the checkpoint's smplx_uvcoord has "
            f"{buffer.shape[0]} (the release's has {RELEASE_POINTS}); the template files are not the ones the weights were "
            "trained with (see docs/OFFICIAL.md for the exact files)")
    diff = float((template.uvcoord.cpu() - buffer).abs().max()) if buffer.numel() else 0.0
    if not diff <= tolerance:
        raise TemplateError(
            f"the template built from your files has the checkpoint's {buffer.shape[0]} points but UVs up to {diff:.2e} apart "
            f"(tolerance {tolerance:.0e}); the UV layout or FLAME files differ from the release's (see docs/OFFICIAL.md)")
    return diff
