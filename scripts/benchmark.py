"""Benchmark the whole pipeline and each stage; write docs/PERFORMANCE.md (+ .json).

Stages: preprocessing, image encoder, DiT forward and sampling, VAE decode, Gaussian build, LBS
reposing, 512² render, .ply export, and the end-to-end call. Each timing is the median / min / max
of ``--repeats`` runs after ``--warmup`` runs (CUDA events on the GPU, ``perf_counter`` on the CPU).

The DiT is timed three ways on the same weights and noise:

* ``baseline``: the release's way — fp32 weights under bf16 autocast, eager, separate unconditional
  and conditional forwards, DDIM;
* ``pipeline``: sigman's plain path — weights in the pipeline dtype, eager, CFG batched;
* ``optimized``: :class:`sigman.fast.FastDiT` — bf16 weights, fused block, flash SDPA, one batched
  CFG forward, ``torch.compile`` and CUDA graphs (the last two on CUDA only by default);

and the final latents of baseline and optimized are compared (see ``agreement`` in the report).

    python scripts/benchmark.py --configs demo --out docs/PERFORMANCE.md           # CPU section
    python scripts/benchmark.py --configs official demo --time-budget 420 \\
        --out $OUT/PERFORMANCE.md --merge docs/PERFORMANCE.json                    # GPU section
    python scripts/benchmark.py --quick                                            # smoke-test every path

Every stage is isolated: a failure prints one ``ERROR`` line and the run goes on. Results are
written after every section, so a run cut short still leaves its numbers behind.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.fast import FastDiT, FastOptions, dit_forward_flops, fast_repose  # noqa: E402
from sigman.gaussians import Gaussians, gaussians_from_attributes, quat_from_normals, repose  # noqa: E402
from sigman.models.dit import SigmanDiT, dit_config  # noqa: E402
from sigman.models.vae import VAE_CONFIGS, SigmanVAE  # noqa: E402
from sigman.paths import default_model_dir  # noqa: E402
from sigman.pipeline import PipelineConfig, SigmanPipeline  # noqa: E402
from sigman.preprocess import preprocess_person  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402
from sigman.render import Camera, fit_orbit_to_points, render  # noqa: E402
from sigman.sampling import sample  # noqa: E402

START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON_NAME = "PERFORMANCE.json"
FALLBACK_TOLERANCE = 0.05  # when no fp32 reference could be run


# ----------------------------------------------------------------------------------------------------
# Small utilities: logging, budget, timing
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Results: one record per device, written after every section
# ----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything this run measured (JSON-serialisable) and where to write it."""

    record: dict
    out: Optional[Path]
    json_path: Optional[Path]
    merge: list[Path]
    budget: Budget

    def section(self, config: str) -> dict:
        return self.record["configs"].setdefault(config, {"stages": {}, "notes": [], "errors": [], "skipped": []})

    def stage(self, config: str, name: str, fn: Callable[[], Any], need_seconds: float = 0.0) -> Any:
        """Run one stage: skipped when the budget is short, errors recorded and printed, never raised."""
        sec = self.section(config)
        if not self.budget.allows(need_seconds):
            sec["skipped"].append(name)
            log(f"[{config}] SKIPPED {name} (time budget: {self.budget.left():.0f}s left)")
            return None
        log(f"[{config}] {name} ...")
        try:
            return fn()
        except Exception as err:  # one failed stage must not stop the others
            summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:400]
            sec["errors"].append(f"{name}: {summary}")
            log(f"[{config}] ERROR in {name}: {summary}")
            traceback.print_exc(limit=4, file=sys.stdout)
            if isinstance(err, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(err).lower():
                torch.cuda.empty_cache()
            return None
        finally:
            sys.stdout.flush()

    def put(self, config: str, name: str, stat: Optional[Stat], note: str = "") -> None:
        if stat is None:
            return
        self.section(config)["stages"][name] = {**dataclasses.asdict(stat), "note": note}
        log(f"[{config}] {name}: median {fmt_time(stat.median)} (min {fmt_time(stat.min)}, "
            f"max {fmt_time(stat.max)}, n={stat.n}) {note}")

    def save(self) -> None:
        """Write the JSON (this record merged with the others) and the markdown."""
        self.record["wall_seconds"] = round(time.perf_counter() - START, 1)
        if self.out is None:
            return
        records = merge_records(self.merge + ([self.json_path] if self.json_path else []), self.record)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.json_path is not None:
            self.json_path.write_text(json.dumps(records, indent=1, default=str) + "\n")
        self.out.write_text(render_markdown(records))


def merge_records(paths: list[Path], current: dict) -> list[dict]:
    """Records from earlier JSON files, one per device key, with ``current`` replacing its key."""
    by_key: dict[str, dict] = {}
    for path in paths:
        if path is not None and path.is_file():
            try:
                for rec in json.loads(path.read_text()):
                    by_key[rec["key"]] = rec
            except (OSError, ValueError, KeyError, TypeError) as err:
                log(f"could not read {path} to merge ({err}); it is left out")
    by_key[current["key"]] = current
    return sorted(by_key.values(), key=lambda r: (r["device"]["type"] != "cpu", r["key"]))


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


# ----------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------


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
    """TFLOP/s of one large square matmul: 8192³ bf16 on the GPU; on the CPU 2048³ in fp32 and bf16."""
    results = {}
    cases = [(8192, torch.bfloat16)] if device.type == "cuda" else [(2048, torch.float32), (2048, torch.bfloat16)]
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


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def randomize_dit_(dit: SigmanDiT, seed: int) -> SigmanDiT:
    """Random weights that make every part of the DiT matter (the training init zeroes the
    modulations and the output, so its samples would be trivial): variance-preserving normal
    matrices, small biases, norm scales near 1."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in dit.named_parameters():
        if name.endswith("bias"):
            values = torch.randn(p.shape, generator=g, device="cpu") * 0.02
        elif p.dim() == 1:  # LayerNorm / RMSNorm scales
            values = 1.0 + torch.randn(p.shape, generator=g, device="cpu") * 0.02
        else:
            fan_in = p[0].numel()
            values = torch.randn(p.shape, generator=g, device="cpu") / math.sqrt(fan_in)
        p.copy_(values.to(p.device, p.dtype))
    return dit


class RandomSapiensFeatures(nn.Module):
    """Stands in for Sapiens-1B (not available here): fixed random features ``[B, 1536, 64, 64]``
    for a ``1024²`` input, so every later stage sees the official shapes."""

    input_size, out_channels, out_size = 1024, 1536, 64

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._features: Optional[Tensor] = None

    def forward(self, images: Tensor) -> Tensor:
        shape = (images.shape[0], self.out_channels, self.out_size, self.out_size)
        f = self._features
        if f is None or f.shape != shape or f.device != images.device or f.dtype != images.dtype:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            self._features = torch.randn(shape, generator=g, device="cpu").to(images.device, images.dtype)
        return self._features


@dataclass
class BuiltPipeline:
    pipe: SigmanPipeline
    weights: str  # what the weights are, for the report
    notes: list[str] = field(default_factory=list)


def build_demo(args: argparse.Namespace, device: torch.device) -> BuiltPipeline:
    folder = Path(args.weights) if args.weights else default_model_dir()
    shown = os.path.relpath(folder, REPO) if folder.resolve().is_relative_to(REPO) else str(folder)
    if (folder / "pipeline.json").is_file():
        pipe = SigmanPipeline.from_pretrained(folder, device=str(device))
        return BuiltPipeline(pipe, f"trained demo weights from {shown}")
    config = PipelineConfig()
    pipe = SigmanPipeline.from_config(config, device="cpu", seed=args.seed)
    randomize_dit_(pipe.dit, args.seed)
    pipe = SigmanPipeline(config, pipe.body, pipe.vae, pipe.dit.float(), pipe.image_encoder.float(), device)
    return BuiltPipeline(pipe, f"random weights, demo config ({shown} not found); the DiT is re-initialised "
                               "with variance-preserving random weights so that sampling is not trivial")


def official_overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    dit = {"num_layers": args.official_layers} if args.official_layers else {}
    vae = {"decoder_layers_per_block": 1} if args.quick else {}
    return dit, vae


def build_official(args: argparse.Namespace, device: torch.device) -> BuiltPipeline:
    from sigman.body import load_body_model

    dit_over, vae_over = official_overrides(args)
    config = PipelineConfig(body_model="anny", vae="official", dit="official", image_encoder="sapiens",
                            gaussian_uv_resolution=512, guidance_schedule="release-dynamic",
                            vae_overrides=vae_over, dit_overrides=dit_over)
    torch.manual_seed(args.seed)
    with torch.device(device):  # initialise on the device: 1.94 B parameters are slow to init on a CPU
        vae = SigmanVAE(dataclasses.replace(VAE_CONFIGS["official"], **vae_over))
        dit = SigmanDiT(dit_config("official", **dit_over))
    randomize_dit_(dit, args.seed)  # outside the device context: it draws from a CPU generator
    pipe = SigmanPipeline(config, load_body_model("anny"), vae, dit, RandomSapiensFeatures(args.seed), device)
    notes = ["Sapiens-1B is not available: the image encoder stage returns fixed random features of the "
             "official shape [1, 1536, 64, 64] (its cost is not included); preprocessing still runs at 1024².",
             "Random weights with the release's shapes (DiT 30 layers, 32 heads × 64, 1024 latent + 256 "
             "condition tokens; official VAE); the body is anny (SMPL-X files are licensed), UV 512."]
    if dit_over or vae_over:
        notes.append(f"Reduced for a smoke run: DiT overrides {dit_over}, VAE overrides {vae_over}.")
    return BuiltPipeline(pipe, "random weights, official shapes", notes)


# ----------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the sections of one config share."""

    name: str
    built: BuiltPipeline
    device: torch.device
    args: argparse.Namespace
    run: Run
    features: Optional[Tensor] = None  # [1, C, h, w] encoder output
    canonical: Optional[Gaussians] = None
    rest_joints: Optional[Tensor] = None
    camera: Optional[Camera] = None
    fast: Optional[FastDiT] = None
    ddim_latents: Optional[Tensor] = None  # optimized DDIM result, [1, C, h, w] in the DiT's space

    @property
    def pipe(self) -> SigmanPipeline:
        return self.built.pipe

    def measure(self, fn: Callable[[], Any], repeats: Optional[int] = None) -> Stat:
        return measure(fn, self.device, repeats or self.args.repeats, self.args.warmup, self.run.budget)

    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, *self.pipe.vae.config.latent_shape)

    def sampler_kwargs(self, steps: int, sampler: str) -> dict:
        return dict(steps=steps, guidance=self.pipe.config.guidance, sampler=sampler, seed=self.args.seed,
                    guidance_schedule=self.pipe.config.guidance_schedule)


