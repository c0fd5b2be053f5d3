"""Time person understanding on this machine: ms per photo (IMAGE mode, ``PersonDetector.observe``)
and per video frame (VIDEO mode, ``VideoPersonTracker.track``), for each shipped model, plus the
model load time. Photos: scikit-image's astronaut (512 x 512) and a shipped example render.

    python scripts/benchmark_person.py [--repeats 20] [--models lite full]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.person import PersonConfig, PersonDetector, VideoPersonTracker  # noqa: E402


def median_ms(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, median CPU ms of this process, all threads): on a shared,
    busy machine the CPU time is the better estimate of what one call costs."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return float(np.median(wall)), float(np.min(wall)), float(np.median(cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["lite", "full"])
    args = parser.parse_args()
    import skimage.data

    repo = Path(__file__).resolve().parent.parent
    photos = {"astronaut 512x512": skimage.data.astronaut(),
              "example render 512x512": np.asarray(Image.open(repo / "assets/examples/person_02.png").convert("RGB"))}
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print("| model | load (ms) | photo | IMAGE mode, ms per photo: wall median / min, CPU | "
          "VIDEO mode, ms per frame: wall median / min, CPU |")
    print("|---|---|---|---|---|")
    for model in args.models:
        config = PersonConfig(model=model)
        start = time.perf_counter()
        detector = PersonDetector(config)
        load_ms = 1000 * (time.perf_counter() - start)
        tracker = VideoPersonTracker(config)
        for name, photo in photos.items():
            image_ms = median_ms(lambda: detector.observe(photo), args.repeats)
            frames = [np.roll(photo, 2 * k, axis=1) for k in range(args.repeats + 1)]  # a slow pan
            it = iter(frames)
            video_ms = median_ms(lambda: tracker.track(next(it)), args.repeats)
            print(f"| {model} | {load_ms:.0f} | {name} | {image_ms[0]:.0f} / {image_ms[1]:.0f}, {image_ms[2]:.0f} | "
                  f"{video_ms[0]:.0f} / {video_ms[1]:.0f}, {video_ms[2]:.0f} |")
        detector.close()
        tracker.close()


if __name__ == "__main__":
    main()
