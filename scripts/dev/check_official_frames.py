"""Compare sigman's folded quaternions with the release's own covariance code.

    python scripts/dev/check_official_frames.py RELEASE_CHECKOUT_OR_GIT_DIR

Runs the release's ``VAE.batch_rodrigues`` (``core/modules/autoencoder.py``) and ``get_covariance``
(``core/gaussians/gs.py``), extracted from its source with ``ast`` (the modules themselves import
CUDA extensions), on random TBN frames, rotations and scales.
"""

import ast
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import roma  # noqa: E402
import torch  # noqa: E402

from sigman.official.frames import fold_rotation, rotvec_to_matrix, tbn_frames  # noqa: E402


def source(checkout: Path, rel: str) -> str:
    if (checkout / rel).is_file():
        return (checkout / rel).read_text()
    return subprocess.run(["git", f"--git-dir={checkout}", "show", f"HEAD:{rel}"], check=True,
                          capture_output=True, text=True).stdout


def functions(text: str, names: set, cls: str = None) -> dict:
    tree = ast.parse(text)
    nodes = tree.body if cls is None else next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    ns = {"torch": torch}
    for node in nodes:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            exec(ast.unparse(node), ns)
    return ns


checkout = Path(sys.argv[1])
rodrigues = functions(source(checkout, "core/modules/autoencoder.py"), {"batch_rodrigues"}, "VAE")["batch_rodrigues"]
cov_ns = functions(source(checkout, "core/gaussians/gs.py"), {"get_covariance", "strip_symmetric", "strip_lowerdiag"})
g = torch.Generator().manual_seed(0)
rotvec = (torch.rand(2000, 3, generator=g) - 0.5) * math.pi
frames = tbn_frames(torch.randn(2000, 3, 3, generator=g), torch.rand(2000, 3, 2, generator=g))
scales = torch.rand(2000, 3, generator=g) * 0.02 + 1e-3
print(f"Rodrigues vs release batch_rodrigues: max |diff| {(rotvec_to_matrix(rotvec) - rodrigues(None, rotvec)).abs().max():.2e}")
release = cov_ns["get_covariance"](scales, torch.bmm(frames, rodrigues(None, rotvec)))
q = fold_rotation(frames, rotvec)
rot = roma.unitquat_to_rotmat(torch.cat([q[:, 1:], q[:, :1]], -1))
ours = rot @ torch.diag_embed(scales.square()) @ rot.transpose(1, 2)
ours = torch.stack([ours[:, 0, 0], ours[:, 0, 1], ours[:, 0, 2], ours[:, 1, 1], ours[:, 1, 2], ours[:, 2, 2]], -1)
print(f"folded quaternion covariance vs release get_covariance: max |diff| {(ours - release).abs().max():.2e} "
      f"(largest entry {release.abs().max():.2e})")
