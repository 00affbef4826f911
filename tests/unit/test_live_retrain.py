"""Retraining triggers on the memory backends: served forecasts scored by the monitor feed the
drift detector, a regime change publishes exactly one ``retrain-requested`` (not repeated by a
restarted monitor), preprocess turns it into a new dataset of the station's observations and
a ``training-data`` event with a new config hash, and every trigger and its outcome is
recorded; the schedule and the event itself; too few observations are refused, not a crash."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.events import (
    DATASET_UPLOADED,
    RETRAIN_REQUESTED,
    TRAINING_DATA,
    Event,
    RetrainReason,
    RetrainRequested,
    RetrainRequestedEvent,
    TrainingDataEvent,
    decode,
    encode,
    new_event,
)
from flts.exceptions import DataValidationError, EventValidationError
from flts.live.drift import DriftSettings
from flts.live.ledger import ForecastLedger
from flts.live.monitor_service import MonitorService
from flts.live.observations import ObservationLog
from flts.live.triggers import RetrainTriggers, Schedule, read_triggers, request_retrain
from flts.promotion import Promotion, PromotionStore
from flts.promotion.decisions import decision_key
from flts.services.context import ServiceContext
from flts.services.gateway import ingest_dataset
from flts.services.preprocess import PreprocessService
from flts.settings import LiveSettings, Settings
from helpers import memory_settings

SPEC = FeatureSpec()
TARGETS = list(SPEC.targets)
#: One station's series: rows 0-1999 are its upload (the last 500 its test file), the rest
#: arrive live; from row SHIFT on, the station carries three times the traffic.
SERIES = validate_rows(synthetic_traffic(2_700, seed=7), SPEC)
UPLOAD, SHIFT = 2_000, 2_300


def _drain(context: ServiceContext, topic: str) -> list[Event]:
    events: list[Event] = []
    context.bus.consume(topic, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return events


def _live(rows: slice) -> pd.DataFrame:
    """Observed rows of :data:`SERIES`, scaled from :data:`SHIFT` on."""
    frame = SERIES.iloc[rows].copy()
    frame.loc[frame.index >= SERIES.index[SHIFT], TARGETS] *= 3.0
    return frame


class Station:
    """One station with a champion: its upload processed, observations and served forecasts
    (persistence from the observed origin: the champion is judged on the same rule)."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.log = ObservationLog(context.store, SPEC)
        self.ledger = ForecastLedger(context.store, "replica-a")
        self.served = UPLOAD
        self.config_hash = self._upload_and_promote()

    def _upload_and_promote(self) -> str:
        frame = SERIES.iloc[:UPLOAD].reset_index()
        train = frame.iloc[:1_500].to_csv(index=False).encode()
        test = frame.iloc[1_500:].to_csv(index=False).encode()
        ingest_dataset(self.context, train=train, test=test, identifier="S1")
        [upload] = _drain(self.context, DATASET_UPLOADED)
        keys = PreprocessService(self.context).process(upload)  # type: ignore[arg-type]
        # persistence's MAE5 on the test split: the champion's evaluation error
        values = SERIES.iloc[1_500:UPLOAD][TARGETS].to_numpy()
        mae5 = float(np.abs(np.diff(values, axis=0)).mean())
        PromotionStore(self.context.store).record(
            Promotion(
                run_id="run-1",
                model_type="PERSISTENCE",
                config_hash=keys.config_hash,
                identifier="S1",
                scores={"nrmse": 0.3, "mae5": mae5},
            )
        )
        return keys.config_hash

    def report(self, until: int) -> None:
        """Rows up to ``until`` arrive; a forecast was served for each from the row before."""
        live = _live(slice(self.served - 1, until))
        self.log.append("S1", live.iloc[1:])
        model = {"identifier": "S1", "run_id": "run-1", "model_type": "PERSISTENCE"}
        for origin, target in zip(live.index[:-1], live.index[1:], strict=True):
            values = live.loc[origin, TARGETS].to_numpy()
            record = {
                "time": target.isoformat(),
                **dict(zip(TARGETS, values.tolist(), strict=True)),
            }
            self.ledger.record(
                orjson.dumps({"forecast": [record], "model": {**model, "config_hash": "c"}})
            )
        self.ledger.flush()
        self.served = until


