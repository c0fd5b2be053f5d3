"""sigman: one photo + a body pose -> an animatable 3D Gaussian-splat human.

A reimplementation of SIGMAN (ICCV 2025, "Scaling 3D Human Gaussian Generation with Millions of
Assets"). Coordinate convention everywhere: SMPL-X's world frame (metres, +Y up, the body faces +Z,
+X is the body's left). Quaternions are (w, x, y, z).
"""

__version__ = "0.1.0"

from sigman._roma_import import import_roma as _import_roma

_import_roma()  # before any submodule's `import roma`: see sigman/_roma_import.py
