"""Stage: after sampling — VAE decode, Gaussian build, LBS reposing (reference and fast paths),
the 512² render and the .ply export."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from sigman.fast import fast_repose
from sigman.gaussians import Gaussians, gaussians_from_attributes, quat_from_normals, repose
from sigman.paths import REPO_ROOT as REPO
from sigman.presets import resolve_pose
from sigman.render import fit_orbit_to_points, render

from .context import Context, posed_first, run_sampler


def bench_decode_and_pose(ctx: Context) -> None:
    """VAE decode, Gaussian build, reposing, render, export — on the optimized DDIM latents."""
    pipe, run, name = ctx.pipe, ctx.run, ctx.name
    scaled = ctx.ddim_latents if ctx.ddim_latents is not None else run_sampler(ctx, pipe.dit, 2, "ddim")
    latents = scaled.float() / pipe.vae.config.latent_scaling_factor
    rest_vertices, rest_joints = pipe.body.rest(None)
    points = pipe.template.positions_for(rest_vertices[0])
    quats = quat_from_normals(pipe.template.normals)

    def decode() -> dict:
        with torch.no_grad():
            return pipe.vae.decode_attributes(latents, pipe.template.texel_uv, template_points=points,
                                              template_quats=quats, point_spacing=pipe.template.footprints)
    attrs = decode()
    run.put(name, "VAE decode", ctx.measure(decode),
            f"latent {tuple(latents.shape[1:])} -> {pipe.template.num_points} points")

    def build() -> Gaussians:
        g = gaussians_from_attributes(points, attrs["offset"], attrs["scale"], attrs["quat"], attrs["opacity"],
                                      attrs["rgb"].clamp(0, 1), skin_weights=pipe.template.skin_weights)
        return g.with_(means=g.means[0], quats=g.quats[0], scales=g.scales[0], opacities=g.opacities[0], colors=g.colors[0])
    ctx.canonical, ctx.rest_joints = build(), rest_joints[0]
    run.put(name, "Gaussian build", ctx.measure(build), f"{ctx.canonical.num_gaussians} Gaussians")
    run.stage(name, "LBS reposing", lambda: bench_repose(ctx))
    run.stage(name, "render", lambda: bench_render(ctx))
    run.stage(name, "export", lambda: bench_export(ctx))


def sparse_skin_class() -> type:
    """``viewer.skinning.SparseSkin``, loaded from its file so that the viewer package (and viser,
    which a GPU box may lack) is not imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_viewer_skinning", REPO / "viewer" / "skinning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SparseSkin


def bench_repose(ctx: Context) -> None:
    """Reference reposing, its parts, and the two fast paths (optimized pipeline; viewer's sparse)."""
    pipe, run, name, reps = ctx.pipe, ctx.run, ctx.name, max(ctx.args.repeats, 10)
    pose = resolve_pose(ctx.args.pose)
    canonical, rest_joints = ctx.canonical, ctx.rest_joints
    cpu_body = pipe.body if ctx.device.type == "cpu" else copy.deepcopy(pipe.body).to("cpu")
    rest_cpu = rest_joints.cpu()
    n = canonical.num_gaussians
    with torch.no_grad():
        run.put(name, "repose: reference (kinematics + dense LBS on the device)",
                ctx.measure(lambda: repose(canonical, pipe.body.pose_transforms(pose, rest_joints)[0]), reps),
                f"{n} Gaussians; sigman.gaussians.repose, the pipeline before optimize()")
        run.put(name, "repose: kinematics on the device", ctx.measure(lambda: pipe.body.pose_transforms(pose, rest_joints),
                                                                      reps), "body.pose_transforms")
        run.put(name, "repose: kinematics on the CPU", ctx.measure(lambda: cpu_body.pose_transforms(pose, rest_cpu), reps),
                "body.pose_transforms on a CPU copy of the body")
        transforms_cpu = cpu_body.pose_transforms(pose, rest_cpu)[0]
        run.put(name, "repose: fast_repose (CPU transforms given)",
                ctx.measure(lambda: fast_repose(canonical, transforms_cpu), reps),
                "joint tables on the CPU, 2 matmuls per pose on the device")
        run.put(name, "repose: CPU kinematics + fast_repose",
                ctx.measure(lambda: fast_repose(canonical, cpu_body.pose_transforms(pose, rest_cpu)[0]), reps),
                "the optimized pipeline's path (pipe.optimize() on CUDA)")
        transforms = transforms_cpu.to(ctx.device)
        skin = sparse_skin_class()(canonical.skin_weights).to(ctx.device)
        run.put(name, "repose: sparse top-k LBS (transforms given)",
                ctx.measure(lambda: skin.repose(canonical.means, canonical.quats, transforms[0]), reps),
                f"viewer fast path (k≤{skin.k}, exact={skin.exact})")

        def sparse_total():
            t = cpu_body.pose_transforms(pose, rest_cpu)[0].to(ctx.device, non_blocking=True)
            return skin.repose(canonical.means, canonical.quats, t[0])
        run.put(name, "repose: CPU kinematics + sparse top-k LBS", ctx.measure(sparse_total, reps), "the viewer's path")


def bench_render(ctx: Context) -> None:
    from sigman.render import resolve_backend

    g = posed_first(ctx)
    ctx.camera = fit_orbit_to_points(g.means, n_views=1, width=512, height=512).to(ctx.device)
    bg = (ctx.pipe.config.background,) * 3
    backend = resolve_backend("auto", ctx.device)
    with torch.no_grad():
        render(g, ctx.camera, background=bg)  # gsplat compiles / loads its kernels on first use
        stat = ctx.measure(lambda: render(g, ctx.camera, background=bg), max(ctx.args.repeats, 10))
    ctx.run.put(ctx.name, "render 512²", stat, f"1 view, {g.num_gaussians} Gaussians, backend {backend}")


def bench_export(ctx: Context) -> None:
    from sigman.io import save_gaussians

    g = posed_first(ctx)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "avatar.ply"
        stat = ctx.measure(lambda: save_gaussians(path, g.detach().to("cpu")))
        size = path.stat().st_size
    ctx.run.put(ctx.name, "export .ply", stat, f"{g.num_gaussians} Gaussians, {size / 2 ** 20:.1f} MiB, incl. device->host")
