"""``flts bench serve`` and ``flts bench swap``: serving speed under load, measured against
MLflow's model server, and zero failures while a new champion is promoted."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, TypedDict

import typer
from rich.table import Table

from flts.cli._common import console, err_console, user_errors, write_json
from flts.cli.benchmark import accuracy

app = typer.Typer(
    help="Benchmarks: accuracy on held-out data; serving speed under load.",
    no_args_is_help=True,
)
app.command("accuracy")(accuracy)

DEFAULT_DATA = Path("../shared/datasets/PobleSec.csv")
DEFAULT_HOME = Path("build/bench/serve-home")

Data = Annotated[
    Path,
    typer.Option(help="Training CSV for the champion LSTM (synthetic data when absent)."),
]
Test = Annotated[
    Path | None,
    typer.Option(help="CSV whose windows make the requests (default: <data>_test.csv)."),
]
Home = Annotated[Path, typer.Option(help="FLTS_HOME of the benchmark (models are reused).")]
Fresh = Annotated[bool, typer.Option(help="Delete the benchmark home first (retrain).")]
Epochs = Annotated[int, typer.Option(min=1, help="Training epochs of the benchmark LSTMs.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write results here.")]


def _test_csv(data: Path, test: Path | None) -> Path | None:
    if test is not None:
        return test
    candidate = data.with_name(f"{data.stem}_test.csv")
    return candidate if candidate.is_file() else None


def _echo(message: str) -> None:
    err_console.print(message, highlight=False)


def _prepare_home(home: Path, fresh: bool) -> Path:
    if fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


class _Inputs(TypedDict):
    home: Path
    train_csv: Path | None
    test_csv: Path | None


def _inputs(data: Path, test: Path | None, home: Path, fresh: bool) -> _Inputs:
    """The benchmark home (emptied first when ``fresh``) and the CSVs both benchmarks use."""
    return {
        "home": _prepare_home(home, fresh),
        "train_csv": data if data.is_file() else None,
        "test_csv": _test_csv(data, test),
    }


@app.command("serve")
def serve(
    duration: Annotated[float, typer.Option(min=1, help="Seconds of load per level.")] = 20.0,
    concurrency: Annotated[str, typer.Option(help="Comma-separated user counts.")] = "1,8,32",
    workers: Annotated[int, typer.Option(min=1, help="Worker processes per server.")] = 1,
    paced_rps: Annotated[
        float, typer.Option(help="Offered rate of the paced level at the top concurrency (0: off).")
    ] = 1500.0,
    mlflow: Annotated[bool, typer.Option(help="Also measure mlflow models serve.")] = True,
    floor: Annotated[
        bool, typer.Option(help="Also measure a do-nothing app: the harness's own floor.")
    ] = True,
    data: Data = DEFAULT_DATA,
    test: Test = None,
    home: Home = DEFAULT_HOME,
    fresh: Fresh = False,
    epochs: Epochs = 3,
    json_out: JsonOut = None,
    check: Annotated[
        bool, typer.Option(help="Exit 1 on any failed request (CI), never on speed.")
    ] = False,
) -> None:
    """Champion LSTM served by `flts serve` and by `mlflow models serve`, same Locust load."""
    from flts.benchmarks.serve import bench_serve

    levels = sorted({int(part) for part in concurrency.split(",") if part.strip()})
    if not levels or min(levels) < 1:
        raise typer.BadParameter("give positive user counts, e.g. 1,8,32")
    with user_errors():
        report = bench_serve(
            **_inputs(data, test, home, fresh),
            duration=duration,
            concurrency=levels,
            workers=workers,
            paced_rps=paced_rps,
            mlflow=mlflow,
            floor=floor,
            epochs=epochs,
            echo=_echo,
        )
    table = Table(title=f"Serving one LSTM champion, {workers} worker(s), {duration:g} s per level")
    for name in ("server", "mode", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "requests"):
        table.add_column(name, justify="left" if name in ("server", "mode") else "right")
    table.add_column("failures", justify="right")
    for r in report.results:
        table.add_row(
            r.server,
            r.mode if r.offered_rps is None else f"paced {r.offered_rps:g}/s",
            str(r.concurrency),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.requests),
            str(r.failures),
        )
    console.print(table)
    ratios = ", ".join(f"{k} users: {v:g}x" for k, v in report.ratio_rps.items()) or "-"
    forms = ", ".join(f"{v:,.0f} ({k})" for k, v in report.batch_windows_per_s_by_form.items())
    console.print(
        f"FLTS/MLflow requests/s: {ratios}; batch of 256, windows/s: {forms}; "
        f"cold start {report.cold_start_seconds:.2f} s; load {report.machine}"
    )
    if json_out is not None:
        write_json(json_out, report.to_json())
    failures = sum(r.failures for r in report.results)
    if check and failures:
        err_console.print(f"[bold red]error:[/] {failures} failed requests")
        raise typer.Exit(code=1)


@app.command("swap")
def swap(
    duration: Annotated[float, typer.Option(min=3, help="Seconds of load.")] = 15.0,
    users: Annotated[int, typer.Option(min=1, help="Concurrent Locust users.")] = 32,
    data: Data = DEFAULT_DATA,
    test: Test = None,
    home: Home = DEFAULT_HOME,
    fresh: Fresh = False,
    epochs: Epochs = 3,
    json_out: JsonOut = None,
    check: Annotated[
        bool, typer.Option(help="Exit 1 on failed requests or a swap never served.")
    ] = False,
) -> None:
    """Promote a second champion through the bus while Locust drives USERS clients."""
    from flts.benchmarks.serve import bench_swap

    with user_errors():
        report = bench_swap(
            **_inputs(data, test, home, fresh),
            duration=duration,
            users=users,
            epochs=epochs,
            echo=_echo,
        )
    console.print(
        f"{report.requests} requests ({report.requests_before} before the promotion), "
        f"{report.failures} failures; p99 {report.p99_ms_during_swap:.2f} ms during the swap "
        f"({report.p99_ms_before_swap:.2f} ms before); new run served "
        f"{report.swap_seconds:.3f} s after the promotion started"
    )
    if json_out is not None:
        write_json(json_out, asdict(report))
    if check and (report.failures or math.isnan(report.swap_seconds)):
        err_console.print("[bold red]error:[/] failed requests or the new champion never answered")
        raise typer.Exit(code=1)
