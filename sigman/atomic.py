"""Cache files: written so that a reader never sees half of one (write beside the target, then
rename), and read back so that a corrupt one is rebuilt rather than trusted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

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


def read_npz_cache(path: Union[str, Path]) -> Optional[dict[str, np.ndarray]]:
    """The arrays of the cache file ``path``, or ``None`` when it is missing or unreadable (the caller
    rebuilds it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, never trusted
        return None
