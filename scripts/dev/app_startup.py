"""Time the web app from process start to its first avatar, through gradio_client, twice: a cold
start (empty caches) and a warm start (the compile cache of the first start on disk, nothing else
kept). Prints one line per start and the app's start-up log lines about the compile cache.

    python scripts/dev/app_startup.py --starts cold warm --out startup.json

Each start gets a fresh inductor/Triton cache folder, so a warm start can only be fast through
sigman's own compile cache (``$SIGMAN_CACHE/compile``), not through caches torch keeps elsewhere.
``--video-shim`` runs the app with OpenCV writing the mp4s, for machines without an ffmpeg binary
(imageio-ffmpeg's wheel is too large to carry to the GPU machine); on a normal install leave it off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wait_for_client(url: str, proc: subprocess.Popen, timeout: float):
    import gradio_client

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before serving")
        try:
            return gradio_client.Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    raise TimeoutError(f"the app did not serve {url} within {timeout:.0f} s")


def one_start(name: str, port: int, photo: Path, env: dict, video_shim: bool, timeout: float) -> dict:
    import gradio_client

    work = Path(tempfile.mkdtemp(prefix=f"sigman-start-{name}-"))
    env = dict(env, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"), TRITON_CACHE_DIR=str(work / "triton"),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(REPO / "scripts/dev/app_with_opencv_video.py")] if video_shim else [sys.executable, str(REPO / "app.py")]
    cmd += ["--port", str(port), "--max-viewers", "0"]
    log_path = work / "app.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = wait_for_client(f"http://127.0.0.1:{port}/", proc, timeout)
            t_serving = time.perf_counter() - t0
            out = client.predict(photo=gradio_client.handle_file(str(photo)), mask=None, pose="a_pose", pose_file=None,
                                 motion="walk_cycle", motion_file=None, seed=0, steps=30, guidance=3.5,
                                 sampler="ddim", refine_photo=False, api_name="/generate")
            t_first = time.perf_counter() - t0
            t1 = time.perf_counter()
            client.predict(photo=gradio_client.handle_file(str(photo)), mask=None, pose="waving", pose_file=None,
                           motion="walk_cycle", motion_file=None, seed=1, steps=30, guidance=3.5,
                           sampler="ddim", refine_photo=False, api_name="/generate")
            t_second = time.perf_counter() - t1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    lines = log_path.read_text().splitlines()
    notes = [ln for ln in lines if "compile cache" in ln or "optimized pipeline" in ln or "plain pipeline" in ln]
    return {"start": name, "serving_s": round(t_serving, 2), "first_avatar_s": round(t_first, 2),
            "next_avatar_s": round(t_second, 2), "summary": out[0], "log": notes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", nargs="+", default=["cold", "warm"])
    parser.add_argument("--photo", type=Path, default=REPO / "assets/examples/person_00.png")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--video-shim", action="store_true")
    parser.add_argument("--timeout", type=float, default=400)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="sigman-cache-"))
    env = dict(os.environ)
    if "SIGMAN_CACHE" in env:  # keep the body caches, but start without a compile cache
        cache = Path(env["SIGMAN_CACHE"])
        (cache / "compile").mkdir(parents=True, exist_ok=True)
        for f in (cache / "compile").iterdir():
            f.unlink()
    env["SIGMAN_CACHE"] = str(cache)
    results = []
    for i, name in enumerate(args.starts):
        r = one_start(name, args.port + i, args.photo, env, args.video_shim, args.timeout)
        print(f"{name}: serving after {r['serving_s']} s, first avatar after {r['first_avatar_s']} s from process start, "
              f"next avatar {r['next_avatar_s']} s", flush=True)
        for line in r["log"]:
            print("   ", line[-240:], flush=True)
        print("   ", r["summary"], flush=True)
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
