"""The diffusion noise schedule, samplers and classifier-free guidance for the DiT.

One :class:`NoiseSchedule` serves training and sampling. Its defaults are the SIGMAN release's
scheduler (``core/schedule/scheduler_config.json``, a diffusers ``CogVideoXDDIMScheduler``): 1000
training steps, ``scaled_linear`` betas from 0.00085 to 0.012, SNR shift 1.0 (none), betas rescaled to
zero terminal SNR (``ᾱ[999] = 0``: the last training step is pure noise), v-prediction.

With ``α_t = √ᾱ_t`` and ``σ_t = √(1 − ᾱ_t)``::

    x_t = α_t·x₀ + σ_t·ε            (add_noise)
    v   = α_t·ε  − σ_t·x₀           (velocity_target, what the DiT predicts)
    x₀  = α_t·x_t − σ_t·v,  ε = σ_t·x_t + α_t·v

Samplers (both deterministic):

* ``"ddim"`` (:class:`DDIMScheduler`): the release's sampler, step for step — ``trailing`` timestep
  spacing, and the release's previous-timestep rule ``t − 1000 // steps`` (so for some step counts a
  step lands a little off the next timestep, or the last step stops at ``t = 0`` instead of the clean
  sample, exactly as in the release); 30 steps by default (last step: 32 → clean).
* ``"dpmpp"`` (:class:`DPMSolverMultistepScheduler`): DPM-Solver++(2M), second order multistep in
  log-SNR on the same schedule and the same data prediction; good at 10–15 steps.

The release's pipeline uses guidance 3.5 with batched CFG (``[uncond; cond]`` in one forward, the
unconditional input being zeroed image features) and constant guidance. Its optional dynamic CFG
(diffusers' CogVideoX ``use_dynamic_cfg``) is available as ``guidance_schedule="release-dynamic"``;
``"cosine"`` is the ramp that formula is meant to be (see :func:`guidance_scale_at`).

The DiT sees VAE latents multiplied by :data:`VAE_SCALING_FACTOR`; divide sampled latents by it
before decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

VAE_SCALING_FACTOR = 0.6909025648433997  # release: core/model_config/DiT_DDPM.py, vae_scaling_factor
CONDITION_DROPOUT = 0.05  # release training: image features zeroed with this probability (for CFG)
SAMPLERS = ("ddim", "dpmpp")
GUIDANCE_SCHEDULES = ("constant", "cosine", "release-dynamic", "linear-down")


# ----------------------------------------------------------------------------------------------------
# Noise schedule (training and sampling)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """The release's scheduler config (``prediction_type`` is always v-prediction here)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # or "linear"
    snr_shift_scale: float = 1.0
    rescale_betas_zero_snr: bool = True
    set_alpha_to_one: bool = True  # ᾱ after the last sampling step is 1 (clean)


