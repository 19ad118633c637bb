"""Runs the front as a process: `python -m front --spec FILE` (a JSON-encoded FrontSpec)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from front.process import _main
from protocol.specs import FrontSpec
from protocol.vocabulary import EXIT_CANNOT_START


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m front", description="lingma-gw HTTP front")
    parser.add_argument("--spec", required=True, type=Path, help="FrontSpec as JSON")
    args = parser.parse_args(argv)
    try:
        spec = msgspec.json.decode(args.spec.read_bytes(), type=FrontSpec)
    except (OSError, msgspec.DecodeError) as exc:
        print(f"front: bad spec {args.spec}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)
    _main(spec)


if __name__ == "__main__":
    main()
