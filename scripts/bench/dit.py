"""Stage: DiT sampling, timed per step and in total on several paths with the same weights and
noise (the release's way, sigman's plain pipeline, the optimized FastDiT), their agreement
against a strict fp32 run, the FLOP rate, and few-step samplers against the DDIM result."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from sigman.fast import cpu_has_native_bf16, dit_forward_flops

from .context import Context, cfg_inputs, fast_options, no_tf32, render_latents, run_sampler
from .timing import Stat, fmt_time, log, measure, psnr, rel_error, sync

FALLBACK_TOLERANCE = 0.05  # when no fp32 reference could be run


def bench_dit(ctx: Context) -> None:
    """Baseline vs pipeline vs optimized DiT: per step, total, agreement, FLOP rate."""
    pipe, args, run, name = ctx.pipe, ctx.args, ctx.run, ctx.name
    steps = args.steps
    sec = run.section(name)
    dit_report = sec.setdefault("dit", {"steps": steps, "paths": {}})
    flops = dit_forward_flops(pipe.dit.config, batch=2)
    dit_report["forward_flops_cfg_batch2"] = flops
    baseline_model = copy.deepcopy(pipe.dit).float().eval()  # the pipeline's weights, in fp32
    x32, t32, f32 = cfg_inputs(ctx, torch.float32)
    # bf16 autocast as the release runs it, where bf16 is native; a CPU without it emulates bf16 about
    # 1000x slower, so there the baseline runs in plain fp32 (and its note says so)
    native_bf16 = ctx.device.type == "cuda" or (ctx.device.type == "cpu" and cpu_has_native_bf16())

    def step_baseline() -> None:  # one CFG step as the release runs it: batch 2 (uncond + cond) at once
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=native_bf16):
            baseline_model(x32, t32, f32)

    def path(label: str, per_step: Callable[[], Any], total: Callable[[], Tensor], note: str) -> Optional[Tensor]:
        with torch.no_grad():
            step_stat = run.stage(name, f"DiT step ({label})", lambda: ctx.measure(per_step, max(args.repeats, 5)))
        run.put(name, f"DiT step ({label})", step_stat, note)
        result: dict[str, Optional[Tensor]] = {"latents": None}

        def timed_total() -> Stat:
            result["latents"] = total()  # doubles as the first warm-up run
            return measure(total, ctx.device, args.repeats, max(args.warmup - 1, 0), run.budget)
        stat = run.stage(name, f"sampling {steps} steps ({label})", timed_total)
        run.put(name, f"sampling {steps}× DDIM ({label})", stat, note)
        dit_report["paths"][label] = {"step": None if step_stat is None else dataclasses.asdict(step_stat),
                                      "total": None if stat is None else dataclasses.asdict(stat), "note": note}
        run.save()
        return result["latents"]

    how = "fp32 weights + bf16 autocast" if native_bf16 else "fp32 weights, no autocast (this CPU has no native bf16)"
    base = path("baseline", step_baseline,
                lambda: run_sampler(ctx, baseline_model, steps, "ddim", batch_cfg=True, autocast=native_bf16),
                f"as the release runs it: {how}, eager, batched CFG (uncond + cond in one batch of 2), DDIM")
    pipe_dtype = next(pipe.dit.parameters()).dtype
    if pipe_dtype != torch.bfloat16 and native_bf16:  # on CUDA the pipeline path below is this variant already
        bf16_model = copy.deepcopy(pipe.dit).to(torch.bfloat16).eval()
        xb16, tb16, fb16 = cfg_inputs(ctx, torch.bfloat16)
        path("baseline, bf16 weights", lambda: bf16_model(xb16, tb16, fb16),
             lambda: run_sampler(ctx, bf16_model, steps, "ddim"),
             "the release's computation with the weights cast to bf16 (no autocast), eager, batched CFG, DDIM")
        del bf16_model
    x2, t2, f2 = cfg_inputs(ctx, pipe_dtype)
    plain = path("pipeline", lambda: pipe.dit(x2, t2, f2), lambda: run_sampler(ctx, pipe.dit, steps, "ddim"),
                 f"{str(pipe_dtype).replace('torch.', '')} weights, eager, batched CFG (sigman before optimize())")

    fast = None
    options = fast_options(args).resolve(ctx.device, pipe_dtype)
    warm = run.stage(name, "optimized warm-up", lambda: optimize_and_warm_up(ctx, steps),
                     need_seconds=60 if options.compile else 5)
    if warm is None:  # skipped or failed: the rest of this config runs the plain pipeline
        pipe.fast_dit, pipe._cpu_body, ctx.fast = None, None, None
    else:
        dit_report["warmup_seconds"] = warm
        log(f"[{name}] optimized warm-up (compile + capture + first sampling): {warm:.1f}s")
        opts = ctx.fast.options
        note = (f"{str(opts.dtype).replace('torch.', '')} weights, fused block, batched CFG, compile="
                f"{opts.compile_mode if opts.compile else 'off'}, CUDA graphs={'on' if opts.cuda_graphs else 'off'}")
        if ctx.fast.fallback:
            sec["notes"].append(f"FastDiT fell back to eager: {ctx.fast.fallback}")
            note += f"; FELL BACK TO EAGER ({ctx.fast.fallback[:120]})"
        xb, tb, fb = cfg_inputs(ctx, ctx.fast.dtype)
        fast = path("optimized", lambda: ctx.fast(xb, tb, fb), lambda: run_sampler(ctx, ctx.fast, steps, "ddim"), note)
    ctx.ddim_latents = fast
    fp8 = bench_fp8(ctx, baseline_model, path) if fast is not None else None

    ref = None
    if not args.no_reference:
        def reference() -> Tensor:
            with no_tf32():
                return run_sampler(ctx, baseline_model, steps, "ddim")
        ref = run.stage(name, "fp32 reference sampling", reference)
    dit_report["agreement"] = agreement(base, fast, plain, ref)
    if fp8 is not None:
        dit_report["agreement_fp8"] = fp8_agreement(fp8, fast, ref)
        log(f"[{name}] FP8 agreement: {dit_report['agreement_fp8']}")
    log(f"[{name}] agreement: {dit_report['agreement']}")
    add_flop_rate(ctx, dit_report, flops)
    del baseline_model
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    run.save()


def bench_fp8(ctx: Context, fp32_model, path) -> Optional[Tensor]:
    """The optimized path with FP8 (e4m3) block matrices, where the GPU multiplies FP8 (``--no-fp8``
    skips it): its own FastDiT on a copy of the weights, same compile settings. Returns its latents."""
    from sigman.fast import FastDiT
    from sigman.fast_fp8 import fp8_matmul_supported

    if ctx.args.no_fp8 or not fp8_matmul_supported(ctx.device):
        return None
    options = dataclasses.replace(ctx.fast.options, fp8=True)
    model = FastDiT(copy.deepcopy(fp32_model), options)
    warm = ctx.run.stage(ctx.name, "FP8 warm-up", lambda: _timed(ctx, lambda: run_sampler(ctx, model, ctx.args.steps, "ddim")),
                         need_seconds=60 if options.compile else 5)
    if warm is None:
        return None
    log(f"[{ctx.name}] FP8 warm-up (compile + capture + first sampling): {warm:.1f}s")
    xb, tb, fb = cfg_inputs(ctx, model.dtype)
    note = f"as optimized, with e4m3 q/k/v, output and MLP matrices (per-row scales) and per-token activation scales"
    if model.fallback:
        note += f"; FELL BACK TO EAGER ({model.fallback[:120]})"
    return path("optimized, fp8", lambda: model(xb, tb, fb), lambda: run_sampler(ctx, model, ctx.args.steps, "ddim"), note)


def _timed(ctx: Context, fn: Callable[[], Any]) -> float:
    sync(ctx.device)
    tick = time.perf_counter()
    fn()
    sync(ctx.device)
    return time.perf_counter() - tick


def fp8_agreement(fp8: Tensor, bf16: Tensor, ref: Optional[Tensor]) -> dict:
    """FP8 against fp32: it passes within twice the bf16 optimized path's own error."""
    if ref is None:
        return {"fp8_vs_optimized_bf16": rel_error(fp8, bf16), "verdict": "no fp32 reference run"}
    out = {"fp8_vs_fp32": rel_error(fp8, ref), "optimized_bf16_vs_fp32": rel_error(bf16, ref),
           "fp8_vs_optimized_bf16": rel_error(fp8, bf16)}
    out["tolerance"] = 2 * out["optimized_bf16_vs_fp32"]
    out["tolerance_rule"] = "2 × ‖optimized bf16 − fp32‖/‖fp32‖"
    out["verdict"] = "PASS" if out["fp8_vs_fp32"] <= out["tolerance"] else "FAIL"
    return out


