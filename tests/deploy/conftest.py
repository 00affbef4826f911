"""Render the Helm chart with the real ``helm`` binary (fetched once into build/tools by
:mod:`servers.k8s_tools`, no Docker) and hand tests the parsed objects."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers.k8s_tools import ensure_helm

#: The checkout these tests belong to (tests/deploy -> the repository root).
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "flts"
EXAMPLES = {p.stem: p for p in sorted((CHART / "examples").glob("*.yaml"))}

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm(ROOT)


def helm_template(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "flts", str(CHART), "--namespace", "flts", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """``render("-f", path, "--set", "a=b")`` -> the rendered objects (fails the test on a
    render error)."""

    def run(*args: str) -> list[dict[str, Any]]:
        result = helm_template(helm, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


@pytest.fixture(scope="session")
def renders(render: Render) -> dict[str, list[dict[str, Any]]]:
    """The defaults and every example values file, rendered once per session."""
    out = {"default": render()}
    for name, path in EXAMPLES.items():
        out[name] = render("-f", str(path))
    return out
