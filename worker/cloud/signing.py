"""Runs in the worker: the COSY signature and the header set of every cloud request (§14.5).

Recipe: `payload` = compact JSON of five strings in Go map order, `p64` = its standard base64,
`sig` = md5 hex of `p64 \\n key \\n date \\n body \\n path` where `body` is the exact bytes sent
(empty for GET) and `path` drops the query and one leading `/algo`. The body is serialized once
and those very bytes are signed and sent. Header set: LP's, plus `Cosy-Data-Policy` and
`X-Request-Id` (§14.5 recommendation); names are case-insensitive on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
import time
import uuid

import msgspec

from worker.cloud.credential import Credential

COSY_VERSION = "2.11.2"  # the JetBrains-plugin runtime's version LP and L2A send
CLIENT_TYPE = "2"  # JetBrains runtime (LP, L2A, ZC-RA)
ALGO_PREFIX = "/algo"
USER_AGENT = "lingma-gw/cloud"
ACCEPT_SSE = "text/event-stream"


def signing_path(path: str) -> str:
    """`/algo/api/v2/model/list?x=1` → `/api/v2/model/list` (query dropped, one /algo removed)."""
    bare = path.split("?", 1)[0]
    return bare[len(ALGO_PREFIX) :] if bare.startswith(ALGO_PREFIX + "/") else bare


def auth_payload(info: str, request_id: str, cosy_version: str = COSY_VERSION) -> bytes:
    """The five-field payload in Go's `json.Marshal` map order (the captured IDE order too)."""
    return msgspec.json.encode(
        {
            "cosyVersion": cosy_version,
            "ideVersion": "",
            "info": info,
            "requestId": request_id,
            "version": "v1",
        }
    )


def signature(payload_b64: str, key: str, date: str, body: bytes, path: str) -> str:
    preimage = b"\n".join(
        (payload_b64.encode(), key.encode(), date.encode(), body, signing_path(path).encode())
    )
    return hashlib.md5(preimage, usedforsecurity=False).hexdigest()


def machine_os() -> str:
    """LP's `<arch>_<os>`: x86_64_linux, arm64_linux, arm64_darwin, x86_64_windows."""
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch or "x86_64")
    system = {"win32": "windows"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    return f"{arch}_{system}"


def signed_headers(
    credential: Credential,
    *,
    path: str,
    body: bytes,
    accept: str = ACCEPT_SSE,
    date: int | None = None,
    request_id: str | None = None,
    cosy_version: str = COSY_VERSION,
) -> dict[str, str]:
    """Every header of one signed request; `date` and `request_id` are fixed only in tests."""
    stamp = str(int(time.time()) if date is None else date)  # one clock read for both uses
    nonce = request_id or str(uuid.uuid4())
    payload_b64 = base64.b64encode(
        auth_payload(credential.encrypt_user_info, nonce, cosy_version)
    ).decode()
    sig = signature(payload_b64, credential.cosy_key, stamp, body, path)
    return {
        "Authorization": f"Bearer COSY.{payload_b64}.{sig}",
        "Content-Type": "application/json",
        "Accept": accept,
        "Cache-Control": "no-cache",
        "Accept-Encoding": "identity",  # a compressed SSE body would be buffered, not streamed
        "Appcode": "cosy",
        "Cosy-Date": stamp,
        "Cosy-Key": credential.cosy_key,
        "Cosy-User": credential.user_id,
        "Cosy-Machineid": credential.machine_id,
        "Cosy-Clientip": "198.18.0.1",
        "Cosy-Clienttype": CLIENT_TYPE,
        "Cosy-Machineos": machine_os(),
        "Cosy-Machinetoken": "",
        "Cosy-Machinetype": "",
        "Cosy-Version": cosy_version,
        "Cosy-Data-Policy": "AGREE",
        "Login-Version": "v2",
        "X-Request-Id": nonce,
        "User-Agent": USER_AGENT,
    }


def redacted(headers: dict[str, str]) -> dict[str, str]:
    """Headers safe to print (doctor): the login-bearing values masked."""
    secret = {"authorization", "cosy-key", "cosy-user", "cosy-machineid"}
    return {
        name: (f"<{len(value)} chars>" if name.lower() in secret else value)
        for name, value in headers.items()
    }
