"""Time the release's 3-NN spacing on 50,200 points (the official template's N), CPU and CUDA.

    python scripts/dev/time_official_spacing.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from sigman.official.knn_scale import knn_mean_sq_dist, knn_mean_sq_dist_bruteforce  # noqa: E402

points = torch.randn(50200, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.25, 0.8, 0.15])
start = time.perf_counter()
cpu = knn_mean_sq_dist(points)
print(f"CPU k-d tree: {time.perf_counter() - start:.3f} s")
if torch.cuda.is_available():
    gpu_points = points.cuda()
    knn_mean_sq_dist(gpu_points)
    torch.cuda.synchronize()
    start = time.perf_counter()
    gpu = knn_mean_sq_dist(gpu_points)
    torch.cuda.synchronize()
    print(f"CUDA brute force: {time.perf_counter() - start:.3f} s; max rel. diff vs CPU "
          f"{float(((gpu.cpu() - cpu).abs() / cpu).max()):.2e}")
