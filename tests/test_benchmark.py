"""scripts/benchmark.py and its stages (scripts/bench/): the DiT stage on a tiny pipeline runs every
path, the baseline as the release runs it (batched CFG, fp32 weights under bf16 autocast), and the
report renders from the records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sigman.pipeline import SigmanPipeline
from tiny_configs import tiny_pipeline_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts scripts/ on sys.path for the bench package
    return module


def test_command_line_is_unchanged(bench_script):
    args = bench_script.parse_args(["--configs", "official", "demo", "--quick"])
    assert args.configs == ["official", "demo"] and args.steps == 2 and args.official_layers == 1
    assert bench_script.parse_args([]).configs == ["demo", "official"]


@pytest.mark.slow
def test_dit_stage_measures_the_release_baseline(bench_script, anny_body, tmp_path):
    from bench.context import Context
    from bench.dit import bench_dit
    from bench.environment import device_info
    from bench.models import BuiltPipeline
    from bench.results import Run
    from bench.timing import Budget

    pipe = SigmanPipeline.from_config(tiny_pipeline_config(steps=2), body=anny_body)
    args = bench_script.parse_args(["--configs", "demo", "--quick", "--no-compile", "--no-reference"])
    record = {"key": "cpu:test", "device": device_info(torch.device("cpu")), "date": "today", "command": "test",
              "repeats": 1, "warmup": 0, "configs": {}, "errors": []}
    run = Run(record, tmp_path / "PERF.md", tmp_path / "PERF.json", [], Budget(None))
    calls = []  # (batch, autocast on, weight dtype) of every DiT forward; the hook follows deep copies

    def record_call(module, inputs):
        calls.append((inputs[0].shape[0], torch.is_autocast_enabled("cpu"), next(module.parameters()).dtype))
    pipe.dit.register_forward_pre_hook(record_call)
    ctx = Context("demo", BuiltPipeline(pipe, "tiny random"), torch.device("cpu"), args, run)
    bench_dit(ctx)
    paths = record["configs"]["demo"]["dit"]["paths"]
    from sigman.fast import cpu_has_native_bf16

    expected = {"baseline", "pipeline", "optimized"} | ({"baseline, bf16 weights"} if cpu_has_native_bf16() else set())
    assert set(paths) == expected  # the bf16-weights variant only where bf16 is native (emulated: far too slow)
    assert "batched CFG" in paths["baseline"]["note"] and "separate" not in paths["baseline"]["note"]
    assert all(paths[p]["total"] is not None for p in paths), record["configs"]["demo"]["errors"]
    assert calls and all(batch == 2 for batch, _, _ in calls)  # CFG batched everywhere: no separate forwards
    if cpu_has_native_bf16():  # the baseline: fp32 weights under bf16 autocast (plain fp32 where bf16 is emulated)
        autocast_calls = [c for c in calls if c[1]]
        assert autocast_calls and all(dtype == torch.float32 for _, _, dtype in autocast_calls)
    else:
        assert "no autocast (this CPU has no native bf16)" in paths["baseline"]["note"]
    if cpu_has_native_bf16():
        assert any(dtype == torch.bfloat16 for _, _, dtype in calls)  # the bf16-weights variant ran
    agreement = record["configs"]["demo"]["dit"]["agreement"]
    assert agreement["verdict"] in ("PASS", "FAIL") and agreement["optimized_vs_baseline"] >= 0
    assert "| baseline |" in (tmp_path / "PERF.md").read_text()


def test_report_renders_the_committed_records(bench_script):
    from bench.report import render_markdown

    records = json.loads((REPO / "docs" / "PERFORMANCE.json").read_text())
    text = render_markdown(records)
    assert text.startswith("# Performance") and "as the release runs it" in text
    assert text.count("\n## ") == len(records)
