"""Write a generated avatar to disk: renders, videos, ``.ply``, the rigged ``.glb`` and the
skinned mesh ``avatar_mesh.glb``. Shared by ``scripts/generate.py`` and the app.

Files (frames per format: :mod:`sigman.io.frames`):

- ``avatar.ply``: the posed Gaussians, standard 3DGS (full Inria layout, or compact), +Y down.
- ``avatar_canonical.ply``: the same in the canonical pose.
- ``avatar.glb``: the rigged Gaussians (8 skin influences), +Y up, with the motion as a glTF animation.
- ``avatar_mesh.glb``: the skinned mesh with a texture baked from the Gaussians, same skeleton and motion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from sigman.gaussians import Gaussians
from sigman.pose import SMPLXPose
from sigman.presets import resolve_pose
from sigman.render import fit_orbit_to_points, image_grid, render, render_turntable, write_image, write_video

MOTION_CHUNK = 8  # frames reposed at once (bounds memory)


def first_frame(posed: Gaussians) -> Gaussians:
    """``[T, N, ...]`` posed Gaussians -> the first frame ``[N, ...]``."""
    if posed.means.dim() == 2:
        return posed
    return posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                       opacities=posed.opacities[0], colors=posed.colors[0])


def avatar_rig(pipe, rest_joints: torch.Tensor):
    from sigman.io import Rig

    return Rig(joint_names=list(pipe.body.joint_names), parents=pipe.body.parents.cpu(),
               rest_joints=rest_joints.detach().float().cpu(), body_model=pipe.body.name)


def subject_rest_vertices(pipe, result) -> torch.Tensor:
    """The canonical body vertices ``[V, 3]`` of the result's subject (its fitted shape when the
    pipeline recorded one, else the body's canonical shape)."""
    shape = getattr(result, "shape", None)
    return pipe.body.rest(shape)[0][0].detach()


def write_rigged_files(pipe, result, out: Path, animate: Optional[SMPLXPose] = None,
                       animation_name: str = "motion") -> list[Path]:
    """``avatar.glb`` (rigged Gaussians) and ``avatar_mesh.glb`` (skinned textured mesh), both with
    ``animate`` (a pose sequence) as a glTF animation when given."""
    from sigman.io.animation import skeleton_animation
    from sigman.io.gltf import save_glb
    from sigman.io.mesh_avatar import mesh_avatar, save_mesh_avatar

    rig = avatar_rig(pipe, result.rest_joints)
    canonical = result.canonical.detach().to("cpu")
    animation = None if animate is None else skeleton_animation(pipe.body, animate, result.rest_joints, animation_name)
    save_glb(out / "avatar.glb", canonical, rig, animation=animation)
    files = [out / "avatar.glb"]
    if canonical.num_gaussians == pipe.template.num_points:  # one Gaussian per texel: the texture can be baked
        mesh = mesh_avatar(pipe.body, pipe.template, canonical, subject_rest_vertices(pipe, result))
        save_mesh_avatar(out / "avatar_mesh.glb", mesh, rig, animation)
        files.append(out / "avatar_mesh.glb")
    return files


def render_motion(pipe, canonical: Gaussians, rest_joints: torch.Tensor, motion: SMPLXPose, size: int = 384,
                  background: float = 1.0) -> np.ndarray:
    """The avatar driven by a pose sequence, seen from one fixed camera: uint8 ``[T, H, W, 3]``."""
    frames: list[np.ndarray] = []
    cameras = None
    bg = (background,) * 3
    for start in range(0, motion.num_frames, MOTION_CHUNK):
        chunk = motion.frame(slice(start, start + MOTION_CHUNK))
        posed = pipe.pose_gaussians(canonical, rest_joints, chunk)
        for t in range(chunk.num_frames):
            g = posed.with_(means=posed.means[t], quats=posed.quats[t], scales=posed.scales[t],
                            opacities=posed.opacities[t], colors=posed.colors[t])
            if cameras is None:  # frame the whole motion around the first frame, with headroom
                cameras = fit_orbit_to_points(g.means.float(), n_views=1, width=size, height=size, fill=0.7,
                                              elevation_deg=5.0, start_azimuth_deg=20.0).to(g.means.device)
            with torch.no_grad():
                rgb = render(g.to(torch.float32), cameras, background=bg).rgb[0]
            frames.append((rgb.clamp(0, 1) * 255).round().byte().cpu().numpy())
    return np.stack(frames)


def export_avatar(pipe, result, out: Union[str, Path], turntable_frames: int = 48, size: int = 512,
                  motion: Optional[Union[str, Path, SMPLXPose]] = None, compact_ply: bool = False,
                  animate: Optional[Union[str, Path, SMPLXPose]] = None,
                  animation_name: Optional[str] = None) -> list[Path]:
    """Write every output of a :class:`~sigman.pipeline.PipelineOutput` into ``out``: ``motion``
    is rendered to ``motion.mp4`` and put into both ``.glb`` files as their animation (``animate``
    names another sequence for the animation only); ``compact_ply`` writes 17-property ``.ply``."""
    from sigman.io import save_gaussians

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    posed = first_frame(result.posed)
    photo = (result.input_image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
    write_image(out / "input.png", photo)
    files.append(out / "input.png")
    if result.renders is not None:
        write_image(out / "views.png", image_grid(result.renders))
        files.append(out / "views.png")
    if getattr(result, "refinement", None) is not None:  # the avatar held against the photo
        from sigman.refine import render_input_view

        r = result.refinement
        write_image(out / "input_view.png", render_input_view(result.canonical, pipe.body, result.rest_joints, r.pose,
                                                              r.camera, r.background, poser=r.poser))
        files.append(out / "input_view.png")
    if getattr(result, "fit", None) is not None:  # the pose of the person in the photo, for other tools
        from sigman.pose import save_pose

        save_pose(out / "photo_pose.npz", result.fit.pose)
        files.append(out / "photo_pose.npz")
    if turntable_frames > 0:
        frames = render_turntable(posed.to(torch.float32), n_frames=turntable_frames, size=size,
                                  background=(pipe.config.background,) * 3)
        write_video(out / "turntable.mp4", frames, fps=24)
        files.append(out / "turntable.mp4")
    save_gaussians(out / "avatar.ply", posed.detach().to("cpu"), compact=compact_ply)
    save_gaussians(out / "avatar_canonical.ply", result.canonical.detach().to("cpu"), compact=compact_ply)
    files += [out / "avatar.ply", out / "avatar_canonical.ply"]
    sequence = animate if animate is not None else motion
    name = animation_name or (Path(str(sequence)).stem if isinstance(sequence, (str, Path)) else "motion")
    files += write_rigged_files(pipe, result, out, None if sequence is None else resolve_pose(sequence), name)
    if motion is not None:
        frames = render_motion(pipe, result.canonical, result.rest_joints, resolve_pose(motion), size=min(size, 384),
                               background=pipe.config.background)
        write_video(out / "motion.mp4", frames, fps=resolve_pose(motion).fps)
        files.append(out / "motion.mp4")
    return files
