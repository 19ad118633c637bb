"""Runs as `python -m worker.cloud.probe` (behind `lingma-gw doctor NAME --cloud`): one signed
model list and one tiny chat against an account's cloud API, reported.

It checks an account's cloud backend against the real service and prints what came back —
HTTP status, content type, the envelope's shape (envelope or bare chunks, `data:` spacing, how
`[DONE]` arrives), the error code, the answer's length — never a key, token or `info` (headers
are shown redacted, bodies are not echoed).

    python -m worker.cloud.probe --spec - [--chat] [--model KEY] [--json]
    python -m worker.cloud.probe --work-dir DIR [--base-url URL] [--credential-file F]
                                 [--chat] [--model KEY] [--json]

With `--spec -` (the account's WorkerSpec on stdin, as `lingma-gw doctor` hands it over) the
base URL is found the way the worker finds it (§14.2): the configured `cloud_base_url`, else
the first candidate whose model list answers among the running runtime's
`config/getEndpoint`, the dedicated domain, `--endpoint`, the work dir's files and the region
default. With `--work-dir` only the explicit `--base-url`, the files and the region default
are known. Exit status 0 when every step succeeded, 1 otherwise, 2 for unusable arguments.
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
from protocol.specs import WorkerSpec
from worker.cloud import discovery
from worker.cloud.body import BodyInput, build_body
from worker.cloud.client import CHAT_PATH, CHAT_QUERY, MODELS_PATH
from worker.cloud.credential import Credential, CredentialError, CredentialStore
from worker.cloud.errors import FailureKind, classify
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
from worker.discovery import machine_token_headers, read_discovery
from worker.rpc import RpcClosed, RpcConnection, RpcError

PROBE_PROMPT = "Reply with the single word OK."
TIMEOUT_S = 60.0
ATTACH_TIMEOUT_S = 5.0
EXIT_USAGE = 2
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
    kind: str = ""  # the failure's kind (worker/cloud/errors.py), when it failed
    millis: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeReport:
    base_url: str
    base_source: str
    credential: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # base URLs whose model list failed first

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
        step.error, step.code, step.kind = failure.message, failure.code, failure.kind.value
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
        step.error, step.code, step.kind = failure.message, failure.code, failure.kind.value
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


@dataclass(frozen=True)
class Target:
    """Whose cloud to probe: the work dir holding the login, and where the API may live."""

    work_dir: Path
    credential_file: str
    candidates: list[discovery.BaseUrlCandidate]


def target_from_args(args: argparse.Namespace) -> Target:
    work_dir = Path(args.work_dir)
    found = discovery.candidates(
        explicit=args.base_url,
        runtime_endpoint="",
        dedicated_domain="",
        binary_args=[],
        work_dir=work_dir,
    )
    return Target(work_dir, args.credential_file or "", found)


async def target_from_spec(spec: WorkerSpec) -> Target:
    """The candidates the worker would try (worker/cloud/access.py), in its order."""
    work_dir = Path(spec.work_dir)
    endpoint = "" if spec.cloud_base_url else await ask_runtime_endpoint(work_dir)
    found = discovery.candidates(
        explicit=spec.cloud_base_url,
        runtime_endpoint=endpoint,
        dedicated_domain=spec.dedicated_domain_url,
        binary_args=spec.binary_args,
        work_dir=work_dir,
    )
    return Target(work_dir, spec.cloud_credential_file, found)


async def ask_runtime_endpoint(work_dir: Path) -> str:
    """The running runtime's `config/getEndpoint` answer; "" when no runtime answers."""
    running = read_discovery(work_dir)
    if running is None:
        return ""
    async with aiohttp.ClientSession() as http:
        try:
            conn = await RpcConnection.open(
                http,
                running.port,
                timeout=ATTACH_TIMEOUT_S,
                headers=machine_token_headers(work_dir),
            )
        except RpcClosed:
            return ""
        try:
            await conn.initialize(work_dir / "workspace", ATTACH_TIMEOUT_S)
            reply = await conn.call("config/getEndpoint", {}, ATTACH_TIMEOUT_S)
        except (RpcClosed, RpcError, TimeoutError):
            return ""
        finally:
            await conn.close()
    return discovery.endpoint_of(reply)


