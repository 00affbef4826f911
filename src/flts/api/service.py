"""The forecast path without HTTP: request bytes in, answer bytes out, errors of the tree.

:class:`ForecastService` decodes a body with its form (:mod:`flts.api.forms`), picks the
champion the request names, predicts and builds the answer (:mod:`flts.api.answers`). Every
refusal is an :class:`~flts.exceptions.FLTSError` (422 with every problem, described by
:mod:`flts.api.diagnosis`; 413, 429, 503, 504, 500 for a broken model), which the HTTP
boundary translates once (:func:`flts.api.errors.error_response`).

Bounded numpy/ONNX runtimes answer on the event loop (a thread hop costs more than their
forecast), and single forecasts that arrive together share one model call when the model's
forecasts are batch-invariant (:mod:`flts.api.microbatch`). Batches of at least
:data:`THREAD_MIN_WINDOWS` windows and other runtimes (Prophet, ensembles) run in a worker
thread under ``serving.max_in_flight`` (429) and ``serving.request_timeout`` (504): a slow
model never stalls the event loop that answers ``/healthz``, and ONNX Runtime and numpy
release the GIL, so big batches use both cores while the loop decodes the next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import orjson

from flts.api import forms
from flts.api.answers import row_answers, tensor_answer, tensor_answers
from flts.api.diagnosis import SpecOf, diagnose_batch, diagnose_forecast
from flts.api.forms import BatchCall, ForecastCall, RejectedError
from flts.api.holder import LoadedModel, ModelHolder
from flts.api.microbatch import MicroBatcher
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows
from flts.events import is_identifier
from flts.exceptions import (
    DataValidationError,
    DeadlineExceededError,
    FLTSError,
    MisdirectedError,
    ModelError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
)
from flts.live.ledger import ForecastLedger
from flts.live.observations import ObservationLog
from flts.models.intervals import check_levels
from flts.settings import ServingSettings

T = TypeVar("T")
#: A validated tensor call waiting for its model call: windows, horizon, interval levels.
TensorItem = tuple[Windows, int, tuple[float, ...]]
Diagnose = Callable[[bytes, int, SpecOf], None]

#: Smallest batch sent to a worker thread even for a bounded runtime: 64 LSTM windows take
#: about a millisecond, twenty times the cost of the thread hop.
THREAD_MIN_WINDOWS = 64
#: Generous JSON budget per history row (a row of 12 numbers is ~300 bytes), used to refuse
#: oversized bodies before reading them; the row count itself is then checked exactly.
_BYTES_PER_ROW = 1024
_BYTES_OVERHEAD = 64 * 1024


@dataclass
class Served:
    """What answered a call, for the caller's headers and metrics: the one model whose
    lineage the answer carries (none for a row-form batch, whose items may differ) and the
    model type(s) that answered, set as soon as they are known (errors count them too)."""

    model: LoadedModel | None = None
    model_type: str = ""


class ForecastService:
    """Model resolution, limits and the three request forms of the two forecast routes."""

    def __init__(
        self,
        holder: ModelHolder,
        settings: ServingSettings,
        observations: ObservationLog | None = None,
        ledger: ForecastLedger | None = None,
    ) -> None:
        self.holder = holder
        self.settings = settings
        self.observations = observations
        self.ledger = ledger
        self.max_body_bytes = settings.max_history_rows * _BYTES_PER_ROW + _BYTES_OVERHEAD
        self.max_batch_bytes = self.max_body_bytes * 4
        self._in_flight = 0  # only touched on the event loop: no lock needed
        self._batcher = MicroBatcher(self._answer_calls, max_batch=THREAD_MIN_WINDOWS - 1)
        # One-window tensor calls (what a v2 client sends per forecast) share calls the same way.
        self._window_batcher: MicroBatcher[TensorItem] = MicroBatcher(
            self._answer_windows, max_batch=THREAD_MIN_WINDOWS - 1
        )
        # Bodies decoded in one pass (forms.decode_numeric) share calls the same way.
        self._numeric_batcher: MicroBatcher[Any] = MicroBatcher(
            self._answer_numeric, max_batch=THREAD_MIN_WINDOWS - 1
        )
        #: (the holder's table it was computed for, its shared row form): see _shared_form
        self._shared: tuple[object, forms.RowForm | None] = (None, None)

    # ------------------------------------------------------------------ models

    def resolve(self, identifier: str | None) -> LoadedModel:
        """The model for ``identifier``; when omitted, ``global`` or the only one loaded.

        An identifier without a champion is a 503 (its promotion may arrive any moment), not a
        silent fallback to another station's model; one another shard serves is a 421
        (:mod:`flts.shards`). A champion the bounded cache dropped starts loading here (for
        callers that cannot wait: the serving protocols); the forecast routes wait for it
        first (:meth:`ensure`).
        """
        if identifier is not None:
            loaded = self.holder.get(identifier)
            if loaded is None:
                self._check_owned(identifier)
                if self.holder.loading(identifier):
                    raise ModelUnavailableError(
                        f"the champion of {identifier!r} is being loaded (not in this "
                        "replica's memory); retry shortly",
                        retry_after=1.0,
                    )
                raise ModelUnavailableError(
                    f"no model is loaded for identifier {identifier!r} yet: nothing promoted "
                    "for it, or its champion is still loading",
                    retry_after=self.settings.pointer_poll_seconds,
                )
            return loaded
        models = self.holder.snapshot()
        if "global" in models:
            return models["global"]
        # What the replica serves, in memory or not: with a bounded cache, the one model in
        # memory may stand beside evicted ones, and must not answer for them.
        known = set(models) | self.holder.dropped()
        if "global" in known or (len(known) == 1 and not models):
            name = "global" if "global" in known else next(iter(known))
            self.holder.loading(name)  # starts the load
            raise ModelUnavailableError(
                f"the champion of {name!r} is being loaded (not in this replica's memory); "
                "retry shortly",
                retry_after=1.0,
            )
        if len(known) == 1:
            return next(iter(models.values()))
        if not models:
            raise ModelUnavailableError(
                "no model is loaded yet: nothing promoted, or the champion is still loading",
                retry_after=self.settings.pointer_poll_seconds,
            )
        raise DataValidationError(
            f"identifier is required: this replica serves {sorted(known)} and none is 'global'"
        )

    async def serving(self, identifier: str | None) -> LoadedModel:
        """:meth:`resolve` as the serving protocols need it: a model name nothing was ever
        promoted for is a 404 (an unknown model, as their clients expect), one whose champion
        is still loading stays a 503 with ``Retry-After``. The native routes keep the 503 for
        both (a station's first promotion may arrive any moment; docs/architecture.md, rule
        8). The promotion store is asked only when no model is loaded, in a worker thread."""
        try:
            return self.resolve(identifier)
        except ModelUnavailableError:
            if identifier is None or self.holder.loading(identifier):
                raise
            # one pointer read, never a listing of the promotion tree (rule 7); a name outside
            # the identifier rule was never promoted (and is no object key)
            promoted = None
            if is_identifier(identifier):
                promoted = await anyio.to_thread.run_sync(self.holder.source.current, identifier)
            if promoted is None:
                raise NotFoundError(
                    f"no model for identifier {identifier!r}: nothing has been promoted for it"
                ) from None
            raise

    def _check_owned(self, identifier: str) -> None:
        if not self.holder.owns(identifier):
            raise MisdirectedError(
                f"identifier {identifier!r} is served by another replica: this one is "
                f"{self.holder.shard.describe()} (serving.shard)"
            )

    async def ensure(self, identifiers: Iterable[str | None]) -> None:
        """Bring the named champions into memory when the cache is bounded and they are not
        there: one load per identifier however many requests wait (single flight), waited
        for up to ``serving.cold_load_wait_seconds``. Never raises for a model that is not
        there: :meth:`resolve` then says why (503 with Retry-After, 421, or 422 first)."""
        holder = self.holder
        if not holder.bounded:
            return
        models = holder.snapshot()
        absent = [i for i in identifiers if i is not None and i not in models]
        if not absent:  # the common case: every one is in memory (no copy of the dropped set)
            return
        # Only champions the replica knows it dropped: an identifier never promoted, or one
        # whose champion failed to load, must not start a download on every request.
        dropped = holder.dropped()
        missing = [i for i in absent if i in dropped]
        if not missing:
            return
        flights = [
            asyncio.wrap_future(holder.cold_load(identifier))
            for identifier in dict.fromkeys(missing)
            if holder.owns(identifier)
        ]
        if not flights:
            return
        with anyio.move_on_after(self.settings.cold_load_wait_seconds):
            # shield: a waiter giving up leaves the load running for the next request
            await asyncio.shield(asyncio.gather(*flights, return_exceptions=True))

    def _in_memory(self, identifier: str | None) -> bool:
        """Whether a forecast naming ``identifier`` has nothing to wait for (:meth:`ensure`
        would return at once): checked first, so the common case makes no coroutine."""
        return identifier is None or identifier in self.holder.snapshot()

    def _spec(self, identifier: str | None) -> FeatureSpec:
        return self.resolve(identifier).spec

    def _shared_form(self) -> tuple[FeatureSpec, forms.RowForm] | None:
        """The feature spec every loaded model shares and its row form (``None`` when they
        differ or none is loaded): what a body can be decoded for before its identifier is
        read. Recomputed only when the holder publishes a new table (copy-on-write, so a
        new object)."""
        models = self.holder.snapshot()
        table, form = self._shared
        if table is not models:
            specs = {loaded.spec for loaded in models.values()}
            form = forms.row_form(next(iter(specs))) if len(specs) == 1 else None
            self._shared = (models, form)
        return None if form is None else (form.spec, form)

    # ------------------------------------------------------------------ the routes

    async def forecast(self, body: bytes, served: Served) -> bytes:
        """``POST /v1/forecast``: one request, one answer.

        Bodies of JSON numbers for the spec every loaded model shares (nearly all of them)
        are decoded in one pass (:func:`forms.decode_numeric`) and, when the model that
        answers has that spec and is micro-batched, answered with the same steps in the same
        order as the two-step path. Anything else, and any body that pass cannot answer,
        takes the two steps of :mod:`flts.api.forms`, which decide alone what is refused and
        how. Both are inline here: every nested coroutine is one more frame to create and to
        resume for each of the few microseconds-long forecasts a busy replica answers."""
        shared = self._shared_form()
        if shared is not None and (numeric := forms.decode_numeric(body, shared[1])) is not None:
            forms.check_history(len(numeric.history), self.settings.max_history_rows)
            if not self._in_memory(numeric.identifier):
                await self.ensure([numeric.identifier])
            loaded = self._champion(numeric.identifier, diagnose_forecast, body, served)
            if (loaded.inline and loaded.model.batch_invariant) and (
                loaded.spec is shared[0] or loaded.spec == shared[0]
            ):
                served.model = loaded
                try:
                    answer = await self._numeric_batcher.forecast(loaded, numeric)
                except RejectedError as exc:
                    raise self._refusal(exc, diagnose_forecast, body) from exc
                return self._recorded(orjson.dumps(answer))
        try:
            call = forms.decode(ForecastCall, body)
        except RejectedError as exc:
            raise self._refusal(exc, diagnose_forecast, body) from exc
        if call.history is None:
            call = await self._from_observations(call)
        forms.check_history(len(call.rows), self.settings.max_history_rows)
        if not self._in_memory(call.identifier):
            await self.ensure([call.identifier])
        loaded = self._champion(call.identifier, diagnose_forecast, body, served)
        served.model = loaded
        try:
            if loaded.inline and loaded.model.batch_invariant:
                answer = await self._batcher.forecast(loaded, call)
            else:
                windows = forms.row_windows([call], loaded.spec)
                levels = check_levels(call.intervals) if call.intervals else ()
                [answer] = await self._predict(
                    loaded, 1, lambda: row_answers(loaded, windows, [call.horizon], [levels])
                )
        except RejectedError as exc:
            raise self._refusal(exc, diagnose_forecast, body) from exc
        return self._recorded(orjson.dumps(answer))

    async def _from_observations(self, call: ForecastCall) -> ForecastCall:
        """``call`` with the newest stored observations of its identifier as its history."""
        if call.identifier is None:
            raise DataValidationError(
                "history: required, unless identifier names a station whose observations are "
                "stored (POST /v1/observations on the gateway)"
            )
        if self.observations is None:
            raise DataValidationError("history: required (this replica reads no observations)")
        await self.ensure([call.identifier])
        spec = self.resolve(call.identifier).spec  # 503 while no model is loaded for it
        log, identifier = self.observations, call.identifier
        tail = await self.run(lambda: log.tail(identifier, spec.lags))
        return msgspec.structs.replace(call, history=forms.stored_history(tail, spec, identifier))

    def _answer_calls(
        self, loaded: LoadedModel, calls: Sequence[ForecastCall]
    ) -> list[dict[str, Any]]:
        """Single forecasts by one bounded model, answered together (the micro-batcher's
        answerer): the same steps as one request, with one model call."""
        windows = forms.row_windows(calls, loaded.spec)
        levels = [check_levels(call.intervals) if call.intervals else () for call in calls]
        try:
            return row_answers(loaded, windows, [call.horizon for call in calls], levels)
        except ModelError as exc:
            raise ModelError(f"the model failed: {exc}") from exc

    def _answer_numeric(self, loaded: LoadedModel, calls: Sequence[Any]) -> list[dict[str, Any]]:
        """:meth:`_answer_calls` of calls decoded in one pass (the numeric micro-batcher's
        answerer)."""
        windows = forms.numeric_windows(calls, loaded.spec)
        levels = [check_levels(call.intervals) if call.intervals else () for call in calls]
        try:
            return row_answers(loaded, windows, [call.horizon for call in calls], levels)
        except ModelError as exc:
            raise ModelError(f"the model failed: {exc}") from exc

    def _answer_windows(
        self, loaded: LoadedModel, items: Sequence[TensorItem]
    ) -> list[dict[str, Any]]:
        """One-window tensor calls by one bounded model, answered together (the window
        micro-batcher's answerer)."""
        try:
            return tensor_answers(loaded, items)
        except ModelError as exc:
            raise ModelError(f"the model failed: {exc}") from exc

    async def forecast_batch(self, body: bytes, served: Served) -> bytes:
        """``POST /v1/forecast/batch``: the row form or the tensor form, all or nothing."""
        try:
            call = forms.decode(BatchCall, body)
            if call.is_tensor:
                return await self._tensor(forms.tensor_call(call), body, served)
            if (
                call.requests is msgspec.UNSET
                or call.identifier is not msgspec.UNSET
                or call.horizon is not msgspec.UNSET
                or call.intervals is not msgspec.UNSET
            ):
                raise RejectedError("a row-form batch has `requests` and nothing else")
        except RejectedError as exc:
            raise await self._batch_refusal(exc, body) from exc
        return await self._rows(call.requests, body, served)

    async def _rows(self, calls: list[ForecastCall], body: bytes, served: Served) -> bytes:
        limit = self.settings.max_history_rows
        forms.check_requests(len(calls))
        for index, call in enumerate(calls):
            if call.history is None:
                raise DataValidationError(
                    f"requests[{index}].history: required in a batch (stored observations "
                    "serve single forecasts only)"
                )
            forms.check_history(len(call.history), limit, f"requests[{index}].")
        await self.ensure(c.identifier for c in calls)
        models = [self._champion(c.identifier, diagnose_batch, body, served) for c in calls]
        served.model_type = ",".join(sorted({m.promotion.model_type for m in models}))
        # One validation and one model call per model (usually one for the whole batch).
        groups: dict[int, tuple[LoadedModel, list[int]]] = {}
        for index, model in enumerate(models):
            groups.setdefault(id(model), (model, []))[1].append(index)
        work = []
        for model, indices in groups.values():
            try:
                windows = forms.row_windows([calls[i] for i in indices], model.spec)
            except RejectedError as exc:
                raise await self._batch_refusal(exc, body) from exc
            work.append((model, indices, windows))
        results: list[Any] = [None] * len(calls)
        levels = [
            check_levels(c.intervals, f"requests[{i}].intervals") if c.intervals else ()
            for i, c in enumerate(calls)
        ]
        for model, indices, windows in work:
            horizons = [calls[i].horizon for i in indices]
            own = [levels[i] for i in indices]
            answers = await self._predict(
                model, len(indices), partial(row_answers, model, windows, horizons, own)
            )
            for index, answer in zip(indices, answers, strict=True):
                results[index] = answer
        return self._recorded(orjson.dumps({"results": results}))

    async def _tensor(self, call: forms.TensorCall, body: bytes, served: Served) -> bytes:
        forms.check_tensor(*forms.claimed_size(call), self.settings.max_history_rows)
        if not self._in_memory(call.identifier):
            await self.ensure([call.identifier])
        loaded = self._champion(call.identifier, diagnose_batch, body, served)
        served.model = loaded
        windows = forms.tensor_windows(call, loaded.spec)
        if len(windows) == 1 and loaded.inline and loaded.model.batch_invariant:
            item = (windows, call.horizon, call.intervals)
            return self._recorded(orjson.dumps(await self._window_batcher.forecast(loaded, item)))
        answer = await self._predict(
            loaded,
            len(windows),
            lambda: tensor_answer(loaded, windows, call.horizon, call.intervals),
        )
        return self._recorded(orjson.dumps(answer))

    def _recorded(self, payload: bytes) -> bytes:
        """The answer's bytes, also handed to the forecast ledger (the very bytes sent)."""
        if self.ledger is not None:
            self.ledger.record(payload)
        return payload

    # ------------------------------------------------------------------ refusals

    def _champion(
        self, identifier: str | None, diagnose: Diagnose, body: bytes, served: Served
    ) -> LoadedModel:
        """:meth:`resolve`; when it fails, a body with wrong keys or types is a 422 first
        (those are the client's to fix whether or not a model is loaded)."""
        try:
            loaded = self.resolve(identifier)
        except FLTSError as exc:
            try:
                diagnose(body, self.settings.max_history_rows, None)
            except FLTSError as described:
                raise described from exc
            raise
        if not served.model_type:
            served.model_type = loaded.promotion.model_type
        return loaded

    def _refusal(self, rejected: RejectedError, diagnose: Diagnose, body: bytes) -> FLTSError:
        """The precise error of a rejected body, or the forms' own reason."""
        try:
            diagnose(body, self.settings.max_history_rows, self._spec)
        except FLTSError as exc:
            return exc
        return DataValidationError(rejected.reason)

    async def _batch_refusal(self, rejected: RejectedError, body: bytes) -> FLTSError:
        # Describing up to 1,024 requests row by row takes a while: off the event loop.
        return await self.run(lambda: self._refusal(rejected, diagnose_batch, body))

    # ------------------------------------------------------------------ execution

    async def _predict(self, loaded: LoadedModel, windows: int, work: Callable[[], T]) -> T:
        """``work`` (a forecast of ``windows`` windows with ``loaded``): on the event loop for
        bounded runtimes and small batches, in a worker thread under the 429/504 limits
        otherwise (see module doc)."""
        if loaded.inline and windows < THREAD_MIN_WINDOWS:
            try:
                return work()
            except ModelError as exc:
                raise ModelError(f"the model failed: {exc}") from exc
        return await self.run(work)

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a worker thread under the in-flight and time limits."""
        if self._in_flight >= self.settings.max_in_flight:
            raise OverloadedError(
                f"too many forecasts in progress (limit {self.settings.max_in_flight})"
            )
        self._in_flight += 1
        try:
            with anyio.fail_after(self.settings.request_timeout):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise DeadlineExceededError(
                f"forecast took longer than {self.settings.request_timeout:g} s"
            ) from exc
        except ModelError as exc:
            raise ModelError(f"the model failed: {exc}") from exc
        finally:
            self._in_flight -= 1
