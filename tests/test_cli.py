"""scripts/generate.py answers every user error in one line (exit code 2, no traceback), and pose
sequences are read and capped by the one shared rule of sigman.sequences.

Most cases run ``main(argv)`` in-process and fail before any model is loaded (milliseconds); one
slow case runs a tiny random-weights generation end to end, and one runs the script as a process.
"""

from __future__ import annotations

import errno
import importlib.util
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sigman.cli import run_main
from sigman.pose import PoseFileError, SMPLXPose, load_pose, save_pose
from sigman.preprocess import ImageInputError, preprocess_person
from sigman.sequences import (
    MAX_MOTION_FRAMES, MAX_MOTION_FRAMES_CPU, MIN_MOTION_FPS, limit_motion, load_motion, load_pose_frame,
    motion_frame_limit, motion_plan,
)
from sigman.settings import SettingError, check_device, check_int
from tiny_configs import tiny_pipeline_config

REPO = Path(__file__).resolve().parent.parent
PHOTO = str(REPO / "assets" / "examples" / "person_00.png")
LONG = 200_000


def _load_script(name: str = "generate"):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_script()


def run(capsys, *args: str, out: Path | None = None, image: str = PHOTO, **kwargs) -> tuple[int, str, str]:
    argv = (["--image", image] if image else []) + ["--random-weights", *args]
    if out is not None and "--out" not in args:
        argv += ["--out", str(out)]
    code = generate.main(argv, **kwargs)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def long_sequence(tmp_path_factory) -> Path:
    """A 200,000-frame SMPL-X sequence (zeros but for a marker in frame 0): ~50 MB of floats in the
    file's arrays, a few hundred KB on disk."""
    path = tmp_path_factory.mktemp("poses") / "long.npz"
    body = np.zeros((LONG, 21, 3), np.float32)
    body[0, 3] = (0.1, 0.2, 0.3)
    np.savez_compressed(path, global_orient=np.zeros((LONG, 3), np.float32), body_pose=body,
                        transl=np.zeros((LONG, 3), np.float32), betas=np.zeros(10, np.float32),
                        mocap_frame_rate=np.asarray(120.0))
    return path


# --- every bad argument: one line, exit code 2 -------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--size", "0"], "--size: must be from 64 to 2048, got 0"),
    (["--size", "1"], "--size: must be from 64 to 2048, got 1"),
    (["--size", "4096"], "--size: must be from 64 to 2048"),
    (["--steps", "0"], "--steps: must be from 1 to 200, got 0"),
    (["--steps", "-3"], "--steps: must be from 1 to 200, got -3"),
    (["--steps", "500"], "--steps: must be from 1 to 200"),
    (["--steps", "2.5"], "--steps: must be a whole number"),
    (["--guidance", "-1"], "--guidance: must be a number from 0 to 20"),
    (["--guidance", "nan"], "--guidance: must be a number from 0 to 20"),
    (["--seed", "-1"], "--seed: must be from 0 to 2147483647"),
    (["--views", "17"], "--views: must be from 0 to 16"),
    (["--frames", "-1"], "--frames: must be from 0 to 720"),
    (["--frames", "many"], "--frames: must be a whole number"),
    (["--max-motion-frames", "1"], "--max-motion-frames: must be from 2"),
    (["--sampler", "euler"], "--sampler: invalid choice"),
    (["--weights", "x"], "not allowed with argument --random-weights"),
])
def test_bad_arguments_are_one_line(capsys, tmp_path, args, needle):
    code, _, err = run(capsys, *args, out=tmp_path)
    assert code == 2
    assert_one_line(err, needle, "(see --help)")
    assert not any(tmp_path.iterdir())  # nothing was written


def test_missing_image_argument(capsys):
    code, _, err = run(capsys, image="")
    assert code == 2
    assert_one_line(err, "--image")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_so(capsys, tmp_path):
    code, _, err = run(capsys, "--device", "cuda", out=tmp_path)
    assert code == 2
    assert_one_line(err, "device 'cuda' is not available", "--device cpu")


def test_unknown_device(capsys, tmp_path):
    code, _, err = run(capsys, "--device", "gpu0", out=tmp_path)
    assert code == 2
    assert_one_line(err, "unknown device 'gpu0'")