def optimize_and_warm_up(ctx: Context, steps: int) -> float:
    """``pipe.optimize()`` and one full sampling run (compile, autotuning, graph capture): seconds."""
    sync(ctx.device)
    tick = time.perf_counter()
    ctx.pipe.optimize(fast_options(ctx.args))
    ctx.fast = ctx.pipe.fast_dit
    run_sampler(ctx, ctx.fast, steps, "ddim")
    sync(ctx.device)
    return time.perf_counter() - tick


def agreement(base: Optional[Tensor], fast: Optional[Tensor], plain: Optional[Tensor], ref: Optional[Tensor]) -> dict:
    """Relative errors of the final latents and the pass/fail verdict.

    Tolerance: two bf16 computations of the same sampler may differ from each other by about as
    much as each differs from exact arithmetic, so the optimized result must lie within
    ``2 × ‖baseline − fp32‖ / ‖fp32‖`` of the baseline (at least 1e-2). Without an fp32 reference
    the fixed 5e-2 is used.
    """
    out: dict[str, Any] = {}
    if base is None or fast is None:
        return {"verdict": "not run"}
    out["optimized_vs_baseline"] = rel_error(fast, base)
    if plain is not None:
        out["pipeline_vs_baseline"] = rel_error(plain, base)
    if ref is not None:
        out["baseline_vs_fp32"] = rel_error(base, ref)
        out["optimized_vs_fp32"] = rel_error(fast, ref)
        out["tolerance"] = max(2 * out["baseline_vs_fp32"], 1e-2)
        out["tolerance_rule"] = "2 × ‖baseline − fp32‖/‖fp32‖ (min 1e-2)"
    else:
        out["tolerance"] = FALLBACK_TOLERANCE
        out["tolerance_rule"] = "fixed 5e-2 (no fp32 reference run)"
    out["verdict"] = "PASS" if out["optimized_vs_baseline"] <= out["tolerance"] else "FAIL"
    return out


