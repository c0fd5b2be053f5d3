"""Where sigman looks for assets and where it caches derived data. No hard-coded absolute paths:
everything is relative to the repository or overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """Folder with the shipped assets (poses, weights, examples). Override: ``SIGMAN_ASSETS``."""
    return Path(os.environ.get("SIGMAN_ASSETS", REPO_ROOT / "assets"))


def cache_dir() -> Path:
    """Folder for derived data (body-model caches, UV templates). Override: ``SIGMAN_CACHE``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sigman"
    path = Path(os.environ.get("SIGMAN_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def smplx_model_dir() -> Path:
    """Folder holding the licensed SMPL-X model files (``SMPLX_NEUTRAL.npz`` ...).
    Override: ``SIGMAN_SMPLX_DIR``. Default: ``assets/body_models/smplx``."""
    return Path(os.environ.get("SIGMAN_SMPLX_DIR", assets_dir() / "body_models" / "smplx"))


def default_model_dir() -> Path:
    """The model folder used when none is named (``pipeline.json`` + safetensors, or an official
    release folder). Override: ``SIGMAN_WEIGHTS``. Default: ``assets/weights/demo``."""
    return Path(os.environ.get("SIGMAN_WEIGHTS", assets_dir() / "weights" / "demo"))


def mediapipe_models_dir() -> Path:
    """Folder with the MediaPipe Tasks bundles (``pose_landmarker_full.task`` ...), built by
    ``scripts/build_mediapipe_tasks.py``. Default: ``assets/models/mediapipe``."""
    return assets_dir() / "models" / "mediapipe"


def poses_dir() -> Path:
    """Folder with the shipped pose presets and motions."""
    return assets_dir() / "poses"
