"""Runs in the emulator: the cloud side's knobs, read once from LINGMA_EMULATOR_CLOUD_* at start.

Every variant the public clients disagree on (lingma-protocol.md §14.14, §14.15) is a knob, all
off by default, so the gateway's client is tested against each:

CLOUD=1                  the runtime emulator's HTTP port also serves /algo (§14.15), and
                         config/getEndpoint names it when no endpoint was set
CLOUD_ENDPOINT=algo|host|log  getEndpoint returns `http://127.0.0.1:P/algo` (default), the bare
                         host, or nothing (then a log line `endpoint config: http://…` names it)
CLOUD_DONE=bare|envelope `data:[DONE]` (default) or an envelope whose body is "[DONE]"
CLOUD_STATS=1            TAP's bare statistics line before [DONE]
CLOUD_DATA_SPACE=1       `data: ` with a space (default: no space, as the QD capture)
CLOUD_BARE_CHUNKS=1      chunks without the envelope (TAP's "direct" form)
CLOUD_CHUNK_CHARS=N      text split into N-character chunks (default: INSTANT_CHUNKS pieces)
CLOUD_NO_USAGE=1         no `usage` in the last chunk (the client must estimate)
CLOUD_REASONING=1        `delta.reasoning_content` for reasoning models (LP: Lingma sends none)
CLOUD_LATE_TOOL_ID=1     a tool call's id arrives one chunk after its name (QD, Kimi)
CLOUD_MODELS=FILE        the model-list fixture (default: emulator/cloud_models.json)
CLOUD_MODELS_FAIL=1      the model list answers HTTP 500 (chat still works)
CLOUD_UPLOAD=algo|bare|both  which image-upload path exists (§14.3 conflict; default both)
CLOUD_AUTH_INBAND=1      chat auth errors as HTTP 200 + one FORBIDDEN envelope (QoderCN form)
CLOUD_DATE_WINDOW_S=N    reject a Cosy-Date more than N seconds off (0 = no window)
CLOUD_EXPIRED=1          answer every signed request as an expired login (105)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from emulator.settings import _choice, _flag, _int, _path


class EndpointAdvert(StrEnum):
    """How the runtime tells a client where its cloud is (§14.2 step 2 vs step 4)."""

    ALGO = "algo"  # config/getEndpoint → http://127.0.0.1:P/algo (the runtime's own spelling)
    HOST = "host"  # config/getEndpoint → http://127.0.0.1:P
    LOG = "log"  # getEndpoint empty; the log line `endpoint config: …` names it


class DoneForm(StrEnum):
    BARE = "bare"
    ENVELOPE = "envelope"


class UploadPaths(StrEnum):
    ALGO = "algo"
    BARE = "bare"
    BOTH = "both"


@dataclass(frozen=True, kw_only=True)
class CloudKnobs:
    enabled: bool = False
    endpoint: EndpointAdvert = EndpointAdvert.ALGO
    done: DoneForm = DoneForm.BARE
    stats_line: bool = False
    data_space: bool = False
    bare_chunks: bool = False
    chunk_chars: int = 0
    no_usage: bool = False
    reasoning: bool = False
    late_tool_id: bool = False
    models_path: Path | None = None
    models_fail: bool = False
    upload: UploadPaths = UploadPaths.BOTH
    auth_inband: bool = False
    date_window_s: int = 0
    expired: bool = False


def cloud_knobs_from_env(env: Mapping[str, str] | None = None) -> CloudKnobs:
    env = os.environ if env is None else env
    return CloudKnobs(
        enabled=_flag(env, "CLOUD"),
        endpoint=_choice(env, "CLOUD_ENDPOINT", EndpointAdvert, EndpointAdvert.ALGO),
        done=_choice(env, "CLOUD_DONE", DoneForm, DoneForm.BARE),
        stats_line=_flag(env, "CLOUD_STATS"),
        data_space=_flag(env, "CLOUD_DATA_SPACE"),
        bare_chunks=_flag(env, "CLOUD_BARE_CHUNKS"),
        chunk_chars=_int(env, "CLOUD_CHUNK_CHARS", 0, high=1_000_000),
        no_usage=_flag(env, "CLOUD_NO_USAGE"),
        reasoning=_flag(env, "CLOUD_REASONING"),
        late_tool_id=_flag(env, "CLOUD_LATE_TOOL_ID"),
        models_path=_path(env, "CLOUD_MODELS"),
        models_fail=_flag(env, "CLOUD_MODELS_FAIL"),
        upload=_choice(env, "CLOUD_UPLOAD", UploadPaths, UploadPaths.BOTH),
        auth_inband=_flag(env, "CLOUD_AUTH_INBAND"),
        date_window_s=_int(env, "CLOUD_DATE_WINDOW_S", 0, high=10**6),
        expired=_flag(env, "CLOUD_EXPIRED"),
    )
