"""One metrics namespace: every series a gateway exposes starts with `lingma_gw_`."""

from __future__ import annotations

import pytest

from front.metrics import FrontMetrics
from supervisor.metrics import MetricsAggregate
from worker.metrics import WorkerMetrics

pytestmark = pytest.mark.unit


def test_worker_series_are_lingma_gw_worker() -> None:
    names = [family.name for family in WorkerMetrics().families()]
    assert names and all(name.startswith("lingma_gw_worker_") for name in names), names


def test_front_series_are_lingma_gw() -> None:
    names = [family.name for family in FrontMetrics().families()]
    assert names and all(name.startswith("lingma_gw_") for name in names), names
    assert not any(name.startswith("lingma_gw_worker_") for name in names), names


def test_the_supervisors_own_series_are_lingma_gw() -> None:
    lines = MetricsAggregate(list).render().splitlines()
    names = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert names and all(name.startswith("lingma_gw_") for name in names), names
