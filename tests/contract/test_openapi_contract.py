"""The HTTP contract of both apps, checked by a fuzzer driven by their own OpenAPI documents.

Each app is served for real (uvicorn on loopback, embedded memory:// backends, API keys on) with
a promoted champion, so forecasts and observations can succeed; ``schemathesis run --checks
all`` then sends schema-valid and schema-violating requests to every documented operation and
fails on any answer the document does not describe: an undocumented status or content type, a
body that does not match its schema, a schema-valid request refused, a negative case accepted,
a 5xx, a wrong ``Allow`` header on 405 (docs/clients.md, "HTTP contract").

Bounded by :data:`MAX_EXAMPLES` per operation so both apps take well under two minutes on two
cores. Paths under ``/ui`` (the web pages on the gateway and their read models) are not part
of this contract: :data:`EXCLUDED_PATHS` leaves them out by that one rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.support import LiveServer, make_settings
from flts.api import PromotionModelSource, create_app
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import load_model, model_class
from flts.promotion import Promotion, PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import SecuritySettings

#: Examples per operation and phase: enough to reach every documented status of every route,
#: small enough for ``make test`` (both apps together well under two minutes on two cores).
MAX_EXAMPLES = 25
#: Paths outside this contract, as a regular expression: the gateway's web UI (HTML pages and
#: the JSON read models behind them) is a separate surface with its own tests.
EXCLUDED_PATHS = "^/ui(/|$)"
#: Which statuses answer a schema-valid request whose data breaks a rule JSON Schema cannot
#: state (each reason in the file); nothing else is configured away.
CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN_ID = "run-ridge"
SCOPES = ("forecast", "upload", "admin")


@dataclass
class Served:
    """One app on loopback and the key that passes its auth."""

    url: str
    key: str


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RIDGE model trained on synthetic traffic and saved like a tracked run."""
    spec = FeatureSpec()
    train = validate_frame(synthetic_traffic(1_200, seed=2), spec)
    prepared = prepare(train, spec=spec)
    model = model_class("RIDGE")(spec, prepared.input_scaler, prepared.target_scaler)
    model.fit(prepared.train, prepared.validation)
    path = tmp_path_factory.mktemp("runs") / RUN_ID
    model.save(path)
    return path


def _context(home: Path) -> tuple[ServiceContext, str]:
    """A fresh embedded context behind a keys file, and a key with every scope."""
    keys = home / "keys.json"
    key = create_key(keys, "contract", SCOPES)
    settings = make_settings(home).model_copy(update={"security": SecuritySettings(keys_file=keys)})
    return ServiceContext(settings), key


def _champion(promotions: PromotionStore) -> None:
    promotions.record(
        Promotion(
            run_id=RUN_ID,
            model_type="RIDGE",
            config_hash="abcdef0123456789",
            identifier="global",
            scores={"nrmse": 0.8},
            promoted_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


@pytest.fixture(scope="module")
def inference(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    context, key = _context(tmp_path_factory.mktemp("inference"))
    promotions = PromotionStore(context.store, run_exists=lambda run_id: run_id == RUN_ID)
    _champion(promotions)
    source = PromotionModelSource(promotions, lambda run_id: load_model(model_dir))
    app = create_app(context, replica_id="contract", follow_bus=False, source=source)
    with LiveServer(app) as http:
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the champion did not load"
            time.sleep(0.05)
        yield Served(str(http.base_url), key)
    context.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    context, key = _context(tmp_path_factory.mktemp("gateway"))
    _champion(context.promotions)
    with LiveServer(create_gateway_app(context)) as http:
        yield Served(str(http.base_url), key)
    context.close()


def schemathesis(served: Served, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``schemathesis run --checks all`` against ``served``'s own ``/openapi.json``."""
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{served.url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {served.key}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--exclude-path-regex",
        EXCLUDED_PATHS,
        # A fixed seed: a failure in CI is the same failure on a laptop (`st replay <id>`).
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--report-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False
    )


@pytest.mark.parametrize("app", ["inference", "gateway"])
def test_openapi_contract(app: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    served: Served = request.getfixturevalue(app)
    result = schemathesis(served, tmp_path)
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
