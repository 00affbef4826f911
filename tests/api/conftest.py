"""Fixtures for the inference API: real saved models (RIDGE, PERSISTENCE) served through the
injectable model source, a real promotion store on a memory:// object store, and a memory://
bus, so the app runs exactly as in production minus MLflow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flts.api import PromotionModelSource, create_app
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import Forecaster, model_class
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext

from .support import Harness, LiveServer, Runs, make_settings


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """RIDGE and PERSISTENCE trained once on synthetic data, saved like a tracked run, plus a
    broken directory (no manifest) under run id ``broken``."""
    spec = FeatureSpec()
    full = synthetic_traffic(1_200, seed=2)
    train = validate_frame(full.reset_index(drop=True), spec)
    prepared = prepare(train, spec=spec)
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for run_id, model_type in (("run-ridge", "RIDGE"), ("run-persistence", "PERSISTENCE")):
        cls = model_class(model_type)
        model = cls(spec, prepared.input_scaler, prepared.target_scaler)
        model.fit(prepared.train, prepared.validation)
        model.save(root / run_id)
        dirs[run_id] = root / run_id
    (root / "broken").mkdir()
    dirs["broken"] = root / "broken"
    return dirs


@pytest.fixture
def runs(saved_models: dict[str, Path]) -> Runs:
    return Runs(dict(saved_models))


@pytest.fixture
def harness_factory(tmp_path: Path, runs: Runs) -> Iterator[Callable[..., Harness]]:
    """Build and start an app; ``follow_bus``, the run loader (default ``runs.load``) and
    serving settings are per test."""
    opened: list[tuple[LiveServer, ServiceContext]] = []

    def build(
        *,
        follow_bus: bool = False,
        load: Callable[[str], Forecaster] | None = None,
        **serving: Any,
    ) -> Harness:
        context = ServiceContext(make_settings(tmp_path, **serving))
        promotions = PromotionStore(context.store, run_exists=runs.exists)
        source = PromotionModelSource(promotions, load or runs.load)
        app = create_app(context, replica_id="test", follow_bus=follow_bus, source=source)
        server = LiveServer(app)
        client = server.__enter__()
        opened.append((server, context))
        return Harness(client, app, context, promotions, runs)

    yield build
    for server, context in reversed(opened):
        server.__exit__(None, None, None)
        context.close()


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
