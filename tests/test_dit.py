"""DiT: shapes (demo, and official on the meta device), the official checkpoint layout, attention
backends and rotary embeddings, gradient checkpointing, bf16 autocast, and a tiny overfit run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sigman.models.attention import (
    JointAttention,
    apply_rotary,
    attention,
    naive_attention,
    rotary_2d_frequencies,
    xformers_available,
)
from sigman.models.dit import DIT_CONFIGS, DiTConfig, SigmanDiT, build_dit, dit_config
from sigman.sampling import NoiseSchedule

FIXTURE = Path(__file__).parent / "fixtures" / "official_dit_keys.txt"

TINY = DiTConfig(num_layers=2, num_heads=2, head_dim=16, sample_size=8, time_embed_dim=32,
                 condition_channels=12, condition_size=8, condition_patch_size=2)


def randomize(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Replace the zero init (which makes the output exactly 0) with small random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = name.endswith("norm.weight") or name.endswith(("norm_q.weight", "norm_k.weight", "norm_final.weight"))
            p.normal_(1.0 if is_norm_scale else 0.0, std, generator=g)
    return model


def tiny_inputs(cfg: DiTConfig, b: int = 2, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, h, w, generator=g)
    f = torch.randn(b, cfg.condition_channels, cfg.condition_size, cfg.condition_size, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, t, f


# ---------------------------------------------------------------------------------------------- shapes


def test_demo_config_forward_shapes():
    cfg = DIT_CONFIGS["demo"]
    model = randomize(SigmanDiT(cfg)).eval()
    x = torch.randn(2, 16, cfg.sample_size, cfg.sample_size)
    f = torch.randn(2, cfg.condition_channels, cfg.condition_size, cfg.condition_size)
    with torch.no_grad():
        out_int = model(x, torch.tensor([0, 999]), f)
        out_float = model(x, torch.tensor([0.0, 999.0]), f)
        out_scalar = model(x, 500, f)
    assert out_int.shape == x.shape and out_scalar.shape == x.shape
    assert torch.isfinite(out_int).all()
    torch.testing.assert_close(out_int, out_float)
    assert 4 <= cfg.num_layers <= 6 and 256 <= cfg.hidden_size <= 384 and cfg.patch_size == 2


def test_non_square_latents_and_features():
    model = randomize(SigmanDiT(TINY)).eval()
    x = torch.randn(1, 16, 8, 12)
    f = torch.randn(1, TINY.condition_channels, 4, 10)
    with torch.no_grad():
        assert model(x, torch.tensor([3]), f).shape == (1, 16, 8, 12)


def test_fresh_model_is_adaln_zero():
    """adaLN-Zero init: every block is the identity and the output projection is zero."""
    model = SigmanDiT(TINY)
    x, t, f = tiny_inputs(TINY)
    assert torch.count_nonzero(model(x, t, f)) == 0


def test_bad_inputs_raise_clear_errors():
    model = SigmanDiT(TINY)
    x, t, f = tiny_inputs(TINY)
    with pytest.raises(ValueError, match="latents must be"):
        model(x[:, :4], t, f)
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(x[..., :7], t, f)
    with pytest.raises(ValueError, match="image_features must be"):
        model(x, t, f[:, :5])
    with pytest.raises(KeyError, match="unknown DiT config"):
        dit_config("huge")


def test_official_config_facts():
    cfg = DIT_CONFIGS["official"]
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.hidden_size) == (30, 32, 64, 2048)
    assert (cfg.in_channels, cfg.out_channels, cfg.patch_size, cfg.sample_size) == (16, 16, 2, 64)
    assert (cfg.condition_channels, cfg.condition_size, cfg.condition_patch_size) == (1536, 64, 4)
    assert (cfg.num_latent_tokens, cfg.num_condition_tokens, cfg.time_embed_dim) == (1024, 256, 512)


def test_official_forward_shape_on_meta():
    cfg = DIT_CONFIGS["official"]
    with torch.device("meta"):
        model = SigmanDiT(cfg)
        x = torch.empty(2, 16, 64, 64)
        f = torch.empty(2, 1536, 64, 64)
        out = model(x, torch.zeros(2, dtype=torch.long), f)
    assert out.shape == (2, 16, 64, 64) and out.device.type == "meta"
    n_params = sum(p.numel() for p in model.parameters())
    assert 1.9e9 < n_params < 2.0e9  # 1.94 B


def _fixture_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in FIXTURE.read_text().splitlines():
        name, shape = line.split()
        keys[name] = tuple(int(s) for s in shape.split(","))
    return keys


def test_official_state_dict_matches_release_layout():
    """Names and shapes equal the release transformer checkpoint (fixture dumped from its DiT3DModel)."""
    with torch.device("meta"):
        model = SigmanDiT(DIT_CONFIGS["official"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = _fixture_keys()
    assert len(want) == 676
    assert sorted(set(want) - set(ours)) == [] and sorted(set(ours) - set(want)) == []
    assert ours == want


def test_state_dict_round_trip_strict():
    a = randomize(SigmanDiT(TINY), seed=1).eval()
    b = SigmanDiT(TINY).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x, t, f = tiny_inputs(TINY)
    with torch.no_grad():
        torch.testing.assert_close(a(x, t, f), b(x, t, f))


# ---------------------------------------------------------------------------------------------- attention


def test_sdpa_matches_naive_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, "sdpa"), naive_attention(q, k, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention(q, k, v, "math"), naive_attention(q, k, v))


def test_joint_attention_backends_agree():
    layer = JointAttention(32, 2, 16)
    g = torch.Generator().manual_seed(0)
    lat, cond = torch.randn(2, 12, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    rope = rotary_2d_frequencies(16, 3, 4)
    ref = JointAttention(32, 2, 16, backend="math")
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        for a, b in zip(layer(lat, cond, rope), ref(lat, cond, rope)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_unknown_or_missing_backend():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, q, q, "flash3")
    if not xformers_available():
        with pytest.raises(RuntimeError, match="xformers is not installed"):
            attention(q, q, q, "xformers")


@pytest.mark.skipif(not xformers_available(), reason="xformers not installed")
def test_xformers_matches_sdpa():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, generator=g).to(device, dtype) for _ in range(3))
    try:
        out = attention(q, k, v, "xformers")
    except (NotImplementedError, ValueError):
        pytest.skip(f"xformers has no kernel for {device}/{dtype}")
    torch.testing.assert_close(out.float(), attention(q, k, v, "sdpa").float(), atol=2e-3, rtol=2e-3)


def test_rotary_layout_and_relative_positions():
    """First half of the channels follows the column, second half the row; pairs share an angle;
    after rotation q·k depends only on the 2-D offset between tokens."""
    cos, sin = rotary_2d_frequencies(8, 3, 5)  # tokens row-major over 3 rows × 5 columns
    assert cos.shape == (15, 8)
    grid_cos = cos.view(3, 5, 8)
    assert torch.equal(grid_cos[0, :, :4], grid_cos[2, :, :4])  # column half: same on every row
    assert torch.equal(grid_cos[:, 0, 4:], grid_cos[:, 3, 4:])  # row half: same on every column
    assert torch.equal(cos[:, 0::2], cos[:, 1::2])
    torch.testing.assert_close(cos[6, :2], torch.cos(torch.tensor([1.0, 1.0])))  # token (1, 1), freq 1

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)
    rq = apply_rotary(q.expand(1, 1, 15, 8), cos, sin)[0, 0].view(3, 5, 8)
    rk = apply_rotary(k.expand(1, 1, 15, 8), cos, sin)[0, 0].view(3, 5, 8)
    d1 = (rq[0, 1] * rk[1, 3]).sum()  # offset (+1, +2)
    d2 = (rq[1, 2] * rk[2, 4]).sum()  # same offset elsewhere
    d3 = (rq[1, 2] * rk[2, 3]).sum()  # another offset
    torch.testing.assert_close(d1, d2)
    assert not torch.allclose(d1, d3)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(3, 5))  # rotations keep the norm


# ---------------------------------------------------------------------------------------------- training


def test_gradient_checkpointing_same_output_and_grads():
    base = randomize(SigmanDiT(TINY), seed=2).train()
    ckpt = SigmanDiT(replace(TINY, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(base.state_dict())
    x, t, f = tiny_inputs(TINY)
    outs = []
    for model in (base, ckpt):
        out = model(x, t, f)
        out.square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), q in zip(base.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_bf16_autocast_cpu():
    model = randomize(SigmanDiT(TINY), seed=3).eval()
    x, t, f = tiny_inputs(TINY)
    with torch.no_grad():
        ref = model(x, t, f)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, f)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_build_dit_overrides():
    model = build_dit("demo", num_layers=1, gradient_checkpointing=True)
    assert len(model.transformer_blocks) == 1 and model.config.gradient_checkpointing
    assert DIT_CONFIGS["demo"].num_layers == 6  # the named config itself is untouched


def test_tiny_overfit_one_sample():
    """~100 Adam steps on one latent drive the v-prediction loss down by a large factor."""
    torch.manual_seed(0)
    cfg = replace(TINY, num_layers=2, num_heads=2, head_dim=32)
    model = SigmanDiT(cfg).train()
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 8, 8, generator=g)
    feats = torch.randn(1, cfg.condition_channels, 8, 8, generator=g)
    noise = torch.randn(4, 16, 8, 8, generator=g)
    t = torch.tensor([50, 300, 600, 900])
    xt = schedule.add_noise(x0.expand(4, -1, -1, -1), noise, t)
    target = schedule.velocity(x0.expand(4, -1, -1, -1), noise, t)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(120):
        loss = (model(xt, t, feats.expand(4, -1, -1, -1)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 50, (losses[0], losses[-1])
