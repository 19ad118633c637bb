"""Runs first thing in each spawned child: its process title, then the component's `run`.

The spawn start method pickles the child's target by reference, so the child imports the
module that defines it before anything else. That module is this small one rather than
supervisor/spawn.py, whose aiomultiprocess import (and multiprocessing's managers, tempfile,
shutil, bz2, lzma behind it) no front or worker uses: about 1 MiB of every child's RSS.
"""

from __future__ import annotations

import importlib

import setproctitle


def set_title(title: str) -> None:
    setproctitle.setproctitle(title)


def child_main(module: str, spec_bytes: bytes, title: str = "") -> None:
    """The spawned child's target: take its title, import the component, hand it its spec."""
    if title:
        set_title(title)
    importlib.import_module(module).run(spec_bytes)
