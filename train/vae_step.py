"""The VAE's model step, shared by training (``train/train_vae.py``) and evaluation
(``scripts/eval_vae.py``): a batch of seed-layout items -> VAE forward -> Gaussians on each item's own
body shape -> linear blend skinning with its pose -> renders at its target views.

The decoded Gaussians use the same template points, frames (``quat_from_normals`` of the default
body) and point spacing (``footprints``) as :meth:`sigman.pipeline.SigmanPipeline.decode_gaussians`,
so what is trained here is what the app renders.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigman.gaussians import Gaussians, gaussians_from_attributes, quat_from_normals, repose
from sigman.lbs import lbs_points
from sigman.models.vae import VAEConfig, make_view_input
from sigman.pose import SMPLXPose
from sigman.render import Camera, render
from train.losses import head_point_index, region_pixel_mask


class BodyShapes:
    """Rest vertices / joints of each item's body shape, computed once per phenotype and kept on the
    device (anny, or a shape bank where anny is not installed)."""

    def __init__(self, body) -> None:
        self.body = body
        self.cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def get(self, phenotypes: Tensor) -> tuple[Tensor, Tensor]:
        """``phenotypes [B, S]`` (CPU) -> rest vertices ``[B, V, 3]``, rest joints ``[B, J, 3]``."""
        keys = [tuple(row) for row in phenotypes.tolist()]
        missing = sorted({k for k in keys if k not in self.cache})
        if missing:
            device = self.body.rest_vertices.device
            try:
                verts, joints = self.body.rest(torch.tensor(missing, device=device))
            except ImportError as err:
                raise RuntimeError(
                    f"body shapes of some items are not in the shape bank and {err.name or 'anny'} is not "
                    "installed: pass --shape-bank with the bank the data was generated from") from err
            for k, v, j in zip(missing, verts, joints):
                self.cache[k] = (v.float(), j.float())
        return (torch.stack([self.cache[k][0] for k in keys]), torch.stack([self.cache[k][1] for k in keys]))


def batch_pose(p: dict[str, Tensor]) -> SMPLXPose:
    """The dataset's per-item pose tensors (batched) as one SMPL-X pose of ``B`` frames."""
    return SMPLXPose(global_orient=p["global_orient"], body_pose=p["body_pose"], jaw_pose=p["jaw_pose"],
                     leye_pose=p["leye_pose"], reye_pose=p["reye_pose"], left_hand_pose=p["left_hand_pose"],
                     right_hand_pose=p["right_hand_pose"], transl=p["transl"], betas=p["betas"][0],
                     expression=p["expression"][0])


class GaussianDecoderStep:
    """Everything between a batch and rendered images: VAE forward, Gaussians, LBS, rasterization.

    Holds the body, the UV template (on the device) and the cached body shapes.
    """

    def __init__(self, body, template, vae_config: VAEConfig, render_size: int) -> None:
        self.body = body
        self.template = template
        self.template_quats = quat_from_normals(template.normals)
        self.shapes = BodyShapes(body)
        self.vae_config = vae_config
        self.render_size = render_size
        self.head_index = head_point_index(template.skin_weights, body.parents, body.joint_names)

    def view_input(self, batch: dict) -> Tensor:
        """Input views resized to the VAE's size + Plücker rays: ``[B, V, 9, s, s]``."""
        rgb, ks = batch["input_rgb"], batch["input_Ks"]
        s = self.vae_config.image_size
        if rgb.shape[-1] != s:
            b, v = rgb.shape[:2]
            ks = ks.clone()
            ks[..., :2, :] *= s / rgb.shape[-1]
            rgb = F.interpolate(rgb.flatten(0, 1), size=(s, s), mode="bilinear", antialias=True,
                                align_corners=False).view(b, v, 3, s, s)
        return make_view_input(rgb, batch["input_viewmats"], ks)

    def __call__(self, model: nn.Module, batch: dict, phenotypes: Tensor, sample_posterior: bool = True,
                 generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """Returns ``rgb [B, V', 3, S, S]``, ``alpha [B, V', 1, S, S]``, ``face [B, V', 1, S, S]``,
        ``mean``, ``logvar``. Body shapes: the batch's ``rest_vertices`` / ``rest_joints`` when it has
        them (a streamed batch), else those of ``phenotypes [B, 6]`` (CPU)."""
        if "rest_vertices" in batch:
            rest_vertices, rest_joints = batch["rest_vertices"], batch["rest_joints"]
        else:
            rest_vertices, rest_joints = self.shapes.get(phenotypes)
        points = self.template.positions_for(rest_vertices)  # [B, N, 3]
        transforms, _ = self.body.pose_transforms(batch_pose(batch["pose"]), rest_joints)  # [B, J, 4, 4]
        attrs, mean, logvar = model(self.view_input(batch), batch["uv_texture"], self.template.texel_uv,
                                    template_points=points, template_quats=self.template_quats,
                                    point_spacing=self.template.footprints, sample_posterior=sample_posterior,
                                    generator=generator)
        attrs = {k: v.float() for k, v in attrs.items()}
        canonical = gaussians_from_attributes(points, attrs["offset"], attrs["scale"], attrs["quat"],
                                              attrs["opacity"], attrs["rgb"], skin_weights=self.template.skin_weights)
        posed = repose(canonical, transforms)
        s = self.render_size
        vms, ks = batch["target_viewmats"], batch["target_Ks"]
        rgbs, alphas = [], []
        for i in range(posed.means.shape[0]):  # one rasterizer call per item, all its views at once
            g = Gaussians(posed.means[i], posed.quats[i], posed.scales[i], posed.opacities[i], posed.colors[i])
            out = render(g, Camera(vms[i], ks[i], s, s), background=(1.0, 1.0, 1.0))
            rgbs.append(out.rgb)
            alphas.append(out.alpha)
        rgb = torch.stack(rgbs).permute(0, 1, 4, 2, 3)  # [B, V', 3, S, S]
        alpha = torch.stack(alphas).permute(0, 1, 4, 2, 3)
        with torch.no_grad():
            head = self.head_index
            head_points = lbs_points(points[:, head], self.template.skin_weights[head], transforms)
            face = region_pixel_mask(head_points, vms, ks, s, s)[:, :, None]
        return {"rgb": rgb, "alpha": alpha, "face": face, "mean": mean, "logvar": logvar}
