"""The batched kinematic-tree helpers against plain per-joint loops."""

import roma
import torch

from sigman.lbs import ancestor_matrix, chain_products, skinning_transforms
from sigman.pose import SMPLX_PARENTS


def random_tree(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, j, (1,), generator=g)) for j in range(1, n)]
    parents[n // 2] = -1  # a second root
    return torch.tensor(parents)


def loop_world_rotations(local: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    out = []
    for j, p in enumerate(parents.tolist()):
        out.append(local[:, j] if p < 0 else out[p] @ local[:, j])
    return torch.stack(out, dim=1)


def test_ancestor_matrix_marks_every_ancestor():
    parents = random_tree(40, seed=1)
    a = ancestor_matrix(parents)
    for j in range(40):
        chain, k = {j}, int(parents[j])
        while k >= 0:
            chain.add(k)
            k = int(parents[k])
        assert set(torch.nonzero(a[j])[:, 0].tolist()) == chain


def test_chain_products_equal_the_per_joint_loop():
    for parents in (torch.tensor(SMPLX_PARENTS), random_tree(64, seed=2)):
        local = roma.rotvec_to_rotmat(torch.randn(3, len(parents), 3, generator=torch.Generator().manual_seed(3),
                                                  dtype=torch.float64))
        torch.testing.assert_close(chain_products(local, parents), loop_world_rotations(local, parents))


def test_skinning_transforms_place_joints_like_the_loop():
    parents = random_tree(30, seed=4)
    g = torch.Generator().manual_seed(5)
    rest = torch.randn(30, 3, generator=g, dtype=torch.float64)
    world = loop_world_rotations(roma.rotvec_to_rotmat(torch.randn(2, 30, 3, generator=g, dtype=torch.float64)),
                                 parents)
    root = torch.randn(2, 3, generator=g, dtype=torch.float64)
    transforms, posed = skinning_transforms(world, rest, parents, root)
    expected = torch.empty_like(posed)
    for j, p in enumerate(parents.tolist()):
        expected[:, j] = root if p < 0 else expected[:, p] + (world[:, p] @ (rest[j] - rest[p]))
    torch.testing.assert_close(posed, expected)
    # each joint's transform carries its own rest position to its posed position
    moved = (transforms[..., :3, :3] @ rest[None, :, :, None])[..., 0] + transforms[..., :3, 3]
    torch.testing.assert_close(moved, expected)
