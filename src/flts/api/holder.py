"""The champion models a replica serves, swapped atomically (DESIGN.md rule 7).

A :class:`ModelHolder` maps each identifier to an immutable :class:`LoadedModel`. A swap
builds the new model completely, runs a warm-up prediction on it, and only then replaces the
reference (copy-on-write of a small dict, so a reader never sees a half-updated table). A
request takes its reference once at its start and keeps it: an in-flight request finishes on
the model it started with even if a swap happens meanwhile.

Where models come from is a :class:`ModelSource`: the promotion pointer says *which* run is
champion, the tracking store turns a run id into a :class:`~flts.models.Forecaster`. Tests
inject a source that loads saved model directories directly, without MLflow.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from flts.data.spec import FeatureSpec
from flts.data.windows import Windows
from flts.exceptions import ModelError
from flts.models.base import MANIFEST, Forecaster
from flts.promotion import Promotion, PromotionStore

if TYPE_CHECKING:
    from flts.services.context import ServiceContext

log = logging.getLogger(__name__)

#: Run ids that may name a cache directory (the tracker's own rule).
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class LoadedModel:
    """A warmed-up champion and the promotion it serves; never mutated after a swap."""

    model: Forecaster
    promotion: Promotion
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def identifier(self) -> str:
        return self.promotion.identifier

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
        """:attr:`headers` as ASGI header pairs, for the lean forecast path."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]

    @cached_property
    def inline(self) -> bool:
        """Whether forecasts may run on the event loop: only runtimes whose ``predict`` is a
        few bounded numpy/ONNX operations (tens of microseconds), checked by exact class so a
        subclass with its own ``_predict`` is never trusted blindly. Everything else (Prophet,
        ensembles, test doubles) runs in a worker thread under the 504 time limit."""
        from flts.api.runtime import inline_types

        return type(self.model) in inline_types()


class ModelSource(Protocol):
    """Where champions come from: the pointer (``identifiers``/``etag``/``current``) and the
    run's saved model (``load``)."""

    def identifiers(self) -> list[str]:
        """Identifiers that have a promotion pointer."""
        ...

    def etag(self, identifier: str) -> str | None:
        """Cheap change marker of the pointer, so pollers skip unchanged identifiers."""
        ...

    def current(self, identifier: str) -> Promotion | None:
        """The valid champion for ``identifier`` (with the stale-pointer fallback)."""
        ...

    def load(self, promotion: Promotion) -> Forecaster:
        """Build the promoted run's forecaster (may be slow: downloads, imports)."""
        ...


class PromotionModelSource:
    """A :class:`ModelSource` from a :class:`PromotionStore` and a ``run_id -> Forecaster``
    loader (the tracker's ``load_model`` in production, saved directories in tests)."""

    def __init__(self, promotions: PromotionStore, load_run: Callable[[str], Forecaster]) -> None:
        self.promotions = promotions
        self.load_run = load_run

    def identifiers(self) -> list[str]:
        return self.promotions.identifiers()

    def etag(self, identifier: str) -> str | None:
        return self.promotions.etag(identifier)

    def current(self, identifier: str) -> Promotion | None:
        return self.promotions.current(identifier)

    def load(self, promotion: Promotion) -> Forecaster:
        return self.load_run(promotion.run_id)


class TrackingModelSource:
    """The default source: the context's promotion store and tracker.

    Cold start without MLflow: importing MLflow takes about two seconds, which alone would
    blow the 3 s start-up budget of an ONNX champion. So the *first* read of an identifier's
    pointer trusts it when the run's saved model is already in the local model cache
    (``<home>/cache/models/<run_id>``, where :meth:`flts.tracking.Tracker.model_dir` puts
    every download) and loads the model from there. The stale-pointer check (does the run
    still exist in the tracking store?) is only deferred, never skipped: such an identifier
    is *provisional*, :meth:`etag` reports a changed marker for it, so the watcher's next
    poll calls :meth:`current` again, which then runs the full check (importing MLflow in the
    watcher thread, off the request path) and falls back past a deleted run exactly as
    before. A run missing from the cache always takes the full path (MLflow download).

    Store and tracker are resolved on first use, not at construction, so building an app
    stays cheap and a tracker problem surfaces as a counted load failure in the watcher
    rather than as a crash at start-up.
    """

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.cache_dir = context.settings.home.expanduser() / "cache" / "models"
        self._provisional: set[str] = set()
        self._verified: set[str] = set()

    @cached_property
    def _pointers(self) -> PromotionStore:
        """Pointer reads without the tracking check (the cold-start shortcut)."""
        return PromotionStore(self.context.store)

    def cached_model_dir(self, run_id: str) -> Path | None:
        """The run's saved model in the local cache, if it is there (no MLflow needed)."""
        if not _RUN_ID.fullmatch(run_id):
            return None
        directory = self.cache_dir / run_id
        return directory if (directory / MANIFEST).is_file() else None

    def identifiers(self) -> list[str]:
        return self._pointers.identifiers()

    def etag(self, identifier: str) -> str | None:
        tag = self._pointers.etag(identifier)
        # A provisional champion must be looked at again even if its pointer is unchanged.
        return f"{tag}+unverified" if identifier in self._provisional else tag

    def current(self, identifier: str) -> Promotion | None:
        if identifier not in self._verified and identifier not in self._provisional:
            pointer = self._pointers.current(identifier)
            if pointer is not None and self.cached_model_dir(pointer.run_id) is not None:
                self._provisional.add(identifier)
                return pointer
        # The full check; if it raises (tracking server down) the identifier stays
        # provisional, so the next poll tries again.
        promotion = self.context.promotions.current(identifier)
        self._verified.add(identifier)
        self._provisional.discard(identifier)
        return promotion

    def load(self, promotion: Promotion) -> Forecaster:
        # The fastest runtime per model type: ONNX Runtime for torch models, so torch is
        # never imported by a serving process (see flts.api.runtime).
        from flts.api.runtime import load_serving_model

        directory = self.cached_model_dir(promotion.run_id)
        if directory is None:
            directory = self.context.tracker.model_dir(promotion.run_id)
        return load_serving_model(directory)


