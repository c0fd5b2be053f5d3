"""Motion from a video of one person: an SMPL-X pose sequence (.npz) that sigman's poses load.

    python scripts/video_to_motion.py --video dance.mp4 --out dance_motion.npz
    python scripts/video_to_motion.py --video long.mp4 --out clip.npz --max-seconds 10 --fps 15

Videos longer than 60 s (or 1800 frames after --fps) are refused unless --max-seconds picks their
beginning. Frames where the person is lost are interpolated (and said so). Exit code 2 on bad
input, with a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, required=True, help="input video (.mp4, .mov, .webm, ...)")
    parser.add_argument("--out", type=Path, required=True, help="output motion .npz")
    parser.add_argument("--max-seconds", type=float, default=None, help="use only the first N seconds (N <= 60)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (<= the video's)")
    parser.add_argument("--body", default="anny", choices=["anny", "smplx"])
    parser.add_argument("--no-smooth", action="store_true", help="skip the One-Euro filter")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from sigman.video_motion import VideoInputError, VideoMotionConfig, video_to_motion

    try:
        config = VideoMotionConfig(fps=args.fps, max_seconds=args.max_seconds, smooth=not args.no_smooth)
        motion = video_to_motion(args.video, args.out, args.body, config, progress=not args.quiet)
    except (VideoInputError, FileNotFoundError, ValueError, RuntimeError, ImportError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    for note in motion.notes:
        print(f"note: {note}")
    s = motion.seconds
    n = motion.num_frames
    print(f"{n} frames at {motion.pose.fps:g} fps -> {args.out} in {s['total']:.1f} s "
          f"({n / max(s['total'], 1e-9):.1f} frames/s; tracking {s['track']:.1f} s, fitting {s['fit']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
