"""lingma-emulator quirk knobs: how they are read from the environment, and the off-by-one rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from emulator.connection import ClientConnection
from emulator.delivery import AskChain, Attribution, acked_within, attribution_for
from emulator.settings import Knobs, SettingsError, knobs_from_env

pytestmark = pytest.mark.unit


def test_quirks_are_off_by_default() -> None:
    knobs = knobs_from_env({})
    assert not (knobs.off_by_one or knobs.broadcast or knobs.require_machine_token)
    assert knobs.off_by_one_ack_ms == 1000


def test_quirk_knobs_parse_like_the_other_flags() -> None:
    knobs = knobs_from_env(
        {
            "LINGMA_EMULATOR_OFF_BY_ONE": "1",
            "LINGMA_EMULATOR_OFF_BY_ONE_ACK_MS": "250",
            "LINGMA_EMULATOR_BROADCAST": "yes",
            "LINGMA_EMULATOR_REQUIRE_MACHINE_TOKEN": "on",
        }
    )
    assert knobs.off_by_one and knobs.broadcast and knobs.require_machine_token
    assert knobs.off_by_one_ack_ms == 250
    assert not knobs_from_env({"LINGMA_EMULATOR_BROADCAST": "0"}).broadcast


def test_open_question_variants_are_off_by_default_and_parse() -> None:
    knobs = knobs_from_env({})
    assert not (knobs.single_client or knobs.cancel_no_reply or knobs.session_new_hang)
    assert (knobs.session_new_error, knobs.acp_finish_status, knobs.noise_ms) == (0, False, 0)
    knobs = knobs_from_env(
        {
            "LINGMA_EMULATOR_SINGLE_CLIENT": "1",
            "LINGMA_EMULATOR_CANCEL_NO_REPLY": "yes",
            "LINGMA_EMULATOR_SESSION_NEW_HANG": "on",
            "LINGMA_EMULATOR_SESSION_NEW_ERROR": "-32603",
            "LINGMA_EMULATOR_ACP_FINISH_STATUS": "true",
            "LINGMA_EMULATOR_NOISE_MS": "50",
        }
    )
    assert knobs.single_client and knobs.cancel_no_reply and knobs.session_new_hang
    assert (knobs.session_new_error, knobs.acp_finish_status, knobs.noise_ms) == (-32603, True, 50)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_NEW_ERROR", "oops"),
        ("NOISE_MS", "-5"),
        ("SINGLE_CLIENT", "sometimes"),
        ("OFF_BY_ONE", "maybe"),
        ("BROADCAST", "2"),
        ("REQUIRE_MACHINE_TOKEN", "required"),
        ("OFF_BY_ONE_ACK_MS", "-1"),
        ("OFF_BY_ONE_ACK_MS", "60001"),
        ("OFF_BY_ONE_ACK_MS", "soon"),
    ],
)
def test_bad_quirk_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"LINGMA_EMULATOR_{name}"):
        knobs_from_env({f"LINGMA_EMULATOR_{name}": value})


def connection() -> ClientConnection:
    async def sink(text: str) -> None:
        return None

    async def closer() -> None:
        return None

    async def handler(conn: ClientConnection, method: str, params: Any) -> Any:
        return None

    return ClientConnection(sink=sink, closer=closer, handler=handler, knobs=Knobs(users={}))


async def test_each_accepted_ask_is_the_successor_of_the_previous_one_on_its_connection() -> None:
    chain, conn, other = AskChain(), connection(), connection()
    first = chain.arrive(conn, Attribution("r-1", "s"))
    elsewhere = chain.arrive(other, Attribution("x-1", "s"))
    second = chain.arrive(conn, Attribution("r-2", "s"))
    assert first.result() == Attribution("r-2", "s") and not elsewhere.done()
    chain.forget(conn, second)
    assert second.cancelled() and conn not in chain.waiting
    chain.forget(other, first)  # a stale slot never removes another connection's entry
    assert chain.waiting[other] is elsewhere


async def test_an_answer_stays_with_its_ask_when_every_step_push_was_acked() -> None:
    loop = asyncio.get_running_loop()
    acked: asyncio.Future[None] = loop.create_future()
    acked.set_result(None)
    own = Attribution("r-1", "s")
    successor: asyncio.Future[Attribution] = loop.create_future()
    assert await attribution_for(own, successor, [acked, None], 0) == own
    assert await acked_within([None, None], 0)  # notifications need no ack


async def test_an_unacked_answer_goes_to_the_next_ask() -> None:
    loop = asyncio.get_running_loop()
    unacked: asyncio.Future[None] = loop.create_future()
    successor: asyncio.Future[Attribution] = loop.create_future()
    successor.set_result(Attribution("r-2", "s-2"))
    target = await attribution_for(Attribution("r-1", "s"), successor, [unacked], 0)
    assert target == Attribution("r-2", "s-2") and unacked.cancelled()


async def test_without_the_knob_nothing_waits_for_acks() -> None:
    unacked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    own = Attribution("r-1", "s")
    assert await attribution_for(own, None, [unacked], 3600) == own
    assert not unacked.done()
