"""Shared by every process: the control protocol's version, carried by every control request."""

from __future__ import annotations

API_VERSION = 1