def bench_inputs(ctx: Context) -> None:
    """Preprocessing and the image encoder."""
    pipe, args = ctx.pipe, ctx.args
    size = pipe.encoder_input_size()
    person = preprocess_person(args.image, size=size, background=pipe.config.background)
    stat = ctx.measure(lambda: preprocess_person(args.image, size=size, background=pipe.config.background))
    ctx.run.put(ctx.name, "preprocessing", stat, f"photo -> {size}² crop")
    pixels = person.image.to(ctx.device, pipe.dtype)
    with torch.no_grad():
        ctx.features = pipe.image_encoder(pixels)
        stat = ctx.measure(lambda: pipe.image_encoder(pixels))
    stand_in = isinstance(pipe.image_encoder, RandomSapiensFeatures)
    note = "random stand-in for Sapiens-1B (not timed meaningfully)" if stand_in else type(pipe.image_encoder).__name__
    ctx.run.put(ctx.name, "image encoder", stat, note)


def features(ctx: Context) -> Tensor:
    if ctx.features is None:
        cfg = ctx.pipe.dit.config
        c, h, w = cfg.condition_channels, cfg.condition_size, cfg.condition_size
        g = torch.Generator(device="cpu").manual_seed(ctx.args.seed)
        ctx.features = torch.randn(1, c, h, w, generator=g, device="cpu").to(ctx.device, ctx.pipe.dtype)
    return ctx.features


