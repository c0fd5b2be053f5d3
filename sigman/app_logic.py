"""What the Gradio app (``app.py``) does, without the UI: load the pipeline, check the inputs of
one request, run a generation into that request's own folder, start its viewer, and turn every
expected failure into one readable sentence.

    model = load_model(weights=None, device="cpu")          # never raises: see LoadedModel
    studio = AvatarStudio(model, OutputSettings.for_device("cpu"))
    result = studio.generate(GenerationRequest(photo="person.png"), session="abc")
    result.views, result.turntable, result.ply, result.glb, result.mesh, result.viewer_url

Requests share nothing but the read-only pipeline (sampling is serialised by a lock; renders of
different requests may overlap) and the :class:`ViewerPool` (its own lock). Every expected problem
is raised as :class:`AppError`, whose text is meant for the user as is.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from sigman.exporting import export_avatar, first_frame, render_motion
from sigman.gaussians import Gaussians
from sigman.paths import assets_dir
from sigman.pipeline import PipelineConfig, SigmanPipeline
from sigman.pose import PoseFileError, SMPLXPose
from sigman.preprocess import ImageInputError, load_image, load_mask, preprocess_person
from sigman.presets import MOTION_PRESETS, POSE_PRESETS, resolve_pose
from sigman.render import write_video
from sigman.sampling import SAMPLERS
from sigman.sequences import (MAX_MOTION_FRAMES, MAX_MOTION_FRAMES_CPU, check_motion, limit_motion, load_motion,
                              load_pose_frame)
from sigman.settings import MAX_GUIDANCE, MAX_SEED, MAX_STEPS
from sigman.weights import WeightsError

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
NO_MOTION = "none"
WEIGHTS_ENV = "SIGMAN_WEIGHTS"
VIEWER_HOST_ENV = "SIGMAN_VIEWER_HOST"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
GET_WEIGHTS_HELP = (
    "Train the demo weights with `train/` (they go to `assets/weights/demo/`), or put the official SIGMAN "
    "release (`autoencoder.safetensors`, `transformer.safetensors`, the Sapiens-1B torchscript file) in a "
    f"folder and start the app with `--weights DIR` or `{WEIGHTS_ENV}=DIR`.")


class AppError(Exception):
    """A problem the user can act on; ``str(err)`` is the message to show, as is."""


# --- weights ---------------------------------------------------------------------------------

def default_weights_folder() -> Path:
    return assets_dir() / "weights" / "demo"


@dataclass(frozen=True)
class LoadedModel:
    """The app's model, or why there is none. ``pipe`` is ``None`` only when weights were found
    but could not be loaded: then every generation answers ``error``."""

    pipe: Optional[SigmanPipeline]
    description: str  # e.g. "demo weights (assets/weights/demo)" or "random weights (untrained)"
    banner: Optional[str] = None  # a warning for the top of the page (markdown); None: all is well
    error: Optional[str] = None
    random_weights: bool = False  # untrained models (results are labelled so)


def load_model(weights: Optional[Union[str, Path]] = None, device: Optional[str] = None,
               random_config: PipelineConfig = PipelineConfig(), body=None) -> LoadedModel:
    """Load the pipeline: ``weights`` (a model folder) or ``$SIGMAN_WEIGHTS``, else the demo
    weights in ``assets/weights/demo``. When no folder was named and the demo weights are not
    there, a pipeline with random weights (``random_config``) stands in and the banner says so.
    Never raises for weights problems: a named folder that fails to load gives a model without a
    pipeline whose ``error`` names the problem."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    named = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    folder = Path(named) if named is not None else default_weights_folder()
    if named is None and not folder.exists():
        pipe = SigmanPipeline.from_config(random_config, device=device, body=body)
        banner = ("**Random weights.** No trained weights were found in `assets/weights/demo/`, so this app runs "
                  "untrained models: the avatars are coloured noise on the body shape, not your photo. "
                  + GET_WEIGHTS_HELP)
        return LoadedModel(pipe, "random weights (untrained)", banner=banner, random_weights=True)
    try:
        pipe = SigmanPipeline.from_pretrained(folder, device=device, body=body)
    except WeightsError as err:
        message = f"The model weights in {folder} could not be loaded: {err}"
        return LoadedModel(None, f"no model ({folder})", banner=f"**No model.** {message}. {GET_WEIGHTS_HELP}",
                           error=message)
    return LoadedModel(pipe, f"weights from {folder}")


