"""Train the image-conditioned DiT and the demo image encoder jointly on latents of a frozen VAE.

    accelerate launch --config_file train/accelerate_config.yaml train/train_dit.py dit_demo \
        --data data/synth --vae runs/vae_demo --workspace runs/dit_demo --batch_size 64 --steps 100000
    # continue exactly where the last checkpoint left off:
    accelerate launch ... train/train_dit.py dit_demo --data data/synth --vae runs/vae_demo --workspace runs/dit_demo --resume
    # no stored data: streamed subjects, encoded on the fly into a pool on the device
    accelerate launch ... train/train_dit.py dit_demo --stream --shape-bank bank.npz --val_data data/heldout \
        --vae runs/vae_stream --workspace runs/dit_stream --stream_pool 1024 --stream_refresh 4 --time_limit 8

Before the first step every training item is encoded once by the frozen VAE (posterior mean of its
fixed front-orbit input views + partial UV texture); the latents and the items' condition images (the
front view, cropped and centred) are kept in memory (on the device by default) and cached in
``<workspace>/latents/`` so a resumed run skips the encoding. With several processes each encodes a
share and the shares are gathered. A training step is then pure tensor work:

    x0 = latent * latent_scaling_factor,  t ~ U{0..999},  eps ~ N(0, I)
    x_t = add_noise(x0, eps, t),  v = velocity_target(x0, eps, t)          (the release's schedule)
    features = image_encoder(condition) zeroed with probability CONDITION_DROPOUT (for CFG)
    loss = || DiT(x_t, t, features) - v ||^2

With ``--stream`` there is no stored data: subjects come from :class:`sigman.data.stream.SyntheticStream`
(DiT layout: input views + UV texture for the VAE, the condition photo), are encoded by the frozen VAE
as above and kept in a :class:`LatentPool` of ``stream_pool`` entries on the device, of which
``stream_refresh`` are replaced by new subjects every step (its docstring gives the rule that makes
the pool, and so ``--resume``, a pure function of the step). ``latent_scaling_factor`` is then
``1 / std`` of the first pool. Evaluation uses ``--val_data``'s items, else fixed stream items.

``latent_scaling_factor`` is ``1 / std`` of the training latents (``--auto_latent_scaling``, default)
or the VAE config's; ``train/export_demo.py`` writes it into the pipeline's VAE config. The DiT and
the encoder are averaged (EMA) for evaluation and export. Evaluation samples a few validation items
with DDIM (``--eval_steps``) from the EMA model and reports the MSE to their true latents.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from sigman.models.dit import DIT_CONFIGS, DiTConfig, SigmanDiT, dit_config  # noqa: E402
from sigman.models.image_encoder import build_image_encoder  # noqa: E402
from sigman.models.vae import UV_MAP_CHANNELS, SigmanVAE, VAEConfig, make_view_input  # noqa: E402
from sigman.render import image_grid  # noqa: E402
from sigman.sampling import CONDITION_DROPOUT, NoiseSchedule, add_noise, sample, velocity_target  # noqa: E402
from train import checkpoint as ckpt  # noqa: E402
from train.latents import encode_dataset, load_trained_vae  # noqa: E402,F401 - the tests call train_dit.load_trained_vae
from train.common import (  # noqa: E402
    Deadline,
    EMA,
    Logger,
    StreamBatchSampler,
    Throughput,
    add_config_arguments,
    add_run_arguments,
    config_from_args,
    config_to_json,
    cosine_schedule,
    deterministic_algorithms,
    mixed_precision_for,
    step_generator,
)


@dataclass
class DiTTrainConfig:
    name: str = "dit_demo"
    # --- data ---
    data: str = "data/synth"  # folder holding train.npy and val.npy (seed layout)
    shape_bank: Optional[str] = None  # accepted like train_vae.py's; the DiT needs no body shapes
    num_workers: int = 8  # for the one-off encoding pass
    stream: bool = False  # subjects generated on the device (sigman.data.stream), encoded on the fly, into a pool
    val_data: Optional[str] = None  # a seed-layout folder whose val.npy evaluates (default: --data's; stream: fixed stream items)
    stream_pool: int = 1024  # latents + condition images kept on the device
    stream_refresh: int = 4  # pool entries replaced by fresh subjects every step
    stream_overrides: dict = field(default_factory=dict)  # StreamConfig fields
    synthetic_overrides: dict = field(default_factory=dict)  # SyntheticConfig fields of the stream's generator
    # --- models ---
    vae: str = "runs/vae_demo"  # frozen VAE: a VAE checkpoint folder or a train_vae.py workspace (latest)
    dit: str = "demo"  # a name in DIT_CONFIGS
    # The demo DiT (width 384) is 35 MiB even in fp16; width 256 with a 128-wide time embedding keeps the
    # exported transformer.safetensors under 16 MiB (fp16). Pass --dit_overrides '{}' for the full demo.
    dit_overrides: dict = field(default_factory=lambda: {"num_heads": 4, "time_embed_dim": 128})
    image_encoder: str = "demo"  # a DemoImageEncoder config, trained jointly
    auto_latent_scaling: bool = True  # latent_scaling_factor = 1 / std of the training latents
    init_weights: Optional[str] = None  # start from a model folder's transformer + image_encoder .safetensors
    # --- optimisation ---
    steps: int = 100_000
    batch_size: int = 64  # per process
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mixed_precision: str = "bf16"  # "no" | "bf16" | "fp16" (CUDA only)
    gradient_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on the CPU
    condition_dropout: float = CONDITION_DROPOUT
    ema_decay: float = 0.9995
    cache_on_device: bool = True  # keep all latents + condition images on the GPU
    encode_batch_size: int = 16
    # --- bookkeeping ---
    workspace: str = "runs/dit_demo"
    log_every: int = 50
    eval_every: int = 2000
    eval_items: int = 8
    eval_steps: int = 10  # DDIM steps of the evaluation samples
    eval_guidance: float = 3.5
    ckpt_every: int = 2000
    keep_checkpoints: int = 3


TINY_DIT = dict(num_layers=1, num_heads=2, head_dim=16, sample_size=4, time_embed_dim=32, condition_channels=32,
                condition_size=16, condition_patch_size=2)

CONFIGS: dict[str, DiTTrainConfig] = {
    "dit_demo": DiTTrainConfig(),
    "dit_tiny": DiTTrainConfig(
        name="dit_tiny", num_workers=0, vae="runs/vae_tiny", dit_overrides=TINY_DIT, image_encoder="tiny",
        steps=4, batch_size=2, lr=1e-3, warmup_steps=1, mixed_precision="no", deterministic=True, ema_decay=0.9,
        encode_batch_size=2, workspace="runs/dit_tiny", log_every=1, eval_every=4, eval_items=1, eval_steps=2,
        ckpt_every=2, keep_checkpoints=2, stream_pool=4, stream_refresh=1,
        stream_overrides=dict(render_size=32, projection_views=4, condition_render_size=64),
        synthetic_overrides=dict(render_uv_resolution=32, projection=dict(zbuffer_size=32)),
    ),
}


# --- the trained module -----------------------------------------------------------------------------------

def load_init_weights(model: "Denoiser", folder: str) -> None:
    """Load a model folder's ``transformer.safetensors`` and ``image_encoder.safetensors`` (the layout of
    ``SigmanPipeline.save_pretrained``, e.g. the shipped demo weights) into ``model``; strict key /
    shape check, float16 files are widened."""
    from sigman.pipeline import DIT_FILE, ENCODER_FILE
    from sigman.weights import WeightsError, load_weights

    root = Path(folder)
    try:
        load_weights(model.dit, root / DIT_FILE)
        load_weights(model.encoder, root / ENCODER_FILE)
    except WeightsError as err:
        raise SystemExit(f"--init_weights: {err}") from err


class Denoiser(nn.Module):
    """Image encoder + DiT as one module (one DDP wrapper, one optimizer, one EMA)."""

    def __init__(self, dit: SigmanDiT, encoder: nn.Module) -> None:
        super().__init__()
        self.dit = dit
        self.encoder = encoder

    def forward(self, noisy: Tensor, timesteps: Tensor, images: Tensor, keep: Tensor) -> Tensor:
        """``noisy [B, C, h, w]``, ``timesteps [B]``, condition ``images [B, 3, S, S]`` in [0, 1],
        ``keep [B]`` bool (False: the image features are zeroed, the unconditional branch of CFG)."""
        features = self.encoder(images)
        features = features * keep.to(features.dtype).view(-1, 1, 1, 1)
        return self.dit(noisy, timesteps, features)


def check_compatible(dit_cfg: DiTConfig, vae_cfg: VAEConfig, encoder) -> None:
    problems = []
    if dit_cfg.in_channels != vae_cfg.latent_channels or dit_cfg.out_channels != vae_cfg.latent_channels:
        problems.append(f"DiT in/out channels {dit_cfg.in_channels}/{dit_cfg.out_channels} != VAE latent channels "
                        f"{vae_cfg.latent_channels}")
    if dit_cfg.sample_size != vae_cfg.latent_size:
        problems.append(f"DiT sample_size {dit_cfg.sample_size} != VAE latent_size {vae_cfg.latent_size}")
    if dit_cfg.condition_channels != encoder.out_channels or dit_cfg.condition_size != encoder.out_size:
        problems.append(f"DiT condition {dit_cfg.condition_channels}x{dit_cfg.condition_size}^2 != image encoder "
                        f"output {encoder.out_channels}x{encoder.out_size}^2")
    if problems:
        raise SystemExit("the DiT does not fit the VAE / image encoder: " + "; ".join(problems)
                         + " (fix --dit_overrides or the configs)")


@torch.no_grad()
def evaluate(cfg: DiTTrainConfig, accelerator, ema: nn.Module, vae: SigmanVAE, latents: Tensor, conditions: Tensor,
             scale: float, logger: Logger, step: int) -> dict[str, float]:
    """DDIM samples of the EMA model for the val items: MSE to their true (scaled) latents, with and
    without guidance, and a picture of the decoded UV colours (true above, sampled below)."""
    device = accelerator.device
    x0 = latents.to(device).float() * scale
    images = conditions.to(device).float() / 255
    metrics = {}
    with accelerator.autocast():
        features = ema.encoder(images)
        for name, g in (("latent_mse", cfg.eval_guidance), ("latent_mse_noguide", 1.0)):
            sampled = sample(ema.dit, features, tuple(x0.shape), steps=cfg.eval_steps, guidance=g, sampler="ddim",
                             seed=cfg.seed)
            metrics[name] = float((sampled.float() - x0).square().mean())
            if name == "latent_mse":
                guided = sampled
        rgb = UV_MAP_CHANNELS["rgb"]
        k = min(4, x0.shape[0])
        true_uv = vae.decode(x0[:k] / scale)[:, rgb].float()
        sampled_uv = vae.decode(guided[:k].float() / scale)[:, rgb].float()
    metrics["latent_var"] = float(x0.var())
    logger.scalars(step, metrics, prefix="eval")
    picture = image_grid(torch.cat([true_uv, sampled_uv]).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy(), ncols=k)
    logger.image(step, "eval_uv_rgb", picture)
    return metrics


# --- the streamed latent pool ---------------------------------------------------------------------------

@torch.no_grad()
def encode_batches(vae: SigmanVAE, batches) -> tuple[Tensor, Tensor]:
    """Posterior means ``[n, C, h, w]`` (float32, unscaled) and condition images ``[n, 3, S, S]`` (uint8)
    of streamed batches, as :func:`train.latents.encode_items` makes them (on the batches' device)."""
    latents, conditions = [], []
    for batch in batches:
        views = make_view_input(batch["input_rgb"], batch["input_viewmats"], batch["input_Ks"])
        mean, _ = vae.encode(views, batch["uv_texture"])
        latents.append(mean.float())
        conditions.append((batch["condition"] * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(latents), torch.cat(conditions)


class LatentPool:
    """``size`` streamed subjects' latents + condition images on the device; ``refresh`` of them are
    replaced by new subjects every step.

    The rule (a pure function of the step, so a resumed run rebuilds the pool exactly): subjects are
    numbered ``n = 0, 1, 2, ...`` per rank (stream items ``(POOL_KEY, rank, n)``); subject ``n`` lives
    in slot ``n % size``. Before step ``s`` the pool holds subjects ``[N - size, N)`` with
    ``N = size + s * refresh``; step ``s`` first brings in subjects ``[N, N + refresh)``. The step's
    batch is drawn from the pool with replacement by a generator seeded with ``(seed, step, rank)``.
    """

    def __init__(self, stream, vae: SigmanVAE, size: int, refresh: int, rank: int, chunk: int) -> None:
        if size < 1 or not 0 <= refresh <= size:
            raise SystemExit(f"need stream_pool >= 1 and 0 <= stream_refresh <= stream_pool, got {size}, {refresh}")
        self.stream, self.vae, self.size, self.refresh_count, self.rank = stream, vae, size, refresh, rank
        self.chunk = max(1, chunk)
        self.latents: Optional[Tensor] = None
        self.conditions: Optional[Tensor] = None

    def _load(self, subjects: range, upcoming: Optional[range] = None) -> None:
        """Bring ``subjects`` in; ``upcoming``: the next call's, sampled ahead (one chunk only)."""
        from sigman.data.stream import POOL_KEY

        keys = [(POOL_KEY, self.rank, n) for n in subjects]
        ahead = None if upcoming is None or len(keys) > self.chunk else [(POOL_KEY, self.rank, n) for n in upcoming]
        batches = (self.stream.items(keys[i:i + self.chunk], next_keys=ahead) for i in range(0, len(keys), self.chunk))
        lat, cond = encode_batches(self.vae, batches)
        if self.latents is None:
            self.latents = lat.new_zeros(self.size, *lat.shape[1:])
            self.conditions = cond.new_zeros(self.size, *cond.shape[1:])
        slots = torch.tensor([n % self.size for n in subjects], device=lat.device)
        self.latents[slots] = lat
        self.conditions[slots] = cond

    def fill(self, step: int) -> None:
        """The pool as it is before step ``step``."""
        end = self.size + step * self.refresh_count
        self._load(range(end - self.size, end))

    def refresh(self, step: int) -> None:
        """Step ``step``'s new subjects."""
        if self.refresh_count > 0:
            start = self.size + step * self.refresh_count
            n = self.refresh_count
            self._load(range(start, start + n), upcoming=range(start + n, start + 2 * n))

    def draw(self, step: int, batch_size: int, seed: int) -> Tensor:
        """Pool indices ``[batch_size]`` (CPU) of step ``step``."""
        return torch.randint(self.size, (batch_size,), generator=step_generator(seed, step, self.rank, stream=1))

    def scaling_factor(self, accelerator) -> float:
        """``1 / std`` of the pool's latents over all processes."""
        x = self.latents.double()
        stats = torch.stack([x.sum(), x.square().sum(), torch.tensor(float(x.numel()), device=x.device, dtype=x.dtype)])
        if accelerator.num_processes > 1:
            stats = accelerator.reduce(stats.float(), "sum").double()
        mean = stats[0] / stats[2]
        var = (stats[1] - stats[2] * mean * mean) / (stats[2] - 1).clamp_min(1)
        return float(1.0 / var.clamp_min(1e-12).sqrt())


# --- training --------------------------------------------------------------------------------------------

def train(cfg: DiTTrainConfig, resume: Optional[str] = None, stop_at: Optional[int] = None,
          time_limit: Optional[float] = None) -> list[dict]:
    """Run (or continue) a DiT training run. Returns the logged training records (main process).
    ``stop_at`` (a step) and ``time_limit`` (minutes) end the run early with a checkpoint."""
    with deterministic_algorithms(cfg.deterministic):
        return _train(cfg, resume, stop_at, time_limit)


def _train(cfg: DiTTrainConfig, resume: Optional[str], stop_at: Optional[int],
           time_limit: Optional[float]) -> list[dict]:
    from accelerate import Accelerator
    from sigman.body import load_body_model

    accelerator = Accelerator(mixed_precision=mixed_precision_for(cfg.mixed_precision, torch.cuda.is_available()))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    workspace = Path(cfg.workspace)
    ckpt_root = workspace / ckpt.CHECKPOINT_DIR
    logger = Logger(workspace / "logs", enabled=accelerator.is_main_process)
    if accelerator.is_main_process:
        ckpt.clean_incomplete(ckpt_root)
    accelerator.wait_for_everyone()

    # --- frozen VAE and the models ---
    vae, vae_ckpt, vae_sha = load_trained_vae(cfg.vae)
    vae = vae.to(device).eval().requires_grad_(False)
    torch.manual_seed(cfg.seed)
    if cfg.dit not in DIT_CONFIGS:
        raise SystemExit(f"unknown DiT config {cfg.dit!r}; choose one of {sorted(DIT_CONFIGS)}")
    dit_cfg = dit_config(cfg.dit, **cfg.dit_overrides, gradient_checkpointing=cfg.gradient_checkpointing)
    encoder = build_image_encoder(cfg.image_encoder)
    check_compatible(dit_cfg, vae.config, encoder)
    model = Denoiser(SigmanDiT(dit_cfg), encoder)
    if cfg.init_weights and resume is None:
        load_init_weights(model, cfg.init_weights)
        logger.print(f"initialised from {cfg.init_weights}")
    model = model.to(device)
    ema = EMA(model, cfg.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    schedule = NoiseSchedule()

    # --- latents (encoded once, cached), or a stream and its pool ---
    data = Path(cfg.data)
    cond_size = encoder.input_size
    val_root = Path(cfg.val_data) if cfg.val_data else (None if cfg.stream else data)
    if cfg.val_data and not (val_root / "val.npy").is_file():
        raise SystemExit(f"--val_data {val_root}: no val.npy there (a seed-layout folder, e.g. from "
                         "scripts/make_synthetic_data.py --val-fraction 1)")
    stream = pool = None
    if cfg.stream:
        from train.stream_data import make_stream, val_batches

        body = load_body_model("anny")
        stream = make_stream(body, device, cfg.seed, cfg.shape_bank, cfg.synthetic_overrides, cfg.stream_overrides,
                             num_input_views=vae.config.num_views, input_size=vae.config.image_size, num_target_views=0,
                             uv_resolution=vae.config.uv_size, condition_size=cond_size)
        pool = LatentPool(stream, vae, cfg.stream_pool, cfg.stream_refresh, rank, cfg.encode_batch_size)
    else:
        latents, conditions = encode_dataset(accelerator, vae, data / "train.npy", None, cond_size, cfg,
                                             workspace / "latents" / "train.safetensors", vae_sha)
    val_latents = val_conditions = None
    if cfg.eval_items > 0 and accelerator.is_main_process:
        if val_root is not None and (val_root / "val.npy").is_file():
            val_latents, val_conditions = encode_dataset(accelerator, vae, val_root / "val.npy", cfg.eval_items, cond_size,
                                                         cfg, workspace / "latents" / "val.safetensors", vae_sha,
                                                         all_processes=False)
        elif stream is not None and val_root is None:  # fixed stream items
            val_latents, val_conditions = encode_batches(vae, val_batches(stream, cfg.eval_items, cfg.encode_batch_size))
    if val_latents is None and accelerator.is_main_process:
        logger.note_once("eval", "--eval_items 0: evaluation sampling is skipped" if cfg.eval_items <= 0 else
                         f"no {(val_root or data) / 'val.npy'}: evaluation sampling is skipped")
    if stream is None:
        scale = 1.0 / float(latents.float().std()) if cfg.auto_latent_scaling else vae.config.latent_scaling_factor
        if cfg.cache_on_device:
            latents, conditions = latents.to(device), conditions.to(device)

    # --- resume ---
    step = 0
    if resume is not None:
        path = ckpt.latest_checkpoint(ckpt_root) if resume == "latest" else ckpt.resolve_checkpoint(resume)
        if path is None:
            logger.print(f"--resume: no checkpoint in {ckpt_root} yet, starting from scratch")
        else:
            state = ckpt.load_checkpoint(path, modules={"model": model, "ema": ema.model}, optimizers={"optimizer": optimizer},
                                         schedulers={"scheduler": scheduler}, rank=rank)
            step, ema.updates = int(state["step"]), int(state["ema_updates"])
            scale = float(state["latent_scaling_factor"])  # the run's factor, whatever the data say now
            if state.get("vae_sha256") != vae_sha:
                logger.note_once("vae", f"the VAE ({vae_ckpt}) differs from the one this run started with")
            logger.print(f"resumed from {path} at step {step}")
            logger.purge_after(step)
    if pool is not None:
        pool.fill(step)  # the pool as an uninterrupted run has it before step `step`
        if step == 0:
            scale = pool.scaling_factor(accelerator) if cfg.auto_latent_scaling else vae.config.latent_scaling_factor

    model, optimizer = accelerator.prepare(model, optimizer)
    sampler = None if pool is not None else StreamBatchSampler(latents.shape[0], cfg.batch_size, rank, world, cfg.seed,
                                                                start_step=step)

    def save(at: int) -> None:
        ckpt.save_checkpoint(
            ckpt_root, at, modules={"model": accelerator.unwrap_model(model), "ema": ema.model},
            optimizers={"optimizer": optimizer}, schedulers={"scheduler": scheduler},
            state={"kind": "dit", "config": config_to_json(cfg), "dit_config": config_to_json(dit_cfg),
                   "image_encoder": cfg.image_encoder, "latent_scaling_factor": scale, "ema_updates": ema.updates,
                   "vae_checkpoint": str(vae_ckpt), "vae_sha256": vae_sha, "vae_config": config_to_json(vae.config)},
            keep=cfg.keep_checkpoints, rank=rank, world_size=world, barrier=accelerator.wait_for_everyone)

    n_params = sum(p.numel() for p in model.parameters())
    source = (f"a pool of {cfg.stream_pool} streamed subjects ({cfg.stream_refresh} new per step)" if pool is not None
              else f"{latents.shape[0]} train latents")
    logger.print(f"DiT '{cfg.dit}' {cfg.dit_overrides} + encoder '{cfg.image_encoder}' ({n_params / 1e6:.2f}M params), "
                 f"{source} (scale {scale:.4f}), batch {cfg.batch_size} x {world} processes, "
                 f"{cfg.steps} steps, device {device}, mixed precision {accelerator.mixed_precision}")
    history: list[dict] = []
    meter = Throughput(device)
    deadline = Deadline(time_limit, accelerator)
    model.train()
    while step < cfg.steps:
        if pool is not None:
            pool.refresh(step)
            pool_latents, pool_conditions = pool.latents, pool.conditions
            idx = pool.draw(step, cfg.batch_size, cfg.seed).to(device)
        else:
            pool_latents, pool_conditions = latents, conditions
            idx = torch.tensor([i for _, i in sampler.batch(step)], device=latents.device)
        x0 = pool_latents[idx].to(device, non_blocking=True).float() * scale
        images = pool_conditions[idx].to(device, non_blocking=True).float() / 255
        gen = step_generator(cfg.seed, step, rank)  # CPU: the same draws on every machine
        t = schedule.sample_timesteps(x0.shape[0], generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(device, non_blocking=True)
        keep = (torch.rand(x0.shape[0], generator=gen) >= cfg.condition_dropout).to(device)
        noisy = add_noise(x0, noise, t, schedule)
        target = velocity_target(x0, noise, t, schedule)
        pred = model(noisy, t.to(device), images, keep)
        loss = F.mse_loss(pred.float(), target)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(accelerator.unwrap_model(model))
        step += 1
        meter.add(x0.shape[0])

        if step % cfg.log_every == 0 or step == cfg.steps:
            values = accelerator.reduce(torch.stack([loss.detach(), grad_norm.detach().float()]), "mean").tolist()
            rate = meter.rate()
            record = {"loss": values[0], "grad_norm": values[1], "lr": scheduler.get_last_lr()[0],
                      "epoch": sampler.epoch_at(step) if sampler is not None else 0.0, "samples_per_s": rate, "samples_per_s_total": rate * world}
            if accelerator.is_main_process:
                logger.scalars(step, record)
                history.append({"step": step, **record})
                logger.print(f"step {step}/{cfg.steps} loss {values[0]:.4f} lr {record['lr']:.2e} epoch {record['epoch']:.2f} "
                             f"| {rate:.1f} samples/s/process, {rate * world:.1f} samples/s total ({world} processes)")
        if val_latents is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics = evaluate(cfg, accelerator, ema.model, vae, val_latents, val_conditions, scale, logger, step)
            logger.print(f"step {step} eval latent MSE {metrics['latent_mse']:.4f} (guidance {cfg.eval_guidance}), "
                         f"{metrics['latent_mse_noguide']:.4f} (none); latent var {metrics['latent_var']:.3f}")
            meter.rate()
        stopping = (stop_at is not None and step >= stop_at) or deadline.reached(step)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stopping:
            save(step)
        if stopping:
            logger.print(f"stopping at step {step} (--stop_at / --time_limit); continue with --resume")
            break
    logger.close()
    return history


def main(argv: Optional[list[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=sorted(CONFIGS), help="named training config")
    add_config_arguments(parser, DiTTrainConfig)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return train(config_from_args(args, CONFIGS, DiTTrainConfig), resume=args.resume, stop_at=args.stop_at,
                 time_limit=args.time_limit)


if __name__ == "__main__":
    main()
