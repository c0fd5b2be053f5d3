import numpy as np
import pytest
import torch

from sigman.uv import build_uv_template, rasterize_uv_layout


def test_coverage_and_determinism(anny_body, tmp_path):
    a = build_uv_template(anny_body, 128, cache=False)
    b = build_uv_template(anny_body, 128, cache=False)
    assert torch.equal(a.texel_index, b.texel_index) and torch.equal(a.barycentric, b.barycentric)
    coverage = a.num_points / 128**2
    assert 0.55 < coverage < 0.7, coverage  # anny's layout covers ~62.6% of the square
    assert torch.all(a.texel_index[1:] > a.texel_index[:-1])  # unique, sorted


def test_cache_round_trip(anny_body, tmp_path):
    fresh = build_uv_template(anny_body, 96, cache_folder=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    cached = build_uv_template(anny_body, 96, cache_folder=tmp_path)
    for name in ("texel_index", "face_index", "barycentric", "positions", "skin_weights"):
        assert torch.equal(getattr(fresh, name), getattr(cached, name))
    next(tmp_path.glob("*.npz")).write_bytes(b"corrupt")
    rebuilt = build_uv_template(anny_body, 96, cache_folder=tmp_path)
    assert torch.equal(rebuilt.texel_index, fresh.texel_index)


def test_texels_lie_in_their_faces(anny_body, uv64):
    t = uv64
    bary = t.barycentric
    assert torch.all(bary >= 0) and torch.allclose(bary.sum(1), torch.ones(len(bary)))
    corners = anny_body.uvs[anny_body.face_uvs[t.face_index]]  # [N, 3, 2]
    uv = (corners * bary[..., None]).sum(1)
    torch.testing.assert_close(uv, t.texel_uv, atol=1e-5, rtol=0)
    # positions are the barycentric blend of the face's vertices; weights are normalised
    verts = anny_body.rest_vertices[anny_body.faces[t.face_index]]
    torch.testing.assert_close(t.positions, (verts * bary[..., None]).sum(1))
    torch.testing.assert_close(t.skin_weights.sum(1), torch.ones(t.num_points))
    torch.testing.assert_close(t.normals.norm(dim=1), torch.ones(t.num_points))


def test_single_triangle_rasterisation_matches_area():
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texel, face, bary = rasterize_uv_layout(uvs, np.array([[0, 1, 2]]), 64)
    assert abs(len(texel) - 64 * 64 / 2) <= 64  # half the square, up to the diagonal
    rows, cols = texel // 64, texel % 64
    assert np.all((cols + 0.5) / 64 + (1 - (rows + 0.5) / 64) <= 1 + 1e-9)  # below the diagonal u + v <= 1


def test_maps_round_trip(uv64):
    values = torch.randn(2, uv64.num_points, 5)
    maps = uv64.to_map(values)
    assert maps.shape == (2, 5, 64, 64)
    torch.testing.assert_close(uv64.from_map(maps), values)
    assert torch.all(maps[:, :, ~uv64.mask] == 0)


def test_resolution_bounds(anny_body):
    with pytest.raises(ValueError, match="UV resolution"):
        build_uv_template(anny_body, 8)


def test_read_npz_cache_returns_none_for_missing_or_corrupt_files(tmp_path):
    from sigman.atomic import atomic_savez, read_npz_cache

    assert read_npz_cache(tmp_path / "missing.npz") is None
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert read_npz_cache(bad) is None
    good = atomic_savez(tmp_path / "good.npz", {"a": np.arange(3)})
    assert np.array_equal(read_npz_cache(good)["a"], np.arange(3))
