"""Settings: sections with descriptions, the flat ``FLTS_*`` names kept, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from flts.settings import FLAT_NAMES, Settings


def test_sectioned_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    monkeypatch.setenv("FLTS_BUS__URL", "memory://sectioned")
    monkeypatch.setenv("FLTS_TRAINING__MODEL_TYPE", "ridge")
    settings = Settings()
    assert settings.bus.url == "memory://sectioned"
    assert settings.training.model_type == "RIDGE"
    assert settings.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_flat_environment_names_keep_working(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    monkeypatch.setenv("FLTS_BUS_URL", "memory://flat")
    monkeypatch.setenv("FLTS_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("FLTS_MODEL_TYPE", "lstm")
    monkeypatch.setenv("FLTS_METRICS_PORT", "9100")
    monkeypatch.setenv("FLTS_S3_REGION", "eu-west-1")
    settings = Settings()
    assert settings.bus.url == "memory://flat"
    assert settings.tracking.uri == "http://127.0.0.1:5000"
    assert settings.training.model_type == "LSTM"
    assert settings.worker.metrics_port == 9100
    assert settings.storage.s3_region == "eu-west-1"


def test_sectioned_name_wins_over_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLTS_BUS_URL", "memory://flat")
    monkeypatch.setenv("FLTS_BUS__URL", "memory://sectioned")
    assert Settings().bus.url == "memory://sectioned"


def test_flat_keyword_arguments(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, storage_url="memory://kw", registry_prefix="p")
    assert settings.storage.url == "memory://kw"
    assert settings.tracking.registry_prefix == "p"


def test_every_flat_name_points_at_a_real_field() -> None:
    for section, field in FLAT_NAMES.values():
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        assert field in model.model_fields


def test_every_section_field_is_described() -> None:
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if name in ("recipe", "feature_spec") or not isinstance(section, type):
            continue
        if issubclass(section, BaseModel):
            assert section.__doc__, name
            undocumented = [f for f, i in section.model_fields.items() if not i.description]
            assert undocumented == [], name


def test_unknown_model_type_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLTS_MODEL_TYPE", "LSMT")
    with pytest.raises(ValidationError, match="FLTS_MODEL_TYPE='LSMT' is not a model type"):
        Settings()


def test_half_s3_credentials_are_refused() -> None:
    with pytest.raises(ValidationError, match="together"):
        Settings(storage_url="s3://b", s3_access_key_id="only-the-key")


def test_redacted_masks_secrets_and_url_passwords(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        bus_url="kafka://user:hunter2@broker:9092",
        storage_url="s3://b/p",
        s3_access_key_id="key",
        s3_secret_access_key="s3cret",
    )
    shown = str(settings.redacted())
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert settings.redacted()["bus"]["url"] == "kafka://user:****@broker:9092"
