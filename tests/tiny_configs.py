"""Tiny model configurations shared by the tests (seconds on a CPU)."""

from sigman.pipeline import PipelineConfig

TINY_VAE = dict(num_views=2, image_size=32, uv_size=32, latent_size=4, encoder_channels=(8, 8, 8, 8),
                decoder_channels=(8, 8, 8, 8), decoder_out_channels=16, norm_groups=4, attention_heads=2,
                attention_head_dim=8, self_attention_layers=1)
TINY_DIT = dict(num_layers=1, num_heads=2, head_dim=16, sample_size=4, time_embed_dim=32, condition_channels=32,
                condition_size=16, condition_patch_size=2)


def tiny_pipeline_config(steps: int = 3, dit_layers: int = 1) -> PipelineConfig:
    """A pipeline of tiny random models: 32² UV, 4×4 latents, a one-layer DiT (``dit_layers``)."""
    return PipelineConfig(image_encoder="tiny", gaussian_uv_resolution=32, steps=steps, vae_overrides=dict(TINY_VAE),
                          dit_overrides=dict(TINY_DIT, num_layers=dit_layers))
