"""The CLI's contract with a person and a script: a version, one ``error:`` line and a
non-zero status for every failure (a traceback only with ``--debug``), typos caught by the
enums before any work starts, and JSON on stdout with ``-o json``."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.cli import app


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"flts {version('flts')}"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["worker", "preprocesss"], "preprocesss"),
        (["worker", "train", "--model", "LSTMM"], "LSTMM"),
        (["benchmark", "accuracy", "--data-dir", ".", "--models", "RIDGE,LSTMM"], "LSTMM"),
        (["status", "-o", "yaml"], "yaml"),
        (["--log-level", "loud", "status"], "loud"),
        (["status", "--json"], "--json"),
    ],
)
def test_a_typo_is_one_usage_error_line(argv: list[str], named: str) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    [line] = _error_lines(result.output)
    assert line.startswith("error: ")
    assert named in line


def test_unknown_model_type_names_the_choices() -> None:
    result = CliRunner().invoke(app, ["up", "--models", "ridge,nope"])
    assert result.exit_code == 2
    assert "PERSISTENCE" in result.output
    assert "NOPE" in result.output


def test_an_unexpected_error_is_one_line_and_its_traceback_only_with_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flts.cli import config

    def broken() -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(config, "load_settings", broken)
    plain = CliRunner().invoke(app, ["config", "show"])
    assert plain.exit_code == 1
    [line] = _error_lines(plain.output)
    assert line.startswith("error: RuntimeError: the disk is on fire")
    debug = CliRunner().invoke(app, ["--debug", "config", "show"])
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.output
    assert "the disk is on fire" in debug.output


def test_data_validate_prints_json_with_o_json(tmp_path: Path) -> None:
    from flts.data.synthetic import synthetic_traffic

    csv = tmp_path / "good.csv"
    synthetic_traffic(40).to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(csv), "-o", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["rows"] == 40
    assert {c["column"] for c in document["columns"]} >= {"down", "up"}


def test_log_level_is_validated_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLTS_LOG_LEVEL", "chatty")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "chatty" in result.output


@pytest.mark.parametrize("argv", [[], ["dlq"]])
def test_a_group_without_its_command_shows_its_help(argv: list[str]) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert "Usage:" in result.output
    assert "Commands:" in result.output
