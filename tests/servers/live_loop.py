"""The live loop's regime-change scenario, run against any running system (the embedded one of
``tests/e2e`` or the distributed one of ``make e2e``): train on a station, replay its test
file as observations with its traffic x2.5 from row 60 on, and follow the monitor's drift
detector, the one retraining it asks for and the new champion's live error.

The system must run with :data:`DRIFT_SETTINGS` (fast monitor passes and ledger flushes, and a
detector held until enough changed traffic is stored to learn it from). Rows are sent one at
a time, each once the forecaster has pushed the forecast made from the one before: one pushed
(and scored) forecast per row on any bus and however loaded the machine, so the detection
delay counts rows of traffic, not how far the replay outran the forecaster."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from flts.bus import open_bus
from flts.data.spec import FeatureSpec
from flts.data.synthetic import synthetic_traffic
from flts.events import FORECASTS, Event, ForecastPublishedEvent
from flts.live.monitor import read_figures
from flts.live.replay import replay, replay_rows
from flts.live.triggers import read_triggers
from flts.storage import ObjectStore
from servers.client import champion_run, upload_dataset, wait_http

#: Monitor and ledger settings for a loop that turns in seconds.
LIVE_SETTINGS = {
    "FLTS_LIVE__MONITOR_INTERVAL_SECONDS": "1",
    "FLTS_LIVE__LEDGER_FLUSH_SECONDS": "0.5",
}
#: The detector may fire once 250 forecasts are scored (60 before the change): by then the
#: observations hold ~190 rows of the changed traffic, most of a retraining set of 300 rows
#: whose newest 20% (its test split) are all changed. With the defaults (alarm after 60,
#: 720 rows filled up from the upload) the set would be mostly the old regime.
DRIFT_SETTINGS = {
    **LIVE_SETTINGS,
    "FLTS_LIVE__DRIFT_MIN_SAMPLES": "250",
    "FLTS_LIVE__RETRAIN_MIN_ROWS": "300",
}
SHIFT_AFTER = 60
SCALE = 2.5
AFTER_SWAP_ROWS = 80


@dataclass(frozen=True)
class RegimeChange:
    """What the scenario saw: the two champions, their live step-1 figures, the trigger
    records and the figures for the closing report."""

    first: str
    second: str
    before: dict[str, Any]
    after: dict[str, Any]
    triggers: list[dict[str, Any]]
    report: dict[str, Any]


class PushedForecasts:
    """The first target time of every forecast pushed for ``identifier``, from a consumer
    group of its own on ``forecasts`` (a background thread: one group join, on Kafka too)."""

    def __init__(self, bus_url: str, identifier: str) -> None:
        self.identifier = identifier
        self.first_times: set[pd.Timestamp] = set()
        self._stop = threading.Event()
        self._bus = open_bus(bus_url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._bus.consume(
            FORECASTS,
            f"live-loop-{uuid.uuid4().hex[:8]}",
            self._seen,
            stop=self._stop,
            poll_timeout=0.2,
        )

    def _seen(self, event: Event) -> None:
        if isinstance(event, ForecastPublishedEvent) and event.identifier == self.identifier:
            self.first_times.add(pd.Timestamp(str(event.payload.forecast[0]["time"])))

    def has(self, first_time: pd.Timestamp) -> bool:
        return first_time in self.first_times

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._bus.close()


def run_regime_change(
    *,
    gateway: str,
    bus_url: str,
    api: str,
    key: str,
    store: ObjectStore,
    identifier: str,
    workdir: Path,
    champion_timeout: float = 180,
    retrain_timeout: float = 240,
) -> RegimeChange:
    """Upload, replay with the change, wait for the retrained champion and its figures."""
    frame = synthetic_traffic(2_100, seed=6, start="2018-02-05 00:00:00")
    train = frame.iloc[:1_440].to_csv(index=False).encode()
    test = frame.iloc[1_440:].to_csv(index=False).encode()
    response = upload_dataset(gateway, train, test, identifier, key=key, timeout=60)
    if response.status_code != 201:
        raise AssertionError(f"upload refused ({response.status_code}): {response.text}")
    first = str(
        wait_http(lambda: champion_run(api, identifier, key), champion_timeout, "first champion")
    )

    csv = workdir / f"{identifier}-live.csv"
    csv.write_bytes(test)
    spec = FeatureSpec()
    rows = replay_rows(csv, spec, shift_after=SHIFT_AFTER, scale=SCALE)
    pushed = PushedForecasts(bus_url, identifier)
    try:
        return _replay_with_change(
            gateway, api, key, store, identifier, rows, spec, pushed, first, retrain_timeout
        )
    finally:
        pushed.close()


def _replay_with_change(
    gateway: str,
    api: str,
    key: str,
    store: ObjectStore,
    identifier: str,
    rows: list[dict[str, Any]],
    spec: FeatureSpec,
    pushed: PushedForecasts,
    first: str,
    retrain_timeout: float,
) -> RegimeChange:
    replayed = 0

    def feed(count: int) -> None:
        """Send the next ``count`` rows, each after the forecast from the row before."""
        nonlocal replayed
        for row in rows[replayed : replayed + count]:
            replay([row], identifier=identifier, gateway=gateway, api_key=key)
            replayed += 1
            if replayed >= spec.lags:  # a window of stored rows: a forecast is due
                after = pd.Timestamp(row[spec.time_column]) + spec.step
                wait_http(partial(pushed.has, after), 60, f"the forecast for {after}")

    feed(SHIFT_AFTER)
    triggers: list[dict[str, Any]] = []
    while replayed < 460 and not triggers:  # the changed traffic, until the detector fires
        feed(20)
        triggers = read_triggers(store, identifier)
    if not triggers:
        raise AssertionError("no drift detected over 400 changed rows")
    requested = datetime.fromisoformat(triggers[0]["requested_at"])

    def retrained() -> str | None:
        run = champion_run(api, identifier, key)
        return run if run is not None and run != first else None

    second = str(wait_http(retrained, retrain_timeout, "the retrained champion"))
    swapped = datetime.now(UTC)
    # Enough changed traffic for the new champion's live figures (40 scored), and less than
    # its own detector's minimum sample: this scenario is about the one change.
    feed(min(AFTER_SWAP_ROWS, len(rows) - replayed))

    def figures_of(run: str) -> dict[str, Any] | None:
        figures = (read_figures(store) or {}).get("figures", [])
        return next((f for f in figures if f["run_id"] == run and f["step"] == 1), None)

    def enough_scored() -> dict[str, Any] | None:
        figure = figures_of(second)
        return figure if figure is not None and figure["n"] >= 40 else None

    after = wait_http(enough_scored, 90, "live figures of the new champion")
    if after is None:  # wait_http returns the first truthy answer; this keeps mypy informed
        raise AssertionError(f"no live figures of the retrained champion {second}")
    before = figures_of(first)
    if before is None:
        raise AssertionError(f"no live figures of the first champion {first}")
    final = read_triggers(store, identifier)
    report: dict[str, Any] = {
        "retrain_to_swap_seconds": round((swapped - requested).total_seconds(), 1),
        "live_nrmse_before": before["nrmse"],
        "live_nrmse_after": after["nrmse"],
        "scored_before": before["n"],
        "scored_after": after["n"],
        "triggers": len(final),
    }
    if final and "at" in final[0].get("evidence", {}):
        detected_at = pd.Timestamp(str(final[0]["evidence"]["at"]))
        report["detection_delay_rows"] = int(
            (detected_at - pd.Timestamp(rows[SHIFT_AFTER]["time"])) / spec.step
        )
    return RegimeChange(first, second, before, after, final, report)
