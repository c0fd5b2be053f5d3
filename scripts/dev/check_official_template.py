"""Run the release's own template scripts and sigman's template builder on the same stand-in files
and compare what they produce (UVs, positions, TBN frames, region masks, skinning weights).

    python scripts/dev/check_official_template.py RELEASE_CHECKOUT [WORK_DIR]

``RELEASE_CHECKOUT`` is a checkout (or a bare git dir) of ``yyvhang/SIGMAN_release``. The stand-in
files are random (tests/release_template_fixture.py) with the real vertex count (10,475, which the
release's scripts hard-code). The release's scripts run unmodified except that the absolute
``/cpfs01/...`` folder in ``subdivide_smplx.py`` is pointed at the sandbox's ``template/`` folder,
and ``xatlas`` (imported, unused) is stubbed. Needs ``trimesh`` and ``smplx``.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sigman.body.smplx_body import SMPLXBody  # noqa: E402
from sigman.official.template import find_template_files, template_arrays  # noqa: E402
from tests.release_template_fixture import write_release_template_files  # noqa: E402

SCRIPTS = ("preprocess_smplx.py", "subdivide_smplx.py", "utils_smplx.py")
ABSOLUTE = "/cpfs01/user/yangyuhang/E3Gen-main/work_dirs/cache/template/"


def release_script(checkout: Path, name: str) -> str:
    rel = f"core/modules/deformers/{name}"
    if (checkout / rel).is_file():
        return (checkout / rel).read_text()
    return subprocess.run(["git", f"--git-dir={checkout}", "show", f"HEAD:{rel}"], check=True,
                          capture_output=True, text=True).stdout


def main() -> None:
    checkout = Path(sys.argv[1])
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="sigman_release_template_"))
    files = write_release_template_files(work / "files", rings=25, columns=419)
    sandbox = work / "release"
    (sandbox / "template").mkdir(parents=True, exist_ok=True)
    (sandbox / "smplx" / "SMPLX").mkdir(parents=True, exist_ok=True)
    for name in ("smplx_uv.obj", "head_template.obj", "head_template_mesh_mouth.obj", "SMPL-X__FLAME_vertex_ids.npy",
                 "FLAME_masks.pkl", "smplx_vert_segmentation.json"):
        shutil.copy(files / name, sandbox / "template" / name)
    for name in ("SMPLX_MALE.npz", "SMPLX_NEUTRAL.npz"):
        shutil.copy(files / name, sandbox / "smplx" / "SMPLX" / name)

    sys.modules.setdefault("xatlas", types.ModuleType("xatlas"))
    cwd = os.getcwd()
    os.chdir(sandbox)
    try:
        for name in SCRIPTS:
            source = release_script(checkout, name).replace(ABSOLUTE, "./template/")
            path = sandbox / name
            path.write_text(source)
            runpy.run_path(str(path), run_name="__main__")
    finally:
        os.chdir(cwd)

    t = sandbox / "template"
    ours = template_arrays(find_template_files(files))
    body = SMPLXBody(model_path=files, gender="male")
    pairs = torch.from_numpy(ours["corner_pairs"])
    weights = body.skin_weights[pairs.reshape(-1)].reshape(*pairs.shape, -1).mean(-2).mean(-2).numpy()
    checks = {
        "uv (init_uv)": (ours["uv"], np.load(t / "init_uv_smplx_thu.npy")),
        "positions (init_pcd)": (ours["positions"], np.load(t / "init_pcd_smplx_thu.npy")),
        "TBN frames (init_rot)": (ours["frames"], np.load(t / "init_rot_smplx_thu.npy")),
        "skin weights (init_lbsw)": (weights, np.load(t / "init_lbsw_smplx_thu.npy")),
        "face mask": (ours["face_mask"], np.load(t / "face_mask_thu.npy")),
        "hands mask": (ours["hands_mask"], np.load(t / "hands_mask_thu.npy")),
        "outside mask": (ours["outside_mask"], np.load(t / "outside_mask_thu.npy")),
    }
    print(f"N: sigman {len(ours['uv'])}, release {len(np.load(t / 'init_uv_smplx_thu.npy'))}")
    for name, (a, b) in checks.items():
        if a.shape != b.shape:
            print(f"{name}: shapes differ, sigman {a.shape} vs release {b.shape}")
        elif a.dtype == bool:
            print(f"{name}: {int((a != b).sum())} of {a.size} differ ({int(a.sum())} set)")
        else:
            print(f"{name}: max |difference| {np.abs(a.astype(np.float64) - b.astype(np.float64)).max():.3e}")
    print(f"release det(init_rot): {np.unique(np.round(np.linalg.det(np.load(t / 'init_rot_smplx_thu.npy')), 3))}")


if __name__ == "__main__":
    main()