async def guarded(name: str, probe: Callable[[], Awaitable[Step]]) -> Step:
    try:
        return await probe()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Step(name, error=f"{type(exc).__name__}: {exc}")


async def choose_base(
    http: aiohttp.ClientSession, report: ProbeReport, target: Target, credential: Credential
) -> Step:
    """The model list of the first candidate that answers (or refuses the login: any host
    would), as the worker chooses its base URL; else the first candidate's failure."""
    steps: list[tuple[discovery.BaseUrlCandidate, Step]] = []
    for candidate in target.candidates:
        step = await guarded(
            "model list", functools.partial(probe_models, http, candidate.url, credential)
        )
        if step.ok or step.kind == FailureKind.AUTH.value:
            report.base_url, report.base_source = candidate.url, candidate.source
            report.skipped = [_skipped(c, s) for c, s in steps]
            return step
        steps.append((candidate, step))
    report.skipped = [_skipped(c, s) for c, s in steps[1:]]
    return steps[0][1]


def _skipped(candidate: discovery.BaseUrlCandidate, step: Step) -> str:
    return f"{candidate.url} ({candidate.source}): {step.error or f'HTTP {step.status}'}"


async def run_probe(target: Target, *, chat: bool, model: str) -> ProbeReport:
    first = target.candidates[0]
    report = ProbeReport(first.url, first.source, {})
    try:
        credential = CredentialStore(target.work_dir, target.credential_file).current()
    except CredentialError as exc:
        report.steps.append(Step("credential", error=str(exc)))
        return report
    report.credential = describe_credential(credential)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as http:
        report.steps.append(await choose_base(http, report, target, credential))
        if chat:
            chat_step = functools.partial(probe_chat, http, report.base_url, credential, model)
            report.steps.append(await guarded("chat", chat_step))
    return report


def render(report: ProbeReport) -> str:
    lines = [f"cloud base URL: {report.base_url} (from {report.base_source})"]
    lines += [f"  skipped (its model list failed): {skipped}" for skipped in report.skipped]
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
    parser.add_argument("--spec", help="the account's JSON WorkerSpec file, or - for stdin")
    parser.add_argument("--work-dir", help="the account's Lingma work dir (without --spec)")
    parser.add_argument("--base-url", default="", help="the cloud base URL (default: discover)")
    parser.add_argument("--credential-file", default="", help="an LP-format credential file")
    parser.add_argument("--chat", action="store_true", help="also send one tiny chat")
    parser.add_argument("--model", default="auto", help="model key for the chat (auto)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if bool(args.spec) == bool(args.work_dir):
        parser.error("give --spec or --work-dir")
    if args.spec and (args.base_url or args.credential_file):
        parser.error("--base-url and --credential-file come from the spec with --spec")
    spec: WorkerSpec | None = None
    if args.spec:
        try:
            raw = sys.stdin.buffer.read() if args.spec == "-" else Path(args.spec).read_bytes()
            spec = msgspec.json.decode(raw, type=WorkerSpec)
        except (OSError, msgspec.DecodeError) as exc:
            print(f"python -m worker.cloud.probe: unusable worker spec: {exc}", file=sys.stderr)
            return EXIT_USAGE
    report = asyncio.run(_probe(args, spec))
    print(msgspec.json.encode(asdict(report)).decode() if args.json else render(report))
    return 0 if report.ok else 1


async def _probe(args: argparse.Namespace, spec: WorkerSpec | None) -> ProbeReport:
    target = await target_from_spec(spec) if spec is not None else target_from_args(args)
    return await run_probe(target, chat=args.chat, model=args.model)


if __name__ == "__main__":
    sys.exit(main())