def optimize_for_serving(model: LoadedModel, example: Optional[Path] = None) -> str:
    """On CUDA, switch the pipeline to its optimized sampler (:meth:`SigmanPipeline.optimize`:
    bf16, fused blocks, ``torch.compile``, CUDA graphs) and pay the warm-up now, with one
    generation of ``example``, rather than in the first user's request. The compiled code is cached
    on disk, so a later start skips compiling. Returns what was done; any failure leaves the plain
    pipeline in place."""
    pipe = model.pipe
    if pipe is None or pipe.device.type != "cuda":
        return "plain pipeline (optimization is for CUDA)"
    try:
        pipe.optimize()
        status = [pipe.compile_status]
        if example is not None:
            status.append(pipe.warm_up(example))
    except Exception as err:  # noqa: BLE001 - serving must go on with the plain path
        pipe.fast_dit, pipe._cpu_body, pipe.compile_cache = None, None, None
        return f"plain pipeline (optimization failed: {type(err).__name__}: {err})"
    return "optimized pipeline (bf16, fused blocks, torch.compile, CUDA graphs); " + "; ".join(status)


# --- settings, requests, results -------------------------------------------------------------

@dataclass(frozen=True)
class OutputSettings:
    """How much each generation renders (CPU defaults are smaller: a CPU renders ~10 frames/s)."""

    num_views: int = 4
    render_size: int = 512
    turntable_frames: int = 48
    motion_size: int = 384
    max_motion_frames: int = MAX_MOTION_FRAMES  # longer motions: sigman.sequences.motion_plan's rule

    @staticmethod
    def for_device(device: Union[str, torch.device]) -> "OutputSettings":
        if torch.device(device).type == "cuda":
            return OutputSettings()
        return OutputSettings(render_size=320, turntable_frames=36, motion_size=320,
                              max_motion_frames=MAX_MOTION_FRAMES_CPU)


@dataclass(frozen=True)
class GenerationRequest:
    """One request, as the page sends it (files are paths to the uploads)."""

    photo: Optional[str]
    mask: Optional[str] = None
    pose: str = "a_pose"  # a pose preset name, or PHOTO_POSE: as the person stands in the photo
    pose_file: Optional[str] = None  # an uploaded SMPL-X / AMASS .npz; overrides ``pose``
    motion: str = "walk_cycle"  # a motion preset name, or NO_MOTION
    motion_file: Optional[str] = None  # an uploaded sequence; overrides ``motion``
    seed: int = 0
    steps: Optional[int] = None  # None: the model's default
    guidance: Optional[float] = None
    sampler: Optional[str] = None
    refine: bool = False  # carry the photo's own pixels onto the avatar (the page's checkbox is on by default)
    motion_video: Optional[str] = None  # an uploaded video of a person; its motion overrides ``motion``


@dataclass(frozen=True)
class GenerationResult:
    folder: Path  # this request's own folder; every file below is in it
    views: Optional[Path]  # the multi-view grid
    turntable: Path
    motion: Optional[Path]
    ply: Path  # standard 3DGS .ply of the posed avatar
    glb: Path  # the rigged avatar
    preview: Path  # the posed avatar framed for Gradio's Model3D splat view (see write_preview)
    input_crop: Path  # the preprocessed photo the model saw
    num_gaussians: int
    viewer_url: Optional[str]
    summary: str  # one markdown line: what was made, how, and how long it took
    mesh: Optional[Path] = None  # the skinned, textured mesh avatar (avatar_mesh.glb)
    input_view: Optional[Path] = None  # the avatar from the photo's camera, in its pose (refined results)
    notes: tuple[str, ...] = ()  # one-line messages for the user

    @property
    def downloads(self) -> list[Path]:
        """The files offered for download: the 3DGS .ply, the rigged .glb, the mesh avatar."""
        return [path for path in (self.ply, self.glb, self.mesh) if path is not None]


PHOTO_POSE = "photo"  # the pose choice "as in the photo"
APP_VIDEO_FPS = 15.0  # motion videos are tracked at this frame rate in the app...
APP_VIDEO_SECONDS = 20.0  # ...and only their first seconds (the CLI's scripts/video_to_motion.py takes 60 s)


def pose_choices() -> list[tuple[str, str]]:
    """The pose radio's ``(label, value)`` choices: as in the photo, then the presets."""
    return [("as in the photo", PHOTO_POSE), *((name, name) for name in POSE_PRESETS)]


