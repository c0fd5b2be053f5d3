"""Models: the VAE, the DiT and image encoders (one model per file, config dataclass at the top)."""

from .attention import attention, naive_attention
from .dit import DIT_CONFIGS, DiTConfig, SigmanDiT, build_dit, dit_config
from .image_encoder import DemoImageEncoder, SapiensEncoder, build_image_encoder
from .vae import VAE_CONFIGS, SigmanVAE, VAEConfig
