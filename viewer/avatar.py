"""What the viewer shows: canonical Gaussians, and the body rig that reposes them (if any)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from sigman.body import BodyModel, load_body_model
from sigman.gaussians import Gaussians, surface_gaussians
from sigman.uv import build_uv_template

RIGGED_SUFFIXES = (".glb", ".gltf")
STATIC_SUFFIXES = (".ply",)


@dataclass
class Avatar:
    gaussians: Gaussians  # canonical; skin_weights [N, J] when rigged
    body: Optional[BodyModel]  # None: a static avatar
    rest_joints: Optional[Tensor]  # [J, 3] the subject's canonical joints (None: the body's)
    name: str

    @property
    def rigged(self) -> bool:
        return self.body is not None and self.gaussians.skin_weights is not None


def demo_avatar(resolution: int = 128, body_name: str = "anny") -> Avatar:
    """A bare-body avatar: flat Gaussians tiling the body at UV ``resolution``."""
    body = load_body_model(body_name)
    gaussians = surface_gaussians(build_uv_template(body, resolution))
    return Avatar(gaussians, body, None, f"bare {body_name} body, UV {resolution}")


def load_avatar(path: Union[str, Path]) -> Avatar:
    """A rigged ``.glb`` written by :mod:`sigman.io` (reposable) or a 3DGS ``.ply`` (static)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"avatar file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in RIGGED_SUFFIXES:
        from sigman.io import load_rigged_glb

        gaussians, rig = load_rigged_glb(path)
        body = load_body_model(rig.body_model)
        if list(rig.joint_names) != list(body.joint_names):
            missing = sorted(set(body.joint_names) - set(rig.joint_names))[:5]
            raise ValueError(
                f"{path.name}: its rig's {len(rig.joint_names)} joints do not match the "
                f"'{rig.body_model}' body's {len(body.joint_names)} joints (e.g. missing {missing})")
        rest_joints = torch.as_tensor(rig.rest_joints, dtype=torch.float32)
        return Avatar(gaussians, body, rest_joints, path.name)
    if suffix in STATIC_SUFFIXES:
        from sigman.io import load_gaussians

        return Avatar(load_gaussians(path), None, None, path.name)
    raise ValueError(f"{path.name}: the viewer opens rigged .glb avatars and .ply Gaussians, not '{suffix}'")
