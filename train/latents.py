"""The DiT's training data: the frozen VAE of a ``train_vae.py`` checkpoint and the latents it
encodes, once, for every training item (posterior mean of its fixed front-orbit input views + partial
UV texture), with the items' condition images; cached in ``<workspace>/latents/`` and keyed by the
VAE's and the items' hashes, so a resumed run skips the encoding. With several processes each encodes
a share and the shares are gathered."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from sigman.data.dataset import DatasetConfig, SeedDataset
from sigman.models.vae import SigmanVAE, VAEConfig, make_view_input
from train import checkpoint as ckpt
from train.common import loader_kwargs, to_device

if TYPE_CHECKING:
    from train.train_dit import DiTTrainConfig


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_trained_vae(path) -> tuple[SigmanVAE, Path, str]:
    """The VAE of a ``train_vae.py`` checkpoint (or of a workspace's latest): model, checkpoint, sha256
    of its weights file. Strict key/shape check."""
    from sigman.weights import load_weights

    folder = ckpt.resolve_checkpoint(path)
    state = ckpt.read_json(folder / ckpt.STATE_FILE)
    if state.get("kind") != "vae":
        raise ckpt.CheckpointError(f"{folder} is a '{state.get('kind')}' checkpoint, not a VAE one")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in state["vae_config"].items()}
    fields["gradient_checkpointing"] = False
    vae = SigmanVAE(VAEConfig(**fields))
    weights = folder / "model.safetensors"
    load_weights(vae, weights)
    return vae, folder, file_sha256(weights)


@torch.no_grad()
def encode_items(vae: SigmanVAE, ds: SeedDataset, indices: list[int], device: torch.device, batch_size: int,
                 num_workers: int) -> tuple[Tensor, Tensor]:
    """Posterior means ``[n, C, h, w]`` (float32, unscaled) and condition images ``[n, 3, S, S]`` (uint8)
    of items ``indices`` of ``ds`` (a dataset in validation mode: fixed input views)."""
    latents, conditions = [], []
    if indices:
        loader = DataLoader(Subset(ds, indices), batch_size=batch_size, **loader_kwargs(num_workers, device))
        for batch in loader:
            batch = to_device(batch, device)
            views = make_view_input(batch["input_rgb"], batch["input_viewmats"], batch["input_Ks"])
            mean, _ = vae.encode(views, batch["uv_texture"])
            latents.append(mean.float().cpu())
            conditions.append((batch["condition"] * 255).round().clamp(0, 255).to(torch.uint8).cpu())
    c, h, w = vae.config.latent_shape
    size = ds.config.condition_size
    if not latents:
        return torch.empty(0, c, h, w), torch.empty(0, 3, size, size, dtype=torch.uint8)
    return torch.cat(latents), torch.cat(conditions)


def encode_dataset(accelerator, vae: SigmanVAE, index: Path, limit: Optional[int], condition_size: int,
                   cfg: DiTTrainConfig, cache: Path, vae_sha: str, all_processes: bool = True) -> tuple[Tensor, Tensor]:
    """Latents and condition images of the (first ``limit``) items of ``index``: loaded from ``cache``
    when it was made from the same VAE, items and sizes; otherwise encoded (each process a share,
    gathered) and cached."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    vcfg = vae.config
    ds = SeedDataset(DatasetConfig(index=index, image_size=vcfg.image_size, num_input_views=vcfg.num_views,
                                   num_target_views=1, condition_size=condition_size, uv_resolution=vcfg.uv_size,
                                   training=False))
    count = len(ds) if limit is None else min(limit, len(ds))
    meta = {"vae_sha256": vae_sha, "items": file_sha256(Path(index)), "count": str(count),
            "valid": hashlib.sha256("\n".join(map(str, ds.items)).encode()).hexdigest(),
            "condition_size": str(condition_size)}
    if cache.is_file():
        with safe_open(str(cache), "pt") as f:
            if f.metadata() == meta:
                return f.get_tensor("latents"), f.get_tensor("conditions")
    rank, world = (accelerator.process_index, accelerator.num_processes) if all_processes else (0, 1)
    lat, cond = encode_items(vae, ds, list(range(rank, count, world)), accelerator.device, cfg.encode_batch_size,
                             cfg.num_workers)
    if world > 1:
        from accelerate.utils import gather

        per = -(-count // world)
        pad = lambda t: torch.cat([t, t.new_zeros(per - t.shape[0], *t.shape[1:])]).to(accelerator.device)
        lat_all, cond_all = gather(pad(lat)).cpu(), gather(pad(cond)).cpu()  # [world * per, ...] by rank
        order = torch.tensor([r * per + j for j in range(per) for r in range(world) if r + world * j < count])
        lat, cond = lat_all[order], cond_all[order]
    if accelerator.is_main_process:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file({"latents": lat.contiguous(), "conditions": cond.contiguous()}, str(tmp), metadata=meta)
        tmp.replace(cache)
    return lat, cond