def cfg_inputs(ctx: Context, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """One sampling step's DiT inputs for batched CFG: latents ``[2, C, H, W]``, t ``[2]``, features."""
    g = torch.Generator(device="cpu").manual_seed(ctx.args.seed + 1)
    x = torch.randn(ctx.latent_shape(), generator=g, device="cpu").to(ctx.device, dtype)
    f = features(ctx).to(dtype)
    t = torch.full((2,), 500, device=ctx.device, dtype=torch.long)
    return torch.cat([x, x]), t, torch.cat([torch.zeros_like(f), f])


def run_sampler(ctx: Context, model: Callable, steps: int, sampler: str, batch_cfg: bool = True,
                autocast: bool = False) -> Tensor:
    ctx_manager = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    with torch.no_grad(), ctx_manager:
        return sample(model, features(ctx), ctx.latent_shape(), batch_cfg=batch_cfg, **ctx.sampler_kwargs(steps, sampler))


@contextmanager
def no_tf32():
    """Strict fp32 matmuls and convolutions (for the reference run)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fast_options(args: argparse.Namespace) -> FastOptions:
    return FastOptions(compile=args.compile, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs)


def bench_dit(ctx: Context) -> None:
    """Baseline vs pipeline vs optimized DiT: per step, total, agreement, FLOP rate."""
    pipe, args, run, name = ctx.pipe, ctx.args, ctx.run, ctx.name
    steps = args.steps
    sec = run.section(name)
    dit_report = sec.setdefault("dit", {"steps": steps, "paths": {}})
    flops = dit_forward_flops(pipe.dit.config, batch=2)
    dit_report["forward_flops_cfg_batch2"] = flops
    baseline_model = copy.deepcopy(pipe.dit).float().eval()  # the pipeline's weights, in fp32

    def step_baseline() -> None:
        x2, t2, f2 = cfg_inputs(ctx, torch.float32)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            baseline_model(x2[:1], t2[:1], f2[1:]), baseline_model(x2[:1], t2[:1], f2[:1])

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

    base = path("baseline", step_baseline,
                lambda: run_sampler(ctx, baseline_model, steps, "ddim", batch_cfg=False, autocast=True),
                "fp32 weights + bf16 autocast, eager, separate uncond/cond forwards (the release's way)")
    pipe_dtype = next(pipe.dit.parameters()).dtype
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

    ref = None
    if not args.no_reference:
        def reference() -> Tensor:
            with no_tf32():
                return run_sampler(ctx, baseline_model, steps, "ddim")
        ref = run.stage(name, "fp32 reference sampling", reference)
    dit_report["agreement"] = agreement(base, fast, plain, ref)
    log(f"[{name}] agreement: {dit_report['agreement']}")
    add_flop_rate(ctx, dit_report, flops)
    del baseline_model
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    run.save()


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


def bench_decode_and_pose(ctx: Context) -> None:
    """VAE decode, Gaussian build, reposing, render, export — on the optimized DDIM latents."""
    pipe, run, name = ctx.pipe, ctx.run, ctx.name
    scaled = ctx.ddim_latents if ctx.ddim_latents is not None else run_sampler(ctx, pipe.dit, 2, "ddim")
    latents = scaled.float() / pipe.vae.config.latent_scaling_factor
    rest_vertices, rest_joints = pipe.body.rest(None)
    points = pipe.template.positions_for(rest_vertices[0])
    quats = quat_from_normals(pipe.template.normals)

    def decode() -> dict:
        with torch.no_grad():
            return pipe.vae.decode_attributes(latents, pipe.template.texel_uv, template_points=points,
                                              template_quats=quats, point_spacing=pipe.template.footprints)
    attrs = decode()
    run.put(name, "VAE decode", ctx.measure(decode),
            f"latent {tuple(latents.shape[1:])} -> {pipe.template.num_points} points")

    def build() -> Gaussians:
        g = gaussians_from_attributes(points, attrs["offset"], attrs["scale"], attrs["quat"], attrs["opacity"],
                                      attrs["rgb"].clamp(0, 1), skin_weights=pipe.template.skin_weights)
        return g.with_(means=g.means[0], quats=g.quats[0], scales=g.scales[0], opacities=g.opacities[0], colors=g.colors[0])
    ctx.canonical, ctx.rest_joints = build(), rest_joints[0]
    run.put(name, "Gaussian build", ctx.measure(build), f"{ctx.canonical.num_gaussians} Gaussians")
    run.stage(name, "LBS reposing", lambda: bench_repose(ctx))
    run.stage(name, "render", lambda: bench_render(ctx))
    run.stage(name, "export", lambda: bench_export(ctx))


def sparse_skin_class() -> type:
    """``viewer.skinning.SparseSkin``, loaded from its file so that the viewer package (and viser,
    which a GPU box may lack) is not imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_viewer_skinning", REPO / "viewer" / "skinning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SparseSkin


def bench_repose(ctx: Context) -> None:
    """Reference reposing, its parts, and the two fast paths (optimized pipeline; viewer's sparse)."""
    pipe, run, name, reps = ctx.pipe, ctx.run, ctx.name, max(ctx.args.repeats, 10)
    pose = resolve_pose(ctx.args.pose)
    canonical, rest_joints = ctx.canonical, ctx.rest_joints
    cpu_body = pipe.body if ctx.device.type == "cpu" else copy.deepcopy(pipe.body).to("cpu")
    rest_cpu = rest_joints.cpu()
    n = canonical.num_gaussians
    with torch.no_grad():
        run.put(name, "repose: reference (kinematics + dense LBS on the device)",
                ctx.measure(lambda: repose(canonical, pipe.body.pose_transforms(pose, rest_joints)[0]), reps),
                f"{n} Gaussians; sigman.gaussians.repose, the pipeline before optimize()")
        run.put(name, "repose: kinematics on the device", ctx.measure(lambda: pipe.body.pose_transforms(pose, rest_joints),
                                                                      reps), "body.pose_transforms")
        run.put(name, "repose: kinematics on the CPU", ctx.measure(lambda: cpu_body.pose_transforms(pose, rest_cpu), reps),
                "body.pose_transforms on a CPU copy of the body")
        transforms_cpu = cpu_body.pose_transforms(pose, rest_cpu)[0]
        run.put(name, "repose: fast_repose (CPU transforms given)",
                ctx.measure(lambda: fast_repose(canonical, transforms_cpu), reps),
                "joint tables on the CPU, 2 matmuls per pose on the device")
        run.put(name, "repose: CPU kinematics + fast_repose",
                ctx.measure(lambda: fast_repose(canonical, cpu_body.pose_transforms(pose, rest_cpu)[0]), reps),
                "the optimized pipeline's path (pipe.optimize() on CUDA)")
        transforms = transforms_cpu.to(ctx.device)
        skin = sparse_skin_class()(canonical.skin_weights).to(ctx.device)
        run.put(name, "repose: sparse top-k LBS (transforms given)",
                ctx.measure(lambda: skin.repose(canonical.means, canonical.quats, transforms[0]), reps),
                f"viewer fast path (k≤{skin.k}, exact={skin.exact})")

        def sparse_total():
            t = cpu_body.pose_transforms(pose, rest_cpu)[0].to(ctx.device, non_blocking=True)
            return skin.repose(canonical.means, canonical.quats, t[0])
        run.put(name, "repose: CPU kinematics + sparse top-k LBS", ctx.measure(sparse_total, reps), "the viewer's path")


def posed_first(ctx: Context) -> Gaussians:
    posed = ctx.pipe.pose_gaussians(ctx.canonical, ctx.rest_joints, resolve_pose(ctx.args.pose))
    return posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                       opacities=posed.opacities[0], colors=posed.colors[0]).to(torch.float32)


