"""Stage: the whole call, photo -> Gaussians -> first 512² render, plain and optimized, with peak
memory."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager, nullcontext
from typing import Any, Callable

from sigman.pipeline import SigmanPipeline

from .context import Context
from .timing import Stat, peak_memory_gb, reset_peak


def bench_end_to_end(ctx: Context) -> None:
    """photo -> Gaussians -> first 512² render, plain and optimized, and peak memory."""
    pipe, args, run, name = ctx.pipe, ctx.args, ctx.run, ctx.name
    e2e = run.section(name).setdefault("end_to_end", {})

    def call(steps: int, sampler: str) -> Callable[[], Any]:
        return lambda: pipe(args.image, args.pose, steps=steps, sampler=sampler, seed=args.seed, num_views=1,
                            render_size=512)

    cases = [("optimized", args.steps, "ddim")] if ctx.fast is not None else []
    cases += [("optimized", n, "dpmpp") for n in args.fast_steps[-1:]] if ctx.fast is not None else []
    cases += [("pipeline", args.steps, "ddim")]
    for label, steps, sampler in cases:
        key = f"{label}, {sampler} {steps}"

        def timed() -> Stat:
            with nullcontext() if label == "optimized" else plain_path(pipe):
                reset_peak(ctx.device)
                stat = ctx.measure(call(steps, sampler))
            e2e[key] = {"time": dataclasses.asdict(stat), "peak_memory_gb": peak_memory_gb(ctx.device)}
            return stat
        stat = run.stage(name, f"end to end ({key})", timed)
        run.put(name, f"end to end ({key})", stat, f"peak {e2e.get(key, {}).get('peak_memory_gb', float('nan')):.2f} GB "
                                                    f"({'CUDA allocated' if ctx.device.type == 'cuda' else 'process RSS'})")
    run.save()


@contextmanager
def plain_path(pipe: SigmanPipeline):
    """The pipeline as it runs without ``optimize()`` (its optimized parts restored afterwards)."""
    saved = pipe.fast_dit, getattr(pipe, "_cpu_body", None)
    pipe.fast_dit, pipe._cpu_body = None, None
    try:
        yield pipe
    finally:
        pipe.fast_dit, pipe._cpu_body = saved
