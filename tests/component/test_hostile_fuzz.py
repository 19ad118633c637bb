"""Property-based fuzzing of every HTTP endpoint: bodies, headers and query strings.

A real front over a real emulator-backed worker. Whatever arrives, the answer is never a 5xx,
an error is in the API's own shape, and the front and worker neither crash nor log a traceback.
Examples are derandomized, so every run tries the same cases (the count is printed).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.component.hostile_support import (
    AUTH,
    Header,
    assert_no_crash,
    assert_well_answered,
    hostile_gateway,
    port_of,
    send,
)
from tests.harness import ADMIN_TOKEN, API_KEY, DirectGateway

pytestmark = pytest.mark.component

# LGW_FUZZ_EXAMPLES / LGW_FUZZ_RANDOM=1 explore further by hand; the suite stays reproducible.
FUZZ = settings(
    max_examples=int(os.environ.get("LGW_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=not os.environ.get("LGW_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CASES: Counter[str] = Counter()
POST_PATHS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
]
GET_PATHS = ["/", "/healthz", "/metrics", "/v1/models", "/internal/stats", "/internal/models/raw"]
ADMIN_POSTS = ["/internal/auto-login/start", "/internal/session/export"]
HELLO = b'{"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    with hostile_gateway("lgw-hf-", max_body_bytes=256 * 1024, request_timeout_s=20.0) as gw:
        yield gw
        assert_no_crash(gw)
        print(f"\n[figures] fuzz cases tried: {sum(CASES.values())} {dict(CASES)}")


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "x"])
parts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "image_url", "image", "tool_use", "tool_result", "input_text"]
        )
    },
    optional={"text": json_values, "content": json_values, "id": json_values, "input": json_values},
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": roles | json_values,
            "content": st.text(max_size=40) | st.lists(parts, max_size=3),
        },
        optional={"tool_calls": json_values, "tool_call_id": json_values, "name": json_values},
    ),
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.just("function") | json_values},
        optional={
            "function": st.fixed_dictionaries(
                {"name": st.text(max_size=12) | json_values},
                optional={"parameters": json_values, "description": json_values},
            ),
            "name": json_values,
            "input_schema": json_values,
        },
    ),
    max_size=2,
)
valid_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "qwen3-coder", "nope"]), "messages": valid_messages},
    optional={
        "input": st.text(max_size=30),
        "stream": st.booleans(),
        "max_tokens": st.integers(min_value=1, max_value=4000),
        "stop": st.lists(st.text(min_size=1, max_size=5), max_size=2),
        "temperature": st.floats(0, 2),
        "tool_choice": st.sampled_from(["auto", "none"]),
        "user": st.text(max_size=10),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    },
)
# Wrong in every field at once: messages, tools and parts of any shape.
near_valid = st.fixed_dictionaries(
    {"model": st.just("auto") | json_values, "messages": messages | json_values},
    optional={
        "input": st.text(max_size=30) | messages | json_values,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
        "tools": tools | json_values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
        "stop": st.lists(st.text(max_size=5), max_size=3) | json_values,
        "system": st.text(max_size=20) | json_values,
        "temperature": json_values,
        "metadata": json_values,
        "stream_options": json_values,
    },
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, object]:
    """A valid request with exactly one field replaced by something of another shape."""
    body: dict[str, object] = draw(valid)
    body[draw(st.sampled_from([*body, "tools", "system", "stream_options"]))] = draw(json_values)
    return body


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A valid, mutated or near-valid request, any JSON, or raw bytes; now and then with
    invalid UTF-8 spliced into a string value."""
    kind = draw(st.sampled_from(["valid", "mutated", "near_valid", "any_json", "raw"]))
    if kind == "raw":
        return draw(st.binary(max_size=120))
    strategy = {"valid": valid, "mutated": mutated(), "near_valid": near_valid}
    value = draw(strategy.get(kind, json_values))
    raw = json.dumps(value, ensure_ascii=False).encode()
    values = [match.end() for match in re.finditer(rb'[:,\[] "', raw)]  # string values
    if draw(st.integers(0, 3)) == 0 and values:
        cut = draw(st.sampled_from(values[::-1]))
        raw = (
            raw[:cut]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + raw[cut:]
        )
    return raw


