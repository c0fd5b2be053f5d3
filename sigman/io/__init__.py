"""Gaussian file formats: standard 3DGS ``.ply``, compact ``.splat``, rigged glTF ``.glb``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from sigman.gaussians import Gaussians
from sigman.io.gltf import load_rigged_glb, save_rigged_glb
from sigman.io.ply import load_ply, save_ply
from sigman.io.rig import Rig
from sigman.io.splat import load_splat, save_splat

SUFFIXES = (".ply", ".splat", ".glb")


def save_gaussians(path: Union[str, Path], gaussians: Gaussians, rig: Optional[Rig] = None) -> None:
    """Write by suffix: ``.ply``, ``.splat`` or ``.glb`` (the rigged avatar; needs ``rig``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        save_ply(path, gaussians)
    elif suffix == ".splat":
        save_splat(path, gaussians)
    elif suffix == ".glb":
        if rig is None:
            raise ValueError("a .glb avatar needs its rig (joint names, parents, rest joints)")
        save_rigged_glb(path, gaussians, rig)
    else:
        raise ValueError(f"unknown Gaussian file type '{suffix}'; use one of {', '.join(SUFFIXES)}")


def load_gaussians(path: Union[str, Path]) -> Gaussians:
    """Read ``.ply``, ``.splat`` or ``.glb`` (for a ``.glb`` the rig is dropped; use
    :func:`load_rigged_glb` to keep it)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise ValueError(f"file not found: {path}")
    if suffix == ".ply":
        return load_ply(path)
    if suffix == ".splat":
        return load_splat(path)
    if suffix == ".glb":
        return load_rigged_glb(path)[0]
    raise ValueError(f"unknown Gaussian file type '{suffix}'; use one of {', '.join(SUFFIXES)}")


__all__ = ["Rig", "save_gaussians", "load_gaussians", "save_ply", "load_ply", "save_splat", "load_splat",
           "save_rigged_glb", "load_rigged_glb"]
