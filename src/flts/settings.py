"""Configuration from the environment (``FLTS_`` prefix) with pydantic-settings.

One section per concern, read from ``FLTS_<SECTION>__<FIELD>`` (``FLTS_EVALUATION__
DEADLINE_SECONDS=300``, ``FLTS_SERVING__MAX_IN_FLIGHT=64``). Backends are chosen by URL, all
under one home directory by default; their flat names (:data:`FLAT_NAMES`) keep working::

    FLTS_HOME=.flts                     everything embedded lives here
    FLTS_BUS_URL=sqlite:///.flts/bus.db     (= FLTS_BUS__URL; memory://, sqlite:///, kafka://)
    FLTS_STORAGE_URL=file:///abs/.flts/store (= FLTS_STORAGE__URL; memory://, file://, s3://)
    FLTS_TRACKING_URI=sqlite:///.flts/mlflow.db (= FLTS_TRACKING__URI; or http://mlflow:5000)

An ``s3://`` store takes its endpoint, keys and region from ``FLTS_S3_ENDPOINT_URL``,
``FLTS_S3_ACCESS_KEY_ID``, ``FLTS_S3_SECRET_ACCESS_KEY`` and ``FLTS_S3_REGION`` when set, else
from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) that botocore reads itself; see
:mod:`flts.storage`. Against an MLflow server started with ``--serve-artifacts`` the services
need no S3 settings for tracking at all: artifacts travel through the server.

Settings are built when a command starts (never at import time), so tests and services can
pass their own. ``flts config show`` prints every field with secrets masked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flts.data.spec import FeatureSpec, Recipe
from flts.exceptions import ConfigurationError, DataValidationError
from flts.logs import LogLevel
from flts.models.intervals import check_levels
from flts.models.registry import MODEL_TYPES
from flts.redaction import MASK, redact
from flts.shards import Shard

#: Model types the pipeline trains when nothing else is configured.
DEFAULT_MODEL_TYPES = ("PERSISTENCE", "RIDGE", "LSTM", "GRU", "PROPHET")


class _Section(BaseModel):
    # hide_input_in_errors: a rejected value (a URL with its password) never appears in an
    # error's text, wherever that error ends up (docs/security.md).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class EvaluationSettings(_Section):
    """How the evaluator waits for candidates and decides promotions."""

    expected_models: tuple[str, ...] = Field(
        default=DEFAULT_MODEL_TYPES,
        description="Model types the evaluator waits for before scoring a config hash.",
    )
    deadline_seconds: float = Field(
        default=900.0,
        gt=0,
        description="After this long without every expected model, score whatever reported.",
    )
    baseline_margin: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Relative margin by which a candidate must beat persistence.",
    )
    champion_margin: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Relative margin by which it must beat the champion, re-scored alike.",
    )
    interval_levels: tuple[float, ...] = Field(
        default=(80.0, 95.0),
        description="Interval levels (%) every candidate is scored at: coverage, width, wQL.",
    )
    log_figures: bool = Field(
        default=True,
        description="Log a forecast-vs-actual figure onto each candidate's MLflow run.",
    )
    registry_sync_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description=(
            "How often the evaluator checks whether the champion alias was moved in the "
            "MLflow registry (and promotes or refuses the move); 0 turns it off."
        ),
    )

    @field_validator("interval_levels")
    @classmethod
    def _levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        try:
            return check_levels(value)
        except DataValidationError as exc:
            raise ValueError("; ".join(exc.problems)) from exc

    @field_validator("expected_models")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(v.strip().upper() for v in value)
        unknown = [v for v in upper if v not in MODEL_TYPES]
        if unknown:
            raise ValueError(f"unknown model types {unknown}; choose from {list(MODEL_TYPES)}")
        return upper


class ServingSettings(_Section):
    """The inference API."""

    host: str = Field(default="127.0.0.1", description="Bind address of the inference API.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the inference API.")
    max_in_flight: int = Field(
        default=64, ge=1, description="Requests processed at once before answering 429."
    )
    request_timeout: float = Field(
        default=10.0, gt=0, description="Seconds before a forecast answers 504."
    )
    pointer_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a replica re-reads the promotion pointer (beside bus events).",
    )
    max_history_rows: int = Field(
        default=10_000, ge=1, description="Longest history accepted per forecast, in rows."
    )
    max_resident_bytes: int | None = Field(
        default=2**30,
        ge=0,
        description="Champions kept in memory, by the bytes of their saved model directories; "
        "past it the least recently used is evicted and loaded again on demand (0 or null: "
        "unbounded, every champion is loaded).",
    )
    cold_load_wait_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a request for a champion that is not in memory waits for its "
        "load before it is answered 503 with Retry-After (the load goes on).",
    )
    shard: str | None = Field(
        default=None,
        description="Identifiers this replica serves: 'k/n' (shard k of n by sha1 of the "
        "identifier) or a comma-separated list; others are answered 421. Unset: all.",
    )
    full_listing_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often a replica lists every promotion pointer to repair a lost "
        "update of the promotion index (also whenever the index is missing or damaged; "
        "0: only then).",
    )

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        try:
            Shard.parse(value)  # refuse a malformed shard at start-up, with its reason
        except ConfigurationError as exc:
            raise ValueError("; ".join(exc.problems)) from exc
        return value


class GatewaySettings(_Section):
    """The upload API."""

    host: str = Field(default="127.0.0.1", description="Bind address of the upload API.")
    port: int = Field(default=8001, ge=1, le=65535, description="Port of the upload API.")
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest accepted upload in bytes (413)."
    )
    max_concurrent_uploads: int = Field(
        default=2,
        ge=1,
        description="Uploads read, validated and stored at once; memory grows with it (about "
        "120 MiB per maximum-size upload on top of a 170 MiB process).",
    )
    max_upload_files: int = Field(
        default=64,
        ge=2,
        le=10_000,
        description="File parts one upload may carry: a bulk upload of several files sends a "
        "train (and maybe a test) file per station; a larger fleet is one CSV with an "
        "identifier column, or goes through flts pipeline from disk.",
    )
    upload_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long an upload waits for a free slot before it is refused with 503 "
        "and Retry-After.",
    )
    reconcile_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How often the gateway announces stored datasets whose dataset-uploaded event "
            "was not published yet (also once at start)."
        ),
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After of a 503 while the store or the bus is down."
    )
    ui_fleet_cache_seconds: float = Field(
        default=3.0,
        ge=0,
        description="How long the dashboard reuses an assembled fleet for paging, sorting and "
        "filtering (0: every request reads the store).",
    )


class RetentionSettings(_Section):
    """What ``flts gc`` deletes (see :mod:`flts.retention`). Nothing a current champion or
    its promotion history needs is ever deleted, whatever these say."""

    bus_days: float = Field(
        default=7.0,
        gt=0,
        description="SQLite bus: messages older than this that every group has consumed "
        "(Kafka topics use the broker's retention.ms instead).",
    )
    dead_letters: bool = Field(
        default=False,
        description="Delete dead letters (dlq.* topics) older than bus_days too; by default "
        "they stay until an operator has looked at them.",
    )
    dataset_days: float = Field(
        default=30.0,
        gt=0,
        description="Raw uploads older than this that no champion or promotion-history entry "
        "was trained on.",
    )
    processed_days: float = Field(
        default=30.0,
        gt=0,
        description="processed/<config_hash>/ older than this that no promotion-history entry "
        "and no pending evaluation uses.",
    )
    log_days: float = Field(
        default=90.0,
        gt=0,
        description="Batch-inference logs older than this (the newest per identifier stays).",
    )
    model_cache_keep: int = Field(
        default=3,
        ge=0,
        description="Local model cache: newest saved models kept besides the current "
        "champions and the runs they replaced.",
    )


class LiveSettings(_Section):
    """Live observations: rows that arrive one at a time after a station's first upload."""

    late_window_minutes: float = Field(
        default=24 * 60,
        gt=0,
        description="How far behind a station's newest stored row a late row may still arrive.",
    )
    max_rows_per_request: int = Field(
        default=10_000,
        ge=1,
        description="Most observation rows in one request or bus event (413 past it).",
    )
    compact_after_parts: int = Field(
        default=32,
        ge=2,
        description="Append-only parts of one station-day that trigger its compaction.",
    )
    ledger_sample: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of served forecasts recorded in the forecast ledger (0: none).",
    )
    ledger_flush_seconds: float = Field(
        default=5.0, gt=0, description="How often a replica writes its recorded forecasts."
    )
    ledger_max_pending: int = Field(
        default=100_000,
        ge=1,
        description="Forecasts a replica keeps while the store is down (oldest dropped past it).",
    )
    monitor_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the monitor joins forecasts with actuals."
    )
    monitor_window: int = Field(
        default=720,
        ge=1,
        description="Scored forecasts per identifier, run and step behind each live figure.",
    )
    monitor_shard: str | None = Field(
        default=None,
        description="Identifiers this monitor scores and triggers for: 'k/n' (shard k of n by "
        "sha1 of the identifier) or a comma-separated list; its state under "
        "monitor/shards/<shard>/. Unset: all, under monitor/.",
    )
    drift_enabled: bool = Field(
        default=True,
        description="Let the monitor's drift detector ask for a retraining (flts.live.drift).",
    )
    drift_delta: float = Field(
        default=0.5,
        ge=0,
        description="Drift detector: live error may exceed the champion's evaluation error "
        "by this share before it counts against it (0.5: up to 1.5x is tolerated).",
    )
    drift_threshold: float = Field(
        default=30.0,
        gt=0,
        description="Drift detector: alarm once the accumulated excess (in units of the "
        "evaluation error) passes this; higher is slower and fewer false alarms.",
    )
    drift_min_samples: int = Field(
        default=60,
        ge=1,
        description="Drift detector: scored forecasts of a champion before it may alarm.",
    )
    drift_clip: float = Field(
        default=5.0,
        gt=1,
        description="Drift detector: one forecast's error counts at most this many times the "
        "evaluation error, so a single burst cannot alarm alone.",
    )
    drift_cooldown_minutes: float = Field(
        default=6 * 60,
        gt=0,
        description="After a drift trigger, how long the detector of that champion stays "
        "silent (then it starts again from zero).",
    )
    retrain_every_hours: float | None = Field(
        default=None,
        gt=0,
        description="Ask for a retraining of every monitored identifier this often (off).",
    )
    retrain_every_rows: int | None = Field(
        default=None,
        ge=1,
        description="Ask for a retraining once this many new observation rows are stored "
        "since the last scheduled one (off).",
    )
    retrain_window_days: float = Field(
        default=14.0,
        gt=0,
        description="A retraining trains on the observations of this trailing window (behind "
        "the newest stored row).",
    )
    retrain_min_rows: int = Field(
        default=720,
        ge=1,
        description="Rows a retraining set has at least: a shorter window is filled up with "
        "the newest earlier rows of the champion's dataset.",
    )

    @field_validator("monitor_shard")
    @classmethod
    def _monitor_shard(cls, value: str | None) -> str | None:
        try:
            Shard.parse(value, "live.monitor_shard")  # refuse a malformed shard at start-up
        except ConfigurationError as exc:
            raise ValueError("; ".join(exc.problems)) from exc
        return value


