"""Serving benchmarks: ``flts bench serve`` (FLTS vs MLflow's model server) and
``flts bench swap`` (a promotion under load).

Everything runs as it would in production, each in its own OS process: a champion LSTM is
trained (or reused) in a fresh ``FLTS_HOME``, promoted through the real path
(:func:`flts.services.evaluate.promote_run`: pointer, registry alias, ``model-selected``),
served by ``flts serve`` and driven by Locust (headless, ``FastHttpUser``, its own process)
with real windows from the test CSV. The comparison serves the *same* saved model with
``mlflow models serve`` (:mod:`flts.mlflow_pyfunc`) under identical load and payloads.

Latency percentiles come from Locust's per-request log (``--request-log``: exact float
milliseconds, where Locust's own table rounds to whole milliseconds); requests per second are
completed requests over the measured span. Closed-loop levels (each user sends its next
request when the previous answer arrives) measure capacity, so their latency includes the
queueing Little's law implies (32 users at 1,500 rps wait ~21 ms on average); the "paced"
level offers a fixed rate (``--paced-rps`` over 32 users) and measures latency at that load.
The "floor" levels drive a do-nothing ASGI app (:mod:`flts.benchmarks.floor`) with the same
users and payloads at the top concurrency, closed and paced: the harness's own cost on this
machine, which no server measured this way can beat.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flts.devservers import Server, free_port, spawn

#: Identifier the benchmark models serve.
IDENTIFIER = "global"
#: Training epochs of the benchmark LSTMs: serving speed does not depend on accuracy.
BENCH_EPOCHS = 3
#: Windows per request of the batch measurement.
BATCH_WINDOWS = 256
#: Concurrency of the batch measurement (closed loop).
BATCH_USERS = 2
#: Batch body forms measured (``--batch-form`` of the locustfile): rows (``requests``), the
#: tensor form as JSON numbers (``windows``) and as base64 bytes (``encoded``).
BATCH_FORMS = ("rows", "windows", "encoded")
#: Locust options of the single-forecast levels.
SINGLE = ["--forecast-mix", "single"]
#: Pause between ``/readyz`` 200 and the first load level (see :func:`bench_serve`).
SETTLE_SECONDS = 4.0


@dataclass
class LevelResult:
    """One load level against one server."""

    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    failures: int
    mode: str = "closed"
    offered_rps: float | None = None


@dataclass
class ServeReport:
    results: list[LevelResult]
    ratio_rps: dict[str, float]
    #: The fastest batch form's figure (the tensor form as bytes, on this machine); every
    #: form's is in ``batch_windows_per_s_by_form``.
    batch_windows_per_s: float
    batch_windows_per_s_by_form: dict[str, float]
    cold_start_seconds: float
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["results"] = [asdict(r) for r in self.results]
        return document


# ----------------------------------------------------------------------------- locating


def repo_file(relative: str) -> Path:
    """A file of the source tree (``loadtest/locustfile.py``), from the working directory
    or relative to this package's checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = root / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{relative} not found (run from the FLTS checkout)")


def machine_load() -> dict[str, Any]:
    """What else the machine was doing: other engineers share it."""
    one, five, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2)}


# ----------------------------------------------------------------------------- models


@contextmanager
def _service_context(home: Path) -> Iterator[Any]:
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
    with _service_context(home) as context:
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
    from flts.services.evaluate import promote_run

    with _service_context(home) as context:
        if (current := context.promotions.current(IDENTIFIER)) and current.run_id == run_id:
            return
        promote_run(context, run_id, reason="serving benchmark")


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


def start_flts(home: Path, *, workers: int, logs: Path) -> tuple[Server, float]:
    """``flts serve`` on a free port; returns the server and its cold start (process start
    to ``/readyz`` 200, champion loaded and warmed) in seconds."""
    started = time.perf_counter()
    server = _spawn_on_free_port(
        "flts-serve",
        lambda port: [
            *(sys.executable, "-m", "flts", "serve"),
            *("--port", str(port), "--workers", str(workers)),
        ],
        logs=logs,
        env=_env(home, FLTS_SERVING__POINTER_POLL_SECONDS="1"),
        ready_path="/readyz",
        timeout=120.0,
    )
    return server, time.perf_counter() - started


def start_floor(*, logs: Path) -> Server:
    """The do-nothing ASGI app (:mod:`flts.benchmarks.floor`) under the same uvicorn options."""
    return _spawn_on_free_port(
        "floor-serve",
        lambda port: [sys.executable, "-m", "flts.benchmarks.floor", "--port", str(port)],
        logs=logs,
        env=_env(Path(tempfile.gettempdir())),
        ready_path="/readyz",
        timeout=60.0,
    )


def start_mlflow(home: Path, model_uri: str, *, workers: int, logs: Path) -> Server:
    """``mlflow models serve`` of the same model in this environment."""
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    return _spawn_on_free_port(
        "mlflow-serve",
        lambda port: [
            *(sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri),
            *("--env-manager", "local", "-h", "127.0.0.1"),
            *("-p", str(port), "-w", str(workers)),
        ],
        logs=logs,
        env=_env(home, MLFLOW_TRACKING_URI=tracking),
        ready_path="/ping",
        timeout=180.0,
    )


