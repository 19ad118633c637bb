"""The bench's pure logic: the cloud client's signature and credential, open-loop statistics,
which baseline the headline ratios use, how targets judge a run, and the open-stream ramps of
both backends (no timings asserted)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench import report, table, thresholds
from bench.cloud_direct import read_credential, signature_headers
from bench.openloop import RateJob, RateOutcome, summarize_rate
from bench.plan import FULL, QUICK, Plan
from bench.scale import StreamBook, scale_result
from bench.targets import CloudTarget, HttpTarget
from emulator.user_cache import encrypt_user, new_user

pytestmark = pytest.mark.unit

# lingma-protocol.md §14.5 worked example
EXAMPLE = CloudTarget(
    base_url="http://127.0.0.1:1",
    key="S0VZLWV4YW1wbGU=",
    info="RVVJLWV4YW1wbGU=",
    uid="1",
    machine_id="m",
    model="",
    prompt="hi",
)
EXAMPLE_ID = "11111111-2222-4333-8444-555555555555"


@pytest.mark.parametrize(
    ("body", "path", "sig"),
    [
        (b"", "/api/v2/model/list", "438f4fed9fa8f59b89e144b6ae265bcc"),
        (
            b'{"messages":[{"role":"user","content":"hi"}]}',
            "/api/v2/service/pro/sse/agent_chat_generation",
            "3b39f5080f47302553e55b92ab8117ec",
        ),
    ],
)
def test_signature_reproduces_the_worked_example(body: bytes, path: str, sig: str) -> None:
    headers = signature_headers(EXAMPLE, body, path, 1700000000, EXAMPLE_ID)
    assert headers["Authorization"].rsplit(".", 1)[1] == sig
    assert headers["Cosy-Date"] == "1700000000"
    assert headers["Cosy-Key"] == EXAMPLE.key


def test_credential_is_decrypted_from_the_work_dir(tmp_path: Path) -> None:
    machine_id = str(uuid.uuid4())
    user = new_user("bench")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "id").write_text(machine_id + "\n")
    (tmp_path / "cache" / "user").write_text(encrypt_user(user, machine_id))
    target = read_credential(tmp_path, "http://127.0.0.1:9/", "", "hello")
    assert (target.key, target.info, target.uid) == (user.key, user.encrypt_user_info, user.uid)
    assert target.machine_id == machine_id
    assert target.base_url == "http://127.0.0.1:9"


def test_open_loop_summary_counts_every_scheduled_request() -> None:
    job = RateJob(
        target=HttpTarget(url="http://127.0.0.1:1/"),
        rate_per_s=100.0,
        shares=2,
        share=0,
        start_at=time.monotonic(),
        warmup_s=0.5,
        duration_s=2.0,
        max_outstanding=10,
    )
    outcomes = [
        RateOutcome(latencies_ms=[1.0, 2.0, 3.0], send_lags_ms=[0.1, 0.2, 0.3], errors=1),
        RateOutcome(latencies_ms=[4.0], send_lags_ms=[0.4]),
    ]
    summary = summarize_rate(job, outcomes)
    assert (summary.requests, summary.errors, summary.processes) == (4, 1, 2)
    assert summary.achieved_rps == 2.0
    assert summary.p50_ms == 2.5
    assert summary.max_ms == 4.0


def _level(concurrency: int, rps: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "rps": rps}


def test_throughput_vs_litellm_uses_litellm_on_every_core() -> None:
    results = {
        "non_streaming": {
            "lingma_gw": [_level(64, 600.0), _level(256, 500.0)],
            "litellm": [_level(64, 50.0), _level(256, 60.0)],
            "litellm_one_worker": [_level(64, 30.0), _level(256, 40.0)],
        }
    }
    ratios = report.ratios(results)
    assert ratios["throughput_vs_litellm"] == 10.0
    assert ratios["throughput_vs_litellm_one_worker"] == 15.0


def test_targets_say_which_hold_and_what_was_not_measured() -> None:
    ratios = {
        "added_p50_ms_at_1": 0.5,
        "added_p99_ms_at_1": 2.5,
        "max_open_streams_without_error": 500,
        "open_stream_errors": 0,
        "open_streams_ramp_top": 500,  # a quick run's ramp says nothing about 5,000
    }
    verdicts = {t["ratio"]: t["met"] for t in thresholds.evaluate(ratios)}
    assert verdicts["added_p50_ms_at_1"] is True
    assert verdicts["added_p99_ms_at_1"] is False
    assert verdicts["max_open_streams_without_error"] is None
    assert verdicts["cloud_added_p50_ms_at_1"] is None
    full_ramp = {**ratios, "max_open_streams_without_error": 5000, "open_streams_ramp_top": 5000}
    verdicts = {t["ratio"]: t["met"] for t in thresholds.evaluate(full_ramp)}
    assert verdicts["max_open_streams_without_error"] is True
    failed = {**full_ramp, "open_stream_errors": 3}
    verdicts = {t["ratio"]: t["met"] for t in thresholds.evaluate(failed)}
    assert verdicts["max_open_streams_without_error"] is False


@pytest.mark.parametrize("plan", [FULL, QUICK], ids=["full", "quick"])
def test_both_ramps_share_one_slow_upstream_and_the_cloud_one_ends_first(plan: Plan) -> None:
    runtime, cloud = plan.runtime_ramp, plan.cloud_ramp
    assert runtime.steps == plan.scale_steps
    assert cloud.steps == plan.cloud_scale_steps
    env_runtime, env_cloud = runtime.emulator_env(), cloud.emulator_env()
    assert env_runtime["LINGMA_EMULATOR_REPLY_TOKENS"] == str(plan.scale_reply_tokens)
    assert env_cloud["LINGMA_EMULATOR_REPLY_TOKENS"] == str(plan.cloud_scale_reply_tokens)
    pace = ("LINGMA_EMULATOR_FIRST_TOKEN_MS", "LINGMA_EMULATOR_TOKENS_PER_S")
    assert [env_runtime[k] for k in pace] == [env_cloud[k] for k in pace]
    # The cloud ramp climbs while the runtime's streams trickle: its answers must not outlast
    # them, or it would lengthen the run.
    assert cloud.stream_seconds() <= runtime.stream_seconds()
    assert max(cloud.steps) <= max(runtime.steps)


def test_the_full_runtime_ramp_still_reaches_the_open_streams_target() -> None:
    assert FULL.scale_steps[-1] == thresholds.OPEN_STREAMS_TARGET
    assert list(FULL.scale_steps) == sorted(set(FULL.scale_steps))


def _step(target: int, open_now: int, gateway_mib: float, errors: int = 0) -> dict[str, Any]:
    return {
        "target": target,
        "open": open_now,
        "errors": errors,
        "stalled": 0,
        "gateway_rss_mib": gateway_mib,
        "loadgen_rss_mib": 60.0,
    }


def test_kib_per_open_stream_is_the_growth_at_the_top_over_the_streams_open() -> None:
    idle = {"gateway_rss_mib": 100.0}
    steps = [_step(100, 100, 102.0), _step(1000, 1000, 120.0), _step(2000, 1500, 130.0, 2)]
    book = StreamBook(errors=2)
    result = scale_result(idle, steps, book, done=1498)
    assert result["kib_per_open_stream"] == round(30.0 * 1024 / 1500, 2)
    assert result["max_open_streams_without_error"] == 1000  # the last step had errors
    assert result["errors"] == 2


def test_the_cloud_ramp_is_reported_beside_the_runtime_one() -> None:
    idle = {"gateway_rss_mib": 90.0}
    results = {
        "scale": {"idle": idle, "steps": [_step(500, 500, 100.0)], "kib_per_open_stream": 20.48},
        "scale_cloud": {
            "idle": idle,
            "steps": [_step(200, 200, 95.0)],
            "kib_per_open_stream": 25.6,
            "errors": 0,
        },
    }
    ratios = report.ratios(results)
    assert ratios["kib_per_open_stream"] == 20.48
    assert ratios["cloud_kib_per_open_stream"] == 25.6
    assert ratios["cloud_open_stream_errors"] == 0
    assert "cloud_kib_per_open_stream" not in {t.key for t in thresholds.TARGETS}  # context
    lines = table.render({**results, "ratios": ratios}).splitlines()
    runtime_title = next(i for i, line in enumerate(lines) if "slow upstream)" in line)
    cloud_title = next(i for i, line in enumerate(lines) if "through the cloud backend" in line)
    assert runtime_title < cloud_title
    assert "200 open" in lines[cloud_title + 2]


def test_a_run_without_the_cloud_ramp_reports_nothing_for_it() -> None:
    ratios = report.ratios({"scale": {"kib_per_open_stream": 20.0}})
    assert ratios["cloud_kib_per_open_stream"] is None
    assert "cloud backend" not in table.render({"ratios": ratios})
