"""30 DDIM steps with guidance of the demo-sized DiT on CUDA: plain, and optimized without compile
(bf16, fused blocks, CUDA graphs), the default for DiTs under FastOptions.compile_min_params.
    python scripts/dev/demo_sampling_speed.py"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sigman.pipeline import PipelineConfig, SigmanPipeline  # noqa: E402

pipe = SigmanPipeline.from_config(PipelineConfig(), device="cuda")
feats = pipe.encode_image("assets/examples/person_00.png")[1]


def timed(label):
    t = time.perf_counter()
    pipe.sample_latents(feats, 30, 3.5, "ddim", 0)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    runs = []
    for _ in range(10):
        t = time.perf_counter()
        pipe.sample_latents(feats, 30, 3.5, "ddim", 0)
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - t)
    print(f"{label:<48s} first call {first * 1e3:8.1f} ms, then median {statistics.median(runs) * 1e3:6.1f} ms", flush=True)


timed("plain (fp32 eager)")
pipe.optimize()
print("options:", pipe.fast_dit.options, flush=True)
timed("optimized (bf16, fused, CUDA graphs, no compile)")
