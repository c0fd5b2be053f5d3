"""A tiny SMPL-X model with random contents, in the official file layout.

The real SMPL-X files are licensed and never in the repository. Tests write this stand-in instead:
every key the ``smplx`` package reads (``SMPLX_NEUTRAL.npz`` of models_smplx_v1_1), with the real
joint count (55) and kinematic tree but a small cylinder-shaped mesh, plus the matching
``smplx_uv.obj``. The UV layout has a seam, so there are more UV coordinates than vertices, as in
the real layout.

Note: ``smplx.SMPLX.forward`` appends extra keypoints picked at fixed vertex ids of the real mesh
(up to 9929); on a small mesh, replace its ``vertex_joint_selector`` (see the tests) or write a
mesh of at least 9930 vertices (``rings * columns``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from sigman.pose import NUM_SMPLX_JOINTS, SMPLX_PARENTS

NUM_LANDMARKS = 51
NUM_DYNAMIC_LANDMARKS = 17
NUM_DYNAMIC_ANGLES = 79


def cylinder_mesh(rings: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A closed-around open-ended cylinder: vertices ``[R*C, 3]``, faces ``[F, 3]`` and a UV
    layout with a seam, ``vt [R*(C+1), 2]``, ``ft [F, 3]`` (``F = 2 (R-1) C``)."""
    angle = 2 * np.pi * np.arange(columns) / columns
    height = np.linspace(-1.2, 0.5, rings)  # roughly where SMPL-X's template sits
    verts = np.stack([0.2 * np.cos(angle)[None].repeat(rings, 0), height[:, None].repeat(columns, 1),
                      0.2 * np.sin(angle)[None].repeat(rings, 0)], -1).reshape(-1, 3)
    vt = np.stack(np.meshgrid(np.linspace(0, 1, columns + 1), np.linspace(0, 1, rings)), -1).reshape(-1, 2)
    faces, ft = [], []
    for r in range(rings - 1):
        for c in range(columns):
            a, b = r * columns + c, r * columns + (c + 1) % columns
            ta, tb = r * (columns + 1) + c, r * (columns + 1) + c + 1
            faces += [(a, b, a + columns), (b, b + columns, a + columns)]
            ft += [(ta, tb, ta + columns + 1), (tb, tb + columns + 1, ta + columns + 1)]
    return verts, np.asarray(faces), vt, np.asarray(ft)


def random_smplx_arrays(rings: int = 12, columns: int = 16, num_shape: int = 400,
                        seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a random SMPL-X model file (official key names, dtypes and shapes)."""
    rng = np.random.default_rng(seed)
    verts, faces, vt, ft = cylinder_mesh(rings, columns)
    v, j = len(verts), NUM_SMPLX_JOINTS
    verts = verts + rng.normal(0, 0.01, verts.shape)
    weights = np.zeros((v, j))
    for i in range(v):  # four influences per vertex, as in the real model
        weights[i, rng.choice(j, 4, replace=False)] = rng.dirichlet(np.ones(4))
    regressor = np.zeros((j, v))
    for i in range(j):
        regressor[i, rng.choice(v, 6, replace=False)] = rng.dirichlet(np.ones(6))
    kintree = np.stack([np.asarray(SMPLX_PARENTS, np.int64), np.arange(j)])
    kintree[0, 0] = 4294967295  # as in the official files (uint32 -1)
    hands_l, hands_r = (np.linalg.qr(rng.normal(size=(45, 45)))[0] for _ in range(2))
    return {
        "v_template": verts.astype(np.float64),
        "f": faces.astype(np.uint32),
        "J_regressor": regressor,
        "kintree_table": kintree,
        "weights": weights,
        "posedirs": rng.normal(0, 0.005, (v, 3, (j - 1) * 9)),
        "shapedirs": rng.normal(0, 0.01, (v, 3, num_shape)),
        "hands_componentsl": hands_l, "hands_componentsr": hands_r,
        "hands_meanl": rng.normal(0, 0.2, 45), "hands_meanr": rng.normal(0, 0.2, 45),
        "hands_coeffsl": rng.normal(size=(12, 6)), "hands_coeffsr": rng.normal(size=(12, 6)),
        "lmk_faces_idx": rng.integers(0, len(faces), NUM_LANDMARKS).astype(np.uint32),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), NUM_LANDMARKS),
        "dynamic_lmk_faces_idx": rng.integers(0, len(faces), (NUM_DYNAMIC_ANGLES, NUM_DYNAMIC_LANDMARKS)),
        "dynamic_lmk_bary_coords": rng.dirichlet(np.ones(3), (NUM_DYNAMIC_ANGLES, NUM_DYNAMIC_LANDMARKS)),
        "vt": vt, "ft": ft.astype(np.uint32),
    }


def write_obj(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The UV layout as an ``.obj`` like ``smplx_uv.obj`` (``v``, ``vt``, ``f v/vt``)."""
    lines = ["# random SMPL-X stand-in", "o smplx_uv"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in arrays["v_template"]]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in arrays["vt"]]
    lines.append("s off")
    lines += ["f " + " ".join(f"{a + 1}/{b + 1}" for a, b in zip(f, t))
              for f, t in zip(arrays["f"].astype(np.int64), arrays["ft"].astype(np.int64))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_smplx_model(folder: Path, gender: str = "neutral", fmt: str = "npz", uv_obj: bool = True,
                      uv_keys: bool = True, arrays: Optional[dict[str, np.ndarray]] = None,
                      **kwargs) -> Path:
    """Write ``SMPLX_<GENDER>.<fmt>`` (``npz`` or ``pkl``) and, with ``uv_obj``, ``smplx_uv.obj``
    into ``folder``; ``kwargs`` go to :func:`random_smplx_arrays`. Returns the model file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(random_smplx_arrays(**kwargs) if arrays is None else arrays)
    if uv_obj:
        write_obj(folder / "smplx_uv.obj", arrays)
    if not uv_keys:
        arrays.pop("vt"), arrays.pop("ft")
    path = folder / f"SMPLX_{gender.upper()}.{fmt}"
    if fmt == "npz":
        np.savez(path, **arrays)
    else:  # our own arrays; only the smplx package unpickles them
        with open(path, "wb") as handle:
            pickle.dump(arrays, handle)
    return path
