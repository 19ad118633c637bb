"""Runs in the supervisor: the TOML config schema, its loading, and its validation.

Only the supervisor reads the config. The file is parsed with stdlib `tomllib`, overlaid with
the reference gateway's environment variables (`supervisor.envconfig`), then converted by
msgspec into frozen Structs that reject unknown keys. Every error names the key path (or the
environment variable) and says in one line what is wrong. Relative paths in the file are
resolved against the file's directory, so `examples/demo.toml` works from any cwd.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from protocol.specs import ChatFlow
from protocol.vocabulary import Backend
from supervisor.envconfig import EnvConfigError, apply_env_overrides
from supervisor.keyconfig import (
    KeyConfig,
    KeyConfigError,
    UsageConfig,
    check_keys,
    resolve_keys,
    stringify_dates,
)

ACCOUNT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# Unix socket paths must stay below 108 bytes; the longest one we build is
# "<runtime_dir>/worker-<32-char name>.<serial>.sock".
MAX_RUNTIME_DIR_LEN = 60
DEFAULT_BINARY = "Lingma"
CLOUD_BASE_URL_PATTERN = r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/algo)?/?"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
AccountName = Annotated[str, msgspec.Meta(pattern=ACCOUNT_NAME_PATTERN)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """A config problem an operator must fix: `str()` is one line naming the key path."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerConfig(_Section, frozen=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    fronts: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    runtime_dir: str = "/run/lingma-gw"
    state_dir: str = "/var/lib/lingma-gw"
    log_level: LogLevel = "info"
    access_log: bool = True
    grace_period_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    ping_interval_s: PositiveFloat = 1.0
    ping_timeout_s: PositiveFloat = 5.0
    stats_interval_s: PositiveFloat = 5.0
    progress: Literal["auto", "on", "off"] = "auto"


class AuthConfig(_Section, frozen=True, kw_only=True):
    api_keys: list[str] = []
    admin_token: str = ""
    metrics_token: str = ""
    metrics_public: bool = False


class LimitsConfig(_Section, frozen=True, kw_only=True):
    max_in_flight: PositiveInt = 256
    per_worker_max_in_flight: PositiveInt = 64
    queue_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Total caps on one request, 0 = none. A stream runs as long as it produces: the first-token
    # and silence timeouts ([lingma]) end stalled ones. A non-streamed reply shows nothing until
    # it is complete: its cap matches the OpenAI and Anthropic SDKs' own 600 s read timeout.
    request_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    stream_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 8 * 1024 * 1024
    # Slow clients: an idle keep-alive connection (or one still sending headers) is closed after
    # idle_timeout_s; a request body that has not arrived within body_timeout_s gets 408.
    idle_timeout_s: PositiveFloat = 75.0
    body_timeout_s: PositiveFloat = 60.0
    # http(s) image URLs: fetched by the front only when this is on (front/image_fetch.py).
    fetch_image_urls: bool = False
    image_fetch_timeout_s: PositiveFloat = 10.0


class LingmaConfig(_Section, frozen=True, kw_only=True):
    binary: str = DEFAULT_BINARY
    binary_args: list[str] = []
    startup_timeout_s: PositiveFloat = 30.0
    rpc_timeout_s: PositiveFloat = 60.0
    default_model: str = "auto"
    default_ask_mode: str = "chat"
    chat_flow: ChatFlow = ChatFlow.AUTO
    # ACP image items name their file `<scheme>:///agent/file?path=...` (lingma-protocol.md
    # §5.4): "lingma" for Lingma's runtimes, "qodercn" for QoderCN's.
    image_uri_scheme: Literal["lingma", "qodercn"] = "lingma"
    dedicated_domain_url: str = ""
    cooldown_s: PositiveFloat = 60.0
    env: dict[str, str] = {}
    setup_timeout_s: PositiveFloat = 15.0
    first_token_timeout_s: PositiveFloat = 120.0
    silence_timeout_s: PositiveFloat = 60.0
    legacy_idle_end_s: PositiveFloat = 10.0
    acp_connections: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    # How every account chats unless it says otherwise (lingma-protocol.md §14): "runtime" runs
    # the local runtime's chat; "cloud" signs HTTP requests to Lingma's cloud API with the login
    # that account's runtime keeps. cloud_base_url "" = discovered from the runtime (§14.2).
    backend: Backend = Backend.RUNTIME
    cloud_base_url: str = ""


