"""Runs as `python -m worker --spec FILE`: a worker from a JSON-encoded WorkerSpec file."""

from __future__ import annotations

import argparse
import logging
import sys

import msgspec

from protocol.logs import configure_logging
from protocol.specs import WorkerSpec
from protocol.vocabulary import EXIT_CANNOT_START
from worker.worker import start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--spec", required=True, help="path of a JSON WorkerSpec")
    args = parser.parse_args(argv)
    try:
        with open(args.spec, "rb") as handle:
            spec = msgspec.json.decode(handle.read(), type=WorkerSpec)
    except (OSError, msgspec.DecodeError) as exc:
        problem = str(exc)
    else:
        start(spec)
        return
    configure_logging("worker:?")
    logging.getLogger("worker").error("unusable worker spec %s: %s", args.spec, problem)
    sys.exit(EXIT_CANNOT_START)


if __name__ == "__main__":
    main()