class NoiseSchedule:
    """``ᾱ_t`` for ``t = 0 … T−1`` (float64) and the forward-process formulas.

    ``t`` arguments are integer tensors ``[B]`` (or anything ``torch.as_tensor`` accepts); results
    broadcast over the trailing dimensions of ``x0``.
    """

    def __init__(self, config: Optional[NoiseScheduleConfig] = None):
        self.config = cfg = config or NoiseScheduleConfig()
        n = cfg.num_train_timesteps
        if cfg.beta_schedule == "scaled_linear":
            betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float64) ** 2
        elif cfg.beta_schedule == "linear":
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
        else:
            raise ValueError(f"unknown beta_schedule {cfg.beta_schedule!r}; use 'scaled_linear' or 'linear'")
        abar = torch.cumprod(1.0 - betas, dim=0)
        abar = abar / (cfg.snr_shift_scale + (1 - cfg.snr_shift_scale) * abar)  # SNR / snr_shift_scale
        if cfg.rescale_betas_zero_snr:  # Lin et al. 2023, Algorithm 1: shift √ᾱ so its last value is 0
            s = abar.sqrt()
            s0, sT = s[0].clone(), s[-1].clone()
            abar = ((s - sT) * (s0 / (s0 - sT))) ** 2
        self.alphas_cumprod: Tensor = abar  # [T] float64
        self.final_alpha_cumprod = 1.0 if cfg.set_alpha_to_one else float(abar[0])

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def alpha_bar(self, t: int) -> float:
        """``ᾱ_t`` as a float; ``t < 0`` means "after the last step" (``final_alpha_cumprod``)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    def _coefs(self, t: Union[Tensor, int], like: Tensor) -> Tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        abar = self.alphas_cumprod[t].to(device=like.device, dtype=like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Union[Tensor, int]) -> Tensor:
        """``x_t = α_t·x₀ + σ_t·ε``; ``x0, noise [B, ...]``, ``t [B]``."""
        a, s = self._coefs(t, x0)
        return a * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Union[Tensor, int]) -> Tensor:
        """The v-prediction target ``v = α_t·ε − σ_t·x₀``."""
        a, s = self._coefs(t, x0)
        return a * noise - s * x0

    def x0_from_velocity(self, x_t: Tensor, v: Tensor, t: Union[Tensor, int]) -> Tensor:
        """``x₀ = α_t·x_t − σ_t·v``."""
        a, s = self._coefs(t, x_t)
        return a * x_t - s * v

    def sample_timesteps(self, batch: int, generator: Optional[torch.Generator] = None,
                         device: Optional[torch.device] = None) -> Tensor:
        """Training timesteps, uniform over ``[0, T)`` as in the release: ``[B]`` int64."""
        t = torch.randint(0, self.num_train_timesteps, (batch,), generator=generator,
                          device=generator.device if generator is not None else "cpu")
        return t.to(device) if device is not None else t


def add_noise(x0: Tensor, noise: Tensor, t: Union[Tensor, int], schedule: Optional[NoiseSchedule] = None) -> Tensor:
    """``x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`` on ``schedule`` (default: the release's). ``x0, noise [B, ...]``, ``t [B]``."""
    return (schedule or NoiseSchedule()).add_noise(x0, noise, t)


def velocity_target(x0: Tensor, noise: Tensor, t: Union[Tensor, int],
                    schedule: Optional[NoiseSchedule] = None) -> Tensor:
    """The DiT's training target ``v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀``.

    The release trains on ``mean(w·(x̂₀ − x₀)²)`` with ``x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v̂`` and ``w = 1/(1−ᾱ)``,
    which equals ``mean((v̂ − v)²)``: plain MSE on this target is the same loss.
    """
    return (schedule or NoiseSchedule()).velocity(x0, noise, t)


# ----------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------


class DDIMScheduler:
    """The release's CogVideoX DDIM sampler for v-prediction (deterministic, ``eta = 0``).

    ``set_timesteps(n)`` then, for each ``t`` in ``timesteps``, ``x, x0 = step(v, t, x)``.
    """

    def __init__(self, schedule: Optional[NoiseSchedule] = None):
        self.schedule = schedule or NoiseSchedule()
        self.timesteps: Tensor = torch.arange(self.schedule.num_train_timesteps - 1, -1, -1)
        self.num_inference_steps: Optional[int] = None

    def set_timesteps(self, num_inference_steps: int) -> Tensor:
        """``trailing`` spacing: ``round(T − i·T/n) − 1`` for ``i = 0 … n−1`` (starts at ``T − 1``)."""
        T = self.schedule.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be in [1, {T}], got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        # numpy's float arange, as the release computes it (its rounding of the .5 cases differs from T - i·T/n).
        # For a few n (61, 103, ...) float error adds an (n+1)-th value that rounds to t = -1, which the
        # release would then index as ᾱ[-1]; it is dropped here.
        ts = np.round(np.arange(T, 0, -T / num_inference_steps)).astype(np.int64) - 1
        ts = ts[ts >= 0]
        self.timesteps = torch.from_numpy(ts)
        return self.timesteps

    def step(self, model_output: Tensor, timestep: Union[int, Tensor], sample: Tensor) -> Tuple[Tensor, Tensor]:
        """One DDIM step. ``model_output`` is ``v [B, ...]``; returns ``(x_prev, x0_pred)``."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(n) before step()")
        t = int(timestep)
        prev_t = t - self.schedule.num_train_timesteps // self.num_inference_steps  # the release's rule
        abar_t, abar_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(prev_t)
        x0 = abar_t ** 0.5 * sample - (1 - abar_t) ** 0.5 * model_output
        a = ((1 - abar_prev) / (1 - abar_t)) ** 0.5
        b = abar_prev ** 0.5 - abar_t ** 0.5 * a
        return a * sample + b * x0, x0


class DPMSolverMultistepScheduler:
    """DPM-Solver++(2M) for v-prediction on a :class:`NoiseSchedule` (deterministic).

    Timesteps: ``T − 1`` (pure noise under the zero-terminal-SNR schedule) followed by ``n − 1`` integer
    timesteps spaced uniformly in log-SNR ``λ = log(α/σ)`` from the second trailing timestep down to
    ``t = 0``; the last step jumps to the clean sample. The first step (from ``λ = −∞``) and the last
    (to ``σ = 0``) are first order; the others use the 2M correction. Written in the exact closed form
    ``x' = (σ'/σ)·x + (α' − σ'·α/σ)·D`` so ``α = 0`` and ``σ' = 0`` need no special cases.
    """

    def __init__(self, schedule: Optional[NoiseSchedule] = None):
        self.schedule = schedule or NoiseSchedule()
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)
        self.num_inference_steps: Optional[int] = None
        self._step_index = 0
        self._prev_x0: Optional[Tensor] = None
        self._prev_lambda: Optional[float] = None

    def set_timesteps(self, num_inference_steps: int) -> Tensor:
        T = self.schedule.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be in [1, {T}], got {num_inference_steps}")
        self.num_inference_steps = n = num_inference_steps
        ts: List[int] = [T - 1]
        if n > 1:
            lam = torch.tensor([self._lambda(t) for t in range(T - 1)], dtype=torch.float64)  # increasing as t ↓
            t_hi = int(np.round(T - T / n)) - 1  # second trailing timestep
            targets = torch.linspace(float(lam[t_hi]), float(lam[0]), n - 1, dtype=torch.float64)
            for target in targets:  # nearest integer timestep in λ, kept strictly decreasing
                t = int((lam - target).abs().argmin())
                ts.append(min(t, ts[-1] - 1))
            ts = [max(t, 0) for t in ts]
            for i in range(len(ts) - 2, -1, -1):  # repair collisions at the low end
                ts[i] = max(ts[i], ts[i + 1] + 1)
        self.timesteps = torch.tensor(ts, dtype=torch.long)
        self._step_index, self._prev_x0, self._prev_lambda = 0, None, None
        return self.timesteps

    def _alpha_sigma(self, t: int) -> Tuple[float, float]:
        abar = self.schedule.alpha_bar(t)
        return abar ** 0.5, (1 - abar) ** 0.5

    def _lambda(self, t: int) -> float:
        a, s = self._alpha_sigma(t)
        if a == 0.0:
            return -math.inf
        if s == 0.0:
            return math.inf
        return math.log(a) - math.log(s)

    def step(self, model_output: Tensor, timestep: Union[int, Tensor], sample: Tensor) -> Tuple[Tensor, Tensor]:
        """One solver step from ``timestep`` to the next one. ``model_output`` is ``v``; returns
        ``(x_next, x0_pred)``. Steps must follow ``timesteps`` in order."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(n) before step()")
        i = self._step_index
        t = int(timestep)
        if i >= len(self.timesteps) or t != int(self.timesteps[i]):
            raise RuntimeError(f"step() got timestep {t}, expected {self.timesteps.tolist()[i:i + 1]}; "
                               "call steps in the order of timesteps after set_timesteps()")
        t_next = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1
        a, s = self._alpha_sigma(t)
        a_next, s_next = self._alpha_sigma(t_next)
        x0 = a * sample - s * model_output
        lam, lam_next = self._lambda(t), self._lambda(t_next)

        d = x0
        second_order = (self._prev_x0 is not None and math.isfinite(self._prev_lambda) and math.isfinite(lam)
                        and math.isfinite(lam_next))
        if second_order:
            r = (lam - self._prev_lambda) / (lam_next - lam)  # h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * self._prev_x0
        x_next = (s_next / s) * sample + (a_next - s_next * a / s) * d

        self._prev_x0, self._prev_lambda = x0, lam
        self._step_index += 1
        return x_next, x0


