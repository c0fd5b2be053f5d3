"""Compare sigman's generated release views with the release's camera_full_calibration.json.

    python scripts/dev/check_official_views.py PATH/TO/camera_full_calibration.json
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from sigman.official.views import NUM_RELEASE_VIEWS, RELEASE_CALIBRATED_SIZE, release_cameras  # noqa: E402

calib = json.load(open(sys.argv[1]))
ids = list(range(NUM_RELEASE_VIEWS))
cams = release_cameras(ids, size=RELEASE_CALIBRATED_SIZE)
worst_r = worst_t = worst_k = 0.0
for i in ids:
    c = calib[f"{i:04d}"]
    worst_r = max(worst_r, float(np.abs(cams.viewmats[i, :3, :3].numpy() - np.asarray(c["R"])).max()))
    worst_t = max(worst_t, float(np.abs(cams.viewmats[i, :3, 3].numpy() - np.asarray(c["T"]).reshape(3)).max()))
    worst_k = max(worst_k, float(np.abs(cams.Ks[i].numpy() - np.asarray(c["K"])).max()))
print(f"{len(ids)} views: max |R diff| {worst_r:.2e}, max |T diff| {worst_t:.2e} m, max |K diff| {worst_k:.2e} px")
