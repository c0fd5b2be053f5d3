"""What the pipeline learns from the photo before and after the networks: the person (mask,
landmarks; :mod:`sigman.person`), the body fitted to them (pose, shape, camera; :mod:`sigman.fit`),
and the notes the user should see. The pipeline holds one :class:`PhotoStage` so that MediaPipe's
model is loaded once, not per photo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from sigman.preprocess import ImageLike, PersonImage, load_image, preprocess_person

if TYPE_CHECKING:
    from sigman.body import BodyModel
    from sigman.fit import BodyFit, FitConfig
    from sigman.person import PersonDetector


@dataclass
class PhotoUnderstanding:
    """The photo as the pipeline understood it."""

    person: PersonImage  # the encoder's crop, the loaded photo and its mask, the observation
    fit: Optional["BodyFit"] = None  # the body fitted to the photo (when asked for and possible)
    notes: list[str] = field(default_factory=list)  # one-line messages for the user

    @property
    def photo(self) -> np.ndarray:
        """``[H, W, 3]`` float32 the loaded photo (at most 2048 px on its longer side)."""
        return self.person.photo

    @property
    def mask(self) -> np.ndarray:
        """``[H, W]`` float32 the person's mask in :attr:`photo`."""
        return self.person.photo_mask


def _has_mask(image: ImageLike) -> bool:
    """Whether the photo carries its own person mask (an alpha channel that is not all opaque)."""
    _, alpha = load_image(image)
    return alpha is not None and float(alpha.min()) < 0.99


def fit_to_device(fit: "BodyFit", device: torch.device) -> "BodyFit":
    """``fit`` with its pose, shape, camera and tensors on ``device``."""
    moved = {}
    for f in dataclasses.fields(fit):
        value = getattr(fit, f.name)
        if torch.is_tensor(value) or f.name in ("pose", "camera"):  # SMPLXPose and Camera have .to
            moved[f.name] = value.to(device)
    return dataclasses.replace(fit, **moved)


class PhotoStage:
    """Person understanding and body fitting for one pipeline (holds the loaded detector)."""

    def __init__(self) -> None:
        self._detector: Optional["PersonDetector"] = None
        self._cpu_body: Optional[tuple] = None  # (the pipeline's body, its CPU copy) for fitting
        self.unavailable: Optional[str] = None  # why MediaPipe cannot run here, once found out

    def detector(self) -> Optional["PersonDetector"]:
        """The held MediaPipe detector, loaded on first use; ``None`` (and :attr:`unavailable`
        says why) when MediaPipe or its model bundle is missing."""
        if self._detector is None and self.unavailable is None:
            from sigman.person import PersonDetector, PersonModelError

            try:
                self._detector = PersonDetector()
            except PersonModelError as err:
                self.unavailable = str(err)
        return self._detector

    def understand(self, image: ImageLike, body: "BodyModel", size: int, background: float,
                   fit: bool, fit_config: Optional["FitConfig"] = None,
                   cpu_body: Optional["BodyModel"] = None) -> PhotoUnderstanding:
        """Preprocess ``image`` for an encoder of ``size`` px (finding the person), and with ``fit``
        fit ``body`` to what was seen. A photo without landmarks (MediaPipe unavailable) gets no
        fit, and a note says so. A body on a GPU is fitted on a CPU copy (``cpu_body`` when the
        caller holds one, else :meth:`fitting_body`'s) and the fit handed back on the body's device."""
        detector = self.detector()
        if detector is None:
            person = preprocess_person(image, size=size, background=background)
        elif _has_mask(image):  # the photo says where the person is: trust it, look for landmarks only
            person = preprocess_person(image, size=size, background=background, observation=detector.detect(image))
        else:  # the detector is the person test (a cup or a cat is refused)
            person = preprocess_person(image, size=size, background=background, detector=detector)
        result = PhotoUnderstanding(person, notes=list(person.notes))
        if not fit:
            return result
        if person.observation is None:
            why = self.unavailable or "the person's landmarks were not found"
            result.notes.append(f"the body could not be fitted to the photo ({why}): "
                                "its pose and the photo refinement are skipped")
            return result
        from sigman.fit import FitConfig, fit_body

        device = body.rest_vertices.device
        if device.type == "cpu":
            # num_threads=None: the fit leaves torch's thread count alone (a process-wide setting that
            # other requests running beside this one would feel)
            result.fit = fit_body(body, person.observation, fit_config or FitConfig(num_threads=None))
        else:  # one thread: the CPU has nothing else to do for a GPU pipeline meanwhile, and small ops run fastest so
            fitted = fit_body(cpu_body or self.fitting_body(body), person.observation, fit_config or FitConfig(num_threads=1))
            result.fit = fit_to_device(fitted, device)
        return result

    def fitting_body(self, body: "BodyModel") -> "BodyModel":
        """The body model the photo is fitted on: ``body`` itself on the CPU, else a CPU copy, made
        once. The fit is some 600 small kernels a step for about 150 steps, bound by launch
        latency on a GPU: one photo took 2.72 s on an H200 eagerly and 0.95 s on the same machine's CPU
        (one thread; ``scripts/bench_fit.py``, 2026-12-03). Replayed from CUDA graphs
        (:mod:`sigman.graphed_steps`) it takes 0.31 s there, but a capture in a server that runs other
        requests' CUDA work beside it is a risk the 0.6 s are not worth, so the pipeline stays on the CPU."""
        if body.rest_vertices.device.type == "cpu":
            return body
        if self._cpu_body is None or self._cpu_body[0] is not body:
            import copy

            self._cpu_body = (body, copy.deepcopy(body).to("cpu"))
        return self._cpu_body[1]

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None