def bench_render(ctx: Context) -> None:
    from sigman.render import resolve_backend

    g = posed_first(ctx)
    ctx.camera = fit_orbit_to_points(g.means, n_views=1, width=512, height=512).to(ctx.device)
    bg = (ctx.pipe.config.background,) * 3
    backend = resolve_backend("auto", ctx.device)
    with torch.no_grad():
        render(g, ctx.camera, background=bg)  # gsplat compiles / loads its kernels on first use
        stat = ctx.measure(lambda: render(g, ctx.camera, background=bg), max(ctx.args.repeats, 10))
    ctx.run.put(ctx.name, "render 512²", stat, f"1 view, {g.num_gaussians} Gaussians, backend {backend}")


def bench_export(ctx: Context) -> None:
    from sigman.io import save_gaussians

    g = posed_first(ctx)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "avatar.ply"
        stat = ctx.measure(lambda: save_gaussians(path, g.detach().to("cpu")))
        size = path.stat().st_size
    ctx.run.put(ctx.name, "export .ply", stat, f"{g.num_gaussians} Gaussians, {size / 2 ** 20:.1f} MiB, incl. device->host")


def render_latents(ctx: Context, scaled: Tensor) -> Tensor:
    """``[H, W, 3]`` render of the avatar decoded from DiT-space latents (fixed camera)."""
    pipe = ctx.pipe
    canonical, rest_joints = pipe.decode_gaussians(scaled.float() / pipe.vae.config.latent_scaling_factor)
    posed = pipe.pose_gaussians(canonical, rest_joints, resolve_pose(ctx.args.pose))
    g = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                    opacities=posed.opacities[0], colors=posed.colors[0]).to(torch.float32)
    camera = ctx.camera or fit_orbit_to_points(g.means, n_views=1, width=512, height=512).to(ctx.device)
    with torch.no_grad():
        return render(g, camera, background=(pipe.config.background,) * 3).rgb[0].clamp(0, 1)


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


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return peak_rss_mb() / 1024


