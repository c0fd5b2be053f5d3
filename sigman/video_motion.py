"""Motion from a video: track the person, fit the body per frame, smooth, write a pose sequence.

    result = video_to_motion("dance.mp4", "dance_motion.npz")     # needs MediaPipe (sigman.person)
    pose = sigman.pose.load_pose("dance_motion.npz")               # T frames, pose.fps = video rate

Steps:

1. :func:`read_video` decodes frames with imageio (ffmpeg), at most :data:`MAX_SECONDS` seconds
   and :data:`MAX_FRAMES` frames (a longer video is refused before it is decoded), optionally
   resampled to a lower frame rate;
2. :class:`sigman.person.VideoPersonTracker` observes each frame (or any callable that maps a
   frame to an ``Optional[PersonObservation]``), in a thread (:func:`track_frames`) while
3. :func:`motion_from_observations` fits the frames already observed: the first observed frame
   fully (pose, shape, camera), then chunks of ``chunk`` frames at once, each warm-started from
   the previous chunk's last fit (few iterations, no silhouette term, shape and focal length
   kept). MediaPipe releases Python's lock while it works, so the two use two cores;
4. frames where the person is lost are interpolated (quaternion slerp between the fits around
   the gap, the first / last fit held at the ends) and reported;
5. the root trajectory comes from the fitted cameras: the camera is taken as static, so the
   change of the camera-space translation becomes a world translation, zero at the first frame;
6. a One-Euro filter (:mod:`sigman.motion_filter`) smooths rotations and the trajectory;
7. :func:`sigman.pose.save_pose` writes an SMPL-X sequence ``.npz`` with ``mocap_frame_rate``
   (a temporary file renamed into place: nothing is ever half-written).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import roma
import torch

from sigman.body.base import BodyModel
from sigman.fit import CAMERA_ROTATION, BodyFit, FitConfig, fit_bodies
from sigman.motion_filter import OneEuroConfig, smooth_pose
from sigman.observation import PersonObservation
from sigman.pose import SMPLXPose, save_pose

MAX_SECONDS = 60.0  # longest video accepted
MAX_FRAMES = 1800  # most frames accepted (after resampling)
TRACK_AHEAD = 64  # frames the tracking thread may run ahead of the fit


class VideoInputError(ValueError):
    """The video cannot be used (not a video, empty, too long, nobody in it). One-line message."""


@dataclass
class VideoMotionConfig:
    """How a video becomes motion."""

    fps: Optional[float] = None  # output frame rate (frames are dropped to reach it); None: the video's
    max_seconds: Optional[float] = None  # only the first N seconds (must be <= MAX_SECONDS)
    chunk: int = 16  # frames fitted together after the first (one batched fit: a step costs about the same for 8 or 16)
    # 20 warm steps at half the photo's learning rates; the first frame 60 steps (the chunks go on
    # refining its pose): chosen on a 640 x 640 walk_cycle render (scripts/dev/profile_video.py)
    fit: FitConfig = field(default_factory=lambda: FitConfig(warm_iterations=20, warm_lr_scale=0.5, silhouette=False))
    max_people: int = 1  # poses the default tracker follows: 1 tracks without re-detecting every frame
    pipeline: bool = True  # track in a thread while the fit works on the frames already tracked
    first_fit: FitConfig = field(default_factory=lambda: FitConfig(silhouette=False, iterations=60))
    smoothing: OneEuroConfig = field(default_factory=OneEuroConfig)
    trajectory_smoothing: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(min_cutoff=1.0, beta=0.5))
    smooth: bool = True


@dataclass
class VideoMotion:
    """What :func:`video_to_motion` made."""

    pose: SMPLXPose  # T frames at pose.fps
    fits: list[Optional[BodyFit]]  # per frame, None where the person was lost
    lost: list[tuple[int, int]]  # [first, last] frame ranges where the person was lost (interpolated)
    notes: list[str]
    seconds: dict[str, float]  # decode+track, fit, total

    @property
    def num_frames(self) -> int:
        return self.pose.num_frames


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class VideoFrames:
    frames: list[np.ndarray]  # [H, W, 3] uint8 each
    fps: float  # rate of ``frames``
    source_fps: float


def read_video(path: Union[str, Path], fps: Optional[float] = None, max_seconds: Optional[float] = None) -> VideoFrames:
    """Decode a video's frames (RGB uint8), resampled to ``fps`` if given (only downwards).

    Raises :class:`VideoInputError` (one line) for a missing file, something that is not a video,
    a video without frames, or one longer than :data:`MAX_SECONDS` / :data:`MAX_FRAMES` (pass
    ``max_seconds`` to use only its beginning).
    """
    import imageio.v2 as iio

    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"video not found: {path}")
    if max_seconds is not None and not 0 < max_seconds <= MAX_SECONDS:
        raise VideoInputError(f"--max-seconds must be in (0, {MAX_SECONDS:g}], got {max_seconds:g}")
    if fps is not None and fps <= 0:
        raise VideoInputError(f"--fps must be positive, got {fps:g}")
    try:
        reader = iio.get_reader(str(path), format="ffmpeg")
        meta = reader.get_meta_data()
    except Exception as err:  # noqa: BLE001 - imageio / ffmpeg raise many kinds for "not a video"
        raise VideoInputError(f"{path.name} is not a readable video ({type(err).__name__}); pass an .mp4, .mov, .webm or .avi file") from None
    try:
        src_fps = float(meta.get("fps") or 0.0)
        if not math.isfinite(src_fps) or src_fps <= 0:
            raise VideoInputError(f"{path.name} has no frame rate; re-encode it (e.g. ffmpeg -i IN -r 30 OUT.mp4)")
        duration = float(meta.get("duration") or 0.0)
        limit = MAX_SECONDS if max_seconds is None else max_seconds
        if max_seconds is None and duration > MAX_SECONDS + 0.5 / src_fps:
            raise VideoInputError(f"{path.name} is {duration:.1f} s long; the limit is {MAX_SECONDS:g} s "
                                  f"({MAX_FRAMES} frames): cut it, or pass --max-seconds N")
        rate = src_fps if fps is None else min(fps, src_fps)
        step = src_fps / rate
        frames: list[np.ndarray] = []
        next_pick = 0.0
        try:
            for i, frame in enumerate(reader):
                if i / src_fps >= limit - 1e-9:
                    if max_seconds is None:
                        raise VideoInputError(f"{path.name} is longer than {MAX_SECONDS:g} s: cut it, or pass --max-seconds N")
                    break
                if i + 1e-6 >= next_pick:
                    frames.append(np.ascontiguousarray(np.asarray(frame)[..., :3]))
                    next_pick += step
                    if len(frames) > MAX_FRAMES:
                        raise VideoInputError(f"{path.name} has more than {MAX_FRAMES} frames at {rate:g} fps; "
                                              "pass --max-seconds N or a lower --fps")
        except VideoInputError:
            raise
        except Exception as err:  # noqa: BLE001 - a corrupt stream
            if not frames:
                raise VideoInputError(f"{path.name} could not be decoded ({type(err).__name__}); re-encode it as H.264 .mp4") from None
        if not frames:
            raise VideoInputError(f"{path.name} has no frames; pass a video with at least one frame")
    finally:
        reader.close()
    return VideoFrames(frames, rate, src_fps)


# ----------------------------------------------------------------------------------------------
# Fitting a sequence


def _lost_spans(present: Sequence[bool]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, p in enumerate(present):
        if not p and start is None:
            start = i
        if p and start is not None:
            spans.append((start, i - 1))
            start = None
    if start is not None:
        spans.append((start, len(present) - 1))
    return spans


def _slerp_rotvecs(a: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
    qa, qb = roma.rotvec_to_unitquat(a.double()), roma.rotvec_to_unitquat(b.double())
    return roma.unitquat_to_rotvec(roma.unitquat_slerp(qa, qb, torch.tensor([s], dtype=torch.float64))[0]).float()


def fill_gaps(values: list[Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Interpolate missing frames of ``(global_orient [3], body_pose [21, 3], transl [3])``:
    slerp / lerp between the frames around a gap, hold the nearest frame at the ends."""
    known = [i for i, v in enumerate(values) if v is not None]
    if not known:
        raise VideoInputError("no person was found in any frame of the video; pass a video showing one person")
    out = list(values)
    for i in range(len(values)):
        if values[i] is not None:
            continue
        before = [k for k in known if k < i]
        after = [k for k in known if k > i]
        if not before or not after:
            out[i] = values[(before or after)[-1 if before else 0]]
            continue
        a, b = before[-1], after[0]
        s = (i - a) / (b - a)
        va, vb = values[a], values[b]
        out[i] = (_slerp_rotvecs(va[0], vb[0], s), _slerp_rotvecs(va[1], vb[1], s), (1 - s) * va[2] + s * vb[2])
    return out  # type: ignore[return-value]


