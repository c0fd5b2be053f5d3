"""Noise schedule, DDIM (the release's) and DPM-Solver++(2M) samplers, classifier-free guidance."""

from __future__ import annotations

import math
import pytest
import torch

from sigman.models.dit import DiTConfig, SigmanDiT
from sigman.sampling import (
    VAE_SCALING_FACTOR,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    NoiseSchedule,
    add_noise,
    guidance_scale_at,
    initial_noise,
    sample,
    velocity_target,
)

SHAPE = (2, 4, 8, 8)

# The release's 30 DDIM timesteps (diffusers CogVideoXDDIMScheduler with core/schedule/scheduler_config.json).
RELEASE_DDIM_30 = [999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432,
                   399, 366, 332, 299, 266, 232, 199, 166, 132, 99, 66, 32]


class KnownX0:
    """Returns the exact velocity for a known clean sample: v = α·ε̂ − σ·x₀ with ε̂ = (x − α·x₀)/σ."""

    def __init__(self, x0: torch.Tensor, schedule: NoiseSchedule):
        self.x0, self.schedule = x0, schedule

    def __call__(self, x, t, feats):
        abar = self.schedule.alphas_cumprod[t.cpu()].float().view(-1, 1, 1, 1)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        eps = (x - a * self.x0) / s
        return a * eps - s * self.x0


class GaussianData:
    """The exact v for data x₀ ~ N(μ, diag(sd²)) (posterior mean denoiser); its probability-flow ODE maps
    pure noise z (ᾱ = 0) to μ + sd·z."""

    def __init__(self, mu: torch.Tensor, sd: torch.Tensor, schedule: NoiseSchedule):
        self.mu, self.sd, self.schedule = mu, sd, schedule

    def __call__(self, x, t, feats):
        abar = self.schedule.alphas_cumprod[t.cpu()].float().view(-1, 1, 1, 1)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = self.mu + a * self.sd ** 2 / (a ** 2 * self.sd ** 2 + s ** 2) * (x - a * self.mu)
        return a * (x - a * x0) / s - s * x0


class Recorder:
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, t, f):
        self.batches.append(x.shape[0])
        return self.model(x, t, f)


