"""Render a posed body made of UV Gaussians: a 4-view PNG and a turntable mp4.

    python scripts/render_body.py --pose waving --out outputs/body          # CPU: well under a minute
    python scripts/render_body.py --pose assets/poses/sitting.npz --uv-res 512 --frames 90
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from sigman.body import load_body_model  # noqa: E402
from sigman.cli import OneLineParser, int_in, run_command, writable_folder  # noqa: E402
from sigman.gaussians import repose, surface_gaussians  # noqa: E402
from sigman.render import fit_orbit_to_points, image_grid, render, render_turntable, write_image, write_video  # noqa: E402
from sigman.sequences import load_pose_frame  # noqa: E402
from sigman.settings import MAX_RENDER_SIZE, MAX_TURNTABLE_FRAMES, MIN_RENDER_SIZE, check_device  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402


def shade(gaussians, light=(0.3, 0.5, 1.0), ambient: float = 0.35):
    """Bake simple Lambert shading into the colours (each Gaussian's normal is its local +Z)."""
    import roma

    from sigman.lbs import wxyz_to_xyzw

    normals = roma.unitquat_to_rotmat(wxyz_to_xyzw(gaussians.quats))[..., :, 2]
    light = torch.nn.functional.normalize(torch.tensor(light, device=normals.device), dim=0)
    lambert = (normals @ light).abs()  # flat Gaussians are two-sided
    return gaussians.colors * (ambient + (1 - ambient) * lambert)[..., None]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pose", default="waving", help="preset name or SMPL-X/AMASS .npz (first frame)")
    parser.add_argument("--body", default="anny", choices=["anny", "smplx"])
    parser.add_argument("--uv-res", type=int_in(16, 1024), default=256,
                        help="UV resolution, 16..1024: one Gaussian per covered texel")
    parser.add_argument("--size", type=int_in(MIN_RENDER_SIZE, MAX_RENDER_SIZE), default=512,
                        help=f"image size in pixels, {MIN_RENDER_SIZE}..{MAX_RENDER_SIZE}")
    parser.add_argument("--frames", type=int_in(1, MAX_TURNTABLE_FRAMES), default=48,
                        help=f"turntable frames, 1..{MAX_TURNTABLE_FRAMES}")
    parser.add_argument("--out", type=Path, default=Path("outputs/body"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def render_body(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    device = check_device(args.device)
    pose = load_pose_frame(args.pose)
    out = writable_folder(args.out)
    body = load_body_model(args.body).to(device)
    template = build_uv_template(body, args.uv_res)
    gaussians = surface_gaussians(template)
    posed = repose(gaussians, body.pose_transforms(pose)[0])
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    posed = posed.with_(colors=shade(posed))
    cameras = fit_orbit_to_points(posed.means, n_views=4, width=args.size, height=args.size)
    views = render(posed, cameras).rgb
    write_image(out / "views.png", image_grid((views.clamp(0, 1) * 255).byte().cpu().numpy(), ncols=4))
    frames = render_turntable(posed, n_frames=args.frames, size=args.size)
    write_video(out / "turntable.mp4", frames, fps=24)
    print(f"{template.num_points} Gaussians, pose '{args.pose}', {device}: "
          f"{out / 'views.png'} and {out / 'turntable.mp4'} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(lambda: parse_args(argv), render_body)


if __name__ == "__main__":
    sys.exit(main())
