"""Runs in the front: affinity keys and rendezvous hashing with bounded load (pure functions).

One conversation should land on the worker that holds its upstream session, and every front
must pick the same worker for it without talking to the others: rendezvous (highest random
weight) hashing of the affinity key over the READY workers gives exactly that, and moves only
the keys of a worker that leaves. Bounded load spills a hot key to its next-ranked worker
once its first choice carries more than `load_factor` times the average.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_LOAD_FACTOR = 1.25


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def affinity_source(
    *,
    header: str | None,
    user: str | None,
    system_text: str | None,
    first_text: str | None,
) -> str:
    """Which conversation a request belongs to, by the first signal present.

    Order: the client's explicit `x-lingma-affinity`, then `user`, then the system prompt,
    then the first message (a conversation's first turn never changes as it grows).
    """
    if header and header.strip():
        return "hdr:" + header.strip()
    if user and user.strip():
        return "user:" + user.strip()
    if system_text:
        return "sys:" + text_hash(system_text)
    if first_text:
        return "first:" + text_hash(first_text)
    return ""


_ECHOED_KEY = re.compile(r"[0-9a-f]{24}")


def affinity_hash(scope: str, source: str) -> str:
    """The routing key: partitioned by API-key scope so tenants never share a key space.

    A client (or load balancer) that echoes the `x-lingma-affinity` value we returned sends an
    already-computed key: it is used as-is, so the next turn reaches the same worker. Routing
    is all it steers; the worker's session cache stays partitioned by the API-key scope.
    """
    if source.startswith("hdr:") and _ECHOED_KEY.fullmatch(source[4:]):
        return source[4:]
    # surrogatepass: a header value that was not UTF-8 arrives with lone surrogates.
    return hashlib.sha256(f"{scope}\0{source}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def rendezvous_order(key: str, names: Sequence[str]) -> list[str]:
    """Names ranked by their hash weight for `key`: stable, independent of list order."""
    return sorted(names, key=lambda name: (_digest(key, name), name), reverse=True)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    load: int  # requests this front has in flight on that worker


def load_cap(total_load: int, workers: int, load_factor: float, hard_max: int) -> int:
    """Bounded-load ceiling for the next request: ceil(c · (total+1) / n), never above hard_max."""
    if workers <= 0:
        return 0
    return min(hard_max, math.ceil(load_factor * (total_load + 1) / workers))


def plan_attempts(
    key: str,
    candidates: Sequence[Candidate],
    *,
    hard_max: int,
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> list[str]:
    """Workers to try, in order: under-cap ones by rank, then over-cap ones below hard_max.

    The first entry is where the request goes; the rest are retry targets. A worker at
    `hard_max` is left out entirely; an empty result means "all workers are full".
    """
    by_name = {c.name: c for c in candidates}
    ranked = rendezvous_order(key, list(by_name))
    cap = load_cap(sum(c.load for c in candidates), len(candidates), load_factor, hard_max)
    preferred = [n for n in ranked if by_name[n].load < cap]
    spill = [n for n in ranked if cap <= by_name[n].load < hard_max]
    return preferred + spill
