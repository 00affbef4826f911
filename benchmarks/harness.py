"""What the serving benchmarks share: a champion trained and promoted through the real path,
and the servers they measure, each its own OS process on a free loopback port.

A benchmark home (``FLTS_HOME``) keeps its trained runs (``bench-runs.json``), so a second run
reuses them; serving speed does not depend on accuracy, so the LSTMs train for a few epochs.
The process helpers (``spawn``, ``free_port``) are the test servers' (``tests/servers``): the
Makefile runs the benchmarks with ``tests`` on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servers import Server, free_port, spawn

#: Identifier the benchmark models serve.
IDENTIFIER = "global"
#: Training epochs of the benchmark LSTMs.
BENCH_EPOCHS = 3
#: Pause between ``/readyz`` 200 and the first measurement: a champion started from the local
#: model cache is verified against the tracking store by the watcher's next poll (importing
#: MLflow in the background, ~2 s of CPU), start-up work that belongs to the cold start.
SETTLE_SECONDS = 4.0
#: Where both serving benchmarks find their data and keep their state by default.
DEFAULT_DATA = Path("../shared/datasets/PobleSec.csv")
DEFAULT_HOME = Path("build/bench/serve-home")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every serving benchmark shares: data, home, training, report."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Training CSV.")
    parser.add_argument("--test", type=Path, default=None, help="CSV of the request windows.")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="Benchmark FLTS_HOME.")
    parser.add_argument("--fresh", action="store_true", help="Empty the home first (retrain).")
    parser.add_argument("--epochs", type=int, default=BENCH_EPOCHS, help="LSTM epochs.")
    parser.add_argument(
        "--json-file", dest="json", type=Path, default=None, help="Write the report here."
    )


def prepare_home(home: Path, *, fresh: bool) -> Path:
    """The benchmark home, emptied first when ``fresh`` (retrain)."""
    if fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def requests_csv(data: Path, test: Path | None) -> Path | None:
    """The CSV whose windows make the requests: ``test``, else ``<data>_test.csv`` beside the
    training file, else none (synthetic windows)."""
    if test is not None:
        return test
    candidate = data.with_name(f"{data.stem}_test.csv")
    return candidate if candidate.is_file() else None


def machine_load() -> dict[str, Any]:
    """What else the machine was doing: other work shares it."""
    one, five, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2)}


# ----------------------------------------------------------------------------- models


@contextmanager
def service_context(home: Path) -> Iterator[Any]:
    """A :class:`~flts.services.context.ServiceContext` on ``home``, closed on exit."""
    from flts.services.context import ServiceContext
    from flts.settings import Settings

    context = ServiceContext(Settings(home=home))
    try:
        yield context
    finally:
        context.close()


def ensure_models(home: Path, train_csv: Path | None, count: int, *, epochs: int) -> list[str]:
    """``count`` finished LSTM runs in ``home`` (trained once, reused on later calls)."""
    registry = home / "bench-runs.json"
    with service_context(home) as context:
        runs: list[str] = json.loads(registry.read_text()) if registry.is_file() else []
        runs = [r for r in runs if context.tracker.run_exists(r)]
        while len(runs) < count:
            runs.append(_train_lstm(context, train_csv, seed=len(runs), epochs=epochs))
            registry.write_text(json.dumps(runs))
        return runs[:count]


def _train_lstm(context: Any, train_csv: Path | None, *, seed: int, epochs: int) -> str:
    from flts.data import FeatureSpec, prepare, read_traffic_csv, validate_frame
    from flts.data.synthetic import synthetic_traffic
    from flts.models.neural import LSTMForecaster

    spec = FeatureSpec()
    if train_csv is not None and train_csv.is_file():
        table = read_traffic_csv(train_csv, spec)
    else:
        table = validate_frame(synthetic_traffic(6_000, seed=seed).reset_index(drop=True), spec)
    prepared = prepare(table, spec=spec)
    model = LSTMForecaster(
        spec, prepared.input_scaler, prepared.target_scaler, seed=seed, max_epochs=epochs
    )
    model.fit(prepared.train, prepared.validation)
    run_id: str = context.tracker.log_training_run(
        model,
        identifier=IDENTIFIER,
        config_hash="00000000bec0ffee",
        correlation_id=str(uuid.uuid4()),
    )
    return run_id


def promote(home: Path, run_id: str) -> None:
    """Promote ``run_id`` the way ``flts promote`` does (pointer, alias, ``model-selected``)."""
    from flts.promotion import promote_run

    with service_context(home) as context:
        if (current := context.promotions.current(IDENTIFIER)) and current.run_id == run_id:
            return
        promote_run(context, run_id, reason="serving benchmark")


def model_dir(home: Path, run_id: str) -> Path:
    """The saved model directory of ``run_id`` (downloaded from tracking when needed)."""
    with service_context(home) as context:
        directory: Path = context.tracker.model_dir(run_id)
        return directory


# ----------------------------------------------------------------------------- servers


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLTS_")}
    # mlflow models serve runs `uvicorn` by name: this interpreter's bin must be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"FLTS_HOME": str(home), "PYTHONUNBUFFERED": "1", "PATH": path, **extra})
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _spawn_on_free_port(
    name: str,
    argv: Callable[[int], list[str]],
    *,
    logs: Path,
    env: dict[str, str],
    ready_path: str,
    timeout: float,
) -> Server:
    """Spawn ``argv(port)`` on a free loopback port; ready once ``ready_path`` answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return spawn(
        name,
        argv(port),
        url=url,
        log_dir=logs,
        env=env,
        ready=lambda: _http_ok(url + ready_path),
        timeout=timeout,
    )


