"""Test-only: real Debian nginx and HAProxy running the shipped deploy/ configs.

Each config is the file operators install with only its example addresses and listen port
replaced. Around it the tests add what they need: for nginx private temp paths, an access log
and one test-only response header (`x-test-upstream`) naming every host nginx tried for a
request with each one's status; for HAProxy an admin socket to read its health-check view.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from tests.helpers import REPO, ChildProcesses, free_port, wait_until_async

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
DEPLOY_NGINX = REPO / "deploy" / "nginx" / "lingma-gw.conf"
DEPLOY_HAPROXY = REPO / "deploy" / "haproxy" / "haproxy.cfg"
UPSTREAM_TRACE = "x-test-upstream"

_NGINX_SERVER = re.compile(r"(?m)^(\s*server )10\.0\.0\.1[12]:8080\b")
_HAPROXY_SERVER = re.compile(r"(?m)^(\s*server gw\d )10\.0\.0\.1[12]:8080\b")


def _substitute(text: str, pattern: re.Pattern[str], addresses: list[str]) -> str:
    """Replace the example addresses in order; the shipped file must hold exactly as many."""
    given = iter(addresses)
    text, count = pattern.subn(lambda m: m.group(1) + next(given), text)
    assert count == len(addresses), f"expected {len(addresses)} example servers, found {count}"
    return text


def render_nginx_site(upstreams: list[str], listen: str) -> str:
    text = _substitute(DEPLOY_NGINX.read_text(), _NGINX_SERVER, upstreams)
    text, count = re.subn(r"(?m)^(\s*)listen 80;", rf"\g<1>listen {listen};", text)
    assert count == 1, "deploy/nginx/lingma-gw.conf should have one `listen 80;`"
    return text


def render_haproxy(upstreams: list[str], listen: str) -> str:
    text = _substitute(DEPLOY_HAPROXY.read_text(), _HAPROXY_SERVER, upstreams)
    text, count = re.subn(r"(?m)^(\s*)bind :80\b", rf"\g<1>bind {listen}", text)
    assert count == 1, "deploy/haproxy/haproxy.cfg should have one `bind :80`"
    return text


def render_nginx_main(root: Path, site: Path) -> str:
    """The test's nginx.conf: the shipped site inside an http block with private paths."""
    temp = "\n".join(
        f"    {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    # As root, workers would drop to `nobody`, which cannot enter the 0700 test directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
events {{ worker_connections 256; }}
http {{
{temp}
    uwsgi_temp_path {root / "uwsgi"};
    scgi_temp_path {root / "scgi"};
    access_log {root / "access.log"};
    # Like a site-wide nginx.conf that compresses: the shipped location must opt out of it.
    gzip on;
    gzip_types text/event-stream application/json;
    gzip_min_length 0;
    # Test-only: every host tried and its status, e.g. "127.0.0.1:1, 127.0.0.1:2|503, 200".
    add_header {UPSTREAM_TRACE} "$upstream_addr|$upstream_status" always;
    include {site};
}}
"""


@dataclass
class Nginx:
    root: Path
    port: int
    proc: Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return (self.root / "nginx.log").read_text(errors="replace")


async def start_nginx(children: ChildProcesses, root: Path, upstreams: list[str]) -> Nginx:
    root.mkdir(mode=0o700, exist_ok=True)
    port = free_port()
    site = root / "lingma-gw.conf"
    site.write_text(render_nginx_site(upstreams, f"127.0.0.1:{port}"))
    main = root / "nginx.conf"
    main.write_text(render_nginx_main(root, site))
    directives = f"daemon off; pid {root / 'nginx.pid'}; error_log stderr;"
    proc = children.start(
        [NGINX, "-p", str(root), "-c", str(main), "-g", directives],
        log_path=root / "nginx.log",
    )
    await _wait_listening(proc, port, "nginx", root / "nginx.log")
    return Nginx(root=root, port=port, proc=proc)


def tried_hosts(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """(host:port, status) for every upstream nginx tried, from the test-only header."""
    addresses, _, statuses = headers.get(UPSTREAM_TRACE, "").partition("|")
    return list(zip(addresses.split(", "), statuses.split(", "), strict=True))


async def _wait_listening(proc: Popen[bytes], port: int, what: str, log: Path) -> None:
    async def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    await wait_until_async(listening, 10, f"{what} to listen")


@dataclass
class HAProxy:
    root: Path
    port: int
    proc: Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"

    async def server_states(self, backend: str = "lingma_gw") -> dict[str, str]:
        """Server name -> health as HAProxy sees it ("UP", "DOWN", "UP 1/2", ...)."""
        reader, writer = await asyncio.open_unix_connection(str(self.admin_socket))
        try:
            writer.write(b"show stat\n")
            await writer.drain()
            async with asyncio.timeout(5):
                text = (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()
        rows = list(csv.reader(text.lstrip("# ").splitlines()))
        column = {name: i for i, name in enumerate(rows[0])}
        return {
            row[column["svname"]]: row[column["status"]]
            for row in rows[1:]
            if row and row[column["pxname"]] == backend and row[column["svname"]] != "BACKEND"
        }

    async def wait_states(self, want: dict[str, str], timeout: float = 15) -> None:
        async def reached() -> bool:
            states = await self.server_states()
            return all(states.get(name) == state for name, state in want.items())

        await wait_until_async(reached, timeout, f"haproxy health {want}")


async def start_haproxy(children: ChildProcesses, root: Path, upstreams: list[str]) -> HAProxy:
    root.mkdir(mode=0o700, exist_ok=True)
    haproxy = HAProxy(root=root, port=free_port(), proc=None)  # type: ignore[arg-type]
    text = render_haproxy(upstreams, f"127.0.0.1:{haproxy.port}")
    shipped = "stats socket /run/haproxy/admin.sock"
    assert text.count(shipped) == 1, f"deploy/haproxy/haproxy.cfg should have `{shipped}`"
    text = text.replace(shipped, f"stats socket {haproxy.admin_socket}")
    (root / "haproxy.cfg").write_text(text)
    log = root / "haproxy.log"
    haproxy.proc = children.start([HAPROXY, "-db", "-f", str(root / "haproxy.cfg")], log_path=log)
    await _wait_listening(haproxy.proc, haproxy.port, "haproxy", log)
    return haproxy
