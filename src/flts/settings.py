"""Configuration from the environment (``FLTS_`` prefix) with pydantic-settings.

Backends are chosen by URL, all under one home directory by default::

    FLTS_HOME=.flts                     everything embedded lives here
    FLTS_BUS_URL=sqlite:///.flts/bus.db     (memory://, sqlite:///..., kafka://...)
    FLTS_STORAGE_URL=file:///abs/.flts/store (memory://..., file://..., s3://bucket/prefix)
    FLTS_TRACKING_URI=sqlite:///.flts/mlflow.db (sqlite:///..., http://mlflow:5000)

An ``s3://`` store takes its endpoint, keys and region from ``FLTS_S3_ENDPOINT_URL``,
``FLTS_S3_ACCESS_KEY_ID``, ``FLTS_S3_SECRET_ACCESS_KEY`` and ``FLTS_S3_REGION`` when set, else
from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) that botocore reads itself; see
:mod:`flts.storage`. Against an MLflow server started with ``--serve-artifacts`` the services
need no S3 settings for tracking at all: artifacts travel through the server.

Per-concern sections use a double underscore: ``FLTS_EVALUATION__DEADLINE_SECONDS=300``,
``FLTS_SERVING__MAX_IN_FLIGHT=64``. Settings are built when a command starts (never at import
time), so tests and services can pass their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flts.data.spec import FeatureSpec, Recipe
from flts.models.registry import MODEL_TYPES

#: Model types the pipeline trains when nothing else is configured.
DEFAULT_MODEL_TYPES = ("PERSISTENCE", "RIDGE", "LSTM", "GRU", "PROPHET")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationSettings(_Section):
    """How the evaluator waits for candidates and decides promotions."""

    #: Model types the evaluator waits for before scoring a config hash.
    expected_models: tuple[str, ...] = DEFAULT_MODEL_TYPES
    #: After this long without every expected model, score whatever has reported.
    deadline_seconds: float = Field(default=900.0, gt=0)
    #: A candidate must beat persistence by this relative margin...
    baseline_margin: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: ...and the current champion (re-scored on the same test data) by this one.
    champion_margin: float = Field(default=0.0, ge=0.0, lt=1.0)

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

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: Requests processed at once before answering 429.
    max_in_flight: int = Field(default=64, ge=1)
    #: Seconds before a forecast answers 504.
    request_timeout: float = Field(default=10.0, gt=0)
    #: How often each replica re-reads the promotion pointer (a fallback to bus events).
    pointer_poll_seconds: float = Field(default=2.0, gt=0)
    #: Longest history accepted per forecast request, in rows.
    max_history_rows: int = Field(default=10_000, ge=1)


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    #: Largest accepted upload, in bytes (413 above it).
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1)


class Settings(BaseSettings):
    """Everything an FLTS process needs; ``FLTS_*`` environment variables override."""

    model_config = SettingsConfigDict(
        env_prefix="FLTS_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    home: Path = Path(".flts")
    bus_url: str = ""
    storage_url: str = ""
    tracking_uri: str = ""
    #: The model type a trainer process trains (``flts worker train --model`` overrides).
    model_type: str | None = None
    #: Port of a worker's health and metrics endpoint (``/healthz``, ``/readyz``,
    #: ``/metrics``); unset: no endpoint.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: Its bind address (``0.0.0.0`` in a container so Prometheus can reach it).
    metrics_host: str = "127.0.0.1"
    #: Registered-model name prefix in the MLflow registry (one registered model per
    #: identifier: ``<prefix>-<identifier>``).
    registry_prefix: str = "flts"
    #: S3 settings for an ``s3://`` store; each one unset falls back to the standard AWS
    #: variable (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
    #: ``AWS_DEFAULT_REGION``) through botocore, so AWS proper needs none of them.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    #: e.g. ``http://minio:9000`` or ``http://127.0.0.1:8333`` (SeaweedFS).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    recipe: Recipe = Recipe()
    feature_spec: FeatureSpec = FeatureSpec()
    evaluation: EvaluationSettings = EvaluationSettings()
    serving: ServingSettings = ServingSettings()
    gateway: GatewaySettings = GatewaySettings()

    @model_validator(mode="after")
    def _default_urls_under_home(self) -> Settings:
        home = self.home.expanduser()
        # Frozen model: fill derived defaults through object.__setattr__ once, at build time.
        if not self.bus_url:
            object.__setattr__(self, "bus_url", f"sqlite:///{home / 'bus.db'}")
        if not self.storage_url:
            object.__setattr__(self, "storage_url", (home / "store").resolve().as_uri())
        if not self.tracking_uri:
            object.__setattr__(self, "tracking_uri", f"sqlite:///{home / 'mlflow.db'}")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            # botocore would fail later with "partial credentials", at the first object.
            raise ValueError(
                "set FLTS_S3_ACCESS_KEY_ID and FLTS_S3_SECRET_ACCESS_KEY together (or neither, "
                "to use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        if self.model_type is not None:
            key = self.model_type.strip().upper()
            if key not in MODEL_TYPES:
                raise ValueError(
                    f"FLTS_MODEL_TYPE={self.model_type!r} is not a model type; "
                    f"choose from {', '.join(MODEL_TYPES)}"
                )
            object.__setattr__(self, "model_type", key)
        return self

    def storage_options(self) -> dict[str, Any]:
        """s3fs options for ``s3://`` stores (empty for other schemes).

        Only the ``FLTS_S3_*`` settings that are set appear here; s3fs leaves everything else
        to botocore, which reads the standard AWS variables, so settings win over them.
        """
        if not self.storage_url.lower().startswith(("s3://", "s3a://")):
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

    def redacted(self) -> dict[str, Any]:
        """The resolved configuration with secrets masked (for ``flts config show``)."""
        document = self.model_dump(mode="json")
        for key, value in list(document.items()):
            if isinstance(getattr(self, key), SecretStr) and value:
                document[key] = "**********"
        for key in ("bus_url", "storage_url", "tracking_uri"):
            document[key] = _mask_url_password(document[key])
        return document


def _mask_url_password(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:****@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{host}"
