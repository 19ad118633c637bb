"""Runs as `python -m emulator`: the same entry point as the `lingma-emulator` console script."""

from emulator.cli import main

if __name__ == "__main__":
    main()
