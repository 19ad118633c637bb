"""Images on the runtime path (issue 16 item 2): a real worker against the emulator.

ACP: each image reaches the runtime as a `session/prompt` image item (lingma-protocol.md §5.4)
whose `uri` names a file in the account's work dir, mirrored in `contextParams`; the emulator
reads the file and says in its reply what it got; the file is gone once the turn is over.
QoderCN's `qodercn:///` spelling is a setting. Legacy `chat/ask`: a clear refusal that another
account may serve.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.channel import MuxClient
from protocol.chat import ImageInput, Message
from protocol.specs import ChatFlow
from protocol.vocabulary import ErrorCode
from tests.component.worker_support import (
    WorkerProcess,
    chat,
    log_in,
    logged_in_worker,
    make_spec,
    ready_client,
    start_worker,
    user,
)
from tests.helpers import ChildProcesses

pytestmark = pytest.mark.component

PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)
GIF = b"GIF89a" + bytes(20)


def image(raw: bytes, media_type: str) -> ImageInput:
    return ImageInput(media_type=media_type, data_b64=base64.b64encode(raw).decode())


def with_image(text: str, *images: ImageInput) -> Message:
    return Message(role="user", text=text, images=list(images))


def image_records(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [r for r in worker.records() if r.get("flow") == "acp" and "event" not in r]


def images_dir(worker: WorkerProcess) -> Path:
    return Path(worker.spec.work_dir) / "images"


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    with logged_in_worker(make_spec) as process:
        yield process


@pytest.fixture
async def client(worker: WorkerProcess) -> AsyncIterator[MuxClient]:
    async with ready_client(worker) as mux:
        yield mux


async def test_an_image_reaches_the_runtime_as_a_file_and_an_item(
    worker: WorkerProcess, client: MuxClient
) -> None:
    result = await chat(client, [with_image("what is this?", image(PNG, "image/png"))])
    assert f"(images received: image/png, {len(PNG)} bytes)" in result.text
    record = image_records(worker)[-1]
    [sent] = record["images"]
    assert (sent["mime_type"], sent["bytes"], record["context_params"]) == ("image/png", 48, 1)
    prefix = "lingma:///agent/file?path=" + str(images_dir(worker)).replace("/", "%2F")
    assert sent["uri"].startswith(prefix) and sent["uri"].endswith(".png")
    assert record["text"] == "what is this?\n[image 1]"
    assert list(images_dir(worker).iterdir()) == []  # removed once the turn was over


async def test_an_image_alone_and_a_failed_turn_leave_no_file(
    worker: WorkerProcess, client: MuxClient
) -> None:
    only = await chat(client, [with_image("", image(GIF, "image/gif"))])
    assert f"image/gif, {len(GIF)} bytes" in only.text
    worker.set_script([{"match": "broken", "error": {"status": 500, "message": "no"}}])
    failed = await chat(client, [with_image("broken", image(PNG, "image/png"))])
    assert failed.failure.code is ErrorCode.UPSTREAM_ERROR
    assert list(images_dir(worker).iterdir()) == []


async def test_a_reused_session_gets_only_the_new_turns_images(
    worker: WorkerProcess, client: MuxClient
) -> None:
    first = with_image("look at this", image(PNG, "image/png"))
    answer = await chat(client, [first])
    history = [first, Message(role="assistant", text=answer.text)]
    follow = await chat(client, [*history, with_image("and this one?", image(GIF, "image/gif"))])
    assert follow.finish.session_reused
    record = image_records(worker)[-1]
    assert [i["mime_type"] for i in record["images"]] == ["image/gif"]
    # Another key scope cannot reuse that session: the whole conversation goes, both images.
    fresh = await chat(
        client,
        [*history, with_image("and this one?", image(GIF, "image/gif"))],
        scope="another-scope",
    )
    assert not fresh.finish.session_reused
    record = image_records(worker)[-1]
    assert [i["mime_type"] for i in record["images"]] == ["image/png", "image/gif"]
    assert "[image 1]" in record["text"] and "[image 2]" in record["text"]


async def test_qodercn_reads_its_own_uri_scheme(children: ChildProcesses, sock_dir: Path) -> None:
    qoder = {"LINGMA_EMULATOR_IMAGE_URI_SCHEME": "qodercn"}
    right = sock_dir / "right"
    wrong = sock_dir / "wrong"
    right.mkdir()
    wrong.mkdir()
    matching = start_worker(
        children, make_spec(right, env=qoder, image_uri_scheme="qodercn"), right
    )
    default = start_worker(children, make_spec(wrong, env=qoder), wrong)
    await log_in(matching)
    await log_in(default)
    async with ready_client(matching) as mux:
        result = await chat(mux, [with_image("qoder?", image(PNG, "image/png"))])
        assert "image/png" in result.text
        assert image_records(matching)[-1]["images"][0]["uri"].startswith("qodercn:///agent/")
    async with ready_client(default) as mux:
        refused = (await chat(mux, [with_image("qoder?", image(PNG, "image/png"))])).failure
        assert (
            refused.code is ErrorCode.UPSTREAM_ERROR and "qodercn:///agent/file" in refused.message
        )


@pytest.mark.parametrize(
    ("flow", "env"),
    [(ChatFlow.LEGACY, {}), (ChatFlow.AUTO, {"LINGMA_EMULATOR_NO_ACP": "1"})],
    ids=["legacy", "auto-without-acp"],
)
async def test_legacy_chat_ask_refuses_images_so_another_account_can_serve(
    children: ChildProcesses, sock_dir: Path, flow: ChatFlow, env: dict[str, str]
) -> None:
    worker = start_worker(children, make_spec(sock_dir, chat_flow=flow, env=env), sock_dir)
    await log_in(worker)
    async with ready_client(worker) as mux:
        refused = (await chat(mux, [with_image("hi", image(PNG, "image/png"))])).failure
        assert refused.code is ErrorCode.BAD_REQUEST and refused.retryable
        assert "ACP" in refused.message and "§5.3" in refused.message
        assert not [r for r in worker.records() if r.get("flow") == "legacy"]  # nothing asked
        assert "You said: plain" in (await chat(mux, [user("plain")])).text
