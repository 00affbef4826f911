"""Tracking and registry through MLflow: one place that knows MLflow's API.

Every training run (successful or failed) becomes an MLflow run in one experiment, tagged
``config_hash``, ``identifier``, ``model_type`` and ``correlation_id``, so the tracking store is
the durable record the evaluator reads its state from (docs/architecture.md, rule 5): "which types
have reported for this config hash" is a query, not something held in memory.

The model itself is logged as the directory :meth:`Forecaster.save` writes (feature spec,
scaler JSON, native weights, ``model.onnx`` for LSTM/GRU) under the artifact path ``model``,
with MLflow's files beside it, so the same directory is the run's MLflow Model
(:mod:`flts.models.mlflow_pyfunc`: ``mlflow.pyfunc.load_model("runs:/<run>/model")``);
nothing here pickles anything, and loading goes back through :func:`flts.models.base.load_model`.
Registry versions point at that model (``models:/<prefix>-<identifier>@champion`` loads), and
their descriptions are model cards (:mod:`flts.model_card`).

Backends are MLflow's URI handling (docs/architecture.md, §2): ``sqlite:///...`` in tests and the
embedded default, ``http://mlflow:5000`` for a tracking server. Only for store URIs that are not
a server (SQLite, PostgreSQL, ...) do we pick the artifact location ourselves, under
``settings.home/artifacts``; a server decides its own (``--artifacts-destination``).

``import mlflow`` costs over a second, so this module imports it lazily: modules that only need
:class:`RunRecord` (or type hints) stay cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from flts.exceptions import ConfigurationError, FLTSError, ModelError
from flts.settings import Settings
from flts.transient import translated

if TYPE_CHECKING:
    from flts.data.windows import Windows
    from flts.evaluation import Scores
    from flts.models.base import Forecaster

log = logging.getLogger(__name__)

#: Artifact path of the saved model directory inside every run.
MODEL_ARTIFACT = "model"
#: Run tags we set and search on.
TAG_CONFIG_HASH = "config_hash"
TAG_IDENTIFIER = "identifier"
TAG_MODEL_TYPE = "model_type"
TAG_CORRELATION_ID = "correlation_id"
TAG_ERROR = "error"
#: sha256 of the saved model's digest manifest (flts.models.digests).
TAG_ARTIFACT_DIGEST = "artifact_digest"

#: MLflow run statuses a run ends in.
FINISHED = "FINISHED"
FAILED = "FAILED"
TERMINAL_STATUSES = frozenset({FINISHED, FAILED, "KILLED"})

# URI schemes that name a tracking *server*, which owns its artifact location.
_SERVER_SCHEMES = frozenset({"http", "https", "databricks"})
# Values we put into search filters must not be able to close the quoted string.
_FILTER_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
# Run ids become cache directory names.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_TAG_CHARS = 4000
_MAX_PARAM_CHARS = 500
_SEARCH_PAGE = 1000


@dataclass(frozen=True)
class RunRecord:
    """One tracked training run as the evaluator and the CLI see it."""

    run_id: str
    model_type: str
    status: str
    """MLflow status: ``FINISHED`` (model logged), ``FAILED``, ``RUNNING``, ``KILLED``."""
    identifier: str
    config_hash: str
    correlation_id: str
    start_time: datetime
    """When training started (UTC)."""
    end_time: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    artifact_digest: str | None = None
    """sha256 of the saved model's digest manifest (``None`` for runs logged before)."""

    @property
    def finished(self) -> bool:
        """True when the run logged a usable model."""
        return self.status == FINISHED

    @property
    def terminal(self) -> bool:
        """True when the run will not change any more (the model type has reported)."""
        return self.status in TERMINAL_STATUSES

    @property
    def train_seconds(self) -> float | None:
        return self.metrics.get("train_seconds")


