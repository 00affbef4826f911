"""A realistic synthetic traffic table with the schema of the Barcelona LTE datasets.

Used for demos when no data is given and for tests (no real data in the repository): daily and
weekly cycles, random bursts, multiplicative noise, and the inner relations of the real data
(resource blocks follow bytes, users follow the daily cycle, MCS hovers around a mean).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flts.data.spec import LTE_FEATURES


def synthetic_traffic(
    rows: int = 2_000,
    *,
    start: str = "2018-02-05 00:00:00",
    frequency: str = "2min",
    seed: int = 0,
    missing_fraction: float = 0.0,
    level: float = 1.0,
    daily_amplitude: float = 0.45,
    peak_hour: float = 15.0,
    weekend_factor: float = 0.75,
    noise: float = 0.15,
    burst_every: int = 400,
    burst_scale: float = 1.0,
) -> pd.DataFrame:
    """Return a DataFrame with a ``time`` column and the 11 LTE feature columns.

    ``missing_fraction`` blanks that share of the ``mcs_*``/``rb_*`` cells (as in the real
    files) to exercise NaN handling.

    The shape parameters make stations of a synthetic fleet differ from one another (a
    fleet of identical series would tell nothing about per-station models); their defaults
    give exactly the series this function always gave, so existing tests and benchmarks
    keep their data:

    * ``level`` scales traffic and users (a busy downtown cell against a quiet suburb);
    * ``daily_amplitude`` (0 to 0.55) is the depth of the daily cycle around 0.55, whose peak
      falls at ``peak_hour``;
    * ``weekend_factor`` multiplies Saturdays and Sundays;
    * ``noise`` is the sigma of the multiplicative lognormal noise on the load;
    * one burst (an event, a handover storm) per ``burst_every`` rows on average, each adding
      ``burst_scale`` times a uniform 0.5 to 2.0 to the load for 5 to 30 rows.
    """
    if level <= 0 or noise < 0 or burst_every < 1 or burst_scale < 0:
        raise ValueError("level must be > 0, noise and burst_scale >= 0, burst_every >= 1")
    if not 0.0 <= daily_amplitude <= 0.55:
        raise ValueError("daily_amplitude must lie in [0, 0.55] (the load stays positive)")
    rng = np.random.default_rng(seed)
    times = pd.date_range(start=start, periods=rows, freq=frequency)
    hours = (times.hour + times.minute / 60.0).to_numpy()
    weekday = times.day_of_week.to_numpy()
    # sin peaks a quarter day after its zero: peak_hour 15 is the historical (hours - 9).
    phase = peak_hour - 6.0
    daily = 0.55 + daily_amplitude * np.sin(2 * np.pi * (hours - phase) / 24.0)
    weekly = np.where(weekday >= 5, weekend_factor, 1.0)
    bursts = np.zeros(rows)
    for begin in rng.integers(0, max(rows - 30, 1), size=max(rows // burst_every, 1)):
        length = int(rng.integers(5, 30))
        bursts[begin : begin + length] += burst_scale * rng.uniform(0.5, 2.0)
    load = level * daily * weekly * (1.0 + bursts) * rng.lognormal(0.0, noise, rows)

    down = 2.0e8 * load
    up = 1.5e7 * load * rng.lognormal(0.0, 0.3, rows)
    users = np.rint(6_000 * level * daily * weekly * rng.lognormal(0.0, 0.05, rows))
    frame = pd.DataFrame(
        {
            "time": times.strftime("%Y-%m-%d %H:%M:%S"),
            "down": down,
            "up": up,
            "rnti_count": users,
            "mcs_down": np.clip(rng.normal(14.0, 1.5, rows), 0, 28),
            "mcs_down_var": np.clip(rng.normal(80.0, 8.0, rows), 0, None),
            "mcs_up": np.clip(rng.normal(15.0, 2.0, rows), 0, 28),
            "mcs_up_var": np.clip(rng.normal(60.0, 10.0, rows), 0, None),
            "rb_down": 0.05 * load,
            "rb_down_var": 5e-8 * rng.lognormal(0.0, 0.2, rows),
            "rb_up": 0.01 * load * rng.lognormal(0.0, 0.3, rows),
            "rb_up_var": 2e-8 * rng.lognormal(0.0, 0.2, rows),
        }
    )
    if missing_fraction > 0:
        sparse = [c for c in LTE_FEATURES if c.startswith(("mcs_", "rb_"))]
        mask = rng.random((rows, len(sparse))) < missing_fraction
        frame[sparse] = frame[sparse].mask(mask)
    return frame