def make_scheduler(sampler: str, schedule: Optional[NoiseSchedule] = None):
    """``"ddim"`` → :class:`DDIMScheduler`, ``"dpmpp"`` → :class:`DPMSolverMultistepScheduler`."""
    if sampler == "ddim":
        return DDIMScheduler(schedule)
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler(schedule)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


# ----------------------------------------------------------------------------------------------------
# Guidance and the sampling loop
# ----------------------------------------------------------------------------------------------------


def guidance_scale_at(guidance: float, schedule: str, step_index: int, timestep: int, num_steps: int) -> float:
    """The CFG scale used at one step.

    * ``"constant"``: ``guidance`` (the release's default).
    * ``"release-dynamic"``: the release's/diffusers' CogVideoX ``use_dynamic_cfg`` formula, verbatim:
      ``1 + g·(1 − cos(π·((n − t)/n)⁵))/2`` with ``t`` the *training* timestep (0–999) and ``n`` the step
      count. Since ``(n − t)/n`` is mostly far outside ``[0, 1]``, the scale jumps around in ``[1, 1 + g]``.
    * ``"cosine"``: the ramp that formula intends (CogVideoX's ``DynamicCFG``), on the step fraction
      ``p = i/n``: ``1 + g·(1 − cos(π·p⁵))/2`` — about 1 for the early steps, rising to ``1 + g``.
    * ``"linear-down"``: ``g`` at the first (noisiest) step, falling linearly to 1 at the last:
      ``1 + (g − 1)·(1 − i/(n − 1))``. Guidance where the colours and the layout are decided, little
      where the detail is (strong guidance late over-sharpens and shifts colours).
    """
    if schedule == "constant":
        return float(guidance)
    if schedule == "release-dynamic":
        return 1 + guidance * (1 - math.cos(math.pi * ((num_steps - timestep) / num_steps) ** 5.0)) / 2
    if schedule == "cosine":
        return 1 + guidance * (1 - math.cos(math.pi * (step_index / num_steps) ** 5.0)) / 2
    if schedule == "linear-down":
        return 1 + (guidance - 1) * (1 - step_index / max(num_steps - 1, 1))
    raise ValueError(f"unknown guidance_schedule {schedule!r}; choose one of {GUIDANCE_SCHEDULES}")


