"""Runs in the supervisor: human progress lines and the "how to use it" banner on stdout.

Only when `[server] progress` is "on", or "auto" with stdout on a terminal (`make run`); under
systemd the JSON log lines on stderr say the same things. The banner shows the demo API key
only when every account runs the emulator; a real deployment's key is shown masked.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

from protocol.child_socket import Pong
from protocol.vocabulary import ChildKind, ChildState, LoginState
from supervisor.config import Config
from supervisor.handle import ChildHandle

S = ChildState


def is_emulated(binary: str) -> bool:
    return "emulator" in os.path.basename(binary).lower()


class Console:
    def __init__(self, mode: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.enabled = mode == "on" or (mode == "auto" and self.stream.isatty())
        self._logins: dict[str, LoginState] = {}
        self.banner_shown = False

    def line(self, text: str) -> None:
        self._write(f"lingma-gw: {text}")

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            print(text, file=self.stream, flush=True)
        except OSError:  # the terminal went away (closed pty, broken pipe): stop printing
            self.enabled = False

    def on_transition(
        self, handle: ChildHandle, old: ChildState, new: ChildState, why: str
    ) -> None:
        who = f"account {handle.name}" if handle.kind is ChildKind.WORKER else handle.name
        pong = handle.last_pong
        if new == S.STARTING:
            verb = "starting" if handle.generation <= 1 else f"restarting ({handle.restarts})"
            self.line(f"{who}: {verb} {handle.kind.value}")
        elif new == S.READY and handle.kind is ChildKind.WORKER:
            models = f", {pong.models} models" if pong is not None else ""
            self.line(f"{who}: READY (logged in{models})")
        elif new == S.READY:
            self.line(f"{who}: READY")
        elif new == S.DEGRADED:
            self.line(f"{who}: degraded ({why})")
        elif new == S.BACKOFF:
            self.line(f"{who}: {why}")
        elif new == S.FATAL:
            self.line(
                f"{who}: FATAL - {why}; fix it, then `lingma-gw restart-worker {handle.name}`"
            )

    def on_pong(self, handle: ChildHandle, pong: Pong) -> None:
        if handle.kind is not ChildKind.WORKER:
            return
        previous = self._logins.get(handle.name)
        self._logins[handle.name] = pong.login
        if pong.login == previous:
            return
        if pong.login == LoginState.LOGGING_IN:
            self.line(f"account {handle.name}: logging in (headless browser auto-login)")
        elif pong.login == LoginState.LOGGED_OUT:
            self.line(f"account {handle.name}: not logged in (`lingma-gw login {handle.name}`)")
        elif pong.login == LoginState.FAILED:
            self.line(f"account {handle.name}: login failed (`lingma-gw login {handle.name}`)")

    def maybe_banner(self, config: Config, workers: list[ChildHandle], socket: str) -> None:
        settled = all(h.state in (S.READY, S.FATAL) for h in workers)
        if self.banner_shown or not settled or not any(h.state == S.READY for h in workers):
            return
        self.banner_shown = True
        self._write(banner(config, socket))


def cli_command() -> str:
    """How to run `lingma-gw` from here: `make run` does not put the venv's bin/ on PATH."""
    if shutil.which("lingma-gw"):
        return "lingma-gw"
    beside = os.path.join(os.path.dirname(sys.executable), "lingma-gw")
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else beside


def banner(config: Config, socket: str) -> str:
    host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"
    base = f"http://{'[' + host + ']' if ':' in host else host}:{config.port}"
    emulated = all(is_emulated(config.account_binary(a)) for a in config.accounts)
    keys = config.auth.api_keys
    key = (keys[0] if emulated else keys[0][:3] + "...") if keys else _no_flat_key(config)
    names = ", ".join(f"{a.name} ({config.account_backend(a).value})" for a in config.accounts)
    kind = "EMULATED (lingma-emulator, not real Lingma)" if emulated else "Lingma"
    model = config.lingma.default_model
    shown_key = key if keys else "unused"
    return "\n".join(
        [
            "",
            f"  lingma-gw is serving on {base}",
            f"  accounts: {names} - {kind}",
            f"  API key:  {key}",
            "",
            "  try it:",
            f"    curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {shown_key}' \\",
            "      -H 'Content-Type: application/json' \\",
            f'      -d \'{{"model": "{model}", '
            '"messages": [{"role": "user", "content": "hello"}]}\'',
            "",
            "    from openai import OpenAI",
            f'    client = OpenAI(base_url="{base}/v1", api_key="{shown_key}")',
            f'    reply = client.chat.completions.create(model="{model}",',
            '        messages=[{"role": "user", "content": "hello"}])',
            "    print(reply.choices[0].message.content)",
            "",
            f"  status: {cli_command()} status --socket {socket}    stop: Ctrl-C",
            "",
        ]
    )


def _no_flat_key(config: Config) -> str:
    if config.keys:
        return "named keys only (`lingma-gw keys list`)"
    return "(none: auth disabled unless `lingma-gw keys add` made one)"
