"""How many reposing updates per second the viewer can draw.

One update = SMPL-X pose -> skinning transforms -> reposed Gaussians -> covariances ``R diag(s²) Rᵀ``
as numpy arrays for viser, and (last column) the ``set_gaussians`` call that packs them for the
browser. Measured for the bare-body avatar at each UV resolution, with the dense reference
(:func:`sigman.gaussians.repose`) and the viewer's top-k fast path, on the CPU and, when there is
one, the GPU. Each number is the median over ``--updates`` updates after a warm-up, cycling through
the frames of a motion so every update differs; the best of ``--repeats`` such medians is reported.

    python scripts/bench_repose.py --resolutions 128 256 [--threads 2] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.body import load_body_model  # noqa: E402
from sigman.gaussians import surface_gaussians  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402
from viewer.server import VISER_UNITS_PER_METRE, AvatarViewer, viser_arrays  # noqa: E402
from viewer.skinning import DEFAULT_TOP_K  # noqa: E402


def median_seconds(update: Callable[[int], object], updates: int, warmup: int, device: str, repeats: int = 1) -> float:
    """Median seconds per update after ``warmup`` updates; the best median of ``repeats`` runs
    (other processes on a small machine only ever make a run slower)."""
    for i in range(warmup):
        update(i)
    medians = []
    for _ in range(repeats):
        times = []
        for i in range(updates):
            start = time.perf_counter()
            update(i)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return min(medians)


def bench(resolution: int, device: str, top_k: Optional[int], updates: int, warmup: int,
          repeats: int, send: bool) -> tuple[int, float, Optional[float]]:
    """Gaussians, median seconds per update, and median seconds including ``set_gaussians``."""
    body = load_body_model("anny")
    gaussians = surface_gaussians(build_uv_template(body, resolution)).to(device)
    viewer = AvatarViewer(gaussians, body, top_k=top_k)
    motion = resolve_pose("walk_cycle")
    frames = [motion.frame(i) for i in range(motion.num_frames)]

    def update(i: int):
        return viewer.compute_splats(frames[i % len(frames)], yaw=15.0)

    seconds = median_seconds(update, updates, warmup, device, repeats)
    with_send = None
    if send:
        import viser

        server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
        try:
            handle = server.scene.add_gaussian_splats("/avatar", *viser_arrays(update(0)),
                                                      scale=1.0 / VISER_UNITS_PER_METRE)

            def update_and_send(i: int) -> None:
                handle.set_gaussians(*viser_arrays(update(i)))

            with_send = median_seconds(update_and_send, updates, warmup, device, repeats)
        finally:
            server.stop()
    return gaussians.num_gaussians, seconds, with_send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256], help="UV resolutions")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--updates", type=int, default=50, help="measured updates (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="report the best median of this many runs")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="weights per Gaussian on the fast path")
    parser.add_argument("--no-send", action="store_true", help="skip the set_gaussians column")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"best of {args.repeats} medians of {args.updates} updates")
    header = f"{'device':<6} {'UV':>4} {'Gaussians':>9}  {'skinning':<16} {'ms/update':>9} {'updates/s':>9}  {'+ set_gaussians':>15}"
    print(header)
    print("-" * len(header))
    for device in devices:
        for resolution in args.resolutions:
            for label, top_k in (("dense reference", None), (f"sparse k<={args.top_k}", args.top_k)):
                n, seconds, with_send = bench(resolution, device, top_k, args.updates, args.warmup, args.repeats,
                                              send=not args.no_send and top_k is not None)
                send_text = "" if with_send is None else f"{1 / with_send:10.1f} /s"
                print(f"{device:<6} {resolution:>4} {n:>9}  {label:<16} {seconds * 1e3:>9.2f} {1 / seconds:>9.1f}  {send_text:>15}")


if __name__ == "__main__":
    main()
