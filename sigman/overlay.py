"""A debug picture of what person understanding saw: the mask tinted over the photo, the skeleton,
the landmarks (coloured by visibility) and the person and face boxes."""

from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image, ImageDraw

from sigman.observation import PersonObservation
from sigman.preprocess import ImageLike, load_image

MASK_TINT = np.array([0.1, 0.75, 1.0], np.float32)  # light blue
SEEN = (40, 220, 60)  # landmark visible
GUESSED = (235, 60, 40)  # landmark hidden or out of the frame
BOX = (255, 200, 0)
FACE = (255, 90, 200)


def draw_observation(image: Union[ImageLike, np.ndarray], observation: PersonObservation,
                     mask_opacity: float = 0.45, visible_threshold: float = 0.5) -> Image.Image:
    """The photo with ``observation`` drawn over it (an RGB PIL image of the observed size).
    Landmarks outside the image are not drawn; lines to hidden or out-of-frame landmarks are
    drawn thin and red."""
    from sigman.person import SKELETON  # the drawing needs no MediaPipe, only its skeleton table

    rgb, _ = load_image(image)
    w, h = observation.image_size
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"the observation is of a {w}x{h} image, the image is {rgb.shape[1]}x{rgb.shape[0]}")
    m = observation.mask[..., None] * mask_opacity
    tinted = rgb * (1.0 - m) + MASK_TINT * m
    picture = Image.fromarray(np.clip(tinted * 255.0 + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    unit = max(1, round(max(w, h) / 256))
    draw.rectangle([observation.person_box[0], observation.person_box[1], observation.person_box[2] - 1,
                    observation.person_box[3] - 1], outline=BOX, width=unit)
    if observation.face_box is not None:
        x0, y0, x1, y1 = observation.face_box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=FACE, width=unit)
    seen = observation.visibility >= visible_threshold
    pts = observation.landmarks
    for a, b in SKELETON:
        both = bool(seen[a] and seen[b])
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=SEEN if both else GUESSED, width=2 * unit if both else unit)
    r = 1.5 * unit
    for (x, y), ok in zip(pts, seen):
        if 0 <= x < w and 0 <= y < h:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=SEEN if ok else GUESSED, outline=(0, 0, 0))
    return picture
