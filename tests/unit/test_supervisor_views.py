"""Unit: status table and exit codes, reload plans, child specs, the metrics merge, the banner."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from protocol.child_socket import MetricFamily, MetricSample
from protocol.control_socket import ChildStatus, StatusReply
from protocol.vocabulary import BinaryState, ChildKind, ChildState, LoginState
from supervisor.config import Config, load_config
from supervisor.console import banner
from supervisor.metrics import merge_families
from supervisor.reload import plan_reload
from supervisor.specs import front_spec, spec_changed, worker_spec
from supervisor.status_view import (
    EXIT_DEGRADED,
    EXIT_OK,
    exit_code,
    human_bytes,
    human_duration,
    render,
)

pytestmark = pytest.mark.unit

S = ChildState
BASE = """
[server]
runtime_dir = "/run/gw"
state_dir = "/var/lib/gw"
[auth]
api_keys = ["sk-secret-1"]
[lingma]
binary = "/opt/Lingma"
[[accounts]]
name = "acct-a"
username = "u"
password = "p"
[[accounts]]
name = "acct-b"
"""


def config(tmp_path: Path, text: str = BASE, name: str = "a.toml") -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path, environ={})


def reply(*states: S) -> StatusReply:
    workers = [
        ChildStatus(
            name=f"acct-{i}", kind=ChildKind.WORKER, state=state, login=LoginState.LOGGED_IN,
            pid=100 + i, binary_pid=200 + i, uptime_s=3725, restarts=i, rss_bytes=50 * 1024 * 1024,
            cpu_percent=1.25, models=7, last_exit="exit code 3" if state != S.READY else "",
            backend="cloud" if i % 2 else "runtime",
            note="cloud credential unusable: cache/user is missing" if i % 2 else "",
        )
        for i, state in enumerate(states)
    ]  # fmt: skip
    fronts = [ChildStatus(name="front-0", kind=ChildKind.FRONT, state=S.READY, pid=99, uptime_s=5)]
    return StatusReply(
        version="1.0", pid=1, uptime_s=90, listen="127.0.0.1:8080", workers=workers, fronts=fronts
    )


def test_status_exit_codes() -> None:
    assert exit_code(reply(S.READY, S.READY)) == EXIT_OK
    assert exit_code(reply(S.READY, S.DEGRADED)) == EXIT_DEGRADED
    assert exit_code(reply(S.READY, S.FATAL)) == EXIT_DEGRADED
    assert exit_code(reply()) == EXIT_DEGRADED  # no accounts at all is not "all ready"


def test_status_table_like_systemctl() -> None:
    text = render(reply(S.READY, S.BACKOFF))
    lines = text.splitlines()
    assert lines[0] == "● lingma-gw 1.0 - degraded (1/2 accounts ready)"
    assert "Main PID: 1, up 1m30s, listening on 127.0.0.1:8080" in lines[1]
    header = lines[3].split()
    assert header[:4] == ["ACCOUNT", "STATE", "LOGIN", "PID"]
    row = lines[4].split()
    assert row == [
        "acct-0", "ready", "logged_in", "100", "200", "1h2m", "0", "0", "0", "50.0M", "1.2%", "7",
        "runtime",
    ]  # fmt: skip
    assert header[-1] == "BACKEND" and lines[5].split()[-1] == "cloud"
    assert "acct-1: last exit: exit code 3" in text
    assert "acct-1: cloud credential unusable: cache/user is missing" in text  # its own reason
    assert "\033[" not in text
    colored = render(reply(S.READY, S.FATAL), color=True)
    assert "\033[31mfatal" in colored and "\033[32mready" in colored


def test_an_account_waiting_for_its_work_dir_says_so() -> None:
    base = reply(S.READY)
    waiting = msgspec.structs.replace(
        base.workers[0], state=S.STARTING, binary=BinaryState.WAITING_FOR_WORK_DIR
    )
    text = render(msgspec.structs.replace(base, workers=[waiting]))
    assert "acct-0: waiting for the previous Lingma binary to leave the work dir" in text


def test_human_units() -> None:
    assert [human_bytes(n) for n in (512, 2048, 3 * 1024**3)] == ["512B", "2.0K", "3.0G"]
    assert [human_duration(s) for s in (5, 65, 7200, 90000)] == ["5s", "1m5s", "2h0m", "1d1h"]


def test_reload_plan(tmp_path: Path) -> None:
    old = config(tmp_path)
    assert plan_reload(old, old).summary() == "no changes"
    added = config(tmp_path, BASE + '[[accounts]]\nname = "acct-c"\n', "b.toml")
    plan = plan_reload(old, added)
    assert (plan.added, plan.removed, plan.changed, plan.fronts_changed) == (
        ["acct-c"],
        [],
        [],
        False,
    )
    changed = config(tmp_path, BASE.replace('password = "p"', 'password = "q"'), "c.toml")
    assert plan_reload(old, changed).changed == ["acct-a"]
    removed = config(tmp_path, BASE.split('[[accounts]]\nname = "acct-b"', maxsplit=1)[0], "d.toml")
    assert plan_reload(old, removed).removed == ["acct-b"]
    keys = config(tmp_path, BASE.replace('"sk-secret-1"', '"sk-secret-2"'), "e.toml")
    plan = plan_reload(old, keys)
    assert not plan.fronts_changed and not plan.changed  # keys reach fronts as KeysUpdate
    more = config(tmp_path, BASE.replace("[server]\n", "[server]\nfronts = 3\n"), "f.toml")
    assert plan_reload(old, more).fronts_added == [1, 2]
    assert plan_reload(more, old).fronts_removed == [1, 2]


def test_specs_carry_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    spec = worker_spec(cfg, cfg.accounts[0], "/run/gw/worker-acct-a.sock")
    assert spec.work_dir == "/var/lib/gw/accounts/acct-a"
    assert (spec.login.username, spec.login.password, spec.login.auto_login) == ("u", "p", True)
    assert spec.binary == "/opt/Lingma"
    front = front_spec(cfg, 0, "/run/gw/front-0.sock", [], keys=[], limits_column=0)
    assert (front.host, front.port, front.reuse_port) == ("127.0.0.1", 8080, True)
    assert front.control_socket == "/run/gw/control.sock" and "sk-secret-1" not in repr(front)
    assert front.limits_table == "/run/gw/key-limits.shm" and front.usage_record
    limits = "\n[limits]\nidle_timeout_s = 5\nbody_timeout_s = 2.5\n"
    slow = config(tmp_path, BASE + limits, "s.toml")
    slow_front = front_spec(slow, 0, "/run/gw/front-0.sock", [], keys=[], limits_column=0)
    assert (slow_front.idle_timeout_s, slow_front.body_timeout_s) == (5.0, 2.5)
    moved = msgspec.structs.replace(spec, socket_path="/elsewhere")
    assert not spec_changed(spec, moved)
    assert spec_changed(spec, msgspec.structs.replace(spec, max_concurrency=1))
    lingma = 'binary = "/opt/Lingma"\nsetup_timeout_s = 3\nacp_connections = 2'
    fidelity = (
        BASE.replace('binary = "/opt/Lingma"', lingma) + "\n[sessions]\nlegacy_reuse = true\n"
    )
    tuned = worker_spec(config(tmp_path, fidelity, "f.toml"), cfg.accounts[0], "")
    assert (tuned.setup_timeout_s, tuned.acp_connections, tuned.legacy_session_reuse) == (
        3.0,
        2,
        True,
    )
    assert (spec.first_token_timeout_s, spec.silence_timeout_s, spec.legacy_idle_end_s) == (
        120.0,
        60.0,
        10.0,
    )


def test_merge_families_labels_and_dedupes() -> None:
    counter = MetricFamily(
        name="lingma_gw_requests",
        kind="counter",
        help="requests",
        samples=[
            MetricSample(name="lingma_gw_requests_total", labels={"status": "200"}, value=3),
            MetricSample(name="lingma_gw_requests_created", labels={"status": "200"}, value=1.0),
        ],
    )
    mismatched = MetricFamily(name="lingma_gw_requests", kind="gauge", help="x", samples=[])
    front_only = MetricFamily(
        name="lingma_gw_http",
        kind="gauge",
        help="http",
        samples=[MetricSample(name="lingma_gw_http", labels={"account": "acct-b"}, value=1)],
    )
    merged = merge_families(
        [
            ({"account": "acct-a"}, [counter]),
            ({"account": "acct-b"}, [counter, mismatched]),
            ({"front": "0"}, [front_only]),
        ]
    )
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[object]:
            return list(merged)

    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert text.count("# TYPE lingma_gw_requests_total counter") == 1
    assert 'lingma_gw_requests_total{account="acct-a",status="200"} 3.0' in text
    assert 'lingma_gw_requests_total{account="acct-b",status="200"} 3.0' in text
    assert "_created" not in text
    assert 'lingma_gw_http{account="acct-b",front="0"} 1.0' in text  # the child's label wins


def test_banner_shows_the_demo_key_only_for_emulated_accounts(tmp_path: Path) -> None:
    demo = load_config(Path(__file__).resolve().parents[2] / "examples" / "demo.toml", environ={})
    text = banner(demo, "/x/control.sock")
    assert "EMULATED" in text and "sk-demo" in text and "http://127.0.0.1:8080/v1" in text
    assert "acct-a (runtime), acct-b (cloud)" in text  # the demo shows both backends
    real = config(tmp_path)
    text = banner(real, "/x/control.sock")
    assert "EMULATED" not in text and "secret" not in text and "sk-..." in text
