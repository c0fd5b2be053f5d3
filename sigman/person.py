"""Person understanding: is there a person in the photo, where (a soft mask, boxes), and in which
pose (33 BlazePose landmarks in the image and in metres), with MediaPipe's Tasks ``PoseLandmarker``.

The model is a ``.task`` bundle shipped under ``assets/models/mediapipe/`` (built from the Apache-2.0
tflite models of registry packages by ``scripts/build_mediapipe_tasks.py``); nothing is downloaded.

- :class:`PersonDetector` holds a loaded landmarker (IMAGE mode): load it once, call
  :meth:`PersonDetector.observe` per photo.
- :class:`VideoPersonTracker` holds one in VIDEO mode (tracking across frames, timestamps strictly
  increasing) and gives one ``Optional[PersonObservation]`` per frame.
- :func:`observe_person` is the one-call form (it loads and closes a detector).

The pose detector is the person test: a photo without a person raises :class:`ImageInputError`
(MediaPipe's segmentation alone would "find" a person in a cat or a cup). With several people the
largest one (by mask area) is kept and a note says so. Body parts whose landmarks are out of the
frame or hidden are listed in ``guessed_parts`` with a note. The mask is MediaPipe's soft
segmentation of that person; ``PersonConfig(refine_mask=True)`` sharpens its edges by closed-form
matting (optional ``pymatting``). When MediaPipe cannot be imported or the bundle is missing,
:class:`PersonModelError` says so in one line and names the fix.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sigman.observation import BLAZEPOSE_LANDMARKS, NUM_LANDMARKS, Box, PersonObservation
from sigman.paths import mediapipe_models_dir
from sigman.preprocess import MIN_SIDE, WORK_MAX_SIDE, ImageInputError, ImageLike, load_image
from sigman.weights import WeightsError
from sigman.world_landmarks import debiased_world_landmarks

MEDIAPIPE_FIX = "pip install mediapipe==1.2.3"
MODEL_VARIANTS = ("lite", "full", "heavy")

# Body parts and the landmarks that pose them (BlazePose indices). A part is "guessed" when its
# landmarks' mean visibility is under the threshold.
BODY_PARTS: dict[str, tuple[int, ...]] = {
    "face": tuple(range(0, 11)),
    "left arm": (11, 13, 15),
    "right arm": (12, 14, 16),
    "left hand": (15, 17, 19, 21),
    "right hand": (16, 18, 20, 22),
    "hips": (23, 24),
    "left leg": (23, 25, 27),
    "right leg": (24, 26, 28),
    "left foot": (27, 29, 31),
    "right foot": (28, 30, 32),
}
_PAIRS = {"arm": "arms", "hand": "hands", "leg": "legs", "foot": "feet"}
SKELETON: tuple[tuple[int, int], ...] = (  # BlazePose connections, for drawing
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
    (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)


class PersonModelError(WeightsError):
    """MediaPipe or its model bundle is missing or broken; the message names the fix."""


@dataclass(frozen=True)
class PersonConfig:
    """How the person is found and described."""

    model: str = "full"  # bundle variant: "lite" (fastest), "full", "heavy" (when built and shipped)
    model_path: Optional[str] = None  # a .task file; default: mediapipe_models_dir()/pose_landmarker_<model>.task
    max_people: int = 4  # poses MediaPipe looks for; the largest person is kept
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5  # VIDEO mode
    visible_threshold: float = 0.5  # landmark visibility under which its part counts as guessed
    refine_mask: bool = False  # sharpen the mask's edges by closed-form matting (needs pymatting)
    refine_band: float = 0.012  # half-width of the band it solves, as a fraction of the image's longer side
    debias_world: bool = True  # remove the world landmarks' measured depth bias (sigman.world_landmarks)


# --- MediaPipe and its model file --------------------------------------------------------------

def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def import_mediapipe() -> tuple[Any, Any]:
    """``(mediapipe, mediapipe.tasks.python.vision)``, or :class:`PersonModelError` naming the fix."""
    try:
        import mediapipe
        from mediapipe.tasks.python import vision
    except Exception as err:  # noqa: BLE001 - any import failure (missing, broken native library) means the same
        raise PersonModelError(f"person understanding needs MediaPipe, which failed to import ({_first_line(err)}): "
                               f"{MEDIAPIPE_FIX}") from None
    return mediapipe, vision


def mediapipe_unavailable_reason() -> Optional[str]:
    """``None`` when MediaPipe imports, else the one-line reason (with the fix)."""
    try:
        import_mediapipe()
    except PersonModelError as err:
        return str(err)
    return None


def model_path(config: PersonConfig = PersonConfig()) -> Path:
    """The ``.task`` bundle for ``config``; :class:`PersonModelError` if it is not there."""
    if config.model_path is not None:
        path = Path(config.model_path)
    else:
        if config.model not in MODEL_VARIANTS:
            raise ValueError(f"unknown pose model {config.model!r}; choose one of {', '.join(MODEL_VARIANTS)}")
        path = mediapipe_models_dir() / f"pose_landmarker_{config.model}.task"
    if not path.is_file():
        raise PersonModelError(f"the MediaPipe pose model {path} is missing: restore it from the repository "
                               "(git checkout assets/models/mediapipe) or build it with scripts/build_mediapipe_tasks.py")
    return path


def _create_landmarker(config: PersonConfig, video: bool) -> Any:
    _, vision = import_mediapipe()
    from mediapipe.tasks.python import BaseOptions as base_options

    path = model_path(config)
    options = vision.PoseLandmarkerOptions(
        base_options=base_options(model_asset_path=str(path)),
        running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
        num_poses=int(config.max_people),
        min_pose_detection_confidence=config.min_detection_confidence,
        min_pose_presence_confidence=config.min_presence_confidence,
        min_tracking_confidence=config.min_tracking_confidence,
        output_segmentation_masks=True,
    )
    try:
        with _native_stderr_silenced():
            return vision.PoseLandmarker.create_from_options(options)
    except Exception as err:  # noqa: BLE001 - a corrupt bundle surfaces as a RuntimeError from the C library
        raise PersonModelError(f"cannot load the MediaPipe pose model {path.name} ({_first_line(err)}): rebuild it "
                               "with scripts/build_mediapipe_tasks.py or restore it from the repository") from None


@contextlib.contextmanager
def _native_stderr_silenced():
    """Drop what native code writes to file descriptor 2 meanwhile: loading the model makes LiteRT
    print some 50 INFO / WARNING lines (sparsity, alignment) a user cannot act on. Errors still
    surface as the exception's message."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _close_quietly(landmarker: Any) -> None:
    try:
        with _native_stderr_silenced():
            landmarker.close()
    except Exception:  # noqa: BLE001 - at interpreter exit MediaPipe's executor is already shut down
        landmarker._handle = None  # nothing left to free; keeps its __del__ from retrying noisily


