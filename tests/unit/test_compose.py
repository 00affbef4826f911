"""deploy/compose.yaml cannot drift from the code: every FLTS command parses with the real CLI,
every FLTS_* variable is a real setting, every trainer has a model type, every file it mounts
exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from flts.cli import app
from flts.models import MODEL_TYPES
from flts.settings import FLAT_NAMES, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _flts_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the FLTS image with its own entrypoint (the ``flts`` command)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "flts" in str(service.get("image", "")) and "entrypoint" not in service
    }


def _parse(args: list[str]) -> Any:
    """Parse ``flts ARGS`` with the real CLI without running it: walk the command groups by
    name, then let the leaf command parse and convert its options (raises on bad usage)."""
    command: Any = typer.main.get_command(app)
    context = command.make_context("flts", [], resilient_parsing=True)
    rest = list(args)
    while hasattr(command, "get_command"):  # a group: the next word names a subcommand
        name, rest = rest[0], rest[1:]
        sub = command.get_command(context, name)
        assert sub is not None, f"unknown command {name!r} in {args}"
        command = sub
        context = sub.make_context(
            name,
            [] if hasattr(sub, "get_command") else rest,
            parent=context,
            resilient_parsing=hasattr(sub, "get_command"),
        )
    return context


def _setting_exists(variable: str) -> bool:
    path = variable.removeprefix("FLTS_").lower().split("__")
    if len(path) == 1 and path[0] in FLAT_NAMES:  # FLTS_BUS_URL and the other kept names
        return True
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_every_flts_command_parses_with_the_cli(compose: dict[str, Any]) -> None:
    services = _flts_services(compose)
    assert {"gateway", "preprocess", "evaluate", "batch-inference"} <= set(services)
    for name, service in services.items():
        try:
            _parse(service["command"])
        except Exception as exc:  # the CLI's usage errors; the message names the problem
            pytest.fail(f"service {name}: `flts {' '.join(service['command'])}`: {exc}")


def test_every_flts_variable_is_a_setting(compose: dict[str, Any]) -> None:
    for name, service in _flts_services(compose).items():
        for variable in service.get("environment", {}):
            if variable.startswith("FLTS_"):
                assert _setting_exists(variable), f"{name}: {variable} is not a setting"


def test_every_trainer_has_a_known_model_type(compose: dict[str, Any]) -> None:
    trainers = {
        name: service
        for name, service in _flts_services(compose).items()
        if service["command"][:2] == ["worker", "train"]
    }
    assert len(trainers) >= 5
    for name, service in trainers.items():
        model = service.get("environment", {}).get("FLTS_MODEL_TYPE")
        assert model in MODEL_TYPES, f"{name} has no valid FLTS_MODEL_TYPE ({model!r})"
    assert {s["environment"]["FLTS_MODEL_TYPE"] for s in trainers.values()} >= {
        "LSTM",
        "GRU",
        "RIDGE",
        "PERSISTENCE",
        "PROPHET",
    }


def test_dependencies_images_and_mounts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown {dependency}"
        image = str(service.get("image", ""))
        assert image, f"{name} has no image"
        assert not image.endswith(":latest"), f"{name}: pin the image ({image!r})"
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_inference_replicas_have_distinct_consumer_groups(compose: dict[str, Any]) -> None:
    replicas = [
        s["command"][s["command"].index("--replica-id") + 1]
        for s in _flts_services(compose).values()
        if s["command"][0] == "serve"
    ]
    assert len(replicas) >= 2
    assert len(set(replicas)) == len(replicas)


def test_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    example = (DEPLOY / ".env.example").read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}" in text
        assert f"{secret}=" in example
    assert "deploy/.env" in (DEPLOY.parent / ".gitignore").read_text()


def test_each_service_gets_only_its_own_secrets(compose: dict[str, Any]) -> None:
    """No env_file hands every secret to every container: each secret is named where it is
    used, and the API keys file reaches only the services that authenticate requests."""
    services = compose["services"]
    holders: dict[str, set[str]] = {}
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: env_file passes every secret"
        text = yaml.safe_dump({k: service.get(k) for k in ("environment", "command")})
        for secret in (
            "AWS_SECRET_ACCESS_KEY",
            "POSTGRES_PASSWORD",
            "GRAFANA_ADMIN_PASSWORD",
            "FLTS_API_KEY",
        ):
            if f"${{{secret}" in text:
                holders.setdefault(secret, set()).add(name)
        for secret in service.get("secrets", []):
            holders.setdefault(f"secret:{secret}", set()).add(name)
    flts = set(_flts_services(compose))
    assert holders["AWS_SECRET_ACCESS_KEY"] == flts | {"minio", "minio-init", "mlflow"}
    assert holders["POSTGRES_PASSWORD"] == {"postgres", "mlflow"}
    assert holders["GRAFANA_ADMIN_PASSWORD"] == {"grafana"}
    assert holders["FLTS_API_KEY"] == {"locust"}
    front = {
        n for n, s in _flts_services(compose).items() if s["command"][0] in ("gateway", "serve")
    }
    assert holders["secret:api-keys"] == front
    for name in front:
        keys_file = services[name]["environment"]["FLTS_SECURITY__KEYS_FILE"]
        assert keys_file == "/run/secrets/api-keys"
    assert "deploy/api-keys.json" in (DEPLOY.parent / ".gitignore").read_text()
