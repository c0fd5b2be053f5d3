"""The Hugging Face Space path of app.py: with ZeroGPU's ``spaces`` package importable, the
generation runs inside ``spaces.GPU``; without it nothing is wrapped. ``spaces`` is replaced by a
stand-in module that records what it decorates and every call that goes through it. The Space
card is written apart from the README."""

from __future__ import annotations

import functools
import subprocess
import sys
import types
from pathlib import Path

import pytest

import app

REPO = Path(__file__).resolve().parent.parent


class StandInSpaces(types.ModuleType):
    """What app.py uses of ``spaces``: ``GPU(duration=...)`` returning a decorator."""

    def __init__(self) -> None:
        super().__init__("spaces")
        self.decorated: list[tuple[str, int]] = []
        self.calls: list[str] = []

    def GPU(self, duration: int = 60):  # noqa: N802 - the real name
        def decorate(fn):
            self.decorated.append((fn.__name__, duration))

            @functools.wraps(fn)  # as spaces does: Gradio reads the handler's signature and hints through it
            def on_gpu(*args, **kwargs):
                self.calls.append(fn.__name__)
                return fn(*args, **kwargs)

            return on_gpu
        return decorate


def test_gpu_task_uses_spaces_when_importable(monkeypatch):
    stand_in = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stand_in)

    def generate(x, y=1):
        return x + y

    wrapped = app.gpu_task(generate)
    assert wrapped is not generate and stand_in.decorated == [("generate", app.GPU_SECONDS)]
    assert wrapped(2, y=3) == 5 and stand_in.calls == ["generate"]


def test_gpu_task_changes_nothing_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def generate():
        return 1

    assert app.gpu_task(generate) is generate


def test_the_page_generates_inside_spaces_gpu(monkeypatch, anny_body, tmp_path):
    """build_demo registers the spaces.GPU-wrapped handler as the Generate button's function, and a
    generation through it runs inside the stand-in's GPU call."""
    from gradio import Request

    from test_app import EXAMPLES, tiny_studio

    stand_in = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stand_in)
    studio = tiny_studio(anny_body, tmp_path, viewers=False)
    demo = app.build_demo(studio)
    assert stand_in.decorated == [("run", app.GPU_SECONDS)]
    handler = next(block.fn for block in demo.fns.values() if block.api_name == "generate")
    assert getattr(handler, "__wrapped__", None) is not None and handler.__name__ == "run"
    request = Request(headers={"host": "127.0.0.1"}, session_hash="space-test")
    out = handler(str(EXAMPLES[0]), None, "a_pose", None, "none", None, 0, 2, 2.0, "ddim", False, None,
                  request=request, progress=lambda *a, **k: None)
    assert stand_in.calls == ["run"] and "Gaussians" in out[0]
    assert [Path(p).name for p in out[-2]] == ["avatar.ply", "avatar.glb", "avatar_mesh.glb"]
    assert out[-1] is None  # no photo refinement asked for: no input view
    studio.close()


def test_space_card_is_written_apart_from_the_readme(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_space_card.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    card = (tmp_path / "README.md").read_text()
    head, _, body = card.partition("\n---\n")
    assert card.startswith("---\n") and "sdk: gradio" in head and "app_file: app.py" in head
    assert "sdk_version: " in head and "\nlicense: apache-2.0" in head
    readme = (REPO / "README.md").read_text()
    assert not readme.startswith("---") and readme.splitlines()[0] == "# sigman"  # the project's README stays clean
    assert body.strip().startswith("# sigman")
    pytest.importorskip("gradio")
    import gradio

    assert f"sdk_version: {gradio.__version__}" in head