def start_flts(home: Path, *, workers: int, logs: Path, **env: str) -> tuple[Server, float]:
    """``flts serve`` on a free port (``env``: more ``FLTS_*`` settings); returns the server
    and its cold start (process start to ``/readyz`` 200, champion loaded and warmed) in
    seconds."""
    started = time.perf_counter()
    server = _spawn_on_free_port(
        "flts-serve",
        lambda port: [
            *(sys.executable, "-m", "flts", "serve"),
            *("--port", str(port), "--workers", str(workers)),
        ],
        logs=logs,
        env=_env(home, FLTS_SERVING__POINTER_POLL_SECONDS="1", **env),
        ready_path="/readyz",
        timeout=120.0,
    )
    return server, time.perf_counter() - started


def start_gateway(home: Path, *, logs: Path) -> Server:
    """``flts gateway`` over the embedded backends of ``home`` on a free port."""
    return _spawn_on_free_port(
        "flts-gateway",
        lambda port: [*(sys.executable, "-m", "flts", "gateway"), "--port", str(port)],
        logs=logs,
        env=_env(home),
        ready_path="/healthz",
        timeout=60.0,
    )


def start_floor(*, logs: Path) -> Server:
    """The bare ASGI app (:mod:`benchmarks.floor`) under the same uvicorn options."""
    return _spawn_on_free_port(
        "floor-serve",
        lambda port: [sys.executable, "-m", "benchmarks.floor", "--port", str(port)],
        logs=logs,
        env=_env(Path(tempfile.gettempdir()), PYTHONPATH=str(Path.cwd())),
        ready_path="/readyz",
        timeout=60.0,
    )


def start_mlflow(home: Path, model_uri: str, *, workers: int, logs: Path) -> Server:
    """``mlflow models serve`` of ``model_uri`` in this environment."""
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    return _spawn_on_free_port(
        "mlflow-serve",
        lambda port: [
            *(sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri),
            *("--env-manager", "local", "-h", "127.0.0.1"),
            *("-p", str(port), "-w", str(workers)),
        ],
        logs=logs,
        env=_env(home, MLFLOW_TRACKING_URI=tracking, PYTHONPATH=str(Path.cwd())),
        ready_path="/ping",
        timeout=180.0,
    )