@contextmanager
def _mlflow_call() -> Iterator[None]:
    """Around every call into MLflow: the translation point of the tracking backend.

    An unreachable tracking server (refused, reset, timed out, 5xx after MLflow's own HTTP
    retries) becomes :class:`~flts.exceptions.InfrastructureError`, which consumers wait out
    (docs/architecture.md, rule 11); ``MlflowException`` with a verdict (``RESOURCE_DOES_NOT_
    EXIST``...) passes unchanged. Also silences the one deprecation SQLAlchemy 2.1 raises when
    MLflow's SQL store is first imported (``noload`` in MLflow's ORM mappings; not ours to
    fix, and with warnings as errors it would break the first tracking call of a process)."""
    with warnings.catch_warnings(), translated("tracking server"):
        warnings.filterwarnings(
            "ignore",
            message=r".*``noload`` loader strategy is deprecated.*",
            category=DeprecationWarning,
        )
        yield


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other URIs or in-memory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    raw = uri[len(prefix) :].split("?", 1)[0]
    return None if raw in ("", ":memory:") else Path(raw)


@contextmanager
def _first_use_lock(database: Path | None) -> Iterator[None]:
    """Serialise the first connection of every process to one SQLite file.

    MLflow creates and migrates the schema on first use; several workers started together
    (``flts up``) would run the migrations concurrently and all but one would fail with
    "duplicate column". An advisory file lock next to the database makes them take turns.
    """
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)  # SQLite will not create the folder
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, start workers one at a time instead
        yield
        return
    with (database.parent / f"{database.name}.init-lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_server_uri(uri: str) -> bool:
    """True for a tracking server URI (``http://...``), False for a store URI (``sqlite:...``)."""
    return urlparse(uri).scheme.lower() in _SERVER_SCHEMES


def _filter_value(name: str, value: str) -> str:
    if not _FILTER_VALUE.fullmatch(value):
        raise ConfigurationError(f"{name} {value!r} cannot be used in a tracking search")
    return value


def _stamp(millis: int | None) -> datetime | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000.0, tz=UTC)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM_CHARS]


def _run_metrics(model: Forecaster, validation: Scores | None) -> dict[str, float]:
    """Metrics of a training run: timing and sizes, and the trainer's own validation scores
    (informational only: the evaluator re-scores every candidate on the test split)."""
    metrics: dict[str, float] = {}
    for key in ("train_seconds", "train_windows", "validation_windows", "best_epoch"):
        value = model.metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = float(value)
    if validation is not None:
        metrics.update(
            validation_nrmse=validation.nrmse,
            validation_mae5=validation.mae5,
            validation_rmse5=validation.rmse5,
        )
        for target, scores in validation.per_target.items():
            metrics[f"validation_{target}_mae"] = scores.mae
            metrics[f"validation_{target}_rmse"] = scores.rmse
            metrics[f"validation_{target}_nrmse"] = scores.nrmse
    # MLflow would store inf as 1.8e308, which reads like a real (terrible) score.
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def alias_tag(alias: str) -> str:
    """The registered-model tag naming the run FLTS last pointed ``alias`` at."""
    return f"flts.alias.{alias}"


def alias_version_tag(alias: str) -> str:
    """The registered-model tag naming the model version FLTS last pointed ``alias`` at
    (written after :func:`alias_tag`)."""
    return f"flts.alias.{alias}.version"


@dataclass(frozen=True)
class AliasState:
    """Where a registered model's alias points and where FLTS last pointed it, as one
    registry listing shows them (no per-model reads)."""

    version: str | None
    """The version the alias names now (``None``: no such alias)."""
    written_version: str | None
    """The version FLTS itself last pointed it at (``None``: never, or before this tag)."""

    @property
    def as_written(self) -> bool:
        """True when the alias is where FLTS put it: nobody moved it by hand since."""
        return self.version is not None and self.version == self.written_version


#: Per-epoch training curves (a neural model's ``metadata["history"]``), logged as steps.
EPOCH_METRICS = ("train_loss", "validation_loss", "validation_nrmse")


def _epoch_metrics(model: Forecaster, timestamp_ms: int) -> list[Any]:
    """One metric per epoch and curve, ``step=epoch``: ``epoch_train_loss``,
    ``epoch_validation_loss``, ``epoch_validation_nrmse`` (the prefix keeps them apart from
    the single validation scores). Taken from the fit's own record after training, so the
    training loop makes no tracking calls and a curve is logged in the run's one batch."""
    from mlflow.entities import Metric

    history = model.metadata.get("history")
    if not isinstance(history, list):
        return []
    curves: list[Any] = []
    for record in history:
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int | float):
            continue
        step = int(record["epoch"])
        for name in EPOCH_METRICS:
            value = record.get(name)
            if isinstance(value, int | float) and math.isfinite(value):
                curves.append(Metric(f"epoch_{name}", float(value), timestamp_ms, step))
    return curves


