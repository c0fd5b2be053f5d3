"""Person understanding (sigman.person) on real photos: scikit-image's astronaut (an upper-body
portrait on a busy background), its coffee cup and its cat, and the project's renders of generated
people (assets/examples)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sigman.observation import BLAZEPOSE_LANDMARKS, PersonObservation
from sigman.preprocess import ImageInputError, preprocess_person

pytest.importorskip("mediapipe", reason="person understanding needs mediapipe (pip install mediapipe==1.2.3)")
skimage_data = pytest.importorskip("skimage.data", reason="the test photos come from scikit-image")

from sigman.overlay import draw_observation  # noqa: E402
from sigman.person import (  # noqa: E402
    PersonConfig,
    PersonDetector,
    PersonModelError,
    VideoPersonTracker,
    guessed_body_parts,
    import_mediapipe,
    observe_person,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
I = {name: i for i, name in enumerate(BLAZEPOSE_LANDMARKS)}


@pytest.fixture(scope="module")
def detector():
    with PersonDetector() as d:
        yield d


@pytest.fixture(scope="module")
def astronaut(detector):
    image = skimage_data.astronaut()
    return image, detector.observe(image)


def example(i: int) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / f"person_0{i}.png").convert("RGB"))


# --- photos --------------------------------------------------------------------------------------

def test_upper_body_portrait(astronaut):
    image, obs = astronaut
    assert isinstance(obs, PersonObservation) and obs.image_size == (512, 512) and obs.num_people == 1
    lm, vis = obs.landmarks, obs.visibility
    for name in ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"):
        assert vis[I[name]] > 0.9, name
    nose = lm[I["nose"]]
    assert 180 < nose[0] < 280 and 90 < nose[1] < 170  # her face, in the upper middle
    ls, rs = lm[I["left_shoulder"]], lm[I["right_shoulder"]]
    assert ls[0] > nose[0] > rs[0]  # facing the camera: her left shoulder is on the image's right
    assert ls[1] > nose[1] + 60 and rs[1] > nose[1] + 60
    for name in ("left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_foot_index"):
        assert vis[I[name]] < 0.1, name  # below the frame
    assert lm[I["left_ankle"], 1] > 512 and lm[I["right_ankle"], 1] > 512
    assert {"left leg", "right leg", "left foot", "right foot"} <= set(obs.guessed_parts)
    assert "face" not in obs.guessed_parts and "right arm" not in obs.guessed_parts
    assert "legs and feet are out of the frame; their pose is guessed" in obs.notes
    # world landmarks: metres, hip-centred; shoulders 25-50 cm apart, the head above them (+y down)
    world = obs.world_landmarks
    assert 0.25 < np.linalg.norm(world[I["left_shoulder"]] - world[I["right_shoulder"]]) < 0.5
    assert world[I["nose"], 1] < world[I["left_shoulder"], 1] < world[I["left_hip"], 1] + 0.05
    # face box around the face, person box around the person
    fx0, fy0, fx1, fy1 = obs.face_box
    assert fx0 < nose[0] < fx1 and fy0 < nose[1] < fy1 and 70 < fx1 - fx0 < 220 and 70 < fy1 - fy0 < 240
    px0, py0, px1, py1 = obs.person_box
    assert px0 < rs[0] and px1 > ls[0] and py0 < fy0 + 30 and py1 == 512


def test_busy_background_mask_is_the_person(astronaut):
    image, obs = astronaut
    m = obs.mask
    assert m.dtype == np.float32 and m.shape == (512, 512) and 0.0 <= m.min() and m.max() <= 1.0
    assert 0.2 < (m > 0.5).mean() < 0.7  # not the whole image
    assert m[128, 225] > 0.9 and m[300, 200] > 0.9  # face, suit
    assert m[100, 460] < 0.1 and m[30, 30] < 0.1  # the rocket, the flag
    assert 0.001 < ((m > 0.02) & (m < 0.98)).mean() < 0.1  # soft only along the edges
    out = preprocess_person(image, size=64, observation=obs)
    assert out.mask_source == "segmented" and out.observation is obs and out.notes == obs.notes
    assert np.allclose(out.image[0, :, 2, 62].numpy(), 1.0, atol=0.02)  # the rocket is whitened


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_cup_and_cat_are_not_people(detector, name):
    image = getattr(skimage_data, name)()
    assert detector.detect(image) is None
    with pytest.raises(ImageInputError, match=r"no person found in the photo .*: pass a photo of a person"):
        detector.observe(image)


def test_preprocess_refuses_a_cup_without_a_held_detector():
    with pytest.raises(ImageInputError, match="no person found in the photo"):
        preprocess_person(skimage_data.coffee(), size=32)


def test_rendered_full_body(detector):
    obs = detector.observe(example(1))
    assert obs.num_people == 1 and obs.guessed_parts == [] and obs.notes == []
    y = obs.landmarks[:, 1]
    assert y[I["nose"]] < y[I["left_shoulder"]] < y[I["left_hip"]] < y[I["left_knee"]] < y[I["left_ankle"]]
    assert y[I["nose"]] < y[I["right_shoulder"]] < y[I["right_hip"]] < y[I["right_knee"]] < y[I["right_ankle"]]
    assert (obs.visibility[11:] > 0.5).all()
    x0, y0, x1, y1 = obs.person_box
    fg = obs.mask > 0.5
    assert fg[:, :x0].sum() == 0 and fg[:y0].sum() == 0 and fg[:, x1:].sum() == 0 and fg[y1:].sum() == 0
    assert obs.face_box is not None and obs.face_box[1] <= y[I["nose"]] <= obs.face_box[3]


def test_two_people_the_largest_is_used(detector):
    big, small = example(0), example(1)  # person_01 is the smaller figure
    canvas = np.full((512, 1024, 3), 255, np.uint8)
    canvas[:, :512], canvas[:, 512:] = small, big
    obs = detector.observe(canvas)
    assert obs.num_people == 2 and obs.notes[0] == "2 people found: the largest one is used"
    assert obs.person_box[0] >= 512  # the big one, on the right
    assert (obs.mask[:, :512] > 0.5).sum() == 0


def test_person_out_of_frame_parts_are_grouped():
    lm = np.zeros((33, 2), np.float32)
    lm[:, 0], lm[:, 1] = 50, 50
    lm[25:, 1] = 140  # knees down: below a 100 px image
    vis = np.ones(33, np.float32)
    vis[25:] = 0.0
    vis[[15, 17, 19, 21]] = 0.1  # the left hand: hidden, in the frame
    parts, notes = guessed_body_parts(lm, vis, 100, 100)
    assert parts == ["left hand", "left leg", "right leg", "left foot", "right foot"]
    assert notes == ["legs and feet are out of the frame; their pose is guessed",
                     "the left hand is hidden or unclear; its pose is guessed"]


# --- preprocessing and fallbacks ----------------------------------------------------------------

def test_held_detector_is_the_person_test_even_with_alpha(detector):
    rgba = np.dstack([skimage_data.coffee(), np.full((400, 600), 255, np.uint8)])
    rgba[:50, :, 3] = 0  # a transparent strip: the alpha channel is the mask
    assert preprocess_person(rgba, size=32).mask_source == "alpha"  # no detector: the alpha is trusted
    with pytest.raises(ImageInputError, match="no person found"):
        preprocess_person(rgba, size=32, detector=detector)
    out = preprocess_person(example(2), size=32, detector=detector, mask=np.ones((512, 512), np.float32))
    assert out.mask_source == "mask" and out.observation is not None and out.observation.num_people == 1


def test_missing_model_falls_back_to_the_border_estimate(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGMAN_ASSETS", str(tmp_path))
    with pytest.raises(PersonModelError, match=r"pose_landmarker_full.task is missing: .*scripts/build_mediapipe_tasks.py"):
        PersonDetector()
    out = preprocess_person(example(1), size=32)  # a plain white background: the estimate works
    assert out.mask_source == "estimated" and out.observation is None
    assert len(out.notes) == 1 and "is missing" in out.notes[0] and "estimated from the background colour" in out.notes[0]


def test_mediapipe_import_failure_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` now fails
    with pytest.raises(PersonModelError, match=r"needs MediaPipe, which failed to import .*: pip install mediapipe==1.2.3"):
        import_mediapipe()
    with pytest.raises(PersonModelError, match="pip install mediapipe"):
        observe_person(example(1))
    rgba = np.dstack([example(1), np.where(example(1).min(axis=-1) < 250, 255, 0).astype(np.uint8)])
    assert preprocess_person(rgba, size=32).mask_source == "alpha"  # alpha input needs no MediaPipe


# --- video and drawing --------------------------------------------------------------------------

def test_video_tracking():
    frame = example(2)
    frames = [np.roll(frame, 8 * k, axis=1) for k in range(4)] + [np.full_like(frame, 255)]
    with VideoPersonTracker(PersonConfig(model="lite"), fps=25) as tracker:
        out = tracker.track_all(frames)
        with pytest.raises(ValueError, match="video timestamps must increase"):
            tracker.track(frame, timestamp_ms=100)
    assert [o is None for o in out] == [False, False, False, False, True]
    nose_x = [o.landmarks[I["nose"], 0] for o in out[:4]]
    assert np.all(np.diff(nose_x) > 2) and abs(nose_x[3] - nose_x[0] - 24) < 6, nose_x  # follows the 8 px/frame shift


def test_overlay(astronaut):
    image, obs = astronaut
    pic = draw_observation(image, obs)
    arr = np.asarray(pic).astype(int)
    assert pic.size == (512, 512)
    assert np.abs(arr[300, 200] - image[300, 200]).sum() > 30  # the mask is tinted
    assert np.abs(arr[100, 460] - image[100, 460]).sum() < 5  # the background is not
    x, y = np.round(obs.landmarks[I["nose"]]).astype(int)
    assert arr[y, x, 1] > 150 and arr[y, x, 0] < 120  # a green (visible) landmark dot
    with pytest.raises(ValueError, match="the observation is of a 512x512 image"):
        draw_observation(example(1)[:256], obs)


def test_mask_edge_refinement_by_matting(astronaut):
    pytest.importorskip("pymatting", reason="optional: pip install pymatting")
    from sigman.person import refine_mask_edges

    image, obs = astronaut
    refined = refine_mask_edges(image, obs.mask, band=6)
    far_inside = obs.mask > 0.999
    soft = lambda m: ((m > 0.05) & (m < 0.95)).mean()  # noqa: E731
    assert soft(refined) < soft(obs.mask)  # crisper edges
    assert refined[128, 225] > 0.9 and refined[100, 460] < 0.1 and (refined[far_inside] > 0.5).mean() > 0.99
