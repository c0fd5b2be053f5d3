"""What a wheel built from this repository holds, checked from pyproject.toml without building it
(``scripts/dev/check_wheel.py`` builds one, installs it and runs its commands).

- every package under ``sigman/`` and the viewer are listed; nothing installs a generic top-level
  name (the viewer goes in as ``sigman_viewer``; ``train/`` and ``app.py`` stay in the checkout);
- the viewer imports itself relatively, so that it works under its installed name;
- the package data (demo weights, poses, examples) exist and are what ``sigman.paths`` finds;
- the console entry points name functions that exist;
- run-time dependencies hold no test-only tool, and gradio is bounded.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def source_folder(package: str) -> Path:
    mapped = SETUPTOOLS.get("package-dir", {})
    for name in sorted(mapped, key=len, reverse=True):
        if package == name or package.startswith(name + "."):
            return REPO / mapped[name] / package[len(name):].lstrip(".").replace(".", "/")
    return REPO / package.replace(".", "/")


def test_the_wheel_lists_every_package_and_no_generic_top_level_name():
    packages = set(SETUPTOOLS["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "sigman").rglob("__init__.py")}
    assert on_disk <= packages, f"add {sorted(on_disk - packages)} to [tool.setuptools] packages"
    assert {p.split(".")[0] for p in packages} == {"sigman", "sigman_viewer"}
    for package in packages:
        assert source_folder(package).is_dir(), package
    assert source_folder("sigman_viewer") == REPO / "viewer"


def test_the_viewer_imports_itself_relatively():
    for path in (REPO / "viewer").glob("*.py"):
        absolute = re.findall(r"^\s*(?:from viewer\.\w+ import|import viewer\b)", path.read_text(), flags=re.M)
        assert not absolute, f"{path.name} imports 'viewer' by name; use a relative import (installed as sigman_viewer)"


def test_package_data_holds_the_demo_weights():
    data = SETUPTOOLS["package-data"]["sigman.assets"]
    root = source_folder("sigman.assets")
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    shipped = {f for f in files if any(fnmatch.fnmatch(f, pattern) for pattern in data)}
    for needed in ("weights/demo/pipeline.json", "weights/demo/autoencoder.safetensors",
                   "weights/demo/transformer.safetensors", "weights/demo/image_encoder.safetensors",
                   "poses/walk_cycle.npz", "poses/thumbnails/waving.png", "examples/person_00.png"):
        assert needed in shipped, needed
    from sigman import paths

    # in a checkout the repository's assets are used; an installed wheel has them in sigman/assets
    assert paths.INSTALLED_ASSETS == REPO / "sigman" / "assets" and not paths.INSTALLED_ASSETS.exists()
    assert paths.default_model_dir() == root / "weights" / "demo" or "SIGMAN_WEIGHTS" in __import__("os").environ


def test_console_entry_points_exist():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"sigman-generate", "sigman-viewer"}
    for target in scripts.values():
        module, function = target.split(":")
        package, _, rest = module.partition(".")
        path = source_folder(package) / (rest.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())  # parsed, not imported: the viewer and pipeline are slow to import
        assert any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body), target


def test_dependencies():
    deps = PYPROJECT["project"]["dependencies"]
    names = [re.split(r"[<>=!~ ;\[]", d)[0].lower() for d in deps]
    assert "trimesh" not in names and "trimesh>=4" in PYPROJECT["project"]["optional-dependencies"]["test"]
    assert any(re.fullmatch(r"gradio>=5,<\d+", d.split("#")[0].strip()) for d in deps)
    runtime = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert "trimesh>=4" not in runtime and any(re.fullmatch(r"gradio>=5,<\d+", line) for line in runtime)
