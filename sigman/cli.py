"""What every command-line script shares: an argument parser whose errors are one line, argument
types that check a documented range, and :func:`run_main`, which turns every expected error into
one ``error: ...`` line and exit code 2 (never a traceback).

    parser = OneLineParser(description=__doc__)
    parser.add_argument("--size", type=int_in(64, 2048), default=512)
    ...
    sys.exit(run_main(lambda: main(parser.parse_args())))
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from sigman.settings import SettingError, check_float, check_int

EXIT_USAGE = 2  # a user error: bad argument, unreadable input, missing weights
EXIT_BUG = 1  # an unexpected exception (a bug): one line, and --debug / SIGMAN_DEBUG=1 shows the traceback
EXIT_INTERRUPTED = 130
DEBUG_ENV = "SIGMAN_DEBUG"


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: ... (see --help)``."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _ranged(check: Callable, low, high, name: str) -> Callable[[str], float]:
    """An argparse ``type`` running one of :mod:`sigman.settings`' checks, its message made argparse's."""
    def parse(text: str):
        try:
            return check("value", text, low, high)
        except SettingError as err:
            raise argparse.ArgumentTypeError(str(err).replace("value ", "", 1)) from None
    parse.__name__ = name
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[low, high]``."""
    return _ranged(check_int, low, high, f"int in [{low}, {high}]")


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]``."""
    return _ranged(check_float, low, high, f"number in [{low:g}, {high:g}]")


def writable_folder(path: Path, what: str = "--out") -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it; raises
    :class:`SettingError` naming the folder and the reason."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SettingError(f"{what} {path} is a file, not a folder: pass a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".sigman-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SettingError(f"{what} {path} cannot be written ({err.strerror or type(err).__name__}): "
                           "pass a folder you can write to") from None
    return path


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message is meant for the user as is."""
    from sigman.pose import PoseFileError
    from sigman.preprocess import ImageInputError
    from sigman.weights import WeightsError

    return SettingError, ImageInputError, PoseFileError, WeightsError


def describe(err: BaseException, expected: tuple[type[BaseException], ...] = ()) -> Optional[str]:
    """The one line to print for an expected failure (``expected`` adds a script's own error
    types), ``None`` for a bug."""
    import torch

    if isinstance(err, expected_errors() + tuple(expected)):
        return str(err)
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"out of disk space while writing {err.filename or 'the results'}: free some space and try again"
    if isinstance(err, OSError):
        where = f" {err.filename}" if err.filename else ""
        return f"cannot read or write{where}: {err.strerror or err}"
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "the GPU ran out of memory: use a smaller --size, fewer --views, or --device cpu"
    if isinstance(err, MemoryError):
        return "out of memory: use a smaller --size or fewer --views / --frames"
    return None


def run_main(main: Callable[[], Optional[int]], debug: Optional[bool] = None,
             expected: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``main`` and return its exit code; an expected error prints ``error: ...`` (one line,
    exit 2; ``expected`` adds a script's own error types), Ctrl-C prints ``interrupted`` (130), and anything else prints one line naming the
    exception as a bug (exit 1) unless ``debug`` (or ``$SIGMAN_DEBUG=1``), which re-raises it."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") if debug is None else debug
    try:
        return main() or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the point of this function
        if debug:
            raise
        message = describe(err, expected)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USAGE
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"error: unexpected {type(err).__name__}: {first} (a bug: please report it; rerun with "
              f"{DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_BUG


def run_command(parse: Callable[[], object], work: Callable[[object], Optional[int]],
                expected: tuple[type[BaseException], ...] = ()) -> int:
    """A script's whole ``main``: ``parse()`` its arguments (``--help`` or a bad argument, already
    reported in one line, returns argparse's exit code), then ``work(args)`` under :func:`run_main`."""
    try:
        args = parse()
    except SystemExit as done:
        return int(done.code or 0)
    return run_main(lambda: work(args), expected=expected)
