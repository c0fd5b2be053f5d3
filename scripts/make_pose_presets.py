"""Write the pose presets and motions of :mod:`sigman.presets` to ``assets/poses/*.npz``.

    python scripts/make_pose_presets.py [--out assets/poses]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.paths import poses_dir  # noqa: E402
from sigman.pose import save_pose  # noqa: E402
from sigman.presets import MOTION_PRESETS, POSE_PRESETS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=poses_dir())
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in {**POSE_PRESETS, **MOTION_PRESETS}.items():
        pose = make()
        save_pose(args.out / f"{name}.npz", pose)
        print(f"{args.out / name}.npz  ({pose.num_frames} frame{'s' if pose.num_frames > 1 else ''})")


if __name__ == "__main__":
    main()