class Tracker:
    """Log training runs, answer "which runs exist for this config", fetch models, and move
    registry aliases (which alias, and when, is :mod:`flts.promotion`'s call).

    Safe to use from several threads of one process; several processes may share one store.
    """

    def __init__(self, settings: Settings) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.uri = settings.tracking.uri
        self.experiment_name = settings.tracking.registry_prefix
        self.cache_dir = settings.home.expanduser() / "cache" / "models"
        # Downloads would print a progress bar per model to stderr; services log instead.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MlflowClient opens (and for a new SQLite file, creates and migrates) the store
        # right here, so this is the first use the lock must cover.
        with _first_use_lock(sqlite_path(self.uri)), _mlflow_call():
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._experiment_id: str | None = None
        self._lock = threading.Lock()
        # Registered models this process has seen exist: a registered model is never removed
        # by FLTS, so one create-or-find per name and process is enough (a fleet registers
        # a version per station and candidate; the failing create cost a round trip each).
        self._registered: set[str] = set()

    # ------------------------------------------------------------------ experiment

    @property
    def experiment_id(self) -> str:
        """The experiment every run goes to (see :meth:`_ready`)."""
        return self._ready()

    def _ready(self) -> str:
        """Connect once: create the schema (one process at a time for SQLite) and the
        experiment; several processes may race to create it, the loser reads the winner's."""
        with self._lock:
            if self._experiment_id is None:
                with _first_use_lock(sqlite_path(self.uri)), _mlflow_call():
                    self.client.search_registered_models(max_results=1)
                    self._experiment_id = self._get_or_create_experiment()
            return self._experiment_id

    def _artifact_location(self) -> str | None:
        if is_server_uri(self.uri):
            return None
        directory = (self.settings.home.expanduser() / "artifacts").resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return directory.as_uri()

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        with _mlflow_call():
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                return str(experiment.experiment_id)
            try:
                return str(
                    self.client.create_experiment(
                        self.experiment_name, artifact_location=self._artifact_location()
                    )
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:  # created and deleted in between: nothing sensible to do
            raise ConfigurationError(f"tracking experiment {self.experiment_name!r} vanished")
        return str(experiment.experiment_id)

    # ------------------------------------------------------------------ logging runs

    def _tags(
        self, *, model_type: str, identifier: str, config_hash: str, correlation_id: str
    ) -> dict[str, str]:
        return {
            TAG_CONFIG_HASH: config_hash,
            TAG_IDENTIFIER: identifier,
            TAG_MODEL_TYPE: model_type,
            TAG_CORRELATION_ID: correlation_id,
            "mlflow.runName": f"{model_type.lower()}-{identifier}-{config_hash[:8]}",
        }

    def log_training_run(
        self,
        model: Forecaster,
        *,
        identifier: str,
        config_hash: str,
        correlation_id: str,
        validation: Scores | None = None,
        example: Windows | None = None,
        describe: Callable[[str], str] | None = None,
    ) -> str:
        """Log a fitted model as a FINISHED run and return its run id.

        The artifact ``model`` is the saved model directory, which is also an MLflow Model
        (:mod:`flts.models.mlflow_pyfunc`; ``example``'s last window is its input example).
        With ``describe`` the run is also registered as a version of ``<prefix>-<identifier>``
        whose description (the model card) is ``describe(run_id)``, before the run is marked
        FINISHED: a finished run always has its version, and a failure on the way leaves a
        FAILED run that the retried event trains again.

        The model is saved before any run exists, so a model that cannot be saved raises
        :class:`~flts.exceptions.ModelError` and leaves no half-logged run; a tracking failure
        after that marks the run FAILED (best effort) and propagates for the caller to retry.
        """
        from mlflow.entities import Metric, Param

        from flts.models import mlflow_pyfunc
        from flts.models.digests import write_digests

        with tempfile.TemporaryDirectory(prefix="flts-model-") as scratch:
            model_dir = Path(scratch) / MODEL_ARTIFACT
            try:
                mlflow_pyfunc.save(
                    model,
                    model_dir,
                    example=example,
                    metadata={TAG_IDENTIFIER: identifier, TAG_CONFIG_HASH: config_hash},
                )
            except FLTSError:
                raise
            except Exception as exc:  # torch/ONNX/IO errors while saving are the model's
                raise ModelError(f"cannot save {model.model_type} model: {exc}") from exc
            artifact_digest = write_digests(model_dir)

            metrics = _run_metrics(model, validation)
            now_ms = int(time.time() * 1000)
            curves = _epoch_metrics(model, now_ms)
            # The run spans the training, so the evaluator's deadline clock starts when the
            # first model of a config started training, not when it finished.
            start_ms = now_ms - int(1000 * metrics.get("train_seconds", 0.0))
            params = {"seed": model.seed, **model.params}
            with _mlflow_call():
                run = self.client.create_run(
                    self.experiment_id,
                    start_time=start_ms,
                    tags={
                        **self._tags(
                            model_type=model.model_type,
                            identifier=identifier,
                            config_hash=config_hash,
                            correlation_id=correlation_id,
                        ),
                        TAG_ARTIFACT_DIGEST: artifact_digest,
                    },
                )
                run_id = str(run.info.run_id)
                try:
                    self.client.log_batch(
                        run_id,
                        metrics=[Metric(k, v, now_ms, 0) for k, v in sorted(metrics.items())]
                        + curves,
                        params=[Param(k, _param_value(v)) for k, v in sorted(params.items())],
                    )
                    self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
                    if describe is not None:
                        self._new_version(run_id, identifier, describe(run_id))
                    self.client.set_terminated(run_id, FINISHED)
                except BaseException:
                    self._terminate_quietly(run_id, FAILED)
                    raise
        log.info("logged %s run %s for %s/%s", model.model_type, run_id, identifier, config_hash)
        return run_id

    def log_failed_run(
        self,
        *,
        model_type: str,
        identifier: str,
        config_hash: str,
        correlation_id: str,
        error: str,
    ) -> str:
        """Record that ``model_type`` failed to train on this config (so the evaluator counts
        it as reported and does not wait for it) and return the run id."""
        tags = self._tags(
            model_type=model_type,
            identifier=identifier,
            config_hash=config_hash,
            correlation_id=correlation_id,
        )
        tags[TAG_ERROR] = error[:_MAX_TAG_CHARS]
        with _mlflow_call():
            run = self.client.create_run(self.experiment_id, tags=tags)
            run_id = str(run.info.run_id)
            self.client.set_terminated(run_id, FAILED)
        return run_id

    def _terminate_quietly(self, run_id: str, status: str) -> None:
        try:
            self.client.set_terminated(run_id, status)
        except Exception:  # the original error matters more than this one
            log.warning("could not mark run %s %s", run_id, status, exc_info=True)

    # ------------------------------------------------------------------ reading runs

    def runs_for(self, *, config_hash: str, identifier: str) -> list[RunRecord]:
        """Every active run for this config hash and identifier, oldest first."""
        config_hash = _filter_value("config_hash", config_hash)
        identifier = _filter_value("identifier", identifier)
        query = (
            f"tags.{TAG_CONFIG_HASH} = '{config_hash}' and tags.{TAG_IDENTIFIER} = '{identifier}'"
        )
        records: list[RunRecord] = []
        token: str | None = None
        with _mlflow_call():
            while True:
                page = self.client.search_runs(
                    [self.experiment_id],
                    filter_string=query,
                    max_results=_SEARCH_PAGE,
                    order_by=["attributes.start_time ASC"],
                    page_token=token,
                )
                records.extend(self._record(run) for run in page)
                token = page.token
                if not token:
                    break
        return sorted(records, key=lambda r: (r.start_time, r.run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run ``run_id``, or ``None`` when it does not exist or was deleted."""
        from mlflow.exceptions import MlflowException

        self._ready()
        try:
            with _mlflow_call():
                run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise  # an unreachable server is not "the run is gone"
        if run.info.lifecycle_stage == "deleted":
            return None
        return self._record(run)

    def run_exists(self, run_id: str) -> bool:
        """True when ``run_id`` names an active run (the promotion pointer's validity test)."""
        return self.get_run(run_id) is not None

    @staticmethod
    def _record(run: Any) -> RunRecord:
        tags: dict[str, str] = dict(run.data.tags)
        start = _stamp(run.info.start_time) or datetime.fromtimestamp(0, tz=UTC)
        return RunRecord(
            run_id=str(run.info.run_id),
            model_type=tags.get(TAG_MODEL_TYPE, ""),
            status=str(run.info.status),
            identifier=tags.get(TAG_IDENTIFIER, ""),
            config_hash=tags.get(TAG_CONFIG_HASH, ""),
            correlation_id=tags.get(TAG_CORRELATION_ID, ""),
            start_time=start,
            end_time=_stamp(run.info.end_time),
            metrics={str(k): float(v) for k, v in run.data.metrics.items()},
            error=tags.get(TAG_ERROR),
            artifact_digest=tags.get(TAG_ARTIFACT_DIGEST),
        )

    # ------------------------------------------------------------------ models

    def model_dir(self, run_id: str, artifact_digest: str | None = None) -> Path:
        """The run's saved-model directory in the local cache, verified against its digests.

        ``artifact_digest`` is what the caller was told the model is (the promotion pointer);
        without it the run's own tag is used. A cached directory that fails the check is
        evicted and fetched again; a download that fails it raises
        :class:`~flts.exceptions.ModelError` (the artifact store itself holds a damaged
        model) and leaves nothing in the cache. The download goes to a scratch directory
        renamed into place, so a concurrent reader (another replica on this machine) never
        sees a half-copied model.
        """
        from flts.models.digests import evict, verify

        if not _RUN_ID.fullmatch(run_id):
            raise ModelError(f"invalid run id {run_id!r}")
        expected = artifact_digest or self._artifact_digest(run_id)
        target = self.cache_dir / run_id
        if target.is_dir():
            try:
                verify(target, expected)
                return target
            except ModelError as exc:
                log.warning("cached model of run %s is damaged, fetching it again: %s", run_id, exc)
                evict(target)
        self._download(run_id, target, expected)
        return target

    def _artifact_digest(self, run_id: str) -> str | None:
        run = self.get_run(run_id)
        return None if run is None else run.artifact_digest

    def _download(self, run_id: str, target: Path, expected: str | None) -> None:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        from flts.models.digests import verify

        self._ready()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.cache_dir / f".download-{run_id}-{uuid.uuid4().hex}"
        try:
            with _mlflow_call():
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=MODEL_ARTIFACT,
                    dst_path=str(scratch),
                    tracking_uri=self.uri,
                )
            try:
                verify(Path(local), expected)
            except ModelError as exc:
                raise ModelError(f"the stored model of run {run_id} is damaged: {exc}") from exc
            try:
                Path(local).rename(target)
            except OSError:
                if not target.is_dir():  # not a lost race: a real failure
                    raise
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise  # an unreachable server is worth a retry, not a verdict on the model
            raise ModelError(f"run {run_id} has no saved model: {exc.message}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def load_model(self, run_id: str, artifact_digest: str | None = None) -> Forecaster:
        """The run's model, rebuilt from its verified saved directory (no pickles); a model
        whose files cannot be read back is a :class:`~flts.exceptions.ModelError`."""
        from flts.models.base import load_model

        directory = self.model_dir(run_id, artifact_digest)
        try:
            return load_model(directory)
        except FLTSError:
            raise
        except Exception as exc:  # whatever a damaged file makes a loader raise
            raise ModelError(f"cannot load the model of run {run_id}: {exc}") from exc

    # ------------------------------------------------------------------ registry

    def registered_model_name(self, identifier: str) -> str:
        return f"{self.settings.tracking.registry_prefix}-{identifier}"

    def _ensure_registered_model(self, name: str) -> None:
        """Create the registered model ``name`` unless this process knows it exists."""
        from mlflow.exceptions import MlflowException

        if name in self._registered:
            return
        with _mlflow_call():
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        self._registered.add(name)

    def _create_version(self, name: str, run_id: str, description: str | None) -> str:
        """Create a version of the run's model under ``name`` (the registered model made
        first; made again if someone deleted it since this process saw it)."""
        from mlflow.exceptions import MlflowException

        for attempt in (1, 2):
            self._ensure_registered_model(name)
            try:
                with _mlflow_call():
                    created = self.client.create_model_version(
                        name,
                        source=f"runs:/{run_id}/{MODEL_ARTIFACT}",
                        run_id=run_id,
                        description=description,
                    )
                return str(created.version)
            except MlflowException as exc:
                if attempt == 2 or exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                self._registered.discard(name)
        raise AssertionError("unreachable")

    def _new_version(self, run_id: str, identifier: str, description: str | None) -> str:
        """Register the model of a run this process has just created: nobody else knows its
        id yet, so it cannot have a version, and no search before or after is needed."""
        name = _filter_value("registered model name", self.registered_model_name(identifier))
        run_id = _filter_value("run_id", run_id)
        self._ready()
        return self._create_version(name, run_id, description)

    def _versions(self, name: str, run_id: str) -> list[Any]:
        with _mlflow_call():
            return list(self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))

    def register_version(
        self, run_id: str, identifier: str, *, description: str | None = None
    ) -> str:
        """The registry version of ``<prefix>-<identifier>`` for the run's model, created on
        first use (with ``description``); an existing one is reused, so a retried trainer or
        a resumed promotion adds no versions. Its source is the run's MLflow Model, so
        ``models:/<name>/<version>`` and ``models:/<name>@<alias>`` load with
        ``mlflow.pyfunc.load_model``."""
        return self._version(run_id, identifier, description=description)[0]

    def _version(
        self, run_id: str, identifier: str, *, description: str | None = None
    ) -> tuple[str, str | None]:
        """:meth:`register_version` with the version's description (one search when the
        version exists)."""
        name = _filter_value("registered model name", self.registered_model_name(identifier))
        run_id = _filter_value("run_id", run_id)
        self._ready()
        existing = self._versions(name, run_id)
        if not existing:
            self._create_version(name, run_id, description)
            # Two writers may both have created a version: both settle on the oldest.
            existing = self._versions(name, run_id)
        oldest = min(existing, key=lambda v: int(v.version))
        text = None if oldest.description is None else str(oldest.description)
        return str(oldest.version), text

    def set_version_description(self, run_id: str, identifier: str, description: str) -> str:
        """Replace the description (the model card) of the run's registry version, creating
        the version when the run has none yet; return the version."""
        return self.edit_version_description(run_id, identifier, lambda _old: description)

    def edit_version_description(
        self, run_id: str, identifier: str, edit: Callable[[str | None], str]
    ) -> str:
        """Set the description of the run's registry version to ``edit(current)`` (``None``
        when there is no version or no description yet; the version is created then) and
        return the version: one search and one update, where reading the card and writing
        it back separately took three searches (the evaluator does this per candidate)."""
        version, current = self._version(run_id, identifier)
        text = edit(current)
        if text != current:
            with _mlflow_call():
                self.client.update_model_version(
                    self.registered_model_name(identifier), version, description=text
                )
        return version

    def version_description(self, run_id: str, identifier: str) -> str | None:
        """The description of the run's registry version (``None``: no version, or none)."""
        name = _filter_value("registered model name", self.registered_model_name(identifier))
        run_id = _filter_value("run_id", run_id)
        self._ready()
        found = self._versions(name, run_id)
        if not found:
            return None
        oldest = min(found, key=lambda v: int(v.version))
        return None if oldest.description is None else str(oldest.description)

    def set_alias(self, run_id: str, identifier: str, alias: str) -> str:
        """Point the registry ``alias`` of ``<prefix>-<identifier>`` at the run's model and
        return the model version (:meth:`register_version`; idempotent)."""
        from mlflow.exceptions import MlflowException

        name = self.registered_model_name(identifier)
        version = self.register_version(run_id, identifier)
        with _mlflow_call():
            try:
                self.client.set_registered_model_alias(name, alias, version)
            except MlflowException:
                # Another writer created the alias row at the same moment (a unique constraint
                # in the store); setting an alias is idempotent, so set it over theirs. An
                # outage fails again here and propagates.
                self.client.set_registered_model_alias(name, alias, version)
            # After the alias, never before: a reader that finds the alias differing from
            # this tag knows someone else moved it (flts.promotion.registry). Concurrent
            # writers race on the tag row as on the alias row: set it again over theirs.
            # The version last: equal to the alias's version, it says the run tag above was
            # written with it, so a registry sweep can skip the model without reading the
            # alias's run (:meth:`alias_states`).
            for key, value in ((alias_tag(alias), run_id), (alias_version_tag(alias), version)):
                try:
                    self.client.set_registered_model_tag(name, key, value)
                except MlflowException:
                    self.client.set_registered_model_tag(name, key, value)
        log.info("registry %s: alias %s -> version %s (run %s)", name, alias, version, run_id)
        return version

    def alias_written(self, identifier: str, alias: str) -> str | None:
        """The run FLTS itself last pointed ``alias`` at (the tag :meth:`set_alias` writes
        after the alias; ``None`` when it never did)."""
        from mlflow.exceptions import MlflowException

        self._ready()
        try:
            with _mlflow_call():
                model = self.client.get_registered_model(self.registered_model_name(identifier))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        value = dict(model.tags or {}).get(alias_tag(alias))
        return None if value is None else str(value)

    def log_evaluation(
        self,
        run_id: str,
        metrics: dict[str, float],
        *,
        timestamp: datetime,
        figure: Any | None = None,
        figure_path: str = "evaluation/forecast_vs_actual.png",
        figure_dpi: int | None = None,
    ) -> None:
        """Log the evaluator's test figures onto a candidate's run (and a matplotlib
        ``figure``). Safe to repeat: the timestamp is the decision's and the figure's path
        is fixed, so a retried or second evaluator writes the same points and file again."""
        from mlflow.entities import Metric

        stamp = int(timestamp.timestamp() * 1000)
        points = [
            Metric(key, float(value), stamp, 0)
            for key, value in sorted(metrics.items())
            if math.isfinite(value)
        ]
        self._ready()
        with _mlflow_call():
            for start in range(0, len(points), _SEARCH_PAGE):
                self.client.log_batch(run_id, metrics=points[start : start + _SEARCH_PAGE])
            if figure is not None:
                save = None if figure_dpi is None else {"dpi": figure_dpi}
                self.client.log_figure(run_id, figure, figure_path, save_kwargs=save)

    def registered_identifiers(self) -> list[str]:
        """The identifiers with a registered model under our prefix (``<prefix>-<id>``)."""
        return sorted(identifier for identifier, _model in self._registered_models())

    def alias_states(self, alias: str) -> dict[str, AliasState]:
        """Each identifier with a registered model under our prefix, with where ``alias``
        points and where FLTS last pointed it: one paged listing for the whole registry, so
        a sweep over a fleet reads per model only the ones someone may have changed."""
        states: dict[str, AliasState] = {}
        for identifier, model in self._registered_models():
            version = dict(getattr(model, "aliases", None) or {}).get(alias)
            written = dict(model.tags or {}).get(alias_version_tag(alias))
            states[identifier] = AliasState(
                version=None if version is None else str(version),
                written_version=None if written is None else str(written),
            )
        return states

    def _registered_models(self) -> list[tuple[str, Any]]:
        """``(identifier, RegisteredModel)`` of every registered model under our prefix."""
        prefix = f"{self.settings.tracking.registry_prefix}-"
        self._ready()
        models: list[tuple[str, Any]] = []
        token: str | None = None
        with _mlflow_call():
            while True:
                page = self.client.search_registered_models(
                    filter_string=f"name LIKE '{_filter_value('prefix', prefix)}%'",
                    max_results=_SEARCH_PAGE,
                    page_token=token,
                )
                models.extend(
                    (str(m.name)[len(prefix) :], m) for m in page if str(m.name).startswith(prefix)
                )
                token = page.token
                if not token:
                    break
        return models

    def alias_run_id(self, identifier: str, alias: str) -> str | None:
        """The run behind the registry ``alias`` of the identifier (``None`` when unset)."""
        from mlflow.exceptions import MlflowException

        self._ready()
        try:
            with _mlflow_call():
                version = self.client.get_model_version_by_alias(
                    self.registered_model_name(identifier), alias
                )
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return None if version.run_id is None else str(version.run_id)
