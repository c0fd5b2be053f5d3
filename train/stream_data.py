"""The streamed data source of both loops (``--stream``): a :class:`~sigman.data.stream.SyntheticStream`
built from a loop's config, and fixed stream items for validation."""

from __future__ import annotations

import dataclasses
from typing import Optional

from sigman.data.stream import VAL_KEY, StreamConfig, SyntheticStream
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator
from sigman.data.uv_projection import ProjectionConfig


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def make_stream(body, device, seed: int, shape_bank: Optional[str], synthetic_overrides: dict,
                stream_overrides: dict, **layout) -> SyntheticStream:
    """A stream on ``device`` for ``body`` (anny; shapes mixed from ``shape_bank`` when given).
    ``layout``: the loop's :class:`StreamConfig` fields (view counts and sizes); ``stream_overrides``
    and ``synthetic_overrides`` (JSON objects of :class:`StreamConfig` / :class:`SyntheticConfig`
    fields, ``projection`` a :class:`ProjectionConfig` object) go on top."""
    names = {f.name for f in dataclasses.fields(SyntheticConfig)}
    stream_names = {f.name for f in dataclasses.fields(StreamConfig)}
    bad = sorted(set(synthetic_overrides) - names) + sorted(set(stream_overrides) - stream_names)
    if bad:
        raise SystemExit(f"unknown --synthetic_overrides / --stream_overrides fields {bad}; "
                         f"SyntheticConfig has {sorted(names)}, StreamConfig has {sorted(stream_names)}")
    syn = _tuples(synthetic_overrides)
    if isinstance(syn.get("projection"), dict):
        syn["projection"] = ProjectionConfig(**syn["projection"])
    if layout.get("uv_resolution"):
        syn.setdefault("uv_resolution", layout["uv_resolution"])  # no second UV template
    generator = SyntheticGenerator(SyntheticConfig(**{"shape_bank": shape_bank, **syn}), device=device, body=body)
    return SyntheticStream(generator, StreamConfig(**{**layout, "seed": seed, **_tuples(stream_overrides)}))


def val_batches(stream: SyntheticStream, count: int, batch_size: int, rank: int = 0, world: int = 1) -> list[dict]:
    """Batches of the fixed validation items ``(VAL_KEY, i)``, ``i < count`` (this rank's share)."""
    keys = [(VAL_KEY, i) for i in range(count)][rank::world]
    return [stream.items(keys[i:i + batch_size]) for i in range(0, len(keys), batch_size)]
