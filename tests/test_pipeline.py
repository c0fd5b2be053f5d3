"""End to end on tiny random models: photo + pose -> Gaussians -> renders."""

import numpy as np
import pytest
import torch

from sigman.pipeline import SigmanPipeline
from sigman.preprocess import ImageInputError
from sigman.weights import WeightsError
from tiny_configs import tiny_pipeline_config

TINY = tiny_pipeline_config(steps=3)


@pytest.fixture(scope="module")
def pipe(anny_body):
    return SigmanPipeline.from_config(TINY, body=anny_body)


def person_image(color=(200, 60, 60)):
    """A block figure with its mask as the alpha channel (a bare figure is no person to MediaPipe)."""
    img = np.full((160, 120, 4), 255, np.uint8)
    img[..., 3] = 0
    img[20:150, 45:75] = (*color, 255)
    img[5:25, 50:70] = (230, 190, 160, 255)
    return img


def test_end_to_end(pipe):
    seen = []
    out = pipe(person_image(), "waving", seed=1, num_views=2, render_size=48, progress=lambda f, s: seen.append(f))
    n = pipe.template.num_points
    assert out.canonical.num_gaussians == n and out.posed.means.shape == (1, n, 3)
    assert out.renders.shape == (2, 48, 48, 3) and out.renders.dtype == np.uint8
    assert out.renders.min() < 250  # something was drawn on the white background
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    torch.testing.assert_close(out.canonical.quats.norm(dim=-1), torch.ones(n), atol=1e-5, rtol=0)
    assert torch.all(out.canonical.scales > 0) and torch.all((out.canonical.opacities >= 0) & (out.canonical.opacities <= 1))
    # the posed Gaussians are the canonical ones skinned with the body's transforms for this pose
    again = pipe.pose_gaussians(out.canonical, out.rest_joints, __import__("sigman.presets", fromlist=["x"]).resolve_pose("waving"))
    torch.testing.assert_close(again.means, out.posed.means)


def test_seed_determinism_and_variation(pipe):
    a = pipe(person_image(), "a_pose", seed=3, num_views=0)
    b = pipe(person_image(), "a_pose", seed=3, num_views=0)
    c = pipe(person_image(), "a_pose", seed=4, num_views=0)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.canonical.means, b.canonical.means)
    assert not torch.equal(a.latents, c.latents)


def test_pose_sequence_gives_one_posed_frame_each(pipe):
    out = pipe(person_image(), "walk_cycle", num_views=0)
    assert out.posed.means.shape[0] == 40


def test_bad_image_is_a_clear_error(pipe):
    with pytest.raises(ImageInputError):
        pipe(np.zeros((20, 20, 3), np.uint8), "a_pose")


def test_save_and_load_pretrained_round_trip(pipe, tmp_path, anny_body):
    pipe.save_pretrained(tmp_path / "m")
    loaded = SigmanPipeline.from_pretrained(tmp_path / "m", device="cpu", body=anny_body)
    a = pipe(person_image(), "a_pose", seed=5, num_views=0)
    b = loaded(person_image(), "a_pose", seed=5, num_views=0)
    torch.testing.assert_close(a.canonical.means, b.canonical.means)


def test_missing_and_mismatched_weights(pipe, tmp_path, anny_body):
    with pytest.raises(WeightsError, match="model folder not found"):
        SigmanPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="holds neither"):
        SigmanPipeline.from_pretrained(tmp_path / "empty")
    pipe.save_pretrained(tmp_path / "m2")
    import json
    cfg = json.loads((tmp_path / "m2" / "pipeline.json").read_text())
    cfg["dit_overrides"]["num_layers"] = 2  # the file has one layer
    (tmp_path / "m2" / "pipeline.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="missing keys: transformer_blocks.1"):
        SigmanPipeline.from_pretrained(tmp_path / "m2", body=anny_body)
    (tmp_path / "m2" / "transformer.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        SigmanPipeline.from_pretrained(tmp_path / "m2", body=anny_body)


def test_refine_replaces_canonical_and_keeps_the_raw_output(pipe):
    from types import SimpleNamespace

    from sigman.refine import RefineConfig
    from sigman.render import fit_orbit_to_points

    photo = person_image()
    out = pipe(photo, "a_pose", seed=1, num_views=1, render_size=32)
    posed = out.posed.means[0]
    camera = fit_orbit_to_points(posed, 1, width=photo.shape[1], height=photo.shape[0])
    mask = (photo.min(axis=-1) < 250).astype(np.float32)
    fit = SimpleNamespace(pose=out.pose, shape=None, camera=camera)
    refined = pipe.refine(out, photo, mask, fit, RefineConfig(steps=2, align_steps=1, render_size=48, align_size=32),
                          num_views=1, render_size=32)
    assert refined.raw_canonical is out.canonical and refined.refinement is not None
    assert len(refined.refinement.losses) == 2 and "refine" in refined.timings
    assert not torch.equal(refined.canonical.colors, out.canonical.colors)  # the photo's colours were carried over
    torch.testing.assert_close(refined.posed.means, pipe.pose_gaussians(refined.canonical, out.rest_joints, out.pose).means)
    assert refined.renders.shape == out.renders.shape
