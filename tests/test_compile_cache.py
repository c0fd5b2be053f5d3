"""The on-disk cache of torch.compile's output: keys, a missing file, a broken file, saving."""

from __future__ import annotations

from sigman.compile_cache import CompileCache, cache_key


def test_key_depends_on_config_and_software(tmp_path):
    a = cache_key("cpu", {"layers": 2})
    assert a == cache_key("cpu", {"layers": 2}) and len(a) == 16
    assert a != cache_key("cpu", {"layers": 3})
    path = CompileCache.for_model("dit", "cpu", {"layers": 2}, folder=tmp_path).path
    assert path.parent == tmp_path and path.name == f"dit-{a}.bin"


def test_missing_then_broken_file_falls_back_with_one_line(tmp_path):
    cache = CompileCache.for_model("dit", "cpu", {"layers": 2}, folder=tmp_path)
    first = cache.load()
    assert "none yet" in first and "\n" not in first and not cache.loaded
    cache.path.write_bytes(b"not a torch cache at all")
    broken = cache.load()
    assert "unreadable" in broken and "compiling afresh" in broken and "\n" not in broken
    assert not cache.path.exists() and not cache.loaded  # removed, so the next start writes a good one
