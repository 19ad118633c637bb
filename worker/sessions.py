"""Runs in the worker: the upstream session cache (conversation prefix -> Lingma session id).

A client resends the whole conversation every turn. When the conversation so far (everything
before the latest user turn) was produced through one of our upstream sessions, we continue that
session and send only the new turn: the runtime keeps the context, and the prompt stays small.

Keys hash the API-key scope, the model and the messages, so entries never cross clients or
models. An entry is consumed when used (a conversation that branches from the same prefix gets
a fresh session instead of one that already holds another branch) and re-stored under the
extended conversation after a successful answer. Entries carry the binary generation; the whole
cache is dropped when the binary restarts, because the runtime's sessions died with it. Every
other entry the cache lets go of (LRU, TTL, a replaced twin) goes to `on_discard`, so the
worker can delete that session upstream (worker/reaper.py).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import msgspec

from protocol.chat import Message

_encoder = msgspec.msgpack.Encoder()


class SessionEntry(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    flow: str  # legacy | acp: a session id is only meaningful to the flow that made it
    generation: int  # binary start counter
    expires_at: float = 0.0


def conversation_key(scope: str, model: str, messages: Sequence[Message]) -> str:
    """Stable hash of (scope, model, every message's role and text, and its images if any)."""
    payload = _encoder.encode([scope, model, [_identity(m) for m in messages]])
    return hashlib.sha256(payload).hexdigest()


def _identity(message: Message) -> tuple[str, ...]:
    """What makes a message itself: the same words with another image are another turn."""
    base = (message.role, message.name, message.text.strip())
    if not message.images:
        return base
    digest = hashlib.sha256()
    for image in message.images:
        digest.update(f"{image.media_type}\0{image.url}\0{image.data_b64}\0".encode())
    return (*base, digest.hexdigest())


def split_latest_turn(messages: Sequence[Message]) -> tuple[list[Message], list[Message]]:
    """(prefix, turn): the turn starts at the last user message; the prefix is what came before."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return list(messages[:index]), list(messages[index:])
    return [], list(messages)


class SessionCache:
    """LRU + TTL map of conversation keys to upstream sessions; size 0 disables it."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_discard: Callable[[SessionEntry], None] = lambda _entry: None,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._on_discard = on_discard
        self._entries: OrderedDict[str, SessionEntry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: str, *, generation: int, flow: str) -> SessionEntry | None:
        """Remove and return the live entry for `key`, or None (expired, stale or absent)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        if entry.expires_at <= self._clock() or entry.generation != generation:
            self._on_discard(entry)
            return None
        if entry.flow != flow:
            self._on_discard(entry)
            return None
        return entry

    def put(self, key: str, *, session_id: str, generation: int, flow: str) -> None:
        if not self.enabled or not session_id:
            return
        twin = self._entries.pop(key, None)  # the same conversation answered twice at once
        if twin is not None and twin.session_id != session_id:
            self._on_discard(twin)
        self._entries[key] = SessionEntry(
            session_id=session_id,
            flow=flow,
            generation=generation,
            expires_at=self._clock() + self.ttl_s,
        )
        while len(self._entries) > self.max_entries:
            self._on_discard(self._entries.popitem(last=False)[1])

    def clear(self) -> None:
        """Forget every entry without discarding: for when the runtime's sessions are gone."""
        self._entries.clear()

    def prune(self) -> int:
        """Drop expired entries; returns how many went."""
        now = self._clock()
        stale = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in stale:
            self._on_discard(self._entries.pop(key))
        return len(stale)
