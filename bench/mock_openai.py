"""Runs as its own bench process: an instant OpenAI-compatible upstream and a trivial handler.

`POST /v1/chat/completions` answers at once (JSON body or SSE chunks) so that what is measured
in front of it is the proxy, not the model. `GET /trivial` is the smallest useful HTTP answer:
the load generator's own ceiling is measured against it.

    python -m bench.mock_openai --port N [--chunks 3]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import msgspec
import uvloop
from aiohttp import web

REPLY = "[mock-openai] You said: hello"


class _Delta(msgspec.Struct, omit_defaults=True):
    content: str | None = None
    role: str | None = None


class _StreamChoice(msgspec.Struct):
    index: int
    delta: _Delta
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[_StreamChoice]
    object: str = "chat.completion.chunk"


class _Message(msgspec.Struct):
    role: str
    content: str


class _Choice(msgspec.Struct):
    index: int
    message: _Message
    finish_reason: str


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Completion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage
    object: str = "chat.completion"


class _Probe(msgspec.Struct):
    """The only request fields the mock looks at."""

    model: str = "mock"
    stream: bool = False


_probe_decoder = msgspec.json.Decoder(_Probe)


def completion_body(model: str) -> bytes:
    words = len(REPLY.split())
    return msgspec.json.encode(
        _Completion(
            id="chatcmpl-mock",
            created=int(time.time()),
            model=model,
            choices=[_Choice(index=0, message=_Message("assistant", REPLY), finish_reason="stop")],
            usage=_Usage(prompt_tokens=8, completion_tokens=words, total_tokens=8 + words),
        )
    )


def stream_body(model: str, chunks: int) -> bytes:
    """The whole SSE answer: a role chunk, `chunks` content pieces, a finish chunk, [DONE]."""
    created = int(time.time())
    words = REPLY.split(" ")
    size = max(1, -(-len(words) // chunks))
    pieces = [" ".join(words[i : i + size]) + " " for i in range(0, len(words), size)]
    deltas = [_Delta(role="assistant", content="")] + [_Delta(content=p) for p in pieces]
    events = [
        _Chunk("chatcmpl-mock", created, model, [_StreamChoice(0, delta)]) for delta in deltas
    ]
    events.append(_Chunk("chatcmpl-mock", created, model, [_StreamChoice(0, _Delta(), "stop")]))
    lines = [b"data: " + msgspec.json.encode(event) + b"\n\n" for event in events]
    return b"".join(lines) + b"data: [DONE]\n\n"


def build_app(chunks: int) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        probe = _probe_decoder.decode(await request.read())
        if not probe.stream:
            return web.Response(body=completion_body(probe.model), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(stream_body(probe.model, chunks))
        await response.write_eof()
        return response

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    async def trivial(_: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/trivial", trivial)
    app.router.add_post("/trivial", trivial)
    return app


async def serve(app: web.Application, port: int) -> None:
    """Serve on 127.0.0.1:port until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(serve(build_app(args.chunks), args.port))


if __name__ == "__main__":
    main()