class RefreshOutcome(StrEnum):
    """What :meth:`ModelHolder.refresh` did."""

    SWAPPED = "swapped"  # a new model now serves the identifier
    UPDATED = "updated"  # same run, promotion metadata refreshed (no reload)
    UNCHANGED = "unchanged"  # already serving the current champion
    NO_CHAMPION = "no-champion"  # nothing promoted (or nothing valid) for the identifier
    FAILED = "failed"  # load or warm-up failed; the previous model keeps serving


LoadListener = Callable[[str, Promotion, "LoadedModel | None", BaseException | None], None]
"""Called after every load attempt: ``(identifier, promotion, loaded, error)``."""


class ModelHolder:
    """Per-identifier champions with atomic, warmed swaps.

    Reads (:meth:`get`, :meth:`snapshot`) take no lock: they read one reference to an
    immutable dict. Refreshes are serialised by a lock so the poller and the bus follower
    never load the same run twice at once.
    """

    def __init__(self, source: ModelSource, *, on_load: LoadListener | None = None) -> None:
        self.source = source
        self._on_load = on_load
        self._models: dict[str, LoadedModel] = {}
        self._refresh_lock = threading.Lock()

    def get(self, identifier: str) -> LoadedModel | None:
        return self._models.get(identifier)

    def snapshot(self) -> dict[str, LoadedModel]:
        """Every served model, as one consistent view."""
        return self._models

    @property
    def ready(self) -> bool:
        """At least one model is loaded (every stored model passed its warm-up)."""
        return bool(self._models)

    def refresh(self, identifier: str) -> RefreshOutcome:
        """Make ``identifier`` serve its current champion; never raises for load problems.

        The promotion pointer is the source of truth (a bus event only says "look again"),
        so a replayed or out-of-order event can never install an outdated model.
        """
        with self._refresh_lock:
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
            if held is not None and held.promotion.run_id == promotion.run_id:
                if held.promotion == promotion:
                    return RefreshOutcome.UNCHANGED
                self._install(identifier, LoadedModel(held.model, promotion, held.loaded_at))
                return RefreshOutcome.UPDATED
            return self._load(identifier, promotion)

    def _load(self, identifier: str, promotion: Promotion) -> RefreshOutcome:
        started = time.perf_counter()
        try:
            model = self.source.load(promotion)
            warm_up(model)
        except Exception as exc:
            log.warning(
                "loading run %s for %r failed; the previous model keeps serving: %s",
                promotion.run_id,
                identifier,
                exc,
            )
            self._notify(identifier, promotion, None, exc)
            return RefreshOutcome.FAILED
        loaded = LoadedModel(model, promotion, load_seconds=time.perf_counter() - started)
        self._install(identifier, loaded)
        log.info(
            "serving %s run %s for %r (loaded in %.2f s)",
            promotion.model_type,
            promotion.run_id,
            identifier,
            loaded.load_seconds,
        )
        self._notify(identifier, promotion, loaded, None)
        return RefreshOutcome.SWAPPED

    def _install(self, identifier: str, loaded: LoadedModel) -> None:
        # Copy-on-write: one reference assignment publishes the new table.
        self._models = {**self._models, identifier: loaded}

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


def warm_up(model: Forecaster) -> None:
    """One prediction on a plausible window (the training minima, on the spec's grid) before
    the model takes traffic: it pays one-off costs (lazy imports, ONNX session set-up) and
    proves the model answers with finite numbers of the right shape."""
    spec = model.spec
    row = np.asarray(model.input_scaler.minimum, dtype=np.float64)
    step = np.timedelta64(spec.step.value, "ns")
    end = np.datetime64(datetime.now(UTC).replace(tzinfo=None, microsecond=0), "ns")
    times = end - step * np.arange(spec.lags, 0, -1)
    window = Windows(
        x=np.tile(row, (1, spec.lags, 1)),
        y=None,
        input_times=times[None, :],
        target_times=(times[-1] + step * np.arange(1, spec.horizon + 1))[None, :],
    )
    prediction = model.predict(window)
    if not np.isfinite(prediction).all():
        raise ModelError(f"{model.model_type} warm-up prediction is not finite")
