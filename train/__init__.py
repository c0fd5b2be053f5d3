"""Training: ``train_vae.py`` (Gaussian VAE), ``train_dit.py`` (DiT + demo image encoder),
``export_demo.py`` (the app's model folder), on accelerate (``accelerate_config.yaml``: one GPU,
``accelerate_multi_gpu.yaml``: several GPUs / nodes)."""
