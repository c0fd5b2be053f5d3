"""Data: the seed's per-item layout, a training dataset over it, UV projection of multi-view images,
a synthetic generator of clothed anny bodies, and a stream of such subjects made on the device.

    from sigman.data import SyntheticGenerator, SyntheticConfig, SeedDataset, DatasetConfig
    SyntheticGenerator(SyntheticConfig(views=24), device="cuda").generate("data/synth", count=1000)
    ds = SeedDataset(DatasetConfig(index="data/synth/train.npy"))
    batch = SyntheticStream(SyntheticConfig(shape_bank="bank.npz"), StreamConfig(), device="cuda").batch(step, rank, 8)
"""

from sigman.data.layout import (
    CAMERA_FILE,
    MASK_DIR,
    PHENOTYPE_KEY,
    POSE_FILE,
    RGB_DIR,
    UV_MASK_FILE,
    UV_TEXTURE_FILE,
    Calibration,
    ValidationReport,
    load_calibration,
    load_index,
    load_item_pose,
    load_uv_maps,
    save_calibration,
    save_index,
    split_items,
    validate_dataset,
    validate_item,
    write_split,
)
from sigman.data.uv_projection import ProjectionConfig, project_to_uv, rasterize_depth

__all__ = [
    "CAMERA_FILE", "MASK_DIR", "PHENOTYPE_KEY", "POSE_FILE", "RGB_DIR", "UV_MASK_FILE", "UV_TEXTURE_FILE",
    "Calibration", "ValidationReport", "load_calibration", "load_index", "load_item_pose", "load_uv_maps",
    "save_calibration", "save_index", "split_items", "validate_dataset", "validate_item", "write_split",
    "ProjectionConfig", "project_to_uv", "rasterize_depth",
    "DatasetConfig", "SeedDataset", "SyntheticConfig", "SyntheticGenerator", "StreamConfig", "SyntheticStream",
]


def __getattr__(name: str):
    # heavier modules load on first use
    if name in ("DatasetConfig", "SeedDataset"):
        from sigman.data import dataset

        return getattr(dataset, name)
    if name in ("SyntheticConfig", "SyntheticGenerator"):
        from sigman.data import synthetic

        return getattr(synthetic, name)
    if name in ("StreamConfig", "SyntheticStream"):
        from sigman.data import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'sigman.data' has no attribute '{name}'")
