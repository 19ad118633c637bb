"""Session cache: prefix keys, LRU + TTL, generation and flow checks, consume-on-use."""

from __future__ import annotations

import pytest

from protocol.chat import Message
from worker.sessions import SessionCache, conversation_key, split_latest_turn

pytestmark = pytest.mark.unit


def msg(role: str, text: str) -> Message:
    return Message(role=role, text=text)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_split_latest_turn_cuts_at_the_last_user_message() -> None:
    messages = [msg("system", "s"), msg("user", "a"), msg("assistant", "b"), msg("user", "c")]
    prefix, turn = split_latest_turn(messages)
    assert prefix == messages[:3] and turn == messages[3:]
    assert split_latest_turn([msg("assistant", "x")]) == ([], [msg("assistant", "x")])


def test_keys_separate_scopes_models_and_histories() -> None:
    history = [msg("user", "hi"), msg("assistant", "hello")]
    key = conversation_key("k1", "auto", history)
    assert key == conversation_key("k1", "auto", [msg("user", "hi"), msg("assistant", "hello ")])
    assert key != conversation_key("k2", "auto", history)
    assert key != conversation_key("k1", "kmodel", history)
    assert key != conversation_key("k1", "auto", [msg("user", "hi"), msg("user", "hello")])
    assert key != conversation_key("k1", "auto", [msg("user", "hihello")])


def test_take_consumes_and_checks_generation_flow_and_ttl() -> None:
    clock = Clock()
    cache = SessionCache(max_entries=10, ttl_s=60, clock=clock)
    cache.put("k", session_id="s1", generation=1, flow="acp")
    assert cache.take("k", generation=2, flow="acp") is None  # the binary restarted since
    cache.put("k", session_id="s1", generation=1, flow="acp")
    assert cache.take("k", generation=1, flow="legacy") is None
    cache.put("k", session_id="s1", generation=1, flow="acp")
    entry = cache.take("k", generation=1, flow="acp")
    assert entry is not None and entry.session_id == "s1"
    assert cache.take("k", generation=1, flow="acp") is None  # consumed
    cache.put("k", session_id="s2", generation=1, flow="acp")
    clock.now += 61
    assert cache.take("k", generation=1, flow="acp") is None


def test_lru_bound_prune_and_disabled_cache() -> None:
    clock = Clock()
    cache = SessionCache(max_entries=2, ttl_s=10, clock=clock)
    for name in ("a", "b", "c"):
        cache.put(name, session_id=name, generation=1, flow="acp")
    assert len(cache) == 2 and cache.take("a", generation=1, flow="acp") is None
    clock.now += 11
    assert cache.prune() == 2 and len(cache) == 0
    off = SessionCache(max_entries=0, ttl_s=10)
    off.put("a", session_id="a", generation=1, flow="acp")
    assert not off.enabled and len(off) == 0


def test_every_entry_let_go_is_discarded_except_on_clear() -> None:
    clock, discarded = Clock(), []
    cache = SessionCache(
        max_entries=2, ttl_s=60, clock=clock, on_discard=lambda e: discarded.append(e.session_id)
    )
    cache.put("a", session_id="s-a", generation=1, flow="acp")
    cache.put("b", session_id="s-b", generation=1, flow="acp")
    cache.put("c", session_id="s-c", generation=1, flow="acp")  # LRU: "a" goes
    cache.put("c", session_id="s-c2", generation=1, flow="acp")  # a twin replaces "c"
    cache.put("c", session_id="s-c2", generation=1, flow="acp")  # the same session: kept
    assert discarded == ["s-a", "s-c"]
    assert cache.take("b", generation=1, flow="legacy") is None  # wrong flow: let go
    assert discarded[-1] == "s-b"
    cache.put("d", session_id="s-d", generation=1, flow="acp")
    clock.now += 61
    assert cache.take("d", generation=1, flow="acp") is None  # expired
    cache.put("e", session_id="s-e", generation=1, flow="acp")
    clock.now += 61
    assert cache.prune() == 2  # "c" and "e"
    assert discarded[-3:] == ["s-d", "s-c2", "s-e"]
    cache.put("f", session_id="s-f", generation=1, flow="acp")
    cache.clear()  # the runtime's sessions are gone: nothing to delete
    assert "s-f" not in discarded
