"""``flts up``: the whole embedded system in one command."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flts.cli._choices import DEFAULT_MODELS, ModelsOption, model_list
from flts.cli._common import console, err_console, load_settings, print_error, user_errors
from flts.exceptions import ConfigurationError, FLTSError

if TYPE_CHECKING:
    from flts.settings import Settings
    from flts.supervisor import Supervisor

#: :data:`flts.supervisor.DEFAULT_HEALTHY_AFTER`, repeated so ``flts --help`` stays light.
DEFAULT_HEALTHY_AFTER = 60.0

app = typer.Typer()


def _wait_http(url: str, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _demo_data(home: Path) -> tuple[Path, Path]:
    """Three days of training traffic and one day of test traffic with the LTE schema."""
    from flts.data.synthetic import synthetic_traffic

    directory = home / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    frame = synthetic_traffic(4 * 720, seed=42)
    train, test = directory / "demo.csv", directory / "demo_test.csv"
    frame.iloc[: 3 * 720].to_csv(train, index=False)
    frame.iloc[3 * 720 :].to_csv(test, index=False)
    return train, test


def _request_example(csv: Path, settings: Settings, identifier: str) -> Path:
    """A forecast request body built from the last rows of a traffic file."""
    import pandas as pd

    spec = settings.feature_spec
    rows = pd.read_csv(csv).tail(spec.lags)
    body = {
        "identifier": identifier,
        "history": json.loads(rows.to_json(orient="records")),
        "horizon": 1,
    }
    path = settings.home / "demo" / "request.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1))
    return path


def upload(gateway: str, train: Path, test: Path | None, identifier: str, api_key: str) -> str:
    """Upload a dataset through the gateway (without a test file the gateway holds out the
    last part of the training rows); returns the dataset id."""
    import httpx

    files = {"train": (train.name, train.read_bytes(), "text/csv")}
    if test is not None:
        files["test"] = (test.name, test.read_bytes(), "text/csv")
    response = httpx.post(
        f"{gateway}/v1/datasets",
        files=files,
        data={"identifier": identifier},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120.0,
    )
    if response.status_code >= 400:
        raise ConfigurationError(f"upload rejected ({response.status_code}): {response.text}")
    return str(response.json().get("dataset_id"))


@app.command("up")
def up(
    data: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Training CSV to ingest.")
    ] = None,
    test: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Its held-out test CSV.")
    ] = None,
    identifier: Annotated[str, typer.Option(help="Station or tenant name.")] = "global",
    models: ModelsOption = DEFAULT_MODELS,
    exit_when_ready: Annotated[
        bool, typer.Option(help="Stop everything once a champion is served (smoke test).")
    ] = False,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="Restarts in a row before giving up on a process.")
    ] = 5,
    healthy_after: Annotated[
        float,
        typer.Option(
            min=0.001, help="Seconds of uptime after which a process's restart count resets."
        ),
    ] = DEFAULT_HEALTHY_AFTER,
    replay_speed: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Once a champion serves, replay the test file as live observations at this "
            "many times real time, so the live figures move (0: no replay).",
        ),
    ] = 600.0,
) -> None:
    """Start gateway, preprocess, one trainer per model type, evaluator, batch inference, the
    live monitor and forecaster and the inference API as separate processes; ingest DATA (or a
    synthetic demo); once a champion serves, replay TEST as live observations; keep serving
    until Ctrl-C. Exits with status 1 if a process keeps crashing (its restarts run out)."""
    import os

    from flts.supervisor import Supervisor, service_specs

    with user_errors():
        settings = load_settings()
        model_types = model_list(models)
    if test is not None and data is None:
        raise typer.BadParameter("--test needs --data")
    if data is None:
        data, test = _demo_data(settings.home)
        err_console.print(f"no data given: generated a synthetic demo in {data.parent}")

    env = dict(os.environ)
    env["FLTS_EVALUATION__EXPECTED_MODELS"] = json.dumps(model_types)
    with user_errors():
        keys_file, api_key = _session_key(settings)
    env["FLTS_SECURITY__KEYS_FILE"] = str(keys_file)
    supervisor = Supervisor(
        service_specs(settings, model_types),
        log_dir=settings.home / "logs",
        env=env,
        max_restarts=max_restarts,
        healthy_after=healthy_after,
    )
    gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
    api = f"http://{settings.serving.host}:{settings.serving.port}"
    _stop_on_sigterm()
    supervisor.start()
    err_console.print(
        f"started {len(supervisor.children)} processes; logs in {settings.home / 'logs'}"
    )
    try:
        if not _wait_gateway(supervisor, f"{gateway}/healthz", 60):
            raise typer.Exit(code=_fail("the gateway did not come up; see gateway.log"))
        with user_errors():
            dataset = upload(gateway, data, test, identifier, api_key)
        err_console.print(
            f"uploaded {data.name} as dataset {dataset}; training {', '.join(model_types)}"
        )
        example = _request_example(test or data, settings, identifier)
        console.print(f"API key:    {api_key}   (admin; new at every start, in {keys_file})")
        console.print(f"gateway:    {gateway}/v1/datasets   (admin API: {gateway}/v1/admin)")
        console.print(f"forecasts:  {api}/v1/forecast   (metrics: {api}/metrics)")
        console.print(f"dashboard:  {gateway}/ui/   (paste the API key above when it asks)")
        console.print(
            "try:        curl -s -X POST "
            f"{api}/v1/forecast -H 'Authorization: Bearer {api_key}' "
            f"-H 'content-type: application/json' -d @{example}",
            soft_wrap=True,
        )
        ready = False
        while True:
            _check(supervisor)
            if not ready and _wait_http(f"{api}/readyz", 1.0):
                ready = True
                console.print(f"champion loaded: {api}/v1/models/champion?identifier={identifier}")
                if exit_when_ready:
                    break
                if test is not None and replay_speed > 0:
                    _start_replay(test, settings, identifier, gateway, api_key, replay_speed)
            time.sleep(1.0)
    except KeyboardInterrupt:
        err_console.print("stopping...")
    finally:
        supervisor.stop()
        err_console.print("all processes stopped")


def _start_replay(
    csv: Path, settings: Settings, identifier: str, gateway: str, api_key: str, speed: float
) -> threading.Thread:
    """Replay ``csv`` as the station's live observations in the background (see
    :mod:`flts.live.replay`): the forecaster pushes a forecast for each new row, and the
    monitor scores them as the following rows arrive."""
    from flts.live.replay import replay, replay_rows

    rows = replay_rows(csv, settings.feature_spec)
    console.print(
        f"replaying {len(rows)} rows of {csv.name} as live observations at {speed:g}x; "
        "`flts status` shows the live error as forecasts meet their actuals"
    )

    def run() -> None:
        try:
            done = replay(
                rows,
                identifier=identifier,
                gateway=gateway,
                api_key=api_key,
                speed=speed,
                max_rows_per_request=settings.live.max_rows_per_request,
                time_column=settings.feature_spec.time_column,
            )
        except FLTSError as exc:
            err_console.print(f"replay stopped: {exc}")
            return
        console.print(f"replay done: {done.accepted} rows new, {done.duplicates} already stored")

    thread = threading.Thread(target=run, name="replay", daemon=True)
    thread.start()
    return thread


#: The key ``flts up`` makes for itself (and its user) at every start.
SESSION_KEY_NAME = "flts-up"


def _session_key(settings: Settings) -> tuple[Path, str]:
    """A fresh admin key for this run, replacing the previous run's: the embedded system never
    runs with an open API. It goes into the configured keys file, or ``<home>/api-keys.json``
    when none is configured or the configured one is read-only (a mounted Secret: its keys
    are copied beside the session key, and stay valid). Keys made with ``flts keys create``
    in the file stay valid too."""
    import os

    from flts.cli.keys import DEFAULT_KEYS_FILE
    from flts.security import SCOPES, create_key, read_keys, write_keys

    home_file = (settings.home / DEFAULT_KEYS_FILE).resolve()
    configured = settings.security.keys_file
    path = home_file if configured is None else configured.resolve()
    if path != home_file and not os.access(path if path.exists() else path.parent, os.W_OK):
        write_keys(home_file, read_keys(path))
        path = home_file
    return path, create_key(path, SESSION_KEY_NAME, SCOPES, replace=True)


def _check(supervisor: Supervisor) -> None:
    """Restart what exited; exit with status 1 once a process is given up on.

    A system with a process that stays down is broken, so ``flts up`` says so in its exit
    status (whatever runs it restarts or alerts) instead of serving on without it.
    """
    for message in supervisor.check():
        err_console.print(message)
    if supervisor.gave_up:
        names = ", ".join(supervisor.gave_up)
        raise typer.Exit(code=_fail(f"gave up on {names} (restarts ran out); stopping"))


def _wait_gateway(supervisor: Supervisor, url: str, timeout: float) -> bool:
    """Wait for the gateway to answer, supervising meanwhile (a crash loop ends the wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check(supervisor)
        if _wait_http(url, 1.0):
            return True
    return False


def _stop_on_sigterm() -> None:
    """Ctrl-C and SIGTERM (a container stop, ``kill``) both shut the children down cleanly.

    SIGINT is restored to Python's default too: a shell starts background jobs with SIGINT
    ignored, and the children must not outlive their supervisor.
    """
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _fail(message: str) -> int:
    print_error(message)
    return 1
