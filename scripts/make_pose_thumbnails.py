"""Render the pose-preset thumbnails the app shows: the bare anny body in each preset (and the
first frame of each motion), shaded like ``scripts/render_body.py``, seen a little from the side.

    python scripts/make_pose_thumbnails.py                      # -> assets/poses/thumbnails/<name>.png
    python scripts/make_pose_thumbnails.py --size 160 --out assets/poses/thumbnails
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sigman.body import load_body_model  # noqa: E402
from sigman.gaussians import repose, surface_gaussians  # noqa: E402
from sigman.paths import poses_dir  # noqa: E402
from sigman.presets import MOTION_PRESETS, POSE_PRESETS, resolve_pose  # noqa: E402
from sigman.render import fit_orbit_to_points, render, write_image  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402

SUPERSAMPLE = 2  # render at twice the size, then average down (smooth silhouettes at thumbnail size)
BACKGROUND = (0.94, 0.95, 0.97)  # a light grey-blue card, so the thumbnails read as tiles on white


def shade(gaussians, light=(0.3, 0.5, 1.0), ambient: float = 0.35) -> torch.Tensor:
    """Lambert shading baked into the colours, as in ``scripts/render_body.py`` (each flat
    Gaussian's normal is its local +Z; two-sided)."""
    import roma

    from sigman.lbs import wxyz_to_xyzw

    normals = roma.unitquat_to_rotmat(wxyz_to_xyzw(gaussians.quats))[..., :, 2]
    light = F.normalize(torch.tensor(light, device=normals.device, dtype=normals.dtype), dim=0)
    lambert = (normals @ light).abs()
    return gaussians.colors * (ambient + (1 - ambient) * lambert)[..., None]


def render_thumbnail(body, template, pose_name: str, size: int) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the body in the first frame of ``pose_name``."""
    pose = resolve_pose(pose_name).frame(0)
    posed = repose(surface_gaussians(template), body.pose_transforms(pose)[0])
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    posed = posed.with_(colors=shade(posed))
    big = size * SUPERSAMPLE
    camera = fit_orbit_to_points(posed.means, n_views=1, width=big, height=big, fill=0.92, elevation_deg=8.0,
                                 start_azimuth_deg=25.0)
    with torch.no_grad():
        rgb = render(posed, camera, background=BACKGROUND).rgb  # [1, big, big, 3]
    small = F.avg_pool2d(rgb.permute(0, 3, 1, 2), SUPERSAMPLE)[0].permute(1, 2, 0)
    return (small.clamp(0, 1) * 255).round().byte().cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160, help="thumbnail side in pixels")
    parser.add_argument("--uv-res", type=int, default=256, help="UV resolution of the body's Gaussians")
    parser.add_argument("--out", type=Path, default=poses_dir() / "thumbnails")
    args = parser.parse_args()

    start = time.perf_counter()
    body = load_body_model("anny")
    template = build_uv_template(body, args.uv_res)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(POSE_PRESETS) + list(MOTION_PRESETS)
    for name in names:
        write_image(args.out / f"{name}.png", render_thumbnail(body, template, name, args.size))
    print(f"{len(names)} thumbnails of {args.size} px in {args.out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