# ----------------------------------------------------------------------------- locust


@dataclass
class Requests:
    """Per-request records of one Locust run: start (epoch s), latency ms, ok, run id."""

    start: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    run_id: list[str]

    @classmethod
    def read(cls, path: Path) -> Requests:
        rows = json.loads(path.read_text()) if path.is_file() else []
        return cls(
            start=np.array([r[0] for r in rows], dtype=np.float64),
            latency_ms=np.array([r[1] for r in rows], dtype=np.float64),
            ok=np.array([bool(r[2]) for r in rows], dtype=bool),
            run_id=[str(r[3]) for r in rows],
        )

    def __len__(self) -> int:
        return len(self.start)

    def percentile(self, q: float, mask: np.ndarray | None = None) -> float:
        values = self.latency_ms if mask is None else self.latency_ms[mask]
        return round(float(np.percentile(values, q)), 3) if len(values) else math.nan

    def rps(self) -> float:
        if len(self) < 2:
            return 0.0
        span = float((self.start + self.latency_ms / 1000.0).max() - self.start.min())
        return round(len(self) / span, 1) if span > 0 else 0.0


def run_locust(
    *,
    host: str,
    user_class: str,
    users: int,
    duration: float,
    windows_csv: Path | None,
    work: Path,
    extra: list[str] | None = None,
    during: Callable[[], None] | None = None,
) -> Requests:
    """One headless Locust run in its own process; ``during`` runs in this process while
    the load is on (the swap benchmark promotes from here)."""
    log = work / f"requests-{user_class}-{users}-{uuid.uuid4().hex[:8]}.json"
    argv = [sys.executable, "-m", "locust", "-f", str(repo_file("loadtest/locustfile.py"))]
    argv += ["--headless", "-u", str(users), "-r", str(users), "-t", f"{duration:g}s"]
    argv += ["-H", host, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"]
    argv += ["--exit-code-on-error", "0", "--request-log", str(log)]
    if windows_csv is not None and windows_csv.is_file():
        argv += ["--windows-csv", str(windows_csv)]
    argv += [*(extra or []), user_class]
    output = work / f"{log.stem}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            if during is not None:
                during()
            process.wait(timeout=duration + 180.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if process.returncode != 0 or not log.is_file():
        raise RuntimeError(
            f"locust failed ({process.returncode}):\n{output.read_text(errors='replace')[-3000:]}"
        )
    return Requests.read(log)


def summarise(server: str, users: int, requests: Requests, **extra: Any) -> LevelResult:
    return LevelResult(
        server=server,
        concurrency=users,
        rps=requests.rps(),
        p50_ms=requests.percentile(50),
        p95_ms=requests.percentile(95),
        p99_ms=requests.percentile(99),
        requests=len(requests),
        failures=int((~requests.ok).sum()),
        **extra,
    )


# ----------------------------------------------------------------------------- bench serve


def bench_serve(
    *,
    home: Path,
    train_csv: Path | None,
    test_csv: Path | None,
    duration: float,
    concurrency: list[int],
    workers: int,
    paced_rps: float,
    mlflow: bool = True,
    floor: bool = True,
    epochs: int = BENCH_EPOCHS,
    echo: Callable[[str], None] = print,
) -> ServeReport:
    """The whole ``flts bench serve`` run (see the module doc)."""
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=home))
    logs = home / "logs"
    echo("training or reusing the champion LSTM ...")
    [run_id] = ensure_models(home, train_csv, 1, epochs=epochs)
    promote(home, run_id)
    results: list[LevelResult] = []

    def load(
        server: Server, user_class: str, users: int, extra: list[str] | None = None
    ) -> Requests:
        return run_locust(
            host=server.url,
            user_class=user_class,
            users=users,
            duration=duration,
            windows_csv=test_csv,
            work=work,
            extra=extra,
        )

    def record(result: LevelResult) -> LevelResult:
        results.append(result)
        echo(_row(result))
        return result

    def paced(server: Server, name: str) -> None:
        """The paced level: ``paced_rps`` offered by the top concurrency's users."""
        if paced_rps > 0:
            users = max(concurrency)
            pacing = [*SINGLE, "--rate-per-user", f"{paced_rps / users:g}"]
            requests = load(server, "FltsUser", users, pacing)
            record(summarise(name, users, requests, mode="paced", offered_rps=paced_rps))

    echo(f"starting flts serve ({workers} worker(s)) ...")
    server, cold = start_flts(home, workers=workers, logs=logs)
    with server:
        echo(f"ready in {cold:.2f} s")
        # A champion started from the local model cache is verified against the tracking
        # store by the watcher's next poll (importing MLflow in the background, ~2 s of CPU):
        # start-up work that belongs to the cold start, not to the first load level.
        time.sleep(SETTLE_SECONDS)
        for users in concurrency:
            requests = load(server, "FltsUser", users, SINGLE)
            record(summarise("flts", users, requests))
        paced(server, "flts")
        by_form: dict[str, float] = {}
        for form in BATCH_FORMS:
            batching = ["--forecast-mix", "batch", "--batch-size", str(BATCH_WINDOWS)]
            batch = load(server, "FltsUser", BATCH_USERS, [*batching, "--batch-form", form])
            mode = f"batch{BATCH_WINDOWS}-{form}"
            result = record(summarise("flts", BATCH_USERS, batch, mode=mode))
            by_form[form] = round(result.rps * BATCH_WINDOWS) if result.failures == 0 else 0.0

    if floor:
        echo("starting the floor (a do-nothing ASGI app under the same uvicorn) ...")
        with start_floor(logs=logs) as floor_server:
            users = max(concurrency)
            record(summarise("floor", users, load(floor_server, "FltsUser", users, SINGLE)))
            paced(floor_server, "floor")

    if mlflow:
        from flts.mlflow_pyfunc import log_pyfunc_model

        with _service_context(home) as context:
            model_dir = context.tracker.model_dir(run_id)
        echo("logging the same model as an MLflow pyfunc and starting mlflow models serve ...")
        uri = log_pyfunc_model(
            model_dir,
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifacts=home / "pyfunc-artifacts",
        )
        with start_mlflow(home, uri, workers=workers, logs=logs) as mlflow_server:
            for users in concurrency:
                record(summarise("mlflow", users, load(mlflow_server, "MlflowUser", users)))
    ratio: dict[str, float] = {}
    for users in concurrency:
        ours = _closed(results, "flts", users)
        theirs = _closed(results, "mlflow", users)
        if ours and theirs and theirs.rps > 0:
            ratio[str(users)] = round(ours.rps / theirs.rps, 1)
    return ServeReport(
        results=results,
        ratio_rps=ratio,
        batch_windows_per_s=max(by_form.values()),
        batch_windows_per_s_by_form=by_form,
        cold_start_seconds=round(cold, 3),
        machine=machine_load(),
    )


