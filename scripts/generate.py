"""Photo + pose -> an animatable Gaussian avatar (the ``sigman-generate`` command, from a checkout).

    python scripts/generate.py --image assets/examples/person_00.png --pose photo --motion walk_cycle --out outputs/gen

See :mod:`sigman.generate` (``--help``) for the options, their limits and the files it writes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigman.generate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
