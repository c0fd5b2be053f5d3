"""Render a posed body made of UV Gaussians: a 4-view PNG and a turntable mp4.

    python scripts/render_body.py --pose waving --out outputs/body          # CPU: well under a minute
    python scripts/render_body.py --pose assets/poses/sitting.npz --uv-res 512 --frames 90
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from sigman.body import load_body_model  # noqa: E402
from sigman.gaussians import repose, surface_gaussians  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402
from sigman.render import fit_orbit_to_points, image_grid, render, render_turntable, write_image, write_video  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402


def shade(gaussians, light=(0.3, 0.5, 1.0), ambient: float = 0.35):
    """Bake simple Lambert shading into the colours (each Gaussian's normal is its local +Z)."""
    import roma

    from sigman.lbs import wxyz_to_xyzw

    normals = roma.unitquat_to_rotmat(wxyz_to_xyzw(gaussians.quats))[..., :, 2]
    light = torch.nn.functional.normalize(torch.tensor(light, device=normals.device), dim=0)
    lambert = (normals @ light).abs()  # flat Gaussians are two-sided
    return gaussians.colors * (ambient + (1 - ambient) * lambert)[..., None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pose", default="waving", help="preset name or SMPL-X/AMASS .npz (first frame)")
    parser.add_argument("--body", default="anny", choices=["anny", "smplx"])
    parser.add_argument("--uv-res", type=int, default=256, help="UV resolution: one Gaussian per covered texel")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels")
    parser.add_argument("--frames", type=int, default=48, help="turntable frames")
    parser.add_argument("--out", type=Path, default=Path("outputs/body"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    start = time.perf_counter()
    body = load_body_model(args.body).to(args.device)
    template = build_uv_template(body, args.uv_res)
    pose = resolve_pose(args.pose).frame(0)
    gaussians = surface_gaussians(template)
    posed = repose(gaussians, body.pose_transforms(pose)[0])
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    posed = posed.with_(colors=shade(posed))
    cameras = fit_orbit_to_points(posed.means, n_views=4, width=args.size, height=args.size)
    views = render(posed, cameras).rgb
    args.out.mkdir(parents=True, exist_ok=True)
    write_image(args.out / "views.png", image_grid((views.clamp(0, 1) * 255).byte().cpu().numpy(), ncols=4))
    frames = render_turntable(posed, n_frames=args.frames, size=args.size)
    write_video(args.out / "turntable.mp4", frames, fps=24)
    print(f"{template.num_points} Gaussians, pose '{args.pose}', {args.device}: "
          f"{args.out / 'views.png'} and {args.out / 'turntable.mp4'} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
