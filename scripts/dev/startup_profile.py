"""Where a start of the optimized pipeline spends its time, stage by stage, in one process:
imports, model load, optimize (compile-cache load), the first sampling (compile / cache hit, CUDA
graph capture), the first render (the renderer's kernels), and a second, warm generation.

    python scripts/dev/startup_profile.py            # run twice: the second start uses the compile cache
"""
import os
import subprocess
import sys
import tempfile
import time

T0 = time.perf_counter()


def stamp(label: str, since: list) -> None:
    now = time.perf_counter()
    print(f"  {label:<44s} {now - since[0]:7.2f} s   (at {now - T0:6.2f} s)", flush=True)
    since[0] = now


def profile() -> None:
    last = [T0]
    import torch
    stamp("import torch", last)
    import gradio  # noqa: F401
    stamp("import gradio", last)
    import gsplat  # noqa: F401
    stamp("import gsplat", last)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from sigman.app_logic import load_model
    stamp("import sigman.app_logic", last)
    model = load_model(device="cuda")
    torch.cuda.synchronize()
    stamp(f"load_model ({model.description})", last)
    pipe = model.pipe
    pipe.optimize()
    stamp("optimize() + " + pipe.compile_status[:60], last)
    photo = "assets/examples/person_00.png"
    _, features = pipe.encode_image(photo)
    torch.cuda.synchronize()
    stamp("encode_image (first)", last)
    latents = pipe.sample_latents(features, 30, 3.5, "ddim", 0)
    torch.cuda.synchronize()
    stamp("sample_latents (first: compile/capture)", last)
    latents = pipe.sample_latents(features, 30, 3.5, "ddim", 0)
    torch.cuda.synchronize()
    stamp("sample_latents (second)", last)
    from torch._dynamo.utils import compile_times
    print("   dynamo compile times:", compile_times(repr="str", aggregate=True)[:600].replace("\n", " | "))
    canonical, rest = pipe.decode_gaussians(latents)
    from sigman.presets import resolve_pose
    posed = pipe.pose_gaussians(canonical, rest, resolve_pose("a_pose"))
    torch.cuda.synchronize()
    stamp("decode + pose (first)", last)
    first = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    pipe.render_views(first, 1, 256)
    torch.cuda.synchronize()
    stamp("render (first: renderer kernels)", last)
    pipe.render_views(first, 1, 256)
    torch.cuda.synchronize()
    stamp("render (second)", last)
    print("  ", pipe.compile_cache.save() if pipe.compile_cache else "no cache")
    stamp("compile cache save", last)
    pipe(photo, pose="waving", num_views=4, render_size=512)
    torch.cuda.synchronize()
    stamp("a whole warm generation (4 views)", last)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        profile()
    else:
        for name in ("first start", "second start"):
            print(name, flush=True)
            work = tempfile.mkdtemp()
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(work, "ind"), TRITON_CACHE_DIR=os.path.join(work, "tri"))
            subprocess.run([sys.executable, __file__, "--child"], env=env, check=False)
