"""Helpers shared by the training loops: config parsing, data order, EMA, LR schedule, logging.

Everything here is small and loop-agnostic; ``train_vae.py`` and ``train_dit.py`` read top to bottom
and call into it.

Exact resume rests on two rules:

* **Data order is a pure function of the step.** :class:`StreamBatchSampler` cuts one endless stream
  of per-epoch permutations (seeded by ``(seed, epoch)``) into global batches; step ``s`` of rank ``r``
  takes a fixed slice of it, so resuming at step ``s`` needs nothing but ``s``.
* **Randomness in a step comes from a generator seeded by ``(seed, step, rank)``** (:func:`step_generator`),
  never from the global RNG, so it does not depend on what ran before. The global RNG states are
  checkpointed and restored as well (:mod:`train.checkpoint`), for anything that still uses them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import time
import typing
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

# --- configs and the command line -----------------------------------------------------------------

def _field_type(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, f.type)


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field`` option per dataclass field (``--field-name`` works too), all defaulting to
    "not given" so only what the user passes overrides the named config. ``bool`` fields take
    ``--flag`` / ``--no-flag``; ``dict`` fields take a JSON object."""
    for f in dataclasses.fields(cls):
        if f.name == "name":
            continue
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        tp = _field_type(cls, f)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Union and type(None) in args:  # Optional[X]
            tp = next(a for a in args if a is not type(None))
            origin = typing.get_origin(tp)
        help_text = f.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif tp is dict or origin is dict:
            parser.add_argument(*names, dest=f.name, type=json.loads, default=None, metavar="JSON", help=help_text)
        elif tp in (int, float, str):
            parser.add_argument(*names, dest=f.name, type=tp, default=None, help=help_text)
        else:
            raise TypeError(f"config field {f.name} has a type the command line cannot parse: {tp}")


def config_from_args(args: argparse.Namespace, configs: dict, cls):
    """The named config ``args.config`` with every option the user gave applied on top."""
    if args.config not in configs:
        raise SystemExit(f"unknown config {args.config!r}; choose one of {sorted(configs)}")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if f.name != "name" and getattr(args, f.name, None) is not None}
    return dataclasses.replace(configs[args.config], **overrides)


def config_to_json(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


# --- seeds and per-step randomness ------------------------------------------------------------------

def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (``numpy.random.SeedSequence``: well mixed, order-sensitive)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts] + [len(parts)])
               .generate_state(1, dtype=np.uint64)[0] >> 1)


def step_generator(seed: int, step: int, rank: int, device: Union[str, torch.device] = "cpu",
                   stream: int = 0) -> torch.Generator:
    """The generator for everything random in step ``step`` on rank ``rank`` (``stream`` separates uses)."""
    return torch.Generator(device=device).manual_seed(mix_seed(seed, step, rank, stream))


# --- data order ----------------------------------------------------------------------------------------

class StreamBatchSampler(Sampler):
    """Endless batches of ``(epoch, index)`` pairs for one rank, starting at step ``start_step``.

    The stream is the concatenation of one random permutation of ``range(n)`` per epoch (seeded by
    ``(seed, epoch)``); global step ``s`` takes stream elements ``[s*G, (s+1)*G)`` with
    ``G = batch_size * world_size``, and rank ``r`` the ``r``-th ``batch_size`` of them. Any ``n``
    works (an item may then appear twice in one global batch across an epoch boundary).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_step: int = 0) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need at least one item and a batch size >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.start_step = seed, start_step
        self._perm_epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, 7)))
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int) -> list[tuple[int, int]]:
        first = step * self.batch_size * self.world_size + self.rank * self.batch_size
        out = []
        for k in range(first, first + self.batch_size):
            epoch, pos = divmod(k, self.n)
            out.append((epoch, int(self.permutation(epoch)[pos])))
        return out

    def epoch_at(self, step: int) -> float:
        """Epochs completed (fractional) after ``step`` steps."""
        return step * self.batch_size * self.world_size / self.n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class EpochItems(Dataset):
    """Wraps a dataset with ``set_epoch`` so that ``ds[(epoch, index)]`` loads ``index`` as drawn in
    ``epoch`` (the sample gets ``"index"``). The epoch travels with each index, so persistent
    DataLoader workers need no restart at epoch boundaries."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        self.dataset.set_epoch(epoch)
        sample = self.dataset[index]
        sample["index"] = torch.tensor(index)
        return sample


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device`` (non-blocking from pinned memory)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def loader_kwargs(num_workers: int, device: torch.device) -> dict:
    """DataLoader options: workers (persistent, prefetching) and pinned memory on CUDA."""
    kw: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=2)
    return kw