def motion_from_observations(body: BodyModel, observations: Iterable[Optional[PersonObservation]], fps: float,
                             config: VideoMotionConfig = VideoMotionConfig(),
                             progress: Optional[Callable[[int], None]] = None) -> VideoMotion:
    """Fit every observed frame (warm-started chunks), fill the gaps, smooth: a :class:`VideoMotion`.
    ``observations`` may be a stream (a generator fed while the video is tracked): each chunk is
    fitted as soon as it is complete. ``progress(n)`` is called with the number of frames just fitted."""
    start = time.perf_counter()
    fits: list[Optional[BodyFit]] = []
    present: list[bool] = []
    pending: list[tuple[int, PersonObservation]] = []
    prev: Optional[BodyFit] = None
    first = -1

    def fit_pending() -> None:
        nonlocal prev
        if not pending:
            return
        chunk = fit_bodies(body, [o for _, o in pending], config.fit, init=prev)
        for (i, _), f in zip(pending, chunk):
            fits[i] = f
        prev = chunk[-1]
        if progress:
            progress(len(pending))
        pending.clear()

    for i, observation in enumerate(observations):
        fits.append(None)
        present.append(observation is not None)
        if observation is None:
            continue
        if prev is None:
            first = i
            prev = fits[i] = fit_bodies(body, [observation], config.first_fit)[0]
            if progress:
                progress(1)
            continue
        pending.append((i, observation))
        if len(pending) >= max(1, config.chunk):
            fit_pending()
    fit_pending()
    n = len(fits)
    if n == 0:
        raise VideoInputError("the video has no frames; pass a video with at least one frame")
    if first < 0:
        raise VideoInputError("no person was found in any frame of the video; pass a video showing one person")
    t_fit = time.perf_counter() - start

    # camera translations -> world trajectory (static camera; the first observed frame at zero)
    r0 = CAMERA_ROTATION
    t0 = fits[first].camera_translation
    values: list[Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
    for f in fits:
        if f is None:
            values.append(None)
        else:
            values.append((f.pose.global_orient[0], f.pose.body_pose[0], r0.T @ (f.camera_translation - t0)))
    filled = fill_gaps(values)
    pose = SMPLXPose.zeros(n)
    pose.global_orient = torch.stack([v[0] for v in filled])
    pose.body_pose = torch.stack([v[1] for v in filled])
    pose.transl = torch.stack([v[2] for v in filled])
    pose.fps = float(fps)
    if body.name == "smplx":
        pose.betas = fits[first].pose.betas.clone()
    if config.smooth and n > 1:
        pose = smooth_pose(pose, config.smoothing, config.trajectory_smoothing)
    lost = _lost_spans(present)
    notes = []
    for a, b in lost:
        how = "held" if a == 0 or b == n - 1 else "interpolated"
        notes.append(f"person lost for {(b - a + 1) / fps:.2f} s (frames {a}-{b}); pose {how}")
    return VideoMotion(pose, fits, lost, notes, {"fit": t_fit})


# ----------------------------------------------------------------------------------------------
# The whole thing


def _default_tracker(fps: float, max_people: int = 1) -> Callable[[np.ndarray], Optional[PersonObservation]]:
    """MediaPipe in VIDEO mode. With ``max_people=1`` its pose detector runs only when the track is
    lost (with more it runs on every frame, looking for the others): 14 instead of 8 frames/s on
    640 x 640 frames measured on the shared 2-core machine (scripts/dev/profile_video.py)."""
    from sigman.person import PersonConfig, VideoPersonTracker

    tracker = VideoPersonTracker(PersonConfig(max_people=max_people), fps=fps)
    return tracker.track


def video_to_motion(video: Union[str, Path], out: Optional[Union[str, Path]], body: Union[BodyModel, str] = "anny",
                    config: VideoMotionConfig = VideoMotionConfig(),
                    tracker: Optional[Callable[[np.ndarray], Optional[PersonObservation]]] = None,
                    progress: bool = False) -> VideoMotion:
    """Read ``video``, track and fit the person, write the motion to ``out`` (``.npz``; ``None``:
    do not write). ``body``: a body model or its name. ``tracker`` maps a frame to an observation (default: a MediaPipe
    :class:`~sigman.person.VideoPersonTracker`). Raises :class:`VideoInputError` for bad input."""
    start = time.perf_counter()
    if out is not None:
        out = Path(out)
        if out.suffix != ".npz":
            raise VideoInputError(f"the motion file must end in .npz, got {out.name}")
        if not out.parent.is_dir():
            raise VideoInputError(f"folder {out.parent} does not exist; create it or pick another --out")
    frames = read_video(video, config.fps, config.max_seconds)  # bad input fails before anything loads
    if isinstance(body, str):
        from sigman.body import load_body_model

        body = load_body_model(body)
    track = tracker if tracker is not None else _default_tracker(frames.fps, config.max_people)
    bar = _bar(progress, 2 * len(frames.frames), "video -> motion")
    timing: dict[str, float] = {}

    def tracked() -> Iterator[Optional[PersonObservation]]:
        for observation in track_frames(track, frames.frames, config.pipeline, timing):
            bar.update(1)
            yield observation

    motion = motion_from_observations(body, tracked(), frames.fps, config, progress=bar.update)
    t_track = timing.get("track", 0.0)
    bar.update(bar.total - bar.n)
    bar.close()
    if out is not None:
        save_pose(out, motion.pose)
    motion.seconds.update(track=t_track, total=time.perf_counter() - start)
    return motion


def track_frames(track: Callable[[np.ndarray], Optional[PersonObservation]], frames: Sequence[np.ndarray],
                 background: bool = True, timing: Optional[dict[str, float]] = None) -> Iterator[Optional[PersonObservation]]:
    """``track(frame)`` for each frame, in order. ``background``: in a thread, up to
    :data:`TRACK_AHEAD` frames ahead of the consumer, so that tracking (MediaPipe runs without
    Python's lock) and fitting use two cores; an error in ``track`` is raised here.
    ``timing["track"]``: the tracking thread's wall time."""
    start = time.perf_counter()
    if not background:
        for frame in frames:
            yield track(frame)
        if timing is not None:
            timing["track"] = time.perf_counter() - start
        return
    results: queue.Queue = queue.Queue(maxsize=TRACK_AHEAD)
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for frame in frames:
                if stop.is_set():
                    return
                results.put((True, track(frame)))
            results.put((True, done))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            results.put((False, err))
        finally:
            if timing is not None:
                timing["track"] = time.perf_counter() - start

    thread = threading.Thread(target=worker, name="sigman-track", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = results.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a worker blocked on a full queue finish
            try:
                results.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _bar(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)
