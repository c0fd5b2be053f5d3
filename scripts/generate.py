"""Photo + pose -> an animatable Gaussian avatar (the ``sigman-generate`` command, from a checkout).

    python scripts/generate.py --image assets/examples/person_00.png --pose assets/poses/waving.npz --out outputs/gen

<<<<<<< HEAD
See :mod:`sigman.cli` (``--help``) for the options and the files it writes.
=======
Writes into ``--out``: ``views.png`` (multi-view renders of the posed avatar), ``turntable.mp4``,
``avatar.ply`` (standard 3DGS, posed), ``avatar_canonical.ply`` and ``avatar.glb`` (the rigged
avatar: Gaussians + skeleton + skin weights, reposable), and ``input.png`` (the preprocessed photo).
A motion (``--motion walk_cycle`` or an SMPL-X/AMASS sequence) also writes ``motion.mp4``.

Limits (see sigman/settings.py and sigman/sequences.py): --size 64..2048, --steps 1..200,
--guidance 0..20, --seed 0..2147483647, --views 0..16, --frames 0..720. A --pose sequence is
posed in its first frame (the rest is never read). A --motion keeps at most 240 frames on a GPU,
90 on a CPU (--max-motion-frames): longer ones keep every k-th frame (a motion too long to show
whole at 6 fps keeps its beginning); a single pose is refused as a motion. Every user error is one
line on stderr and exit code 2.
>>>>>>> refs/heads/cli
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

<<<<<<< HEAD
from sigman.cli import main  # noqa: E402
=======
from sigman.cli import OneLineParser, float_in, int_in, run_main, writable_folder  # noqa: E402
from sigman.settings import (  # noqa: E402 - no torch yet: argument errors come at once
    MAX_GUIDANCE, MAX_MOTION_FRAMES, MAX_MOTION_FRAMES_CPU, MAX_RENDER_SIZE, MAX_SEED, MAX_STEPS,
    MAX_TURNTABLE_FRAMES, MAX_VIEWS, MIN_GUIDANCE, MIN_RENDER_SIZE, MIN_SEED, MIN_STEPS, MIN_TURNTABLE_FRAMES,
    MIN_VIEWS, SAMPLER_NAMES, check_device, default_device,
)


def build_parser() -> OneLineParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo of one person (PNG with alpha, or plain background)")
    parser.add_argument("--pose", default="a_pose", help="preset name or SMPL-X/AMASS .npz (its first frame is used)")
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
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    return parser


def generate(args, random_config=None, body=None) -> int:
    """Check every input before any model is loaded, then generate and export."""
    from tqdm import tqdm

    from sigman.exporting import export_avatar
    from sigman.pipeline import PipelineConfig, SigmanPipeline, load_pipeline_config
    from sigman.preprocess import preprocess_person
    from sigman.sequences import load_motion, load_pose_frame, motion_frame_limit

    start = time.perf_counter()
    device = check_device(args.device or default_device())
    pose = load_pose_frame(args.pose)
    motion = None
    if args.motion is not None:
        motion, note = load_motion(args.motion, args.max_motion_frames or motion_frame_limit(device))
        if note:
            print(f"note: {note}", file=sys.stderr)
    preprocess_person(args.image, size=32)  # every check the pipeline makes on the photo, on a tiny crop
    if not args.random_weights:
        load_pipeline_config(args.weights)  # a missing or foreign model folder is named before any loading
    out = writable_folder(args.out)  # created only once every input is known to be good

    pipe = (SigmanPipeline.from_config(random_config or PipelineConfig(), device=str(device), body=body)
            if args.random_weights else SigmanPipeline.from_pretrained(args.weights, device=str(device), body=body))
    with tqdm(total=100, desc="generate", unit="%", bar_format="{l_bar}{bar}| {postfix}") as bar:
        def progress(fraction: float, stage: str) -> None:
            bar.n = int(round(100 * fraction))
            bar.set_postfix_str(stage)
            bar.refresh()
        result = pipe(args.image, pose, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                      seed=args.seed, num_views=args.views, render_size=args.size, progress=progress)
    files = export_avatar(pipe, result, out, turntable_frames=args.frames, size=args.size, motion=motion)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{result.canonical.num_gaussians} Gaussians on {device} in {time.perf_counter() - start:.1f} s ({timings})")
    for path in files:
        print(f"  {path}")
    return 0

>>>>>>> refs/heads/cli

def main(argv: Optional[list[str]] = None, random_config=None, body=None) -> int:
    """The command line (``argv``: the arguments after the script name). ``random_config``: the
    :class:`~sigman.pipeline.PipelineConfig` behind ``--random-weights``, ``body``: a loaded body
    model (tests pass a tiny config and their shared body)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a bad argument (already reported in one line)
        return int(done.code or 0)
    return run_main(lambda: generate(args, random_config, body))


if __name__ == "__main__":
    sys.exit(main())
