"""Runs in the emulator: the method table and the Go-like checks every call goes through."""

from __future__ import annotations

from typing import Any

from emulator import chat_acp, chat_legacy, methods_auth, methods_basic, tools
from emulator.connection import (
    INVALID_PARAMS,
    ClientConnection,
    MethodError,
    MethodNotFound,
    RequestHandler,
)
from emulator.runtime import Method, Runtime


def method_table(rt: Runtime) -> dict[str, Method]:
    """Every method this runtime answers; without ACP (VS Code runtime) session/* are unknown."""
    table = {**methods_basic.METHODS, **methods_auth.METHODS, **chat_legacy.METHODS}
    if not rt.knobs.no_acp:
        table.update(chat_acp.ACP_METHODS)
    if rt.knobs.tools:  # tool/invokeResult exists only with the tools module
        table.update(tools.METHODS)
    return table


def _json_kind(value: Any) -> str:
    """The word Go's encoding/json uses for a JSON value in its unmarshal errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def make_handler(rt: Runtime) -> RequestHandler:
    table = method_table(rt)

    async def handle(conn: ClientConnection, method: str, params: Any) -> Any:
        spec = table.get(method)
        if spec is None:
            raise MethodNotFound(method)
        if not isinstance(params, dict):
            kind = _json_kind(params)
            raise MethodError(
                INVALID_PARAMS,
                f"json: cannot unmarshal {kind} into Go value of type {spec.go_type}",
            )
        return await spec.handler(rt, conn, params)

    return handle
