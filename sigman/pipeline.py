"""The generation pipeline: the only place where the stages are chained.

    photo -> preprocess -> image encoder -> DiT sampler -> latent UV map -> VAE decoder
          -> Gaussian attributes at the UV template's points -> canonical Gaussians
          -> LBS with the body model and the pose -> posed Gaussians -> renders

``SigmanPipeline.from_pretrained(folder)`` reads ``pipeline.json`` + safetensors (the demo weights
trained by ``train/``), or the official SIGMAN release files (see :mod:`sigman.weights`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from sigman.body import BodyModel, load_body_model
from sigman.compile_cache import CompileCache
from sigman.fast import FastDiT, FastOptions, fast_repose
from sigman.gaussians import Gaussians, gaussians_from_attributes, quat_from_normals, repose
from sigman.models.dit import SigmanDiT, dit_config
from sigman.models.image_encoder import SAPIENS_FILENAME, build_image_encoder
from sigman.models.vae import VAE_CONFIGS, SigmanVAE, VAEConfig
from sigman.paths import default_model_dir
from sigman.pose import SMPLXPose
from sigman.photo_stage import PhotoStage, PhotoUnderstanding
from sigman.preprocess import ImageInputError, PersonImage
from sigman.presets import resolve_pose_file
from sigman.render import Camera, fit_orbit_to_points, render
from sigman.sampling import SAMPLERS, sample
from sigman.uv import UVTemplate, build_uv_template
from sigman.weights import WeightsError, load_json, load_weights, save_json, save_weights

if TYPE_CHECKING:
    from sigman.fit import BodyFit
    from sigman.refine import RefineConfig, RefineResult

ProgressFn = Callable[[float, str], None]
PIPELINE_FILE = "pipeline.json"
VAE_FILE = "autoencoder.safetensors"
DIT_FILE = "transformer.safetensors"
ENCODER_FILE = "image_encoder.safetensors"


@dataclass
class PipelineConfig:
    """What a model folder's ``pipeline.json`` holds."""

    body_model: str = "anny"
    vae: str = "demo"  # a name in VAE_CONFIGS
    dit: str = "demo"  # a name in DIT_CONFIGS
    image_encoder: str = "demo"  # "sapiens" or a DemoImageEncoder config name
    gaussian_uv_resolution: int = 256  # one Gaussian per covered texel of this UV template
    vae_overrides: dict = field(default_factory=dict)
    dit_overrides: dict = field(default_factory=dict)
    steps: int = 30
    guidance: float = 3.5
    sampler: str = "ddim"
    guidance_schedule: str = "constant"
    background: float = 1.0  # grey level of the photo's background and of renders
    template: str = "uv"  # "uv": a Gaussian per covered texel; "release": the official template (sigman.official)
    preprocess: str = "crop"  # "crop": the person's square crop; "release": the release script's whole-photo resize

    def __post_init__(self) -> None:
        for name, allowed in (("template", ("uv", "release")), ("preprocess", ("crop", "release"))):
            if getattr(self, name) not in allowed:
                raise WeightsError(f"{PIPELINE_FILE}: {name}={getattr(self, name)!r}; choose one of {allowed}")

    @staticmethod
    def from_dict(data: dict) -> "PipelineConfig":
        known = {f.name for f in dataclasses.fields(PipelineConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"{PIPELINE_FILE} has unknown fields {unknown}; it was written by a newer sigman")
        return PipelineConfig(**data)


@dataclass
class PipelineOutput:
    canonical: Gaussians  # [N, ...] with skin_weights, canonical (rest) pose
    posed: Gaussians  # [T, N, ...] one per pose frame
    renders: Optional[np.ndarray]  # uint8 [V, H, W, 3] of the first posed frame
    cameras: Optional[Camera]
    latents: Tensor  # [1, C, h, w] VAE latents (unscaled)
    input_image: Tensor  # [1, 3, S, S] the preprocessed photo
    rest_joints: Tensor  # [J, 3] canonical joints of this subject
    timings: dict[str, float]
    pose_note: str = ""  # what was done to the pose file's frame (e.g. Z-up rotated to Y-up); show it
    pose: Optional[SMPLXPose] = None  # the pose of ``posed``
    raw_canonical: Optional[Gaussians] = None  # the model's own output when ``canonical`` was refined
    refinement: Optional["RefineResult"] = None  # set by SigmanPipeline.refine
    fit: Optional["BodyFit"] = None  # the body fitted to the photo (pose "photo", refinement)
    notes: list[str] = field(default_factory=list)  # one-line messages for the user (the pose note too)
    shape: Optional[Tensor] = None  # [1, S] the body shape the avatar was built on (None: the default)


def _vae_config(name: str, overrides: dict) -> VAEConfig:
    if name not in VAE_CONFIGS:
        raise WeightsError(f"unknown VAE config {name!r}; choose one of {sorted(VAE_CONFIGS)}")
    return dataclasses.replace(VAE_CONFIGS[name], **overrides)


def load_pipeline_config(folder: Union[str, Path, None] = None) -> tuple[Path, PipelineConfig]:
    """The model folder (default: :func:`~sigman.paths.default_model_dir`) and its configuration:
    its ``pipeline.json``, or the release's configuration for a folder of official weights. Raises
    :class:`WeightsError` with the fix when the folder is not a model folder."""
    folder = Path(folder) if folder is not None else default_model_dir()
    if not folder.is_dir():
        raise WeightsError(f"model folder not found: {folder}; train the demo weights with train/ "
                           "or pass the folder that holds pipeline.json")
    if (folder / PIPELINE_FILE).is_file():
        return folder, PipelineConfig.from_dict(load_json(folder / PIPELINE_FILE))
    if (folder / VAE_FILE).is_file() and (folder / DIT_FILE).is_file():
        # The release's inference script: constant guidance 3.5, its template; see docs/OFFICIAL.md
        return folder, PipelineConfig(body_model="smplx", vae="official", dit="official", image_encoder="sapiens",
                                      gaussian_uv_resolution=512, guidance=3.5, guidance_schedule="constant",
                                      template="release", preprocess="crop")
    raise WeightsError(f"{folder} holds neither {PIPELINE_FILE} nor the release's {VAE_FILE} + {DIT_FILE}")


def load_vae(folder: Path, config: PipelineConfig) -> SigmanVAE:
    """The VAE of a model folder (strict key and shape checks), float32 on the CPU."""
    vae = SigmanVAE(_vae_config(config.vae, config.vae_overrides))
    load_weights(vae, folder / VAE_FILE)
    return vae


class SigmanPipeline:
    """Photo + pose -> animatable Gaussians. Build with :meth:`from_pretrained` (weights) or
    :meth:`from_config` (random weights, for tests and smoke runs)."""

    def __init__(self, config: PipelineConfig, body: BodyModel, vae: SigmanVAE, dit: SigmanDiT,
                 image_encoder: torch.nn.Module, device: Union[str, torch.device] = "cpu",
                 dtype: Optional[torch.dtype] = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.body = body.to(self.device)
        self.vae = vae.to(self.device).eval()
        self.dit = dit.to(self.device, self.dtype).eval()
        self.image_encoder = image_encoder.to(self.device, self.dtype).eval()
        self.release = None  # the official template's head (sigman.official) when config.template == "release"
        if config.template == "release":
            from sigman.official.pipeline import build_release_head

            self.release = build_release_head(self.body, self.vae)
        else:
            self.template: UVTemplate = build_uv_template(self.body, config.gaussian_uv_resolution)
            self._template_quats = quat_from_normals(self.template.normals)
        self.fast_dit: Optional[FastDiT] = None  # set by optimize(); sampling uses it when present
        self.compile_cache: Optional[CompileCache] = None  # set by optimize() when it compiles
        self.photo_stage = PhotoStage()  # holds MediaPipe's detector across calls
        self._cpu_body: Optional[BodyModel] = None  # set by optimize() on CUDA: kinematics on the CPU

    def optimize(self, options: Optional[FastOptions] = None, cache: bool = True, **overrides) -> "SigmanPipeline":
        """Sample with :class:`sigman.fast.FastDiT` from now on (bf16 weights, fused block, flash
        attention; on CUDA also ``torch.compile`` and CUDA graphs). ``overrides`` replace fields of
        ``options``, e.g. ``pipe.optimize(compile=False)``. The first sampling call on CUDA pays the
        compile and capture warm-up; with ``cache`` the compiled code of an earlier start on this
        software and GPU is loaded first (:mod:`sigman.compile_cache`), and :meth:`warm_up` saves it.
        On CUDA, reposing also switches to :func:`sigman.fast.fast_repose` with the body's kinematics
        on the CPU. Returns ``self``; ``self.compile_status`` says what the cache did."""
        self.fast_dit = FastDiT(self.dit, dataclasses.replace(options or FastOptions(), **overrides))
        fast = self.fast_dit.options
        self.compile_cache, self.compile_status = None, "compile cache: not used"
        if cache and fast.compile and fast.compile_backend == "inductor":
            self.compile_cache = CompileCache.for_model("dit", self.device, self.dit.config, fast)
            self.compile_status = self.compile_cache.load()
        if self.device.type == "cuda":
            self._cpu_body = copy.deepcopy(self.body).to("cpu")
        return self

    def warm_up(self, image, render_size: int = 256) -> str:
        """One whole generation of ``image`` (sampling, decoding, posing and one render), so that
        compilation, CUDA-graph capture and the renderer's kernels are paid now rather than by the
        first user; then the compile cache is saved. Returns one line for the log."""
        self(image, pose="a_pose", num_views=1, render_size=render_size)
        return self.compile_cache.save() if self.compile_cache is not None else "compile cache: not used"

    # --- construction ---------------------------------------------------------------------

    @staticmethod
    def from_config(config: PipelineConfig = PipelineConfig(), device: str = "cpu", seed: int = 0,
                    body: Optional[BodyModel] = None) -> "SigmanPipeline":
        """A pipeline with randomly initialised models (deterministic given ``seed``)."""
        torch.manual_seed(seed)
        vae = SigmanVAE(_vae_config(config.vae, config.vae_overrides))
        dit = SigmanDiT(dit_config(config.dit, **config.dit_overrides))
        encoder = build_image_encoder(config.image_encoder)
        body = body or load_body_model(config.body_model)
        return SigmanPipeline(config, body, vae, dit, encoder, device)

    @staticmethod
    def from_pretrained(folder: Union[str, Path, None] = None, device: Optional[str] = None,
                        body: Optional[BodyModel] = None) -> "SigmanPipeline":
        """Load a model folder (default: ``assets/weights/demo``; an official-release folder is
        recognised by its files). Raises :class:`WeightsError` with the fix when anything is
        missing or does not match."""
        folder, config = load_pipeline_config(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vae = load_vae(folder, config)
        dit = SigmanDiT(dit_config(config.dit, **config.dit_overrides))
        load_weights(dit, folder / DIT_FILE)
        if config.image_encoder == "sapiens":
            if not (folder / SAPIENS_FILENAME).is_file():
                raise WeightsError(f"{folder / SAPIENS_FILENAME} is missing: the official weights need the "
                                   "Sapiens-1B torchscript file beside them")
            encoder = build_image_encoder("sapiens", folder)
        else:
            encoder = build_image_encoder(config.image_encoder)
            load_weights(encoder, folder / ENCODER_FILE)
        body = body or load_body_model(config.body_model)
        return SigmanPipeline(config, body, vae, dit, encoder, device)

    def save_pretrained(self, folder: Union[str, Path]) -> None:
        folder = Path(folder)
        save_json(dataclasses.asdict(self.config), folder / PIPELINE_FILE)
        save_weights(self.vae, folder / VAE_FILE)
        save_weights(self.dit, folder / DIT_FILE)
        if self.config.image_encoder != "sapiens":
            save_weights(self.image_encoder, folder / ENCODER_FILE)

    # --- stages ---------------------------------------------------------------------------

    def encoder_input_size(self) -> int:
        return int(getattr(self.image_encoder, "input_size", None) or self.image_encoder.config.input_size)

    def understand_photo(self, image, fit: bool = False) -> PhotoUnderstanding:
        """Find the person in the photo (mask, landmarks) and crop it for the encoder; with ``fit``
        also fit the body to it (pose, shape, camera: :mod:`sigman.fit`)."""
        return self.photo_stage.understand(image, self.body, self.encoder_input_size(), self.config.background, fit,
                                           cpu_body=self._cpu_body)  # optimize()'s CPU copy, when there is one

    def encode_person(self, person: PersonImage, image=None) -> tuple[Tensor, Tensor]:
        """The preprocessed photo ``[1, 3, S, S]`` and its image features. With the release's
        preprocessing (``config.preprocess == "release"``) the encoder sees the whole ``image``."""
        if self.config.preprocess == "release":
            from sigman.official.preprocess import release_preprocess

            person = release_preprocess(image)
        pixels = person.image.to(self.device, self.dtype)
        with torch.no_grad():
            features = self.image_encoder(pixels)
        return person.image, features

    def encode_image(self, image) -> tuple[Tensor, Tensor]:
        """Photo (path / PIL / array / tensor) -> (preprocessed ``[1, 3, S, S]``, features)."""
        return self.encode_person(self.understand_photo(image).person, image)

    def sample_latents(self, features: Tensor, steps: int, guidance: float, sampler: str, seed: int,
                       progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
        """Image features -> VAE latents ``[1, C, h, w]`` (unscaled)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        c, h, w = self.vae.config.latent_shape
        with torch.no_grad():
            model = self.dit if self.fast_dit is None else self.fast_dit
            scaled = sample(model, features, (1, c, h, w), steps=steps, guidance=guidance, sampler=sampler,
                            seed=seed, progress=progress, guidance_schedule=self.config.guidance_schedule)
        return scaled.float() / self.vae.config.latent_scaling_factor

    def decode_gaussians(self, latents: Tensor, shape: Optional[Tensor] = None) -> tuple[Gaussians, Tensor]:
        """VAE latents -> canonical Gaussians on the body of ``shape`` and its rest joints ``[J, 3]``."""
        if self.release is not None:
            with torch.no_grad():
                return self.release.canonical(self.release.decode(self.vae, latents), shape)
        rest_vertices, rest_joints = self.body.rest(shape)
        points = self.template.positions_for(rest_vertices[0])
        with torch.no_grad():
            attrs = self.vae.decode_attributes(latents.float(), self.template.texel_uv, template_points=points,
                                               template_quats=self._template_quats,
                                               point_spacing=self.template.footprints)
        g = gaussians_from_attributes(points, attrs["offset"], attrs["scale"], attrs["quat"], attrs["opacity"],
                                      attrs["rgb"].clamp(0, 1), skin_weights=self.template.skin_weights)
        canonical = g.with_(means=g.means[0], quats=g.quats[0], scales=g.scales[0], opacities=g.opacities[0],
                            colors=g.colors[0])
        return canonical, rest_joints[0]

    def pose_gaussians(self, canonical: Gaussians, rest_joints: Tensor, pose: SMPLXPose) -> Gaussians:
        if self.release is not None:  # the release's posing: blend-shape offsets, per-frame spacing
            return self.release.pose(canonical, pose, rest_joints)
        if self._cpu_body is not None and canonical.means.dim() == 2:  # optimized: ~100 joints on the CPU
            transforms, _ = self._cpu_body.pose_transforms(pose, rest_joints.cpu())
            return fast_repose(canonical, transforms)
        transforms, _ = self.body.pose_transforms(pose, rest_joints)
        return repose(canonical, transforms)

    def render_views(self, gaussians: Gaussians, num_views: int = 4, size: int = 512,
                     views: str = "orbit") -> tuple[np.ndarray, Camera]:
        if views not in ("orbit", "release"):
            raise ValueError(f"views must be 'orbit' or 'release', got {views!r}")
        if views == "release":  # the release's 20 calibrated views, in its world frame
            from sigman.official.views import release_cameras

            cameras = release_cameras(size=size).to(self.device)
        else:
            cameras = fit_orbit_to_points(gaussians.means.float(), n_views=num_views, width=size, height=size).to(self.device)
        bg = (self.config.background,) * 3
        with torch.no_grad():
            rgb = render(gaussians.to(torch.float32), cameras, background=bg).rgb
        return (rgb.clamp(0, 1) * 255).round().byte().cpu().numpy(), cameras

    # --- all together ---------------------------------------------------------------------

    def __call__(self, image, pose: Union[str, Path, SMPLXPose, dict] = "a_pose", steps: Optional[int] = None,
                 guidance: Optional[float] = None, seed: int = 0, sampler: Optional[str] = None,
                 shape: Optional[Tensor] = None, num_views: int = 4, render_size: int = 512,
                 progress: Optional[ProgressFn] = None, views: str = "orbit", up_axis: str = "auto",
                 refine: Union[bool, "RefineConfig"] = False, fit_shape: bool = False) -> PipelineOutput:
        """Generate an avatar.

        Args:
            image: the photo (path, PIL image, numpy array or tensor; alpha or white background).
            pose: a preset name, an SMPL-X/AMASS ``.npz`` path, an :class:`SMPLXPose`, or ``"photo"``:
                the pose of the person in the photo (the body fitted to it, :mod:`sigman.fit`).
            steps, guidance, sampler: sampling settings (defaults from the config).
            seed: the sampling noise seed (same seed, same avatar).
            shape: body-model shape ``[1, S]`` (anny phenotypes / SMPL-X betas); ``None``: default.
            num_views, render_size: renders of the first posed frame (``num_views=0``: none).
            views: ``"orbit"`` (``num_views`` cameras fitted around the body) or ``"release"`` (the
                release's 20 calibrated views; the official template then poses the body with the
                release's root: no global rotation, lifted 0.35 m, and the pose file's betas).
            progress: ``progress(fraction, stage)`` for a progress bar.
            up_axis: a pose file's up axis, ``"auto"`` (detected; a Z-up file is rotated to +Y up and
                ``PipelineOutput.pose_note`` says so), ``"y"`` or ``"z"``.
            refine: make the seen side of the avatar the photo itself (:meth:`refine`; ``True`` or
                a :class:`~sigman.refine.RefineConfig`). It fits the body to the photo, and the
                avatar then has the person's fitted build.
            fit_shape: fit the body to the photo for its build (shape) even without ``refine``.
        Raises:
            ImageInputError: bad photo, no person in it, or ``pose="photo"`` where no body can be fitted.
        """
        cfg = self.config
        steps, guidance, sampler = steps or cfg.steps, cfg.guidance if guidance is None else guidance, sampler or cfg.sampler
        report = progress or (lambda fraction, stage: None)
        timings: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal tick
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            timings[name] = now - tick
            tick = now

        from_photo = isinstance(pose, str) and pose == "photo"
        pose_file = None if from_photo else resolve_pose_file(pose, up_axis)
        report(0.0, "finding the person in the photo")
        need_fit = bool(refine) or from_photo or fit_shape
        seen = self.understand_photo(image, fit=need_fit)
        notes = list(seen.notes)
        if seen.fit is not None:
            lap("fit_body")
            if shape is None:
                shape = seen.fit.shape.to(self.device)
        if from_photo:
            if seen.fit is None:
                raise ImageInputError("the pose 'as in the photo' needs the person's landmarks, which were not found "
                                      f"({self.photo_stage.unavailable or 'no landmarks'}): pick a preset or a pose file")
            pose = seen.fit.pose
        else:
            pose = pose_file.pose
            if pose_file.note:
                notes.append(pose_file.note)
        report(0.04, "encoding the photo")
        photo, features = self.encode_person(seen.person, image)
        lap("encode_image")
        latents = self.sample_latents(features, steps, guidance, sampler, seed,
                                      progress=lambda i, n: report(0.05 + 0.79 * i / n, f"sampling step {i}/{n}"))
        lap("sample")
        report(0.85, "decoding Gaussians")
        if self.release is not None:  # the official template: the release's decoding and posing
            from sigman.official.pipeline import release_decode_and_pose

            canonical, rest_joints, posed = release_decode_and_pose(self, latents, pose, shape, views)
            lap("decode")
        else:
            canonical, rest_joints = self.decode_gaussians(latents, shape)
            lap("decode")
            report(0.9, "posing")
            posed = self.pose_gaussians(canonical, rest_joints, pose)
        lap("pose")
        renders, cameras = None, None
        if num_views > 0:
            report(0.93, "rendering")
            first = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                                opacities=posed.opacities[0], colors=posed.colors[0])
            renders, cameras = self.render_views(first, num_views, render_size, views)
            lap("render")
        output = PipelineOutput(canonical, posed, renders, cameras, latents, photo, rest_joints, timings,
                                pose_file.note if pose_file is not None else "", pose, fit=seen.fit, notes=notes,
                                shape=shape)
        if refine and seen.fit is not None:
            from sigman.refine import RefineConfig

            config = refine if not isinstance(refine, bool) else RefineConfig()
            output = self.refine(output, seen.photo, seen.mask, seen.fit, config, num_views, render_size,
                                 progress=lambda fraction, stage: report(0.95 + 0.05 * fraction, stage),
                                 observation=seen.person.observation)
        report(1.0, "done")
        return output

    def refine(self, output: PipelineOutput, photo, mask, fit, config: Optional["RefineConfig"] = None,
               num_views: int = 4, render_size: int = 512, progress: Optional[ProgressFn] = None,
               observation=None) -> PipelineOutput:
        """Make the seen side of ``output``'s avatar the photo itself (:mod:`sigman.refine`).

        Args:
            output: what ``__call__`` returned, decoded on the fitted shape (``shape=fit.shape``).
            photo: ``[H, W, 3]`` the user's photo (uint8, or float in [0, 1]); mask: ``[H, W]`` its person mask.
            fit: the body fit of the photo (``.pose``, ``.shape``, ``.camera`` at the photo's size, as
                :class:`sigman.fit.BodyFit`).
            observation: the photo's :class:`~sigman.observation.PersonObservation` (optional): its face
                landmarks place the hair colour estimate (``None``: the fitted body's markers do).
        Returns:
            a copy of ``output`` whose ``canonical`` (and ``posed`` / ``renders``) are the refined
            avatar's, with ``raw_canonical`` the model's and ``refinement`` the :class:`RefineResult`.
        """
        from sigman.refine import RefineConfig, refine_avatar

        if self.release is not None:  # the release's template: its own surface and posing
            from sigman.official.surface import release_poser, release_surface

            surface = release_surface(self.release, output.canonical)
            poser = release_poser(self.release, output.canonical, output.rest_joints, fit.pose)
        else:
            surface, poser = self.template, None
        landmarks = visibility = None
        if observation is not None and tuple(observation.image_size) == (np.shape(mask)[1], np.shape(mask)[0]):
            landmarks, visibility = observation.landmarks, observation.visibility
        result = refine_avatar(output.canonical, self.body, surface, output.rest_joints, fit.shape, fit.pose,
                               fit.camera, photo, mask, config or RefineConfig(), progress, poser=poser,
                               landmarks=landmarks, landmark_visibility=visibility)
        canonical = result.canonical
        posed = self.pose_gaussians(canonical, output.rest_joints, output.pose) if output.pose is not None else output.posed
        renders, cameras = output.renders, output.cameras
        if renders is not None and num_views > 0:
            first = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                                opacities=posed.opacities[0], colors=posed.colors[0])
            renders, cameras = self.render_views(first, num_views, render_size)
        timings = {**output.timings, "refine": result.timings["total"]}
        notes = list(output.notes)
        steps_run = int(result.timings["refine_steps_run"])
        if steps_run < result.config.steps:
            notes.append(f"the photo refinement stopped after {steps_run} of {result.config.steps} steps at its time "
                         f"limit of {result.config.max_seconds:.0f} s (RefineConfig.max_seconds)")
        return dataclasses.replace(output, canonical=canonical, posed=posed, renders=renders, cameras=cameras,
                                   timings=timings, raw_canonical=output.canonical, refinement=result, notes=notes)
