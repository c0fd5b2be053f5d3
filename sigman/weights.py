"""Checkpoint I/O: safetensors only (never pickle), strict key and shape checks.

A model folder follows the diffusers convention users know::

    folder/
      pipeline.json            # which configs the pipeline uses (written by training)
      autoencoder.safetensors  # VAE
      transformer.safetensors  # DiT
      image_encoder.safetensors (demo encoder) or sapiens_1b_epoch_173_torchscript.pt2 (official)

The official SIGMAN release files (``autoencoder.safetensors``, ``transformer.safetensors``, and the
Sapiens-1B torchscript file) load into the ``official`` configs with the same strict check.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class WeightsError(RuntimeError):
    """Missing, corrupt or mismatched weights. The message says what and how to fix it."""


def _summarise(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches, e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
    if problems:
        raise WeightsError(f"{source} does not match the {type(model).__name__} config ({'; '.join(problems)}); "
                           "use the config the file was trained with, or retrain")


def load_weights(model: nn.Module, path: Union[str, Path], strict: bool = True) -> nn.Module:
    """Load a safetensors file into ``model`` (in place) with a strict key/shape check."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; train it with train/ or put the release file there")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err}); download or copy it again") from err
    if strict:
        check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=strict, assign=False)
    return model


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise WeightsError(f"could not write {path} ({err.strerror or err}); free disk space or choose another folder") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(model_or_state: Union[nn.Module, dict[str, torch.Tensor]], path: Union[str, Path],
                 metadata: Optional[dict[str, str]] = None) -> None:
    """Write a safetensors file atomically (temp file + rename: a crash never leaves half a file)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    _atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=metadata))


def save_json(data: dict[str, Any], path: Union[str, Path]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
    _atomic_write(Path(path), write)


def load_json(path: Union[str, Path]) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise WeightsError(f"{path} not found; a model folder needs its pipeline.json") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON ({err}); restore it from the release or retrain") from err
