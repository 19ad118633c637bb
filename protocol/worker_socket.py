"""Shared by front, supervisor and worker: the conversation on a worker's Unix socket.

One tagged union per direction (`WorkerRequest`, `WorkerReply`), multiplexed by the integer
`id` each request carries: chats (protocol/chat.py), what every child answers
(protocol/child_socket.py), and the account's own requests here — its models, its login, its
login bundle, its cooldown. Requests that only read are named `...Query`.
"""

from __future__ import annotations

from typing import Any

from protocol.chat import (
    Cancel,
    ChatRequest,
    Delta,
    Failure,
    Finish,
    Reasoning,
    ToolCall,
)
from protocol.child_socket import Drain, Ok, Ping, Pong, Stats, StatsQuery
from protocol.vocabulary import Base, LoginState


class ModelInfo(Base, frozen=True, kw_only=True):
    key: str
    display_name: str = ""
    is_reasoning: bool = False
    is_vl: bool = False
    scenes: list[str] = []


# --------------------------------------------------------------------------- requests


class ModelsQuery(Base, tag_field="type", tag="models_query", frozen=True, kw_only=True):
    id: int


class ModelsRawQuery(Base, tag_field="type", tag="models_raw_query", frozen=True, kw_only=True):
    id: int


class LoginStart(Base, tag_field="type", tag="login_start", frozen=True, kw_only=True):
    """Start auto-login (or produce the manual URL when auto-login is off)."""

    id: int


class LoginStatusQuery(Base, tag_field="type", tag="login_status_query", frozen=True, kw_only=True):
    id: int


class LoginBundleQuery(Base, tag_field="type", tag="session_export", frozen=True, kw_only=True):
    id: int


class ClearCooldown(Base, tag_field="type", tag="clear_cooldown", frozen=True, kw_only=True):
    id: int


WorkerRequest = (
    ChatRequest
    | Cancel
    | Ping
    | ModelsQuery
    | ModelsRawQuery
    | StatsQuery
    | LoginStart
    | LoginStatusQuery
    | LoginBundleQuery
    | ClearCooldown
    | Drain
)

# --------------------------------------------------------------------------- replies


class Models(Base, tag_field="type", tag="models", frozen=True, kw_only=True):
    id: int
    account: str
    models: list[ModelInfo]
    aliases: dict[str, str] = {}


class ModelsRaw(Base, tag_field="type", tag="models_raw", frozen=True, kw_only=True):
    id: int
    account: str
    raw: dict[str, Any]


class LoginInfo(Base, tag_field="type", tag="login_info", frozen=True, kw_only=True):
    id: int
    account: str
    login: LoginState
    auto_login: str = "idle"  # idle | running | succeeded | failed | disabled
    url: str = ""  # manual login URL for an operator, when one was generated
    message: str = ""
    user: str = ""  # display name of the logged-in user (never a token)


class LoginBundle(Base, tag_field="type", tag="session_bundle", frozen=True, kw_only=True):
    id: int
    account: str
    raw_bytes: int
    bundle_b64: str


WorkerReply = (
    Delta
    | Reasoning
    | ToolCall
    | Finish
    | Failure
    | Pong
    | Models
    | ModelsRaw
    | Stats
    | LoginInfo
    | LoginBundle
    | Ok
)