def test_output_folder_that_cannot_be_written(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run(capsys, "--out", str(blocker))
    assert code == 2
    assert_one_line(err, f"--out {blocker} is a file, not a folder")
    code, _, err = run(capsys, "--out", str(blocker / "sub"))  # works as root too: a file is in the way
    assert code == 2
    assert_one_line(err, "cannot be written", "pass a folder you can write to")


def test_unknown_presets_list_the_presets(capsys, tmp_path):
    code, _, err = run(capsys, "--pose", "moonwalk", out=tmp_path)
    assert code == 2
    assert_one_line(err, "unknown pose preset 'moonwalk'", "a_pose", "waving", "walk_cycle")
    code, _, err = run(capsys, "--motion", "moonwalk", out=tmp_path)
    assert code == 2
    assert_one_line(err, "unknown pose preset 'moonwalk'", "wave_loop")
    code, _, err = run(capsys, "--pose", str(tmp_path / "missing.npz"), out=tmp_path)
    assert code == 2
    assert_one_line(err, "pose file not found", "missing.npz", "a_pose")


def _not_npz_files(folder: Path) -> dict[str, tuple[Path, str]]:
    with zipfile.ZipFile(folder / "texts.npz", "w") as archive:
        archive.writestr("global_orient.txt", "0 0 0")
        archive.writestr("body_pose.txt", "0 " * 63)
    (folder / "photo.npz").write_bytes(Path(PHOTO).read_bytes())
    np.save(folder / "array.npy", np.zeros((1, 3)))
    (folder / "array.npy").rename(folder / "array.npz")
    (folder / "notes.npz").write_text("global_orient: 0 0 0\n")
    np.savez(folder / "objects.npz", global_orient=np.array([None, 1.0], dtype=object))
    (folder / "empty.npz").write_bytes(b"")
    return {
        "zip of text files": (folder / "texts.npz", "is a zip archive of other files (global_orient.txt"),
        "renamed PNG": (folder / "photo.npz", "is a PNG image, not an .npz pose file"),
        "renamed .npy": (folder / "array.npz", "is a single .npy array, not an .npz"),
        "text file": (folder / "notes.npz", "is a text file, not an .npz pose file"),
        "pickled objects": (folder / "objects.npz", "pickled object arrays, which are never loaded"),
        "empty file": (folder / "empty.npz", "not an .npz pose file"),
    }


@pytest.mark.parametrize("case", ["zip of text files", "renamed PNG", "renamed .npy", "text file",
                                  "pickled objects", "empty file"])
@pytest.mark.parametrize("option", ["--pose", "--motion"])
def test_files_that_are_not_npz_are_called_so(capsys, tmp_path, case, option):
    path, needle = _not_npz_files(tmp_path)[case]
    code, _, err = run(capsys, option, str(path), out=tmp_path / "out")
    assert code == 2
    assert_one_line(err, path.name, needle)
    assert not (tmp_path / "out").exists()  # inputs are checked before anything is written


def test_single_pose_as_motion_is_refused(capsys, tmp_path):
    save_pose(tmp_path / "one.npz", SMPLXPose.zeros(1))
    code, _, err = run(capsys, "--motion", str(tmp_path / "one.npz"), out=tmp_path / "out")
    assert code == 2
    assert_one_line(err, "one.npz holds a single pose, not a sequence", "use it as the pose", "walk_cycle")
    code, _, err = run(capsys, "--motion", "a_pose", out=tmp_path / "out")
    assert code == 2
    assert_one_line(err, "'a_pose' holds a single pose")


def test_bad_photo_and_weights_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, out=tmp_path, image=str(tmp_path / "nobody.png"))
    assert code == 2
    assert_one_line(err, "image not found")
    (tmp_path / "fake.png").write_text("not an image")
    code, _, err = run(capsys, out=tmp_path, image=str(tmp_path / "fake.png"))
    assert code == 2
    assert_one_line(err, "cannot read fake.png as an image")
    code = generate.main(["--image", PHOTO, "--weights", str(tmp_path / "no_model"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line(err, "model folder not found")
    assert not (tmp_path / "out").exists()


def test_script_as_a_process_prints_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "generate.py"), "--image", PHOTO, "--steps", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "generate.py: error: argument --steps: must be from 1 to 200, got 0 (see --help)"


@pytest.mark.parametrize("script, argv, needle", [
    ("render_body", ["--size", "0"], "--size: must be from 64 to 2048, got 0"),
    ("render_body", ["--uv-res", "9999"], "--uv-res: must be from 16 to 1024"),
    ("render_body", ["--pose", "moonwalk"], "unknown pose preset 'moonwalk'"),
    ("make_synthetic_data", ["--out", "x", "--count", "0"], "--count: must be from 1"),
    ("make_synthetic_data", ["--out", "x", "--val-fraction", "2"], "--val-fraction: must be a number from 0 to 1"),
    ("make_synthetic_data", ["--out", "x", "--people", "fancy"], "argument --people: invalid choice"),
    ("eval_vae", ["--data", "x", "--limit", "-1"], "--limit: must be from 0"),
    ("eval_generation", ["--data", "x", "--steps", "0"], "--steps: must be from 1 to 200"),
    ("eval_generation", ["--data", "x", "--guidance", "inf"], "--guidance: must be a number from 0 to 20"),
    ("eval_generation", ["--data", "x", "--seeds", "0"], "--seeds: must be from 1 to 16"),
])
def test_other_scripts_answer_bad_arguments_in_one_line(capsys, tmp_path, monkeypatch, script, argv, needle):
    monkeypatch.chdir(tmp_path)
    module = _load_script(script)
    if script == "make_synthetic_data":  # main() parses sys.argv: its argument errors exit at once
        with pytest.raises(SystemExit) as done:
            module.parse_args(argv)
        code = done.value.code
    else:
        code = module.main(argv)
    assert code == 2
    assert_one_line(capsys.readouterr().err, needle)
    assert not any(tmp_path.iterdir())


# --- run_main: the last line of defence ------------------------------------------------------------------

def test_run_main_turns_errors_into_one_line(capsys, monkeypatch):
    monkeypatch.delenv("SIGMAN_DEBUG", raising=False)

    def fails(err):
        def main():
            raise err
        return main
    assert run_main(fails(PoseFileError("pose key 'x' is bad"))) == 2
    assert capsys.readouterr().err == "error: pose key 'x' is bad\n"
    assert run_main(fails(OSError(errno.ENOSPC, "No space left on device", "/out/avatar.ply"))) == 2
    assert capsys.readouterr().err.startswith("error: out of disk space while writing /out/avatar.ply")
    assert run_main(fails(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert run_main(fails(ZeroDivisionError("division by zero"))) == 1
    err = capsys.readouterr().err
    assert_one_line(err, "unexpected ZeroDivisionError: division by zero", "a bug", "SIGMAN_DEBUG=1")
    monkeypatch.setenv("SIGMAN_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        run_main(fails(ZeroDivisionError("division by zero")))


# --- sequences: read only what is needed, one cap for the CLI and the app ------------------------------

def test_long_pose_file_reads_only_its_first_frame(long_sequence):
    tracemalloc.start()
    try:
        pose = load_pose_frame(long_sequence)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pose.num_frames == 1
    assert torch.allclose(pose.body_pose[0, 3], torch.tensor([0.1, 0.2, 0.3]))
    assert peak < 2 * 2**20, f"reading one frame allocated {peak / 2**20:.1f} MiB"  # the file holds ~55 MB of floats


def test_long_motion_file_reads_only_the_kept_frames(long_sequence):
    tracemalloc.start()
    try:
        motion, note = load_motion(long_sequence, MAX_MOTION_FRAMES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stride, count = motion_plan(LONG, 120.0, MAX_MOTION_FRAMES)
    assert (stride, count) == (20, MAX_MOTION_FRAMES)  # 120 fps / 6 fps: the first 40 s at 6 fps
    assert motion.num_frames == MAX_MOTION_FRAMES and motion.fps == pytest.approx(120.0 / stride)
    assert "200,000 frames" in note and "first 40.0 s" in note and "6 fps" in note
    assert peak < 4 * 2**20, f"reading {count} frames allocated {peak / 2**20:.1f} MiB"


def test_streamed_reads_equal_the_full_load(tmp_path):
    """Every layout load_pose accepts: the frames read one by one equal load_pose's own frames."""
    g = np.random.default_rng(0)
    amass = dict(poses=g.normal(size=(300, 156)).astype(np.float32), trans=g.normal(size=(300, 3)).astype(np.float32),
                 betas=g.normal(size=16), mocap_framerate=np.asarray(60.0), gender=np.asarray("female"),
                 dmpls=np.zeros((300, 8)))
    smplx = dict(global_orient=g.normal(size=(50, 3)), body_pose=g.normal(size=(50, 63)),  # flat body_pose
                 transl=g.normal(size=(1, 3)), betas=g.normal(size=(50, 10)), fps=np.asarray(30.0))
    single = dict(global_orient=g.normal(size=3), body_pose=g.normal(size=(21, 3)))
    for name, arrays in {"amass": amass, "smplx": smplx, "single": single}.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        # random poses have no clear up axis: the whole sequence and its first frame could be
        # judged differently, so the frame is fixed here (tests/test_pose.py covers detection)
        full = load_pose(tmp_path / f"{name}.npz", up_axis="y")
        first = load_pose_frame(tmp_path / f"{name}.npz", up_axis="y")
        assert torch.equal(first.full_pose(), full.full_pose()[:1]) and torch.equal(first.transl, full.transl[:1])
        assert torch.equal(first.betas, full.betas)
        if full.num_frames > 1:
            motion, _ = load_motion(tmp_path / f"{name}.npz", 20, up_axis="y")
            expected, _ = limit_motion(full, 20)  # the same rule on the fully loaded sequence
            assert torch.equal(motion.full_pose(), expected.full_pose())
            assert torch.equal(motion.transl, expected.transl) and motion.fps == expected.fps


def test_motion_rule():
    walk = load_motion("walk_cycle", 15)[0]  # 40 frames at 30 fps
    assert walk.num_frames == 14 and walk.fps == pytest.approx(10.0)
    pose, note = limit_motion(walk, 90)
    assert pose is walk and note is None  # short enough: untouched
    assert motion_plan(40, 30.0, 4) == (5, 4)  # never under MIN_MOTION_FPS: the first 20 frames
    assert 30.0 / motion_plan(10_000, 30.0, 90)[0] >= MIN_MOTION_FPS
    assert motion_frame_limit("cpu") == MAX_MOTION_FRAMES_CPU and motion_frame_limit("cuda") == MAX_MOTION_FRAMES


def test_app_uses_the_shared_motion_rule(long_sequence):
    from sigman.app_logic import GenerationRequest, OutputSettings, motion_input, pose_input

    assert OutputSettings.for_device("cpu").max_motion_frames == MAX_MOTION_FRAMES_CPU
    assert OutputSettings().max_motion_frames == MAX_MOTION_FRAMES
    request = GenerationRequest(photo=None, pose_file=str(long_sequence), motion_file=str(long_sequence))
    assert motion_input(request, 12).num_frames == 12
    assert pose_input(request)[1].num_frames == 1


# --- settings and messages ------------------------------------------------------------------------------

def test_settings_checks():
    from sigman.sampling import SAMPLERS
    from sigman.settings import SAMPLER_NAMES

    assert SAMPLER_NAMES == SAMPLERS  # the CLI lists the samplers without importing torch
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(SettingError, match="unknown device"):
        check_device("tpu:x")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="not available"):
            check_device("cuda:1")
    assert check_int("steps", "30", 1, 200) == 30
    for bad in (True, 1.5, "ten", float("inf")):
        with pytest.raises(SettingError, match="whole number"):
            check_int("steps", bad, 1, 200)


def test_mask_message_names_the_sizes_the_user_gave():
    image = np.random.default_rng(0).random((2200, 1100, 3), dtype=np.float32)  # downscaled to 2048 x 1024 inside
    with pytest.raises(ImageInputError, match=r"mask is 1200x2200 px but the image is 1100x2200 px"):
        preprocess_person(image, mask=np.ones((2200, 1200), np.float32), size=32)


# --- end to end -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_long_sequence_as_pose_and_motion_end_to_end(capsys, tmp_path, long_sequence, anny_body):
    import imageio.v3 as iio

    config = tiny_pipeline_config(steps=1)
    code, out, err = run(capsys, "--pose", str(long_sequence), "--motion", str(long_sequence),
                         "--max-motion-frames", "5", "--size", "64", "--views", "1", "--frames", "0",
                         out=tmp_path, random_config=config, body=anny_body)
    assert code == 0, err
    assert "note: the motion has 200,000 frames" in err and "Traceback" not in err
    assert (tmp_path / "avatar.ply").is_file() and (tmp_path / "avatar.glb").is_file()
    assert not (tmp_path / "turntable.mp4").exists()  # --frames 0
    frames = np.stack(list(iio.imiter(tmp_path / "motion.mp4", plugin="FFMPEG")))
    assert frames.shape[0] == 5