class ModelsConfig(_Section, frozen=True, kw_only=True):
    aliases: dict[str, str] = {}


class SessionsConfig(_Section, frozen=True, kw_only=True):
    reuse: bool = True
    ttl_s: PositiveFloat = 1800.0
    max_entries: NonNegativeInt = 1000
    legacy_reuse: bool = False


class BrowserConfig(_Section, frozen=True, kw_only=True):
    executable_path: str = "/usr/bin/chromium"
    headless: bool = True
    auto_login: bool = True
    login_timeout_s: PositiveFloat = 120.0
    login_max_retry: NonNegativeInt = 2
    login_retry_pause_s: PositiveFloat = 5.0


class AccountConfig(_Section, frozen=True, kw_only=True):
    name: AccountName
    username: str = ""
    password: str = ""
    session_bundle: str = ""  # base64 bundle from `lingma-gw export-session`
    max_concurrency: PositiveInt = 8
    auto_login: bool | None = None  # None: [browser] auto_login
    binary: str = ""  # "": [lingma] binary
    binary_args: list[str] | None = None  # None: [lingma] binary_args
    env: dict[str, str] = {}  # merged over [lingma] env
    backend: Backend | None = None  # None: [lingma] backend
    cloud_base_url: str = ""  # "": [lingma] cloud_base_url
    cloud_credential_file: str = ""  # "": the work dir's cache/user (LP-format JSON otherwise)


