"""Shared by front and worker: turn a prometheus-client registry into IPC `MetricFamily` Structs.

Duck-typed over `registry.collect()` (objects with name/type/documentation/samples) so this
leaf package does not import prometheus-client; the supervisor rebuilds real families from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.child_socket import MetricFamily, MetricSample


def snapshot(families: Iterable[Any]) -> list[MetricFamily]:
    return [
        MetricFamily(
            name=family.name,
            kind=family.type,
            help=family.documentation,
            samples=[
                MetricSample(name=s.name, labels=dict(s.labels), value=float(s.value))
                for s in family.samples
            ],
        )
        for family in families
    ]
