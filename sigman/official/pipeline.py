"""The official template inside :class:`sigman.pipeline.SigmanPipeline` (``template="release"``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from sigman.gaussians import Gaussians
from sigman.official.gaussians import ReleaseGaussianHead, release_root
from sigman.official.template import (DEFORMER_GENDER, TEMPLATE_GENDER, TemplateError, build_release_template,
                                      canonical_pose)
from sigman.pose import SMPLXPose


def build_release_head(body, vae) -> ReleaseGaussianHead:
    """The release's template built from the files beside the SMPL-X model of ``body`` (a neutral
    :class:`~sigman.body.smplx_body.SMPLXBody`), checked against ``vae``'s ``smplx_uvcoord``
    (a freshly initialised VAE, whose buffer is all zeros, gets the template's UVs instead)."""
    from sigman.body.smplx_body import SMPLXBody

    if not isinstance(body, SMPLXBody) or body.gender != DEFORMER_GENDER:
        raise TemplateError("the official template needs the neutral SMPL-X body (body_model='smplx'); "
                            "put the SMPL-X files in assets/body_models/smplx (see docs/OFFICIAL.md)")
    if vae.smplx_uvcoord is None:
        raise TemplateError("this VAE config has no smplx_uvcoord buffer; the official template needs the 'official' VAE")
    folder = body.model_file.parent
    template = build_release_template(folder)
    template_body = SMPLXBody(model_path=folder, gender=TEMPLATE_GENDER, uv_path=body_uv_path(folder))
    device = body.rest_vertices.device
    head = ReleaseGaussianHead(template.to(device), template_body.to(device), body, canonical_pose(body.model_file))
    buffer = vae.smplx_uvcoord
    if buffer.shape[1] == template.num_points and not bool(buffer.abs().sum() > 0):
        with torch.no_grad():
            buffer.copy_(template.uvcoord[None].to(buffer))
    head.check(buffer)
    return head


def body_uv_path(folder):
    from sigman.body.smplx_body import SMPLX_UV_FILE

    path = folder / SMPLX_UV_FILE
    return path if path.is_file() else None


def release_decode_and_pose(pipe, latents: Tensor, pose: SMPLXPose, shape: Optional[Tensor],
                            views: str) -> tuple[Gaussians, Tensor, Gaussians]:
    """Decode with the release's template and pose as the release does. With ``views="release"``
    the pose's root is the release's (:func:`~sigman.official.gaussians.release_root`) and, unless
    ``shape`` is given, the body takes the pose file's betas, as the release's script does."""
    head: ReleaseGaussianHead = pipe.release
    if views == "release":
        pose = release_root(pose)
        if shape is None:
            shape = pipe.body.betas_from_pose(pose)
    with torch.no_grad():
        canonical, rest_joints = head.canonical(head.decode(pipe.vae, latents), shape)
        posed = head.pose(canonical, pose, rest_joints)
    return canonical, rest_joints, posed
