"""Single forecasts that arrive together share one model call (flts.api.microbatch), and
each still gets exactly the answer, or the error, it would get alone."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from .support import Harness, history_records


async def _post(app: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    """One ``POST /v1/forecast`` straight into the ASGI app, in the caller's event loop."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/forecast",
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def _together(app: Any, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """Every body started in the same event-loop iteration (as uvicorn starts requests that
    arrived together)."""

    async def main() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(_post(app, body) for body in bodies)))

    return asyncio.run(main())


def _alone(app: Any, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    async def main() -> list[tuple[int, dict[str, Any]]]:
        return [await _post(app, body) for body in bodies]

    return asyncio.run(main())


@pytest.fixture
def counted(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The served ridge model, its ``predict`` calls counted (windows per call)."""
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    loaded = harness.app.holder.get("global")
    assert loaded is not None
    predict = loaded.model.predict
    calls: list[int] = []

    def counting(windows: Any) -> Any:
        calls.append(len(windows))
        return predict(windows)

    monkeypatch.setattr(loaded.model, "predict", counting)
    return calls


def _bodies(count: int, **extra: Any) -> list[bytes]:
    return [
        orjson.dumps({"history": history_records(12, offset=7 * i), **extra}) for i in range(count)
    ]


def test_forecasts_that_arrive_together_share_one_model_call(
    harness: Harness, counted: list[int]
) -> None:
    bodies = _bodies(8, intervals=[80])
    together = _together(harness.app, bodies)
    assert counted == [8]
    alone = _alone(harness.app, bodies)
    assert counted == [8] + [1] * 8
    assert together == alone
    assert all(status == 200 for status, _ in together)
    assert len({orjson.dumps(answer) for _, answer in together}) == 8  # each its own window


def test_a_bad_request_among_others_gets_its_own_error(
    harness: Harness, counted: list[int]
) -> None:
    bodies = _bodies(5)
    bad_history = history_records(12, offset=100)
    bad_history[4]["down"] = "lots"
    bodies.insert(2, orjson.dumps({"history": bad_history}))
    short = orjson.dumps({"history": history_records(3)})  # fewer rows than lags
    bodies.append(short)
    together = _together(harness.app, bodies)
    alone = _alone(harness.app, bodies)
    assert together == alone
    statuses = [status for status, _ in together]
    assert statuses == [200, 200, 422, 200, 200, 200, 422]
    assert "down" in orjson.dumps(together[2][1]).decode()
    assert "lags" in orjson.dumps(together[6][1]).decode()
