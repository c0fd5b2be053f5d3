"""Export a trained VAE and DiT (+ image encoder) as the app's model folder.

    python train/export_demo.py --vae-ckpt runs/vae_demo --dit-ckpt runs/dit_demo --out assets/weights/demo

``--vae-ckpt`` / ``--dit-ckpt`` take a checkpoint folder or a run workspace (its latest checkpoint).
Writes the :meth:`sigman.pipeline.SigmanPipeline.save_pretrained` layout — ``pipeline.json`` (the
configs used: names + overrides, the Gaussian UV resolution, the DiT run's latent scaling factor),
``autoencoder.safetensors``, ``transformer.safetensors`` (EMA), ``image_encoder.safetensors`` (EMA) —
plus ``training.json`` (where the weights came from). Each weights file must stay under
``--max-file-mib`` (16): a file over it is stored in float16 (``--dtype auto``), and the export fails
if even that is too big. The folder is loaded back with ``SigmanPipeline.from_pretrained`` and
compared with the checkpoints before it replaces ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from sigman.models.dit import DIT_CONFIGS, DiTConfig, SigmanDiT  # noqa: E402
from sigman.models.image_encoder import build_image_encoder  # noqa: E402
from sigman.models.vae import VAE_CONFIGS, SigmanVAE  # noqa: E402
from sigman.pipeline import DIT_FILE, ENCODER_FILE, VAE_FILE, PipelineConfig, SigmanPipeline  # noqa: E402
from sigman.weights import check_state_dict, save_weights  # noqa: E402
from train import checkpoint as ckpt  # noqa: E402
from train.latents import load_trained_vae  # noqa: E402

MAX_FILE_MIB = 16.0


class ExportError(RuntimeError):
    pass


def _jsonable(value):
    return json.loads(json.dumps(value))


def config_overrides(config, base) -> dict:
    """Fields of ``config`` that differ from ``base`` (JSON values; gradient checkpointing left out)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.name == "gradient_checkpointing":
            continue
        value = _jsonable(getattr(config, f.name))
        if value != _jsonable(getattr(base, f.name)):
            out[f.name] = value
    return out