def motion_choices() -> list[str]:
    return [NO_MOTION, *MOTION_PRESETS]


def thumbnails_dir() -> Path:
    return assets_dir() / "poses" / "thumbnails"


def pose_thumbnails() -> list[tuple[str, str]]:
    """``(image path, preset name)`` for every pose preset that has a thumbnail."""
    folder = thumbnails_dir()
    return [(str(folder / f"{name}.png"), name) for name in POSE_PRESETS if (folder / f"{name}.png").is_file()]


def examples_dir() -> Path:
    return assets_dir() / "examples"


def example_photos() -> list[str]:
    return [str(p) for p in sorted(examples_dir().glob("*.png"))]


# --- errors -----------------------------------------------------------------------------------

def _rename(message: str, path: Optional[str], what: str) -> str:
    """Messages name uploads by their temporary path; show the file's own name instead."""
    if path:
        message = message.replace(str(path), Path(path).name)
    return f"{what}: {message}"


def user_message(err: BaseException) -> Optional[str]:
    """The sentence to show for an expected failure, ``None`` for a bug."""
    if isinstance(err, AppError):
        return str(err)
    if isinstance(err, ImageInputError):
        return f"Photo: {err}"
    if isinstance(err, PoseFileError):
        return f"Pose file: {err}"
    if isinstance(err, WeightsError):
        return f"Model weights: {err}"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("The server ran out of disk space while writing the results. Free some space (or ask the "
                "app's host to) and try again.")
    if isinstance(err, OSError):
        return (f"Could not read or write a file on the server ({err.strerror or type(err).__name__}). "
                "Try again; if it persists, tell the app's host.")
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return "The server ran out of memory. Try again when it is less busy, or with fewer sampling steps."
    return None


# --- the 3D preview ---------------------------------------------------------------------------

PREVIEW_HEIGHT = 1.9  # units; Model3D's splat viewer orbits its origin at a distance of 5


def write_preview(gaussians: Gaussians, path: Union[str, Path]) -> Path:
    """Write un-batched Gaussians ``[N, ...]`` as a ``.splat`` framed for Gradio's Model3D, whose
    splat viewer (gsplat.js) orbits the origin from a distance of 5, starting on the -Z side: the
    avatar is centred on the origin and scaled to ``PREVIEW_HEIGHT``. The ``.splat`` writer turns it
    into the splat frame (+Y down, see :mod:`sigman.io.frames`), as it does the downloads, so the
    avatar stands upright and faces the start camera."""
    from sigman.io import save_gaussians

    g = gaussians.detach().to("cpu", torch.float32)
    low, high = g.means.min(dim=0).values, g.means.max(dim=0).values
    scale = PREVIEW_HEIGHT / max(float(high[1] - low[1]), 1e-3)
    preview = Gaussians(means=(g.means - (low + high) / 2) * scale, quats=g.quats, scales=g.scales * scale,
                        opacities=g.opacities, colors=g.colors)
    save_gaussians(path, preview)
    return Path(path)


# --- viewers ----------------------------------------------------------------------------------

def viewer_url(port: int, bind_host: str, browser_host: Optional[str]) -> str:
    """The address a browser opens for a viewer served on ``bind_host:port``. A wildcard bind
    (0.0.0.0) is reached under the name the browser used for the app itself (``browser_host``,
    the request's ``Host`` header, port dropped)."""
    host = bind_host
    if bind_host in WILDCARD_HOSTS:
        host = (browser_host or "localhost").strip()
        if host.startswith("["):  # [IPv6]:port
            host = host[: host.find("]") + 1] or host
        elif host.count(":") == 1:  # name:port
            host = host.split(":")[0]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{port}"