# --- from MediaPipe's result to a PersonObservation --------------------------------------------

def _rgb_uint8(image: Union[ImageLike, np.ndarray]) -> np.ndarray:
    """The photo as contiguous uint8 ``[H, W, 3]`` (transparent pixels put on white)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3 \
            and MIN_SIDE <= min(image.shape[:2]) and max(image.shape[:2]) <= WORK_MAX_SIDE:
        return np.ascontiguousarray(image)  # the common case (video frames, decoded photos): no float round trip
    rgb, alpha = load_image(image)
    if alpha is not None:
        rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    return np.ascontiguousarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))


def refine_mask_edges(rgb: np.ndarray, mask: np.ndarray, band: int, max_side: int = 512) -> np.ndarray:
    """Sharpen a soft mask ``[H, W]`` along the photo's edges with closed-form matting (Levin et al.,
    via the optional ``pymatting`` package): pixels further than ``band`` px inside / outside the
    mask's 0.5 contour are fixed as person / background, the band between is solved for. Works at
    ``max_side`` px at most (0.7 s at 512 x 512 on 2 cores) and is upsampled back in the band only.

    ``rgb``: uint8 ``[H, W, 3]``. Raises :class:`PersonModelError` when pymatting is missing.
    """
    try:
        from pymatting import estimate_alpha_cf
    except Exception as err:  # noqa: BLE001
        raise PersonModelError(f"mask refinement needs pymatting ({_first_line(err)}): pip install pymatting "
                               "(its first import compiles for minutes, later ones are cached), "
                               "or set PersonConfig(refine_mask=False)") from None
    from PIL import Image
    from scipy import ndimage

    h, w = mask.shape
    scale = min(1.0, max_side / max(h, w))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small_rgb = np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.BILINEAR), np.float64) / 255.0
    small_mask = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((sw, sh), Image.BILINEAR))
    hard = small_mask > 0.5
    r = max(1, round(band * scale))
    trimap = np.full((sh, sw), 0.5)
    trimap[ndimage.binary_erosion(hard, iterations=r)] = 1.0
    trimap[~ndimage.binary_dilation(hard, iterations=r)] = 0.0
    if not (trimap == 1.0).any() or not (trimap == 0.0).any():
        return mask
    alpha = np.clip(estimate_alpha_cf(small_rgb, trimap), 0.0, 1.0).astype(np.float32)
    alpha = np.asarray(Image.fromarray(alpha).resize((w, h), Image.BILINEAR))
    unknown = np.asarray(Image.fromarray((trimap == 0.5).astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    return np.where(unknown, alpha, mask).astype(np.float32)


def _box_of(mask: np.ndarray, points: np.ndarray, width: int, height: int) -> Box:
    """Box around ``mask > 0.5`` and ``points [K, 2]``, clipped to the image."""
    fg = mask > 0.5
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    xs = np.concatenate([cols[[0, -1]] if len(cols) else [], points[:, 0]]).astype(np.float64)
    ys = np.concatenate([rows[[0, -1]] if len(rows) else [], points[:, 1]]).astype(np.float64)
    if len(xs) == 0:
        return 0, 0, width, height
    x0, y0 = int(np.clip(np.floor(xs.min()), 0, width - 1)), int(np.clip(np.floor(ys.min()), 0, height - 1))
    x1, y1 = int(np.clip(np.ceil(xs.max()) + 1, x0 + 1, width)), int(np.clip(np.ceil(ys.max()) + 1, y0 + 1, height))
    return x0, y0, x1, y1


def face_box(landmarks: np.ndarray, visibility: np.ndarray, width: int, height: int,
             threshold: float = 0.5) -> Optional[Box]:
    """The face's box from the 11 face landmarks (nose, eyes, ears, mouth), or ``None`` when the
    nose and both eyes are not visible. The landmarks span eyes to mouth and ear to ear; the box
    adds the forehead and the chin."""
    face = np.arange(11)
    if min(visibility[0], visibility[2], visibility[5]) < threshold:
        return None
    pts = landmarks[face[visibility[face] >= threshold]]
    eye_y = landmarks[[2, 5], 1].mean()
    mouth_y = landmarks[[9, 10], 1].mean() if visibility[[9, 10]].min() >= threshold else landmarks[0, 1]
    span = max(np.ptp(pts[:, 0]), 2.5 * abs(mouth_y - eye_y), 1.0)  # about the face's width
    cx = pts[:, 0].mean()
    x0, x1 = cx - 0.6 * span, cx + 0.6 * span
    y0, y1 = eye_y - 0.7 * span, mouth_y + 0.45 * span
    box = (int(max(0, np.floor(x0))), int(max(0, np.floor(y0))), int(min(width, np.ceil(x1))), int(min(height, np.ceil(y1))))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _pair_names(parts: list[str]) -> list[str]:
    """``["left leg", "right leg", "left hand"]`` -> ``["legs", "the left hand"]``."""
    out = []
    for part in parts:
        side, _, kind = part.partition(" ")
        if side in ("left", "right") and kind in _PAIRS:
            other = ("right " if side == "left" else "left ") + kind
            if other in parts:
                if side == "left":
                    out.append(_PAIRS[kind])
                continue
        out.append(f"the {part}")
    return out


def guessed_body_parts(landmarks: np.ndarray, visibility: np.ndarray, width: int, height: int,
                       threshold: float = 0.5) -> tuple[list[str], list[str]]:
    """(parts whose pose is a guess, the notes saying so): a part is guessed when its landmarks'
    mean visibility is under ``threshold``; it is "out of the frame" when most of them lie outside
    the image, else "hidden"."""
    guessed, outside, hidden = [], [], []
    inside = (landmarks[:, 0] >= 0) & (landmarks[:, 0] <= width) & (landmarks[:, 1] >= 0) & (landmarks[:, 1] <= height)
    for part, idx in BODY_PARTS.items():
        idx = list(idx)
        if visibility[idx].mean() >= threshold:
            continue
        guessed.append(part)
        (outside if inside[idx].mean() < 0.5 else hidden).append(part)
    notes = []
    for parts, where in ((outside, "out of the frame"), (hidden, "hidden or unclear")):
        if parts:
            names = _pair_names(parts)
            plural = len(names) > 1 or names[0] == "the hips" or names[0] in _PAIRS.values()
            notes.append(f"{_join(names)} {'are' if plural else 'is'} {where}; "
                         f"{'their' if plural else 'its'} pose is guessed")
    return guessed, notes


def observation_from_result(result: Any, width: int, height: int, rgb: Optional[np.ndarray] = None,
                            config: PersonConfig = PersonConfig()) -> Optional[PersonObservation]:
    """MediaPipe's ``PoseLandmarkerResult`` for an image of ``width x height`` -> the largest
    person as a :class:`PersonObservation`, or ``None`` when it found nobody. ``rgb`` (uint8
    ``[H, W, 3]``), when given and ``config.refine_mask``, sharpens the mask's edges."""
    n = len(result.pose_landmarks or [])
    if n == 0:
        return None
    masks = [m.numpy_view().reshape(height, width).astype(np.float32) for m in (result.segmentation_masks or [])]
    if len(masks) != n:
        raise RuntimeError(f"MediaPipe gave {n} poses but {len(masks)} masks")
    areas = [float((m > 0.5).sum()) for m in masks]
    best = int(np.argmax(areas))

    pose = result.pose_landmarks[best]
    xy = np.array([[p.x * width, p.y * height] for p in pose], np.float32)
    visible = np.array([p.visibility if p.visibility is not None else 0.0 for p in pose], np.float32)
    present = np.array([p.presence if p.presence is not None else 1.0 for p in pose], np.float32)
    in_frame = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    visibility = np.clip(np.minimum(visible, present) * in_frame, 0.0, 1.0).astype(np.float32)
    world = np.array([[p.x, p.y, p.z] for p in result.pose_world_landmarks[best]], np.float32)
    if config.debias_world:
        world = debiased_world_landmarks(world)
    if xy.shape != (NUM_LANDMARKS, 2):
        raise RuntimeError(f"MediaPipe gave {len(pose)} landmarks, expected {NUM_LANDMARKS}")

    mask = np.clip(masks[best], 0.0, 1.0)
    if config.refine_mask and rgb is not None:
        mask = refine_mask_edges(rgb, mask, band=max(1, round(config.refine_band * max(width, height))))
    seen = visibility >= config.visible_threshold
    guessed, notes = guessed_body_parts(xy, visibility, width, height, config.visible_threshold)
    if n > 1:
        notes.insert(0, f"{n} people found: the largest one is used")
    return PersonObservation(
        image_size=(width, height), mask=mask, landmarks=xy, visibility=visibility, world_landmarks=world,
        person_box=_box_of(mask, xy[seen], width, height),
        face_box=face_box(xy, visibility, width, height, config.visible_threshold),
        num_people=n, guessed_parts=guessed, notes=notes,
    )