def tiny_dit(seed: int = 0) -> SigmanDiT:
    cfg = DiTConfig(num_layers=1, num_heads=2, head_dim=8, in_channels=4, out_channels=4, sample_size=8,
                    time_embed_dim=16, condition_channels=6, condition_size=4, condition_patch_size=2)
    model = SigmanDiT(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def features(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- schedule


def test_release_noise_schedule():
    s = NoiseSchedule()
    abar = s.alphas_cumprod
    assert abar.shape == (1000,) and abar.dtype == torch.float64
    assert abar[-1] == 0.0  # zero terminal SNR
    assert math.isclose(float(abar[0]), 1 - 0.00085, rel_tol=1e-12)  # scaled_linear β₀, unchanged by the rescale
    assert (abar[1:] < abar[:-1]).all()
    assert VAE_SCALING_FACTOR == pytest.approx(0.6909, abs=1e-4)


def test_forward_process_identities():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    s = NoiseSchedule()
    xt, v = add_noise(x0, eps, t), velocity_target(x0, eps, t)
    torch.testing.assert_close(xt[2], eps[2])  # t = 999 is pure noise
    torch.testing.assert_close(v[2], -x0[2])
    torch.testing.assert_close(s.x0_from_velocity(xt, v, t), x0, atol=1e-5, rtol=1e-5)


def test_velocity_mse_equals_release_weighted_x0_loss():
    """The release's loss mean(1/(1−ᾱ)·(x̂₀ − x₀)²) is the plain v-MSE."""
    g = torch.Generator().manual_seed(1)
    s = NoiseSchedule()
    x0, eps, v_hat = (torch.randn(4, 4, 6, 6, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([1, 250, 700, 999])
    xt = s.add_noise(x0, eps, t)
    w = (1 / (1 - s.alphas_cumprod[t])).view(-1, 1, 1, 1)
    release = (w * (s.x0_from_velocity(xt, v_hat, t) - x0) ** 2).mean()
    ours = ((v_hat - s.velocity(x0, eps, t)) ** 2).mean()
    torch.testing.assert_close(release, ours)


def test_training_timesteps_uniform_and_seeded():
    s = NoiseSchedule()
    a = s.sample_timesteps(4096, torch.Generator().manual_seed(0))
    b = s.sample_timesteps(4096, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.long and a.min() >= 0 and a.max() <= 999
    assert abs(a.float().mean().item() - 499.5) < 20


# ---------------------------------------------------------------------------------------------- schedulers


def test_ddim_timesteps_match_release():
    sch = DDIMScheduler()
    assert sch.set_timesteps(30).tolist() == RELEASE_DDIM_30
    assert sch.set_timesteps(1).tolist() == [999]
    for n in (10, 48, 61, 103):  # 61 and 103: the release's float arange yields an extra t = −1; dropped
        ts = sch.set_timesteps(n)
        assert len(ts) == n and ts[0] == 999 and (ts[1:] < ts[:-1]).all() and ts[-1] >= 0
    assert sch.set_timesteps(48)[3] == 936  # numpy's float arange rounds 937.4999… down, as the release does


def test_ddim_step_is_release_formula():
    """prev_t = t − T//n, x₀ = α·x − σ·v, x' = (σ'/σ)·x + (α' − α·σ'/σ)·x₀; final ᾱ = 1."""
    s = NoiseSchedule()
    sch = DDIMScheduler(s)
    sch.set_timesteps(30)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    out, x0 = sch.step(v, 966, x)
    a, ap = float(s.alphas_cumprod[966]), float(s.alphas_cumprod[933])  # 966 − 33, not the next timestep 932
    torch.testing.assert_close(x0, a ** 0.5 * x - (1 - a) ** 0.5 * v)
    torch.testing.assert_close(out, ((1 - ap) / (1 - a)) ** 0.5 * x + (ap ** 0.5 - a ** 0.5 * ((1 - ap) / (1 - a)) ** 0.5) * x0)
    last, x0_last = sch.step(v, 32, x)  # 32 − 33 < 0 → ᾱ_prev = 1: the step returns x̂₀
    torch.testing.assert_close(last, x0_last)


def test_dpmpp_timesteps():
    sch = DPMSolverMultistepScheduler()
    ts = sch.set_timesteps(10)
    assert len(ts) == 10 and ts[0] == 999 and ts[1] == 899 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
    with pytest.raises(RuntimeError, match="order of timesteps"):
        sch.step(torch.zeros(1), 500, torch.zeros(1))


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_true_velocity_recovers_x0(sampler):
    s = NoiseSchedule()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    for steps in (30, 50):
        out = sample(KnownX0(x0, s), torch.zeros(2, 1), SHAPE, steps=steps, guidance=1.0, sampler=sampler, seed=0)
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_dpmpp_few_steps_close_to_ddim_many_steps():
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    model = GaussianData(torch.randn(1, 4, 8, 8, generator=g) * 0.5, torch.rand(1, 4, 8, 8, generator=g) * 0.9 + 0.1, s)
    noise = initial_noise(SHAPE, seed=1)
    exact = model.mu + model.sd * noise  # the probability-flow ODE's endpoint
    run = lambda sampler, n: sample(model, torch.zeros(2, 1), SHAPE, steps=n, guidance=1.0, sampler=sampler, latents=noise)
    rms = lambda a, b: (a - b).square().mean().sqrt().item()
    ddim_many, ddim_10 = run("ddim", 1000), run("ddim", 10)
    assert rms(ddim_many, exact) < 0.005
    for n in (10, 15):
        fast = run("dpmpp", n)
        assert rms(fast, ddim_many) < 0.02, n
        assert rms(fast, exact) < rms(ddim_10, exact) / 5, n


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_sampling_deterministic_given_seed(sampler):
    model, feats = tiny_dit(), features()
    a = sample(model, feats, SHAPE, steps=6, sampler=sampler, seed=123)
    b = sample(model, feats, SHAPE, steps=6, sampler=sampler, generator=torch.Generator().manual_seed(123))
    c = sample(model, feats, SHAPE, steps=6, sampler=sampler, seed=124)
    assert a.shape == SHAPE and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_guidance_one_skips_unconditional_and_equals_conditional_pass():
    model, feats = tiny_dit(), features()
    rec = Recorder(model)
    out = sample(rec, feats, SHAPE, steps=5, guidance=1.0, seed=7)
    assert rec.batches == [2] * 5  # conditional batch only

    sch = DDIMScheduler()
    x = initial_noise(SHAPE, seed=7)
    with torch.no_grad():
        for t in sch.set_timesteps(5).tolist():
            x, _ = sch.step(model(x, torch.full((2,), t), feats), t, x)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=1e-6)


def test_cfg_is_one_batched_forward_with_zeroed_uncond():
    model, feats, g = tiny_dit(), features(), 3.5
    rec = Recorder(model)
    out = sample(rec, feats, SHAPE, steps=4, guidance=g, seed=9)
    assert rec.batches == [4] * 4  # [uncond; cond] in one forward of 2B

    sch = DDIMScheduler()
    x = initial_noise(SHAPE, seed=9)
    with torch.no_grad():
        for t in sch.set_timesteps(4).tolist():
            tt = torch.full((2,), t)
            v_u, v_c = model(x, tt, torch.zeros_like(feats)), model(x, tt, feats)
            x, _ = sch.step(v_u + g * (v_c - v_u), t, x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, sample(model, feats, SHAPE, steps=4, guidance=1.0, seed=9))


def test_guidance_schedules():
    assert guidance_scale_at(3.5, "constant", 0, 999, 30) == 3.5
    # The release's formula, verbatim, on the training timestep.
    t, n = 500, 30
    want = 1 + 3.5 * (1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2
    assert guidance_scale_at(3.5, "release-dynamic", 15, t, n) == want
    ramp = [guidance_scale_at(3.5, "cosine", i, 0, 30) for i in range(30)]
    assert ramp[0] == 1.0 and all(b >= a for a, b in zip(ramp, ramp[1:])) and 4.0 < ramp[-1] <= 4.5
    down = [guidance_scale_at(4.0, "linear-down", i, 0, 30) for i in range(30)]
    assert down[0] == 4.0 and down[-1] == 1.0 and all(b < a for a, b in zip(down, down[1:]))
    assert down[15] == pytest.approx(1 + 3.0 * (1 - 15 / 29))
    with pytest.raises(ValueError, match="guidance_schedule"):
        guidance_scale_at(3.5, "linear", 0, 0, 30)
    model, feats = tiny_dit(), features()
    out = sample(model, feats, SHAPE, steps=4, guidance=3.5, guidance_schedule="cosine", seed=0)
    assert torch.isfinite(out).all()


def test_progress_callback_and_errors():
    calls = []
    sample(tiny_dit(), features(), SHAPE, steps=3, seed=0, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(tiny_dit(), features(), SHAPE, steps=3, sampler="euler")
    with pytest.raises(ValueError, match="shape must be"):
        sample(tiny_dit(), features(), (3, 4, 8, 8), steps=3)


def test_bf16_model_weights():
    """A bf16 model gets bf16 inputs; the sampler state stays float32."""
    model, feats = tiny_dit().to(torch.bfloat16), features()
    out = sample(model, feats, SHAPE, steps=3, seed=0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
