"""Runs in the front: one request to the supervisor's control socket (metrics, usage rows).

One connection per request, as the control socket wants; a missing or silent supervisor is
None, never an exception, so a front run without one (tests, debugging) keeps serving.
"""

from __future__ import annotations

import asyncio
import logging

from protocol.control_socket import ControlReply
from protocol.framing import FrameError, open_framed

log = logging.getLogger(__name__)


async def ask_supervisor(control_socket: str, message: object, timeout: float) -> object | None:
    """One control request to the supervisor; None when there is none or it did not answer."""
    if not control_socket:
        return None
    try:
        stream = await open_framed(control_socket, ControlReply, timeout=timeout)
    except (OSError, TimeoutError):
        return None
    try:
        async with asyncio.timeout(timeout):
            await stream.send(message)
            reply: object = await stream.recv()
    except (FrameError, OSError, TimeoutError) as exc:
        log.warning("supervisor did not answer %s: %s", type(message).__name__, type(exc).__name__)
        return None
    finally:
        await stream.close()
    return reply
