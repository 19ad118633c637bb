"""The front's serving state: one guarded move per edge, and what each state does to replies."""

from __future__ import annotations

import pytest

from front.context import DrainOrder, FrontContext, ServeState
from tests.specs import front_spec

pytestmark = pytest.mark.unit


def test_serving_then_handing_over_closes_connections_without_refusing() -> None:
    ctx = FrontContext.from_spec(front_spec())
    assert ctx.state is ServeState.STARTING and not ctx.state.closing
    ctx.move_to(ServeState.SERVING)
    ctx.move_to(ServeState.HANDING_OVER)
    assert ctx.state.closing and ctx.state is not ServeState.DRAINING
    with pytest.raises(RuntimeError, match="handing_over -> draining"):
        ctx.move_to(ServeState.DRAINING)


def test_a_shutdown_drains_and_no_state_leads_back_to_serving() -> None:
    ctx = FrontContext.from_spec(front_spec())
    ctx.move_to(ServeState.SERVING)
    ctx.move_to(ServeState.DRAINING)
    assert ctx.state.closing
    with pytest.raises(RuntimeError):
        ctx.move_to(ServeState.SERVING)


def test_the_last_drain_order_wins() -> None:
    ctx = FrontContext.from_spec(front_spec())
    assert ctx.drain_order is None and not ctx.drain_requested.is_set()
    ctx.request_drain(10.0, handover=True)
    ctx.request_drain(0.0)
    assert ctx.drain_order == DrainOrder(0.0) and ctx.drain_requested.is_set()
