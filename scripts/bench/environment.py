"""What the report says about the machine: CPU and GPU names, versions, and the matmul rate the
DiT's FLOP rate is compared with."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from sigman.fast import cpu_has_native_bf16

from .timing import Budget, log, measure


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "python": platform.python_version(),
                            "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(),
                            "load_average": [round(x, 2) for x in os.getloadavg()]}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gb=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    multiprocessors=props.multi_processor_count)
        try:
            from sigman.render import gsplat_available
            info["gsplat"] = gsplat_available()
        except Exception as err:  # noqa: BLE001 - reporting only
            info["gsplat"] = f"unavailable ({err})"
    else:
        info["name"] = info["cpu"]
    return info


def matmul_rate(device: torch.device, budget: Budget) -> dict:
    """TFLOP/s of one large square matmul: 8192³ bf16 on the GPU; on the CPU 2048³ in fp32, and in bf16
    where the CPU has native bf16."""
    results = {}
    cases = [(8192, torch.bfloat16)] if device.type == "cuda" else [(2048, torch.float32)]
    if device.type == "cpu" and cpu_has_native_bf16():  # emulated bf16 is ~1000x slower: minutes per matmul
        cases.append((2048, torch.bfloat16))
    for n, dtype in cases:
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(n, n, generator=g, device="cpu").to(device, dtype)
        b = torch.randn(n, n, generator=g, device="cpu").to(device, dtype)
        stat = measure(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3,
                       warmup=3 if device.type == "cuda" else 1, budget=budget)
        name = f"{n}^3 {str(dtype).replace('torch.', '')}"
        results[name] = {"tflops": 2 * n ** 3 / stat.median / 1e12, "seconds": stat.median}
        log(f"matmul {name}: {results[name]['tflops']:.1f} TFLOP/s")
        del a, b
    return results