class ViewerPool:
    """Live viser viewers: one per browser session, at most ``capacity`` in all. A session's new
    result replaces its viewer; when full, the oldest viewer is stopped to make room.

    ``launch(gaussians, body, rest_joints, pose, host=..., port=0, **kw)`` starts one viewer: the app
    passes ``viewer.launch_viewer`` (the library never imports the viewer package itself)."""

    def __init__(self, launch: Callable, host: str = "127.0.0.1", capacity: int = 4) -> None:
        self.host, self.capacity = host, capacity
        self._launch = launch
        self._lock = threading.Lock()
        self._viewers: "OrderedDict[str, object]" = OrderedDict()

    def open(self, session: str, gaussians, body, rest_joints, pose: Union[str, SMPLXPose]):
        """Start a viewer for ``session`` (stopping its previous one) and return it."""
        self.close(session)
        viewer = self._launch(gaussians, body, rest_joints, host=self.host, port=0, title="sigman avatar")
        try:
            viewer.set_pose(pose)
        except Exception:  # noqa: BLE001 - the viewer still shows the avatar in its rest pose
            log.exception("could not set the viewer's pose")
        with self._lock:
            self._viewers[session] = viewer
            evicted = []
            while len(self._viewers) > self.capacity:
                evicted.append(self._viewers.popitem(last=False)[1])
        for old in evicted:
            old.stop()
        return viewer

    def get(self, session: str):
        """The session's live viewer, or None."""
        with self._lock:
            return self._viewers.get(session)

    def close(self, session: str) -> None:
        with self._lock:
            viewer = self._viewers.pop(session, None)
        if viewer is not None:
            viewer.stop()

    def close_all(self) -> None:
        with self._lock:
            viewers = list(self._viewers.values())
            self._viewers.clear()
        for viewer in viewers:
            viewer.stop()

    def __len__(self) -> int:
        with self._lock:
            return len(self._viewers)

    def __contains__(self, session: str) -> bool:
        with self._lock:
            return session in self._viewers


# --- the generation -----------------------------------------------------------------------------

def _check_settings(request: GenerationRequest) -> None:
    if request.steps is not None and not 1 <= int(request.steps) <= MAX_STEPS:
        raise AppError(f"Steps must be between 1 and {MAX_STEPS}, got {request.steps}.")
    guidance = request.guidance
    if guidance is not None and not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
        raise AppError(f"Guidance must be between 0 and {MAX_GUIDANCE:g}, got {request.guidance}.")
    if request.sampler is not None and request.sampler not in SAMPLERS:
        raise AppError(f"Sampler must be one of {', '.join(SAMPLERS)}, got {request.sampler!r}.")
    if not 0 <= int(request.seed) <= MAX_SEED:
        raise AppError(f"Seed must be between 0 and {MAX_SEED}, got {request.seed}.")


def photo_input(photo: Optional[str], mask: Optional[str]) -> Union[str, np.ndarray]:
    """Check the photo (and mask) as the pipeline will see them, and return what to pass it: the
    photo's path, or an RGBA array whose alpha is the uploaded mask."""
    if not photo:
        raise AppError("Upload a photo of a person first (or pick one of the examples).")
    try:
        preprocess_person(photo, size=32)  # every check the pipeline makes, on a tiny crop
    except ImageInputError as err:
        raise AppError(_rename(str(err), photo, "Photo")) from None
    if not mask:
        return photo
    rgb, _ = load_image(photo)
    try:
        preprocess_person(photo, mask=mask, size=32)  # its messages name the sizes as uploaded
        alpha = load_mask(mask, *rgb.shape[:2])
        rgba = np.concatenate([rgb, np.clip(alpha, 0.0, 1.0)[..., None]], axis=-1)
        preprocess_person(rgba, size=32)
    except ImageInputError as err:
        raise AppError(_rename(str(err), mask, "Mask")) from None
    return rgba


def _read_upload(path: str, what: str, read: Callable):
    """``read(path)``, its PoseFileError turned into an AppError that names the upload."""
    try:
        return read(path)
    except PoseFileError as err:
        name = Path(path).name
        message = str(err).replace(str(path), name)
        raise AppError(f"{what}: {message}" if name in message else f"{what} {name}: {message}") from None


def pose_input(request: GenerationRequest) -> tuple[Union[str, SMPLXPose], SMPLXPose]:
    """(what to show the viewer, the one-frame pose to generate in)."""
    if request.pose_file:
        pose = _read_upload(request.pose_file, "Pose file", load_pose_frame)  # reads the first frame only
        return pose, pose
    if request.pose == PHOTO_POSE:
        return PHOTO_POSE, PHOTO_POSE  # fitted to the photo by the pipeline
    if request.pose not in POSE_PRESETS:
        raise AppError(f"Unknown pose {request.pose!r}: pick one of {', '.join(POSE_PRESETS)} "
                       "or upload an SMPL-X .npz.")
    return request.pose, resolve_pose(request.pose).frame(0)


