"""What person understanding sees in one photo (or one video frame): the data contract between
:mod:`sigman.person` (which fills it from MediaPipe), :mod:`sigman.fit` (which fits a body to it)
and :mod:`sigman.refine` (which uses its mask).

All image quantities are in the pixels of the image that was observed (the caller's image, at its
own size), pixel ``(x, y)`` with its centre at ``(x + 0.5, y + 0.5)`` as in :mod:`sigman.render.cameras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# MediaPipe BlazePose's 33 landmarks, in its order.
BLAZEPOSE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)
NUM_LANDMARKS = len(BLAZEPOSE_LANDMARKS)

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, end exclusive


@dataclass
class PersonObservation:
    """One person seen in one image.

    Attributes:
        image_size: ``(width, height)`` of the observed image, pixels.
        mask: ``[H, W]`` float32 soft person mask in ``[0, 1]``.
        landmarks: ``[33, 2]`` float32 image positions ``(x, y)`` in pixels (BlazePose order).
        visibility: ``[33]`` float32 in ``[0, 1]``: how likely each landmark is visible and in frame.
        world_landmarks: ``[33, 3]`` float32 metric positions in metres, hip-centred, in MediaPipe's
            camera-aligned axes (+x image right, +y image down, +z away from the camera).
        person_box: the person's box (from the mask and the landmarks).
        face_box: the face's box, or ``None`` when the face is not seen.
        num_people: how many people the detector found (the largest one is this one).
        guessed_parts: body parts out of frame or hidden, whose pose is a guess
            (e.g. ``["left leg", "right foot"]``).
        notes: one-line messages for the user (several people, guessed parts, ...).
    """

    image_size: tuple[int, int]
    mask: np.ndarray
    landmarks: np.ndarray
    visibility: np.ndarray
    world_landmarks: np.ndarray
    person_box: Box
    face_box: Optional[Box] = None
    num_people: int = 1
    guessed_parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        w, h = self.image_size
        if self.mask.shape != (h, w):
            raise ValueError(f"mask must be [{h}, {w}], got {self.mask.shape}")
        if self.landmarks.shape != (NUM_LANDMARKS, 2) or self.visibility.shape != (NUM_LANDMARKS,):
            raise ValueError("landmarks must be [33, 2] and visibility [33]")
        if self.world_landmarks.shape != (NUM_LANDMARKS, 3):
            raise ValueError("world_landmarks must be [33, 3]")

    def index(self, name: str) -> int:
        """Index of a landmark by its BlazePose name."""
        try:
            return BLAZEPOSE_LANDMARKS.index(name)
        except ValueError:
            raise KeyError(f"unknown landmark {name!r}; known: {', '.join(BLAZEPOSE_LANDMARKS)}") from None
