"""``python -m viewer <avatar.glb | gaussians.ply> [--port 8080] [--host 127.0.0.1]`` or
``python -m viewer --demo [--resolution 128]``: serve an avatar in the browser until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .avatar import Avatar, demo_avatar, load_avatar
from .server import AvatarViewer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m viewer", description=__doc__.splitlines()[0])
    parser.add_argument("avatar", nargs="?", type=Path, help="a rigged .glb (reposable) or a .ply (static)")
    parser.add_argument("--demo", action="store_true", help="show a bare body instead of a file")
    parser.add_argument("--resolution", type=int, default=128, help="UV resolution of the --demo body")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port (the next free one if taken; 0: any)")
    parser.add_argument("--device", default="cpu", help="where reposing runs: cpu or cuda")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo == (args.avatar is not None):
        parser.error("give an avatar file or --demo (not both)")
    return args


def open_avatar(args: argparse.Namespace) -> Avatar:
    avatar = demo_avatar(args.resolution) if args.demo else load_avatar(args.avatar)
    avatar.gaussians = avatar.gaussians.to(args.device)
    return avatar


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        avatar = open_avatar(args)
    except (OSError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    viewer = AvatarViewer(avatar.gaussians, avatar.body, avatar.rest_joints, host=args.host,
                          port=args.port, title=f"sigman: {avatar.name}").start()
    print(f"Viewing {avatar.name} ({avatar.gaussians.num_gaussians} Gaussians) at {viewer.url}  (Ctrl-C to quit)")
    if not avatar.rigged:
        print("This avatar has no rig: it is shown static. Reposing needs a rigged .glb.")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
