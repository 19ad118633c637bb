"""Test-only stand-in for worker.worker / front.process: a spawned child driven by its spec.

`run(spec_bytes)` isolates itself like the real children, binds its socket and answers the
supervisor's requests. Behaviour comes from the worker spec's `binary` field, or for a front
from $LGW_FAKE_FRONT:
  fake:ready     Pong READY (logged in)          fake:degraded  Pong DEGRADED (logged out)
  fake:exit78    exit 78 at once (cannot start)  fake:crash     exit 3 after 0.3 s
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import msgspec
import uvloop

from protocol.child_socket import (
    ChildStats,
    Drain,
    MetricFamily,
    MetricSample,
    Ok,
    Ping,
    Pong,
    Stats,
    StatsQuery,
)
from protocol.framing import FramedStream, FrameError, start_unix_server
from protocol.front_socket import FrontRequest, WorkersUpdate
from protocol.lifecycle import isolate_child
from protocol.specs import FrontSpec, WorkerSpec
from protocol.vocabulary import ChildState, LoginState
from protocol.worker_socket import (
    LoginBundle,
    LoginBundleQuery,
    LoginInfo,
    LoginStart,
    WorkerRequest,
)


def run(spec_bytes: bytes) -> None:
    isolate_child()
    raw = msgspec.msgpack.decode(spec_bytes)
    if "work_dir" in raw:
        spec: Any = msgspec.msgpack.decode(spec_bytes, type=WorkerSpec)
        behaviour, name, incoming = spec.binary, spec.name, WorkerRequest
    else:
        spec = msgspec.msgpack.decode(spec_bytes, type=FrontSpec)
        behaviour = os.environ.get("LGW_FAKE_FRONT", "fake:ready")
        name, incoming = f"front-{spec.index}", FrontRequest
    if behaviour == "fake:exit78":
        sys.exit(78)
    code = uvloop.run(Child(name, spec.socket_path, behaviour, incoming).main())
    sys.exit(code)


class Child:
    def __init__(self, name: str, path: str, behaviour: str, incoming: Any) -> None:
        self.name, self.path, self.behaviour, self.incoming = name, path, behaviour, incoming
        self.done = asyncio.Event()
        self.started = time.time()
        self.requests = 0
        self.workers_updates = 0

    async def main(self) -> int:
        server = await start_unix_server(self.path, self.serve)
        try:
            if self.behaviour == "fake:crash":
                await asyncio.sleep(0.3)
                return 3
            await self.done.wait()
            return 0
        finally:
            server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: FramedStream[Any, Any] = FramedStream(reader, writer, self.incoming)
        try:
            while True:
                message = await stream.recv()
                self.requests += 1
                await stream.send(self.reply(message))
                if isinstance(message, Drain):
                    self.done.set()
        except (FrameError, OSError):
            pass

    def reply(self, message: Any) -> Any:
        state = ChildState.DEGRADED if self.behaviour == "fake:degraded" else ChildState.READY
        login = LoginState.LOGGED_OUT if state == ChildState.DEGRADED else LoginState.LOGGED_IN
        match message:
            case Ping(id=i):
                stats = ChildStats(in_flight=1, sessions=2, requests_total=self.requests)
                return Pong(
                    id=i, name=self.name, state=state, login=login, pid=os.getpid(),
                    models=3, stats=stats, started_at=self.started,
                )  # fmt: skip
            case StatsQuery(id=i):
                sample = MetricSample(name="fake_requests_total", labels={}, value=self.requests)
                family = MetricFamily(
                    name="fake_requests", kind="counter", help="requests", samples=[sample]
                )
                return Stats(id=i, name=self.name, stats=ChildStats(), metrics=[family])
            case LoginStart(id=i):
                return LoginInfo(id=i, account=self.name, login=login, url="http://login.test/x")
            case LoginBundleQuery(id=i):
                return LoginBundle(id=i, account=self.name, raw_bytes=3, bundle_b64="QUJD")
            case WorkersUpdate(id=i, workers=workers):
                self.workers_updates += 1
                return Ok(id=i, message=",".join(w.name for w in workers))
        return Ok(id=message.id)