header_values = (
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    # Bytes a header may legally carry, including ones that are not UTF-8 (obs-text).
    | st.lists(st.integers(0x20, 0x7E) | st.integers(0x80, 0xFF), max_size=30).map(bytes)
    | st.text(max_size=20).map(lambda t: t.encode().replace(b"\r", b"").replace(b"\n", b""))
)
auth_headers = st.sampled_from(
    [
        AUTH,
        [(b"x-api-key", API_KEY.encode())],
        [],
        [(b"Authorization", b"Bearer \xff\xfe")],
        [(b"Authorization", b"Basic " + API_KEY.encode())],
        [(b"x-api-key", API_KEY.encode() + b"x")],
    ]
)
HEADER_NAMES = [
    b"Content-Type",
    b"Content-Encoding",
    b"x-request-id",
    b"x-lingma-affinity",
    b"anthropic-version",
    b"anthropic-beta",
    b"Accept",
    b"Accept-Encoding",
    b"User-Agent",
    b"Expect",
    b"x-admin-token",
]
obs_text = st.lists(st.integers(0x80, 0xFF) | st.integers(0x20, 0x7E), min_size=1, max_size=30)
legal = obs_text.map(bytes) | st.text(max_size=20).map(
    lambda t: t.encode().translate(None, bytes(range(32)) + b"\x7f")
)
special = st.sampled_from([b"gzip", b"deflate", b"br", b"application/json", b"100-continue"])


@st.composite
def extra_headers(draw: st.DrawFn) -> list[Header]:
    """Each fuzzable header present or not, each with a value of any kind (often not UTF-8)."""
    headers = []
    for name in HEADER_NAMES:
        if draw(st.booleans()):
            # Mostly bytes a header may carry: a control byte fails the whole request in the
            # HTTP parser, before the handlers this test is after.
            value = draw(st.one_of(legal, legal, legal, special, header_values))
            headers.append((name, value))
    return headers


queries = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3).map(
    lambda d: "&".join(f"{quote(k)}={quote(v)}" for k, v in d.items())
) | st.sampled_from(["beta=true", "instance=acct-0", "instance=%ff%fe", "a=%zz", "instance=../x"])


def with_auth(path: str, auth: list[Header]) -> list[Header]:
    """Admin paths get the admin token, so the fuzzed request reaches the handler."""
    if path.startswith("/internal/"):
        return [(b"x-admin-token", ADMIN_TOKEN.encode())]
    return auth


@FUZZ
@given(path=st.sampled_from(POST_PATHS), body=bodies(), auth=auth_headers)
def test_fuzzed_bodies(gateway: DirectGateway, path: str, body: bytes, auth: list[Header]) -> None:
    CASES["body"] += 1
    headers = [*auth, (b"Content-Type", b"application/json")]
    answer = send(port_of(gateway), "POST", path, headers, body)
    assert_well_answered(path, answer)


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS + ADMIN_POSTS),
    headers=extra_headers(),
    auth=st.sampled_from([AUTH, [(b"x-api-key", API_KEY.encode())]]),  # reach the handlers
    body=st.sampled_from([HELLO, HELLO.replace(b"}]", b'}], "stream": true')]) | bodies(),
)
def test_fuzzed_headers(
    gateway: DirectGateway, path: str, headers: list[Header], auth: list[Header], body: bytes
) -> None:
    CASES["headers"] += 1
    answer = send(port_of(gateway), "POST", path, [*with_auth(path, auth), *headers], body)
    assert_well_answered(path, answer)


@FUZZ
@given(path=st.sampled_from(GET_PATHS + POST_PATHS), query=queries, auth=auth_headers)
def test_fuzzed_queries(gateway: DirectGateway, path: str, query: str, auth: list[Header]) -> None:
    CASES["query"] += 1
    method = "GET" if path in GET_PATHS else "POST"
    body = None if method == "GET" else b'{"model":"auto","input":"hi","messages":[]}'
    answer = send(port_of(gateway), method, f"{path}?{query}", with_auth(path, auth), body)
    assert_well_answered(path, answer)


@FUZZ
@given(target=st.binary(min_size=1, max_size=60), method=st.sampled_from(["GET", "POST", "PUT"]))
def test_fuzzed_request_targets(gateway: DirectGateway, target: bytes, method: str) -> None:
    """Odd paths and methods: 404/405/400 in the shape the path suggests, never a 5xx."""
    CASES["target"] += 1
    clean = b"/" + target.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
    answer = send(port_of(gateway), method, clean, AUTH, b"{}" if method != "GET" else None)
    assert_well_answered(clean.decode("latin-1"), answer)
