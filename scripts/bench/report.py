"""The markdown report (docs/PERFORMANCE.md): targets, per-config stage tables, the DiT paths, the
samplers and the end-to-end table, from the JSON records."""

from __future__ import annotations

from typing import Optional

from .timing import fmt_time


TARGETS = [
    # (config, device type, what, how to read it from a section, limit, unit)
    ("official", "cuda", "official DDIM sampling (optimized), 30 steps", lambda s: dit_total(s, "optimized"), 0.67, "s"),
    ("official", "cuda", "official DDIM sampling (optimized, FP8), 30 steps (stretch)",
     lambda s: dit_total(s, "optimized, fp8"), 0.35, "s"),
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
    if rec.get("note"):  # written by hand into the JSON when a record joins runs (e.g. one config re-measured)
        facts.append(f"- note: {rec['note']}")
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
    fp8 = dit.get("agreement_fp8", {})
    if "fp8_vs_fp32" in fp8:
        facts.append(f"- FP8 agreement: ‖fp8 − fp32‖/‖fp32‖ = {fp8['fp8_vs_fp32']:.2e}, optimized bf16 "
                     f"{fp8['optimized_bf16_vs_fp32']:.2e}; tolerance {fp8['tolerance']:.2e} "
                     f"({fp8['tolerance_rule']}): **{fp8['verdict']}**")
    if facts:
        out.append("\n".join(facts) + "\n")
    return "\n".join(out)


HEADER = """# Performance

Measured by `scripts/benchmark.py` (one section per device; a run replaces its own device's section
and keeps the others, via `--merge`). Timings are median / min / max over the repeats after warm-up;
CUDA events on the GPU, `time.perf_counter` on the CPU. Peak memory is
`torch.cuda.max_memory_allocated` on the GPU and the process's peak RSS on the CPU.

DiT paths: **baseline** = as the release runs it (fp32 weights under bf16 autocast, eager, CFG
batched: the unconditional and conditional inputs in one forward of batch 2, as the release's
`SamplesPipeline` does; DDIM, 30 steps; plain fp32 on a CPU without native bf16); **baseline, bf16 weights** = the same computation with the
weights cast to bf16 (measured where the pipeline's weights are not bf16 already and bf16 is native;
on CUDA it is the pipeline path); **pipeline** = sigman's plain path (weights in the pipeline dtype, bf16 on CUDA,
eager, CFG batched); **optimized** = `sigman.fast.FastDiT`, what `pipe.optimize()`
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
