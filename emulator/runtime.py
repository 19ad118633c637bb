"""Runs in the emulator: the process-wide state every RPC method and HTTP page works on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.auth import LoginBroker
from emulator.catalog import Catalog
from emulator.cloud_settings import CloudKnobs
from emulator.connection import INVALID_PARAMS, ClientConnection, MethodError
from emulator.delivery import AskChain, Audience
from emulator.rpc_framing import frame
from emulator.scripts import Action, ScriptBook
from emulator.sessions import SessionStore
from emulator.settings import EMULATOR_NAME, Knobs
from emulator.store import WorkDir
from emulator.turns import Recorder, ToolVerdicts, TurnRegistry
from emulator.user_cache import UserRecord

log = logging.getLogger("lingma-emulator")

CRASH_EXIT_CODE = 70
NOT_LOGGED_IN = -32001


@dataclass
class Runtime:
    knobs: Knobs
    workdir: WorkDir
    catalog: Catalog
    scripts: ScriptBook
    recorder: Recorder
    login: LoginBroker
    sessions: SessionStore = field(default_factory=SessionStore)
    turns: TurnRegistry = field(default_factory=TurnRegistry)
    connections: set[ClientConnection] = field(default_factory=set)
    ask_chain: AskChain = field(default_factory=AskChain)
    tool_verdicts: ToolVerdicts = field(default_factory=ToolVerdicts)
    ws_port: int = 0
    http_port: int = 0
    cloud: CloudKnobs = field(default_factory=CloudKnobs)

    @classmethod
    def create(cls, knobs: Knobs, workdir: WorkDir, cloud: CloudKnobs | None = None) -> Runtime:
        return cls(
            knobs=knobs,
            cloud=cloud or CloudKnobs(),
            workdir=workdir,
            catalog=Catalog.load(knobs.models_path),
            scripts=ScriptBook(knobs.script_path, knobs.reply_tokens),
            recorder=Recorder(knobs.record_path),
            login=LoginBroker(workdir, knobs.nonce_ttl_s),
        )

    def user(self) -> UserRecord | None:
        return self.workdir.read_user()

    def login_base(self) -> str:
        return self.knobs.login_base or f"http://127.0.0.1:{self.http_port}"

    def server_info(self) -> dict[str, str]:
        """`name` as the real runtime says it (§4); that this is an emulator goes beside it."""
        return {"name": "lingma", "version": self.knobs.version, "emulator": EMULATOR_NAME}

    def audience(self, issuer: ClientConnection) -> Audience:
        """Where a turn's pushes go: the issuer, or every connection (broadcast knob)."""
        return Audience(issuer, self.connections if self.knobs.broadcast else ())


Handler = Callable[[Runtime, ClientConnection, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    handler: Handler
    go_type: str = "definition.EmptyRequest"  # named in the decode error, like the Go runtime


def param_str(params: dict[str, Any], *names: str, default: str = "") -> str:
    """First of `names` present as a non-empty string (clients disagree on key spelling)."""
    for name in names:
        value = params.get(name)
        if isinstance(value, str) and value:
            return value
    return default


def require_str(params: dict[str, Any], *names: str) -> str:
    value = param_str(params, *names)
    if not value:
        raise MethodError(INVALID_PARAMS, f"{names[0]} is empty")
    return value


# What a broken runtime might put on the wire: bad JSON, non-objects, unhashable or unknown
# ids, odd error objects, pushes with the wrong shapes, and a bare unframed fragment.
GARBAGE_FRAMES = (
    frame(b"{not json"),
    frame(b"[]"),
    frame(b'{"jsonrpc":"2.0","id":[1],"result":null}'),
    frame(b'{"jsonrpc":"2.0","id":987654,"error":{"code":"x","message":5}}'),
    frame(b'{"jsonrpc":"2.0","method":"chat/answer","params":[1,2]}'),
    frame(b'{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":5,"update":"x"}}'),
    frame(b'{"jsonrpc":"2.0","method":"chat/answer","params":{"text":"\\ud800"}}'),
    "{broken bare json",
)


async def run_fault(rt: Runtime, conn: ClientConnection, action: Action) -> None:
    """The scripted fault after a reply: hang, drop the connection, crash, or log out."""
    if action is Action.LOGOUT:
        rt.workdir.remove_user()  # auth/status reads cache/user: it says 1 from now on
        log.warning("EMULATOR logged out mid-answer (script): cache/user removed")
        return
    if action is Action.GARBAGE:
        log.warning("EMULATOR sending %d malformed frames (script)", len(GARBAGE_FRAMES))
        for text in GARBAGE_FRAMES:
            conn.send_raw(text)
        return
    if action is Action.CRASH:
        # What was "sent" before the crash reaches the client, as it would from a real process.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.drain(), timeout=1.0)
        log.error("EMULATOR crash requested by script: exiting with %d", CRASH_EXIT_CODE)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
    if action is Action.DROP:
        log.warning("EMULATOR dropping connection %d mid-answer (script)", conn.id)
        await conn.close()
    # hang (and after a drop): wait until chat/stop, session/cancel or the connection ends.
    await asyncio.get_running_loop().create_future()
