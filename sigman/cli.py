"""Photo + pose -> an animatable Gaussian avatar, from the command line.

    sigman-generate --image person.png --pose waving --motion walk_cycle --out outputs/gen
    (in a checkout: python scripts/generate.py ...)

Writes into ``--out``: ``views.png`` (multi-view renders of the posed avatar), ``turntable.mp4``,
``avatar.ply`` (standard 3DGS, posed; full Inria layout, ``--compact-ply`` for 17 properties),
``avatar_canonical.ply``, ``avatar.glb`` (the rigged avatar: Gaussians + skeleton + skin weights,
reposable) and ``avatar_mesh.glb`` (a skinned, textured mesh for Blender, three.js and game
engines), and ``input.png`` (the preprocessed photo). A motion (``--motion walk_cycle`` or an
SMPL-X/AMASS sequence) also writes ``motion.mp4`` and rides in both ``.glb`` files as their
animation. The weights are the shipped demo weights unless ``--weights DIR`` or
``$SIGMAN_WEIGHTS`` names another model folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from sigman.exporting import export_avatar
from sigman.pipeline import PipelineConfig, SigmanPipeline
from sigman.pose import PoseFileError
from sigman.preprocess import ImageInputError
from sigman.weights import WeightsError


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="sigman-generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo of one person (PNG with alpha, or plain background)")
    parser.add_argument("--pose", default="a_pose", help="preset name or SMPL-X/AMASS .npz (first frame is rendered)")
    parser.add_argument("--motion", default=None, help="optional motion (preset or .npz sequence) for motion.mp4")
    parser.add_argument("--out", type=Path, default=Path("outputs/generate"))
    parser.add_argument("--weights", default=None,
                        help="model folder (default: $SIGMAN_WEIGHTS, else the shipped demo weights)")
    parser.add_argument("--random-weights", action="store_true", help="untrained models (smoke test)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--sampler", default=None, choices=["ddim", "dpmpp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=48, help="turntable frames")
    parser.add_argument("--view-set", default="orbit", choices=["orbit", "release"],
                        help="orbit: --views cameras fitted around the body; release: the release's 20 calibrated views")
    parser.add_argument("--preprocess", default=None, choices=["crop", "release"],
                        help="photo preprocessing: crop (the person's square, the default) or release "
                             "(the release script's whole-photo resize); default: the model folder's")
    parser.add_argument("--up-axis", default="auto", choices=["auto", "y", "z"],
                        help="up axis of the pose file (auto: detected; a Z-up file is rotated to +Y up)")
    parser.add_argument("--compact-ply", action="store_true",
                        help="write 17-property .ply files (SH degree 0) instead of the full Inria layout")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        pipe = (SigmanPipeline.from_config(PipelineConfig(), device=args.device) if args.random_weights
                else SigmanPipeline.from_pretrained(args.weights, device=args.device))
        if args.preprocess:
            pipe.config.preprocess = args.preprocess
        with tqdm(total=100, desc="generate", unit="%", bar_format="{l_bar}{bar}| {postfix}") as bar:
            def progress(fraction: float, stage: str) -> None:
                bar.n = int(round(100 * fraction))
                bar.set_postfix_str(stage)
                bar.refresh()
            result = pipe(args.image, args.pose, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                          seed=args.seed, num_views=args.views, render_size=args.size, progress=progress,
                          up_axis=args.up_axis, views=args.view_set)
        if result.pose_note:
            print(f"note: {result.pose_note}")
        files = export_avatar(pipe, result, args.out, turntable_frames=args.frames, size=args.size, motion=args.motion,
                              compact_ply=args.compact_ply)
    except (ImageInputError, PoseFileError, WeightsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{result.canonical.num_gaussians} Gaussians on {args.device} in {time.perf_counter() - start:.1f} s ({timings})")
    for path in files:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
