"""Photo + pose -> an animatable Gaussian avatar (the ``sigman-generate`` command, from a checkout).

    python scripts/generate.py --image assets/examples/person_00.png --pose assets/poses/waving.npz --out outputs/gen

See :mod:`sigman.cli` (``--help``) for the options and the files it writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