class BusSettings(_Section):
    """The event bus, chosen by URL scheme (see :mod:`flts.bus.registry`)."""

    url: str = Field(
        default="",
        description=(
            "memory://, sqlite:///path or kafka://host:port[?options]; default <home>/bus.db. "
            "May hold credentials (sasl.password=...): keep it in a Secret."
        ),
    )
    outage_budget_seconds: float = Field(
        default=900.0,
        ge=0,
        description=(
            "How long a consumer waits out an unreachable object store, tracking server or "
            "broker (one outage) before it gives up and exits; nothing is dead-lettered for it."
        ),
    )
    outage_base_delay_seconds: float = Field(
        default=1.0, gt=0, description="First backoff step while waiting out an outage."
    )
    outage_max_delay_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Cap of the doubling backoff step during an outage (half of it is jitter).",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> BusSettings:
        if self.outage_max_delay_seconds < self.outage_base_delay_seconds:
            raise ValueError("outage_max_delay_seconds must be >= outage_base_delay_seconds")
        return self

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if value and (not sep or not scheme.isalnum()):
            # The message quotes the URL masked: it may carry a password.
            raise ValueError(f"bus URL {redact(value)!r} must look like scheme://...")
        return value


class StorageSettings(_Section):
    """The object store, any fsspec URL; S3 credentials for ``s3://`` stores.

    Each S3 setting left unset falls back to the standard AWS variable
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
    ``AWS_DEFAULT_REGION``) through botocore, so AWS proper needs none of them.
    """

    url: str = Field(
        default="", description="memory://, file://, s3://bucket/prefix; default <home>/store."
    )
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_endpoint_url: str | None = Field(
        default=None, description="e.g. http://minio:9000 or http://127.0.0.1:8333."
    )
    s3_region: str | None = Field(default=None, description="S3 region name.")

    @model_validator(mode="after")
    def _keys_together(self) -> StorageSettings:
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            # botocore would fail later with "partial credentials", at the first object.
            raise ValueError(
                "set FLTS_S3_ACCESS_KEY_ID and FLTS_S3_SECRET_ACCESS_KEY together (or neither, "
                "to use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        return self

    def options(self) -> dict[str, Any]:
        """s3fs options for ``s3://`` stores (empty for other schemes).

        Only the settings that are set appear here; s3fs leaves everything else to botocore,
        which reads the standard AWS variables, so settings win over them.
        """
        if not self.url.lower().startswith(("s3://", "s3a://")):
            return {}
        options: dict[str, Any] = {}
        if self.s3_endpoint_url:
            options["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key_id:
            options["key"] = self.s3_access_key_id
        if self.s3_secret_access_key:
            options["secret"] = self.s3_secret_access_key.get_secret_value()
        if self.s3_region:
            options["client_kwargs"] = {"region_name": self.s3_region}
        return options


class TrackingSettings(_Section):
    """MLflow tracking and model registry."""

    uri: str = Field(
        default="", description="sqlite:///path or http://mlflow:5000; default <home>/mlflow.db."
    )
    registry_prefix: str = Field(
        default="flts",
        description="Experiment name and registered-model prefix (<prefix>-<identifier>).",
    )


class TrainingSettings(_Section):
    """A trainer process."""

    model_type: str | None = Field(
        default=None, description="The model type this trainer trains (--model overrides)."
    )
    group_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description=(
            "GLOBAL trainer: how long after a group's first member is ready to wait for the "
            "others before training with the members that are ready; a member that arrives "
            "later is reported FAILED. Keep it below evaluation.deadline_seconds, or the "
            "evaluator decides before the GLOBAL candidates exist."
        ),
    )

    @field_validator("model_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip().upper()
        if key not in MODEL_TYPES:
            raise ValueError(
                f"FLTS_MODEL_TYPE={value!r} is not a model type; "
                f"choose from {', '.join(MODEL_TYPES)}"
            )
        return key


class WorkerSettings(_Section):
    """The health and metrics endpoint of a worker (``/healthz``, ``/readyz``, ``/metrics``)."""

    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Unset: the worker serves no endpoint."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="0.0.0.0 in a container so Prometheus can reach it."
    )


class SecuritySettings(_Section):
    """API authentication of the gateway and the inference API (docs/security.md)."""

    keys_file: Path | None = Field(
        default=None,
        description=(
            "JSON file of hashed API keys (flts keys create); mount it from a Kubernetes "
            "Secret. Unset: data routes are open and the admin API refuses every call; "
            "flts up always sets one."
        ),
    )
    metrics_require_key: bool = Field(
        default=False,
        description=(
            "Ask any valid API key on /metrics (default: open to the scraper, which the "
            "chart's NetworkPolicy limits)."
        ),
    )
    reload_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often a service checks the keys file for changes (key rotation).",
    )


