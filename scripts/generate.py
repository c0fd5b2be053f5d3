"""Photo + pose -> an animatable Gaussian avatar.

    python scripts/generate.py --image assets/examples/person_00.png --pose assets/poses/waving.npz --out outputs/gen

Writes into ``--out``: ``views.png`` (multi-view renders of the posed avatar), ``turntable.mp4``,
``avatar.ply`` (standard 3DGS, posed), ``avatar_canonical.ply`` and ``avatar.glb`` (the rigged
avatar: Gaussians + skeleton + skin weights, reposable), and ``input.png`` (the preprocessed photo).
A motion (``--motion walk_cycle`` or an SMPL-X/AMASS sequence) also writes ``motion.mp4``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sigman.exporting import export_avatar  # noqa: E402
from sigman.pipeline import PipelineConfig, SigmanPipeline  # noqa: E402
from sigman.preprocess import ImageInputError  # noqa: E402
from sigman.pose import PoseFileError  # noqa: E402
from sigman.weights import WeightsError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo of one person (PNG with alpha, or plain background)")
    parser.add_argument("--pose", default="a_pose", help="preset name or SMPL-X/AMASS .npz (first frame is rendered)")
    parser.add_argument("--motion", default=None, help="optional motion (preset or .npz sequence) for motion.mp4")
    parser.add_argument("--out", type=Path, default=Path("outputs/generate"))
    parser.add_argument("--weights", default=None, help="model folder (default: assets/weights/demo)")
    parser.add_argument("--random-weights", action="store_true", help="untrained models (smoke test)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--sampler", default=None, choices=["ddim", "dpmpp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--view-set", default="orbit", choices=["orbit", "release"],
                        help="orbit: --views cameras fitted around the body; release: the release's 20 calibrated views")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=48, help="turntable frames")
    parser.add_argument("--preprocess", default=None, choices=["crop", "release"],
                        help="photo preprocessing: crop (the person's square, the default) or release "
                             "(the release script's whole-photo resize); default: the model folder's")
    parser.add_argument("--up-axis", default="auto", choices=["auto", "y", "z"],
                        help="up axis of the pose file (auto: detected; a Z-up file is rotated to +Y up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

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
        files = export_avatar(pipe, result, args.out, turntable_frames=args.frames, size=args.size, motion=args.motion)
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
