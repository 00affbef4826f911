"""Secrets masked wherever they appear: ``flts config show``, settings and configuration
errors (a malformed URL included), HTTP error bodies and log lines, all through
:func:`flts.redaction.redact`."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.bus import open_bus
from flts.cli import app as cli
from flts.cli._common import load_settings
from flts.exceptions import ConfigurationError
from flts.logs import JsonFormatter
from flts.redaction import redact
from flts.settings import Settings

SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka://u:pw@h:9092", "kafka://u:****@h:9092"),
        ("kafka://h:9092?sasl.password=pw&acks=all", "kafka://h:9092?sasl.password=****&acks=all"),
        (
            "kafka://h:1?sasl.oauthbearer.client.secret=x&sasl.username=bob",
            "kafka://h:1?sasl.oauthbearer.client.secret=****&sasl.username=bob",
        ),
        ("postgresql://mlflow:p@ss/w@db:5432/mlflow", "postgresql://mlflow:****@db:5432/mlflow"),
        ("error at 'http://u:pw@h/x?token=t' now", "error at 'http://u:****@h/x?token=****' now"),
        ("kafka//u:pw@h:9092?sasl.password=x", "kafka//u:****@h:9092?sasl.password=****"),
        ("s3://bucket/prefix?versioning=true", "s3://bucket/prefix?versioning=true"),
        ("sqlite:///home/.flts/bus.db", "sqlite:///home/.flts/bus.db"),
        ("mail bob@example.com about x=1", "mail bob@example.com about x=1"),
        ("kafka://u@h:9092", "kafka://u@h:9092"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_config_show_masks_bus_url_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    monkeypatch.setenv(
        "FLTS_BUS_URL", f"kafka://user:{SECRET}@b:9092?sasl.password={SECRET}&acks=all"
    )
    monkeypatch.setenv("FLTS_TRACKING_URI", f"http://mlflow:{SECRET}@mlflow:5000")
    monkeypatch.setenv("FLTS_S3_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("FLTS_S3_SECRET_ACCESS_KEY", SECRET)
    table = CliRunner().invoke(cli, ["config", "show"])
    assert table.exit_code == 0, table.output
    assert SECRET not in table.output
    assert "FLTS_BUS__URL" in table.output
    shown = CliRunner().invoke(cli, ["config", "show", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert SECRET not in shown.output
    document = json.loads(shown.stdout)
    assert document["bus"]["url"] == "kafka://user:****@b:9092?sasl.password=****&acks=all"
    assert document["tracking"]["uri"] == "http://mlflow:****@mlflow:5000"
    assert document["security"]["keys_file"] is None


def test_a_malformed_bus_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLTS_BUS_URL", f"kafka//user:{SECRET}@b:9092?sasl.password={SECRET}")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "bus.url" in str(caught.value)
    assert SECRET not in str(caught.value)
    # Also when a ValidationError escapes on its own (no input echoed):
    with pytest.raises(Exception) as raw:  # noqa: PT011 - pydantic's ValidationError
        Settings()
    assert SECRET not in str(raw.value)
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 1
    assert SECRET not in result.output


def test_backend_url_errors_do_not_echo_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_bus(f"kafka://user:{SECRET}@b:notaport?sasl.password={SECRET}")
    assert "kafka://user:****@b:notaport" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError) as missing:
        open_bus(f"user:{SECRET}@b:9092")
    assert SECRET not in str(missing.value)


def test_log_lines_are_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("flts.test.masking")
    logger.addHandler(handler)
    try:
        url = f"kafka://b:9092?sasl.password={SECRET}"
        logger.error("cannot reach %s", url)
        try:
            raise RuntimeError(f"connect to postgresql://u:{SECRET}@db/x failed")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "cannot reach kafka://b:9092?sasl.password=****"
    assert "postgresql://u:****@db/x" in lines[1]["error"]
    assert SECRET not in stream.getvalue()


def test_dead_letter_errors_are_masked_in_flts_dlq(tmp_path: Path) -> None:
    from contract.bus_suite import FAST, training_event
    from flts.cli.dlq import app as dlq
    from flts.events import Event

    url = f"sqlite:///{tmp_path / 'bus.db'}?poll_interval=0.01"

    def handler(event: Event) -> None:
        raise RuntimeError(f"cannot reach postgresql://u:{SECRET}@db/x")

    with open_bus(url) as bus:
        bus.publish("jobs", training_event(1))
        bus.consume("jobs", "workers", handler, max_messages=1, max_idle=10, retry=FAST)
    listed = CliRunner().invoke(dlq, ["list", "--topic", "jobs", "-o", "json", "--bus-url", url])
    assert listed.exit_code == 0, listed.output
    assert SECRET not in listed.output
    assert "postgresql://u:****@db/x" in listed.output
