"""Runs in the worker: where this account's cloud API lives — the base URL candidates (§14.2).

Order (LP's, plus the runtime's own answer): the explicit `cloud_base_url`; the runtime's
`config/getEndpoint` and the dedicated domain the worker applied to it; `--endpoint` in the
binary's arguments; the runtime's config files and logs inside this account's work dir (never
another account's or the home directory's); the region default from `cache/cache.json`. Every
candidate keeps scheme, host and port only; OSS/static hosts are rejected and log truncation
(`ttps://`) is repaired. The caller tries candidates until a model list answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

INTL_BASE = "https://lingma.alibabacloud.com"
CN_BASE = "https://lingma-api.tongyi.aliyun.com"
PUBLIC_HOSTS = frozenset({"lingma.alibabacloud.com", "lingma-api.tongyi.aliyun.com"})
CONFIG_FILES = (
    "extension/server/config.json",
    "extension/local/config.json",
    "bin/config.json",
    "SharedClientCache/cache/app-config.json",
)
LOG_FILES = ("logs/lingma.log", "logs/lingma-extension.log")
LOG_MARKERS = (
    "endpoint config:",
    "using service url:",
    "lingma endpoint configured",
    "configgeneraldedicatedurl",
    "dedicatedurl",
    "endpoint:",
)
MAX_LOG_BYTES = 4 * 1024 * 1024
RECENT_LOG_DIRS = 5
_URL = re.compile(r"h?ttps?://[^\s\"'<>),\]}]+", re.IGNORECASE)


@dataclass(frozen=True)
class BaseUrlCandidate:
    url: str
    source: str


def is_static_host(host: str) -> bool:
    return ".oss-" in host or "oss-rg-" in host or ".oss." in host


def is_lingma_host(host: str) -> bool:
    """A host a stray URL in a log may name: the public ones, dedicated domains, lingma-ish."""
    name = host.split(":", 1)[0]
    return (
        name in PUBLIC_HOSTS
        or name.endswith(".rdc.aliyuncs.com")
        or "lingma" in name
        or "qoder" in name
    )


def normalize_base(raw: str) -> str:
    """scheme://host[:port] of a URL, or "" when it is no usable API base."""
    text = raw.strip().strip("\"'<>),]}")
    if text.lower().startswith("ttps://"):
        text = "h" + text
    try:
        parts = urlsplit(text)
    except ValueError:
        return ""
    host = (parts.netloc or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host or "@" in host:
        return ""
    path = parts.path.lower()
    if is_static_host(host) or "/download" in path or path.endswith((".vsix", ".zip", ".gz")):
        return ""
    return f"{parts.scheme.lower()}://{host}"


def _find_in_json(value: Any) -> str:
    """LP: a string under a key containing base/domain/url that mentions lingma or qoder."""
    if isinstance(value, dict):
        for key, item in value.items():
            lowered = str(key).lower()
            if isinstance(item, str) and any(k in lowered for k in ("base", "domain", "url")):
                text = item.strip().lower()
                if text.startswith("http") and ("lingma" in text or "qoder" in text):
                    found = normalize_base(item)
                    if found:
                        return found
            nested = _find_in_json(item)
            if nested:
                return nested
    elif isinstance(value, list):
        for item in value:
            nested = _find_in_json(item)
            if nested:
                return nested
    return ""


def from_config_text(text: str) -> str:
    try:
        return _find_in_json(msgspec.json.decode(text))
    except msgspec.DecodeError:
        return from_log_text(text)


def from_log_text(text: str) -> str:
    """The last URL on a Lingma host, else the URL after the last marker (any host)."""
    for match in reversed(list(_URL.finditer(text))):
        found = normalize_base(match.group(0))
        if found and is_lingma_host(found.split("://", 1)[1]):
            return found
    lowered = text.lower()
    for marker in LOG_MARKERS:
        index = lowered.rfind(marker)
        if index < 0:
            continue
        after = _URL.search(text, index + len(marker))
        if after is not None and "\n" not in text[index : after.start()]:
            found = normalize_base(after.group(0))
            if found:
                return found
    return ""


def endpoint_flag(args: Sequence[str]) -> str:
    """`--endpoint URL` or `--endpoint=URL` among the runtime's start arguments."""
    for index, arg in enumerate(args):
        if arg == "--endpoint" and index + 1 < len(args):
            return normalize_base(args[index + 1])
        if arg.startswith("--endpoint="):
            return normalize_base(arg.split("=", 1)[1])
    return ""


def region_default(work_dir: Path) -> str:
    """`cache/cache.json` regionEnv: "cn" → the China host, anything else → international."""
    try:
        config = msgspec.json.decode((work_dir / "cache" / "cache.json").read_bytes())
    except (OSError, msgspec.DecodeError):
        return INTL_BASE
    region = config.get("regionEnv") if isinstance(config, dict) else None
    return CN_BASE if isinstance(region, str) and region.lower() == "cn" else INTL_BASE


def _read_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - MAX_LOG_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _recent_log_files(work_dir: Path) -> list[Path]:
    logs = work_dir / "logs"
    try:
        dirs = sorted(
            (d for d in logs.iterdir() if d.is_dir()),
            key=lambda d: d.stat().st_mtime_ns,
            reverse=True,
        )[:RECENT_LOG_DIRS]
    except OSError:
        return []
    return [p for d in dirs for p in sorted(d.rglob("*.log")) if "lingma" in p.name.lower()]


def file_candidates(work_dir: Path) -> list[BaseUrlCandidate]:
    found: list[BaseUrlCandidate] = []
    for name in CONFIG_FILES:
        url = from_config_text(_read_tail(work_dir / name))
        if url:
            found.append(BaseUrlCandidate(url, name))
    for path in [*(work_dir / name for name in LOG_FILES), *_recent_log_files(work_dir)]:
        url = from_log_text(_read_tail(path))
        if url:
            found.append(BaseUrlCandidate(url, str(path.relative_to(work_dir))))
    return found


def unique(candidates: Iterable[BaseUrlCandidate]) -> list[BaseUrlCandidate]:
    seen: set[str] = set()
    out: list[BaseUrlCandidate] = []
    for candidate in candidates:
        if candidate.url and candidate.url not in seen:
            seen.add(candidate.url)
            out.append(candidate)
    return out


def endpoint_of(reply: Any) -> str:
    """The endpoint in the runtime's `config/getEndpoint` answer ("" when it names none)."""
    endpoint = reply.get("endpoint") if isinstance(reply, dict) else None
    return endpoint if isinstance(endpoint, str) else ""


def candidates(
    *,
    explicit: str,
    runtime_endpoint: str,
    dedicated_domain: str,
    binary_args: Sequence[str],
    work_dir: Path,
) -> list[BaseUrlCandidate]:
    """Where to look, best first; an explicit setting is the only candidate."""
    if explicit:
        return [
            BaseUrlCandidate(normalize_base(explicit) or explicit.rstrip("/"), "cloud_base_url")
        ]
    found = [
        BaseUrlCandidate(normalize_base(runtime_endpoint), "runtime config/getEndpoint"),
        BaseUrlCandidate(normalize_base(dedicated_domain), "dedicated_domain_url"),
        BaseUrlCandidate(endpoint_flag(binary_args), "--endpoint"),
        *file_candidates(work_dir),
        BaseUrlCandidate(region_default(work_dir), "region default"),
    ]
    return unique(found)
