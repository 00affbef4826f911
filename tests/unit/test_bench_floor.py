"""The benchmark floor app reads the whole body before answering, like a real handler, and
answers every request the same way."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.floor import app


def _call(chunks: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/forecast"}
    asyncio.run(app(scope, receive, send))
    return sent, len(incoming)


def test_floor_reads_every_chunk_then_answers_ok() -> None:
    sent, unread = _call([b'{"history":', b"[]", b"}"])
    assert unread == 0
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"{}"
    assert (b"content-length", b"2") in sent[0]["headers"]
