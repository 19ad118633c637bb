"""Runs in the bench's load generator: the direct floor of the cloud path, a minimal signed client.

It does what any cloud client must (lingma-protocol.md §14.4 credential, §14.5 signature and
headers, §14.7 body, §14.8 SSE envelopes) and nothing more: no history, no tools, no retries.
Like the direct JSON-RPC client it is independent of the worker's code, so the floor measures
the emulator's cloud side and the HTTP round trip, not lingma-gw. Every request gets a fresh
request id, date and signature, as a real client's does.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path

import aiohttp
import msgspec
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.http_requester import HttpRequester
from bench.targets import ChunkMeter, CloudTarget, HttpTarget, Sample

CHAT_PATH = "/algo/api/v2/service/pro/sse/agent_chat_generation"
CHAT_QUERY = "?FetchKeys=llm_model_result&AgentId=agent_common"
PING_PATH = "/algo/api/v1/ping"
COSY_VERSION = "2.11.2"  # the JetBrains-plugin runtime's version that LP and L2A send (§14.5)
ENVELOPE_MARKER = b'"statusCodeValue"'  # one per SSE envelope (§14.8)
KEY_CHARS = 16


class _User(msgspec.Struct):
    """The decrypted `cache/user` fields a cloud client signs with (§14.4)."""

    key: str
    encrypt_user_info: str
    uid: str


def read_credential(work_dir: Path, base_url: str, model: str, prompt: str) -> CloudTarget:
    """Decrypt the account's `cache/user` with its `cache/id` (AES-128-CBC, key = IV = the
    first 16 characters of the id, PKCS#7) into a target that signs every request."""
    machine_id = (work_dir / "cache" / "id").read_text().strip()
    secret = machine_id[:KEY_CHARS].encode()
    raw = base64.b64decode((work_dir / "cache" / "user").read_text().strip(), validate=True)
    decryptor = Cipher(algorithms.AES(secret), modes.CBC(secret)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(raw) + decryptor.finalize()) + unpadder.finalize()
    user = msgspec.json.decode(plain, type=_User)
    return CloudTarget(
        base_url=base_url.rstrip("/"),
        key=user.key,
        info=user.encrypt_user_info,
        uid=str(user.uid),
        machine_id=machine_id,
        model=model,
        prompt=prompt,
    )


def signature_headers(
    target: CloudTarget, body: bytes, sig_path: str, date: int, request_id: str
) -> dict[str, str]:
    """§14.5: payload → p64; md5(p64 \\n key \\n date \\n body \\n sigPath); the headers."""
    payload = {
        "cosyVersion": COSY_VERSION,
        "ideVersion": "",
        "info": target.info,
        "requestId": request_id,
        "version": "v1",
    }
    p64 = base64.b64encode(msgspec.json.encode(payload)).decode()
    preimage = "\n".join((p64, target.key, str(date), body.decode(), sig_path))
    sig = hashlib.md5(preimage.encode(), usedforsecurity=False).hexdigest()
    return {
        "Authorization": f"Bearer COSY.{p64}.{sig}",
        "Cosy-Key": target.key,
        "Cosy-Date": str(date),
        "Cosy-User": target.uid,
        "Cosy-Machineid": target.machine_id,
        "Cosy-Version": COSY_VERSION,
        "Cosy-Clienttype": "2",
        "Cosy-Machineos": "x86_64_linux",
        "Login-Version": "v2",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Appcode": "cosy",
        "Cosy-Data-Policy": "AGREE",
    }


def chat_body(target: CloudTarget) -> bytes:
    """The LP/L2A request skeleton of §14.7 with one user message."""
    request_id = uuid.uuid4().hex
    return msgspec.json.encode(
        {
            "request_id": request_id,
            "request_set_id": "",
            "chat_record_id": request_id,
            "stream": True,
            "image_urls": None,
            "is_reply": False,
            "is_retry": False,
            "session_id": "",
            "code_language": "",
            "chat_prompt": "",
            "source": 0,
            "version": "3",
            "parameters": {"temperature": 0.1},
            "aliyun_user_type": "personal_standard",
            "agent_id": "agent_common",
            "task_id": "question_refine",
            "model_config": {
                "key": target.model,
                "display_name": "",
                "model": target.model,
                "format": "",
                "is_vl": False,
                "is_reasoning": False,
                "api_key": "",
                "url": "",
                "source": "",
                "enable": False,
            },
            "messages": [{"role": "user", "content": target.prompt}],
        }
    )


class CloudRequester:
    """A load-generator client task: one signed chat at a time, SSE read to its end."""

    def __init__(
        self, target: CloudTarget, session: aiohttp.ClientSession, meter: ChunkMeter
    ) -> None:
        self.target = target
        url = target.base_url + CHAT_PATH + CHAT_QUERY
        self.http = HttpRequester(HttpTarget(url=url, marker=ENVELOPE_MARKER), session, meter)

    async def once(self) -> Sample:
        body = chat_body(self.target)
        sig_path = CHAT_PATH.removeprefix("/algo")
        now, request_id = int(time.time()), str(uuid.uuid4())
        headers = signature_headers(self.target, body, sig_path, now, request_id)
        return await self.http.once(body=body, headers=headers)

    async def close(self) -> None:
        return None