def bench_config(name: str, args: argparse.Namespace, device: torch.device, run: Run) -> None:
    sec = run.section(name)
    built = run.stage(name, "build pipeline", lambda: (build_demo if name == "demo" else build_official)(args, device))
    if built is None:
        run.save()
        return
    sec["weights"], sec["notes"] = built.weights, sec["notes"] + built.notes
    pipe = built.pipe
    sec["model"] = {"dit": dataclasses.asdict(pipe.dit.config),
                    "dit_params_m": sum(p.numel() for p in pipe.dit.parameters()) / 1e6,
                    "gaussians": pipe.template.num_points, "latent_shape": list(pipe.vae.config.latent_shape)}
    log(f"[{name}] {built.weights}; DiT {sec['model']['dit_params_m']:.1f} M params, {pipe.template.num_points} Gaussians")
    ctx = Context(name, built, device, args, run)
    run.stage(name, "inputs", lambda: bench_inputs(ctx))
    run.stage(name, "DiT", lambda: bench_dit(ctx), need_seconds=30)
    run.stage(name, "end to end", lambda: bench_end_to_end(ctx), need_seconds=10)
    run.stage(name, "decode / pose / render / export", lambda: bench_decode_and_pose(ctx), need_seconds=5)
    run.stage(name, "samplers", lambda: bench_samplers(ctx), need_seconds=10)
    sec["peak_rss_gb"] = peak_rss_mb() / 1024
    run.save()
    del ctx, built, pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------

TARGETS = [
    # (config, device type, what, how to read it from a section, limit, unit)
    ("official", "cuda", "official DDIM sampling (optimized), 30 steps", lambda s: dit_total(s, "optimized"), 0.67, "s"),
    ("official", "cuda", "DiT forward ≥ 50% of bf16 matmul rate",
     lambda s: s.get("dit", {}).get("fraction_of_matmul_rate"), 0.5, "≥"),
    ("official", "cuda", "photo → Gaussians → first render (optimized, DDIM)",
     lambda s: e2e_median(s, "optimized, ddim"), 1.0, "s"),
    ("official", "cuda", "photo → Gaussians → first render (optimized, DPM++)",
     lambda s: e2e_median(s, "optimized, dpmpp"), 1.0, "s"),
    ("official", "cuda", "peak GPU memory, batch 1",
     lambda s: e2e_entry(s, "optimized, ddim").get("peak_memory_gb"), 24.0, "GB"),
    ("demo", "cpu", "demo end to end, 2 CPU cores (optimized, DDIM)", lambda s: e2e_median(s, "optimized, ddim"), 20.0, "s"),
    ("demo", "cpu", "demo end to end, 2 CPU cores (optimized, DPM++)",
     lambda s: e2e_median(s, "optimized, dpmpp"), 20.0, "s"),
    ("demo", "cuda", "demo end to end (optimized, DDIM)", lambda s: e2e_median(s, "optimized, ddim"), 1.0, "s"),
    ("demo", "cpu", "demo reposing (fastest path)", lambda s: fastest_repose(s), 0.030, "s"),
    ("demo", "cuda", "demo reposing (fastest path)", lambda s: fastest_repose(s), 0.002, "s"),
    ("demo", "cuda", "512² render", lambda s: stage_median(s, "render 512²"), 0.005, "s"),
    ("official", "cuda", "512² render (official avatar)", lambda s: stage_median(s, "render 512²"), 0.005, "s"),
]


