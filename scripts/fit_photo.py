"""Fit the body to a photo: the pose as an SMPL-X .npz and a picture of the fit over the photo.

    python scripts/fit_photo.py --image assets/examples/person_00.png --out outputs/fit
    # -> outputs/fit/photo_pose.npz, outputs/fit/fit_overlay.png (mesh from the fitted camera;
    #    green: detected landmarks, red: the fitted body's markers)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="photo of a person (a path, or 'astronaut' for scikit-image's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/fit"))
    parser.add_argument("--body", default="anny", choices=["anny", "smplx"])
    parser.add_argument("--no-silhouette", action="store_true", help="landmarks only (faster)")
    args = parser.parse_args(argv)

    from sigman.preprocess import ImageInputError, load_image
    from sigman.weights import WeightsError

    try:
        if args.image == "astronaut":
            from skimage import data  # optional: scikit-image

            rgb = data.astronaut()
        else:
            rgb, _ = load_image(args.image)
        import numpy as np

        from sigman.body import load_body_model
        from sigman.fit import FitConfig, fit_body
        from sigman.fit_overlay import draw_fit
        from sigman.person import observe_person
        from sigman.pose import save_pose

        rgb8 = rgb if rgb.dtype == np.uint8 else np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        start = time.perf_counter()
        observation = observe_person(rgb8)
        t_obs = time.perf_counter() - start
        body = load_body_model(args.body)
        fit = fit_body(body, observation, FitConfig(silhouette=not args.no_silhouette))
    except (ImageInputError, WeightsError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    save_pose(args.out / "photo_pose.npz", fit.pose)
    draw_fit(rgb8, fit, body, observation).save(args.out / "fit_overlay.png")
    for note in observation.notes:
        print(f"note: {note}")
    print(f"fit: {fit.reprojection_px:.1f} px mean reprojection error, focal {fit.focal_px:.0f} px, "
          f"person {t_obs:.2f} s, fit {fit.seconds['total']:.2f} s ({fit.iterations} steps) -> "
          f"{args.out / 'photo_pose.npz'}, {args.out / 'fit_overlay.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
