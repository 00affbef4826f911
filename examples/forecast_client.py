"""Upload a station's traffic, wait for its champion, forecast the test days and compare with
what happened, with :mod:`flts.client`.

Start FLTS first (``flts up``, which prints the API key it created, or the Helm chart), then::

    python examples/forecast_client.py --api http://127.0.0.1:8000 \\
        --gateway http://127.0.0.1:8001 --key "$FLTS_API_KEY" --data-dir ../shared/datasets

It uploads ``PobleSec.csv`` and ``PobleSec_test.csv``, waits until a champion trained on them
is served, forecasts the next step after every window of the test file (in batches), and plots
forecast against actual downlink traffic with its 80% interval (matplotlib, when installed),
or prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from flts.client import FLTSClient

#: The target the plot and table show.
TARGET = "down"
#: Interval level drawn around the forecast, in percent.
LEVEL = 80
#: Windows sent per batch call.
BATCH = 256


def upload_and_wait(
    client: FLTSClient, data_dir: Path, station: str, *, timeout: float = 900.0
) -> dict[str, object]:
    """Upload the station's training and test CSVs and wait for the champion they produce
    (a promotion newer than the one served before the upload, if any)."""
    try:
        before = client.champion(station).get("run_id")
    except Exception:  # no champion yet (503) is the usual start
        before = None
    dataset = client.upload(
        data_dir / f"{station}.csv", data_dir / f"{station}_test.csv", identifier=station
    )
    print(f"uploaded dataset {dataset['dataset_id']}; waiting for the champion ...", flush=True)
    champion = client.wait_for_champion(
        station, timeout=timeout, other_than=None if before is None else str(before)
    )
    print(f"champion: {champion['model_type']} run {champion['run_id']}", flush=True)
    return champion


def forecast_vs_actual(
    client: FLTSClient, test: pd.DataFrame, station: str, *, windows: int = 200
) -> pd.DataFrame:
    """One-step forecasts after each of the last ``windows`` windows of ``test`` (the rows a
    station reported), beside the actual value that followed: ``actual``, ``forecast``,
    ``lower``, ``upper`` of :data:`TARGET`, indexed by target time."""
    lags = int(client.champion(station)["feature_spec"]["lags"])
    frame = test.assign(time=pd.to_datetime(test["time"])).set_index("time")
    ends = range(max(lags, len(frame) - windows), len(frame))
    histories = [frame.iloc[end - lags : end] for end in ends]
    answers: list[pd.DataFrame] = []
    for start in range(0, len(histories), BATCH):
        chunk = histories[start : start + BATCH]
        answers += client.forecast_batch(chunk, station, intervals=[LEVEL])
    rows = [answer.droplevel("step").iloc[0] for answer in answers]
    table = pd.DataFrame(rows)
    table.index.name = "time"
    return pd.DataFrame(
        {
            "actual": frame[TARGET].reindex(table.index),
            "forecast": table[TARGET],
            "lower": table[f"{TARGET}_lower_{LEVEL}"],
            "upper": table[f"{TARGET}_upper_{LEVEL}"],
        }
    )


def show(table: pd.DataFrame, station: str, output: Path | None) -> None:
    """Plot forecast against actual (matplotlib), or print the table without it."""
    try:
        import matplotlib

        matplotlib.use("Agg" if output is not None else matplotlib.get_backend())
        import matplotlib.pyplot as plt
    except ImportError:
        print(table.to_string(float_format=lambda v: f"{v:,.0f}"))
        return
    figure, axes = plt.subplots(figsize=(11, 4))
    axes.fill_between(table.index, table["lower"], table["upper"], alpha=0.25, label=f"{LEVEL}%")
    axes.plot(table.index, table["actual"], label="actual", linewidth=1)
    axes.plot(table.index, table["forecast"], label="forecast", linewidth=1)
    axes.set_title(f"{station}: next-step {TARGET} forecast vs actual")
    axes.legend()
    figure.tight_layout()
    if output is not None:
        figure.savefig(output)
        print(f"wrote {output}")
    else:
        plt.show()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="Inference API URL.")
    parser.add_argument("--gateway", default="http://127.0.0.1:8001", help="Gateway URL.")
    parser.add_argument("--key", default=os.environ.get("FLTS_API_KEY"), help="API key.")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--station", default="PobleSec")
    parser.add_argument("--windows", type=int, default=200, help="Test windows to forecast.")
    parser.add_argument("--output", type=Path, default=None, help="Save the plot here.")
    args = parser.parse_args(argv)
    with FLTSClient(args.api, args.gateway, api_key=args.key) as client:
        upload_and_wait(client, args.data_dir, args.station)
        test = pd.read_csv(args.data_dir / f"{args.station}_test.csv")
        table = forecast_vs_actual(client, test, args.station, windows=args.windows)
    error = (table["forecast"] - table["actual"]).abs().mean()
    print(f"mean absolute error of {TARGET} over {len(table)} forecasts: {error:,.1f}")
    show(table, args.station, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