def video_motion_input(video: str, body, max_frames: int, report: ProgressFn) -> tuple[SMPLXPose, list[str]]:
    """The motion of the person in an uploaded video (:mod:`sigman.video_motion`: tracked, fitted
    frame by frame, smoothed), cut to ``max_frames`` by the shared rule, and its notes."""
    from sigman.video_motion import VideoInputError, VideoMotionConfig, video_to_motion

    report(0.0, "reading the motion from the video")
    config = VideoMotionConfig(fps=APP_VIDEO_FPS, max_seconds=APP_VIDEO_SECONDS)
    try:
        result = video_to_motion(video, None, body, config)
    except VideoInputError as err:
        raise AppError(f"Motion video {Path(video).name}: {err}") from None
    motion, note = limit_motion(check_motion(result.pose, "the video's motion"), max_frames)
    notes = [*getattr(result, "notes", []), *([note] if note else [])]
    return motion, notes


def motion_input(request: GenerationRequest, max_frames: int) -> Optional[SMPLXPose]:
    """The motion to animate the avatar with, cut to ``max_frames`` by the shared rule
    (:func:`sigman.sequences.motion_plan`), or None."""
    if request.motion_file:
        return _read_upload(request.motion_file, "Motion file", lambda path: load_motion(path, max_frames))[0]
    if not request.motion or request.motion == NO_MOTION:
        return None
    if request.motion not in MOTION_PRESETS:
        raise AppError(f"Unknown motion {request.motion!r}: pick one of {', '.join(motion_choices())}.")
    return load_motion(request.motion, max_frames)[0]