def stage_median(section: dict, name: str) -> Optional[float]:
    stage = section.get("stages", {}).get(name)
    return None if stage is None else stage["median"]


def fastest_repose(section: dict) -> Optional[float]:
    """The faster of the two complete fast reposing paths (pose in, posed Gaussians out)."""
    times = [stage_median(section, k) for k in ("repose: CPU kinematics + fast_repose",
                                                "repose: CPU kinematics + sparse top-k LBS")]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def e2e_entry(section: dict, prefix: str) -> dict:
    """The first end-to-end entry whose key starts with ``prefix`` (keys end with the step count)."""
    return next((v for k, v in section.get("end_to_end", {}).items() if k.startswith(prefix)), {})


def e2e_median(section: dict, prefix: str) -> Optional[tuple[float, str]]:
    """Median seconds and the entry's key (which names the sampler and step count)."""
    key = next((k for k in section.get("end_to_end", {}) if k.startswith(prefix)), None)
    return None if key is None else (section["end_to_end"][key]["time"]["median"], key)


def dit_total(section: dict, path: str) -> Optional[float]:
    total = section.get("dit", {}).get("paths", {}).get(path, {}).get("total")
    return None if total is None else total["median"]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def md_targets(rec: dict) -> str:
    rows = []
    for config, dev, what, read, limit, unit in TARGETS:
        if rec["device"]["type"] != dev or config not in rec["configs"]:
            continue
        value = read(rec["configs"][config])
        steps = rec["configs"][config].get("dit", {}).get("steps", 30)
        what = what.replace("30 steps", f"{steps} steps")
        if isinstance(value, tuple):  # (seconds, which entry)
            value, detail = value
            what = f"{what.split(' (')[0]} ({detail})"
        if value is None:
            bound = {"≥": f"≥ {limit:.0%}", "s": f"≤ {fmt_time(limit)}"}.get(unit, f"≤ {limit} {unit}")
            rows.append([what, "not measured", bound, "—"])
            continue
        if unit == "≥":
            rows.append([what, f"{value:.0%}", f"≥ {limit:.0%}", "yes" if value >= limit else "**no**"])
        elif unit == "GB":
            rows.append([what, f"{value:.2f} GB", f"≤ {limit} GB", "yes" if value <= limit else "**no**"])
        else:
            rows.append([what, fmt_time(value), f"≤ {fmt_time(limit)}", "yes" if value <= limit else "**no**"])
    return md_table(["target", "measured", "limit", "met"], rows) if rows else ""


def md_section(rec: dict) -> str:
    dev = rec["device"]
    out = [f"## {dev['type'].upper()}: {dev.get('name', '?')}\n"]
    facts = [f"- date: {rec['date']}", f"- command: `{rec['command']}`",
             f"- torch {dev['torch']}" + (f", CUDA {dev['cuda']}" if dev.get("cuda") else "") + f", Python {dev['python']}",
             f"- CPU: {dev['cpu']}, {dev['cpu_threads']} torch threads, load average at start {dev['load_average']}"]
    if dev["type"] == "cuda":
        facts.append(f"- GPU: {dev['name']} (sm {dev['capability']}, {dev['memory_gb']} GB), gsplat: {dev.get('gsplat')}")
    for label, m in rec.get("matmul", {}).items():
        facts.append(f"- matmul {label}: {m['tflops']:.1f} TFLOP/s")
    facts.append(f"- repeats {rec['repeats']} after {rec['warmup']} warm-up; "
                 f"wall time of the run {rec.get('wall_seconds', '?')} s")
    out.append("\n".join(facts) + "\n")
    if rec.get("errors"):
        out.append("Errors: " + "; ".join(rec["errors"]) + "\n")
    targets = md_targets(rec)
    if targets:
        out.append("### Targets\n\n" + targets)
    for name, sec in rec["configs"].items():
        out.append(md_config(name, sec))
    return "\n".join(out)


