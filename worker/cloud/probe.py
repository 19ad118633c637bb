"""Runs as `python -m worker.cloud.probe`: one signed model list and one tiny chat, reported.

For `lingma-gw doctor ACCOUNT --cloud`: it checks an account's cloud backend against the real
service and prints what came back — HTTP status, content type, the envelope's shape (envelope
or bare chunks, `data:` spacing, how `[DONE]` arrives), the error code, the answer's length —
never a key, token or `info` (headers are shown redacted, bodies are not echoed).

    python -m worker.cloud.probe --work-dir DIR [--base-url URL] [--credential-file F]
                                 [--chat] [--model KEY] [--json]

Without `--base-url` the base comes from the work dir's config files and logs (§14.2 steps
3-5; a caller that can ask the runtime passes its `config/getEndpoint` answer as --base-url).
Exit status 0 when every step succeeded, 1 otherwise, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from protocol.chat import ChatTurn
from worker.cloud import discovery
from worker.cloud.body import BodyInput, build_body
from worker.cloud.client import CHAT_PATH, CHAT_QUERY, MODELS_PATH
from worker.cloud.credential import Credential, CredentialError, CredentialStore
from worker.cloud.errors import classify
from worker.cloud.signing import redacted, signed_headers
from worker.cloud.sse import (
    DoneSeen,
    FinishSeen,
    InBandError,
    SseDecoder,
    TextPiece,
    ToolFragment,
    UsageSeen,
)

PROBE_PROMPT = "Reply with the single word OK."
TIMEOUT_S = 60.0
SHOWN_LINES = 3
SHOWN_CHARS = 240


@dataclass
class Step:
    name: str
    ok: bool = False
    status: int = 0
    content_type: str = ""
    error: str = ""
    code: str = ""
    millis: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeReport:
    base_url: str
    base_source: str
    credential: dict[str, Any]
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)


def describe_credential(credential: Credential) -> dict[str, Any]:
    """What can be shown: where it came from, lengths, and the expiry — no values."""
    expires = credential.expire_ms / 1000 if credential.expire_ms else 0
    return {
        "source": credential.source,
        "key_chars": len(credential.cosy_key),
        "info_chars": len(credential.encrypt_user_info),
        "machine_id_chars": len(credential.machine_id),
        "expires_in_days": round((expires - time.time()) / 86400, 1) if expires else None,
    }


def wire_shape(lines: list[str]) -> dict[str, Any]:
    """How the stream looked: data spacing, envelopes, the [DONE] form, a few leading lines."""
    data = [line for line in lines if line.startswith("data:")]
    done_form = "none"
    if any(line[5:].strip() == "[DONE]" for line in data):
        done_form = "bare"
    elif any('"body":"[DONE]"' in line for line in data):
        done_form = "envelope"
    return {
        "data_space": any(line.startswith("data: ") for line in data),
        "envelope": any('"statusCodeValue"' in line or '"body"' in line for line in data),
        "done_form": done_form,
        "first_lines": [line[:SHOWN_CHARS] for line in data[:SHOWN_LINES]],
    }


async def probe_models(http: aiohttp.ClientSession, base: str, credential: Credential) -> Step:
    step = Step("model list")
    headers = signed_headers(credential, path=MODELS_PATH, body=b"", accept="application/json")
    step.details["request_headers"] = redacted(headers)
    started = time.monotonic()
    async with http.get(base + MODELS_PATH, headers=headers) as response:
        raw = await response.read()
        step.status, step.content_type = response.status, response.content_type
    step.millis = round((time.monotonic() - started) * 1000, 1)
    if step.status >= 400:
        failure = classify(step.status, raw.decode("utf-8", "replace"), where="model list")
        step.error, step.code = failure.message, failure.code
        return step
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        step.error = "the model list is not JSON (a wrong base URL?)"
        return step
    scenes = (
        {k: len(v) for k, v in payload.items() if isinstance(v, list)}
        if isinstance(payload, dict)
        else {}
    )
    step.details["scenes"] = scenes
    step.ok = bool(scenes)
    step.error = "" if scenes else "no scene lists in the answer (a wrong base URL?)"
    return step


async def probe_chat(
    http: aiohttp.ClientSession, base: str, credential: Credential, model: str
) -> Step:
    step = Step("chat")
    turns = [ChatTurn(role="user", text=PROBE_PROMPT)]
    _rid, body = build_body(BodyInput(turns=turns, model_key=model))
    headers = signed_headers(credential, path=CHAT_PATH, body=body)
    step.details["request_headers"] = redacted(headers)
    started = time.monotonic()
    async with http.post(base + CHAT_PATH + CHAT_QUERY, data=body, headers=headers) as response:
        raw = await response.read()
        step.status, step.content_type = response.status, response.content_type
    step.millis = round((time.monotonic() - started) * 1000, 1)
    text = raw.decode("utf-8", "replace")
    if step.status >= 400:
        failure = classify(step.status, text, where="chat")
        step.error, step.code = failure.message, failure.code
        return step
    step.details.update(wire_shape(text.splitlines()))
    events = SseDecoder().feed(raw)
    answer = "".join(e.text for e in events if isinstance(e, TextPiece))
    errors = [e for e in events if isinstance(e, InBandError)]
    finish = next((e.reason for e in events if isinstance(e, FinishSeen)), "")
    step.details.update(
        events=len(events),
        answer_chars=len(answer),
        finish_reason=finish,
        usage=any(isinstance(e, UsageSeen) for e in events),
        tool_fragments=sum(isinstance(e, ToolFragment) for e in events),
        done=any(isinstance(e, DoneSeen) for e in events),
    )
    if errors:
        step.status, step.code = errors[0].status, errors[0].code
        step.error = f"in-band error {errors[0].status}: {errors[0].message}"
    step.ok = not errors and bool(answer) and bool(finish or step.details["done"])
    return step


async def run_probe(args: argparse.Namespace) -> ProbeReport:
    work_dir = Path(args.work_dir)
    found = discovery.candidates(
        explicit=args.base_url,
        runtime_endpoint="",
        dedicated_domain="",
        binary_args=[],
        work_dir=work_dir,
    )
    report = ProbeReport(found[0].url, found[0].source, {})
    try:
        credential = CredentialStore(work_dir, args.credential_file or "").current()
    except CredentialError as exc:
        report.steps.append(Step("credential", error=str(exc)))
        return report
    report.credential = describe_credential(credential)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as http:
        probes: list[tuple[str, Callable[[], Awaitable[Step]]]] = [
            ("model list", functools.partial(probe_models, http, report.base_url, credential))
        ]
        if args.chat:
            chat = functools.partial(probe_chat, http, report.base_url, credential, args.model)
            probes.append(("chat", chat))
        for name, probe in probes:
            try:
                step = await probe()
            except (aiohttp.ClientError, TimeoutError) as exc:
                step = Step(name, error=f"{type(exc).__name__}: {exc}")
            report.steps.append(step)
    return report


def render(report: ProbeReport) -> str:
    lines = [f"cloud base URL: {report.base_url} (from {report.base_source})"]
    if report.credential:
        lines.append(f"credential: {report.credential}")
    for step in report.steps:
        verdict = "OK" if step.ok else "FAILED"
        lines.append(
            f"{step.name}: {verdict} - HTTP {step.status} {step.content_type} in {step.millis} ms"
        )
        if step.error:
            lines.append(f"  error: {step.error}" + (f" (code {step.code})" if step.code else ""))
        for key, value in step.details.items():
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.cloud.probe", description=__doc__)
    parser.add_argument("--work-dir", required=True, help="the account's Lingma work dir")
    parser.add_argument("--base-url", default="", help="the cloud base URL (default: discover)")
    parser.add_argument("--credential-file", default="", help="an LP-format credential file")
    parser.add_argument("--chat", action="store_true", help="also send one tiny chat")
    parser.add_argument("--model", default="auto", help="model key for the chat (auto)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    report = asyncio.run(run_probe(args))
    print(msgspec.json.encode(asdict(report)).decode() if args.json else render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
