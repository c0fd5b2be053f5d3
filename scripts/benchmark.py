"""Benchmark the whole pipeline and each stage; write docs/PERFORMANCE.md (+ .json).

Stages: preprocessing, image encoder, DiT forward and sampling, VAE decode, Gaussian build, LBS
reposing, 512² render, .ply export, and the end-to-end call. Each timing is the median / min / max
of ``--repeats`` runs after ``--warmup`` runs (CUDA events on the GPU, ``perf_counter`` on the CPU).

The DiT is timed on the same weights and noise along these paths:

* ``baseline``: as the release runs it — fp32 weights under bf16 autocast, eager, CFG batched
  (unconditional + conditional in one forward of batch 2, as its ``SamplesPipeline`` does), DDIM
  (on a CPU without native bf16, plain fp32: emulated bf16 would take minutes per forward);
* ``baseline, bf16 weights``: the same with the weights cast to bf16 (no autocast); measured
  only where the pipeline's own weights are not bf16 already (on CUDA that is ``pipeline``) and
  the device has native bf16 (emulated bf16 on a CPU takes minutes);
* ``pipeline``: sigman's plain path — weights in the pipeline dtype (bf16 on CUDA), eager, CFG batched;
* ``optimized``: :class:`sigman.fast.FastDiT` — bf16 weights, fused block, flash SDPA, one batched
  CFG forward, ``torch.compile`` and CUDA graphs (the last two on CUDA only by default);

and the final latents of baseline and optimized are compared (see ``agreement`` in the report).

    python scripts/benchmark.py --configs demo --out docs/PERFORMANCE.md           # CPU section
    python scripts/benchmark.py --configs official demo --time-budget 420 \\
        --out $OUT/PERFORMANCE.md --merge docs/PERFORMANCE.json                    # GPU section
    python scripts/benchmark.py --quick                                            # smoke-test every path

Every stage is isolated: a failure prints one ``ERROR`` line and the run goes on. Results are
written after every section, so a run cut short still leaves its numbers behind.

The stages live in ``scripts/bench/``, one file each, to be read one at a time: ``timing``
(clock, budget, repeats), ``environment`` (machine facts, matmul rate), ``models`` (the demo and
official pipelines), ``context`` (what a config's stages share), ``inputs``, ``dit``, ``render``,
``end_to_end`` (the stages), ``results`` (the record, written after every section) and
``report`` (the markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # sigman
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench, beside this file

from bench.context import Context  # noqa: E402
from bench.dit import bench_dit, bench_samplers  # noqa: E402
from bench.end_to_end import bench_end_to_end  # noqa: E402
from bench.environment import device_info, matmul_rate  # noqa: E402
from bench.inputs import bench_inputs  # noqa: E402
from bench.models import build_demo, build_official  # noqa: E402
from bench.render import bench_decode_and_pose  # noqa: E402
from bench.report import render_markdown  # noqa: E402
from bench.results import Run  # noqa: E402
from bench.timing import Budget, log, peak_rss_mb  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON_NAME = "PERFORMANCE.json"


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
    p.add_argument("--no-fp8", action="store_true", help="skip the FP8 path (run only where the GPU multiplies FP8)")
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
