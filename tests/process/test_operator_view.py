"""Process: what an operator sees of a real `lingma-gw serve` — status hints, a client's error
while no account is logged in, and the Grafana dashboard / Prometheus rules matching the real
metric names of a live /metrics scrape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest

from protocol.vocabulary import ChildState
from tests.helpers import REPO, ChildProcesses
from tests.process.gateway import EMULATOR, SupervisedGateway, start_gateway

pytestmark = pytest.mark.process

S = ChildState
DASHBOARD = REPO / "deploy" / "grafana" / "lingma-gw.json"
PROMETHEUS_RULES = REPO / "deploy" / "prometheus" / "lingma-gw.rules.yml"
METRIC_NAME = re.compile(r"\blingma_[a-z0-9_]+")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [str(v.get("definition", "")) for v in dashboard["templating"]["list"]]
    return exprs


def metric_names(texts: list[str]) -> set[str]:
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def family(name: str) -> str:
    """A series name's family as `# TYPE` declares it (a histogram's _bucket -> the base)."""
    for suffix in SERIES_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


async def test_operator_view(children: ChildProcesses, sock_dir: Path) -> None:
    gw = start_gateway(children, sock_dir, {"acct-a": EMULATOR, "broken": "/nonexistent"})
    await gw.wait_states({"acct-a": S.DEGRADED, "broken": S.FATAL, "front-0": S.READY}, 40)
    await check_status_hints(gw)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        status, body = await gw.chat(http, "anyone there?")
        assert status == 503, body
        message = body["error"]["message"]
        assert "no READY account" in message and "lingma-gw status" in message
        await gw.login_all(["acct-a"])
        status, body = await gw.chat(http, "now?")
        assert status == 200, body
        exposition = await gw.metrics(http)
    declared = set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.MULTILINE))
    used = metric_names(dashboard_exprs())
    assert len(used) >= 15, used
    assert {family(n) for n in used} <= declared, {family(n) for n in used} - declared
    rules = metric_names([PROMETHEUS_RULES.read_text()])
    assert rules and {family(n) for n in rules} <= declared, {family(n) for n in rules} - declared


async def check_status_hints(gw: SupervisedGateway) -> None:
    code, out, _ = await gw.cli("status")
    assert code == 1, out  # degraded
    assert "\033[" not in out  # not a terminal: no colours
    assert "acct-a: not logged in - `lingma-gw login acct-a`" in out
    assert "broken: FATAL - fix the cause" in out
    assert "`lingma-gw restart-worker broken`" in out
    assert out.splitlines()[3].split()[-1] == "BACKEND" and " runtime" in out  # from the spec
