"""Timing utilities shared by every stage: the run's clock and log, the time budget, one timed call
(CUDA events on the GPU, ``perf_counter`` on the CPU), median / min / max of repeats, error and
memory measures, and time formatting."""

from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)


@dataclass
class Budget:
    """Wall-clock seconds for the whole run (``None``: unlimited)."""

    seconds: Optional[float]
    reserve: float = 10.0  # kept for writing the report

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - START) - self.reserve

    def allows(self, seconds: float = 0.0) -> bool:
        return self.left() > seconds


@dataclass
class Stat:
    median: float
    min: float
    max: float
    n: int

    @staticmethod
    def of(times: list[float]) -> "Stat":
        return Stat(statistics.median(times), min(times), max(times), len(times))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of one call (CUDA events on the GPU) and its result."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, out
    tick = time.perf_counter()
    out = fn()
    return time.perf_counter() - tick, out


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int, budget: Budget) -> Stat:
    """Median / min / max seconds over ``repeats`` calls after ``warmup`` calls; fewer repeats when
    the budget runs short (at least one)."""
    for _ in range(warmup):
        fn()
    sync(device)
    first, _ = time_once(fn, device)
    times = [first]
    while len(times) < repeats and budget.allows(first * 1.2):
        times.append(time_once(fn, device)[0])
    return Stat.of(times)


def rel_error(a: Tensor, b: Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in float64."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return peak_rss_mb() / 1024
