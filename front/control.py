"""Runs in the front: its own Unix socket for the supervisor, and the client for /metrics.

The supervisor pings the front (Pong: serving state, in-flight), collects its metrics
(StatsQuery → Stats with a registry snapshot), pushes the worker set (WorkersUpdate) and the
key table (KeysUpdate), and asks it to drain (Drain). `/metrics` asks the supervisor for the
aggregate over its control socket; without a supervisor the front serves its own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from front.context import FrontContext, ServeState
from front.supervisor_link import ask_supervisor
from protocol.chat import Failure
from protocol.child_socket import ChildStats, Drain, Ok, Ping, Pong, Stats, StatsQuery
from protocol.control_socket import MetricsReply, MetricsRequest
from protocol.framing import (
    FrameDecodeError,
    FramedStream,
    FrameError,
    start_unix_server,
)
from protocol.front_socket import FrontReply, FrontRequest, WorkersUpdate
from protocol.keys import KeysUpdate
from protocol.vocabulary import ChildState, ErrorCode

log = logging.getLogger(__name__)

UPDATE_PING_WAIT_S = 1.5  # below the supervisor's 2 s timeout for WorkersUpdate

_PONG_STATES = {
    ServeState.STARTING: ChildState.STARTING,
    ServeState.SERVING: ChildState.READY,
    ServeState.HANDING_OVER: ChildState.STOPPING,
    ServeState.DRAINING: ChildState.STOPPING,
}


def front_stats(ctx: FrontContext) -> ChildStats:
    return ChildStats(
        in_flight=ctx.admission.in_flight,
        queued=ctx.admission.queued,
        requests_total=ctx.requests_total,
        failures_total=ctx.failures_total,
    )


def reply_to(ctx: FrontContext, message: object) -> FrontReply:
    match message:
        case Ping(id=rid, sent_at=sent_at):
            return Pong(
                id=rid,
                sent_at=sent_at,
                name=ctx.name,
                state=_PONG_STATES[ctx.state],
                pid=os.getpid(),
                started_at=ctx.started_at,
                stats=front_stats(ctx),
            )
        case StatsQuery(id=rid):
            return Stats(
                id=rid, name=ctx.name, stats=front_stats(ctx), metrics=ctx.metrics.families()
            )
        case WorkersUpdate(id=rid, workers=workers):
            ctx.pool.update(workers)
            return Ok(id=rid, message=f"{len(workers)} workers")
        case KeysUpdate(id=rid, keys=keys):
            ctx.keys.replace(keys)
            return Ok(id=rid, message=f"{len(keys)} keys")
        case Drain(id=rid, grace_s=grace_s, handover=handover):
            ctx.request_drain(grace_s, handover=handover)
            return Ok(id=rid, message="draining")
    return Failure(
        id=0, code=ErrorCode.UNSUPPORTED, message=f"unsupported: {type(message).__name__}"
    )


class FrontControlServer:
    def __init__(self, ctx: FrontContext) -> None:
        self._ctx = ctx
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await start_unix_server(self._ctx.spec.socket_path, self._serve)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._ctx.spec.socket_path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        stream: FramedStream[object, FrontReply] = FramedStream(reader, writer, FrontRequest)
        try:
            while True:
                try:
                    message = await stream.recv()
                except FrameDecodeError as exc:
                    await stream.send(Failure(id=0, code=ErrorCode.BAD_FRAME, message=str(exc)))
                    continue
                reply = reply_to(self._ctx, message)
                if isinstance(message, WorkersUpdate):
                    # Answer once new workers are routable: the supervisor then drains the old.
                    await self._ctx.pool.first_pings(UPDATE_PING_WAIT_S)
                await stream.send(reply)
        except (FrameError, OSError):
            pass  # the supervisor hung up
        except asyncio.CancelledError:
            # close() at shutdown. Ending normally: Python 3.11's stream callback logs a
            # spurious "Exception in callback" for a handler task that ends cancelled.
            pass
        finally:
            self._connections.discard(task)
            await stream.close()


async def supervisor_metrics(control_socket: str, timeout: float = 3.0) -> str | None:
    """The supervisor's aggregate exposition, or None when it cannot be had."""
    reply = await ask_supervisor(control_socket, MetricsRequest(), timeout)
    return reply.text if isinstance(reply, MetricsReply) else None
