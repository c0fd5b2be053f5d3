"""Serve viser's web client with its Gaussian-splat vertex shader made to draw what gsplat draws.

viser 1.1.1's splat vertex shader (``client/src/Splatting/GaussianSplatsHelpers.ts``) differs
from gsplat's rasterizer (and :mod:`sigman.render`) in two lines:

1. ``if (weightedDeterminant < 0.25) return;`` drops every splat whose blurred 2D covariance
   determinant times its opacity is under 0.25, i.e. every splat under about half a pixel. gsplat
   draws them (only alpha < 1/255 is skipped), and the decoder's small splats are the face's
   surface: seen from a few metres the eyes, nose and mouth vanish and the dark inside of the
   head shows through (the "gas-mask" face).
2. ``normalize(vec2(offDiag, lambda1 - diag1))`` is the major axis of the 2D ellipse; it is
   ``(0, 0)`` (NaN after normalising: the splat vanishes) or a rounding-noise direction whenever
   the ellipse is wider than tall and axis-aligned on screen.

Both are fixed by rewriting the shader text as the page compiles it: a short script in the served
``index.html`` wraps ``WebGL{,2}RenderingContext.shaderSource``. The patched page is written once
to the cache folder, next to nothing else, and viser serves it instead of its own build.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import viser

from sigman.paths import cache_dir

CULL_LINE = "if (weightedDeterminant < 0.25)\n      return;"
AXIS_LINE = "vec2 diagonalVector = normalize(vec2(offDiag, lambda1 - diag1));"
ROBUST_AXIS = ("vec2 diagonalVector = diag1 >= diag2 ? vec2(lambda1 - diag2, offDiag) : vec2(offDiag, lambda1 - diag1);"
               " diagonalVector = dot(diagonalVector, diagonalVector) > 0.0 ? normalize(diagonalVector) : vec2(1.0, 0.0);")
REPLACEMENTS = ((CULL_LINE, "// (sigman) no size cull: gsplat draws every splat with alpha >= 1/255"),
                (AXIS_LINE, ROBUST_AXIS))
PATCH_SCRIPT = """<script>(() => {
  const replacements = %s;
  const patch = (src) => {
    if (!src.includes("diagonalVector")) return src;
    for (const [from, to] of replacements) src = src.split(from).join(to);
    return src;
  };
  for (const C of [window.WebGLRenderingContext, window.WebGL2RenderingContext]) {
    if (!C) continue;
    const shaderSource = C.prototype.shaderSource;
    C.prototype.shaderSource = function (shader, src) { return shaderSource.call(this, shader, patch(src)); };
  }
})();</script>""" % json.dumps([list(r) for r in REPLACEMENTS])

_CONSTRUCTING = threading.Lock()


def viser_client_build() -> Path:
    """viser's own client build folder (``index.html``)."""
    return Path(viser.__file__).resolve().parent / "client" / "build"


def patched_client_root() -> Path:
    """A folder holding viser's ``index.html`` with :data:`PATCH_SCRIPT` in its ``<head>``."""
    original = (viser_client_build() / "index.html").read_text(encoding="utf-8")
    if "</head>" not in original:
        raise RuntimeError(f"viser {viser.__version__}'s client page has no </head>; cannot patch its splat shader")
    page = original.replace("</head>", PATCH_SCRIPT + "</head>", 1)
    root = cache_dir() / f"viser-client-{viser.__version__}"
    root.mkdir(parents=True, exist_ok=True)
    target = root / "index.html"
    if not target.is_file() or target.read_text(encoding="utf-8") != page:
        tmp = root / "index.html.tmp"
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    return root


def patch_shader_source(source: str) -> str:
    """The same rewrite as :data:`PATCH_SCRIPT`, in Python (for tests)."""
    if "diagonalVector" not in source:
        return source
    for old, new in REPLACEMENTS:
        source = source.replace(old, new)
    return source


def serve_patched_client(**server_kwargs) -> viser.ViserServer:
    """A :class:`viser.ViserServer` whose HTTP side serves :func:`patched_client_root`.

    viser builds its web server (and starts it) inside ``ViserServer.__init__`` with its own build
    folder; the constructor is wrapped here for that one call (under a lock)."""
    root = patched_client_root()
    websock_server = viser.infra.WebsockServer

    class PatchedClientServer(websock_server):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs["http_server_root"] = root
            super().__init__(*args, **kwargs)

    with _CONSTRUCTING:
        viser.infra.WebsockServer = PatchedClientServer
        try:
            return viser.ViserServer(**server_kwargs)
        finally:
            viser.infra.WebsockServer = websock_server
