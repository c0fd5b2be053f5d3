"""The pipelines the benchmark times: the demo config (trained weights when present, else random)
and the official config (random weights of the release's shapes; a random stand-in for Sapiens)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from sigman.models.dit import SigmanDiT, dit_config
from sigman.models.vae import VAE_CONFIGS, SigmanVAE
from sigman.paths import REPO_ROOT as REPO, default_model_dir
from sigman.pipeline import PipelineConfig, SigmanPipeline


@torch.no_grad()
def randomize_dit_(dit: SigmanDiT, seed: int) -> SigmanDiT:
    """Random weights that make every part of the DiT matter (the training init zeroes the
    modulations and the output, so its samples would be trivial): variance-preserving normal
    matrices, small biases, norm scales near 1."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in dit.named_parameters():
        if name.endswith("bias"):
            values = torch.randn(p.shape, generator=g, device="cpu") * 0.02
        elif p.dim() == 1:  # LayerNorm / RMSNorm scales
            values = 1.0 + torch.randn(p.shape, generator=g, device="cpu") * 0.02
        else:
            fan_in = p[0].numel()
            values = torch.randn(p.shape, generator=g, device="cpu") / math.sqrt(fan_in)
        p.copy_(values.to(p.device, p.dtype))
    return dit


class RandomSapiensFeatures(nn.Module):
    """Stands in for Sapiens-1B (not available here): fixed random features ``[B, 1536, 64, 64]``
    for a ``1024²`` input, so every later stage sees the official shapes."""

    input_size, out_channels, out_size = 1024, 1536, 64

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._features: Optional[Tensor] = None

    def forward(self, images: Tensor) -> Tensor:
        shape = (images.shape[0], self.out_channels, self.out_size, self.out_size)
        f = self._features
        if f is None or f.shape != shape or f.device != images.device or f.dtype != images.dtype:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            self._features = torch.randn(shape, generator=g, device="cpu").to(images.device, images.dtype)
        return self._features


@dataclass
class BuiltPipeline:
    pipe: SigmanPipeline
    weights: str  # what the weights are, for the report
    notes: list[str] = field(default_factory=list)


def build_demo(args: argparse.Namespace, device: torch.device) -> BuiltPipeline:
    folder = Path(args.weights) if args.weights else default_model_dir()
    shown = os.path.relpath(folder, REPO) if folder.resolve().is_relative_to(REPO) else str(folder)
    if (folder / "pipeline.json").is_file():
        pipe = SigmanPipeline.from_pretrained(folder, device=str(device))
        return BuiltPipeline(pipe, f"trained demo weights from {shown}")
    config = PipelineConfig()
    pipe = SigmanPipeline.from_config(config, device="cpu", seed=args.seed)
    randomize_dit_(pipe.dit, args.seed)
    pipe = SigmanPipeline(config, pipe.body, pipe.vae, pipe.dit.float(), pipe.image_encoder.float(), device)
    return BuiltPipeline(pipe, f"random weights, demo config ({shown} not found); the DiT is re-initialised "
                               "with variance-preserving random weights so that sampling is not trivial")


def official_overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    dit = {"num_layers": args.official_layers} if args.official_layers else {}
    vae = {"decoder_layers_per_block": 1} if args.quick else {}
    return dit, vae


def build_official(args: argparse.Namespace, device: torch.device) -> BuiltPipeline:
    from sigman.body import load_body_model

    dit_over, vae_over = official_overrides(args)
    config = PipelineConfig(body_model="anny", vae="official", dit="official", image_encoder="sapiens",
                            gaussian_uv_resolution=512, guidance_schedule="release-dynamic",
                            vae_overrides=vae_over, dit_overrides=dit_over)
    torch.manual_seed(args.seed)
    with torch.device(device):  # initialise on the device: 1.94 B parameters are slow to init on a CPU
        vae = SigmanVAE(dataclasses.replace(VAE_CONFIGS["official"], **vae_over))
        dit = SigmanDiT(dit_config("official", **dit_over))
    randomize_dit_(dit, args.seed)  # outside the device context: it draws from a CPU generator
    pipe = SigmanPipeline(config, load_body_model("anny"), vae, dit, RandomSapiensFeatures(args.seed), device)
    notes = ["Sapiens-1B is not available: the image encoder stage returns fixed random features of the "
             "official shape [1, 1536, 64, 64] (its cost is not included); preprocessing still runs at 1024².",
             "Random weights with the release's shapes (DiT 30 layers, 32 heads × 64, 1024 latent + 256 "
             "condition tokens; official VAE); the body is anny (SMPL-X files are licensed), UV 512."]
    if dit_over or vae_over:
        notes.append(f"Reduced for a smoke run: DiT overrides {dit_over}, VAE overrides {vae_over}.")
    return BuiltPipeline(pipe, "random weights, official shapes", notes)
