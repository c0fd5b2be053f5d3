"""Reposing of the demo avatar on CUDA: the optimized pipeline path and the viewer path (median of 50
after 10 warm-ups). Run from the repository root: python scripts/dev/repose_cuda.py"""
import statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sigman.pipeline import SigmanPipeline
from sigman.presets import waving

try:
    from viewer.skinning import SparseSkin
except ImportError as err:  # the viewer needs viser; the pipeline's rows do not
    SparseSkin = None
    print(f"viewer rows skipped ({err})")

from sigman.pipeline import PipelineConfig
from sigman.paths import default_model_dir
if default_model_dir().is_dir():
    pipe = SigmanPipeline.from_pretrained(device="cuda")
else:  # reposing does not depend on the weights: the demo configuration with random weights
    print("no weights folder: demo configuration with random weights")
    pipe = SigmanPipeline.from_config(PipelineConfig(), device="cuda")
pipe.optimize(compile=False, cuda_graphs=False)
out = pipe("assets/examples/person_00.png", pose="a_pose", num_views=0, steps=4)
canonical, rest = out.canonical, out.rest_joints
pose = waving()
def timed(fn, n=50):
    for _ in range(10): fn()
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, min(ts) * 1e3
print(f"GPU {torch.cuda.get_device_name()} torch {torch.__version__}, {canonical.means.shape[0]} Gaussians")
print("CPU kinematics  %.3f ms (min %.3f)" % timed(lambda: pipe._cpu_body.pose_transforms(pose, rest.cpu())))
print("optimized pose_gaussians (CPU kinematics + fast_repose)  %.3f ms (min %.3f)" % timed(lambda: pipe.pose_gaussians(canonical, rest, pose)))
if SparseSkin is None:
    sys.exit(0)
skin = SparseSkin(canonical.skin_weights).to(torch.device("cuda"))
tr = pipe._cpu_body.pose_transforms(pose, rest.cpu())[0][0].cuda()
print("viewer sparse LBS (transforms given)  %.3f ms (min %.3f)" % timed(lambda: skin.repose(canonical.means, canonical.quats, tr)))
print("viewer path (CPU kinematics + sparse LBS)  %.3f ms (min %.3f)" % timed(lambda: skin.repose(canonical.means, canonical.quats, pipe._cpu_body.pose_transforms(pose, rest.cpu())[0][0].cuda())))
