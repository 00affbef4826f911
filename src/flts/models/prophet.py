"""Prophet: one calendar model (trend + daily/weekly seasonality) per target.

Prophet forecasts from the timestamp alone: it never looks at the lag window, so on the
published one-step task it is expected to lose to persistence and ridge. It is here as the
classical "decomposable seasonal model" reference point and for longer horizons, where the
last observed value says little and the time of day says a lot.

Why it is built this way:

* **History from windows.** The forecaster interface hands over windows, not a series. Every
  row a training window shows (its inputs and its targets) is a real observation, so the
  contiguous training series is rebuilt from ``input_times``/``x`` plus
  ``target_times``/``targets``, deduplicated by timestamp. Validation rows are never fitted:
  they only choose between a few settings (see ``default_params``), so the validation score
  stays an honest estimate.
* **Seasonalities set explicitly**, not by Prophet's "auto": daily on (the dominant cycle of
  cell traffic) when the history covers two days, weekly only with two full weeks (one week
  cannot separate a weekday effect from noise), never yearly (weeks of data).
* **Deterministic and fast.** MAP fit (``mcmc_samples=0``) with a fixed optimiser seed, and
  ``uncertainty_samples=0`` so ``predict`` skips the simulation of trend paths (we only use
  ``yhat``).
* **Quiet.** Prophet logs at INFO and cmdstanpy at DEBUG by default, and ``prophet.plot``
  logs an ERROR at import when plotly is missing; none of that belongs on a service's stdout.
* **No pickles.** Each target's model is stored with Prophet's own JSON serialiser.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

# Must run before prophet is imported: the plotly message is logged at import time.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

# Imported at module top on purpose: without the ``prophet`` extra this raises
# ModuleNotFoundError naming prophet, which the registry turns into an install hint.
import cmdstanpy  # noqa: E402
from prophet import Prophet  # noqa: E402
from prophet.serialize import model_from_json, model_to_json  # noqa: E402

from flts.data.windows import Windows, observed_series  # noqa: E402
from flts.exceptions import ModelError  # noqa: E402
from flts.models.base import Forecaster  # noqa: E402

# cmdstanpy's get_logger() sets DEBUG the first time it runs, so let it run, then override.
cmdstanpy.utils.get_logger().setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)

_DAY = pd.Timedelta(days=1)
_STATE_FILE = "prophet.json"
_CLIP_OPTIONS: dict[str, tuple[bool, ...]] = {
    "auto": (False, True),
    "always": (True,),
    "never": (False,),
}


class ProphetForecaster(Forecaster):
    """One Prophet model per target, fitted on the training series, predicting each window's
    ``target_times`` from the calendar alone.

    ``candidates`` lists the settings tried per target; each is fitted on the training part
    and scored on the validation part (RMSE in original units), with and without clipping the
    forecast to the training range (``clip``: ``"auto"`` tries both, ``"always"`` and
    ``"never"`` force one); the best combination is kept per target. Clipping matters because
    the training part of the traffic targets is itself clipped to percentiles, and because a
    linear trend extrapolated over days can leave the range the data ever had.
    """

    model_type = "PROPHET"
    default_params: ClassVar[dict[str, Any]] = {
        # flat: a level plus seasonality, the safe choice when the test lies days past the
        # training end; linear: lets a drifting level be followed (Prophet's default).
        "candidates": [
            {"growth": "flat", "seasonality_mode": "additive"},
            {"growth": "linear", "seasonality_mode": "additive"},
            {"growth": "linear", "seasonality_mode": "multiplicative"},
        ],
        "clip": "auto",
        # Prophet's default order; 10 scored the same on the three stations' validation parts
        # (mean validation NRMSE 1.159 vs 1.156) and fits slower.
        "daily_fourier_order": 4,
        "weekly_fourier_order": 3,
        "weekly_min_days": 14.0,
        "daily_min_days": 2.0,
        "changepoint_prior_scale": 0.05,
        "seasonality_prior_scale": 10.0,
    }

    # ---- training -------------------------------------------------------------------------

    def _fit(self, train: Windows, validation: Windows) -> None:
        times, values = observed_series(train, self.spec.target_positions)
        val_times, val_values = observed_series(validation, self.spec.target_positions)
        low, high = values.min(axis=0), values.max(axis=0)
        clip_options = _CLIP_OPTIONS.get(self.params["clip"])
        if clip_options is None:
            raise ModelError(
                f"PROPHET clip must be one of {sorted(_CLIP_OPTIONS)}, not {self.params['clip']!r}"
            )
        if not self.params["candidates"]:
            raise ModelError("PROPHET needs at least one candidate setting")
        self._models: list[Prophet] = []
        self._clip: list[tuple[float, float] | None] = []
        choices: list[dict[str, Any]] = []
        for k, target in enumerate(self.spec.targets):
            best: tuple[float, Prophet, bool, dict[str, Any]] | None = None
            trials = []
            for candidate in self.params["candidates"]:
                model = self._fit_one(times, values[:, k], candidate)
                raw = _forecast(model, val_times)
                for clip in clip_options:
                    forecast = np.clip(raw, low[k], high[k]) if clip else raw
                    rmse = _rmse(val_values[:, k], forecast)
                    trials.append({**candidate, "clip": clip, "validation_rmse": rmse})
                    if best is None or rmse < best[0]:
                        best = (rmse, model, clip, candidate)
            assert best is not None  # candidates is not empty (checked above)
            rmse, model, clip, candidate = best
            self._models.append(model)
            self._clip.append((float(low[k]), float(high[k])) if clip else None)
            choices.append({"target": target, **candidate, "clip": clip, "trials": trials})
        self.metadata.update(
            history_rows=len(times),
            history_days=round(float((times[-1] - times[0]) / _DAY), 3),
            choices=choices,
        )

    def _fit_one(self, times: np.ndarray, y: np.ndarray, candidate: dict[str, Any]) -> Prophet:
        """Fit one Prophet model with explicit seasonalities chosen from the history span."""
        unknown = set(candidate) - {"growth", "seasonality_mode"}
        if unknown:
            raise ModelError(f"PROPHET candidate settings {sorted(unknown)} are not supported")
        span_days = float((times[-1] - times[0]) / _DAY)
        frame = pd.DataFrame({"ds": pd.DatetimeIndex(times), "y": y})
        # Prophet reports bad settings (unknown growth, logistic without a cap) and optimiser
        # failures as ValueError/RuntimeError; the caller should see one error family.
        try:
            model = Prophet(
                growth=candidate.get("growth", "linear"),
                seasonality_mode=candidate.get("seasonality_mode", "additive"),
                changepoint_prior_scale=self.params["changepoint_prior_scale"],
                seasonality_prior_scale=self.params["seasonality_prior_scale"],
                yearly_seasonality=False,
                weekly_seasonality=False,
                daily_seasonality=False,
                mcmc_samples=0,
                uncertainty_samples=0,
            )
            if span_days >= self.params["daily_min_days"]:
                model.add_seasonality(
                    "daily", period=1.0, fourier_order=self.params["daily_fourier_order"]
                )
            if span_days >= self.params["weekly_min_days"]:
                model.add_seasonality(
                    "weekly", period=7.0, fourier_order=self.params["weekly_fourier_order"]
                )
            model.fit(frame, seed=self.seed)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"Prophet failed to fit with {candidate}: {exc}") from exc
        return model

    # ---- inference ------------------------------------------------------------------------

    def _predict(self, windows: Windows) -> np.ndarray:
        wanted = windows.target_times.astype("datetime64[ns]")
        # Each distinct timestamp is forecast once (overlapping horizons share most of them).
        unique, inverse = np.unique(wanted.reshape(-1), return_inverse=True)
        columns = []
        for model, clip in zip(self._models, self._clip, strict=True):
            forecast = _forecast(model, unique)
            if clip is not None:
                forecast = np.clip(forecast, *clip)
            columns.append(forecast[inverse].reshape(wanted.shape))
        return np.stack(columns, axis=-1)

    # ---- persistence ----------------------------------------------------------------------

    def _save_state(self, directory: Path) -> None:
        files = []
        for k, model in enumerate(self._models):
            name = f"prophet_target_{k}.json"
            (directory / name).write_text(model_to_json(model))
            files.append(name)
        state = {
            "targets": list(self.spec.targets),
            "files": files,
            "clip": [list(c) if c is not None else None for c in self._clip],
        }
        (directory / _STATE_FILE).write_text(json.dumps(state, indent=2))

    def _load_state(self, directory: Path) -> None:
        state = json.loads((directory / _STATE_FILE).read_text())
        if state["targets"] != list(self.spec.targets):
            raise ModelError(
                f"Prophet state is for targets {state['targets']}, "
                f"the feature spec has {list(self.spec.targets)}"
            )
        self._models = [model_from_json((directory / f).read_text()) for f in state["files"]]
        self._clip = [(float(c[0]), float(c[1])) if c is not None else None for c in state["clip"]]


def _forecast(model: Prophet, times: np.ndarray) -> np.ndarray:
    """``yhat`` for each timestamp in ``times`` (1-D, any order)."""
    frame = pd.DataFrame({"ds": pd.DatetimeIndex(times)})
    return np.asarray(model.predict(frame)["yhat"], dtype=np.float64)


def _rmse(actual: np.ndarray, forecast: np.ndarray) -> float:
    """RMSE as the evaluator computes it: negative forecasts count as 0, NaN actuals skipped."""
    keep = ~np.isnan(actual)
    error = np.clip(forecast[keep], 0.0, None) - actual[keep]
    return float(np.sqrt(np.mean(error**2)))
