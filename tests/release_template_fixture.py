"""Stand-ins for the licensed files the release's template is built from, for tests.

Beside the random SMPL-X models of :mod:`tests.smplx_fixture` (``SMPLX_MALE.npz`` and
``SMPLX_NEUTRAL.npz``, one cylinder mesh with a UV seam, and ``smplx_uv.obj``), this writes a
small "FLAME" head: the top rings of the cylinder, mapped to SMPL-X by
``SMPL-X__FLAME_vertex_ids.npy``; ``head_template.obj`` (its faces with their own UVs) and
``head_template_mesh_mouth.obj`` (the same plus ``MOUTH_FACES`` mouth faces on extra UVs);
``FLAME_masks.pkl`` (face, ears, forehead, neck regions; some head vertices in none, the
"outside"); and ``smplx_vert_segmentation.json`` (eyes and hands).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from tests.smplx_fixture import random_smplx_arrays, write_obj

RINGS, COLUMNS = 12, 16
HEAD_RINGS = 4  # the top rings are the "FLAME" head
MOUTH_FACES = 30  # as many as the release's mouth interior


def _write_flame_obj(path: Path, verts: np.ndarray, vt: np.ndarray, faces: np.ndarray, ft: np.ndarray) -> None:
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in verts.tolist()]
    lines += [f"vt {u!r} {v!r}" for u, v in vt.tolist()]
    lines += ["f " + " ".join(f"{a + 1}/{b + 1}" for a, b in zip(f, t)) for f, t in zip(faces.tolist(), ft.tolist())]
    path.write_text("\n".join(lines) + "\n")


def write_release_template_files(folder: Path, seed: int = 0, rings: int = RINGS, columns: int = COLUMNS) -> Path:
    """Write every file :func:`sigman.official.template.find_template_files` needs into ``folder``
    (``rings x columns`` vertices; the release's own scripts need exactly 10,475 = 25 x 419)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = random_smplx_arrays(rings, columns, seed=seed)
    np.savez(folder / "SMPLX_NEUTRAL.npz", **arrays)
    np.savez(folder / "SMPLX_MALE.npz", **random_smplx_arrays(rings, columns, seed=seed + 1))
    write_obj(folder / "smplx_uv.obj", arrays)

    rng = np.random.default_rng(seed)
    v = rings * columns
    head = np.arange(v - HEAD_RINGS * columns, v)  # SMPL-X ids of the FLAME vertices
    local = -np.ones(v, np.int64)
    local[head] = np.arange(len(head))
    faces = arrays["f"].astype(np.int64)
    inside = (local[faces] >= 0).all(axis=1)
    flame_faces = local[faces[inside]]
    flame_vt = rng.uniform(0.0, 1.0, (len(head), 2))
    flame_ft = flame_faces.copy()  # one UV per FLAME vertex
    verts = arrays["v_template"][head]
    _write_flame_obj(folder / "head_template.obj", verts, flame_vt, flame_faces, flame_ft)

    mouth_vt = rng.uniform(0.0, 1.0, (12, 2))
    mouth_faces, seen = [], {tuple(f) for f in flame_faces.tolist()}
    while len(mouth_faces) < MOUTH_FACES:
        f = tuple(rng.choice(columns, 3, replace=False).tolist())  # across the top ring: new triangles
        if f not in seen:
            seen.add(f)
            mouth_faces.append(f)
    mouth_ft = len(head) + np.stack([rng.choice(len(mouth_vt), 3, replace=False) for _ in range(MOUTH_FACES)])
    _write_flame_obj(folder / "head_template_mesh_mouth.obj", verts, np.concatenate([flame_vt, mouth_vt]),
                     np.concatenate([flame_faces, np.asarray(mouth_faces)]), np.concatenate([flame_ft, mouth_ft]))
    np.save(folder / "SMPL-X__FLAME_vertex_ids.npy", head.astype(np.int64))

    n = len(head)
    masks = {"face": np.arange(0, n // 2), "forehead": np.arange(n // 2 - 6, n // 2),
             "left_ear": np.arange(n // 2, n // 2 + 4), "right_ear": np.arange(n // 2 + 4, n // 2 + 8),
             "neck": np.arange(n // 2 + 8, n - 10)}  # the last 10 head vertices are in no region
    with open(folder / "FLAME_masks.pkl", "wb") as handle:
        pickle.dump({k: np.asarray(m, np.int64) for k, m in masks.items()}, handle, protocol=2)
    segs = {"leftEye": [int(head[1])], "rightEye": [int(head[2])], "leftHand": list(range(0, 8)),
            "rightHand": list(range(8, 16)), "leftHandIndex1": [16, 17], "rightHandIndex1": [18, 19],
            "leftFoot": [], "rightFoot": [], "leftToeBase": [], "rightToeBase": []}
    (folder / "smplx_vert_segmentation.json").write_text(json.dumps(segs))
    return folder
