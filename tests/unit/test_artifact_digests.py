"""Artifact digests: the manifest written beside a saved model, and the checks a cache makes
before it trusts a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flts.data import PreparedData
from flts.exceptions import ModelError
from flts.models import load_model, model_class
from flts.models.digests import DIGESTS, evict, verify, write_digests


@pytest.fixture
def saved(tmp_path: Path, prepared: PreparedData) -> tuple[Path, str]:
    model = model_class("RIDGE")(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    model.fit(prepared.train, prepared.validation)
    directory = tmp_path / "model"
    model.save(directory)
    return directory, write_digests(directory)


def test_every_file_is_listed_and_the_directory_verifies(saved: tuple[Path, str]) -> None:
    directory, digest = saved
    files = json.loads((directory / DIGESTS).read_text())["files"]
    assert sorted(files) == sorted(p.name for p in directory.iterdir() if p.name != DIGESTS)
    verify(directory, digest)
    verify(directory, None)  # the files against their own manifest
    load_model(directory)  # the manifest does not disturb loading


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "input_scaler.json").write_text("{}"), "input_scaler.json differs"),
        (lambda d: (d / "feature_spec.json").unlink(), "feature_spec.json missing"),
        (lambda d: (d / DIGESTS).write_text('{"files": {}}'), "expected"),
    ],
)
def test_any_change_fails_verification(saved: tuple[Path, str], damage, message: str) -> None:  # type: ignore[no-untyped-def]
    directory, digest = saved
    damage(directory)
    with pytest.raises(ModelError, match=message):
        verify(directory, digest)


def test_a_model_saved_before_digests_passes_only_when_none_was_recorded(
    saved: tuple[Path, str],
) -> None:
    directory, digest = saved
    (directory / DIGESTS).unlink()
    verify(directory, None)
    with pytest.raises(ModelError, match=f"no {DIGESTS}"):
        verify(directory, digest)


def test_evict_removes_the_directory(saved: tuple[Path, str]) -> None:
    directory, _ = saved
    evict(directory)
    assert not directory.exists()
    assert list(directory.parent.iterdir()) == []
    evict(directory)  # already gone: nothing to do
