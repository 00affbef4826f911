"""Baselines every candidate must beat: persistence and seasonal-naive."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from flts.data.windows import Windows, observed_series
from flts.models.base import Forecaster


class Persistence(Forecaster):
    """Tomorrow looks like now: the last observed value of each target, for every step."""

    model_type = "PERSISTENCE"
    batch_invariant = True

    def _fit(self, train: Windows, validation: Windows) -> None:
        """Nothing to learn."""

    def _predict(self, windows: Windows) -> np.ndarray:
        last = windows.x[:, -1, self.spec.target_positions]
        return np.repeat(last[:, None, :], self.spec.horizon, axis=1)

    def _save_state(self, directory: Path) -> None:
        """Stateless beyond the manifest."""

    def _load_state(self, directory: Path) -> None:
        """Stateless beyond the manifest."""


class SeasonalNaive(Forecaster):
    """The value one season (default: one day) before each target time.

    Values are looked up by timestamp among the rows the model can see: the inputs of the
    windows being predicted, plus the fitted history (so the first season after training is
    covered). Where no value exists one season back, it falls back to
    persistence. Every value it uses is strictly earlier than the time it forecasts.
    """

    model_type = "SEASONAL_NAIVE"
    default_params: ClassVar[dict[str, Any]] = {"season": "1D"}

    def _season_ns(self) -> int:
        return int(pd.to_timedelta(self.params["season"]).value)

    def _fit(self, train: Windows, validation: Windows) -> None:
        positions = self.spec.target_positions
        prior_times, prior_values = observed_series(train, positions)
        times, values = observed_series(validation, positions)
        self._history_times = np.concatenate([prior_times, times]).astype(np.int64)
        self._history_values = np.concatenate([prior_values, values])

    def _predict(self, windows: Windows) -> np.ndarray:
        seen_times, seen_values = observed_series(
            windows, self.spec.target_positions, with_targets=False
        )
        times = np.concatenate([self._history_times, seen_times.astype(np.int64)])
        values = np.concatenate([self._history_values, seen_values])
        # Later observations win for a repeated timestamp (the caller's data is freshest).
        order = np.argsort(times, kind="stable")[::-1]
        times, first = np.unique(times[order], return_index=True)
        values = values[order][first]

        wanted = windows.target_times.astype(np.int64) - self._season_ns()
        position = np.clip(np.searchsorted(times, wanted), 0, len(times) - 1)
        found = times[position] == wanted
        seasonal = values[position]
        fallback = windows.x[:, -1, self.spec.target_positions][:, None, :]
        return np.where(found[..., None], seasonal, fallback)

    def _save_state(self, directory: Path) -> None:
        np.savez(
            directory / "history.npz",
            times=self._history_times,
            values=self._history_values,
        )

    def _load_state(self, directory: Path) -> None:
        with np.load(directory / "history.npz", allow_pickle=False) as state:
            self._history_times = state["times"]
            self._history_values = state["values"]
