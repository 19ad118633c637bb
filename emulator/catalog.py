"""Runs in the emulator: the model catalogue `config/queryModels` returns when logged in."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import msgspec

FIXTURE = "models.json"


class ModelItem(msgspec.Struct, kw_only=True):
    """One model entry, fields as the runtime sends them (lingma-protocol.md §5.2)."""

    key: str
    displayName: str
    format: str = "openai"
    source: str = "system"
    isReasoning: bool = False
    isVl: bool = False
    url: str = ""
    apiKey: str = ""
    model: str = ""


Scenes = dict[str, list[ModelItem]]


class Catalog:
    """Scenes → model items, plus quick lookups by key."""

    def __init__(self, scenes: Scenes) -> None:
        self.scenes = scenes
        self.by_key: dict[str, ModelItem] = {}
        for items in scenes.values():
            for item in items:
                self.by_key.setdefault(item.key, item)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """The given fixture file, else the packaged `emulator/models.json`."""
        if path is not None:
            raw = path.read_bytes()
        else:
            raw = resources.files("emulator").joinpath(FIXTURE).read_bytes()
        return cls(msgspec.json.decode(raw, type=Scenes))

    def knows(self, key: str) -> bool:
        return key in self.by_key

    def is_reasoning(self, key: str) -> bool:
        item = self.by_key.get(key)
        return item is not None and item.isReasoning

    def as_wire(self) -> dict[str, list[ModelItem]]:
        return self.scenes