def _closed(results: list[LevelResult], server: str, users: int) -> LevelResult | None:
    return next(
        (
            r
            for r in results
            if r.server == server and r.concurrency == users and r.mode == "closed"
        ),
        None,
    )


def _row(r: LevelResult) -> str:
    return (
        f"{r.server:6} {r.mode:9} c={r.concurrency:<3} {r.rps:9.1f} rps  p50 {r.p50_ms:7.2f}  "
        f"p95 {r.p95_ms:7.2f}  p99 {r.p99_ms:7.2f} ms  {r.requests} requests, "
        f"{r.failures} failures"
    )


# ----------------------------------------------------------------------------- bench swap


@dataclass
class SwapReport:
    requests: int
    failures: int
    requests_before: int
    requests_after: int
    p99_ms_during_swap: float
    p99_ms_before_swap: float
    swap_seconds: float
    old_run_id: str
    new_run_id: str
    machine: dict[str, Any] = field(default_factory=dict)


def bench_swap(
    *,
    home: Path,
    train_csv: Path | None,
    test_csv: Path | None,
    duration: float,
    users: int = 32,
    epochs: int = BENCH_EPOCHS,
    echo: Callable[[str], None] = print,
) -> SwapReport:
    """Promote a second champion through the bus while Locust drives ``users`` clients.

    ``swap_seconds`` runs from just before the promotion starts (pointer write, registry
    alias, then ``model-selected``: the bench takes the conservative start) to the first
    answer carrying the new run id; the swap window for ``p99_ms_during_swap`` is from that
    start to one second after the first new answer.
    """
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="swap-", dir=home))
    echo("training or reusing two LSTM runs ...")
    old, new = ensure_models(home, train_csv, 2, epochs=epochs)
    promote(home, old)
    server, _ = start_flts(home, workers=1, logs=home / "logs")
    time.sleep(SETTLE_SECONDS)  # start-up verification off the measurement (bench_serve)
    marks: dict[str, float] = {}

    def swap() -> None:
        time.sleep(duration / 3)
        marks["start"] = time.time()
        promote(home, new)
        marks["published"] = time.time()

    with server:
        requests = run_locust(
            host=server.url,
            user_class="FltsUser",
            users=users,
            duration=duration,
            windows_csv=test_csv,
            work=work,
            extra=SINGLE,
            during=swap,
        )
    answered = requests.start + requests.latency_ms / 1000.0
    carries_new = np.array([r == new for r in requests.run_id], dtype=bool)
    first_new = float(answered[carries_new].min()) if carries_new.any() else math.nan
    started = marks["start"]
    during = (answered >= started) & (answered <= first_new + 1.0)
    before = answered < started
    return SwapReport(
        requests=len(requests),
        failures=int((~requests.ok).sum()),
        requests_before=int(before.sum()),
        requests_after=int((~before).sum()),
        p99_ms_during_swap=requests.percentile(99, during),
        p99_ms_before_swap=requests.percentile(99, before),
        swap_seconds=round(first_new - started, 3),
        old_run_id=old,
        new_run_id=new,
        machine=machine_load(),
    )
