"""Build sigman's wheel, install it into a fresh virtual environment and run its commands from an
unrelated folder, with the demo weights the wheel ships.

    python scripts/dev/check_wheel.py [--keep DIR]

The environment sees the system's site-packages (torch, anny, gradio... are not installed again:
``pip install --no-deps``), so this checks the wheel itself: its file list, its console entry
points, that ``sigman`` and ``sigman_viewer`` import from the environment rather than the
checkout, and that ``sigman-generate`` makes an avatar with the packaged weights. Takes about a
minute on two CPU cores. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPECTED_TOP_LEVEL = {"sigman", "sigman_viewer"}
EXPECTED_OUTPUTS = ("input.png", "views.png", "turntable.mp4", "avatar.ply", "avatar_canonical.ply", "avatar.glb",
                    "avatar_mesh.glb", "motion.mp4")


def run(cmd: list[str], cwd: Path, what: str) -> str:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    print(f"  {what}: exit {done.returncode} in {time.perf_counter() - start:.1f} s")
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"FAILED: {what}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sigman-wheel-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working in {work}")

    run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w",
         str(work / "dist")], REPO, "build the wheel")
    wheel = next((work / "dist").glob("sigman-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    print(f"  {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, {len(names)} files, top level {sorted(top)}")
    if top != EXPECTED_TOP_LEVEL:
        raise SystemExit(f"FAILED: the wheel's top-level names are {sorted(top)}, expected {sorted(EXPECTED_TOP_LEVEL)}")
    for needed in ("sigman/assets/weights/demo/pipeline.json", "sigman/assets/weights/demo/transformer.safetensors",
                   "sigman/assets/poses/walk_cycle.npz", "sigman_viewer/__main__.py", "sigman/cli.py"):
        if needed not in names:
            raise SystemExit(f"FAILED: the wheel has no {needed}")

    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], work, "make a venv")
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], work, "install the wheel (--no-deps)")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    where = run([str(python), "-c", "import sigman, sigman_viewer, sigman.paths as p; "
                 "print(sigman.__file__); print(sigman_viewer.__file__); print(p.default_model_dir())"],
                elsewhere, "import sigman and sigman_viewer").split()
    print("   ", "\n    ".join(where))
    if any(str(REPO) in line for line in where) or not all(str(venv) in line for line in where):
        raise SystemExit("FAILED: sigman was imported from the checkout, not from the installed wheel")
    run([str(bin_dir / "sigman-viewer"), "--help"], elsewhere, "sigman-viewer --help")
    photo = REPO / "assets" / "examples" / "person_00.png"
    out = elsewhere / "gen"
    printed = run([str(bin_dir / "sigman-generate"), "--image", str(photo), "--pose", "waving", "--motion", "walk_cycle",
                   "--out", str(out), "--views", "2", "--size", "128", "--frames", "4", "--steps", "4",
                   "--device", "cpu"], elsewhere, "sigman-generate with the packaged demo weights")
    print("   ", printed.strip().replace("\n", "\n    "))
    missing = [name for name in EXPECTED_OUTPUTS if not (out / name).is_file()]
    if missing:
        raise SystemExit(f"FAILED: sigman-generate wrote no {', '.join(missing)}")
    print("OK: the wheel installs the library, the viewer, the CLI and the demo weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
