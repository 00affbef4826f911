"""The champion models a replica serves, swapped atomically (docs/architecture.md, rule 7).

A :class:`ModelHolder` maps each identifier to an immutable :class:`LoadedModel`. A swap
builds the new model completely, warms it up (:mod:`flts.api.warmup`), and only then replaces
the reference (copy-on-write of a small dict, so a reader never sees a half-updated table). A
request takes its reference once at its start and keeps it: an in-flight request finishes on
the model it started with even if a swap happens meanwhile.

Where models come from is a :class:`~flts.api.sources.ModelSource` (which run is champion,
and how a run becomes a :class:`~flts.models.Forecaster`); this module only swaps.

A champion that cannot be loaded (a damaged artifact, a model that fails its warm-up) never
leaves a replica without a model if an earlier one can serve (docs/architecture.md, rule 12):
a replica already serving keeps its model, a fresh one loads the newest loadable promotion
of the history (:meth:`ModelSource.fallbacks`); either way the model is *degraded*: it carries
a :class:`Degradation` (which champion failed, why, since when) that ``/readyz`` and the
``flts_model_degraded`` gauge report. Every later refresh tries the champion again (the
watcher retries failed refreshes at each poll), so a repaired artifact is picked up.

**A bounded set of champions** (``serving.max_resident_bytes``): a replica of a fleet keeps
at most that many bytes of champions in memory, measured as the bytes of each model's saved
directory on disk (:attr:`~flts.models.Forecaster.saved_bytes`: known before any runtime
allocates, the same on every runtime, and within a small factor of what numpy arrays or an
ONNX session hold for the small per-station models a fleet runs). Past the bound the least
recently *used* champion (a request touches its identifier) is evicted; the model just
installed is never the one evicted, so a single champion larger than the bound still serves.
Eviction only drops the table's reference: a request that took the model before keeps it and
finishes on it, and its memory is freed when the last such request ends. An evicted
identifier, or one the watcher skipped because the cache was full, is loaded again at its
next request by :meth:`ModelHolder.cold_load`, one load per identifier however many requests
wait for it (single flight). Unbounded (0 or ``None``), every champion is loaded as before.

**Shards** (``serving.shard``, :mod:`flts.shards`): a replica loads and refreshes only the
identifiers it owns; :meth:`ModelHolder.refresh` of any other is refused without reading the
store.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from flts.api.sources import ModelSource
from flts.api.warmup import warm_up
from flts.data.spec import FeatureSpec
from flts.exceptions import ModelUnavailableError
from flts.models.base import Forecaster
from flts.promotion import Promotion
from flts.shards import Shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Degradation:
    """Why a replica serves something other than the current champion."""

    champion: Promotion
    """The champion that could not be loaded."""
    reason: str
    since: datetime = field(default_factory=lambda: datetime.now(UTC))

    def describe(self, serving: Promotion) -> dict[str, Any]:
        return {
            "champion_run_id": self.champion.run_id,
            "serving_run_id": serving.run_id,
            "reason": self.reason,
            "since": self.since.isoformat(),
        }


@dataclass(frozen=True)
class LoadedModel:
    """A warmed-up model and the promotion it serves; never mutated after a swap.
    ``degraded`` is set when it stands in for a champion that could not be loaded."""

    model: Forecaster
    promotion: Promotion
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0
    degraded: Degradation | None = None

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def identifier(self) -> str:
        return self.promotion.identifier

    @property
    def size_bytes(self) -> int:
        """What the bounded cache counts for this model (its saved directory's bytes)."""
        return self.model.saved_bytes

    @cached_property
    def info(self) -> dict[str, Any]:
        """The ``model`` block of every answer, built once per swap (never mutate it)."""
        promotion = self.promotion
        return {
            "run_id": promotion.run_id,
            "model_type": promotion.model_type,
            "config_hash": promotion.config_hash,
            "identifier": promotion.identifier,
            "promoted_at": promotion.promoted_at.isoformat(),
        }

    @cached_property
    def headers(self) -> dict[str, str]:
        """Response headers naming the model, built once per swap."""
        return {
            "X-Model-Run-Id": self.promotion.run_id,
            "X-Config-Hash": self.promotion.config_hash,
        }

    @cached_property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """:attr:`headers` as ASGI header pairs, sent as they are by the forecast routes."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]

    @cached_property
    def inline(self) -> bool:
        """Whether forecasts may run on the event loop: only runtimes whose ``predict`` is a
        few bounded numpy/ONNX operations (tens of microseconds), checked by exact class so a
        subclass with its own ``_predict`` is never trusted blindly. Everything else (Prophet,
        ensembles, test doubles) runs in a worker thread under the 504 time limit."""
        from flts.models.serving import inline_types

        return type(self.model) in inline_types()


class RefreshOutcome(StrEnum):
    """What :meth:`ModelHolder.refresh` did."""

    SWAPPED = "swapped"  # a new model now serves the identifier
    UPDATED = "updated"  # same run, promotion metadata refreshed (no reload)
    UNCHANGED = "unchanged"  # already serving the current champion
    NO_CHAMPION = "no-champion"  # nothing promoted (or nothing valid) for the identifier
    FAILED = "failed"  # the champion did not load; a previous or fallback model may serve
    NOT_RESIDENT = "not-resident"  # cache full: loaded at its first request instead
    NOT_OWNED = "not-owned"  # another shard serves the identifier


LoadListener = Callable[[str, Promotion, "LoadedModel | None", BaseException | None], None]
"""Called after every load attempt: ``(identifier, promotion, loaded, error)``."""

ColdLoadListener = Callable[[str, float], None]
"""Called after every cold load that installed a model: ``(identifier, seconds)``, the time
from the first request's arrival to the model being served."""

#: Cold loads run at once (each in its own thread): two keep both cores busy on a fleet's
#: first requests without letting a burst of cold identifiers start hundreds of imports.
_COLD_LOAD_THREADS = 2


class ModelHolder:
    """Per-identifier champions with atomic, warmed swaps.

    Reads (:meth:`get`, :meth:`snapshot`) take no lock: they read one reference to an
    immutable dict. Refreshes of one identifier are serialised by its own lock, so the
    poller, the bus follower and a cold load never load it twice at once, and pointer reads
    of different identifiers run side by side; publishing a new table (and evicting) takes
    one short lock. Building models stays one at a time (``_build_lock``): two threads
    loading saved models at once hit "AST constructor recursion depth mismatch" in CPython's
    ``ast`` (which numpy's array-header parsing uses) on this interpreter.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        on_load: LoadListener | None = None,
        max_resident_bytes: int | None = None,
        shard: Shard | None = None,
        on_cold_load: ColdLoadListener | None = None,
    ) -> None:
        self.source = source
        self._on_load = on_load
        self._on_cold_load = on_cold_load
        #: ``None``: unbounded (every champion stays loaded).
        self.max_resident_bytes = max_resident_bytes or None
        self.shard = shard or Shard()
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._build_lock = threading.Lock()
        #: identifier -> tick of its last request (LRU order); written without a lock by
        #: readers (one dict store; ``next`` on a count is atomic), copied by eviction.
        self._used: dict[str, int] = {}
        self._tick = itertools.count(1)
        #: Identifiers evicted or skipped for room: their next request loads them.
        self._dropped: set[str] = set()
        self._flights: dict[str, Future[LoadedModel | None]] = {}
        self._flight_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        #: Champions evicted and cold loads completed, for metrics and tests.
        self.evictions = 0
        self.cold_loads = 0

    @property
    def bounded(self) -> bool:
        return self.max_resident_bytes is not None

    def get(self, identifier: str) -> LoadedModel | None:
        """The model serving ``identifier`` (``None`` if not in memory); counts as a use
        for the LRU order."""
        loaded = self._models.get(identifier)
        if loaded is not None and self.max_resident_bytes is not None:
            self._used[identifier] = next(self._tick)
        return loaded

    def snapshot(self) -> dict[str, LoadedModel]:
        """Every served model, as one consistent view."""
        return self._models

    @property
    def ready(self) -> bool:
        """At least one model is loaded (every stored model passed its warm-up)."""
        return bool(self._models)

    @property
    def resident_bytes(self) -> int:
        return sum(loaded.size_bytes for loaded in self._models.values())

    def owns(self, identifier: str) -> bool:
        return self.shard.owns(identifier)

    # ------------------------------------------------------------------ cold loads

    def cold_load(self, identifier: str) -> Future[LoadedModel | None]:
        """Load ``identifier``'s champion in a background thread unless that is under way
        already; every caller gets the same future (single flight). Its result is the model
        now serving, or ``None`` when there is none (nothing promoted, nothing loads)."""
        with self._flight_lock:
            flight = self._flights.get(identifier)
            if flight is None:
                flight = Future()
                flight.set_running_or_notify_cancel()  # a waiter giving up cancels nothing
                self._flights[identifier] = flight
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        _COLD_LOAD_THREADS, thread_name_prefix="flts-cold-load"
                    )
                self._pool.submit(self._fly, identifier, flight, time.perf_counter())
        return flight

    def dropped(self) -> frozenset[str]:
        """Identifiers with a champion this replica owns but does not hold in memory (the
        bound dropped it, or left it for its first request)."""
        return frozenset(self._dropped)

    def loading(self, identifier: str) -> bool:
        """Whether ``identifier`` is being loaded; starts that for an identifier the bound
        dropped (for callers that cannot wait, such as the serving protocols)."""
        if identifier in self._flights:
            return True
        if identifier in self._dropped:
            self.cold_load(identifier)
            return True
        return False

    def _fly(self, identifier: str, flight: Future[LoadedModel | None], started: float) -> None:
        result: LoadedModel | None = None
        error: BaseException | None = None
        try:
            outcome = self.refresh(identifier, cold=True)
            result = self._models.get(identifier)
            if result is None:
                self._dropped.discard(identifier)  # nothing to serve: stop trying
            elif outcome in (RefreshOutcome.SWAPPED, RefreshOutcome.FAILED):  # installed
                self.cold_loads += 1
                seconds = time.perf_counter() - started
                if self._on_cold_load is not None:
                    try:
                        self._on_cold_load(identifier, seconds)
                    except Exception:  # a metrics problem must never fail a load
                        log.exception("cold load listener failed")
        except BaseException as exc:  # refresh never raises for load problems; be sure
            error = exc
        # Done before the waiters wake: one of them may ask "still loading?" at once.
        with self._flight_lock:
            if self._flights.get(identifier) is flight:
                del self._flights[identifier]
        if flight.done():  # close() gave up on it
            return
        if error is None:
            flight.set_result(result)
        else:
            flight.set_exception(error)

    def close(self) -> None:
        """Stop the cold-load threads (a load in progress finishes in the background)."""
        with self._flight_lock:
            pool, self._pool = self._pool, None
            flights, self._flights = self._flights, {}
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for flight in flights.values():  # a cancelled queued load never answers them
            if not flight.done():
                flight.set_exception(ModelUnavailableError("the replica is shutting down"))

    def refresh(self, identifier: str, *, cold: bool = False) -> RefreshOutcome:
        """Make ``identifier`` serve its current champion; never raises for load problems.

        The promotion pointer is the source of truth (a bus event only says "look again"),
        so a replayed or out-of-order event can never install an outdated model. With the
        cache bounded and full, an identifier not in memory is left for its first request
        (``cold`` is that request's load) rather than evicting a champion in use.
        """
        if not self.shard.owns(identifier):
            return RefreshOutcome.NOT_OWNED
        with self._lock_for(identifier):
            if (
                not cold
                and self.max_resident_bytes is not None
                and identifier not in self._models
                and self.resident_bytes >= self.max_resident_bytes
            ):
                self._dropped.add(identifier)
                return RefreshOutcome.NOT_RESIDENT
            try:
                promotion = self.source.current(identifier)
            except Exception:
                log.exception("cannot read the promotion pointer of %r", identifier)
                return RefreshOutcome.FAILED
            if promotion is None:
                # Keep serving whatever is loaded: a pointer that vanished is an operator
                # action or a storage hiccup, and answering 503 would not help anyone.
                return RefreshOutcome.NO_CHAMPION
            held = self._models.get(identifier)
            if (
                held is not None
                and held.degraded is None
                and held.promotion.run_id == promotion.run_id
            ):
                if held.promotion == promotion:
                    return RefreshOutcome.UNCHANGED
                self._install(identifier, LoadedModel(held.model, promotion, held.loaded_at))
                return RefreshOutcome.UPDATED
            error = self._load(identifier, promotion)
            if error is None:
                return RefreshOutcome.SWAPPED
            self._degrade(identifier, promotion, f"{type(error).__name__}: {error}")
            return RefreshOutcome.FAILED

    def _load(
        self, identifier: str, promotion: Promotion, degraded: Degradation | None = None
    ) -> BaseException | None:
        """Load, warm and install ``promotion``; the error if that failed (nothing changed)."""
        started = time.perf_counter()
        try:
            with self._build_lock:
                model = self.source.load(promotion)
                warm_up(model)
        except Exception as exc:
            log.warning("loading run %s for %r failed: %s", promotion.run_id, identifier, exc)
            self._notify(identifier, promotion, None, exc)
            return exc
        loaded = LoadedModel(
            model, promotion, load_seconds=time.perf_counter() - started, degraded=degraded
        )
        self._install(identifier, loaded)
        log.info(
            "serving %s run %s for %r (loaded in %.2f s)%s",
            promotion.model_type,
            promotion.run_id,
            identifier,
            loaded.load_seconds,
            "" if degraded is None else f", degraded: {degraded.reason}",
        )
        self._notify(identifier, promotion, loaded, None)
        return None

    def _degrade(self, identifier: str, champion: Promotion, reason: str) -> None:
        """The champion did not load: keep what serves (now degraded), else load the newest
        fallback that loads; with neither, the identifier stays unserved."""
        held = self._models.get(identifier)
        if held is not None and held.promotion.run_id != champion.run_id:
            keep = held.degraded if held.degraded and held.degraded.champion == champion else None
            degradation = Degradation(champion, reason, keep.since if keep else datetime.now(UTC))
            self._install(identifier, replace(held, degraded=degradation))
            log.warning(
                "%r keeps serving run %s: champion %s cannot be loaded (%s)",
                identifier,
                held.promotion.run_id,
                champion.run_id,
                reason,
            )
            return
        try:
            fallbacks = self.source.fallbacks(identifier)
        except Exception:
            log.exception("cannot read the promotion history of %r", identifier)
            return
        degradation = Degradation(champion, reason)
        for fallback in fallbacks:
            if fallback.run_id == champion.run_id:
                continue
            if self._load(identifier, fallback, degradation) is None:
                log.warning(
                    "%r serves fallback run %s: champion %s cannot be loaded (%s)",
                    identifier,
                    fallback.run_id,
                    champion.run_id,
                    reason,
                )
                return
        log.error("%r: neither champion %s nor any fallback loads", identifier, champion.run_id)

    def _lock_for(self, identifier: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(identifier)
            if lock is None:
                lock = self._locks[identifier] = threading.Lock()
            return lock

    def _install(self, identifier: str, loaded: LoadedModel) -> None:
        with self._table_lock:
            # Copy-on-write: one reference assignment publishes the new table.
            self._models = {**self._models, identifier: loaded}
            if self.max_resident_bytes is not None:
                self._used[identifier] = next(self._tick)
                self._dropped.discard(identifier)
                self._evict(self.max_resident_bytes, keep=identifier)

    def _evict(self, budget: int, keep: str) -> None:
        """Drop least recently used champions (never ``keep``) until the rest fit
        ``budget``; called with the table lock held."""
        models = self._models
        total = sum(loaded.size_bytes for loaded in models.values())
        if total <= budget:
            return
        used = dict(self._used)  # one C-level copy: safe against concurrent touches
        dropped: list[str] = []
        for candidate in sorted(models, key=lambda name: used.get(name, 0)):
            if total <= budget:
                break
            if candidate == keep:
                continue
            total -= models[candidate].size_bytes
            dropped.append(candidate)
        if not dropped:
            return
        self._models = {k: v for k, v in models.items() if k not in dropped}
        for name in dropped:
            self._used.pop(name, None)
            self._dropped.add(name)
        self.evictions += len(dropped)
        log.info("evicted %d champion(s) to stay within %d bytes", len(dropped), budget)

    def _notify(
        self,
        identifier: str,
        promotion: Promotion,
        loaded: LoadedModel | None,
        error: BaseException | None,
    ) -> None:
        if self._on_load is not None:
            try:
                self._on_load(identifier, promotion, loaded, error)
            except Exception:  # a metrics problem must never block a swap
                log.exception("model load listener failed")
