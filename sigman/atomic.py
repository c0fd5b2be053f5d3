"""Writing files so that a reader never sees half of one: write beside the target, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np


def atomic_savez(path: Union[str, Path], arrays: dict[str, np.ndarray], compressed: bool = False) -> Path:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path`` through a temporary file in
    the same folder and an atomic rename; the folder is created. Returns ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.npz")
    os.close(fd)
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
