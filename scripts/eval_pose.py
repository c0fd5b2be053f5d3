"""Pose-estimation evaluation: render the project's own bodies in known poses from known cameras,
estimate the pose back (MediaPipe person understanding + body fit), and measure the error.

    python scripts/eval_pose.py --out outputs/pose_eval              # CPU: several minutes
    python scripts/eval_pose.py --device cuda --random 16 --out outputs/pose_eval

Bodies: anny with procedurally painted skin and clothes (sigman.data.appearance, as the synthetic
training data; a bare grey body is often not seen as a person) and a sampled body shape, with the
standing heights of adults (``--population adults``, the default; ``uniform``: anny's whole height range,
as the training data draws it). Poses:
the static presets of assets/poses and random plausible poses (presets with perturbed joints, as
the synthetic data draws them). Views: frontal (camera on the body's +Z side) and side (+X), 50
degree vertical field of view, 512 x 512, at the distance where the body fills 85% of the height. Video: the walk_cycle motion rendered at 30 fps from
a frontal camera, written to mp4 and run through scripts/video_to_motion's library.

Metrics: MPJPE (mm) over the 22 SMPL-X body joints after root (pelvis) alignment, in camera axes;
S-MPJPE after the best uniform scale too (one photo does not fix the person's size), PA-MPJPE after
the best similarity transform (Procrustes);
the mean joint-angle error (degrees, geodesic) of the 21 body joints' local rotations. "oracle"
rows fit perfect synthetic landmarks (the fit's own error, without the detector's).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import roma  # noqa: E402
import torch  # noqa: E402

from sigman.body import load_body_model  # noqa: E402
from sigman.body.retarget import SMPLX_TO_ANNY  # noqa: E402
from sigman.fit import CAMERA_ROTATION, FitConfig, build_shape_basis, fit_body  # noqa: E402
from sigman.pose import SMPLX_JOINT_NAMES, SMPLXPose  # noqa: E402
from sigman.synthetic_observation import front_camera, synthetic_observation  # noqa: E402

STATIC_PRESETS = ("a_pose", "t_pose", "standing", "walking", "running", "sitting", "waving", "contrapposto")


def joint_selection(body) -> list[int]:
    index = {n: i for i, n in enumerate(body.joint_names)}
    return [index[SMPLX_TO_ANNY[n][0]] for n in SMPLX_JOINT_NAMES[:22]]


def camera_frame(joints: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    j = joints @ rotation.T
    return j - j[0]


def aligned_errors(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float, float]:
    """Mean joint errors (mm) of root-aligned joints ``[22, 3]``: as they are (MPJPE), after the
    best uniform scale (S-MPJPE: the body's size is ambiguous in one photo), and after the best
    similarity transform (PA-MPJPE, Procrustes)."""
    pred, gt = pred.double(), gt.double()
    mpjpe = (pred - gt).norm(dim=-1).mean()
    s = (pred * gt).sum() / pred.square().sum().clamp_min(1e-12)
    smpjpe = (s * pred - gt).norm(dim=-1).mean()
    mp, mg = pred.mean(0), gt.mean(0)
    a, b = pred - mp, gt - mg
    u, sig, vt = torch.linalg.svd(a.T @ b)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.diag(torch.tensor([1.0, 1.0, float(d)], dtype=a.dtype))
    rot = u @ fix @ vt
    scale = (sig * torch.diag(fix)).sum() / a.square().sum().clamp_min(1e-12)
    pa = (scale * a @ rot + mg - gt).norm(dim=-1).mean()
    return float(mpjpe * 1000), float(smpjpe * 1000), float(pa * 1000)


def angle_error_deg(a: SMPLXPose, b: SMPLXPose) -> float:
    return float(torch.rad2deg(roma.rotvec_geodesic_distance(a.body_pose[0].double(), b.body_pose[0].double())).mean())


POPULATIONS = ("adults", "uniform")
# Adult standing heights (m) of the "adults" population: a normal distribution whose mean goes from
# women's to men's with anny's gender phenotype (0 to 1), with the spread of one sex. Round numbers of
# the size of the measured national averages (e.g. about 1.62-1.65 m for women and 1.75-1.78 m for men in
# Europe and North America); what matters here is a realistic spread, not a country.
ADULT_HEIGHT_M = (1.63, 1.77)  # mean at gender 0 and at gender 1
ADULT_HEIGHT_SD_M = 0.07


def body_height_m(body, shape: torch.Tensor) -> float:
    """Standing height of the rest body (top of the head to the soles), metres."""
    v, _ = body.rest(shape)
    return float(v[0, :, 1].max() - v[0, :, 1].min())


def with_height(body, shape: torch.Tensor, target_m: float, steps: int = 14) -> torch.Tensor:
    """``shape [1, 6]`` with anny's height phenotype set (bisection) so the body is ``target_m`` tall
    (clamped to what the other phenotypes allow)."""
    from sigman.body.anny_body import PHENOTYPE_LABELS

    k = PHENOTYPE_LABELS.index("height")
    lo, hi = 0.0, 1.0
    out = shape.clone()
    for _ in range(steps):
        out[0, k] = 0.5 * (lo + hi)
        if body_height_m(body, out) < target_m:
            lo = float(out[0, k])
        else:
            hi = float(out[0, k])
    out[0, k] = 0.5 * (lo + hi)
    return out


class Scene:
    """Paints and renders one anny body (sampled shape and clothes) in any pose and camera.

    ``population``: ``"adults"`` (default) draws each body's height from :data:`ADULT_HEIGHT_M` /
    :data:`ADULT_HEIGHT_SD_M` (the other phenotypes as the synthetic data draws them), ``"uniform"``
    keeps the synthetic data's uniform height phenotype (1.1 to 2.3 m tall: wider than people are)."""

    def __init__(self, device: str, seed: int, population: str = "adults") -> None:
        from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator

        if population not in POPULATIONS:
            raise ValueError(f"population must be one of {POPULATIONS}, got {population!r}")
        self.gen = SyntheticGenerator(SyntheticConfig(views=1, render_uv_resolution=192, adult_fraction=1.0),
                                      device=device)
        self.body = self.gen.body
        self.device = device
        self.seed = seed
        self.population = population

    def subject(self, index: int):
        from sigman.body.anny_body import PHENOTYPE_LABELS
        from sigman.data.appearance import paint

        phenotypes, _, appearance = self.gen.sample([index], self.seed)
        shape = phenotypes.to(self.device)
        if self.population == "adults":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            gender = float(shape[0, PHENOTYPE_LABELS.index("gender")])
            mean = ADULT_HEIGHT_M[0] + gender * (ADULT_HEIGHT_M[1] - ADULT_HEIGHT_M[0])
            shape = with_height(self.body, shape, mean + ADULT_HEIGHT_SD_M * float(torch.randn(1, generator=g)))
        rest_v, rest_j = self.body.rest(shape)
        colours = paint(self.gen.features, appearance)
        return shape, rest_v.float(), rest_j.float(), colours

    @torch.no_grad()
    def render(self, subject, pose: SMPLXPose, camera) -> np.ndarray:
        from sigman.gaussians import Gaussians, repose
        from sigman.render import render

        _, rest_v, rest_j, colours = subject
        transforms, _ = self.body.pose_transforms(pose.to(self.device), rest_j)
        canonical = self.gen._canonical_gaussians(rest_v, colours)
        g = repose(canonical, transforms.float())
        g = Gaussians(g.means[0], g.quats[0], g.scales[0], g.opacities[0], g.colors[0])
        out = render(g, camera.to(self.device), background=(1.0, 1.0, 1.0))
        return (out.rgb[0].clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


def centred(body, pose: SMPLXPose, rest_j: torch.Tensor) -> SMPLXPose:
    """``pose`` moved so the body's joints' bounding-box centre is at the origin."""
    _, joints = body.pose_transforms(pose, rest_j)
    c = 0.5 * (joints[0].min(0).values + joints[0].max(0).values)
    out = pose.frame(0)
    out.transl = pose.transl - c.cpu()
    return out


def framing_camera(body, pose: SMPLXPose, rest_j: torch.Tensor, azimuth_deg: float, size: int = 512,
                   fovy_deg: float = 50.0, fill: float = 0.85):
    """A camera at ``azimuth_deg`` whose view the posed body fills to ``fill`` of the image height
    (as in a photo of a person), looking at the joints' bounding-box centre."""
    _, joints = body.pose_transforms(pose, rest_j)
    j = joints[0].cpu()
    extent = float(max(j[:, 1].max() - j[:, 1].min() + 0.3, 0.6))  # joints -> skin: head top, soles
    distance = 0.5 * extent / math.tan(math.radians(fovy_deg) / 2) / fill
    centre = (0.5 * (j.min(0).values + j.max(0).values)).tolist()
    return front_camera(distance, size=(size, size), fovy_deg=fovy_deg, azimuth_deg=azimuth_deg, target=tuple(centre))


def random_poses(count: int, seed: int) -> list[tuple[str, SMPLXPose]]:
    from sigman.data.synthetic import SyntheticConfig, preset_library, sample_pose

    library = preset_library()
    cfg = SyntheticConfig(max_yaw_deg=0.0)
    rng = np.random.default_rng(seed)
    return [(f"random_{i}", SMPLXPose.from_full_pose(sample_pose(rng, library, cfg)[None])) for i in range(count)]


def evaluate(args) -> dict:
    from sigman.person import PersonDetector
    from sigman.presets import resolve_pose

    torch.manual_seed(0)
    scene = Scene(args.device, args.seed, args.population)
    body = scene.body
    sel = joint_selection(body)
    config = FitConfig(silhouette=not args.no_silhouette)
    presets = STATIC_PRESETS if args.poses is None else [n for n in STATIC_PRESETS if n in args.poses]
    poses = [(n, resolve_pose(n).frame(0)) for n in presets] + random_poses(args.random, args.seed)
    # each pose keeps its body whatever the selection (the body of pose k of the full list)
    subjects = [STATIC_PRESETS.index(n) for n in presets] + [len(STATIC_PRESETS) + i for i in range(args.random)]
    views = {k: v for k, v in {"front": 0.0, "side": 90.0}.items() if k in args.views}
    rows = []
    detector = PersonDetector()
    images = {}
    for k, (name, pose) in zip(subjects, poses):
        subject = scene.subject(k)
        shape, rest_v, rest_j, _ = subject
        pose = centred(body, pose, rest_j)
        _, gt = body.pose_transforms(pose.to(args.device), rest_j)
        for view, az in views.items():
            camera = framing_camera(body, pose, rest_j, az)
            gt_cam = camera_frame(gt[0][sel].cpu(), camera.viewmats[0, :3, :3])
            image = scene.render(subject, pose, camera)
            if k < 3:
                images[f"{name}_{view}"] = image
            for source in ("mediapipe", "oracle") if args.oracle else ("mediapipe",):
                if source == "mediapipe":
                    obs = detector.detect(image)
                else:
                    obs = synthetic_observation(body, pose, camera, rest=(rest_v, rest_j))
                if obs is None:
                    rows.append(dict(pose=name, view=view, source=source, detected=False))
                    print(f"{name:14s} {view:5s} {source:9s} no person detected", flush=True)
                    continue
                fit = fit_body(body, obs, config)
                pred = camera_frame(fit.joints[sel], CAMERA_ROTATION)
                mpjpe, smpjpe, pampjpe = aligned_errors(pred, gt_cam)
                ang = angle_error_deg(fit.pose, pose)
                rows.append(dict(pose=name, view=view, source=source, detected=True, mpjpe_mm=mpjpe,
                                 s_mpjpe_mm=smpjpe, pa_mpjpe_mm=pampjpe, angle_deg=ang,
                                 reprojection_px=fit.reprojection_px, fit_seconds=fit.seconds["total"],
                                 height_true=float(shape[0, 4]), height_fit=float(fit.shape[0, 4])))
                print(f"{name:14s} {view:5s} {source:9s} MPJPE {mpjpe:6.1f} mm  S {smpjpe:6.1f}  PA {pampjpe:6.1f}  angle {ang:5.1f} deg  "
                      f"reproj {fit.reprojection_px:4.1f} px  fit {fit.seconds['total']:.1f} s", flush=True)
    detector.close()
    result = {"rows": rows, "summary": summarise(rows), "population": args.population}
    if args.video:
        result["video"] = evaluate_video(scene, args)
    if args.out:
        from PIL import Image

        args.out.mkdir(parents=True, exist_ok=True)
        for key, img in images.items():
            Image.fromarray(img).save(args.out / f"render_{key}.png")
    return result


def summarise(rows: list[dict]) -> dict:
    out = {}
    for view in ("front", "side"):
        for source in ("mediapipe", "oracle"):
            for group in ("presets", "random", "all"):
                sel = [r for r in rows if r["view"] == view and r["source"] == source
                       and (group == "all" or (group == "random") == r["pose"].startswith("random"))]
                if not sel:
                    continue
                ok = [r for r in sel if r["detected"]]
                out[f"{view}/{source}/{group}"] = dict(
                    n=len(sel), detected=len(ok),
                    mpjpe_mm=float(np.mean([r["mpjpe_mm"] for r in ok])) if ok else None,
                    s_mpjpe_mm=float(np.mean([r["s_mpjpe_mm"] for r in ok])) if ok else None,
                    pa_mpjpe_mm=float(np.mean([r["pa_mpjpe_mm"] for r in ok])) if ok else None,
                    angle_deg=float(np.mean([r["angle_deg"] for r in ok])) if ok else None)
    return out


def evaluate_video(scene: Scene, args) -> dict:
    import imageio.v2 as iio

    from sigman.presets import resolve_pose
    from sigman.video_motion import VideoMotionConfig, video_to_motion

    body = scene.body
    sel = joint_selection(body)
    seq = resolve_pose("walk_cycle")
    frames = seq.num_frames * args.video_loops
    subject = scene.subject(1000)
    shape, rest_v, rest_j, _ = subject
    first = centred(body, seq.frame(0), rest_j)
    camera = framing_camera(body, first, rest_j, 20.0, fill=0.75)
    shift = first.transl - seq.frame(0).transl
    path = args.out / "walk_cycle_render.mp4"
    args.out.mkdir(parents=True, exist_ok=True)
    gts = []
    with iio.get_writer(str(path), fps=seq.fps, codec="libx264", quality=8, macro_block_size=16) as writer:
        for i in range(frames):
            pose = seq.frame(i % seq.num_frames)
            pose.transl = pose.transl + shift
            writer.append_data(scene.render(subject, pose, camera))
            _, gt = body.pose_transforms(pose.to(args.device), rest_j)
            gts.append((camera_frame(gt[0][sel].cpu(), camera.viewmats[0, :3, :3]), pose))
    start = time.perf_counter()
    motion = video_to_motion(path, args.out / "walk_cycle_motion.npz", body, VideoMotionConfig(), progress=False)
    seconds = time.perf_counter() - start
    first_fit = next(f for f in motion.fits if f is not None)
    cfg = FitConfig()
    basis = build_shape_basis(body, cfg)
    _, fit_rest_j = basis.rest(first_fit.shape[:, basis.index])
    _, joints = body.pose_transforms(motion.pose, fit_rest_j.expand(motion.num_frames, -1, -1))
    errs, angs = [], []
    for i, (gt_cam, pose) in enumerate(gts):
        pred = camera_frame(joints[i][sel].cpu(), CAMERA_ROTATION)
        errs.append(aligned_errors(pred, gt_cam))
        angs.append(angle_error_deg(motion.pose.frame(i), pose))
    e = np.asarray(errs)
    out = dict(frames=frames, fps=seq.fps, mpjpe_mm=float(e[:, 0].mean()), s_mpjpe_mm=float(e[:, 1].mean()),
               pa_mpjpe_mm=float(e[:, 2].mean()), angle_deg=float(np.mean(angs)),
               lost=motion.lost, seconds=seconds, frames_per_second=frames / seconds, notes=motion.notes)
    print(f"video walk_cycle x{args.video_loops}: {frames} frames MPJPE {out['mpjpe_mm']:.1f} mm  S {out['s_mpjpe_mm']:.1f}  "
          f"PA {out['pa_mpjpe_mm']:.1f}  angle "
          f"{out['angle_deg']:.1f} deg  {out['frames_per_second']:.1f} frames/s end to end (track + fit)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/pose_eval"))
    parser.add_argument("--random", type=int, default=8, help="random poses besides the presets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", default="adults", choices=POPULATIONS,
                        help="body heights: 'adults' (as people are, the default) or 'uniform' (anny's whole "
                             "height range, as the synthetic training data)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-silhouette", action="store_true")
    parser.add_argument("--oracle", action="store_true", help="also fit perfect synthetic landmarks")
    parser.add_argument("--poses", nargs="*", default=None, choices=STATIC_PRESETS,
                        help="only these presets (default: all; --random N adds random poses)")
    parser.add_argument("--views", nargs="*", default=["front", "side"], choices=["front", "side"])
    parser.add_argument("--video", action="store_true", help="also evaluate a rendered walk_cycle video")
    parser.add_argument("--video-loops", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    result = evaluate(args)
    result["seconds"] = time.perf_counter() - start
    result["command"] = " ".join(sys.argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pose_eval.json").write_text(json.dumps(result, indent=1))
    for key, s in result["summary"].items():
        if s["mpjpe_mm"] is not None:
            print(f"{key:28s} n={s['n']:2d} detected={s['detected']:2d}  MPJPE {s['mpjpe_mm']:6.1f} mm  "
                  f"S-MPJPE {s['s_mpjpe_mm']:6.1f}  PA-MPJPE {s['pa_mpjpe_mm']:6.1f}  angle {s['angle_deg']:5.1f} deg")
    print(f"-> {args.out / 'pose_eval.json'} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
