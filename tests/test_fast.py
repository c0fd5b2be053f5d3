"""sigman.fast: the optimized DiT path computes the same function as the reference model (CPU, tiny
configs; torch.compile is exercised with the code-generation-free "aot_eager" backend)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from sigman.fast import FastDiT, FastOptions, dit_forward_flops, optimize_dit
from sigman.models.dit import DiTConfig, SigmanDiT, dit_config
from sigman.sampling import sample
from tiny_configs import tiny_pipeline_config

TINY = DiTConfig(num_layers=3, num_heads=2, head_dim=16, sample_size=8, time_embed_dim=32,
                 condition_channels=12, condition_size=8, condition_patch_size=2)
EAGER = FastOptions(compile=False, cuda_graphs=False, dtype=torch.float32)


def random_dit(cfg: DiTConfig = TINY, seed: int = 0) -> SigmanDiT:
    """Non-trivial weights (the training init zeroes the modulations and the output)."""
    model = SigmanDiT(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.02 if p.dim() == 1 else p[0].numel() ** -0.5
            p.copy_((1.0 if name.endswith("norm.weight") or "norm_q" in name or "norm_k" in name else 0.0)
                    + torch.randn(p.shape, generator=g) * scale)
    return model


def inputs(cfg: DiTConfig = TINY, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    f = torch.randn(b, cfg.condition_channels, cfg.condition_size, cfg.condition_size, generator=g)
    return x, torch.tensor([999, 17][:b]), f


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("fuse_qkv", [True, False])
def test_fast_equals_reference_in_float32(fuse_qkv):
    ref = random_dit()
    x, t, f = inputs()
    with torch.no_grad():
        want = ref(x, t, f)
    fast = FastDiT(copy.deepcopy(ref), FastOptions(compile=False, dtype=torch.float32, fuse_qkv=fuse_qkv))
    got = fast(x, t, f)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # non-square grids and a scalar timestep go through the same path
    x2 = torch.randn(1, 16, 8, 12)
    f2 = torch.randn(1, 12, 4, 10)
    with torch.no_grad():
        torch.testing.assert_close(fast(x2, 500, f2), ref(x2, 500, f2), atol=1e-5, rtol=1e-5)


def test_fast_bf16_within_bf16_rounding():
    ref = random_dit(seed=1)
    x, t, f = inputs(seed=1)
    with torch.no_grad():
        exact = ref.double()(x.double(), t, f.double())
        ref_bf16 = copy.deepcopy(ref).to(torch.bfloat16)(x.bfloat16(), t, f.bfloat16()).float()
    fast = FastDiT(copy.deepcopy(ref).float(), FastOptions(compile=False, dtype=torch.bfloat16))(x, t, f)
    assert fast.dtype == torch.bfloat16
    err_ref, err_fast = rel(ref_bf16, exact), rel(fast.float(), exact)
    assert err_ref < 3e-2 and err_fast < 3e-2
    assert err_fast < 1.5 * err_ref + 1e-3  # at least as accurate as the plain bf16 model


def test_state_dict_keys_and_values_unchanged_and_weights_shared():
    ref = random_dit(seed=2)
    model = copy.deepcopy(ref)
    fast = FastDiT(model, EAGER)
    sd, want = model.state_dict(), ref.state_dict()
    assert list(sd) == list(want)
    for k in want:
        torch.testing.assert_close(sd[k], want[k], atol=0, rtol=0)
    # in-place loading of other weights reaches the fused q/k/v storage
    other = random_dit(seed=3)
    model.load_state_dict(other.state_dict())
    x, t, f = inputs()
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t, f), other(x, t, f), atol=1e-5, rtol=1e-5)


def test_moved_weights_are_detected():
    model = random_dit()
    fast = FastDiT(model, EAGER)
    model.to(torch.float64)  # parameters replaced: the fused q/k/v storage is stale
    x, t, f = inputs()
    with pytest.raises(RuntimeError, match="build a new FastDiT"):
        fast(x.double(), t, f.double())


def test_compiled_block_is_one_graph_for_all_layers():
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    ref = random_dit(seed=4)
    fast = FastDiT(copy.deepcopy(ref), FastOptions(compile=True, compile_backend="aot_eager", dtype=torch.float32))
    x, t, f = inputs(seed=4)
    with torch.no_grad():
        want = ref(x, t, f)
    for _ in range(2):
        torch.testing.assert_close(fast(x, t, f), want, atol=1e-5, rtol=1e-5)
    assert fast.fallback is None
    assert counters["stats"]["unique_graphs"] == 1  # 3 layers × 2 calls, compiled once


def test_compile_failure_falls_back_to_eager():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    ref = random_dit(seed=5)
    fast = FastDiT(copy.deepcopy(ref), FastOptions(compile=True, compile_backend=broken_backend, dtype=torch.float32))
    x, t, f = inputs(seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fast(x, t, f)
    assert fast.fallback is not None and "no compiler here" in fast.fallback
    assert any("running the fused blocks eagerly" in str(w.message) for w in caught)
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x, t, f), atol=1e-5, rtol=1e-5)


def test_sampling_fast_vs_plain_and_separate_cfg():
    ref = random_dit(seed=6)
    fast = optimize_dit(copy.deepcopy(ref), EAGER)
    feats = inputs(b=1, seed=6)[2]
    shape = (1, 16, 8, 8)
    plain = sample(ref, feats, shape, steps=4, guidance=3.5, seed=0)
    separate = sample(ref, feats, shape, steps=4, guidance=3.5, seed=0, batch_cfg=False)
    optimized = sample(fast, feats, shape, steps=4, guidance=3.5, seed=0)
    torch.testing.assert_close(separate, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(optimized, plain, atol=1e-5, rtol=1e-5)
    few = sample(fast, feats, shape, steps=3, guidance=3.5, seed=0, sampler="dpmpp")
    assert few.shape == shape and torch.isfinite(few).all()


def test_options_resolve_per_device():
    cpu = FastOptions().resolve(torch.device("cpu"), torch.float32)
    assert cpu.compile is False and cpu.cuda_graphs is False and cpu.dtype in (torch.float32, torch.bfloat16)
    cuda = FastOptions().resolve(torch.device("cuda"), torch.float32)
    assert cuda.compile is True and cuda.cuda_graphs is True and cuda.dtype == torch.bfloat16
    small = FastOptions().resolve(torch.device("cuda"), torch.float32, num_params=9_000_000)
    assert small.compile is False and small.cuda_graphs is True  # the demo DiT: graphs only, no compile wait
    assert FastOptions(compile=True).resolve(torch.device("cuda"), torch.float32, num_params=10).compile is True
    graphed = FastOptions(compile_mode="reduce-overhead").resolve(torch.device("cuda"), torch.float32)
    assert graphed.cuda_graphs is False  # the compile mode captures graphs itself
    assert FastOptions(cuda_graphs=True).resolve(torch.device("cpu"), torch.float32).cuda_graphs is False
    with pytest.raises(ValueError, match="compile_mode"):
        FastOptions(compile_mode="fastest").resolve(torch.device("cpu"), torch.float32)


def test_official_flop_count():
    cfg = dit_config("official")
    flops = dit_forward_flops(cfg, batch=2)
    # per block: 24·L·D² (q/k/v, out, MLP 4D) + 4·L²·D (attention), L = 1280 tokens, D = 2048, batch 2
    per_block = 2 * (24 * 1280 * 2048 ** 2 + 4 * 1280 ** 2 * 2048)
    assert abs(flops - 30 * per_block) / flops < 0.01
    assert dit_forward_flops(cfg, batch=4) == 2 * flops


def test_pipeline_optimize(anny_body):
    from sigman.pipeline import SigmanPipeline
    from sigman.presets import resolve_pose

    cfg = tiny_pipeline_config(steps=3, dit_layers=2)
    pipe = SigmanPipeline.from_config(cfg, body=anny_body)
    with torch.no_grad():
        for p in pipe.dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    image = np.full((160, 120, 4), 255, np.uint8)  # a person-like figure, its mask as alpha
    image[..., 3] = 0
    image[20:150, 45:75] = (200, 60, 60, 255)
    image[5:25, 50:70] = (230, 190, 160, 255)
    plain = pipe(image, "a_pose", seed=2, num_views=0)
    assert pipe.optimize(EAGER) is pipe and isinstance(pipe.fast_dit, FastDiT)
    fast = pipe(image, "a_pose", seed=2, num_views=0)
    torch.testing.assert_close(fast.latents, plain.latents, atol=1e-4, rtol=1e-4)
    pipe._cpu_body = copy.deepcopy(pipe.body)  # what optimize() sets up on CUDA: CPU kinematics + fast_repose
    posed = pipe.pose_gaussians(fast.canonical, fast.rest_joints, resolve_pose("waving"))
    pipe._cpu_body = None
    want = pipe.pose_gaussians(fast.canonical, fast.rest_joints, resolve_pose("waving"))
    torch.testing.assert_close(posed.means, want.means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(posed.quats, want.quats, atol=1e-5, rtol=1e-5)
    assert list(pipe.dit.state_dict()) == list(SigmanDiT(pipe.dit.config).state_dict())


def test_fast_repose_matches_repose(anny_body, uv64):
    from sigman.fast import fast_repose
    from sigman.gaussians import repose, surface_gaussians
    from sigman.presets import resolve_pose

    g = surface_gaussians(uv64)
    random_quats = torch.randn(g.quats.shape, generator=torch.Generator().manual_seed(0))
    g = g.with_(quats=torch.nn.functional.normalize(random_quats, dim=-1))
    transforms, _ = anny_body.pose_transforms(resolve_pose("walk_cycle").frame(slice(0, 3)))
    want, got = repose(g, transforms), fast_repose(g, transforms)
    assert got.means.shape == want.means.shape == (3, g.num_gaussians, 3)
    torch.testing.assert_close(got.means, want.means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.quats, want.quats, atol=1e-5, rtol=1e-5)
    assert got.scales.shape == want.scales.shape and got.skin_weights is g.skin_weights


# --- FP8 --------------------------------------------------------------------------------------------

def test_fp8_quantization_rows_and_product():
    from sigman.fast_fp8 import FP8_MAX, fp8_linear, quantize_rows, quantize_weight

    g = torch.Generator().manual_seed(3)
    w = torch.randn(48, 32, generator=g) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different size
    w_fp8, scale = quantize_rows(w)
    assert w_fp8.dtype == torch.float8_e4m3fn and scale.shape == (48, 1)
    assert torch.allclose(w_fp8.float().abs().amax(dim=1), torch.full((48,), FP8_MAX))  # each row uses the range
    assert rel(w_fp8.float() * scale, w) < 0.05  # e4m3 keeps 3 mantissa bits: a few percent
    x = torch.randn(5, 7, 32, generator=g)
    bias = torch.randn(48, generator=g)
    qw, qs = quantize_weight(w)
    assert qs.shape == (1, 48)
    out = fp8_linear(x, qw, qs, bias)
    want = torch.nn.functional.linear(x, w, bias)
    assert out.shape == (5, 7, 48) and 1e-4 < rel(out, want) < 0.08  # quantized, but close
    assert torch.equal(fp8_linear(torch.zeros(2, 32), qw, qs), torch.zeros(2, 48))  # zero rows stay finite


def test_fast_dit_fp8_close_to_float32():
    ref = random_dit(seed=2)
    x, t, f = inputs(seed=2)
    with torch.no_grad():
        want = ref(x, t, f)
    fp8 = FastDiT(copy.deepcopy(ref), FastOptions(compile=False, cuda_graphs=False, dtype=torch.float32, fp8=True))
    plain = FastDiT(copy.deepcopy(ref), EAGER)
    got = fp8(x, t, f)
    assert 1e-4 < rel(got, want) < 0.1  # the FP8 path really quantizes, and stays close
    assert rel(plain(x, t, f), want) < 1e-5
    assert all(w[4].dtype == torch.float8_e4m3fn and len(w) == 28 for w in fp8._weights)
    with pytest.raises(ValueError, match="fused q/k/v"):
        FastDiT(copy.deepcopy(ref), FastOptions(compile=False, dtype=torch.float32, fp8=True, fuse_qkv=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp8_scaled_mm_matches_the_emulated_product():
    from sigman.fast_fp8 import fp8_linear, fp8_matmul_supported, quantize_weight

    device = torch.device("cuda")
    if not fp8_matmul_supported(device):
        pytest.skip("this GPU has no FP8 matmul")
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(256, 128, device=device, generator=g)
    x = torch.randn(64, 128, device=device, generator=g).bfloat16()
    qw, qs = quantize_weight(w)
    fast = fp8_linear(x, qw, qs)
    emulated = ((x.float() / (x.float().abs().amax(-1, keepdim=True) / 448)).clamp(-448, 448)
                .to(torch.float8_e4m3fn).float() * (x.float().abs().amax(-1, keepdim=True) / 448)) @ (qw.float() * qs.reshape(-1, 1)).t()
    assert rel(fast.float(), emulated) < 1e-2
