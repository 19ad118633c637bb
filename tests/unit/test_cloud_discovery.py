"""Unit: where the cloud API is (§14.2) — normalising, filtering, log and config candidates."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.cloud.discovery import (
    CN_BASE,
    INTL_BASE,
    candidates,
    endpoint_flag,
    from_config_text,
    from_log_text,
    normalize_base,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "base"),
    [
        ("https://lingma.alibabacloud.com/algo", "https://lingma.alibabacloud.com"),
        (
            "ttps://ai-lingma-x-cn-beijing.rdc.aliyuncs.com/algo/api",
            "https://ai-lingma-x-cn-beijing.rdc.aliyuncs.com",
        ),
        ("http://127.0.0.1:4321/algo", "http://127.0.0.1:4321"),
        ("https://lingma-x.oss-cn-hangzhou.aliyuncs.com/file", ""),
        ("https://cdn.lingma.com/download/plugin.vsix", ""),
        ("ftp://lingma.alibabacloud.com", ""),
        ("not a url", ""),
    ],
)
def test_normalize(raw: str, base: str) -> None:
    assert normalize_base(raw) == base


def test_logs_prefer_a_lingma_host_then_markers() -> None:
    log = (
        "INFO login url http://127.0.0.1:5555/lingma/login?x=1\n"
        "INFO Update endpoint success. endpoint config: https://t.rdc.aliyuncs.com/algo\n"
        "INFO fetched https://lingma-x.oss-cn-beijing.aliyuncs.com/asset.zip\n"
    )
    assert from_log_text(log) == "https://t.rdc.aliyuncs.com"
    loopback = "INFO Update endpoint success. endpoint config: http://127.0.0.1:9/algo\n"
    assert from_log_text(loopback) == "http://127.0.0.1:9"
    assert from_log_text("INFO endpoint config:\nother https://example.com\n") == ""


def test_config_files_and_flags() -> None:
    text = '{"proxy": {"baseUrl": "https://lingma-api.tongyi.aliyun.com/algo"}, "url": "https://x.org"}'
    assert from_config_text(text) == "https://lingma-api.tongyi.aliyun.com"
    assert endpoint_flag(["--x", "--endpoint", "https://lingma.alibabacloud.com"]) == INTL_BASE
    assert endpoint_flag(["--endpoint=https://t.rdc.aliyuncs.com/"]) == "https://t.rdc.aliyuncs.com"


def test_candidate_order_and_explicit_wins(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.json").write_text('{"regionEnv": "cn"}')
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "lingma.log").write_text("endpoint config: https://log.rdc.aliyuncs.com\n")
    found = candidates(
        explicit="",
        runtime_endpoint="https://rt.rdc.aliyuncs.com/algo",
        dedicated_domain="https://rt.rdc.aliyuncs.com",
        binary_args=[],
        work_dir=tmp_path,
    )
    assert [c.url for c in found] == [
        "https://rt.rdc.aliyuncs.com",
        "https://log.rdc.aliyuncs.com",
        CN_BASE,
    ]
    only = candidates(
        explicit="http://127.0.0.1:7/algo",
        runtime_endpoint="https://rt.rdc.aliyuncs.com",
        dedicated_domain="",
        binary_args=[],
        work_dir=tmp_path,
    )
    assert [(c.url, c.source) for c in only] == [("http://127.0.0.1:7", "cloud_base_url")]
    empty = candidates(
        explicit="",
        runtime_endpoint="",
        dedicated_domain="",
        binary_args=[],
        work_dir=tmp_path / "none",
    )
    assert [c.url for c in empty] == [INTL_BASE]
