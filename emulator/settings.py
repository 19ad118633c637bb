"""Runs in the emulator: every behaviour knob, read once from LINGMA_EMULATOR_* at start.

SCRIPT=FILE            scripted replies/faults, JSON {"rules": [...]} (see scripts.py)
USERS=u:p,...          accounts the login page accepts (default demo:demo)
FIRST_TOKEN_MS, TOKENS_PER_S (0 = instant), REPLY_TOKENS, INSTANT_CHUNKS   pacing
RECORD=FILE            one JSON line per chat request received (and, with TOOLS, one
                       `"event": "tool"` line per tool/invoke verdict)
STARTUP_DELAY_MS       delay before listening and writing .info.json
PUSH_AS_NOTIFICATION=1 pushes without ids      STRICT_ACK=1  stall until each push is acked
NO_ACP=1               session/* → -32601      EXTENSION_REGISTER=1  request right after connect
FRAME_MODE=single|coalesce|split               UNFRAMED=ignore|close
THINK_STYLE=fence|event                        ACP_FULL_ANSWER=1  fill chat_finish.fullAnswer
TITLE_BEFORE_STEP_END=1, ONE_ASK_PER_CONNECTION=1, LOGIN_BASE=URL, NONCE_TTL_S, MODELS=FILE,
LIMIT_TOKENS, IPC=0, VERSION, LOG_LEVEL=debug|info|warning
Quirks (quirks.py; all off by default):
OFF_BY_ONE=1           chat/ask whose step pushes are not acked within OFF_BY_ONE_ACK_MS (1000)
                       has its answer delivered under the next chat/ask's requestId (§6 quirk 1)
BROADCAST=1            chat pushes go to every open connection, not only the issuer (§12.2)
REQUIRE_MACHINE_TOKEN=1  WebSocket upgrades need Cosy-MachineToken = cache/machine_token.json
Tools module (tools.py, §12.8; off by default):
TOOLS=1                agent-mode turns run a rule's `ide_tool` through tool/invoke (scripts.py)
TOOL_TIMEOUT_MS        how long a turn waits for the client's tool verdict (default 5000)
Variants the spec leaves open (lingma-protocol.md §13; all off by default):
SINGLE_CLIENT=1        a new WebSocket connection closes every earlier one (one client at a time)
CANCEL_NO_REPLY=1      session/cancel sent as a request is never answered (it still stops the turn)
SESSION_NEW_HANG=1     session/new is never answered (LP's "desktop app exited" hang, §6.13)
SESSION_NEW_ERROR=CODE session/new answers a JSON-RPC error with this code (e.g. -32603)
ACP_FINISH_STATUS=1    ACP chat_finish data also carries `statusCode` (by default only
                       `reason` and `fullAnswer`, as §5.4 documents it)
NOISE_MS=N             every N ms, unrelated pushes to every connection: `snapshot/syncAll`
                       and another session's `session/update` chunk (text NOISE)
IMAGE_URI_SCHEME=lingma|qodercn  which `<scheme>:///agent/file?path=` URIs ACP image items
                       must use (QoderCN reads `qodercn`, §5.4); another one is refused
By default turns also push `snapshot/syncAll` after step_end (§5.3, §5.4: seen during turns),
and an ACP error finish words its status in `reason` ("429 Too Many Requests: ..."). Script
rules may name an error `kind` (rate_limit, quota, login) for the wordings of §10 / §14.10.
Cloud API stand-in (cloud_settings.py, §14.15; off by default): CLOUD=1 and CLOUD_* knobs
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

PREFIX = "LINGMA_EMULATOR_"
EMULATOR_NAME = "lingma-emulator"
DEFAULT_VERSION = "2.11.1-emulator"
DEFAULT_USERS = "demo:demo"

E = TypeVar("E", bound=StrEnum)


class FrameMode(StrEnum):
    """How outgoing messages map onto WebSocket frames (to exercise client buffering)."""

    SINGLE = "single"  # one framed message per frame, like the real runtime
    COALESCE = "coalesce"  # everything queued at once goes out in one frame
    SPLIT = "split"  # every message is cut into two frames


class UnframedPolicy(StrEnum):
    """What to do with a message that lacks the Content-Length header."""

    IGNORE = "ignore"  # log `Unknown message header` and drop it (real runtime)
    CLOSE = "close"  # drop the connection


class ThinkStyle(StrEnum):
    """How legacy chat/ask carries reasoning text."""

    FENCE = "fence"  # inside chat/answer between ````think:: fences (QoderCN)
    EVENT = "event"  # separate chat/think pushes (JetBrains plugin class)


class ImageUriScheme(StrEnum):
    """Which file URIs the runtime reads from ACP image items (lingma-protocol.md §5.4)."""

    LINGMA = "lingma"  # lingma:///agent/file?path=... (lingma-proxy)
    QODERCN = "qodercn"  # QoderCN's spelling


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"


class SettingsError(ValueError):
    """An environment knob has a value we cannot use."""


@dataclass(frozen=True, kw_only=True)
class Knobs:
    version: str = DEFAULT_VERSION
    script_path: Path | None = None
    users: Mapping[str, str]
    first_token_ms: int = 0
    tokens_per_s: float = 0.0
    reply_tokens: int = 0
    instant_chunks: int = 3
    record_path: Path | None = None
    startup_delay_ms: int = 0
    push_as_notification: bool = False
    strict_ack: bool = False
    no_acp: bool = False
    extension_register: bool = False
    frame_mode: FrameMode = FrameMode.SINGLE
    unframed: UnframedPolicy = UnframedPolicy.IGNORE
    think_style: ThinkStyle = ThinkStyle.FENCE
    acp_full_answer: bool = False
    title_before_step_end: bool = False
    one_ask_per_connection: bool = False
    login_base: str = ""
    nonce_ttl_s: float = 600.0
    models_path: Path | None = None
    limit_tokens: int = 128_000
    ipc: bool = True
    log_level: str = "INFO"  # DEBUG adds one line per request (costly under benchmark load)
    off_by_one: bool = False
    off_by_one_ack_ms: int = 1000
    broadcast: bool = False
    require_machine_token: bool = False
    tools: bool = False
    tool_timeout_ms: int = 5000
    single_client: bool = False
    cancel_no_reply: bool = False
    session_new_hang: bool = False
    session_new_error: int = 0  # 0: session/new works
    acp_finish_status: bool = False
    noise_ms: int = 0
    image_uri_scheme: str = "lingma"  # ACP image items' uri: <scheme>:///agent/file?path=...


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(PREFIX + name, "").strip()


def _int(env: Mapping[str, str], name: str, default: int, *, high: int = 10**9) -> int:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not an integer") from None
    if not 0 <= value <= high:
        raise SettingsError(f"{PREFIX}{name}={value} is outside 0..{high}")
    return value


def _code(env: Mapping[str, str], name: str) -> int:
    """A JSON-RPC error code (negative allowed); 0 or unset means off."""
    raw = _text(env, name)
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not an integer error code") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if value < 0:
        raise SettingsError(f"{PREFIX}{name}={value} must not be negative")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _text(env, name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{PREFIX}{name}={raw!r} is not a boolean (use 1 or 0)")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _text(env, name)
    return Path(raw) if raw else None


def _choice(env: Mapping[str, str], name: str, enum: type[E], default: E) -> E:
    raw = _text(env, name).lower()
    if not raw:
        return default
    try:
        return enum(raw)
    except ValueError:
        options = ", ".join(member.value for member in enum)
        raise SettingsError(f"{PREFIX}{name}={raw!r}: expected one of {options}") from None


def parse_users(raw: str) -> dict[str, str]:
    """`user:pass,user2:pass2` → mapping; the password may itself contain ':'."""
    users: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        name, sep, password = entry.strip().partition(":")
        if not sep or not name:
            raise SettingsError(f"{PREFIX}USERS entry {entry!r} is not user:password")
        users[name] = password
    return users


def knobs_from_env(env: Mapping[str, str] | None = None) -> Knobs:
    env = os.environ if env is None else env
    return Knobs(
        version=_text(env, "VERSION") or DEFAULT_VERSION,
        script_path=_path(env, "SCRIPT"),
        users=parse_users(_text(env, "USERS") or DEFAULT_USERS),
        first_token_ms=_int(env, "FIRST_TOKEN_MS", 0),
        tokens_per_s=_float(env, "TOKENS_PER_S", 0.0),
        reply_tokens=_int(env, "REPLY_TOKENS", 0, high=1_000_000),
        instant_chunks=max(1, _int(env, "INSTANT_CHUNKS", 3, high=1000)),
        record_path=_path(env, "RECORD"),
        startup_delay_ms=_int(env, "STARTUP_DELAY_MS", 0, high=60_000),
        push_as_notification=_flag(env, "PUSH_AS_NOTIFICATION"),
        strict_ack=_flag(env, "STRICT_ACK"),
        no_acp=_flag(env, "NO_ACP"),
        extension_register=_flag(env, "EXTENSION_REGISTER"),
        frame_mode=_choice(env, "FRAME_MODE", FrameMode, FrameMode.SINGLE),
        unframed=_choice(env, "UNFRAMED", UnframedPolicy, UnframedPolicy.IGNORE),
        think_style=_choice(env, "THINK_STYLE", ThinkStyle, ThinkStyle.FENCE),
        acp_full_answer=_flag(env, "ACP_FULL_ANSWER"),
        title_before_step_end=_flag(env, "TITLE_BEFORE_STEP_END"),
        one_ask_per_connection=_flag(env, "ONE_ASK_PER_CONNECTION"),
        login_base=_text(env, "LOGIN_BASE").rstrip("/"),
        nonce_ttl_s=_float(env, "NONCE_TTL_S", 600.0),
        models_path=_path(env, "MODELS"),
        limit_tokens=_int(env, "LIMIT_TOKENS", 128_000),
        ipc=_flag(env, "IPC", default=True),
        log_level=_choice(env, "LOG_LEVEL", LogLevel, LogLevel.INFO).upper(),
        off_by_one=_flag(env, "OFF_BY_ONE"),
        off_by_one_ack_ms=_int(env, "OFF_BY_ONE_ACK_MS", 1000, high=60_000),
        broadcast=_flag(env, "BROADCAST"),
        require_machine_token=_flag(env, "REQUIRE_MACHINE_TOKEN"),
        tools=_flag(env, "TOOLS"),
        tool_timeout_ms=_int(env, "TOOL_TIMEOUT_MS", 5000, high=600_000),
        single_client=_flag(env, "SINGLE_CLIENT"),
        cancel_no_reply=_flag(env, "CANCEL_NO_REPLY"),
        session_new_hang=_flag(env, "SESSION_NEW_HANG"),
        session_new_error=_code(env, "SESSION_NEW_ERROR"),
        acp_finish_status=_flag(env, "ACP_FINISH_STATUS"),
        noise_ms=_int(env, "NOISE_MS", 0, high=60_000),
        image_uri_scheme=_choice(env, "IMAGE_URI_SCHEME", ImageUriScheme, ImageUriScheme.LINGMA),
    )
