"""Gaussian file formats: standard 3DGS ``.ply``, compact ``.splat``, rigged glTF ``.glb``.

==========  ===========================  ======================================================
suffix      writer / reader              what it keeps
==========  ===========================  ======================================================
``.ply``    :func:`save_ply`             everything but skin weights; stored values exact
``.splat``  :func:`save_splat`           lossy (8-bit colour, opacity and rotation), reordered
``.glb``    :func:`save_glb`             everything, exact; skin weights as top-8 + the rig,
                                         optionally a motion as a glTF animation
mesh        :func:`save_mesh_avatar`     a skinned, textured body mesh (``avatar_mesh.glb``)
==========  ===========================  ======================================================

Up axes differ per format (glTF +Y up, ``.ply``/``.splat`` +Y down as 3DGS viewers expect); the
writers and readers convert, see :mod:`sigman.io.frames`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from sigman.gaussians import Gaussians
from sigman.io.gltf import load_glb, load_rigged_glb, save_glb, save_rigged_glb
from sigman.io.ply import DEFAULT_SH_DEGREE, load_ply, save_ply
from sigman.io.rig import Rig
from sigman.io.mesh_avatar import mesh_avatar, save_mesh_avatar
from sigman.io.splat import load_splat, save_splat

SAVE_SUFFIXES = (".ply", ".splat", ".glb")
LOAD_SUFFIXES = (".ply", ".splat", ".glb", ".gltf")


def save_gaussians(path: Union[str, Path], gaussians: Gaussians, rig: Optional[Rig] = None,
                   compact: bool = False) -> None:
    """Write Gaussians ``[N, ...]`` by suffix: ``.ply``, ``.splat`` or ``.glb`` (rigged when
    ``rig`` is given, which ``.ply``/``.splat`` cannot hold). A ``.ply`` has the full Inria layout
    (SH degree 3, zeros where unused) unless ``compact`` (17 properties, SH degree 0)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(f"unknown Gaussian file type '{suffix}' for {Path(path).name}; use one of "
                         f"{', '.join(SAVE_SUFFIXES)}")
    if suffix == ".glb":
        save_glb(path, gaussians, rig)
        return
    if rig is not None:
        raise ValueError(f"a {suffix} file cannot hold a rig; save the rigged avatar as .glb")
    if suffix == ".ply":
        save_ply(path, gaussians, sh_degree=0 if compact else DEFAULT_SH_DEGREE)
    else:
        save_splat(path, gaussians)


def load_gaussians(path: Union[str, Path]) -> Gaussians:
    """Read Gaussians ``[N, ...]`` (float32) from ``.ply``, ``.splat``, ``.glb`` or ``.gltf``; a
    rigged ``.glb`` gives ``skin_weights`` (use :func:`load_rigged_glb` to get its :class:`Rig`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in LOAD_SUFFIXES:
        raise ValueError(f"unknown Gaussian file type '{suffix}' for {Path(path).name}; use one of "
                         f"{', '.join(LOAD_SUFFIXES)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"Gaussian file not found: {path}")
    if suffix == ".ply":
        return load_ply(path)
    if suffix == ".splat":
        return load_splat(path)
    return load_glb(path)[0]


__all__ = ["Rig", "save_gaussians", "load_gaussians", "save_ply", "load_ply", "save_splat", "load_splat",
           "save_glb", "load_glb", "save_rigged_glb", "load_rigged_glb", "mesh_avatar", "save_mesh_avatar"]
