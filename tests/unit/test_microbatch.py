"""The micro-batcher's grouping, with a recording answerer in place of a model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from flts.api.forms import ForecastCall
from flts.api.holder import LoadedModel
from flts.api.microbatch import MicroBatcher


class Recorder:
    """Answers each call with ``(model, horizon)``; a horizon of 0 fails its whole call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def __call__(self, model: LoadedModel, calls: Sequence[ForecastCall]) -> list[Any]:
        horizons = [call.horizon for call in calls]
        self.calls.append((str(model), horizons))
        if 0 in horizons:
            raise ValueError(f"bad call among {horizons}")
        return [(str(model), horizon) for horizon in horizons]


def _call(horizon: int) -> ForecastCall:
    return ForecastCall(history=[], horizon=horizon)


def _model(name: str) -> LoadedModel:
    return cast(LoadedModel, name)  # the batcher only groups by identity and passes it on


async def _gather(batcher: MicroBatcher[Any], items: list[tuple[LoadedModel, int]]) -> list[Any]:
    tasks = [batcher.forecast(model, _call(horizon)) for model, horizon in items]
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def test_one_call_per_model_for_what_arrives_together() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=10)
    a, b = _model("a"), _model("b")
    answers = asyncio.run(_gather(batcher, [(a, 1), (b, 2), (a, 3), (a, 4)]))
    assert answers == [("a", 1), ("b", 2), ("a", 3), ("a", 4)]
    assert recorder.calls == [("a", [1, 3, 4]), ("b", [2])]


def test_batches_are_capped() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=2)
    a = _model("a")
    asyncio.run(_gather(batcher, [(a, h) for h in range(1, 6)]))
    assert recorder.calls == [("a", [1, 2]), ("a", [3, 4]), ("a", [5])]


def test_a_failed_batch_is_answered_one_by_one() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=10)
    a = _model("a")
    answers = asyncio.run(_gather(batcher, [(a, 1), (a, 0), (a, 3)]))
    assert answers[0] == ("a", 1)
    assert answers[2] == ("a", 3)
    assert isinstance(answers[1], ValueError)
    assert "[0]" in str(answers[1])
    assert recorder.calls == [("a", [1, 0, 3]), ("a", [1]), ("a", [0]), ("a", [3])]


def test_requests_of_later_iterations_form_their_own_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=10)
    a = _model("a")

    async def main() -> None:
        first = asyncio.ensure_future(batcher.forecast(a, _call(1)))
        assert await batcher.forecast(a, _call(2)) == ("a", 2)
        assert await first == ("a", 1)
        assert await batcher.forecast(a, _call(3)) == ("a", 3)

    asyncio.run(main())
    # 1 and 2 joined in the first iteration (in call order: forecast enqueues when called)
    assert recorder.calls == [("a", [1, 2]), ("a", [3])]


def test_a_cancelled_request_does_not_break_the_others() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=10)
    a = _model("a")

    async def main() -> Any:
        gone = asyncio.ensure_future(batcher.forecast(a, _call(1)))
        kept = asyncio.ensure_future(batcher.forecast(a, _call(2)))
        await asyncio.sleep(0)  # both are waiting for the flush
        gone.cancel()
        return await kept

    assert asyncio.run(main()) == ("a", 2)
    assert recorder.calls == [("a", [1, 2])]  # computed together; the answer was dropped
