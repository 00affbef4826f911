"""The drift detector on synthetic error-ratio streams: a stationary stream (live error as in
evaluation) rarely alarms, a level shift alarms within a bounded delay, an alarm restarts the
detector, and the hourly profile keeps a day's rhythm from reading as drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flts.live.drift import DriftDetector, DriftSettings, hourly_profile

SEEDS = 100
SHIFT_AT = 300


def stream(seed: int, rows: int, kind: str) -> np.ndarray:
    """Error ratios with mean 1: half-normal (independent) or log-normal with AR(1)
    correlation 0.5 on the log scale (bursty, correlated errors)."""
    rng = np.random.default_rng(seed)
    if kind == "independent":
        return np.abs(rng.normal(0.0, np.sqrt(np.pi / 2), rows))
    noise = rng.normal(0.0, 1.0, rows)
    z = np.empty(rows)
    z[0] = noise[0]
    for i in range(1, rows):
        z[i] = 0.5 * z[i - 1] + np.sqrt(1 - 0.25) * noise[i]
    sigma = 0.8
    return np.exp(sigma * z - sigma**2 / 2)


def first_alarm(values: np.ndarray, settings: DriftSettings) -> int | None:
    detector = DriftDetector(settings)
    for i, value in enumerate(values):
        if detector.update(float(value)) is not None:
            return i
    return None


@pytest.mark.parametrize("kind", ["independent", "correlated"])
def test_a_stationary_stream_rarely_alarms(kind: str) -> None:
    alarms = 0
    for seed in range(SEEDS):
        detector = DriftDetector(DriftSettings())
        values = stream(seed, 2_000, kind)
        assert values.mean() == pytest.approx(1.0, abs=0.15)
        alarms += sum(detector.update(float(v)) is not None for v in values)
    # 2,000 rows = 2.8 days of 2-minute rows per seed; at most 3 false alarms in 100 seeds
    assert alarms <= 3, f"{alarms} false alarms in {SEEDS} x 2000 rows ({kind})"


@pytest.mark.parametrize(
    ("kind", "scale", "median_bound", "max_bound"),
    [
        ("independent", 2.5, 45, 100),
        ("correlated", 2.5, 55, 160),
        ("independent", 2.0, 80, 200),
    ],
)
def test_a_level_shift_alarms_within_a_bounded_delay(
    kind: str, scale: float, median_bound: int, max_bound: int
) -> None:
    delays = []
    for seed in range(SEEDS):
        values = stream(seed, 1_000, kind)
        values[SHIFT_AT:] *= scale
        at = first_alarm(values, DriftSettings())
        assert at is not None, f"seed {seed}: no alarm"
        assert at >= SHIFT_AT, f"seed {seed}: alarm at {at}, before the shift"
        delays.append(at - SHIFT_AT)
    median, worst = float(np.median(delays)), max(delays)
    print(f"detection delay ({kind}, x{scale}): median {median} rows, max {worst} rows")
    assert median <= median_bound
    assert worst <= max_bound
    # the evidence's change-point estimate is about the true delay
    detector = DriftDetector(DriftSettings())
    values = stream(0, 1_000, kind)
    values[SHIFT_AT:] *= scale
    alarm = next(a for v in values if (a := detector.update(float(v))) is not None)
    assert alarm.live_ratio > 1.5
    assert alarm.rows_since_change <= alarm.samples - SHIFT_AT + 30


def test_no_alarm_before_the_minimum_sample_and_a_fresh_start_after_one() -> None:
    settings = DriftSettings(min_samples=100)
    detector = DriftDetector(settings)
    shifted = np.full(400, 4.0)  # worse from the first forecast
    alarms = [i for i, v in enumerate(shifted) if detector.update(float(v)) is not None]
    assert alarms[0] == settings.min_samples - 1  # not before the minimum sample
    # each alarm restarts the detector: the next needs the minimum sample again
    assert np.diff(alarms).min() >= settings.min_samples
    restored = DriftDetector.from_state(settings, detector.state())
    assert restored.state() == detector.state()


def test_a_single_burst_never_alarms_alone() -> None:
    detector = DriftDetector(DriftSettings(min_samples=1))
    values = np.ones(500)
    values[200] = 1_000.0  # one forecast a thousand times off
    assert all(detector.update(float(v)) is None for v in values)


def test_the_hourly_profile_removes_the_daily_rhythm() -> None:
    """Errors that follow the load (three times the average in the afternoon) alarm every
    day on the raw ratio; divided by the profile of the same rhythm they do not."""
    times = pd.date_range("2026-01-05", periods=720 * 10, freq="2min")
    hours = np.asarray(times.hour + times.minute / 60)
    rhythm = 1.0 + 0.8 * np.sin(2 * np.pi * (hours - 9) / 24)
    rng = np.random.default_rng(1)
    level = 1e6 * rhythm * rng.lognormal(0.0, 0.2, len(times))
    test = pd.DataFrame({"down": level, "up": level / 4}, index=times)[: 720 * 5]
    profile = np.asarray(hourly_profile(test, ["down", "up"]))
    assert profile.max() / profile.min() > 2
    errors = stream(2, len(times), "independent") * rhythm / rhythm.mean()
    raw = DriftDetector(DriftSettings())
    assert sum(raw.update(float(v)) is not None for v in errors) >= 3
    flat = DriftDetector(DriftSettings())
    hardness = profile[np.asarray(times.hour)]
    assert all(flat.update(float(v)) is None for v in errors / hardness)
