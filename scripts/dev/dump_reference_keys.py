"""Regenerate ``tests/fixtures/official_dit_keys.txt`` from the reference SIGMAN release (dev only).

The official transformer layout is whatever the release's ``DiT3DModel`` puts in its state dict. This
script imports that class from a checkout of the release (path on the command line), builds it with the
release's ``DiT`` config on the meta device (no memory, no weights), and writes one ``name shape`` line
per entry. With ``--compare`` it also builds a tiny reference model and a matching tiny
:class:`sigman.models.dit.SigmanDiT`, copies the weights across with a strict check, and compares outputs.

It needs what the release imports (``pip install diffusers einops`` into a throwaway venv with the CPU
torch); the release's renderer/VAE modules (CUDA extensions) are replaced by empty stand-ins because the
DiT does not use them. Nothing from the release is copied into sigman.

    python scripts/dev/dump_reference_keys.py /path/to/SIGMAN_release [--compare]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "official_dit_keys.txt"

# The release's DiT config ("DiT" in core/model_config/DiT_DDPM.py), as passed by train_DiT.py.
RELEASE_KWARGS = dict(
    num_attention_heads=32,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    num_layers=30,
    text_embed_dim=1536,
    sample_width=64,
    sample_height=64,
    sample_frames=6,
    patch_size=2,
    max_text_seq_length=256,
    temporal_compression_ratio=1,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)


def import_reference(release: Path):
    """Import ``core.modules.DiT`` from a release checkout, stubbing the CUDA-only modules it drags in."""
    sys.path.insert(0, str(release))
    for name, attr in [("core.modules.autoencoder", "VAE"), ("core.gaussians.gs", "GaussianRenderer")]:
        stub = types.ModuleType(name)
        setattr(stub, attr, object)
        sys.modules[name] = stub
    from core.modules import DiT as ref  # noqa: E402  (the release's module)

    return ref


def dump_keys(ref) -> list[str]:
    with torch.device("meta"):
        model = ref.DiT3DModel(**RELEASE_KWARGS)
    return [f"{k} {','.join(str(s) for s in v.shape)}" for k, v in model.state_dict().items()]


def compare(ref) -> None:
    """Tiny reference model vs tiny SigmanDiT with the same weights: outputs must agree."""
    sys.path.insert(0, str(REPO_ROOT))
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    from sigman.models.dit import DiTConfig, SigmanDiT

    torch.manual_seed(0)
    heads, head_dim, layers, cond = 4, 16, 2, 24
    ref_model = ref.DiT3DModel(
        **{**RELEASE_KWARGS, "num_attention_heads": heads, "attention_head_dim": head_dim, "num_layers": layers,
           "text_embed_dim": cond, "sample_width": 16, "sample_height": 16, "max_text_seq_length": 16}
    ).eval()
    # The release zero-inits nothing; randomise every tensor so the comparison is not trivially zero.
    with torch.no_grad():
        for p in ref_model.parameters():
            p.normal_(0, 0.2)
    cfg = DiTConfig(num_layers=layers, num_heads=heads, head_dim=head_dim, condition_channels=cond,
                    condition_size=16, sample_size=16)
    ours = SigmanDiT(cfg).eval()
    missing, unexpected = ours.load_state_dict(ref_model.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 16, 16, 16)
    feats = torch.randn(2, cond, 16, 16)
    t = torch.tensor([999, 17])
    grid = 16 // 2
    rope = get_2d_rotary_pos_embed(head_dim, ((0, 0), (grid, grid)), (grid, grid), output_type="pt")
    with torch.no_grad():
        want = ref_model(x, feats, t, image_rotary_emb=rope, return_dict=False)[0]
        got = ours(x, t, feats)
    err = (want - got).abs().max().item()
    scale = want.abs().max().item()
    print(f"compare: max |ref - ours| = {err:.3e} (max |ref| = {scale:.3e})")
    if err > 1e-4 * max(scale, 1.0):
        raise SystemExit("outputs differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("release", type=Path, help="checkout of github.com/yyvhang/SIGMAN_release")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    parser.add_argument("--compare", action="store_true", help="also check numerics against SigmanDiT")
    args = parser.parse_args()
    ref = import_reference(args.release.resolve())
    lines = dump_keys(ref)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} entries to {args.out}")
    if args.compare:
        compare(ref)


if __name__ == "__main__":
    main()
