"""Data: the seed's per-item layout, a training dataset over it, UV projection of multi-view images,
and a synthetic generator of clothed anny bodies.

    from sigman.data import SyntheticGenerator, SyntheticConfig, SeedDataset, DatasetConfig
    SyntheticGenerator(SyntheticConfig(views=24), device="cuda").generate("data/synth", count=1000)
    ds = SeedDataset(DatasetConfig(index="data/synth/train.npy"))
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
    "DatasetConfig", "SeedDataset", "SyntheticConfig", "SyntheticGenerator",
]


def __getattr__(name: str):
    # heavier modules load on first use
    if name in ("DatasetConfig", "SeedDataset"):
        from sigman.data import dataset

        return getattr(dataset, name)
    if name in ("SyntheticConfig", "SyntheticGenerator"):
        from sigman.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'sigman.data' has no attribute '{name}'")
