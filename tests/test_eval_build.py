"""scripts/eval_build.py's build measure: the rest-mesh distance after the best scale and translation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def _module():
    path = Path(__file__).resolve().parents[1] / "scripts" / "eval_build.py"
    spec = importlib.util.spec_from_file_location("eval_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_aligned_distance_ignores_size_and_place_but_not_shape():
    eval_build = _module()
    g = torch.Generator().manual_seed(0)
    body = torch.randn(500, 3, generator=g)
    assert eval_build.aligned_distance(1.3 * body + torch.tensor([0.2, -1.0, 0.5]), body) < 1e-6
    broader = body * torch.tensor([1.2, 1.0, 1.2])  # wider and deeper, same height
    assert eval_build.aligned_distance(broader, body) > 0.05
