"""Runs `lingma-gw` as `python -m supervisor` (same CLI as the console script)."""

import sys

from supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