def no_person_error() -> ImageInputError:
    return ImageInputError("no person found in the photo (the pose detector saw nobody): "
                           "pass a photo of a person, with their head and upper body in the frame")


# --- the detector and the tracker ---------------------------------------------------------------

class PersonDetector:
    """A loaded MediaPipe pose landmarker (IMAGE mode). Hold one and call :meth:`observe` per photo;
    ``close()`` (or ``with``) frees it. Safe to share between threads (calls are serialised)."""

    video_mode = False

    def __init__(self, config: PersonConfig = PersonConfig()) -> None:
        self.config = config
        self._landmarker = _create_landmarker(config, video=self.video_mode)
        self._mediapipe, _ = import_mediapipe()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_quietly, self._landmarker)

    def _run(self, rgb: np.ndarray, timestamp_ms: Optional[int] = None) -> Any:
        image = self._mediapipe.Image(image_format=self._mediapipe.ImageFormat.SRGB, data=rgb)
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError(f"this {type(self).__name__} is closed")
            if timestamp_ms is None:
                return self._landmarker.detect(image)
            return self._landmarker.detect_for_video(image, timestamp_ms)

    def detect(self, image: Union[ImageLike, np.ndarray]) -> Optional[PersonObservation]:
        """The largest person in ``image`` (anything :func:`sigman.preprocess.load_image` takes),
        or ``None`` when there is nobody. Positions are in the pixels of the loaded image."""
        rgb = _rgb_uint8(image)
        h, w = rgb.shape[:2]
        return observation_from_result(self._run(rgb), w, h, rgb, self.config)

    def observe(self, image: Union[ImageLike, np.ndarray]) -> PersonObservation:
        """Like :meth:`detect`, but a photo without a person raises :class:`ImageInputError`."""
        observation = self.detect(image)
        if observation is None:
            raise no_person_error()
        return observation

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "PersonDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoPersonTracker(PersonDetector):
    """A MediaPipe pose landmarker in VIDEO mode: it tracks the person from frame to frame (faster
    and steadier than per-image detection). Feed frames in order; timestamps must increase."""

    video_mode = True

    def __init__(self, config: PersonConfig = PersonConfig(), fps: float = 30.0) -> None:
        super().__init__(config)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._frame = 0
        self._last_ms = -1

    def track(self, frame: Union[ImageLike, np.ndarray], timestamp_ms: Optional[int] = None) -> Optional[PersonObservation]:
        """The person in the next frame (``None`` if nobody is seen). ``timestamp_ms`` defaults
        to ``frame_index * 1000 / fps``; given ones must increase strictly."""
        ts = int(round(self._frame * 1000.0 / self.fps)) if timestamp_ms is None else int(timestamp_ms)
        if ts <= self._last_ms:
            raise ValueError(f"video timestamps must increase: got {ts} ms after {self._last_ms} ms")
        rgb = _rgb_uint8(frame)
        h, w = rgb.shape[:2]
        result = self._run(rgb, ts)
        self._frame, self._last_ms = self._frame + 1, ts
        return observation_from_result(result, w, h, rgb, self.config)

    def track_all(self, frames) -> list[Optional[PersonObservation]]:
        """One observation (or ``None``) per frame of an iterable of frames."""
        return [self.track(f) for f in frames]

    def detect(self, image):  # noqa: D102 - per-image detection needs IMAGE mode
        raise TypeError("VideoPersonTracker tracks frames: call track(frame); use PersonDetector for photos")


def observe_person(image: Union[ImageLike, np.ndarray], detector: Optional[PersonDetector] = None,
                   config: PersonConfig = PersonConfig()) -> PersonObservation:
    """The largest person in ``image``: mask, landmarks, boxes, guessed parts. Pass a held
    ``detector`` to avoid loading the model per call (about 0.5 s). Raises :class:`ImageInputError`
    when there is no person and :class:`PersonModelError` when MediaPipe or its model is missing."""
    if detector is not None:
        return detector.observe(image)
    with PersonDetector(config) as temporary:
        return temporary.observe(image)


__all__ = ["BLAZEPOSE_LANDMARKS", "BODY_PARTS", "SKELETON", "PersonConfig", "PersonDetector", "PersonModelError",
           "VideoPersonTracker", "face_box", "guessed_body_parts", "import_mediapipe",
           "mediapipe_unavailable_reason", "model_path", "observation_from_result", "observe_person",
           "refine_mask_edges"]