# --- schedules and EMA ---------------------------------------------------------------------------

def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps`` (from ``1/warmup``), then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, warmup_steps, total_steps, min_ratio))


class EMA:
    """Exponential moving average of a model's parameters (float32 copies; buffers copied).

    ``decay`` warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so early
    averages do not cling to the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.model.parameters())
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for eb, b in zip(self.model.buffers(), model.buffers()):
            eb.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates


# --- logging -----------------------------------------------------------------------------------

class Logger:
    """Scalars and images of the main process: a JSONL file always (``metrics.jsonl``), tensorboard
    too when it imports. Never fails because a logger is missing; images also go to PNG files."""

    def __init__(self, folder: Union[str, Path], enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.tb = None
        self.notes: set[str] = set()
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.folder / "metrics.jsonl", "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.folder / "tensorboard"))
        except Exception as err:  # tensorboard missing or broken: the JSONL log still has everything
            self.note_once("tensorboard", f"tensorboard unavailable ({err.__class__.__name__}: {err}); "
                                          f"logging to {self.folder / 'metrics.jsonl'} only")

    def purge_after(self, step: int) -> None:
        """Forget records logged after ``step`` (a resumed run logs those steps again): the JSONL file
        is rewritten and tensorboard discards its later events."""
        if not self.enabled:
            return
        self.jsonl.close()
        path = self.folder / "metrics.jsonl"
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        self.jsonl = open(path, "a", buffering=1)
        if self.tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb.close()
            self.tb = SummaryWriter(str(self.folder / "tensorboard"), purge_step=step + 1)

    def note_once(self, key: str, message: str) -> None:
        if self.enabled and key not in self.notes:
            self.notes.add(key)
            print(f"[note] {message}", flush=True)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": prefix, **{k: float(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def image(self, step: int, name: str, image: np.ndarray) -> Optional[Path]:
        """``image [H, W, 3]`` uint8: saved as ``samples/{name}_{step:08d}.png`` (and to tensorboard)."""
        if not self.enabled:
            return None
        from PIL import Image

        path = self.folder / "samples" / f"{name}_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        if self.tb is not None:
            self.tb.add_image(name, image, step, dataformats="HWC")
        return path

    def print(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


class Throughput:
    """Samples per second since the last report (per process; the caller multiplies for the total)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples = 0
        self.start = time.perf_counter()

    def add(self, n: int) -> None:
        self.samples += n

    def rate(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        rate = self.samples / max(now - self.start, 1e-9)
        self.samples, self.start = 0, now
        return rate


def mixed_precision_for(requested: str, device_has_cuda: bool) -> str:
    """Mixed precision only on CUDA (CPU bf16 autocast is slow and not bit-reproducible)."""
    if requested not in ("no", "bf16", "fp16"):
        raise SystemExit(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {requested!r}")
    return requested if device_has_cuda else "no"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """``torch.use_deterministic_algorithms`` for the duration (restored after). On the CPU this makes
    a run bit-reproducible (e.g. the reference rasterizer's ``index_add`` backward); on CUDA gsplat's
    backward kernels use atomics, so GPU runs resume on the same curve but not bit for bit."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of one run that are not part of the model/training config."""
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the workspace's latest complete checkpoint (or from CHECKPOINT)")
    parser.add_argument("--stop_at", "--stop-at", dest="stop_at", type=int, default=None,
                        help="checkpoint and exit after this step (the schedule still runs to --steps)")
    parser.add_argument("--time_limit", "--time-limit", dest="time_limit", type=float, default=None, metavar="MINUTES",
                        help="checkpoint and exit once this much wall time has passed (for time-limited job "
                             "slots); continue with --resume")


class Deadline:
    """Wall-clock budget of one run. Every ``every`` steps the processes agree (any one over the
    budget stops them all, at the same step)."""

    def __init__(self, minutes: Optional[float], accelerator, every: int = 10) -> None:
        self.end = None if minutes is None else time.monotonic() + 60.0 * minutes
        self.accelerator = accelerator
        self.every = every

    def reached(self, step: int) -> bool:
        if self.end is None or step % self.every:
            return False
        over = torch.tensor(float(time.monotonic() > self.end), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            over = self.accelerator.reduce(over, "sum")
        return bool(over > 0)
