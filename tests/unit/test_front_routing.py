"""Routing: rendezvous hashing with bounded load, and the affinity signal order."""

from __future__ import annotations

import collections

import pytest

from front.routing import (
    Candidate,
    affinity_hash,
    affinity_source,
    load_cap,
    plan_attempts,
    rendezvous_order,
)

pytestmark = pytest.mark.unit

WORKERS = ["acct-a", "acct-b", "acct-c", "acct-d"]


def test_order_is_independent_of_list_order() -> None:
    for key in (f"k{i}" for i in range(50)):
        assert rendezvous_order(key, WORKERS) == rendezvous_order(key, list(reversed(WORKERS)))


def test_keys_spread_over_workers() -> None:
    firsts = collections.Counter(rendezvous_order(f"key-{i}", WORKERS)[0] for i in range(2000))
    assert set(firsts) == set(WORKERS)
    assert min(firsts.values()) > 2000 / len(WORKERS) * 0.7


def test_removing_a_worker_moves_only_its_keys() -> None:
    keys = [f"key-{i}" for i in range(1000)]
    before = {k: rendezvous_order(k, WORKERS)[0] for k in keys}
    after = {k: rendezvous_order(k, WORKERS[:-1])[0] for k in keys}
    for key in keys:
        if before[key] != WORKERS[-1]:
            assert after[key] == before[key]
        else:
            assert after[key] == rendezvous_order(key, WORKERS)[1]


def test_idle_workers_follow_rank() -> None:
    candidates = [Candidate(n, 0) for n in WORKERS]
    assert plan_attempts("conv", candidates, hard_max=64) == rendezvous_order("conv", WORKERS)


def test_hot_key_spills_to_next_ranked_worker() -> None:
    ranked = rendezvous_order("hot", WORKERS)
    loads = {ranked[0]: 3, ranked[1]: 0, ranked[2]: 0, ranked[3]: 0}
    # cap = ceil(1.25 * 4 / 4) = 2: the first choice (3 in flight) is over it.
    attempts = plan_attempts("hot", [Candidate(n, loads[n]) for n in WORKERS], hard_max=64)
    assert attempts[0] == ranked[1]
    assert attempts[-1] == ranked[0]  # still a retry target, below the hard max


def test_light_imbalance_keeps_affinity() -> None:
    ranked = rendezvous_order("conv", WORKERS)
    loads = dict.fromkeys(WORKERS, 2) | {ranked[0]: 3}
    attempts = plan_attempts("conv", [Candidate(n, loads[n]) for n in WORKERS], hard_max=64)
    assert attempts[0] == ranked[0]  # cap = ceil(1.25 * 10 / 4) = 4 > 3


def test_hard_max_excludes_full_workers() -> None:
    attempts = plan_attempts("k", [Candidate("a", 8), Candidate("b", 1)], hard_max=8)
    assert attempts == ["b"]
    assert plan_attempts("k", [Candidate("a", 8)], hard_max=8) == []


def test_load_cap_edges() -> None:
    assert load_cap(0, 0, 1.25, 10) == 0
    assert load_cap(0, 1, 1.25, 10) == 2
    assert load_cap(100, 2, 1.25, 10) == 10


def test_affinity_signal_order() -> None:
    full = {"header": "h", "user": "u", "system_text": "s", "first_text": "f"}
    assert affinity_source(**full) == "hdr:h"
    assert affinity_source(**(full | {"header": None})) == "user:u"
    assert affinity_source(**(full | {"header": " ", "user": ""})).startswith("sys:")
    none = {"header": None, "user": None, "system_text": None}
    assert affinity_source(**none, first_text="f").startswith("first:")
    assert affinity_source(**none, first_text=None) == ""


def test_affinity_hash_is_scoped_and_opaque() -> None:
    a = affinity_hash("scope-1", "user:alice")
    assert a == affinity_hash("scope-1", "user:alice")
    assert a != affinity_hash("scope-2", "user:alice")
    assert "alice" not in a and len(a) == 24


def test_an_echoed_affinity_key_routes_exactly_like_the_turn_that_produced_it() -> None:
    first = affinity_hash("scope-a", "user:alice")
    assert affinity_hash("scope-a", "hdr:" + first) == first
    # anything that is not one of our keys is hashed, never trusted verbatim
    assert affinity_hash("scope-a", "hdr:conversation-42") != "conversation-42"
    assert len(affinity_hash("scope-a", "hdr:ABCDEF0123456789abcdef01")) == 24
