"""What API key authentication costs on the hot forecast path, measured in-process.

One inference replica (a fitted PERSISTENCE champion, so the model call itself is as cheap as
it gets and the authentication share is at its largest) is driven straight through its ASGI
entry, without sockets, once without a keys file and once with one and a valid
``Authorization: Bearer`` header. Each round sends the same single forecast request
``--requests`` times; the figure per configuration is the median over ``--rounds`` rounds of
the mean time per request, and the rounds alternate between the two configurations so that
machine noise hits both alike::

    PYTHONPATH=src python -m benchmarks.auth_cost --rounds 15 --requests 2000 [--json-file out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.report import write_report
from flts.api import PromotionModelSource, create_app
from flts.api.asgi import InferenceApp
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import Forecaster, model_class
from flts.promotion import Promotion, PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.settings import Settings


def _model() -> Forecaster:
    spec = FeatureSpec()
    prepared = prepare(validate_frame(synthetic_traffic(400, seed=1), spec), spec=spec)
    model = model_class("PERSISTENCE")(spec, prepared.input_scaler, prepared.target_scaler)
    model.fit(prepared.train, prepared.validation)
    return model


def _app(home: Path, model: Forecaster, keys_file: Path | None) -> InferenceApp:
    settings = Settings(
        home=home,
        bus_url=f"memory://{uuid.uuid4().hex}",
        storage_url=f"memory://{uuid.uuid4().hex}",
        security={"keys_file": keys_file},
    )
    context = ServiceContext(settings)
    promotions = PromotionStore(context.store)
    promotions.record(Promotion(run_id="bench", model_type="PERSISTENCE", config_hash="c"))
    source = PromotionModelSource(promotions, lambda _run: model)
    app = create_app(context, replica_id="auth-bench", follow_bus=False, source=source)
    app.watcher.poll_once()  # load the champion now, not in a lifespan
    return app


def _body() -> bytes:
    rows = synthetic_traffic(40, seed=2).tail(FeatureSpec().lags)
    return json.dumps({"history": json.loads(rows.to_json(orient="records"))}).encode()


async def _round(
    app: InferenceApp, headers: list[tuple[bytes, bytes]], body: bytes, n: int
) -> float:
    """Mean seconds per request over ``n`` requests through the ASGI entry."""
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    started = time.perf_counter()
    for _ in range(n):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/forecast",
            "raw_path": b"/v1/forecast",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
    elapsed = (time.perf_counter() - started) / n
    if set(status) != {200}:
        raise RuntimeError(f"forecasts failed: statuses {sorted(set(status))}")
    return elapsed


def measure(rounds: int, requests: int) -> dict[str, Any]:
    """Median microseconds per forecast without and with authentication."""
    with tempfile.TemporaryDirectory(prefix="flts-auth-bench-") as scratch:
        home = Path(scratch)
        model = _model()
        key = create_key(home / "keys.json", "bench", ["forecast"])
        plain = [(b"content-type", b"application/json")]
        keyed = [*plain, (b"authorization", f"Bearer {key}".encode())]
        apps = {
            "without_auth": (_app(home / "open", model, None), plain),
            "with_auth": (_app(home / "keyed", model, home / "keys.json"), keyed),
        }
        body = _body()
        samples: dict[str, list[float]] = {name: [] for name in apps}

        async def run() -> None:
            for app, headers in apps.values():  # warm-up
                await _round(app, headers, body, max(10, requests // 10))
            for _ in range(rounds):
                for name, (app, headers) in apps.items():
                    samples[name].append(await _round(app, headers, body, requests))

        asyncio.run(run())
    medians = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    overhead = medians["with_auth"] - medians["without_auth"]
    return {
        "rounds": rounds,
        "requests_per_round": requests,
        "median_us_without_auth": round(medians["without_auth"], 2),
        "median_us_with_auth": round(medians["with_auth"], 2),
        "overhead_us": round(overhead, 2),
        "overhead_percent": round(100 * overhead / medians["without_auth"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json-file", dest="json", type=Path, help="Write the result here.")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.requests)
    print(json.dumps(result, indent=2))
    write_report(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
