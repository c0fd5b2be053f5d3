"""A persistent cache of what ``torch.compile`` produced, so that a second start skips compiling.

``torch.compiler.save_cache_artifacts()`` serialises what this process compiled (inductor's FX
graphs and generated code, Triton kernels, autotuning choices, AOTAutograd entries), and
``torch.compiler.load_cache_artifacts()`` hot-loads such bytes into the local caches, so that the
next ``torch.compile`` of the same code on the same software and GPU is a cache hit: no code
generation and no autotuning.

One file per model, in ``<cache_dir>/compile/`` (:func:`sigman.paths.cache_dir`), named by a key over
everything that makes compiled code invalid elsewhere: the torch, CUDA and Triton versions, the
GPU's name and compute capability, and the model's configuration and compile options. A missing
file means a first start; an unreadable one is removed and compiling starts afresh; one that loads
but does not match (a stale entry) is simply missed by inductor and rewritten after the warm-up.
Every outcome is one line of text for the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from sigman.paths import cache_dir

CACHE_FOLDER = "compile"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)  # dtypes, devices, callables: their repr names them


def software_fingerprint(device: Union[str, torch.device]) -> dict:
    """The versions and the GPU that compiled code depends on."""
    device = torch.device(device)
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - no Triton (CPU builds): nothing to record
        info["triton"] = None
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["gpu"] = torch.cuda.get_device_name(index)
        info["capability"] = list(torch.cuda.get_device_capability(index))
    return info


def cache_key(device: Union[str, torch.device], *parts: Any) -> str:
    """16 hex digits over the software fingerprint and ``parts`` (configs, options)."""
    payload = json.dumps({"software": software_fingerprint(device), "parts": _jsonable(list(parts))},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fx_cache_hits() -> int:
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_hit"])


@dataclass
class CompileCache:
    """The cache file of one compiled model (see the module docstring)."""

    path: Path
    loaded: bool = False
    _hits_at_load: int = 0

    @staticmethod
    def for_model(name: str, device: Union[str, torch.device], *parts: Any,
                  folder: Optional[Path] = None) -> "CompileCache":
        folder = Path(folder) if folder is not None else cache_dir() / CACHE_FOLDER
        return CompileCache(folder / f"{name}-{cache_key(device, *parts)}.bin")

    def load(self) -> str:
        """Hot-load the cached artifacts, if any. Returns one line saying what happened."""
        if not self.path.is_file():
            return f"compile cache: none yet at {self.path} (this start compiles; later starts reuse it)"
        torch_log = logging.getLogger("torch.compiler._cache")  # it logs a traceback for a bad file
        level = torch_log.level
        torch_log.setLevel(logging.CRITICAL)
        try:
            data = self.path.read_bytes()
            info = torch.compiler.load_cache_artifacts(data)
            problem = None if info is not None else "not a cache torch can read (corrupt or from another version)"
        except Exception as err:  # noqa: BLE001 - any broken file: drop it and compile afresh
            problem = f"{type(err).__name__}: {err}"
        finally:
            torch_log.setLevel(level)
        if problem is not None:
            self.path.unlink(missing_ok=True)
            return f"compile cache: {self.path.name} is unreadable ({problem}); removed it, compiling afresh"
        self.loaded = True
        self._hits_at_load = _fx_cache_hits()
        entries = sum(len(v) for v in getattr(info, "artifacts", {}).values()) if info is not None else 0
        return f"compile cache: loaded {entries} entries ({len(data) / 1e6:.1f} MB) from {self.path}"

    def save(self) -> str:
        """Write what this process compiled (after the warm-up). Returns one line; a cache that was
        loaded and fully hit is left as it is."""
        if self.loaded and _fx_cache_hits() > self._hits_at_load:
            return f"compile cache: hit ({_fx_cache_hits() - self._hits_at_load} graphs from {self.path.name})"
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None or not artifacts[0]:
            return "compile cache: nothing was compiled, nothing saved"
        stale = " (the loaded cache was stale: refreshed)" if self.loaded else ""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        try:
            tmp.write_bytes(artifacts[0])
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            return f"compile cache: could not write {self.path} ({err}); the next start compiles again"
        return f"compile cache: saved {len(artifacts[0]) / 1e6:.1f} MB to {self.path}{stale}"