def _model_dtype(model: Callable) -> Optional[torch.dtype]:
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        if p is not None and p.is_floating_point():
            return p.dtype
    return None


def initial_noise(shape: Sequence[int], generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                  device: Optional[torch.device] = None) -> Tensor:
    """Standard normal latents ``shape`` in float32, drawn on the generator's device (CPU by default,
    so a seed gives the same noise on every machine) and moved to ``device``."""
    if generator is None and seed is not None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32).to(device)


@torch.no_grad()
def sample(
    model: Callable[[Tensor, Tensor, Tensor], Tensor],
    image_features: Tensor,
    shape: Sequence[int],
    steps: int = 30,
    guidance: float = 3.5,
    sampler: str = "ddim",
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    guidance_schedule: str = "constant",
    schedule: Optional[NoiseSchedule] = None,
    latents: Optional[Tensor] = None,
    batch_cfg: bool = True,
) -> Tensor:
    """Generate latents with classifier-free guidance.

    Args:
        model: ``model(latents [B, C, H, W], timesteps [B], image_features [B, C_cond, h, w]) -> v``, e.g. a
            :class:`sigman.models.dit.SigmanDiT`.
        image_features: ``[B, C_cond, h, w]``; the unconditional branch uses zeros of the same shape.
        shape: latent shape ``(B, C, H, W)``.
        steps: number of model evaluations (× 2 batch with CFG).
        guidance: CFG scale ``g``: ``v = v_u + g·(v_c − v_u)``. With ``g ≤ 1`` and a constant schedule
            the unconditional pass is skipped and the result is the conditional-only sample.
        sampler: ``"ddim"`` (the release's) or ``"dpmpp"`` (DPM-Solver++(2M), for ≤ 15 steps).
        generator, seed: randomness of the initial noise (see :func:`initial_noise`); ignored when
            ``latents`` is given. Deterministic given either.
        progress: called as ``progress(step, total)`` after each step (``step`` from 1).
        guidance_schedule: see :func:`guidance_scale_at`.
        schedule: the noise schedule (default: the release's).
        latents: optional initial noise ``shape``.
        batch_cfg: ``True`` (default): unconditional and conditional inputs in one forward of batch
            ``2B``; ``False``: two forwards of batch ``B`` (less memory; the same result up to rounding).
    Returns:
        ``[B, C, H, W]`` float32 latents in the DiT's space (divide by :data:`VAE_SCALING_FACTOR` for the VAE).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or image_features.shape[0] != shape[0]:
        raise ValueError(f"shape must be (B, C, H, W) with B = image_features.shape[0] = {image_features.shape[0]}, "
                         f"got {shape}")
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance_schedule {guidance_schedule!r}; choose one of {GUIDANCE_SCHEDULES}")
    device = image_features.device
    dtype = _model_dtype(model) or image_features.dtype
    scheduler = make_scheduler(sampler, schedule)
    timesteps = scheduler.set_timesteps(steps)

    x = initial_noise(shape, generator, seed, device) if latents is None else latents.to(device, torch.float32)
    if tuple(x.shape) != shape:
        raise ValueError(f"latents must have shape {shape}, got {tuple(x.shape)}")
    # Skip the unconditional pass when guidance can never exceed 1 (the release's `guidance_scale > 1`).
    use_cfg = guidance > 1.0 or (guidance_schedule != "constant" and guidance > 0.0)
    feats = image_features.to(dtype)
    uncond = torch.zeros_like(feats) if use_cfg else None
    batched = use_cfg and batch_cfg
    if batched:
        feats = torch.cat([uncond, feats])  # [uncond; cond], one forward of batch 2B

    total = len(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x_in = torch.cat([x, x]) if batched else x
        t_in = torch.full((x_in.shape[0],), t, device=device, dtype=torch.long)
        v = model(x_in.to(dtype), t_in, feats).float()
        if use_cfg:
            if batched:
                v_uncond, v_cond = v.chunk(2)
            else:
                v_uncond, v_cond = model(x_in.to(dtype), t_in, uncond).float(), v
            g = guidance_scale_at(guidance, guidance_schedule, i, t, total)
            v = v_uncond + g * (v_cond - v_uncond)
        x, _ = scheduler.step(v, t, x)
        if progress is not None:
            progress(i + 1, total)
    return x
