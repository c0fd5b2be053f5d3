"""Photo + pose -> an animatable Gaussian avatar, from the command line.

    sigman-generate --image person.png --pose photo --motion walk_cycle --out outputs/gen
    (in a checkout: python scripts/generate.py ...)

Writes into ``--out``: ``views.png`` (multi-view renders of the posed avatar), ``turntable.mp4``,
``avatar.ply`` (standard 3DGS, posed; full Inria layout, ``--compact-ply`` for 17 properties),
``avatar_canonical.ply``, ``avatar.glb`` (the rigged avatar: Gaussians + skeleton + skin weights,
reposable), ``avatar_mesh.glb`` (a skinned, textured mesh for Blender, three.js and game engines),
``input.png`` (the encoder's crop of the photo), ``input_view.png`` (the avatar in the photo's pose
from the photo's camera, to hold against the photo) and ``photo_pose.npz`` (the pose of the person
in the photo). A motion (``--motion walk_cycle`` or an SMPL-X/AMASS sequence) also writes
``motion.mp4`` and rides in both ``.glb`` files as their animation.

By default the seen side of the avatar is the photo itself (the body is fitted to the photo, the
photo is projected onto the avatar and refined against it; ``--no-refine`` gives the raw model
output). ``--pose photo`` poses the avatar as the person stands in the photo.

Limits (see sigman/settings.py and sigman/sequences.py): --size 64..2048, --steps 1..200,
--guidance 0..20, --seed 0..2147483647, --views 0..16, --frames 0..720. A --pose sequence is
posed in its first frame (the rest is never read). A --motion keeps at most 240 frames on a GPU,
90 on a CPU (--max-motion-frames): longer ones keep every k-th frame (a motion too long to show
whole at 6 fps keeps its beginning); a single pose is refused as a motion. Every user error is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from sigman.cli import OneLineParser, float_in, int_in, run_command, writable_folder  # noqa: E402
from sigman.settings import (  # noqa: E402 - no torch yet: argument errors come at once
    MAX_GUIDANCE, MAX_MOTION_FRAMES, MAX_MOTION_FRAMES_CPU, MAX_RENDER_SIZE, MAX_SEED, MAX_STEPS,
    MAX_TURNTABLE_FRAMES, MAX_VIEWS, MIN_GUIDANCE, MIN_RENDER_SIZE, MIN_SEED, MIN_STEPS, MIN_TURNTABLE_FRAMES,
    MIN_VIEWS, SAMPLER_NAMES, check_device, default_device,
)


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo of one person (PNG with alpha, or plain background)")
    parser.add_argument("--pose", default="a_pose",
                        help="preset name, SMPL-X/AMASS .npz (its first frame is used), or 'photo' (as in the photo)")
    parser.add_argument("--motion", default=None, help="optional motion (preset or .npz sequence) for motion.mp4")
    parser.add_argument("--max-motion-frames", type=int_in(2, MAX_MOTION_FRAMES * 4), default=None,
                        help=f"frames of motion.mp4 at most (default {MAX_MOTION_FRAMES} on a GPU, "
                             f"{MAX_MOTION_FRAMES_CPU} on a CPU)")
    parser.add_argument("--out", type=Path, default=Path("outputs/generate"), help="folder to write into")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", default=None, help="model folder (default: assets/weights/demo)")
    weights.add_argument("--random-weights", action="store_true", help="untrained models (smoke test)")
    parser.add_argument("--steps", type=int_in(MIN_STEPS, MAX_STEPS), default=None,
                        help=f"sampling steps, {MIN_STEPS}..{MAX_STEPS} (default: the model's)")
    parser.add_argument("--guidance", type=float_in(MIN_GUIDANCE, MAX_GUIDANCE), default=None,
                        help=f"classifier-free guidance, {MIN_GUIDANCE:g}..{MAX_GUIDANCE:g} (default: the model's)")
    parser.add_argument("--sampler", default=None, choices=list(SAMPLER_NAMES))
    parser.add_argument("--seed", type=int_in(MIN_SEED, MAX_SEED), default=0, help="sampling noise seed")
    parser.add_argument("--views", type=int_in(MIN_VIEWS, MAX_VIEWS), default=4,
                        help=f"views in views.png, {MIN_VIEWS}..{MAX_VIEWS} (0: none)")
    parser.add_argument("--size", type=int_in(MIN_RENDER_SIZE, MAX_RENDER_SIZE), default=512,
                        help=f"render size in pixels, {MIN_RENDER_SIZE}..{MAX_RENDER_SIZE}")
    parser.add_argument("--frames", type=int_in(MIN_TURNTABLE_FRAMES, MAX_TURNTABLE_FRAMES), default=48,
                        help=f"turntable frames, {MIN_TURNTABLE_FRAMES}..{MAX_TURNTABLE_FRAMES} (0: no turntable)")
    parser.add_argument("--no-refine", action="store_true",
                        help="the raw model output: do not carry the photo's own pixels onto the avatar")
    parser.add_argument("--view-set", default="orbit", choices=["orbit", "release"],
                        help="orbit: --views cameras fitted around the body; release: the release's 20 calibrated views")
    parser.add_argument("--preprocess", default=None, choices=["crop", "release"],
                        help="photo preprocessing: crop (the person's square, the default) or release "
                             "(the release script's whole-photo resize); default: the model folder's")
    parser.add_argument("--up-axis", default="auto", choices=["auto", "y", "z"],
                        help="up axis of pose files (auto: detected; a Z-up file is rotated to +Y up)")
    parser.add_argument("--compact-ply", action="store_true",
                        help="write 17-property .ply files (SH degree 0) instead of the full Inria layout")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    return parser


def generate(args, random_config=None, body=None) -> int:
    """Check every input before any model is loaded, then generate and export."""
    from tqdm import tqdm

    from sigman.exporting import export_avatar
    from sigman.pipeline import PipelineConfig, SigmanPipeline, load_pipeline_config
    from sigman.preprocess import preprocess_person
    from sigman.sequences import load_motion, motion_frame_limit, read_pose_frame

    start = time.perf_counter()
    device = check_device(args.device or default_device())
    pose = "photo"
    if args.pose != "photo":
        pose, note = read_pose_frame(args.pose, args.up_axis)
        if note:
            print(f"note: {note}", file=sys.stderr)
    motion = None
    if args.motion is not None:
        motion, note = load_motion(args.motion, args.max_motion_frames or motion_frame_limit(device), args.up_axis)
        if note:
            print(f"note: {note}", file=sys.stderr)
    preprocess_person(args.image, size=32)  # every check the pipeline makes on the photo, on a tiny crop
    if not args.random_weights:
        load_pipeline_config(args.weights)  # a missing or foreign model folder is named before any loading
    out = writable_folder(args.out)  # created only once every input is known to be good

    pipe = (SigmanPipeline.from_config(random_config or PipelineConfig(), device=str(device), body=body)
            if args.random_weights else SigmanPipeline.from_pretrained(args.weights, device=str(device), body=body))
    if args.preprocess:
        pipe.config.preprocess = args.preprocess
    with tqdm(total=100, desc="generate", unit="%", bar_format="{l_bar}{bar}| {postfix}") as bar:
        def progress(fraction: float, stage: str) -> None:
            bar.n = int(round(100 * fraction))
            bar.set_postfix_str(stage)
            bar.refresh()
        result = pipe(args.image, pose, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                      seed=args.seed, num_views=args.views, render_size=args.size, progress=progress,
                      views=args.view_set, refine=not args.no_refine)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    files = export_avatar(pipe, result, out, turntable_frames=args.frames, size=args.size, motion=motion,
                          compact_ply=args.compact_ply)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{result.canonical.num_gaussians} Gaussians on {device} in {time.perf_counter() - start:.1f} s ({timings})")
    for path in files:
        print(f"  {path}")
    return 0


def main(argv: Optional[list[str]] = None, random_config=None, body=None) -> int:
    """The command line (``argv``: the arguments after the script name). ``random_config``: the
    :class:`~sigman.pipeline.PipelineConfig` behind ``--random-weights``, ``body``: a loaded body
    model (tests pass a tiny config and their shared body)."""
    return run_command(lambda: build_parser().parse_args(argv), lambda args: generate(args, random_config, body))


if __name__ == "__main__":
    sys.exit(main())
