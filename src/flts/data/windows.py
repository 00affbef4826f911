"""Sliding windows: ``lags`` rows of inputs aligned with the next ``horizon`` rows of targets.

Built with strided views (no per-row Python loops). Windows carry their timestamps so that
calendar-aware models (seasonal-naive, Prophet) and time features see real times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError

_SECONDS_PER_DAY = 86_400.0
_SECONDS_PER_WEEK = 7 * _SECONDS_PER_DAY


@dataclass(frozen=True)
class Windows:
    """A batch of windows in original units.

    ``x``: ``(n, lags, len(spec.inputs))``; ``y``: ``(n, horizon, len(spec.targets))`` or
    ``None`` at inference; ``input_times``: ``(n, lags)``; ``target_times``: ``(n, horizon)``
    (``datetime64[ns]``).
    """

    x: np.ndarray
    y: np.ndarray | None
    input_times: np.ndarray
    target_times: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray | slice) -> Windows:
        """A subset of the windows (same order as ``index``)."""
        return Windows(
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            input_times=self.input_times[index],
            target_times=self.target_times[index],
        )

    @property
    def targets(self) -> np.ndarray:
        """``y``, which must be present (training and evaluation windows)."""
        if self.y is None:
            raise DataValidationError("these windows have no targets (inference windows)")
        return self.y


def make_windows(values: np.ndarray, times: np.ndarray, spec: FeatureSpec) -> Windows:
    """All windows of a contiguous series.

    ``values`` is ``(T, len(spec.inputs))`` in spec order, ``times`` is ``(T,)``. Window ``i``
    takes rows ``i .. i+lags-1`` as input and rows ``i+lags .. i+lags+horizon-1`` of the
    targets as output, so ``n = T - lags - horizon + 1``.
    """
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype="datetime64[ns]")
    lags, horizon = spec.lags, spec.horizon
    n = values.shape[0] - lags - horizon + 1
    if n <= 0:
        raise DataValidationError(
            f"too few rows for one window: {values.shape[0]} (need lags {lags} + horizon {horizon})"
        )
    # sliding_window_view puts the window axis last: (T-w+1, F, w) -> (T-w+1, w, F).
    x = sliding_window_view(values[: n + lags - 1], lags, axis=0).transpose(0, 2, 1)
    targets = values[lags:, spec.target_positions]
    y = sliding_window_view(targets, horizon, axis=0).transpose(0, 2, 1)[:n]
    input_times = sliding_window_view(times[: n + lags - 1], lags)
    target_times = sliding_window_view(times[lags:], horizon)[:n]
    # Copies detach the views from the (possibly large) source arrays.
    return Windows(
        x=np.ascontiguousarray(x),
        y=np.ascontiguousarray(y),
        input_times=np.ascontiguousarray(input_times),
        target_times=np.ascontiguousarray(target_times),
    )


def observed_series(
    windows: Windows, positions: list[int], *, with_targets: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The contiguous series behind a batch of windows: ``(times, values)`` of the input
    columns at ``positions``, sorted by time with each timestamp once.

    Windows overlap, so most rows appear many times; the first ``lags`` rows are only ever
    inputs and the last ``horizon`` rows only ever targets, so training windows need both
    parts (``with_targets``) to recover every row. ``positions`` must be the targets'
    positions when ``with_targets`` is set.
    """
    times = [windows.input_times.reshape(-1)]
    values = [windows.x[:, :, positions].reshape(-1, len(positions))]
    if with_targets:
        times.append(windows.target_times.reshape(-1))
        values.append(windows.targets.reshape(-1, len(positions)))
    unique, first = np.unique(np.concatenate(times).astype("datetime64[ns]"), return_index=True)
    return unique, np.concatenate(values)[first]


def last_window(values: np.ndarray, times: np.ndarray, spec: FeatureSpec) -> Windows:
    """The single inference window at the end of a history: its last ``lags`` rows, with the
    next ``horizon`` timestamps on the spec's grid as target times."""
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype="datetime64[ns]")
    if values.shape[0] < spec.lags:
        raise DataValidationError(f"too few rows: {values.shape[0]} (need at least {spec.lags})")
    step = np.timedelta64(spec.step.value, "ns")
    future = times[-1] + step * np.arange(1, spec.horizon + 1)
    return Windows(
        x=values[None, -spec.lags :],
        y=None,
        input_times=times[None, -spec.lags :],
        target_times=future[None, :],
    )


def time_features(times: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Cyclic calendar encodings of ``times`` (any shape) stacked on a new last axis."""
    seconds = np.asarray(times, dtype="datetime64[ns]").astype(np.int64) / 1e9
    day_angle = 2.0 * np.pi * (seconds % _SECONDS_PER_DAY) / _SECONDS_PER_DAY
    # 1970-01-01 was a Thursday; the phase does not matter for a cyclic encoding.
    week_angle = 2.0 * np.pi * (seconds % _SECONDS_PER_WEEK) / _SECONDS_PER_WEEK
    table = {
        "hour_sin": np.sin(day_angle),
        "hour_cos": np.cos(day_angle),
        "dow_sin": np.sin(week_angle),
        "dow_cos": np.cos(week_angle),
    }
    return np.stack([table[name] for name in names], axis=-1)


def encode_inputs(windows: Windows, spec: FeatureSpec, scaler: MinMaxScaler) -> np.ndarray:
    """Model-ready inputs ``(n, lags, spec.n_model_inputs)``: scaled raw inputs followed by
    the spec's time features. Every model uses this one function, in training and serving."""
    scaled = scaler.transform(windows.x)
    if not spec.time_features:
        return scaled
    extra = time_features(windows.input_times, spec.time_features)
    return np.concatenate([scaled, extra], axis=-1)
