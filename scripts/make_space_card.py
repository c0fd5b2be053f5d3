"""Write the Hugging Face Space card: a README.md whose YAML front matter configures the Space,
followed by the project's README. It goes to its own folder, so the repository's README keeps
its plain top; copy it over README.md in the Space's repository when publishing.

    python scripts/make_space_card.py --out dist/space     # -> dist/space/README.md
    python scripts/make_space_card.py --hardware zero-a10g

The Space runs ``app.py`` with the Gradio version installed here (the one the tests ran with),
installs ``requirements.txt`` (on a GPU Space the default torch wheel is the CUDA build), and
on ZeroGPU hardware each generation borrows the GPU through ``spaces.GPU`` (see ``app.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def space_card(hardware: str, python_version: str) -> str:
    import gradio

    front = {
        "title": "sigman",
        "emoji": "🧍",
        "colorFrom": "indigo",
        "colorTo": "pink",
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "python_version": python_version,
        "app_file": "app.py",
        "suggested_hardware": hardware,
        "license": "apache-2.0",
        "short_description": "One photo + a pose -> an animatable 3D Gaussian avatar",
        "pinned": "false",
    }
    lines = ["---"] + [f"{key}: {value}" for key, value in front.items()] + ["---", ""]
    return "\n".join(lines) + (REPO / "README.md").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "space", help="folder for README.md")
    parser.add_argument("--hardware", default="zero-a10g", help="suggested Space hardware (zero-a10g: ZeroGPU)")
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="python_version of the Space")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text(space_card(args.hardware, args.python), encoding="utf-8")
    print(args.out / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
