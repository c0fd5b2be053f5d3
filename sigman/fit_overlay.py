"""A picture of a body fit: the fitted mesh, shaded and semi-transparent, over the photo, seen
from the fitted camera; optionally the detected landmarks (green) and the fitted markers (red)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from sigman.body.base import BodyModel
from sigman.fit import BodyFit
from sigman.observation import PersonObservation

BODY_COLOUR = np.array([0.55, 0.75, 1.0])


def draw_fit(image: np.ndarray, fit: BodyFit, body: BodyModel, observation: Optional[PersonObservation] = None,
             opacity: float = 0.5, max_faces: int = 30000) -> Image.Image:
    """``image [H, W, 3]`` (uint8 or float in [0, 1]) with the fit drawn over it (RGB PIL image).

    The mesh is projected by ``fit.camera`` and painted back to front (painter's algorithm) with
    Lambert shading from a light at the camera.
    """
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    if (fit.camera.width, fit.camera.height) != (w, h):
        raise ValueError(f"the fit is for a {fit.camera.width}x{fit.camera.height} image, the image is {w}x{h}")
    view = fit.camera.viewmats[0]
    cam = fit.vertices @ view[:3, :3].T + view[:3, 3]
    pix = fit.camera.project(fit.vertices)[0].numpy()
    faces = body.faces.cpu().numpy()
    if len(faces) > max_faces:
        faces = faces[:: int(np.ceil(len(faces) / max_faces))]
    tri = cam.numpy()[faces]  # [F, 3, 3]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-12)
    centre = tri.mean(axis=1)
    to_cam = -centre / np.linalg.norm(centre, axis=1, keepdims=True).clip(1e-12)
    shade = np.abs((normal * to_cam).sum(1))
    order = np.argsort(-centre[:, 2])  # far first
    layer = Image.new("RGB", (w, h), (0, 0, 0))
    alpha = Image.new("L", (w, h), 0)
    dl, da = ImageDraw.Draw(layer), ImageDraw.Draw(alpha)
    ok = (tri[:, :, 2] > 0.05).all(axis=1)
    for f in order:
        if not ok[f]:
            continue
        poly = [tuple(p) for p in pix[faces[f]]]
        c = tuple(int(v) for v in np.clip((0.25 + 0.75 * shade[f]) * BODY_COLOUR * 255, 0, 255))
        dl.polygon(poly, fill=c)
        da.polygon(poly, fill=int(255 * opacity))
    out = Image.composite(layer, Image.fromarray(rgb), alpha)
    draw = ImageDraw.Draw(out)
    r = max(2, round(max(w, h) / 200))
    if observation is not None:
        for (x, y), v in zip(observation.landmarks, observation.visibility):
            if v >= 0.5:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 220, 60))
        for (x, y), v in zip(fit.markers_2d.numpy(), observation.visibility):
            if v >= 0.5:
                draw.ellipse([x - r + 1, y - r + 1, x + r - 1, y + r - 1], fill=(235, 40, 40))
    return out
