"""Train SIGMAN's Gaussian VAE on items in the seed layout, rendering its Gaussians at the target views.

    accelerate launch --config_file train/accelerate_config.yaml train/train_vae.py vae_demo \
        --data data/synth --workspace runs/vae_demo --batch_size 8 --steps 50000 --shape-bank bank.npz
    # continue a stopped/killed run exactly where its last checkpoint left it:
    accelerate launch ... train/train_vae.py vae_demo --data data/synth --workspace runs/vae_demo --resume
    # no stored data: new subjects generated on the device every step (sigman.data.stream), validated
    # on a held-out folder (without --val_data: on fixed stream items)
    accelerate launch ... train/train_vae.py vae_demo --stream --shape-bank bank.npz --val_data data/heldout \
        --workspace runs/vae_stream --steps 4000 --time_limit 8

One step, for a batch of items (all on the device, batched except the rasterizer call per item):

1. the input views (ImageNet RGB + Plücker rays, :func:`make_view_input`) and the partial UV texture go
   through the VAE: posterior sample -> UV attribute maps -> per-point attributes at the UV template's
   texels on *this item's* body shape (anny rest vertices of its phenotype);
2. canonical Gaussians (template point + offset, template frame x predicted rotation, ...) are reposed
   with the item's pose by linear blend skinning and rendered (gsplat on CUDA) at the target views;
3. losses against the target images and masks: L1 + MSE, SSIM, LPIPS (when the ``lpips`` package and
   its backbone weights are on the machine), mask (alpha), KL (``kl_weight``, 1e-6), all pixel losses
   weighted ``face_weight`` x inside the projected head region, and an optional hinge patch-GAN loss
   from ``--disc_start``.

With ``--stream`` a batch is ``SyntheticStream.batch(step, rank, batch_size)`` (a pure function of
the seed, step and rank, so ``--resume`` is exact); it carries each item's body (``rest_vertices``,
``rest_joints``), which the step uses instead of the phenotype lookup. ``--stream_overrides`` /
``--synthetic_overrides`` (JSON) set :class:`~sigman.data.stream.StreamConfig` /
:class:`~sigman.data.synthetic.SyntheticConfig` fields.

The decoded Gaussians use the same template points, frames (``quat_from_normals`` of the default
body) and point spacing (``footprints``) as :meth:`sigman.pipeline.SigmanPipeline.decode_gaussians`,
so what is trained here is what the app renders.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from sigman.data.dataset import DatasetConfig, SeedDataset  # noqa: E402
from sigman.models.vae import VAE_CONFIGS, SigmanVAE, VAEConfig, kl_divergence  # noqa: E402
from sigman.render import image_grid  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402
from train import checkpoint as ckpt  # noqa: E402
from train.common import (  # noqa: E402
    Deadline,
    EpochItems,
    Logger,
    StreamBatchSampler,
    Throughput,
    add_config_arguments,
    add_run_arguments,
    config_from_args,
    config_to_json,
    cosine_schedule,
    deterministic_algorithms,
    loader_kwargs,
    mixed_precision_for,
    step_generator,
    to_device,
)
from train.losses import (  # noqa: E402
    PatchDiscriminator,
    build_lpips,
    hinge_d_loss,
    hinge_g_loss,
    lpips_loss,
    psnr,
    ssim,
)
from train.vae_step import GaussianDecoderStep  # noqa: E402


@dataclass
class VAETrainConfig:
    name: str = "vae_demo"
    # --- data ---
    data: str = "data/synth"  # folder holding train.npy and val.npy (seed layout)
    shape_bank: Optional[str] = None  # ShapeBank .npz: body shapes without the anny package
    num_workers: int = 8
    stream: bool = False  # generate subjects on the device every step (sigman.data.stream) instead of --data
    val_data: Optional[str] = None  # a seed-layout folder whose val.npy validates (default: --data's; stream: fixed stream items)
    stream_overrides: dict = field(default_factory=dict)  # StreamConfig fields
    synthetic_overrides: dict = field(default_factory=dict)  # SyntheticConfig fields of the stream's generator
    # --- model ---
    vae: str = "demo"  # a name in VAE_CONFIGS
    vae_overrides: dict = field(default_factory=dict)
    init_weights: Optional[str] = None  # start from these weights (a model folder's autoencoder.safetensors, or the file)
    train_parts: str = "all"  # "all" | "decoder": freeze the encoder, so the latents (and a DiT trained on them) stay valid
    body_model: str = "anny"
    gaussian_uv_resolution: int = 256  # one Gaussian per covered texel (what the pipeline uses)
    render_size: int = 0  # target view size; 0: the VAE config's render_size
    num_target_views: int = 4
    # --- optimisation ---
    steps: int = 50_000
    batch_size: int = 8  # items per process
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mixed_precision: str = "bf16"  # "no" | "bf16" | "fp16" (CUDA only)
    gradient_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on the CPU
    # --- losses ---
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    ssim_weight: float = 0.2
    lpips_weight: float = 0.5  # used only when LPIPS is available offline
    mask_weight: float = 1.0
    kl_weight: Optional[float] = None  # None: the VAE config's kl_weight (1e-6)
    face_weight: float = 3.0  # pixel-loss weight inside the projected head region
    gan_weight: float = 0.05
    disc_start: int = -1  # step at which the patch-GAN loss starts; < 0: no GAN
    disc_lr: float = 1e-4
    # --- bookkeeping ---
    workspace: str = "runs/vae_demo"
    log_every: int = 50
    val_every: int = 1000
    val_items: int = 64  # validation items (all processes together)
    ckpt_every: int = 1000
    keep_checkpoints: int = 3


CONFIGS: dict[str, VAETrainConfig] = {
    # the demo VAE: 4 input views at 128^2, UV 128^2 -> 16 x 16 x 16 latents, renders at 256^2
    "vae_demo": VAETrainConfig(),
    # seconds on a CPU: tests
    "vae_tiny": VAETrainConfig(
        name="vae_tiny", num_workers=0, gaussian_uv_resolution=32, render_size=32, num_target_views=2,
        vae_overrides=dict(num_views=2, image_size=32, uv_size=32, latent_size=4, encoder_channels=[8, 8, 8, 8],
                           decoder_channels=[8, 8, 8, 8], decoder_out_channels=16, norm_groups=4, attention_heads=2,
                           attention_head_dim=8, self_attention_layers=1, render_size=32),
        steps=4, batch_size=2, lr=1e-3, warmup_steps=1, mixed_precision="no", deterministic=True,
        workspace="runs/vae_tiny", log_every=1, val_every=4, val_items=1, ckpt_every=2, keep_checkpoints=2,
        stream_overrides=dict(projection_views=4),
        synthetic_overrides=dict(render_uv_resolution=32, projection=dict(zbuffer_size=32)),
    ),
}


TRAIN_PARTS = ("all", "decoder")
DECODER_PREFIXES = ("autoencoder.decoder.", "decode_gaussian_geo.", "decode_gaussian_rgb.")


def load_init_weights(model: SigmanVAE, source: str) -> None:
    """Load ``source`` (a model folder holding ``autoencoder.safetensors``, or a safetensors file) into
    ``model`` with a strict key / shape check."""
    from sigman.weights import WeightsError, load_weights

    path = Path(source)
    if path.is_dir():
        path = path / "autoencoder.safetensors"
    try:
        load_weights(model, path)
    except WeightsError as err:
        raise SystemExit(f"--init_weights: {err}") from err


def trainable_parameters(model: SigmanVAE, parts: str) -> list[nn.Parameter]:
    """The parameters the optimiser updates; with ``parts="decoder"`` the rest are frozen
    (``requires_grad`` off), so the encoder and the latents it makes do not change."""
    if parts not in TRAIN_PARTS:
        raise SystemExit(f"--train_parts must be one of {TRAIN_PARTS}, got {parts!r}")
    if parts == "all":
        return list(model.parameters())
    trained = []
    for name, param in model.named_parameters():
        keep = name.startswith(DECODER_PREFIXES)
        param.requires_grad_(keep)
        if keep:
            trained.append(param)
    return trained


def vae_config_of(cfg: VAETrainConfig) -> VAEConfig:
    if cfg.vae not in VAE_CONFIGS:
        raise SystemExit(f"unknown VAE config {cfg.vae!r}; choose one of {sorted(VAE_CONFIGS)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.vae_overrides.items()}
    return dataclasses.replace(VAE_CONFIGS[cfg.vae], **overrides, gradient_checkpointing=cfg.gradient_checkpointing)


# --- losses ---------------------------------------------------------------------------------------------



def reconstruction_losses(cfg: VAETrainConfig, out: dict[str, Tensor], batch: dict, kl_weight: float,
                          lpips_model: Optional[nn.Module]) -> tuple[Tensor, dict[str, Tensor]]:
    pred, alpha = out["rgb"].flatten(0, 1), out["alpha"].flatten(0, 1)
    gt, mask = batch["target_rgb"].flatten(0, 1), batch["target_mask"].flatten(0, 1)
    w = 1.0 + (cfg.face_weight - 1.0) * out["face"].flatten(0, 1)  # [BV, 1, S, S]
    diff = pred - gt
    parts = {
        "l1": (w * diff.abs()).mean(),
        "mse": (w * diff.square()).mean(),
        "ssim": 1.0 - ssim(pred, gt, weight=w).mean(),
        "mask": (w * (alpha - mask).abs()).mean(),
        "kl": kl_divergence(out["mean"].float(), out["logvar"].float()).mean(),
    }
    total = (cfg.l1_weight * parts["l1"] + cfg.mse_weight * parts["mse"] + cfg.ssim_weight * parts["ssim"]
             + cfg.mask_weight * parts["mask"] + kl_weight * parts["kl"])
    if lpips_model is not None and cfg.lpips_weight > 0:
        parts["lpips"] = lpips_loss(lpips_model, pred, gt)
        total = total + cfg.lpips_weight * parts["lpips"]
    return total, parts


# --- validation ------------------------------------------------------------------------------------------

@torch.no_grad()
def validate(cfg: VAETrainConfig, accelerator, model: nn.Module, step_fn: GaussianDecoderStep, loader,
             logger: Logger, step: int) -> dict[str, float]:
    """PSNR / SSIM of the posterior-mean reconstruction at the val items' target views (all processes),
    and a picture of the first batch (targets above, renders below)."""
    model.eval()
    sums = torch.zeros(3, device=accelerator.device)  # psnr, ssim, count
    picture = None
    for batch in loader:
        phen = batch["phenotype"]
        batch = to_device(batch, accelerator.device)
        out = step_fn(model, batch, phen, sample_posterior=False)
        pred = out["rgb"].flatten(0, 1).clamp(0, 1)
        gt = batch["target_rgb"].flatten(0, 1)
        sums += torch.stack([psnr(pred, gt).sum(), ssim(pred, gt).sum(), torch.tensor(float(pred.shape[0]), device=sums.device)])
        if picture is None:
            k, v = min(4, out["rgb"].shape[0]), out["rgb"].shape[1]
            rows = [torch.cat([batch["target_rgb"][i], out["rgb"][i].clamp(0, 1)]) for i in range(k)]
            picture = image_grid(torch.cat(rows).permute(0, 2, 3, 1).float().cpu().numpy(), ncols=v)
    sums = accelerator.reduce(sums, "sum")
    model.train()
    metrics = {"psnr": float(sums[0] / sums[2].clamp_min(1)), "ssim": float(sums[1] / sums[2].clamp_min(1))}
    if accelerator.is_main_process:
        logger.scalars(step, metrics, prefix="val")
        if picture is not None:
            logger.image(step, "val_renders", picture)
    return metrics


# --- training --------------------------------------------------------------------------------------------

def train(cfg: VAETrainConfig, resume: Optional[str] = None, stop_at: Optional[int] = None,
          body=None, time_limit: Optional[float] = None) -> list[dict]:
    """Run (or continue) a VAE training run. Returns the logged training records (main process).
    ``body`` (optional) is a body model to use instead of loading ``cfg.body_model``; ``stop_at`` (a
    step) and ``time_limit`` (minutes) end the run early with a checkpoint."""
    with deterministic_algorithms(cfg.deterministic):
        return _train(cfg, resume, stop_at, body, time_limit)


def _train(cfg: VAETrainConfig, resume: Optional[str], stop_at: Optional[int], body,
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

    # --- data ---
    data = Path(cfg.data)
    vae_cfg = vae_config_of(cfg)
    render_size = cfg.render_size or vae_cfg.render_size
    ds_kw = dict(image_size=render_size, num_input_views=vae_cfg.num_views, num_target_views=cfg.num_target_views,
                 condition_size=64, uv_resolution=vae_cfg.uv_size, seed=cfg.seed)
    train_set = sampler = None
    if not cfg.stream:
        train_set = SeedDataset(DatasetConfig(index=data / "train.npy", training=True, **ds_kw))
        sampler = StreamBatchSampler(len(train_set), cfg.batch_size, rank, world, cfg.seed)
    val_root = Path(cfg.val_data) if cfg.val_data else (None if cfg.stream else data)
    if cfg.val_data and not (val_root / "val.npy").is_file():
        raise SystemExit(f"--val_data {val_root}: no val.npy there (a seed-layout folder, e.g. from "
                         "scripts/make_synthetic_data.py --val-fraction 1)")
    val_loader = None
    if val_root is not None and (val_root / "val.npy").is_file() and cfg.val_items > 0:
        val_set = SeedDataset(DatasetConfig(index=val_root / "val.npy", training=False, **ds_kw))
        keys = [(0, i) for i in range(min(cfg.val_items, len(val_set)))][rank::world]
        val_loader = DataLoader(Subset(EpochItems(val_set), keys), batch_size=cfg.batch_size,
                                **loader_kwargs(min(cfg.num_workers, 2), device))
    elif cfg.val_items <= 0:
        logger.note_once("val", "--val_items 0: validation is skipped")
    elif val_root is not None:
        logger.note_once("val", f"no {val_root / 'val.npy'}: validation is skipped")

    # --- body, template, models ---
    torch.manual_seed(cfg.seed)
    if body is None:
        body = load_body_model(cfg.body_model)
    if cfg.shape_bank:
        from sigman.body.shape_bank import ShapeBank

        if not hasattr(body, "attach_shape_bank"):
            raise SystemExit(f"--shape-bank serves anny body shapes; the '{body.name}' body has no shape bank")
        body.attach_shape_bank(ShapeBank.load(cfg.shape_bank))
    body = body.to(device)
    stream = None
    if cfg.stream:
        from train.stream_data import make_stream, val_batches

        stream = make_stream(body, device, cfg.seed, cfg.shape_bank, cfg.synthetic_overrides, cfg.stream_overrides,
                             num_input_views=vae_cfg.num_views, input_size=vae_cfg.image_size,
                             num_target_views=cfg.num_target_views, render_size=render_size,
                             uv_resolution=vae_cfg.uv_size, condition_size=0)
        if val_loader is None and val_root is None and cfg.val_items > 0:  # fixed stream items, the same every time
            val_loader = val_batches(stream, cfg.val_items, cfg.batch_size, rank, world)
    template = build_uv_template(body, cfg.gaussian_uv_resolution)
    step_fn = GaussianDecoderStep(body, template, vae_cfg, render_size)
    model = SigmanVAE(vae_cfg)
    if cfg.init_weights and resume is None:
        load_init_weights(model, cfg.init_weights)
        logger.print(f"initialised from {cfg.init_weights}")
    trained = trainable_parameters(model, cfg.train_parts)
    model = model.to(device)
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    use_gan = cfg.disc_start >= 0
    disc = PatchDiscriminator().to(device) if use_gan else None
    d_optimizer = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9)) if use_gan else None
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    kl_weight = vae_cfg.kl_weight if cfg.kl_weight is None else cfg.kl_weight
    lpips_model, reason = build_lpips() if cfg.lpips_weight > 0 else (None, "lpips_weight is 0")
    if lpips_model is None:
        logger.note_once("lpips", f"LPIPS left out of the loss: {reason}")
    else:
        lpips_model = lpips_model.to(device)

    # --- resume (before prepare: plain modules and optimizers) ---
    step = 0
    if resume is not None:
        path = ckpt.latest_checkpoint(ckpt_root) if resume == "latest" else ckpt.resolve_checkpoint(resume)
        if path is None:
            logger.print(f"--resume: no checkpoint in {ckpt_root} yet, starting from scratch")
        else:
            modules: dict = {"model": model}
            optimizers: dict = {"optimizer": optimizer}
            if use_gan:
                modules["disc"], optimizers["disc_optimizer"] = disc, d_optimizer
            state = ckpt.load_checkpoint(path, modules=modules, optimizers=optimizers,
                                         schedulers={"scheduler": scheduler}, rank=rank)
            step = int(state["step"])
            if state.get("world_size", world) != world:
                logger.note_once("world", f"resuming a {state['world_size']}-process run on {world} processes: "
                                          "the data order differs from an uninterrupted run")
            logger.print(f"resumed from {path} at step {step}")
            logger.purge_after(step)

    if use_gan:
        model, disc, optimizer, d_optimizer = accelerator.prepare(model, disc, optimizer, d_optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    if stream is None:
        sampler.start_step = step
        loader = DataLoader(EpochItems(train_set), batch_sampler=sampler, **loader_kwargs(cfg.num_workers, device))
        batches = iter(loader)
    epoch_at = sampler.epoch_at if sampler is not None else (lambda s: 0.0)

    def save(at: int) -> None:
        modules = {"model": accelerator.unwrap_model(model)}
        optimizers = {"optimizer": optimizer}
        if use_gan:
            modules["disc"], optimizers["disc_optimizer"] = accelerator.unwrap_model(disc), d_optimizer
        ckpt.save_checkpoint(ckpt_root, at, modules=modules, optimizers=optimizers, schedulers={"scheduler": scheduler},
                             state={"kind": "vae", "config": config_to_json(cfg),
                                    "vae_config": config_to_json(accelerator.unwrap_model(model).config),
                                    "render_size": render_size},
                             keep=cfg.keep_checkpoints, rank=rank, world_size=world, barrier=accelerator.wait_for_everyone)

    n_params = sum(p.numel() for p in model.parameters())
    if cfg.train_parts != "all":
        logger.print(f"training the {cfg.train_parts} only: {sum(p.numel() for p in trained) / 1e6:.2f}M of "
                     f"{n_params / 1e6:.2f}M parameters")
    source = "streamed subjects" if stream is not None else f"{len(train_set)} train items"
    logger.print(f"VAE '{cfg.vae}' ({n_params / 1e6:.2f}M params), {source}, batch {cfg.batch_size} "
                 f"x {world} processes, {cfg.steps} steps, device {device}, mixed precision {accelerator.mixed_precision}")
    history: list[dict] = []
    meter = Throughput(device)
    deadline = Deadline(time_limit, accelerator)
    model.train()
    while step < cfg.steps:
        batch = stream.batch(step, rank, cfg.batch_size) if stream is not None else next(batches)
        phenotypes = batch["phenotype"]
        batch = to_device(batch, device)
        gen = step_generator(cfg.seed, step, rank, device)
        out = step_fn(model, batch, phenotypes, sample_posterior=True, generator=gen)
        loss, parts = reconstruction_losses(cfg, out, batch, kl_weight, lpips_model)
        gan_on = use_gan and step >= cfg.disc_start
        if gan_on:
            d = accelerator.unwrap_model(disc)
            d.requires_grad_(False)
            parts["g_gan"] = hinge_g_loss(d(out["rgb"].flatten(0, 1)))
            d.requires_grad_(True)
            loss = loss + cfg.gan_weight * parts["g_gan"]
        accelerator.backward(loss)
        parts["grad_norm"] = accelerator.clip_grad_norm_(trained, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if gan_on:
            real, fake = batch["target_rgb"].flatten(0, 1), out["rgb"].detach().flatten(0, 1)
            logits = disc(torch.cat([real, fake]))
            d_loss = hinge_d_loss(*logits.chunk(2))
            accelerator.backward(d_loss)
            accelerator.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
            d_optimizer.step()
            d_optimizer.zero_grad(set_to_none=True)
            parts["d_gan"] = d_loss.detach()
        step += 1
        meter.add(cfg.batch_size)

        if step % cfg.log_every == 0 or step == cfg.steps:
            values = torch.stack([loss.detach(), *(v.detach().float() for v in parts.values())])
            values = accelerator.reduce(values, "mean").tolist()
            rate = meter.rate()
            record = {"loss": values[0], **dict(zip(parts, values[1:])), "lr": scheduler.get_last_lr()[0],
                      "epoch": epoch_at(step), "samples_per_s": rate, "samples_per_s_total": rate * world}
            if accelerator.is_main_process:
                logger.scalars(step, record)
                history.append({"step": step, **record})
                logger.print(f"step {step}/{cfg.steps} loss {values[0]:.4f} (l1 {record['l1']:.4f} ssim {record['ssim']:.4f} "
                             f"mask {record['mask']:.4f} kl {record['kl']:.1f}) lr {record['lr']:.2e} epoch {record['epoch']:.2f} "
                             f"| {rate:.1f} samples/s/process, {rate * world:.1f} samples/s total ({world} processes)")
        if val_loader is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            metrics = validate(cfg, accelerator, accelerator.unwrap_model(model), step_fn, val_loader, logger, step)
            logger.print(f"step {step} val psnr {metrics['psnr']:.2f} dB ssim {metrics['ssim']:.4f}")
            meter.rate()  # do not count validation time
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
    add_config_arguments(parser, VAETrainConfig)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return train(config_from_args(args, CONFIGS, VAETrainConfig), resume=args.resume, stop_at=args.stop_at,
                 time_limit=args.time_limit)


if __name__ == "__main__":
    main()
