"""Training checkpoints: safetensors + JSON only (never pickle), written atomically, last K kept.

One checkpoint is one folder ``<root>/step_00001000/``::

    state.json                    step, config, anything the loop needs to continue (written last)
    <module>.safetensors          model weights, EMA weights, discriminator, ... (one file each)
    <optimizer>.safetensors       the optimizer's tensors, flattened as "state.<param>.<key>"
    <optimizer>.json              its param groups and non-tensor state
    schedulers.json               LR scheduler states
    rng_rank<r>.safetensors/.json the global RNG states of each rank (torch CPU + CUDA, numpy, random)

Atomicity: everything is written into ``<root>/.tmp-step_00001000/``, flushed to disk, and the folder
is then renamed to its final name, so a checkpoint folder either exists complete or not at all. A
run killed while writing leaves only a ``.tmp-*`` folder, which :func:`latest_checkpoint` ignores
and :func:`clean_incomplete` removes. Only the last ``keep`` complete checkpoints are kept.

With several processes every rank calls :func:`save_checkpoint` (each writes its own RNG state into
the temporary folder); the main process writes the rest and renames. Model states come from the
caller (unwrapped, identical on every rank under DDP).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
_NAME = re.compile(r"^step_(\d{8,})$")
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".old-"

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the run. The message says which."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


# --- low-level file helpers ----------------------------------------------------------------------

def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    """safetensors, contiguous CPU copies (shared storage is cloned)."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(state, str(path), metadata=metadata)


def write_json(path: Path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


# --- optimizer / scheduler / RNG state <-> tensors + JSON -----------------------------------------

def flatten_optimizer(state_dict: dict) -> tuple[dict[str, Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors, JSON): tensors under ``"state.<param>.<key>"``."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    return tensors, json.loads(json.dumps(meta))


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for k, v in g.items():  # JSON turned tuples (betas) into lists; optimizers accept either
            if k == "betas" and isinstance(v, list):
                g[k] = tuple(v)
        groups.append(g)
    return {"state": state, "param_groups": groups}


def scheduler_state(scheduler) -> dict:
    """A scheduler's state as JSON (``LambdaLR`` stores ``None`` for plain functions: the lambdas are
    rebuilt by the training script, not saved)."""
    return json.loads(json.dumps(scheduler.state_dict()))


def capture_rng_state() -> tuple[dict[str, Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def restore_rng_state(tensors: dict[str, Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# --- finding checkpoints ------------------------------------------------------------------------

def list_checkpoints(root: PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _NAME.match(p.name)) and p.is_dir() and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: PathLike) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_incomplete(root: PathLike) -> list[Path]:
    """Remove temporary / half-deleted folders left by a killed run. Returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints/`` folder or a run workspace
    (its latest complete checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for root in (path / CHECKPOINT_DIR, path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"no complete checkpoint in {path} (looked for {STATE_FILE} in it, and for "
                          f"step_* folders in it and in {path / CHECKPOINT_DIR})")


# --- saving and loading ----------------------------------------------------------------------------

def save_checkpoint(root: PathLike, step: int, *, modules: dict[str, Union[nn.Module, dict[str, Tensor]]],
                    optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any], state: dict,
                    keep: int = 3, rank: int = 0, world_size: int = 1,
                    barrier: Callable[[], None] = lambda: None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically (see the module docstring) and prune to the
    last ``keep``. Call it on every rank with the same ``step`` (``barrier`` synchronises them)."""
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    rng_tensors, rng_meta = capture_rng_state()
    write_tensors(tmp / f"rng_rank{rank}.safetensors", rng_tensors)
    write_json(tmp / f"rng_rank{rank}.json", rng_meta)
    barrier()
    if rank == 0:
        for name, module in modules.items():
            tensors = module.state_dict() if isinstance(module, nn.Module) else module
            write_tensors(tmp / f"{name}.safetensors", tensors)
        for name, opt in optimizers.items():
            tensors, meta = flatten_optimizer(opt.state_dict())
            write_tensors(tmp / f"{name}.safetensors", tensors)
            write_json(tmp / f"{name}.json", meta)
        write_json(tmp / "schedulers.json", {name: scheduler_state(s) for name, s in schedulers.items()})
        write_json(tmp / STATE_FILE, {**state, "step": step, "world_size": world_size,
                                      "modules": sorted(modules), "optimizers": sorted(optimizers)})
        for p in tmp.iterdir():
            _fsync_file(p)
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again (e.g. after a resume): swap it out
            old = root / f"{TRASH_PREFIX}{final.name}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def load_module_state(path: PathLike, name: str) -> dict[str, Tensor]:
    file = Path(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: the checkpoint does not hold '{name}'")
    return load_file(str(file))


def load_checkpoint(path: PathLike, *, modules: dict[str, Union[nn.Module, Callable[[dict], None]]],
                    optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any],
                    rank: int = 0, map_location: Union[str, torch.device] = "cpu") -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects (strict keys)
    and this rank's RNG states. ``modules`` values are modules or callables taking the state dict.
    Returns ``state.json``."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = read_json(path / STATE_FILE)
    for name, target in modules.items():
        tensors = load_module_state(path, name)
        if isinstance(target, nn.Module):
            target.load_state_dict(tensors, strict=True)
        else:
            target(tensors)
    for name, opt in optimizers.items():
        tensors = load_module_state(path, name)
        opt.load_state_dict(unflatten_optimizer(tensors, read_json(path / f"{name}.json")))
    saved = read_json(path / "schedulers.json")
    for name, sched in schedulers.items():
        if name not in saved:
            raise CheckpointError(f"{path} has no state for scheduler '{name}'")
        sched.load_state_dict(saved[name])
    rng = path / f"rng_rank{rank}.safetensors"
    if rng.is_file():
        restore_rng_state(load_file(str(rng)), read_json(path / f"rng_rank{rank}.json"))
    return state