def add_flop_rate(ctx: Context, report: dict, flops: int) -> None:
    step = report["paths"].get("optimized", {}).get("step")
    if step is None:
        return
    report["optimized_tflops"] = flops / step["median"] / 1e12
    rates = ctx.run.record.get("matmul", {})
    if rates:
        best = max(r["tflops"] for r in rates.values())
        report["fraction_of_matmul_rate"] = report["optimized_tflops"] / best


def bench_samplers(ctx: Context) -> None:
    """Few-step samplers on the optimized DiT against its DDIM-30 result."""
    if ctx.ddim_latents is None or ctx.fast is None:
        raise RuntimeError("needs the optimized DDIM result (the DiT section failed or was skipped)")
    rows = ctx.run.section(ctx.name).setdefault("samplers", [])
    reference_image = render_latents(ctx, ctx.ddim_latents)
    cases = [("dpmpp", n) for n in ctx.args.fast_steps] + [("ddim", n) for n in ctx.args.fast_steps]
    for sampler, steps in cases:
        if not ctx.run.budget.allows(5):
            ctx.run.section(ctx.name)["skipped"].append(f"sampler {sampler} {steps}")
            continue
        out = run_sampler(ctx, ctx.fast, steps, sampler)
        stat = ctx.measure(lambda: run_sampler(ctx, ctx.fast, steps, sampler))
        row = {"sampler": sampler, "steps": steps, "time": dataclasses.asdict(stat),
               "rel_latent_error_vs_ddim30": rel_error(out, ctx.ddim_latents),
               "render_psnr_vs_ddim30": psnr(render_latents(ctx, out), reference_image)}
        rows.append(row)
        log(f"[{ctx.name}] {sampler} {steps} steps: {fmt_time(stat.median)}, rel. latent error "
            f"{row['rel_latent_error_vs_ddim30']:.4f}, render PSNR {row['render_psnr_vs_ddim30']:.2f} dB")
    ctx.run.save()
