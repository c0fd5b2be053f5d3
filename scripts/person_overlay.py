"""Draw what person understanding sees in a photo (mask, landmarks, skeleton, boxes) and print it.

    python scripts/person_overlay.py PHOTO [--out overlay.png] [--model full|lite]
    python scripts/person_overlay.py astronaut --out assets/readme/person_overlay.png

``astronaut`` (or ``coffee``, ``chelsea``) names one of scikit-image's bundled photos.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.overlay import draw_observation  # noqa: E402
from sigman.person import PersonConfig, PersonDetector, PersonModelError  # noqa: E402
from sigman.preprocess import ImageInputError  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", help=f"image path, or one of scikit-image's photos: {', '.join(SKIMAGE_PHOTOS)}")
    parser.add_argument("--out", type=Path, default=Path("person_overlay.png"))
    parser.add_argument("--model", default="full", choices=["lite", "full", "heavy"])
    args = parser.parse_args()
    photo = args.photo
    if photo in SKIMAGE_PHOTOS and not Path(photo).exists():
        import skimage.data

        photo = getattr(skimage.data, photo)()
    try:
        with PersonDetector(PersonConfig(model=args.model)) as detector:
            start = time.perf_counter()
            obs = detector.observe(photo)
            ms = 1000 * (time.perf_counter() - start)
    except (ImageInputError, PersonModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    draw_observation(photo, obs).save(args.out)
    print(f"{args.out}: {obs.num_people} people, person box {obs.person_box}, face box {obs.face_box}, "
          f"mask {100 * (obs.mask > 0.5).mean():.1f}% of the image, {ms:.0f} ms")
    for note in obs.notes:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
