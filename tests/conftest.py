"""Shared fixtures. The anny body is built once per session (its assets are cached on disk by
sigman itself, so only the very first run on a fresh machine pays anny's start-up)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session")
def anny_body():
    from sigman.body import load_body_model

    return load_body_model("anny")


@pytest.fixture(scope="session")
def uv64(anny_body):
    from sigman.uv import build_uv_template

    return build_uv_template(anny_body, 64)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def random_pose(num_frames: int = 1, scale: float = 0.4, seed: int = 0):
    from sigman.pose import SMPLXPose

    g = torch.Generator().manual_seed(seed)
    pose = SMPLXPose.zeros(num_frames)
    pose.global_orient = (torch.rand(num_frames, 3, generator=g) - 0.5) * 2 * 3.0
    pose.body_pose = (torch.rand(num_frames, 21, 3, generator=g) - 0.5) * 2 * scale
    pose.left_hand_pose = (torch.rand(num_frames, 15, 3, generator=g) - 0.5) * 2 * scale
    pose.right_hand_pose = (torch.rand(num_frames, 15, 3, generator=g) - 0.5) * 2 * scale
    pose.transl = torch.rand(num_frames, 3, generator=g) - 0.5
    return pose


def no_anny():
    """Stands in for anny's loader: what a machine without the anny package raises."""
    raise ImportError("No module named 'anny'", name="anny")


@pytest.fixture(scope="session")
def bank_path(anny_body, tmp_path_factory):
    """A 4-body shape bank (as the GPU machine, which has no anny, uses)."""
    from sigman.body.shape_bank import make_shape_bank

    path = tmp_path_factory.mktemp("bank") / "bank.npz"
    make_shape_bank(path, count=4, seed=3, body=anny_body)
    return path
