"""Where a replica's champions come from: the promotion pointer says *which* run is
champion, a loader turns the run into a :class:`~flts.models.Forecaster`.

:class:`TrackingModelSource` (production) adds the cache policy: cold start from the local
model cache without MLflow. Tests inject a :class:`PromotionModelSource` that loads saved
model directories directly.

Every source also names the *fallbacks* of an identifier (the loadable promotions of its
history, newest first): a replica that cannot load the champion serves the first of them
that loads, and says so (:mod:`flts.api.holder`, docs/architecture.md, rule 12).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flts.exceptions import FLTSError, ModelError
from flts.models.base import MANIFEST, Forecaster
from flts.models.digests import verify
from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import IndexRead, IndexReader

if TYPE_CHECKING:
    from flts.services.context import ServiceContext

log = logging.getLogger(__name__)

#: Run ids that may name a cache directory (the tracker's own rule).
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ModelSource(Protocol):
    """Where champions come from: the pointer (``identifiers``/``etag``/``current``) and the
    run's saved model (``load``)."""

    def identifiers(self) -> list[str]:
        """Identifiers that have a promotion pointer."""
        ...

    def etag(self, identifier: str) -> str | None:
        """Cheap change marker of the pointer, so pollers skip unchanged identifiers."""
        ...

    def index(self, since: str | None) -> IndexRead | None:
        """The promotion index unless its version is still ``since`` (``None``); raises
        ``KeyError`` when it is missing, ``ValueError`` when damaged
        (:mod:`flts.promotion.index`)."""
        ...

    def marker(self, identifier: str, tag: str | None) -> str | None:
        """The change marker :meth:`etag` would give for a pointer whose tag is ``tag``
        (as the index records it), without reading the pointer."""
        ...

    def current(self, identifier: str) -> Promotion | None:
        """The valid champion for ``identifier`` (with the stale-pointer fallback)."""
        ...

    def load(self, promotion: Promotion) -> Forecaster:
        """Build the promoted run's forecaster (may be slow: downloads, imports)."""
        ...

    def fallbacks(self, identifier: str) -> list[Promotion]:
        """Earlier promotions of ``identifier`` to serve if the champion cannot be loaded,
        newest first, one per run."""
        ...


class PromotionModelSource:
    """A :class:`ModelSource` from a :class:`PromotionStore` and a ``run_id -> Forecaster``
    loader (the tracker's ``load_model`` in production, saved directories in tests)."""

    def __init__(self, promotions: PromotionStore, load_run: Callable[[str], Forecaster]) -> None:
        self.promotions = promotions
        self.load_run = load_run
        self._index = IndexReader(promotions.store)  # keeps the parts it has read

    def identifiers(self) -> list[str]:
        return self.promotions.identifiers()

    def etag(self, identifier: str) -> str | None:
        return self.promotions.etag(identifier)

    def index(self, since: str | None) -> IndexRead | None:
        return self._index.read(since)

    def marker(self, identifier: str, tag: str | None) -> str | None:
        return tag

    def current(self, identifier: str) -> Promotion | None:
        return self.promotions.current(identifier)

    def load(self, promotion: Promotion) -> Forecaster:
        return self.load_run(promotion.run_id)

    def fallbacks(self, identifier: str) -> list[Promotion]:
        return self.promotions.loadable_history(identifier)


class TrackingModelSource:
    """The default source: the context's promotion store and tracker.

    Cold start without MLflow: importing MLflow takes about two seconds, which alone would
    blow the 3 s start-up budget of an ONNX champion. So the *first* read of an identifier's
    pointer trusts it when the run's saved model is already in the local model cache
    (``<home>/cache/models/<run_id>``, where :meth:`flts.tracking.Tracker.model_dir` puts
    every download) *and passes its digest check* against the pointer's artifact digest
    (:mod:`flts.models.digests`), and loads the model from there. A cached directory that
    fails the check is never trusted: the load goes through the tracker, which evicts it
    and fetches the model again. The stale-pointer check (does the run
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

    def cached_model_dir(self, run_id: str, artifact_digest: str | None = None) -> Path | None:
        """The run's saved model in the local cache, if it is there and matches its digests
        (no MLflow needed); ``None`` sends the caller to the tracker."""
        if not _RUN_ID.fullmatch(run_id):
            return None
        directory = self.cache_dir / run_id
        if not (directory / MANIFEST).is_file():
            return None
        try:
            verify(directory, artifact_digest)
        except ModelError as exc:
            log.warning("cached model of run %s fails its digest check: %s", run_id, exc)
            return None
        return directory

    def identifiers(self) -> list[str]:
        return self._pointers.identifiers()

    def etag(self, identifier: str) -> str | None:
        return self.marker(identifier, self._pointers.etag(identifier))

    @cached_property
    def _index(self) -> IndexReader:
        return IndexReader(self.context.store)  # keeps the parts it has read

    def index(self, since: str | None) -> IndexRead | None:
        return self._index.read(since)

    def marker(self, identifier: str, tag: str | None) -> str | None:
        # A provisional champion must be looked at again even if its pointer is unchanged.
        return f"{tag}+unverified" if identifier in self._provisional else tag

    def current(self, identifier: str) -> Promotion | None:
        if identifier not in self._verified and identifier not in self._provisional:
            pointer = self._pointers.current(identifier)
            cached = pointer is not None and self.cached_model_dir(
                pointer.run_id, pointer.artifact_digest
            )
            if pointer is not None and cached:
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
        # never imported by a serving process (see flts.models.serving).
        from flts.models.serving import load_serving_model

        directory = self.cached_model_dir(promotion.run_id, promotion.artifact_digest)
        if directory is None:
            directory = self.context.tracker.model_dir(promotion.run_id, promotion.artifact_digest)
        try:
            return load_serving_model(directory)
        except FLTSError:
            raise
        except Exception as exc:  # a file that parses wrongly raises whatever its reader does
            raise ModelError(f"cannot load the model of run {promotion.run_id}: {exc}") from exc

    def fallbacks(self, identifier: str) -> list[Promotion]:
        return self.context.promotions.loadable_history(identifier)
