"""The release's calibrated views (``core/dataset/camera_full_calibration.json``).

The file holds 90 cameras: three rings of 30, at elevations -30, 0 and 45 degrees, azimuths
``12 k`` degrees (``k = 0..29``, wrapping past 180 to negative angles), 2.5 m from the origin and
looking at it with world +Y up, each ``1024 x 1024`` px with ``fx = fy = 1100`` and the principal
point at the centre. View ``i`` is ring ``i // 30``, step ``i % 30``. The release's inference
script renders these 20 of them, in this order, at 512 x 512 (the same field of view)::

    30, 37, 45, 53, 65, 85, 0, 6, 15, 24, 34, 41, 49, 57, 60, 68, 72, 75, 80, 83

They are generated here from that rule (no file needed); ``scripts/dev/check_official_views.py``
compares them with the release's JSON.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from sigman.render.cameras import Camera, look_at

RELEASE_RING_ELEVATIONS = (-30.0, 0.0, 45.0)  # degrees
RELEASE_VIEWS_PER_RING = 30
RELEASE_RADIUS = 2.5  # m
RELEASE_FOCAL = 1100.0  # px at RELEASE_CALIBRATED_SIZE
RELEASE_CALIBRATED_SIZE = 1024  # px
RELEASE_RENDER_SIZE = 512  # px, the release's output_size
RELEASE_INFERENCE_VIEWS = (30, 37, 45, 53, 65, 85, 0, 6, 15, 24, 34, 41, 49, 57, 60, 68, 72, 75, 80, 83)
NUM_RELEASE_VIEWS = len(RELEASE_RING_ELEVATIONS) * RELEASE_VIEWS_PER_RING


def release_view_angles(view_id: int) -> tuple[float, float]:
    """``(elevation, azimuth)`` in degrees of the release's view ``view_id`` (0..89); azimuth 0
    is on +Z (in front of the body), 90 on +X."""
    if not 0 <= int(view_id) < NUM_RELEASE_VIEWS:
        raise ValueError(f"the release has views 0..{NUM_RELEASE_VIEWS - 1}, got {view_id}")
    ring, step = divmod(int(view_id), RELEASE_VIEWS_PER_RING)
    azimuth = 12.0 * step
    return RELEASE_RING_ELEVATIONS[ring], azimuth - 360.0 if azimuth > 180.0 else azimuth


def release_cameras(view_ids: Sequence[int] = RELEASE_INFERENCE_VIEWS, size: int = RELEASE_RENDER_SIZE) -> Camera:
    """The release's cameras ``view_ids`` rendered at ``size x size`` px (focal scaled with it)."""
    eyes = []
    for vid in view_ids:
        el, az = (math.radians(a) for a in release_view_angles(vid))
        eyes.append([RELEASE_RADIUS * math.cos(el) * math.sin(az), RELEASE_RADIUS * math.sin(el),
                     RELEASE_RADIUS * math.cos(el) * math.cos(az)])
    viewmats = look_at(torch.tensor(eyes, dtype=torch.float64)).float()
    f = RELEASE_FOCAL * size / RELEASE_CALIBRATED_SIZE
    k = torch.tensor([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]])
    return Camera(viewmats, k.expand(len(view_ids), 3, 3).clone(), size, size)
