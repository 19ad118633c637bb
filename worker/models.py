"""Runs in the worker: the account's model catalogue and client-name -> Lingma-key resolution.

`config/queryModels` returns models grouped by scene (lingma-protocol.md §5.2); the same key
appears in several scenes. Clients send names of their own (`gpt-4o`, `claude-sonnet-4`, a
Lingma display name, a key): aliases from the config map them, exactly or by glob, and the
names of well-known client model families fall back to the default model, so off-the-shelf
SDKs and CLIs work without configuration. Anything else is an error that lists what exists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from protocol.worker_socket import ModelInfo

# Families that clients hard-code; they mean "whatever this gateway serves" to the user.
CLIENT_FAMILIES = (
    "gpt-*",
    "chatgpt-*",
    "o1*",
    "o3*",
    "o4*",
    "claude-*",
    "gemini-*",
    "text-*",
    "codex-*",
    "default",
)


class UnknownModel(LookupError):
    pass


def parse_models(raw: Any) -> list[ModelInfo]:
    """Flatten `{scene: [item, ...]}` into one entry per key, remembering its scenes.

    Both the runtime's `config/queryModels` and the cloud's `/api/v2/model/list` have this shape.
    """
    if not isinstance(raw, Mapping):
        return []
    found: dict[str, ModelInfo] = {}
    for scene, items in raw.items():
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
                continue
            key = item["key"]
            known = found.get(key)
            if known is not None:
                if scene not in known.scenes:
                    found[key] = ModelInfo(
                        key=key,
                        display_name=known.display_name,
                        is_reasoning=known.is_reasoning,
                        is_vl=known.is_vl,
                        scenes=[*known.scenes, str(scene)],
                    )
                continue
            found[key] = ModelInfo(
                key=key,
                # camelCase from the runtime (§5.2), snake_case from the cloud list (§14.9)
                display_name=str(item.get("displayName") or item.get("display_name") or ""),
                is_reasoning=bool(item.get("isReasoning") or item.get("is_reasoning")),
                is_vl=bool(
                    item.get("isVl") or item.get("is_vl") or item.get("multiModalSupported")
                ),
                scenes=[str(scene)],
            )
    return list(found.values())


class ModelResolver:
    """Maps what a client asked for to a key this account can serve."""

    def __init__(self, aliases: Mapping[str, str], default_model: str) -> None:
        self.aliases = dict(aliases)
        self.default_model = default_model
        self.models: list[ModelInfo] = []

    def update(self, models: list[ModelInfo]) -> None:
        self.models = models

    def resolve(self, requested: str) -> str:
        name = requested.strip()
        if not name:
            return self._known_or_raw(self.default_model)
        direct = self._lookup(name)
        if direct is not None:
            return direct
        target = self.aliases.get(name)
        if target is None:
            target = next(
                (to for pattern, to in self.aliases.items() if fnmatch.fnmatchcase(name, pattern)),
                None,
            )
        if target is not None:
            return self._known_or_raw(target)
        if any(fnmatch.fnmatchcase(name.lower(), family) for family in CLIENT_FAMILIES):
            return self._known_or_raw(self.default_model)
        if not self.models:  # catalogue not loaded yet: let the runtime judge the name
            return name
        raise UnknownModel(self._unknown_message(name))

    def _lookup(self, name: str) -> str | None:
        lowered = name.lower()
        for model in self.models:
            if name == model.key or (model.display_name and lowered == model.display_name.lower()):
                return model.key
        return None

    def _known_or_raw(self, name: str) -> str:
        return self._lookup(name) or name

    def _unknown_message(self, name: str) -> str:
        keys = ", ".join(
            f"{m.key} ({m.display_name})" if m.display_name else m.key for m in self.models
        )
        aliases = ", ".join(sorted(self.aliases)) or "none"
        return (
            f"unknown model {name!r}: use one of {keys}; configured aliases: {aliases}; "
            f"names like gpt-*/claude-* map to the default model {self.default_model!r}"
        )