def test_one_drift_gives_one_retraining_on_the_stations_observations(
    settings: Settings,
) -> None:
    context = ServiceContext(settings)
    station = Station(context)
    monitor = MonitorService(context)
    for until in range(UPLOAD + 50, SHIFT + 1, 50):  # a pass every 50 rows: stationary
        station.report(until)
        monitor.tick()
    assert _drain(context, RETRAIN_REQUESTED) == []
    for until in range(SHIFT + 25, SHIFT + 201, 25):  # three times the traffic
        station.report(until)
        monitor.tick()
        if until in (SHIFT + 100, SHIFT + 150):  # restarts before and after the alarm
            monitor = MonitorService(context)  # neither lose nor repeat it
    [event] = _drain(context, RETRAIN_REQUESTED)
    assert isinstance(event, RetrainRequestedEvent)
    assert event.identifier == "S1"
    assert event.payload.reason is RetrainReason.DRIFT
    assert event.payload.champion_run_id == "run-1"
    evidence = event.payload.evidence
    delay = int(SERIES.index.searchsorted(pd.Timestamp(str(evidence["at"])))) - SHIFT
    print(f"drift detected {delay} rows after the shift, evidence {evidence}")
    assert 0 <= delay <= 150
    assert float(str(evidence["live_ratio"])) > 2
    assert float(str(evidence["live_mae5"])) > 2 * float(str(evidence["evaluation_mae5"]))

    PreprocessService(context).handle(event)
    [training] = _drain(context, TRAINING_DATA)
    assert isinstance(training, TrainingDataEvent)
    assert training.identifier == "S1"
    assert training.correlation_id == event.correlation_id
    assert training.config_hash != station.config_hash
    [entry] = read_triggers(context.store, "S1")
    assert entry["reason"] == "drift"
    outcome = entry["outcome"]
    assert (outcome["status"], outcome["config_hash"]) == ("prepared", training.config_hash)
    assert entry["promoted"] is None  # not decided yet
    meta = context.store.get_json(f"datasets/{outcome['dataset_id']}/meta.json")
    assert meta["source"] == "observations"
    assert meta["trigger"]["event_id"] == event.event_id
    observed = station.served - UPLOAD
    # 500 observations fill up to 720 rows with the end of the upload, continuing it
    assert meta["rows"] == {"observations": observed, "padded": 720 - observed, "missing": 0}
    assert meta["train"]["end"] == SERIES.index[station.served - 1].isoformat()

    PreprocessService(context).handle(event)  # redelivered: the same set, not another one
    [again] = _drain(context, TRAINING_DATA)[-1:]
    assert again.config_hash == training.config_hash
    assert len(read_triggers(context.store, "S1")) == 1
    datasets = {k.split("/")[1] for k in context.store.list("datasets")}
    assert len(datasets) == 2  # the upload and the one retraining set

    decision = {"state": "done", "champion": {"run_id": "run-2"}}
    context.store.put_json(decision_key("S1", str(training.config_hash)), decision)
    assert read_triggers(context.store, "S1")[0]["promoted"] is True
    context.close()


def test_a_new_champion_gets_a_fresh_detector_and_the_cooldown_holds(settings: Settings) -> None:
    context = ServiceContext(settings)
    station = Station(context)
    triggers = RetrainTriggers(
        context.store, context.bus, SPEC, drift=DriftSettings(), cooldown=timedelta(hours=1)
    )
    scored = _scored(station, SHIFT, SHIFT + 400)
    now = datetime.now(UTC)
    assert len(triggers.observe(scored.iloc[:200], now)) == 1
    assert triggers.observe(scored.iloc[200:300], now + timedelta(minutes=30)) == []
    # after the cooldown the same champion may trigger again, from a fresh start
    assert len(triggers.observe(scored.iloc[300:], now + timedelta(hours=2))) == 1
    PromotionStore(context.store).record(
        Promotion(run_id="run-2", model_type="RIDGE", config_hash="ab12cd34", identifier="S1")
    )  # no evaluation MAE: the detector cannot compare, so it stays silent
    assert triggers.observe(scored.assign(run_id="run-2"), now + timedelta(hours=9)) == []
    assert triggers.watches["S1"].run_id == "run-2"
    assert len(_drain(context, RETRAIN_REQUESTED)) == 2
    context.close()


def _scored(station: Station, start: int, end: int) -> pd.DataFrame:
    """Monitor-scored steps of persistence forecasts for rows ``start..end`` of the live
    (shifted) series."""
    live = _live(slice(start - 1, end))
    return pd.DataFrame(
        {
            "identifier": "S1",
            "run_id": "run-1",
            "step": 1,
            "time": live.index[1:],
            **{t: live[t].to_numpy()[:-1] for t in TARGETS},
            **{f"{t}:actual": live[t].to_numpy()[1:] for t in TARGETS},
        }
    )


