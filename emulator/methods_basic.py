"""Runs in the emulator: lifecycle, config, model list and the harmless stubs of §12.5."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from emulator.cloud_settings import EndpointAdvert
from emulator.connection import INVALID_PARAMS, ClientConnection, MethodError
from emulator.runtime import Method, Runtime

log = logging.getLogger("lingma-emulator")

CAPABILITIES: dict[str, Any] = {
    "textDocumentSync": {"openClose": True, "change": 2, "save": {}},
    "completionProvider": {"triggerCharacters": [".", " ", "\r"], "resolveProvider": True},
    "signatureHelpProvider": {"triggerCharacters": ["(", ","]},
    "workspace": {"workspaceFolders": {"supported": True, "changeNotifications": True}},
}

GLOBAL_CONFIG: dict[str, Any] = {
    "proxyMode": "system",
    "commandDenyList": [],
    "mcpAutoRun": False,
    "terminalRunMode": "manual",
    "webToolsExecutionMode": "manual",
    "askModeUseTools": False,
    "browserRunMode": "manual",
    "browserToolsRunMode": "manual",
}


async def initialize(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Both the LSP style (rootUri, workspaceFolders) and the ACP style (protocolVersion)."""
    if not (params.get("rootUri") or params.get("workspaceFolders") or "protocolVersion" in params):
        log.debug("EMULATOR conn %d: get mtree failed: workspacePath is empty", conn.id)
    result: dict[str, Any] = {"capabilities": CAPABILITIES, "serverInfo": rt.server_info()}
    if isinstance(params.get("protocolVersion"), int):
        result["protocolVersion"] = params["protocolVersion"]
    return result


async def ping(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {"success": True}


async def get_endpoint(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """The stored endpoint; with the cloud stand-in on and none stored, the stand-in's URL."""
    stored = rt.workdir.endpoint()
    if stored or not rt.cloud.enabled or rt.cloud.endpoint is EndpointAdvert.LOG:
        return {"endpoint": stored}
    base = f"http://127.0.0.1:{rt.http_port}"
    return {"endpoint": base + "/algo" if rt.cloud.endpoint is EndpointAdvert.ALGO else base}


async def update_endpoint(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    endpoint = params.get("endpoint", "")
    if not isinstance(endpoint, str):
        raise MethodError(
            INVALID_PARAMS, "json: cannot unmarshal into field endpoint of type string"
        )
    rt.workdir.set_endpoint(endpoint)
    log.info("EMULATOR endpoint config: %s", endpoint or "(default)")
    return {"success": True}


async def query_models(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """`{}` while logged out (no error), the scene map otherwise."""
    return rt.catalog.as_wire() if rt.user() is not None else {}


async def get_global(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return GLOBAL_CONFIG


async def extension_query(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {
        "commands": [],
        "commandShowPosition": "",
        "commandShowOrder": [],
        "contextProviders": [],
    }


async def user_plan(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    user = rt.user()
    return {"success": user is not None, "planType": user.user_type if user else ""}


async def data_policy(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {"status": "AGREE", "agreed": True}


async def feature_flags(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {}


async def completion(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {"isIncomplete": True, "items": []}


async def profile_url(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {"url": f"http://127.0.0.1:{rt.http_port}/profile?state={secrets.token_hex(8)}"}


async def current_sessions(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    ids = sorted({turn.session_id for turn in rt.turns.active.values() if turn.session_id})
    return {"currentSessionIds": ids}


async def list_sessions(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return [session.as_summary() for session in rt.sessions.sessions.values()]


async def get_session(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    session_id = params.get("sessionId") or params.get("id") or ""
    session = rt.sessions.get(str(session_id))
    if session is None:
        raise MethodError(INVALID_PARAMS, f"session not found: {session_id}")
    return {"session": session.as_detail()}


async def delete_session(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """LP sends `{sessionId}` and retries with `{id}`; both work here."""
    session_id = params.get("sessionId") or params.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise MethodError(INVALID_PARAMS, "sessionId is empty")
    rt.turns.stop_session(session_id)
    rt.sessions.delete(session_id)
    return {"success": True}


async def clear_sessions(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    for session_id in list(rt.sessions.sessions):
        rt.turns.stop_session(session_id)
    rt.sessions.clear()
    return {"success": True}


async def delete_chat(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    return {"success": True}


METHODS: dict[str, Method] = {
    "initialize": Method(initialize, "definition.InitializeParams"),
    "ping": Method(ping),
    "config/getEndpoint": Method(get_endpoint),
    "config/updateEndpoint": Method(update_endpoint, "definition.GlobalEndpointConfig"),
    "config/queryModels": Method(query_models),
    "config/getGlobal": Method(get_global),
    "extension/query": Method(extension_query),
    "user/plan": Method(user_plan),
    "dataPolicy/query": Method(data_policy),
    "feature/getFeatureFlags": Method(feature_flags),
    "textDocument/completion": Method(completion, "definition.CompletionParams"),
    "auth/profile/getUrl": Method(profile_url),
    "session/getCurrent": Method(current_sessions),
    "chat/listAllSessions": Method(list_sessions),
    "chat/getSessionById": Method(get_session, "definition.SessionQuery"),
    "chat/deleteSessionById": Method(delete_session, "definition.SessionQuery"),
    "chat/clearAllSessions": Method(clear_sessions),
    "chat/deleteChatById": Method(delete_chat),
}
