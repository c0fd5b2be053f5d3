"""The documented ranges of every user-facing generation setting, and the checks that enforce them.
Shared by ``scripts/generate.py`` and the app, so both accept and refuse the same values.

==========================  =================  ===================================================
setting                     range              why
==========================  =================  ===================================================
render size (px, square)    64 .. 2048         smaller shows nothing; larger exceeds the splats' detail
sampling steps              1 .. 200           0 would mean "the default" elsewhere; > 200 gains nothing
guidance (CFG scale)        0 .. 20            finite; 1 or less skips the unconditional pass
seed                        0 .. 2**31 - 1     what every RNG in the stack accepts
views (multi-view grid)     0 .. 16            0: no ``views.png``
turntable frames            0 .. 720           0: no ``turntable.mp4``; 720 = 30 s at 24 fps
==========================  =================  ===================================================

Pose sequences (applied by :mod:`sigman.sequences`):

=========================  ==============  ==========================================================
``MAX_POSE_FILE_FRAMES``   1,000,000       longest sequence a motion file may hold (2.3 h at 120 fps)
``MAX_MOTION_FRAMES``      240             frames rendered into ``motion.mp4`` on a GPU
``MAX_MOTION_FRAMES_CPU``  90              the same on a CPU (a CPU renders ~10 frames/s)
``MIN_MOTION_FPS``         6               frame rate under which a clip stops reading as motion
``MAX_ARRAY_ELEMENTS``     16,000,000      values read from any one array of a pose file
=========================  ==============  ==========================================================

Every check raises :class:`SettingError` (a ``ValueError``) whose one-line message names the
setting, the range and the value. This module imports nothing heavy (no torch at import time), so
command lines can check their arguments before loading anything.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import torch

MIN_RENDER_SIZE, MAX_RENDER_SIZE = 64, 2048
MIN_STEPS, MAX_STEPS = 1, 200
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
MIN_SEED, MAX_SEED = 0, 2**31 - 1
MIN_VIEWS, MAX_VIEWS = 0, 16
MIN_TURNTABLE_FRAMES, MAX_TURNTABLE_FRAMES = 0, 720
SAMPLER_NAMES = ("ddim", "dpmpp")  # sigman.sampling.SAMPLERS (a test keeps them equal)

MAX_POSE_FILE_FRAMES = 1_000_000
MAX_MOTION_FRAMES = 240
MAX_MOTION_FRAMES_CPU = 90
MIN_MOTION_FPS = 6.0
MAX_ARRAY_ELEMENTS = 16_000_000


class SettingError(ValueError):
    """A setting out of its documented range; the message says which, the range and the value."""


def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; a bool, a float with a fraction or text is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SettingError(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise SettingError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= number <= high:
        raise SettingError(f"{name} must be from {low} to {high}, got {int(number)}")
    return int(number)


def check_float(name: str, value, low: float, high: float) -> float:
    """``value`` as a finite float in ``[low, high]``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise SettingError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number


def check_generation(steps: Optional[int] = None, guidance: Optional[float] = None, seed: int = 0,
                     size: Optional[int] = None, views: Optional[int] = None,
                     turntable_frames: Optional[int] = None) -> None:
    """Check the settings of one generation (``None``: the default, always valid)."""
    if steps is not None:
        check_int("steps", steps, MIN_STEPS, MAX_STEPS)
    if guidance is not None:
        check_float("guidance", guidance, MIN_GUIDANCE, MAX_GUIDANCE)
    check_int("seed", seed, MIN_SEED, MAX_SEED)
    if size is not None:
        check_int("size", size, MIN_RENDER_SIZE, MAX_RENDER_SIZE)
    if views is not None:
        check_int("views", views, MIN_VIEWS, MAX_VIEWS)
    if turntable_frames is not None:
        check_int("turntable frames", turntable_frames, MIN_TURNTABLE_FRAMES, MAX_TURNTABLE_FRAMES)


def check_device(name: Union[str, "torch.device"]) -> "torch.device":
    """The torch device called ``name`` if this machine has it, else :class:`SettingError` saying
    what is there (``cuda`` without a GPU, ``cuda:3`` on a one-GPU machine, a misspelt name)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise SettingError(f"unknown device {str(name)!r}: use cpu or cuda (cuda:N for the N-th GPU)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch was built without CUDA" if torch.version.cuda is None
                   else "no NVIDIA GPU / driver is visible")
            raise SettingError(f"device {str(name)!r} is not available: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingError(f"device {str(name)!r} is not available: this machine has {count} CUDA "
                               f"device(s) (cuda:0..cuda:{count - 1})")
        return device
    if device.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return device
    raise SettingError(f"device {str(name)!r} is not supported here: use cpu or cuda")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