def md_config(name: str, sec: dict) -> str:
    out = [f"### {name}\n"]
    if sec.get("weights"):
        model = sec.get("model", {})
        out.append(f"Weights: {sec['weights']}. DiT {model.get('dit_params_m', 0):.1f} M parameters, "
                   f"{model.get('gaussians', '?')} Gaussians.\n")
    for note in sec.get("notes", []):
        out.append(f"- {note}")
    if sec.get("notes"):
        out.append("")
    rows = [[k, fmt_time(v["median"]), fmt_time(v["min"]), fmt_time(v["max"]), v["n"], v.get("note", "")]
            for k, v in sec.get("stages", {}).items()]
    if rows:
        out.append(md_table(["stage", "median", "min", "max", "n", "note"], rows))
    dit = sec.get("dit")
    if dit:
        out.append(md_dit(dit))
    if sec.get("samplers"):
        rows = [[r["sampler"], r["steps"], fmt_time(r["time"]["median"]), f"{r['rel_latent_error_vs_ddim30']:.4f}",
                 f"{r['render_psnr_vs_ddim30']:.2f}"] for r in sec["samplers"]]
        ddim_steps = dit.get("steps", 30) if dit else 30
        out.append(f"Few-step samplers (optimized DiT) against the optimized {ddim_steps}-step DDIM "
                   "result: relative latent error and PSNR of the 512² render of the decoded, posed avatar.\n")
        out.append(md_table(["sampler", "steps", "time", "rel. latent error", "render PSNR (dB)"], rows))
    if sec.get("end_to_end"):
        rows = [[k, fmt_time(v["time"]["median"]), fmt_time(v["time"]["min"]), fmt_time(v["time"]["max"]),
                 f"{v['peak_memory_gb']:.2f}"] for k, v in sec["end_to_end"].items()]
        out.append("End to end: `pipe(photo, pose, num_views=1, render_size=512)` (preprocess → encoder → "
                   "sampling → VAE decode → Gaussians → repose → render).\n")
        out.append(md_table(["path", "median", "min", "max", "peak memory (GB)"], rows))
    for key in ("errors", "skipped"):
        if sec.get(key):
            out.append(f"{key.capitalize()}: " + "; ".join(sec[key]) + "\n")
    return "\n".join(out)


def md_dit(dit: dict) -> str:
    out = []
    base = (dit["paths"].get("baseline") or {}).get("total")
    rows = []
    for label, p in dit["paths"].items():
        step, total = p.get("step"), p.get("total")
        ratio = f"{base['median'] / total['median']:.2f}×" if base and total else "—"
        rows.append([label, fmt_time(step and step["median"]), fmt_time(total and total["median"]), ratio,
                     p.get("note", "")])
    out.append(f"DiT sampling, {dit['steps']} DDIM steps with CFG (per step = the forwards of one step):\n")
    out.append(md_table(["path", "per step", "total", "speed-up vs baseline", "how"], rows))
    facts = []
    if "warmup_seconds" in dit:
        facts.append(f"- optimized warm-up (compile + graph capture + first sampling): {dit['warmup_seconds']:.1f} s")
    if "optimized_tflops" in dit:
        frac = dit.get("fraction_of_matmul_rate")
        share = f", {frac:.0%} of the measured matmul rate" if frac else ""
        facts.append(f"- DiT forward (CFG batch 2): {dit['forward_flops_cfg_batch2'] / 1e12:.2f} TFLOP (counted from "
                     f"the config) → {dit['optimized_tflops']:.1f} TFLOP/s{share}")
    agree = dit.get("agreement", {})
    if "optimized_vs_baseline" in agree:
        extra = ""
        if "baseline_vs_fp32" in agree:
            extra = (f"; baseline vs fp32 reference {agree['baseline_vs_fp32']:.2e}, optimized vs fp32 "
                     f"{agree['optimized_vs_fp32']:.2e}")
        facts.append(f"- agreement of the final latents: ‖optimized − baseline‖/‖baseline‖ = "
                     f"{agree['optimized_vs_baseline']:.2e}{extra}; tolerance {agree['tolerance']:.2e} "
                     f"({agree['tolerance_rule']}): **{agree['verdict']}**")
    if facts:
        out.append("\n".join(facts) + "\n")
    return "\n".join(out)