#: Flat names kept from before the sections existed (``FLTS_BUS_URL`` and friends, used by
#: the chart, compose files and people's shells): flat name -> (section, field).
FLAT_NAMES: dict[str, tuple[str, str]] = {
    "bus_url": ("bus", "url"),
    "storage_url": ("storage", "url"),
    "s3_access_key_id": ("storage", "s3_access_key_id"),
    "s3_secret_access_key": ("storage", "s3_secret_access_key"),
    "s3_endpoint_url": ("storage", "s3_endpoint_url"),
    "s3_region": ("storage", "s3_region"),
    "tracking_uri": ("tracking", "uri"),
    "registry_prefix": ("tracking", "registry_prefix"),
    "model_type": ("training", "model_type"),
    "metrics_port": ("worker", "metrics_port"),
    "metrics_host": ("worker", "metrics_host"),
}


class _FlatEnvironment(PydanticBaseSettingsSource):
    """Reads the :data:`FLAT_NAMES` from the environment (``FLTS_BUS_URL``), below the
    sectioned names (``FLTS_BUS__URL``) in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", "")).lower()
        found: dict[str, Any] = {}
        for name, value in os.environ.items():
            flat = name.lower().removeprefix(prefix)
            if name.lower().startswith(prefix) and flat in FLAT_NAMES:
                found[flat] = value
        return found


class Settings(BaseSettings):
    """Everything an FLTS process needs; ``FLTS_*`` environment variables override.

    Sections read ``FLTS_<SECTION>__<FIELD>``; the flat names of :data:`FLAT_NAMES` work too,
    from the environment and as keyword arguments (``Settings(bus_url="memory://")``).
    """

    model_config = SettingsConfigDict(
        env_prefix="FLTS_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    home: Path = Field(default=Path(".flts"), description="Where embedded state lives.")
    log_level: LogLevel | None = Field(
        default=None,
        description="FLTS_LOG_LEVEL (or flts --log-level): debug, info, warning, error or "
        "critical; unset, services log at info and other commands at warning.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: Any) -> Any:
        """``INFO`` like ``info``, as on the command line."""
        return value.lower() if isinstance(value, str) else value

    bus: BusSettings = BusSettings()
    storage: StorageSettings = StorageSettings()
    tracking: TrackingSettings = TrackingSettings()
    training: TrainingSettings = TrainingSettings()
    worker: WorkerSettings = WorkerSettings()
    recipe: Recipe = Recipe()
    feature_spec: FeatureSpec = FeatureSpec()
    evaluation: EvaluationSettings = EvaluationSettings()
    serving: ServingSettings = ServingSettings()
    gateway: GatewaySettings = GatewaySettings()
    live: LiveSettings = LiveSettings()
    retention: RetentionSettings = RetentionSettings()
    security: SecuritySettings = SecuritySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _FlatEnvironment(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        """Move flat names into their sections; a sectioned value given too wins."""
        if not isinstance(data, dict) or not FLAT_NAMES.keys() & data.keys():
            return data
        data = dict(data)
        for flat, (section, field) in FLAT_NAMES.items():
            if flat not in data:
                continue
            value = data.pop(flat)
            current = data.get(section, {})
            if isinstance(current, BaseModel):
                current = current.model_dump()
            if isinstance(current, dict):
                data[section] = {field: value, **current}
        return data

    @model_validator(mode="after")
    def _global_candidates_in_time(self) -> Settings:
        """An evaluator that waits for GLOBAL must wait longer than the GLOBAL trainer waits
        for a group's members, else every group's GLOBAL candidates come too late."""
        if (
            "GLOBAL" in self.evaluation.expected_models
            and self.evaluation.deadline_seconds <= self.training.group_wait_seconds
        ):
            raise ValueError(
                f"evaluation.deadline_seconds ({self.evaluation.deadline_seconds:g}) must exceed "
                f"training.group_wait_seconds ({self.training.group_wait_seconds:g}) when "
                "GLOBAL is an expected model: the group trains only after that wait"
            )
        return self

    @model_validator(mode="after")
    def _default_urls_under_home(self) -> Settings:
        home = self.home.expanduser()
        # Frozen models: fill derived defaults once, at build time.
        if not self.bus.url:
            url = f"sqlite:///{home / 'bus.db'}"
            object.__setattr__(self, "bus", self.bus.model_copy(update={"url": url}))
        if not self.storage.url:
            url = (home / "store").resolve().as_uri()
            object.__setattr__(self, "storage", self.storage.model_copy(update={"url": url}))
        if not self.tracking.uri:
            uri = f"sqlite:///{home / 'mlflow.db'}"
            object.__setattr__(self, "tracking", self.tracking.model_copy(update={"uri": uri}))
        return self

    def redacted(self) -> dict[str, Any]:
        """The resolved configuration with secrets masked (for ``flts config show``): secret
        fields replaced, and every string passed through :func:`flts.redaction.redact` (URL
        passwords, credential query parameters)."""
        document = self.model_dump(mode="json")
        storage = document["storage"]
        if storage["s3_secret_access_key"]:
            storage["s3_secret_access_key"] = MASK
        redacted: dict[str, Any] = _redact_strings(document)
        return redacted


def _redact_strings(node: Any) -> Any:
    if isinstance(node, str):
        return redact(node)
    if isinstance(node, dict):
        return {key: _redact_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_redact_strings(item) for item in node]
    return node
