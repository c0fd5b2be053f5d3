"""Import ``roma`` without importing all of ``torch._dynamo``.

At import, ``roma.mappings`` wraps two of its autograd functions in ``torch._dynamo.disable`` so that
a ``torch.compile``'d caller runs them eagerly. Touching ``torch._dynamo`` imports the whole of
dynamo and sympy: 4.3 s of the app's 19 s warm start on the GPU machine, for a library that sigman
never compiles through (sigman compiles only the DiT, which uses no roma). So, when dynamo is not
loaded yet, roma is imported with ``torch._dynamo.disable`` standing in as the identity; the real
``torch._dynamo`` is untouched and loads as usual on first use (``torch.compile`` works as before).
The price: a ``torch.compile``'d function that calls roma's Procrustes or Horn solvers under a
functorch transform would trace them instead of running them eagerly; sigman has no such code.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

_LOCK = threading.Lock()


def _identity_disable(fn=None, recursive: bool = True, **_kwargs):
    return fn if fn is not None else (lambda f: f)


def import_roma() -> types.ModuleType:
    """``roma``, imported (once) without pulling in ``torch._dynamo`` when it is not loaded yet."""
    with _LOCK:
        if "roma" in sys.modules:
            return sys.modules["roma"]
        import torch

        if "torch._dynamo" in sys.modules or "_dynamo" in vars(torch):
            return importlib.import_module("roma")
        stand_in = types.ModuleType("torch._dynamo")
        stand_in.disable = _identity_disable
        setattr(torch, "_dynamo", stand_in)  # only the attribute; sys.modules keeps no stand-in
        try:
            return importlib.import_module("roma")
        finally:
            if vars(torch).get("_dynamo") is stand_in:
                delattr(torch, "_dynamo")  # the next torch._dynamo imports the real module