HEADER = """# Performance

Measured by `scripts/benchmark.py` (one section per device; a run replaces its own device's section
and keeps the others, via `--merge`). Timings are median / min / max over the repeats after warm-up;
CUDA events on the GPU, `time.perf_counter` on the CPU. Peak memory is
`torch.cuda.max_memory_allocated` on the GPU and the process's peak RSS on the CPU.

DiT paths: **baseline** = the release's way (fp32 weights under bf16 autocast, eager, separate
unconditional and conditional forwards, DDIM); **pipeline** = sigman's plain path (weights in the
pipeline dtype, eager, CFG batched); **optimized** = `sigman.fast.FastDiT`, what `pipe.optimize()`
turns on (bf16 weights on CUDA and on CPUs with native bf16, one token sequence through fused
blocks, fused q/k/v, fused q/k RMS-norm + RoPE, flash SDPA, batched CFG; on CUDA also
`torch.compile` of the block and CUDA-graph replay of the forward). On CUDA `pipe.optimize()` also
reposes with `sigman.fast.fast_repose` (body kinematics on the CPU, two matmuls on the GPU).

Agreement tolerance: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 2e-3 per operation), and
over 30 layers × 30 steps the rounding of two bf16 implementations drifts apart by about as much as
either drifts from exact arithmetic. The benchmark therefore also samples once in strict fp32 (no
TF32) and requires ‖optimized − baseline‖/‖baseline‖ ≤ 2 × ‖baseline − fp32‖/‖fp32‖ (at least 1e-2;
a fixed 5e-2 when the fp32 run is skipped).

Weights are random unless trained demo weights exist (the official config always has random weights
of the release's shapes), so there the sampler-quality numbers measure how closely a few-step solver
follows the 30-step DDIM trajectory of the same network, not image quality.

Reproduce: `python scripts/benchmark.py --configs demo --threads 2 --out docs/PERFORMANCE.md` on a
CPU; `python scripts/benchmark.py --configs official demo --time-budget 420 --out docs/PERFORMANCE.md`
on a GPU; `python scripts/benchmark.py --quick` smoke-tests every path (official DiT at one layer).
"""


def render_markdown(records: list[dict]) -> str:
    return HEADER + "\n" + "\n".join(md_section(r) for r in records)


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["demo", "official"], choices=["demo", "official"])
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=30, help="DDIM steps of the baseline / optimized comparison")
    p.add_argument("--fast-steps", type=int, nargs="+", default=[10, 15], help="few-step sampler step counts")
    p.add_argument("--time-budget", type=float, default=None, help="seconds for the whole run; later stages are skipped")
    p.add_argument("--quick", action="store_true", help="smoke run: official DiT at 1 layer, 2 steps, 1 repeat")
    p.add_argument("--official-layers", type=int, default=None, help="override the official DiT depth")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="force torch.compile on")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="force torch.compile off")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None)
    p.add_argument("--no-reference", action="store_true", help="skip the fp32 reference sampling")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--weights", default=None, help="demo weights folder (default assets/weights/demo)")
    p.add_argument("--image", default=str(REPO / "assets" / "examples" / "person_00.png"))
    p.add_argument("--pose", default="waving")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="markdown report (a .json with the same stem is written beside it)")
    p.add_argument("--json", default=None, help="JSON path (default: --out with .json)")
    p.add_argument("--merge", nargs="*", default=None,
                   help="JSON reports whose other-device sections are kept (default: docs/PERFORMANCE.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.steps, args.fast_steps = 1, 0, 2, [2]
        args.official_layers = args.official_layers or 1
    if args.skip_official:
        args.configs = [c for c in args.configs if c != "official"]
    return args


def quiet_autotune_tables() -> None:
    """Keep inductor's max-autotune result tables out of the log (they would push the progress lines
    out of a short output tail)."""
    try:
        import torch._inductor.config as inductor_config

        if hasattr(inductor_config, "autotune_num_choices_displayed"):
            inductor_config.autotune_num_choices_displayed = 0
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    quiet_autotune_tables()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu" and "official" in args.configs and not args.official_layers:
        log("official config on the CPU needs --quick or --official-layers (1.94 B parameters); skipping it")
        args.configs = [c for c in args.configs if c != "official"]
    info = device_info(device)
    out = Path(args.out) if args.out else None
    json_path = Path(args.json) if args.json else (out.with_suffix(".json") if out else None)
    merge = [Path(m) for m in args.merge] if args.merge is not None else [REPO / "docs" / DEFAULT_JSON_NAME]
    record = {"key": f"{device.type}:{info['name']}", "device": info,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
              "repeats": args.repeats, "warmup": args.warmup, "configs": {}, "errors": []}
    run = Run(record, out, json_path, merge, Budget(args.time_budget))
    log(f"device {info['name']} ({device}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"configs {args.configs}, budget {args.time_budget or 'none'}")
    try:
        record["matmul"] = matmul_rate(device, run.budget)
    except Exception as err:  # noqa: BLE001
        record["errors"].append(f"matmul: {type(err).__name__}: {err}")
        log(f"ERROR in matmul: {err}")
    run.save()
    for name in args.configs:
        try:
            bench_config(name, args, device, run)
        except Exception as err:  # noqa: BLE001 - keep going with the next config
            record["errors"].append(f"{name}: {type(err).__name__}: {err}")
            log(f"ERROR in config {name}: {err}")
            traceback.print_exc(limit=6, file=sys.stdout)
        run.save()
    run.save()
    if out:
        log(f"wrote {out}" + (f" and {json_path}" if json_path else ""))
    print(render_markdown([record]), flush=True)


if __name__ == "__main__":
    main()