def test_the_schedule_by_rows_and_hours(settings: Settings) -> None:
    context = ServiceContext(settings)
    station = Station(context)
    station.report(UPLOAD + 10)
    schedule = Schedule(every=timedelta(hours=6), every_rows=100)
    triggers = RetrainTriggers(context.store, context.bus, SPEC, drift=None, schedule=schedule)
    now = datetime.now(UTC)
    seen = _scored(station, UPLOAD + 1, UPLOAD + 10)
    assert triggers.observe(seen, now) == []  # the clocks start
    station.report(UPLOAD + 90)
    assert triggers.observe(seen.iloc[:0], now + timedelta(hours=1)) == []
    station.report(UPLOAD + 110)  # 100 rows since the start
    [by_rows] = triggers.observe(seen.iloc[:0], now + timedelta(hours=2))
    assert by_rows.payload.reason is RetrainReason.SCHEDULE
    assert by_rows.payload.evidence == {"rows": 100}
    triggers.save()
    restarted = RetrainTriggers(context.store, context.bus, SPEC, drift=None, schedule=schedule)
    assert restarted.observe(seen.iloc[:0], now + timedelta(hours=3)) == []
    [by_hours] = restarted.observe(seen.iloc[:0], now + timedelta(hours=8, minutes=1))
    assert by_hours.payload.evidence == {"hours": 6.0}
    assert by_hours.event_id != by_rows.event_id
    assert [e["reason"] for e in read_triggers(context.store)] == ["schedule", "schedule"]
    context.close()


def test_too_few_observations_are_refused_with_the_reason(settings: Settings) -> None:
    context = ServiceContext(settings)
    station = Station(context)
    station.report(UPLOAD + 100)  # 100 observations: fewer than a 144-row test part
    event = request_retrain(
        context.store, context.bus, "S1", RetrainReason.MANUAL, champion_run_id="run-1"
    )
    with pytest.raises(DataValidationError, match="fewer than the 144 rows"):
        PreprocessService(context).handle(event)
    assert _drain(context, TRAINING_DATA) == []
    [entry] = read_triggers(context.store, "S1")
    assert entry["outcome"]["status"] == "refused"
    assert "wait for more observations" in entry["outcome"]["reason"]
    context.close()


def test_a_station_without_observations_or_its_dataset_is_refused(tmp_path: Path) -> None:
    context = ServiceContext(memory_settings(tmp_path, live=LiveSettings(retrain_min_rows=50)))
    unknown = request_retrain(
        context.store, context.bus, "S9", RetrainReason.MANUAL, champion_run_id=None
    )
    with pytest.raises(DataValidationError, match="no stored observations"):
        PreprocessService(context).handle(unknown)
    ObservationLog(context.store, SPEC).append("S9", SERIES.iloc[:40])
    short = request_retrain(
        context.store, context.bus, "S9", RetrainReason.MANUAL, champion_run_id=None
    )
    with pytest.raises(DataValidationError, match="needs at least 50"):
        PreprocessService(context).handle(short)
    # consumed from the bus: dead-lettered with the reason, the group goes on
    service = PreprocessService(context)
    context.bus.consume(service.topics, service.group, service.handle, max_idle=0.3)
    [letter, other] = context.bus.dead_letters(limit=10)
    assert {letter.source_topic, other.source_topic} == {RETRAIN_REQUESTED}
    assert any("needs at least 50" in d.error for d in (letter, other))
    context.close()


def test_the_retrain_requested_event() -> None:
    payload = RetrainRequested(
        reason=RetrainReason.DRIFT,
        evidence={"statistic": 31.5, "rows_since_change": 24, "at": "2018-02-08T04:00:00"},
        champion_run_id="run-1",
    )
    event = new_event(payload, identifier="S1", event_id="fixed-id")
    back = decode(encode(event))
    assert back == event
    assert back.event_id == "fixed-id"
    assert back.type == RETRAIN_REQUESTED
    with pytest.raises(EventValidationError, match="reason"):
        decode(encode(event).replace(b'"drift"', b'"whim"'))
    with pytest.raises(ValueError, match="finite"):
        RetrainRequested(reason=RetrainReason.MANUAL, evidence={"x": float("nan")})
