"""The dashboard's read models: what each page shows, as JSON, built from the project's own
readers (never from objects read another way):

* the fleet: :class:`flts.fleet.summary.FleetSummary`, the same rows, pages and overview
  ``flts status`` and ``GET /v1/fleet`` show, so the page receives one page of rows whatever
  the fleet's size;
* a station: its champion and lineage, the decision's figures per horizon step, the live
  figures, and a series of actuals with the champion's forecasts and interval bands (stored
  observations and the monitor's forecast steps from the ledger, or the newest batch-inference
  log of the champion, which holds the test split's actuals and the champion's forecasts);
* decisions (:func:`flts.promotion.list_decisions`) and promotion history;
* what has happened so far to an uploaded dataset (processed, trained, decided, promoted);
* the exploratory view of a stored dataset (:mod:`flts.ui.explore`).

The fleet is assembled once and kept for ``gateway.ui_fleet_cache_seconds`` (3 s), so paging,
sorting and filtering a fleet of thousands costs a sort of rows in memory.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

import pandas as pd

from flts.data.processed import ProcessedKeys
from flts.data.reader import read_traffic_csv
from flts.datasets import dataset_keys, read_dataset_metas
from flts.exceptions import DataValidationError, NotFoundError
from flts.fleet.summary import FleetSummary
from flts.live.monitor import monitor_steps, read_figures
from flts.live.observations import ObservationLog
from flts.promotion import list_decisions, read_decision
from flts.redaction import redact
from flts.services.batch_inference import log_prefix
from flts.services.context import ServiceContext
from flts.services.preprocess import HOLDOUT_RULE
from flts.ui.explore import DEFAULT_POINTS, explore

MAX_POINTS = 5_000
#: Explored datasets kept in memory (reading a CSV is the slow part of the view).
_EXPLORED = 8


def _first_step(windows: list[Any]) -> list[Any]:
    """Step 1 of each window of a batch-inference log (its arrays are ``windows x horizon``)."""
    return [window[0] if isinstance(window, list) else window for window in windows]


class Dashboard:
    """Read models over one service context (the gateway's)."""

    def __init__(self, context: ServiceContext, cache_seconds: float | None = None) -> None:
        self.context = context
        self.cache_seconds = (
            context.settings.gateway.ui_fleet_cache_seconds
            if cache_seconds is None
            else cache_seconds
        )
        self.summary = FleetSummary(context.store, self.cache_seconds)
        self.pointers = self.summary.pointers  # no tracking server per row
        self._explored: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._explored_lock = threading.Lock()

    # ------------------------------------------------------------------ fleet

    def fleet(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        sort: str = "identifier",
        order: str = "asc",
        query: str = "",
        state: str = "",
    ) -> dict[str, Any]:
        """One page of the fleet (:meth:`flts.fleet.summary.FleetSummary.page`)."""
        return self.summary.page(
            offset=offset, limit=limit, sort=sort, order=order, query=query, state=state
        )

    # ------------------------------------------------------------------ station

    def station(self, identifier: str) -> dict[str, Any]:
        """Champion, lineage, the decision's per-horizon figures and the live figures."""
        store = self.context.store
        current = self.context.promotions.current(identifier)
        metas = read_dataset_metas(store, identifier)
        if current is None and not metas:
            raise NotFoundError(f"no champion and no dataset for identifier {identifier!r}")
        document: dict[str, Any] = {
            "identifier": identifier,
            "champion": None,
            "lineage": None,
            "decision": None,
            "live": [],
            "targets": list(self.context.settings.feature_spec.targets),
        }
        if current is None:
            return document
        document["champion"] = current.model_dump(mode="json")
        document["lineage"] = {
            "run_id": current.run_id,
            "model_type": current.model_type,
            "config_hash": current.config_hash,
            "artifact_digest": current.artifact_digest,
            "dataset": self._dataset_of(identifier, current.config_hash, metas),
            "mlflow_url": self._mlflow_url(current.run_id),
        }
        decision = read_decision(store, identifier, current.config_hash)
        if decision is not None:
            line = next(
                (e for e in decision.get("leaderboard", []) if e.get("run_id") == current.run_id),
                None,
            )
            document["decision"] = {
                "decided_at": decision.get("decided_at"),
                "reason_code": decision.get("reason_code"),
                "champion_line": line,
                "baseline_horizon": decision.get("baseline_horizon", {}),
            }
        figures = (read_figures(store) or {}).get("figures", [])
        document["live"] = sorted(
            (f for f in figures if f["identifier"] == identifier and f["run_id"] == current.run_id),
            key=lambda f: int(f["step"]),
        )
        return document

    def _dataset_of(
        self, identifier: str, config_hash: str, metas: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The newest dataset of ``identifier`` whose files the processed data of
        ``config_hash`` was made from (by content digest), or ``None``."""
        try:
            processed = self.context.store.get_json(ProcessedKeys.for_hash(config_hash).meta_key)
        except KeyError:
            return None
        digests = processed.get("input_digests") or {}
        for meta in metas:  # newest first
            test = meta.get("test") or {}
            if (meta.get("train") or {}).get("digest") == digests.get("train") and test.get(
                "digest", HOLDOUT_RULE
            ) == digests.get("test"):
                return {
                    "dataset_id": meta["dataset_id"],
                    "uploaded_at": meta.get("uploaded_at"),
                    "filename": (meta.get("train") or {}).get("filename"),
                    "source": meta.get("source", "upload"),
                }
        return None

    def _mlflow_url(self, run_id: str) -> str | None:
        """A link to the run in the MLflow UI when tracking is an MLflow server."""
        uri = self.context.settings.tracking.uri
        if not uri.startswith(("http://", "https://")):
            return None
        experiment = self.context.tracker.experiment_id
        return redact(f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}")

    def series(self, identifier: str, target: str, points: int = 500) -> dict[str, Any]:
        """Actuals of ``target`` with the champion's step-1 forecasts and interval bands.

        Actuals are the newest ``points`` stored observations; without observations, the test
        split as the champion's newest batch-inference log holds it. Forecasts are the
        monitor's forecast steps (from the ledger, with their bands) of the champion within
        the actuals' time range; without any, the batch-inference log's forecasts."""
        spec = self.context.settings.feature_spec
        if target not in spec.targets:
            raise DataValidationError(
                f"target must be one of {', '.join(spec.targets)}, got {target!r}"
            )
        if not 1 <= points <= MAX_POINTS:
            raise DataValidationError(f"points must be between 1 and {MAX_POINTS}, got {points}")
        current = self.pointers.current(identifier)
        if current is None:
            raise NotFoundError(f"no champion for identifier {identifier!r}")
        document: dict[str, Any] = {
            "identifier": identifier,
            "target": target,
            "run_id": current.run_id,
            "actuals": {"source": None, "times": [], "values": []},
            "forecast": {"source": None, "times": [], "values": [], "bands": {}},
        }
        batch = self._batch_log(identifier, current.run_id)
        observed = ObservationLog(self.context.store, spec).tail(identifier, points)
        if len(observed):
            document["actuals"] = {
                "source": "observations",
                "times": [t.isoformat() for t in pd.DatetimeIndex(observed.index)],
                "values": [float(v) for v in observed[target].to_numpy()],
            }
        elif batch is not None:
            times = _first_step(batch["target_times"])[-points:]
            values = _first_step(batch["actuals"][target])[-points:]
            document["actuals"] = {"source": "test split", "times": times, "values": values}
        ledger = self._ledger_steps(identifier, current.run_id, target, document["actuals"])
        if ledger is not None:
            document["forecast"] = ledger
        elif batch is not None:
            times = _first_step(batch["target_times"])[-points:]
            values = _first_step(batch["forecasts"][target])[-points:]
            document["forecast"] = {
                "source": "batch inference",
                "times": times,
                "values": values,
                "bands": {},
            }
        return document

    def _batch_log(self, identifier: str, run_id: str) -> dict[str, Any] | None:
        """The newest batch-inference log of ``run_id`` (names sort by time)."""
        store = self.context.store
        keys = [
            k
            for k in store.list(log_prefix(identifier))
            if k.endswith(".json") and f"-{run_id}" in k.rsplit("/", 1)[-1]
        ]
        if not keys:
            return None
        try:
            document: dict[str, Any] = store.get_json(max(keys))
        except KeyError:
            return None
        return document

    def _ledger_steps(
        self, identifier: str, run_id: str, target: str, actuals: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The champion's step-1 forecasts the monitor holds (scored and pending), within the
        actuals' time range; ``None`` when there are none."""
        # Only the monitor (shard) that owns the identifier: a fleet's steps are not read.
        steps = monitor_steps(self.context.store, identifier)
        if steps.empty:
            return None
        steps = steps[(steps["run_id"] == run_id) & (steps["step"] == 1)]
        if actuals["times"]:
            first = pd.Timestamp(actuals["times"][0]).tz_localize(None)
            steps = steps[pd.DatetimeIndex(steps["time"]) >= first]
        steps = steps.drop_duplicates("time").sort_values("time")
        if steps.empty:
            return None
        bands: dict[str, dict[str, list[float | None]]] = {}
        for column in steps.columns:
            if isinstance(column, str) and column.startswith(f"{target}:lower:"):
                level = column.rsplit(":", 1)[1]
                upper = f"{target}:upper:{level}"
                if upper in steps:
                    bands[level] = {
                        "lower": [None if pd.isna(v) else float(v) for v in steps[column]],
                        "upper": [None if pd.isna(v) else float(v) for v in steps[upper]],
                    }
        return {
            "source": "forecast ledger",
            "times": [t.isoformat() for t in pd.DatetimeIndex(steps["time"])],
            "values": [float(v) for v in steps[target]],
            "bands": bands,
        }

    # ------------------------------------------------------------------ decisions, promotions

    def decisions(self, identifier: str | None, limit: int = 20) -> dict[str, Any]:
        """The newest ``limit`` decisions (of one identifier or all), newest first."""
        documents = list_decisions(self.context.store, identifier)
        return {"decisions": list(reversed(documents))[:limit], "total": len(documents)}

    def promotions(self, identifier: str) -> dict[str, Any]:
        """The champion (valid run, as rollback sees it) and the history, newest first."""
        promotions = self.context.promotions
        current = promotions.current(identifier)
        history = promotions.history(identifier)
        if current is None and not history:
            raise NotFoundError(f"no promotion for identifier {identifier!r}")
        return {
            "identifier": identifier,
            "current": None if current is None else current.model_dump(mode="json"),
            "history": [p.model_dump(mode="json") for p in reversed(history)],
        }

    # ------------------------------------------------------------------ datasets

    def _meta(self, dataset_id: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = self.context.store.get_json(dataset_keys(dataset_id)["meta"])
        except KeyError as exc:
            raise NotFoundError(f"no dataset {dataset_id!r}") from exc
        return meta

    def _config_hash_of(self, meta: dict[str, Any]) -> str | None:
        """The config hash preprocessing gave ``meta``'s files (by their content digests),
        or ``None`` before it has processed them."""
        store = self.context.store
        test = meta.get("test") or {}
        wanted = {
            "train": (meta.get("train") or {}).get("digest"),
            "test": test.get("digest", HOLDOUT_RULE),
        }
        for key in store.list("processed"):
            if not key.endswith("/meta.json"):
                continue
            try:
                processed = store.get_json(key)
            except KeyError:
                continue
            if processed.get("input_digests") == wanted:
                return str(processed["config_hash"])
        return None

    def progress(self, dataset_id: str) -> dict[str, Any]:
        """What has happened to a dataset so far: uploaded, processed (config hash), each
        expected model type's training run, the decision and the promotion."""
        meta = self._meta(dataset_id)
        identifier = str(meta["identifier"])
        expected = list(self.context.settings.evaluation.expected_models)
        document: dict[str, Any] = {
            "dataset_id": dataset_id,
            "identifier": identifier,
            "uploaded_at": meta.get("uploaded_at"),
            "config_hash": None,
            "expected_models": expected,
            "runs": [],
            "decision": None,
            "finished": False,
        }
        config_hash = self._config_hash_of(meta)
        if config_hash is None:
            return document
        document["config_hash"] = config_hash
        runs = self.context.tracker.runs_for(config_hash=config_hash, identifier=identifier)
        document["runs"] = [
            {
                "model_type": r.model_type,
                "run_id": r.run_id,
                "status": r.status,
                "train_seconds": r.train_seconds,
                "error": None if r.error is None else redact(r.error),
            }
            for r in runs
        ]
        decision = read_decision(self.context.store, identifier, config_hash)
        if decision is not None:
            document["decision"] = decision
            document["finished"] = decision.get("state") == "done"
        return document

    def explore(self, dataset_id: str, points: int = DEFAULT_POINTS) -> dict[str, Any]:
        """The exploratory view of a stored dataset's training file (and test file, after it,
        when there is one); remembered for the few datasets looked at last."""
        if not 10 <= points <= MAX_POINTS:
            raise DataValidationError(f"points must be between 10 and {MAX_POINTS}, got {points}")
        with self._explored_lock:
            cached = self._explored.get((dataset_id, points))
            if cached is not None:
                self._explored.move_to_end((dataset_id, points))
                return cached
        meta = self._meta(dataset_id)
        spec = self.context.settings.feature_spec
        frames = []
        for role in ("train", "test"):
            part = meta.get(role)
            if part:
                data = self.context.store.get(part["key"])
                frames.append(read_traffic_csv(io.BytesIO(data), spec).frame)
        frame = pd.concat(frames).sort_index()
        document = {
            "dataset_id": dataset_id,
            "identifier": meta.get("identifier"),
            **explore(frame, list(spec.inputs), list(spec.targets), points),
        }
        with self._explored_lock:  # routes run in a thread pool
            self._explored[(dataset_id, points)] = document
            while len(self._explored) > _EXPLORED:
                self._explored.popitem(last=False)
        return document
