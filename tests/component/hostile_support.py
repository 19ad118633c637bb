"""Test-only: a raw HTTP/1.1 client for hostile requests, and the checks every answer must pass.

`http.client` refuses to send malformed headers and aiohttp normalises what it sends, so the
hostile tests write bytes to a socket themselves and parse the answer with `http.client`.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import API_KEY, DirectGateway, start_gateway
from tests.helpers import ChildProcesses

Header = tuple[bytes, bytes]
AUTH: list[Header] = [(b"Authorization", f"Bearer {API_KEY}".encode())]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def port_of(gateway: DirectGateway) -> int:
    return int(gateway.base_url.rsplit(":", 1)[1])


def request_bytes(
    method: str, target: bytes, headers: Sequence[Header], body: bytes | None
) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None and not any(n.lower() == b"transfer-encoding" for n, _ in headers):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send(
    port: int,
    method: str,
    target: bytes | str,
    headers: Sequence[Header] = (),
    body: bytes | None = None,
    timeout: float = 20.0,
) -> RawResponse:
    """One request on a fresh connection; the whole answer (streams included) is read."""
    raw_target = target.encode() if isinstance(target, str) else target
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes(method, raw_target, headers, body))
        return read_answer(sock)


def read_answer(sock: socket.socket) -> RawResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def is_anthropic(path: str) -> bool:
    return path.split("?", maxsplit=1)[0].startswith("/v1/messages")


def assert_well_answered(path: str, answer: RawResponse) -> None:
    """No 5xx; an error is JSON in the API's shape (OpenAI's, Anthropic's on /v1/messages).

    Requests that are not parsable HTTP are answered before any API is known, in a shape both
    SDKs read, so they pass this check for every path too.
    """
    assert answer.status < 500, (path, answer.status, answer.body[:300])
    if answer.status < 400:
        return
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    payload = answer.json()
    if is_anthropic(path):
        assert payload["type"] == "error" and isinstance(payload["error"]["message"], str)
        assert isinstance(payload["error"]["type"], str)
    else:
        error = payload["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str), payload
        assert "code" in error, payload


@contextmanager
def hostile_gateway(prefix: str, **front_overrides: Any) -> Iterator[DirectGateway]:
    """One emulator-backed worker behind a front with small limits and short deadlines."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, workers=1, **front_overrides)
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def assert_no_crash(gateway: DirectGateway) -> None:
    """The front still runs and logged no unhandled error; the worker logged no traceback."""
    assert gateway.front.poll() is None, gateway.front_log.read_text()[-3000:]
    for log in [gateway.front_log, *(w.log_path for w in gateway.workers)]:
        text = log.read_text()
        bad = [line for line in text.splitlines() if "Traceback" in line or "unhandled" in line]
        assert not bad, f"{log.name}: " + "\n".join(line[:1500] for line in bad[:3])
    for worker in gateway.workers:
        assert worker.proc.poll() is None
