"""Measure the depth bias of MediaPipe's world landmarks on frontal renders of the project's bodies
(cases from scripts/dev/pose_cases.py), as sigman.world_landmarks.WORLD_DEPTH_BIAS holds it.

    python scripts/dev/pose_cases.py --seed 7 --random 8 --views front side --out outputs/pose_cases_s7.pkl
    python scripts/dev/calibrate_world_bias.py outputs/pose_cases_s7.pkl

Per landmark: the world landmark's depth minus the true marker's (hip-centred camera axes), with the
true markers brought to the world landmarks' size first; mean over the frontal cases, left and right
averaged (the bias of a symmetric body is symmetric).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from sigman.observation import BLAZEPOSE_LANDMARKS  # noqa: E402

BODY = list(range(11, 17)) + list(range(23, 33))


def mirror_index() -> list[int]:
    swap = lambda n: n.replace("left", "#").replace("right", "left").replace("#", "right")
    return [BLAZEPOSE_LANDMARKS.index(swap(n)) for n in BLAZEPOSE_LANDMARKS]


def main() -> int:
    res = []
    for path in sys.argv[1:]:
        for c in pickle.load(open(path, "rb")):
            if c["view"] != "front" or c["mediapipe"] is None:
                continue
            mc = c["markers_cam"].numpy().astype(np.float64)
            mc = mc - 0.5 * (mc[23] + mc[24])
            w = c["mediapipe"].world_landmarks.astype(np.float64)
            s = (w[BODY] * mc[BODY]).sum() / (w[BODY] ** 2).sum()
            res.append(w[:, 2] - mc[:, 2] / s)
    r = np.asarray(res)
    mean = 0.5 * (r.mean(0) + r.mean(0)[mirror_index()])
    print(f"{len(r)} frontal cases; depth bias (m), std over cases:")
    for name, m, sd in zip(BLAZEPOSE_LANDMARKS, mean, r.std(0)):
        print(f"  {name:18s} {m:+.3f}  {sd:.3f}")
    print("(" + ", ".join(f"{m:.3f}" for m in mean) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
