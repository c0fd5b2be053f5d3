"""The library stands on its own: nothing in ``sigman/`` imports the training code, the viewer, the
scripts or the app (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

SIGMAN = Path(__file__).resolve().parent.parent / "sigman"
FORBIDDEN = ("train", "viewer", "scripts", "app", "tests")
# No exceptions: the app's viewer pool gets its launcher from app.py. Anything added here needs a reason.
ALLOWED: set = set()


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in a module, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_library_imports_nothing_outside_itself():
    offences = []
    files = sorted(SIGMAN.rglob("*.py"))
    assert len(files) > 20  # the walk found the library
    for path in files:
        for line, root in imported_roots(ast.parse(path.read_text(), filename=str(path))):
            if root in FORBIDDEN and (path.name, root) not in ALLOWED:
                offences.append(f"{path.relative_to(SIGMAN.parent)}:{line} imports {root}")
    assert not offences, "; ".join(offences)


def test_the_check_sees_an_offence():
    tree = ast.parse("def f():\n    from train.losses import ssim\n    import viewer.server\n")
    assert [root for _, root in imported_roots(tree)] == ["train", "viewer"]
