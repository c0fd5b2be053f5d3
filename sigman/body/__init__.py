"""Skinned parametric bodies behind one interface (:class:`BodyModel`)."""

from __future__ import annotations

from sigman.body.base import BodyModel, BodyOutput


def load_body_model(name: str = "anny", **kwargs) -> BodyModel:
    """``"anny"`` (free, default) or ``"smplx"`` (needs the licensed SMPL-X files; see
    :func:`sigman.paths.smplx_model_dir`)."""
    if name == "anny":
        from sigman.body.anny_body import AnnyBody

        return AnnyBody(**kwargs)
    if name == "smplx":
        from sigman.body.smplx_body import SMPLXBody

        return SMPLXBody(**kwargs)
    raise ValueError(f"unknown body model '{name}'; choose 'anny' or 'smplx'")


__all__ = ["BodyModel", "BodyOutput", "load_body_model"]