class AvatarStudio:
    """Runs generations for the app. Holds the read-only model, a lock that serialises the
    pipeline's sampling, where results go, and the live viewers.

    Args:
        model: from :func:`load_model` (tests pass a tiny random pipeline).
        outputs: how much to render per result.
        output_root: parent of the per-request folders (default: ``$TMPDIR/sigman-app``).
        viewers: the live viewers (``None``: no viewer; results have no ``viewer_url``).
        keep_hours: request folders older than this are deleted when a new request starts.
    """

    def __init__(self, model: LoadedModel, outputs: Optional[OutputSettings] = None,
                 output_root: Optional[Union[str, Path]] = None, viewers: Optional[ViewerPool] = None,
                 keep_hours: float = 6.0) -> None:
        self.model = model
        device = model.pipe.device if model.pipe is not None else "cpu"
        self.outputs = outputs or OutputSettings.for_device(device)
        self.output_root = Path(output_root) if output_root else Path(tempfile.gettempdir()) / "sigman-app"
        self.viewers = viewers
        self.keep_hours = keep_hours
        self._pipeline_lock = threading.Lock()
        self._warm_up: Optional[threading.Thread] = None

    def warm_up_in_background(self, example: Optional[Path], done: Callable[[str], None]) -> threading.Thread:
        """Run :func:`optimize_for_serving` on a thread that holds the pipeline lock, so that the web
        server starts meanwhile and the first request waits only for what is left of the warm-up.
        ``done`` gets the one-line outcome."""
        lock = self._pipeline_lock
        lock.acquire()  # taken here, so that no request can slip in before the thread starts

        def run() -> None:
            try:
                done(optimize_for_serving(self.model, example))
            finally:
                lock.release()

        self._warm_up = threading.Thread(target=run, name="sigman-warm-up", daemon=True)
        self._warm_up.start()
        return self._warm_up

    @property
    def defaults(self) -> PipelineConfig:
        return self.model.pipe.config if self.model.pipe is not None else PipelineConfig()

    def generate(self, request: GenerationRequest, session: str = "", progress: Optional[ProgressFn] = None,
                 browser_host: Optional[str] = None) -> GenerationResult:
        """Run one request into a fresh folder. Raises :class:`AppError` for anything expected;
        anything else is a bug (logged with its traceback, shown as a short apology)."""
        report = progress or (lambda fraction, stage: None)
        try:
            return self._generate(request, session, report, browser_host)
        except AppError:
            raise
        except Exception as err:  # noqa: BLE001 - the user gets a sentence, the log gets the traceback
            message = user_message(err)
            if message is None:
                log.exception("generation failed")
                message = (f"Generation failed unexpectedly ({type(err).__name__}). The server log has the details; "
                           "please report it if it happens again.")
            raise AppError(message) from err

    def _generate(self, request: GenerationRequest, session: str, report: ProgressFn,
                  browser_host: Optional[str]) -> GenerationResult:
        start = time.perf_counter()
        if self.model.pipe is None:
            raise AppError(self.model.error or "No model is loaded.")
        pipe = self.model.pipe
        _check_settings(request)
        report(0.0, "checking the inputs")
        image = photo_input(request.photo, request.mask)
        shown_pose, pose = pose_input(request)
        notes: list[str] = []
        if request.motion_video:
            motion, video_notes = video_motion_input(request.motion_video, pipe.body, self.outputs.max_motion_frames,
                                                     lambda fraction, stage: report(0.01, stage))
            notes += video_notes
        else:
            motion = motion_input(request, self.outputs.max_motion_frames)
        folder = self._new_folder()

        report(0.01, "waiting for the model")
        with self._pipeline_lock:
            result = pipe(image, pose, steps=request.steps, guidance=request.guidance, seed=int(request.seed),
                          sampler=request.sampler, num_views=self.outputs.num_views,
                          render_size=self.outputs.render_size, refine=request.refine,
                          progress=lambda fraction, stage: report(0.02 + 0.6 * fraction, stage))
        notes = [*result.notes, *notes]
        if shown_pose == PHOTO_POSE:
            shown_pose = result.pose
        report(0.63, "rendering the turntable and writing the files")
        files = export_avatar(pipe, result, folder, turntable_frames=self.outputs.turntable_frames,
                              size=self.outputs.render_size, animate=motion,
                              animation_name=(Path(request.motion_file).stem if request.motion_file else
                                              Path(request.motion_video).stem if request.motion_video else request.motion))
        preview = write_preview(first_frame(result.posed), folder / "preview.splat")
        motion_path = None
        if motion is not None:
            report(0.75, f"animating the avatar ({motion.num_frames} frames)")
            frames = render_motion(pipe, result.canonical, result.rest_joints, motion, size=self.outputs.motion_size,
                                   background=pipe.config.background)
            motion_path = write_video(folder / "motion.mp4", frames, fps=motion.fps)
        url = None
        if self.viewers is not None and self.viewers.capacity > 0:
            report(0.95, "starting the 3D viewer")
            viewer = self.viewers.open(session, result.canonical, pipe.body, result.rest_joints, shown_pose)
            url = viewer_url(viewer.port, self.viewers.host, browser_host)
        report(1.0, "done")
        return GenerationResult(
            folder=folder, views=folder / "views.png" if result.renders is not None else None,
            turntable=folder / "turntable.mp4", motion=motion_path, ply=folder / "avatar.ply",
            glb=folder / "avatar.glb", preview=preview, input_crop=folder / "input.png",
            mesh=folder / "avatar_mesh.glb" if folder / "avatar_mesh.glb" in files else None,
            input_view=folder / "input_view.png" if folder / "input_view.png" in files else None,
            num_gaussians=result.canonical.num_gaussians, viewer_url=url, notes=tuple(notes),
            summary=self._summary(request, result, time.perf_counter() - start, notes))

    def _summary(self, request: GenerationRequest, result, seconds: float, notes: Sequence[str] = ()) -> str:
        cfg = self.defaults
        steps = request.steps or cfg.steps
        guidance = cfg.guidance if request.guidance is None else request.guidance
        sampler = request.sampler or cfg.sampler
        sampling = result.timings.get("sample", 0.0)
        text = (f"**{result.canonical.num_gaussians:,} Gaussians** · seed {int(request.seed)} · {sampler}, "
                f"{steps} steps, guidance {guidance:g} · {self.model.pipe.device.type} · {seconds:.1f} s "
                f"({sampling:.1f} s sampling)")
        if result.refinement is not None:
            text += f" · photo refinement {result.timings.get('refine', 0.0):.1f} s"
        if self.model.random_weights:
            text += " · *random weights*"
        return text + "".join(f"\n\n*Note: {note}*" for note in notes)

    def _new_folder(self) -> Path:
        try:
            self.output_root.mkdir(parents=True, exist_ok=True)
            self._prune()
            return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.output_root))
        except OSError as err:
            raise AppError(user_message(err)) from err

    def _prune(self) -> None:
        """Delete request folders older than ``keep_hours`` (their files were served long ago)."""
        cutoff = time.time() - self.keep_hours * 3600
        for folder in self.output_root.iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass

    def end_session(self, session: str) -> None:
        """The browser tab closed: stop its viewer."""
        if self.viewers is not None:
            self.viewers.close(session)

    def close(self) -> None:
        if self.viewers is not None:
            self.viewers.close_all()
