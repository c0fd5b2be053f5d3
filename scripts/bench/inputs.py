"""Stage: preprocessing the photo and the image encoder."""

from __future__ import annotations

import torch

from sigman.preprocess import preprocess_person

from .context import Context
from .models import RandomSapiensFeatures


def bench_inputs(ctx: Context) -> None:
    """Preprocessing and the image encoder."""
    pipe, args = ctx.pipe, ctx.args
    size = pipe.encoder_input_size()
    person = preprocess_person(args.image, size=size, background=pipe.config.background)
    stat = ctx.measure(lambda: preprocess_person(args.image, size=size, background=pipe.config.background))
    ctx.run.put(ctx.name, "preprocessing", stat, f"photo -> {size}² crop")
    pixels = person.image.to(ctx.device, pipe.dtype)
    with torch.no_grad():
        ctx.features = pipe.image_encoder(pixels)
        stat = ctx.measure(lambda: pipe.image_encoder(pixels))
    stand_in = isinstance(pipe.image_encoder, RandomSapiensFeatures)
    note = "random stand-in for Sapiens-1B (not timed meaningfully)" if stand_in else type(pipe.image_encoder).__name__
    ctx.run.put(ctx.name, "image encoder", stat, note)