class Config(_Section, frozen=True, kw_only=True):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    lingma: LingmaConfig = LingmaConfig()
    models: ModelsConfig = ModelsConfig()
    sessions: SessionsConfig = SessionsConfig()
    browser: BrowserConfig = BrowserConfig()
    accounts: list[AccountConfig] = []
    keys: list[KeyConfig] = []  # named API keys (supervisor/keyconfig.py)
    usage: UsageConfig = UsageConfig()

    @property
    def host(self) -> str:
        return parse_listen(self.server.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.server.listen)[1]

    @property
    def control_socket(self) -> str:
        return os.path.join(self.server.runtime_dir, "control.sock")

    def account_binary(self, account: AccountConfig) -> str:
        return account.binary or self.lingma.binary

    def account_backend(self, account: AccountConfig) -> Backend:
        return self.lingma.backend if account.backend is None else account.backend

    def account_cloud_base_url(self, account: AccountConfig) -> str:
        return account.cloud_base_url or self.lingma.cloud_base_url

    def work_dir(self, name: str) -> str:
        return os.path.join(self.server.state_dir, "accounts", name)

    @property
    def usage_database(self) -> str:
        return self.usage.database or os.path.join(self.server.state_dir, "usage.db")


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); raises ValueError with a readable reason."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", listen.strip())
    if match is None:
        raise ValueError(f"expected HOST:PORT (or [IPv6]:PORT), got {listen!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return host, port


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, overlay the environment, validate and resolve paths; raises ConfigError."""
    config_path = Path(path).resolve()
    try:
        with config_path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{config_path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    try:
        env_sources = apply_env_overrides(raw, os.environ if environ is None else environ)
    except EnvConfigError as exc:
        raise ConfigError(str(exc)) from None
    stringify_dates(raw)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, env_sources)) from None
    config = _validated(_resolved(config, config_path.parent))
    try:
        keys = resolve_keys(
            config.keys, config_path.parent, os.environ if environ is None else environ
        )
        check_keys(keys, config.auth.api_keys)
    except KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    return msgspec.structs.replace(config, keys=keys)


def _describe_validation_error(exc: msgspec.ValidationError, env_sources: dict[str, str]) -> str:
    """msgspec says 'Expected `int` >= 1 - at `$.limits.max_in_flight`': put the path first."""
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `")
    if not sep:
        return f"(top level): {_friendlier(text)}"
    key_path = where.rstrip("`").removeprefix("$").lstrip(".") or "(top level)"
    source = env_sources.get(key_path.split("[")[0]) or env_sources.get(key_path)
    origin = f" (set by environment variable {source})" if source else ""
    return f"{key_path}: {_friendlier(reason)}{origin}"


def _friendlier(reason: str) -> str:
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", reason)
    if unknown:
        return f"unknown key `{unknown.group(1)}`"
    missing = re.fullmatch(r"Object missing required field `(.+)`", reason)
    if missing:
        return f"missing required key `{missing.group(1)}`"
    if "matching regex" in reason and ACCOUNT_NAME_PATTERN in reason:
        return (
            "account names must be 1-32 chars of a-z, 0-9, '_' or '-', starting with a letter "
            "or digit"
        )
    return reason


def _resolve_path(value: str, base: Path) -> str:
    return str((base / os.path.expanduser(value)).resolve()) if value else value


def resolve_binary(binary: str, base: Path) -> str:
    """Absolute as is; with a '/' relative to the config dir; a bare name from the venv, PATH.

    The venv's bin directory comes first so `binary = "lingma-emulator"` finds the console
    script installed beside `lingma-gw` even when the venv is not activated. An unresolvable
    name is kept: the worker then exits with EXIT_CANNOT_START and the account shows FATAL.
    """
    if not binary or os.path.isabs(binary):
        return binary
    if "/" in binary:
        return _resolve_path(binary, base)
    venv_bin = os.path.dirname(sys.executable)
    candidate = os.path.join(venv_bin, binary)
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which(binary) or binary


def _resolved(config: Config, base: Path) -> Config:
    server = msgspec.structs.replace(
        config.server,
        runtime_dir=_resolve_path(config.server.runtime_dir, base),
        state_dir=_resolve_path(config.server.state_dir, base),
    )
    lingma = msgspec.structs.replace(
        config.lingma, binary=resolve_binary(config.lingma.binary, base)
    )
    browser = msgspec.structs.replace(
        config.browser,
        executable_path=_resolve_path(config.browser.executable_path, base),
    )
    usage = msgspec.structs.replace(
        config.usage, database=_resolve_path(config.usage.database, base)
    )
    accounts = [
        msgspec.structs.replace(
            account,
            binary=resolve_binary(account.binary, base),
            cloud_credential_file=_resolve_path(account.cloud_credential_file, base),
        )
        for account in config.accounts
    ]
    return msgspec.structs.replace(
        config, server=server, lingma=lingma, browser=browser, accounts=accounts, usage=usage
    )


def _validated(config: Config) -> Config:
    """Cross-field rules msgspec cannot express."""
    try:
        parse_listen(config.server.listen)
    except ValueError as exc:
        raise ConfigError(f"server.listen: {exc}") from None
    if len(config.server.runtime_dir) > MAX_RUNTIME_DIR_LEN:
        raise ConfigError(
            f"server.runtime_dir: {config.server.runtime_dir!r} is longer than "
            f"{MAX_RUNTIME_DIR_LEN} characters (Unix socket paths must stay under 108 bytes)"
        )
    if not config.accounts:
        raise ConfigError(
            "accounts: at least one [[accounts]] entry is required (or set LINGMA_ACCOUNTS)"
        )
    seen: set[str] = set()
    for index, account in enumerate(config.accounts):
        if account.name in seen:
            raise ConfigError(f"accounts[{index}].name: duplicate account name {account.name!r}")
        seen.add(account.name)
    if config.server.ping_timeout_s < config.server.ping_interval_s:
        raise ConfigError(
            "server.ping_timeout_s: must be at least server.ping_interval_s "
            f"({config.server.ping_interval_s})"
        )
    if any(not key for key in config.auth.api_keys):
        raise ConfigError("auth.api_keys: empty strings are not valid API keys")
    _check_cloud_base_url(config.lingma.cloud_base_url, "lingma.cloud_base_url")
    for index, account in enumerate(config.accounts):
        _check_cloud_base_url(account.cloud_base_url, f"accounts[{index}].cloud_base_url")
    return config


def _check_cloud_base_url(value: str, key: str) -> None:
    """scheme://host[:port], optionally ending in /algo (the runtime's own spelling, §5.2)."""
    if not value:
        return
    if re.fullmatch(CLOUD_BASE_URL_PATTERN, value) is None:
        raise ConfigError(
            f"{key}: expected http(s)://HOST[:PORT] (optionally ending in /algo), got {value!r}"
        )