def _split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def shrink_file(path: Path, limit_bytes: int, dtype: str) -> str:
    """Keep ``path`` under ``limit_bytes``: convert its floats to float16 when allowed. Returns the
    dtype it is stored in."""
    if dtype == "float16" or (dtype == "auto" and path.stat().st_size > limit_bytes):
        state = load_file(str(path))
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        bad = [k for k, v in half.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ExportError(f"{path.name}: values overflow float16 in {bad[:3]}; use --dtype float32 and a "
                              "larger --max-file-mib, or a smaller model")
        save_weights(half, path)
        stored = "float16"
    else:
        stored = "float32"
    size = path.stat().st_size
    if size > limit_bytes:
        raise ExportError(f"{path.name} is {size / 2**20:.1f} MiB ({stored}), over the {limit_bytes / 2**20:.0f} MiB "
                          "limit: train a smaller model (e.g. train_dit.py --dit_overrides '{\"num_heads\": 4, "
                          "\"time_embed_dim\": 128}') or raise --max-file-mib")
    return stored


def run_relative(folder: Path) -> str:
    """A checkpoint folder as ``<workspace name>/checkpoints/<step>``: shipped metadata names the run,
    never a path on the machine that trained it."""
    return "/".join(Path(folder).resolve().parts[-3:])


def export(vae_ckpt, dit_ckpt, out, max_file_mib: float = MAX_FILE_MIB, dtype: str = "auto", body=None,
           allow_vae_mismatch: bool = False, guidance: Optional[float] = None) -> Path:
    """Write the model folder ``out`` (replaced atomically once it loads back); returns it.

    ``guidance``: the classifier-free guidance scale stored as the folder's default (None: the
    :class:`~sigman.pipeline.PipelineConfig` default). Choose it on validation data, not the held-out set."""
    out = Path(out)
    vae, vae_folder, vae_sha = load_trained_vae(vae_ckpt)
    vae_state = ckpt.read_json(vae_folder / ckpt.STATE_FILE)
    dit_folder = ckpt.resolve_checkpoint(dit_ckpt)
    dit_state = ckpt.read_json(dit_folder / ckpt.STATE_FILE)
    if dit_state.get("kind") != "dit":
        raise ExportError(f"{dit_folder} is a '{dit_state.get('kind')}' checkpoint, not a DiT one")
    if dit_state["vae_sha256"] != vae_sha and not allow_vae_mismatch:
        raise ExportError(f"the DiT in {dit_folder} was trained on the latents of {dit_state['vae_checkpoint']}, "
                          f"not of {vae_folder} (different weights): pass that VAE checkpoint "
                          "(or --allow-vae-mismatch)")

    # models, with the EMA weights of the DiT run
    vae_train = vae_state["config"]
    scale = float(dit_state["latent_scaling_factor"])
    vae_cfg = dataclasses.replace(vae.config, latent_scaling_factor=scale)
    final_vae = SigmanVAE(vae_cfg)
    final_vae.load_state_dict(vae.state_dict())
    dit_fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dit_state["dit_config"].items()}
    dit_cfg = DiTConfig(**{**dit_fields, "gradient_checkpointing": False})
    dit = SigmanDiT(dit_cfg)
    encoder = build_image_encoder(dit_state["image_encoder"])
    ema = ckpt.load_module_state(dit_folder, "ema")
    for module, prefix in ((dit, "dit."), (encoder, "encoder.")):
        part = _split(ema, prefix)
        check_state_dict(module, part, f"{dit_folder / 'ema.safetensors'} ({prefix[:-1]})")
        module.load_state_dict(part)

    dit_name = dit_state["config"]["dit"]
    config = PipelineConfig(
        body_model=vae_train["body_model"], vae=vae_train["vae"],
        vae_overrides=config_overrides(vae_cfg, VAE_CONFIGS[vae_train["vae"]]),
        dit=dit_name, dit_overrides=config_overrides(dit_cfg, DIT_CONFIGS[dit_name]),
        image_encoder=dit_state["image_encoder"], gaussian_uv_resolution=int(vae_train["gaussian_uv_resolution"]),
        **({} if guidance is None else {"guidance": float(guidance)}),
    )
    if body is None:
        from sigman.body import load_body_model

        body = load_body_model(config.body_model)
    tmp = out.parent / f".{out.name}.export-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        SigmanPipeline(config, body, final_vae, dit, encoder, device="cpu", dtype=torch.float32).save_pretrained(tmp)
        limit = int(max_file_mib * 2**20)
        stored = {f.name: shrink_file(f, limit, dtype) for f in sorted(tmp.glob("*.safetensors"))}
        provenance = {"vae_checkpoint": run_relative(vae_folder), "vae_step": vae_state["step"], "vae_sha256": vae_sha,
                      "dit_checkpoint": run_relative(dit_folder), "dit_step": dit_state["step"], "dit_weights": "ema",
                      "stored_dtypes": stored}
        starts = {"vae": vae_train.get("init_weights"), "dit": dit_state["config"].get("init_weights")}
        for kind, start in starts.items():  # fine-tuned runs name what they started from (never a machine path)
            if start:
                provenance[f"{kind}_init_weights"] = Path(start).name if Path(start).is_absolute() else str(start)
        if vae_train.get("train_parts", "all") != "all":
            provenance["vae_train_parts"] = vae_train["train_parts"]
        (tmp / "training.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))

        # load it back as the app does, and compare with what was exported
        pipe = SigmanPipeline.from_pretrained(tmp, device="cpu", body=body)
        for name, loaded, source in ((VAE_FILE, pipe.vae, final_vae), (DIT_FILE, pipe.dit, dit),
                                     (ENCODER_FILE, pipe.image_encoder, encoder)):
            tol = 1e-3 if stored.get(name) == "float16" else 0.0
            for k, v in source.state_dict().items():
                w = loaded.state_dict()[k]
                if not torch.allclose(w.float().cpu(), v.float(), rtol=tol, atol=tol):
                    raise ExportError(f"{name}: '{k}' does not load back as exported")
        if abs(pipe.vae.config.latent_scaling_factor - scale) > 1e-12:
            raise ExportError("the latent scaling factor did not survive pipeline.json")

        old = out.parent / f".{out.name}.export-old"
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Optional[list[str]] = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae-ckpt", "--vae_ckpt", required=True, help="VAE checkpoint folder or train_vae.py workspace")
    p.add_argument("--dit-ckpt", "--dit_ckpt", required=True, help="DiT checkpoint folder or train_dit.py workspace")
    p.add_argument("--out", default="assets/weights/demo", help="model folder to write (replaced)")
    p.add_argument("--max-file-mib", "--max_file_mib", type=float, default=MAX_FILE_MIB)
    p.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                   help="auto: float32 unless a file would exceed the limit, then float16")
    p.add_argument("--allow-vae-mismatch", action="store_true", help="export even if the DiT was trained on another VAE")
    p.add_argument("--guidance", type=float, default=None,
                   help="default classifier-free guidance stored in pipeline.json (pick it on validation data)")
    args = p.parse_args(argv)
    try:
        out = export(args.vae_ckpt, args.dit_ckpt, args.out, args.max_file_mib, args.dtype,
                     allow_vae_mismatch=args.allow_vae_mismatch, guidance=args.guidance)
    except (ExportError, ckpt.CheckpointError) as err:
        raise SystemExit(f"export failed: {err}")
    for f in sorted(out.iterdir()):
        print(f"{f}  {f.stat().st_size / 2**20:.2f} MiB")
    print(f"exported and loaded back: {out}")
    return out


if __name__ == "__main__":
    main()
