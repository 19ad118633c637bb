"""Runs in the bench: scenario 7 — tokens sent upstream for one conversation, cache on vs off.

The same multi-turn conversation goes through a gateway with the session cache and one
without it. What went upstream is read back from the emulator's request log
(LINGMA_EMULATOR_RECORD, one JSON line per chat request), so the count is what the runtime
really received, estimated with the emulator's own rule of about four characters per token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench.bodies import GATEWAY_MODEL
from bench.gateway import API_KEY, BenchGateway
from bench.procs import BenchError

TURN_TIMEOUT_S = 30.0


class _Record(msgspec.Struct):
    text: str = ""
    flow: str = ""
    session_id: str = ""
    accepted: bool = True
    event: str = ""  # "" for a chat request; other lines (e.g. "tool" outcomes) are not asks


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    choices: list[_Choice]


def estimate_tokens(text: str) -> int:
    """The emulator's estimate (four characters per token), so both sides count alike."""
    return (len(text) + 3) // 4


def _read_records(path: Path, offset: int) -> list[_Record]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().splitlines()
    records = [msgspec.json.decode(line, type=_Record) for line in lines if line.strip()]
    return [record for record in records if not record.event]


def _question(turn: int) -> str:
    return f"Turn {turn}: give me one more short fact about lighthouses, number {turn}."


async def conversation(gateway: BenchGateway, turns: int) -> dict[str, Any]:
    """Send `turns` growing requests (the whole history each time, as clients do)."""
    if gateway.record_path is None:
        raise BenchError(f"gateway {gateway.setup.name} has no request log")
    offset = gateway.record_path.stat().st_size if gateway.record_path.exists() else 0
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a concise assistant for a benchmark."}
    ]
    client_tokens = 0
    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for turn in range(1, turns + 1):
            messages.append({"role": "user", "content": _question(turn)})
            client_tokens += sum(estimate_tokens(m["content"]) for m in messages)
            body = {"model": GATEWAY_MODEL, "messages": messages}
            url = f"{gateway.url}/v1/chat/completions"
            async with session.post(url, json=body, headers=headers) as response:
                raw = await response.read()
                if response.status != 200:
                    raise BenchError(f"turn {turn}: HTTP {response.status}: {raw[:200]!r}")
            answer = msgspec.json.decode(raw, type=_Completion).choices[0].message.content or ""
            messages.append({"role": "assistant", "content": answer})
    records = _read_records(gateway.record_path, offset)
    upstream = sum(estimate_tokens(r.text) for r in records)
    return {
        "turns": turns,
        "seconds": round(time.monotonic() - started, 2),
        "upstream_requests": len(records),
        "upstream_sessions": len({r.session_id for r in records if r.session_id}),
        "upstream_tokens": upstream,
        "upstream_flows": sorted({r.flow for r in records}),
        "client_sent_tokens": client_tokens,
    }


def compare(with_cache: dict[str, Any], without_cache: dict[str, Any]) -> dict[str, Any]:
    on, off = with_cache["upstream_tokens"], without_cache["upstream_tokens"]
    return {
        "with_cache": with_cache,
        "without_cache": without_cache,
        "tokens_saved": off - on,
        "upstream_token_ratio": round(on / off, 4) if off else None,
    }
