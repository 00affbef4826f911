"""Drift detection on live error: when to ask for a retraining (docs/architecture.md, rule 18).

**What is tested.** Each scored forecast (horizon step 1 of the champion, one per target
time) gives one number, its *error ratio*::

    x = mean over targets |forecast - actual|  /  (evaluation MAE5 * profile[hour of day])

The champion's MAE5 on its test split (the promotion's ``scores``) is the same average over
the same targets in the same units, so without the profile the mean of ``x`` over a window
*is* the live MAE5 over the evaluation MAE5: 1.0 means "as good live as when it was judged".
Why MAE and not the NRMSE the gate ranks on: an absolute error is defined per forecast and adds
up, so a per-step stream exists whose mean is the live figure; a squared error would let one
burst of traffic dominate. The ratio is unitless, so one set of settings fits every station
whatever its traffic volume.

The *profile* (:func:`hourly_profile`) is how much harder each hour of the day is than the
average, measured on the same test split by persistence's error (the one forecast that
needs no model): cell traffic, and every model's error with it, swings several-fold between
night and afternoon, and without it a day's busy hours alone would read as drift. Dividing by
it keeps a regime change (every hour harder than it was) and removes the daily rhythm (the
hours the evaluation already saw).

**The test.** Page's one-sided CUSUM (the Page-Hinkley statistic with a known reference
mean: the evaluation error, ratio 1)::

    g = max(0, g + min(x, clip) - (1 + delta))        alarm when g > threshold

``delta`` is the excess tolerated (live error up to ``1 + delta`` times the evaluation error
never accumulates), ``threshold`` trades delay for false alarms, ``clip`` bounds what one
forecast can add (``clip - 1 - delta``), so a single burst never alarms alone. The reference
is the evaluation error rather than a running mean of live error: a champion that is worse
live than it was judged from its very first forecast (the regime changed before it was
served) is caught too, and a retraining on recent rows resets the reference to what recent
rows allow. Expected delay after a shift to ratio ``r`` (``r`` > ``1 + delta``) is about
``threshold / (r - 1 - delta)`` forecasts: 30 at ``r`` = 2.5 with the defaults
(``tests/unit/test_live_drift.py`` measures it).

**Debounce.** No alarm before ``min_samples`` forecasts of the champion; after an alarm the
detector is silent for ``cooldown`` and then starts again from zero; a new champion gets a
new detector (:class:`flts.live.triggers.RetrainTriggers` keeps one per identifier).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Rows of the average an hour's profile is shrunk with (an hour the test split saw
#: rarely stays near 1 instead of resting on a few rows).
PROFILE_PRIOR_ROWS = 30


def hourly_profile(test: pd.DataFrame, targets: list[str]) -> list[float]:
    """Persistence's step-1 error per hour of day over its mean, from a test split in
    original units (indexed by time); 24 values, 1.0 for an hour it never saw."""
    values = test[targets].to_numpy(np.float64)
    errors = np.abs(np.diff(values, axis=0)).mean(axis=1)
    hours = pd.DatetimeIndex(test.index[1:]).hour.to_numpy()
    mean = float(errors.mean()) if len(errors) else 0.0
    if not mean > 0:
        return [1.0] * 24
    sums = np.bincount(hours, weights=errors, minlength=24)
    counts = np.bincount(hours, minlength=24)
    profile = (sums + PROFILE_PRIOR_ROWS * mean) / (counts + PROFILE_PRIOR_ROWS) / mean
    return [float(v) for v in profile]


@dataclass(frozen=True)
class DriftSettings:
    """The detector's parameters (``live.drift_*`` in :class:`flts.settings.LiveSettings`)."""

    delta: float = 0.5
    threshold: float = 30.0
    min_samples: int = 60
    clip: float = 5.0


@dataclass(frozen=True)
class Alarm:
    """Why the detector fired: the evidence of a ``retrain-requested`` event."""

    statistic: float
    samples: int  # forecasts seen since the detector (re)started
    rows_since_change: int  # forecasts since the statistic last left zero: the estimated delay
    live_ratio: float  # mean error ratio of those forecasts (live over evaluation error)

    def evidence(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class DriftDetector:
    """One champion's CUSUM state (plain fields, so it is saved as JSON with the monitor's)."""

    settings: DriftSettings = field(default_factory=DriftSettings)
    statistic: float = 0.0
    samples: int = 0
    run_length: int = 0  # forecasts since the statistic was last zero
    run_sum: float = 0.0  # sum of their (unclipped) ratios

    def update(self, ratio: float) -> Alarm | None:
        """Feed one forecast's error ratio; an :class:`Alarm` when the detector fires (it
        then starts again from zero: the caller decides about the cooldown)."""
        s = self.settings
        self.samples += 1
        self.statistic = max(0.0, self.statistic + min(ratio, s.clip) - 1.0 - s.delta)
        if self.statistic == 0.0:
            self.run_length, self.run_sum = 0, 0.0
        else:
            self.run_length += 1
            self.run_sum += ratio
        if self.samples < s.min_samples or self.statistic <= s.threshold:
            return None
        alarm = Alarm(
            statistic=self.statistic,
            samples=self.samples,
            rows_since_change=self.run_length,
            live_ratio=self.run_sum / self.run_length,
        )
        self.reset()
        return alarm

    def reset(self) -> None:
        """Start again: statistic and sample count to zero (the minimum sample applies again)."""
        self.statistic, self.samples, self.run_length, self.run_sum = 0.0, 0, 0, 0.0

    def state(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "samples": self.samples,
            "run_length": self.run_length,
            "run_sum": self.run_sum,
        }

    @classmethod
    def from_state(cls, settings: DriftSettings, state: dict[str, Any]) -> DriftDetector:
        return cls(
            settings=settings,
            statistic=float(state.get("statistic", 0.0)),
            samples=int(state.get("samples", 0)),
            run_length=int(state.get("run_length", 0)),
            run_sum=float(state.get("run_sum", 0.0)),
        )
