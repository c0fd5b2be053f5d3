"""Run app.py with OpenCV writing its mp4 files (MPEG-4 Part 2), for a machine that has no ffmpeg
binary (the GPU machine: imageio-ffmpeg's 68 MB wheel cannot be carried there). Only for
measurements (scripts/dev/app_startup.py --video-shim); a normal install writes H.264 via ffmpeg."""

import runpy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sigman.app_logic  # noqa: E402
import sigman.exporting  # noqa: E402
import sigman.render.video as video  # noqa: E402


def write_video_cv2(path, frames, fps: float = 30):
    import cv2

    frames = video.to_uint8(frames)
    path = Path(path)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


for module in (video, sigman.app_logic, sigman.exporting):
    if hasattr(module, "write_video"):
        module.write_video = write_video_cv2
sys.argv = [str(REPO / "app.py")] + sys.argv[1:]
runpy.run_path(str(REPO / "app.py"), run_name="__main__")
