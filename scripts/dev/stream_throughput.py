"""Throughput of the streamed synthetic data (sigman/data/stream.py) and of the loops running on it:
subjects/s of the stream in the VAE layout (4 input views at 128^2 + 4 targets at 256^2, UV 128^2)
and in the DiT layout (4 inputs + condition photo), at a few batch sizes; the share of that spent
sampling on the CPU; then VAE and DiT training steps/s with --stream (demo configs).

    python scripts/dev/stream_throughput.py --device cuda --shape-bank bank.npz
    python scripts/dev/stream_throughput.py --device cpu --shape-bank bank.npz   # tiny sizes, a smoke test

Without ``--shape-bank`` body shapes come from anny (which must then be installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sigman.body import load_body_model  # noqa: E402
from train.stream_data import make_stream  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_batches(stream, device: str, batch_size: int, repeats: int) -> tuple[float, float]:
    """Subjects/s of ``stream.batch`` (after one warm-up batch) and the CPU sampling's share of the time."""
    stream.batch(10_000, 0, batch_size)
    sync(device)
    start = time.perf_counter()
    for r in range(repeats):
        stream.batch(r, 0, batch_size)
    sync(device)
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    for r in range(repeats):
        stream._sample([(0, r, 0, i) for i in range(batch_size)])
    cpu = time.perf_counter() - t
    return repeats * batch_size / seconds, cpu / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape-bank", "--shape_bank", dest="shape_bank", default=None)
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: 4,16,32 on cuda, 1,2 on cpu)")
    parser.add_argument("--repeats", type=int, default=None, help="timed batches per size (default 4 cuda, 1 cpu)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="timed training steps, after as many warm-up steps (default 15 cuda, 1 cpu)")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu)")
    sizes = [int(s) for s in (args.batch_sizes or ("4,16,32" if cuda else "1,2")).split(",")]
    repeats = args.repeats or (4 if cuda else 1)
    steps = args.train_steps or (15 if cuda else 1)
    body = load_body_model("anny")

    if cuda:  # the demo layouts
        synthetic = {}
        vae_layout = dict(num_input_views=4, input_size=128, num_target_views=4, render_size=256, uv_resolution=128,
                          condition_size=0)
        dit_layout = dict(num_input_views=4, input_size=128, num_target_views=0, render_size=256, uv_resolution=128,
                          condition_size=256)
    else:  # tiny, so that the CPU smoke test ends
        synthetic = dict(render_uv_resolution=32, projection=dict(zbuffer_size=64))
        vae_layout = dict(num_input_views=2, input_size=32, num_target_views=2, render_size=64, uv_resolution=32,
                          condition_size=0, projection_views=4)
        dit_layout = dict(num_input_views=2, input_size=32, num_target_views=0, render_size=64, uv_resolution=32,
                          condition_size=64, condition_render_size=128, projection_views=4)
    for name, layout in (("VAE", vae_layout), ("DiT", dit_layout)):
        stream = make_stream(body, args.device, 0, args.shape_bank, synthetic, {}, **layout)
        described = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(stream.config).items()
                              if k in ("num_input_views", "input_size", "num_target_views", "render_size",
                                       "projection_views", "uv_resolution", "condition_size", "condition_render_size"))
        print(f"stream, {name} layout ({described}; {stream.generator.features.position.shape[0]} Gaussians/subject):",
              flush=True)
        for b in sizes:
            rate, cpu_share = timed_batches(stream, args.device, b, repeats)
            print(f"  batch {b:3d}: {rate:8.1f} subjects/s  (CPU sampling {100 * cpu_share:4.1f}% of it)", flush=True)
        if cuda:
            stream.config.batched_render = False
            rate, _ = timed_batches(stream, args.device, sizes[-1], repeats)
            print(f"  batch {sizes[-1]:3d}: {rate:8.1f} subjects/s with one gsplat call per item (batched_render off)",
                  flush=True)
        del stream

    if args.skip_training:
        return
    from train import train_dit, train_vae

    with tempfile.TemporaryDirectory() as tmp:
        vae_name, dit_name = ("vae_demo", "dit_demo") if cuda else ("vae_tiny", "dit_tiny")
        vae_cfg = dataclasses.replace(train_vae.CONFIGS[vae_name], stream=True, shape_bank=args.shape_bank,
                                      workspace=f"{tmp}/vae", steps=2 * steps, log_every=steps, val_items=0,
                                      ckpt_every=10 ** 9, warmup_steps=1)
        history = train_vae.train(vae_cfg, body=body)
        rate = history[-1]["samples_per_s"]  # the second half: warm-up excluded
        print(f"VAE training ({vae_name}, batch {vae_cfg.batch_size}, stream on): {rate / vae_cfg.batch_size:.2f} "
              f"steps/s, {rate:.1f} subjects/s", flush=True)
        dit_cfg = dataclasses.replace(train_dit.CONFIGS[dit_name], stream=True, shape_bank=args.shape_bank,
                                      vae=f"{tmp}/vae", workspace=f"{tmp}/dit", steps=2 * steps, log_every=steps,
                                      eval_items=0, ckpt_every=10 ** 9, warmup_steps=1,
                                      stream_pool=64 if cuda else 4)
        history = train_dit.train(dit_cfg)
        rate = history[-1]["samples_per_s"]
        print(f"DiT training ({dit_name}, batch {dit_cfg.batch_size}, pool {dit_cfg.stream_pool}, "
              f"{dit_cfg.stream_refresh} new subjects/step): {rate / dit_cfg.batch_size:.2f} steps/s", flush=True)


if __name__ == "__main__":
    main()
