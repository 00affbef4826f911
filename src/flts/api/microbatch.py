"""Micro-batching: the single forecasts that arrive together share one model call.

Under load, one event-loop iteration often starts several single forecasts (``POST
/v1/forecast``, or one window of the tensor form, as the v2 protocol's infer sends)
(uvicorn reads every connection that has data, then runs their tasks). Answered one by one,
each pays the fixed cost of a model call (an ONNX Runtime run, a dozen small numpy
operations) for a single window. :class:`MicroBatcher` instead collects the requests of one
iteration and answers them on the next with one call per model, exactly as the row form of
``POST /v1/forecast/batch`` answers its items, so the fixed cost is shared.

Nothing waits for company: the batch is whatever arrived in the same iteration (no timer, no
added latency beyond one loop turn), so a lone request is still answered alone, and a quiet
server behaves exactly as before. A batch that fails (one bad history, a model that produces
NaN for one window) is answered again one request at a time, so each request gets its own
answer or its own error, never a neighbour's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flts.api.holder import LoadedModel

#: One request as the answerer takes it: a row-form call, or a validated tensor window.
C = TypeVar("C")
#: Answers ``calls``, in order, with one call of ``model``.
Answerer = Callable[[LoadedModel, Sequence[C]], list[Any]]


@dataclass
class _Waiting(Generic[C]):
    model: LoadedModel
    call: C
    future: asyncio.Future[Any]


class MicroBatcher(Generic[C]):
    """Collects single forecasts for one loop iteration and answers them per model (see
    module doc). Only used from the event loop, so it needs no lock."""

    def __init__(self, answer: Answerer[C], *, max_batch: int) -> None:
        self._answer = answer
        self._max_batch = max_batch
        self._waiting: list[_Waiting[C]] = []

    def forecast(self, model: LoadedModel, call: C) -> asyncio.Future[Any]:
        """The answer to ``call`` by ``model`` (to await), computed with whatever else arrived
        with it; raises what answering ``call`` alone would raise. A plain function returning
        the future, not a coroutine: one frame fewer for every forecast to resume."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)  # after every task this iteration has started
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(_Waiting(model, call, future))
        return future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        groups: dict[int, list[_Waiting[C]]] = {}
        for item in waiting:
            groups.setdefault(id(item.model), []).append(item)
        for items in groups.values():
            for start in range(0, len(items), self._max_batch):
                self._answer_together(items[start : start + self._max_batch])

    def _answer_together(self, items: list[_Waiting[C]]) -> None:
        if len(items) > 1:
            try:
                answers = self._answer(items[0].model, [item.call for item in items])
            except Exception:  # answered one by one below, each with its own error
                pass
            else:
                for item, answer in zip(items, answers, strict=True):
                    _settle(item.future, answer, None)
                return
        for item in items:
            try:
                [answer] = self._answer(item.model, [item.call])
            except Exception as exc:  # raised in the request's own task
                _settle(item.future, None, exc)
            else:
                _settle(item.future, answer, None)


def _settle(future: asyncio.Future[Any], answer: Any, error: Exception | None) -> None:
    if future.done():  # the request was cancelled (its client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)
