"""Hostile clients at the connection level: slowloris headers and bodies, idle connections,
huge and deeply nested bodies, invalid UTF-8, 10,000 messages, admin routes without the token.

A real front (short idle and body deadlines, 1 MiB body limit) over a real worker. Every
answer is a 4xx in the API's shape or a success; slow clients are cut off by deadlines.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.component.hostile_support import (
    AUTH,
    assert_no_crash,
    assert_well_answered,
    hostile_gateway,
    port_of,
    read_answer,
    send,
)
from tests.harness import ADMIN_TOKEN, API_KEY, DirectGateway, front_spec, start_front
from tests.helpers import ChildProcesses, wait_until

pytestmark = pytest.mark.component

IDLE_S = 1.5
BODY_S = 1.5
LIMIT = 1024 * 1024
JSON = [*AUTH, (b"Content-Type", b"application/json")]
ADMIN_ROUTES = [
    ("POST", "/internal/auto-login/start"),
    ("GET", "/internal/auto-login/status"),
    ("POST", "/internal/session/export"),
    ("GET", "/internal/models/raw"),
    ("GET", "/internal/stats"),
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    overrides = {"max_body_bytes": LIMIT, "idle_timeout_s": IDLE_S, "body_timeout_s": BODY_S}
    with hostile_gateway("lgw-hc-", **overrides) as gw:
        yield gw
        assert_no_crash(gw)


def chat(text: str = "hi", **extra: object) -> bytes:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    return json.dumps(body).encode()


def closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (sending `trickle` every 0.2 s meanwhile)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        readable, _, _ = select.select([sock], [], [], 0.2)
        try:
            if readable and not sock.recv(65536):
                return time.monotonic() - started
            if trickle:
                sock.sendall(trickle)
        except OSError:  # reset or broken pipe: closed as well
            return time.monotonic() - started
    return None


def test_slow_headers_are_cut_off(gateway: DirectGateway) -> None:
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = closed_by_server(sock, IDLE_S + 5, trickle=b"a")
    assert took is not None and took < IDLE_S + 3, took


def test_slow_body_gets_408_in_shape(gateway: DirectGateway) -> None:
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n"
    head += b"x-api-key: " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=10) as sock:
        sock.sendall(head + b'{"model": "auto", ')
        while not select.select([sock], [], [], 0.2)[0]:
            assert time.monotonic() - started < BODY_S + 5, "no answer to a slow body"
            sock.sendall(b" ")
        answer = read_answer(sock)
    assert answer.status == 408 and time.monotonic() - started < BODY_S + 3
    assert answer.json()["type"] == "error"
    assert_well_answered("/v1/messages", answer)


def test_many_idle_connections_neither_block_nor_linger(gateway: DirectGateway) -> None:
    port = port_of(gateway)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
    try:
        started = time.monotonic()
        answer = send(port, "POST", "/v1/chat/completions", JSON, chat("still serving"))
        assert answer.status == 200 and time.monotonic() - started < 5
        deadline = time.monotonic() + IDLE_S + 5
        for sock in idle:  # every idle one is closed by the server's idle deadline
            took = closed_by_server(sock, max(0.1, deadline - time.monotonic()))
            assert took is not None, "an idle connection outlived the idle deadline"
    finally:
        for sock in idle:
            sock.close()


def test_declared_huge_body_is_413_before_it_is_sent(gateway: DirectGateway) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
    head += b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=10) as sock:
        sock.sendall(head)
        answer = read_answer(sock)
    assert answer.status == 413 and time.monotonic() - started < BODY_S  # not the 408
    assert answer.json()["error"]["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(gateway: DirectGateway) -> None:
    chunk = b" " * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    headers = [*JSON, (b"Transfer-Encoding", b"chunked")]
    answer = send(port_of(gateway), "POST", "/v1/messages", headers, body + b"0\r\n\r\n")
    assert answer.status == 413 and answer.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_400(gateway: DirectGateway, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    tool = '{"type":"function","function":{"name":"f","parameters":{"x":NEST}}}'
    body = '{"model":"auto","messages":[{"role":"user","content":"hi"}],"tools":[TOOL]}'
    body = body.replace("TOOL", tool).replace("NEST", nested)
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        answer = send(port_of(gateway), "POST", path, JSON, body.encode())
        assert answer.status == 400, (path, answer)
        assert_well_answered(path, answer)
    answer = send(port_of(gateway), "POST", "/v1/chat/completions", JSON, nested.encode())
    assert answer.status == 400


def test_invalid_utf8_in_body_and_headers(gateway: DirectGateway) -> None:
    port = port_of(gateway)
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        answer = send(port, "POST", path, JSON, chat().replace(b"hi", b"h\xff\xfei"))
        assert answer.status == 400, answer
        assert_well_answered(path, answer)
    odd = [*JSON, (b"x-request-id", b"\xff\xfe"), (b"x-lingma-affinity", b"\xc3\x28")]
    answer = send(port, "POST", "/v1/chat/completions", odd, chat())
    assert answer.status == 200 and answer.headers["x-request-id"].startswith("req-")
    bad_key = [(b"Authorization", b"Bearer \xff" + API_KEY.encode())]
    answer = send(port, "POST", "/v1/messages", bad_key, chat())
    assert answer.status == 401
    assert_well_answered("/v1/messages", answer)


def test_ten_thousand_messages(gateway: DirectGateway) -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
        for i in range(10_000)
    ]
    body = json.dumps({"model": "auto", "messages": turns}).encode()
    assert len(body) < LIMIT
    started = time.monotonic()
    answer = send(port_of(gateway), "POST", "/v1/chat/completions", JSON, body, timeout=30)
    took = time.monotonic() - started
    assert answer.status == 200, answer.body[:300]
    assert "turn 9998" in answer.json()["choices"][0]["message"]["content"]  # the latest turn
    print(f"\n[figures] 10,000 messages answered in {took:.2f}s")


def test_admin_routes_refuse_without_the_admin_token(gateway: DirectGateway) -> None:
    port = port_of(gateway)
    wrong = [
        [],
        AUTH,  # an API key is not an admin token
        [(b"x-admin-token", ADMIN_TOKEN.encode() + b"x")],
        [(b"Authorization", b"Bearer " + ADMIN_TOKEN.encode()[:-1])],
        [(b"x-admin-token", b"\xff" + ADMIN_TOKEN.encode())],
    ]
    for method, path in ADMIN_ROUTES:
        for headers in wrong:
            answer = send(port, method, path, headers, b"" if method == "POST" else None)
            assert answer.status == 401, (path, headers, answer)
            assert_well_answered(path, answer)
        good = [(b"x-admin-token", ADMIN_TOKEN.encode())]
        answer = send(port, method, path, good, b"" if method == "POST" else None)
        assert answer.status == 200, (path, answer)


def test_admin_routes_refuse_everyone_when_the_token_is_unset(gateway: DirectGateway) -> None:
    root = Path(tempfile.mkdtemp(prefix="lgw-hu-", dir="/tmp"))
    children = ChildProcesses()
    try:
        spec = front_spec(root, gateway.workers, admin_token="")
        proc = start_front(children, root, spec)

        def listening() -> bool:
            assert proc.poll() is None, (root / "front.log").read_text()
            log = root / "front.log"
            return log.exists() and "listening" in log.read_text()

        wait_until(listening, 15, "the front without an admin token")
        for method, path in ADMIN_ROUTES:
            for headers in ([], AUTH, [(b"x-admin-token", b"")], [(b"x-admin-token", b"x")]):
                body = b"" if method == "POST" else None
                answer = send(spec.port, method, path, headers, body)
                assert answer.status == 403, (path, headers, answer)
                assert "ADMIN_TOKEN is not set" in answer.json()["error"]["message"]
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("raw", "echo"),
    [
        (b"GARBAGE-7f3a\r\n\r\n", b"GARBAGE-7f3a"),
        (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 12ab7\r\n\r\n", b"12ab7"),
        (b"GET /" + b"q7" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"q7q7q7"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header 9z\r\n\r\n", b"9z"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x16\x03"),  # TLS to the HTTP port
    ],
)
def test_unparsable_http_gets_a_json_400_that_does_not_echo_it(
    gateway: DirectGateway, raw: bytes, echo: bytes
) -> None:
    """aiohttp rejects these before any handler runs; the answer is still JSON both SDKs read."""
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=5) as sock:
        sock.sendall(raw)
        answer = read_answer(sock)
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert answer.json()["type"] == "error" and error["type"] == "invalid_request_error"
    assert error["code"] == "malformed_http_request" and "param" in error
    assert error["message"].startswith("malformed HTTP request: ")
    assert echo not in answer.body
    assert send(port_of(gateway), "GET", "/v1/models", AUTH).status == 200  # still serving
