"""The forecaster interface every model type implements, and its on-disk format.

A forecaster is built from the feature spec and the scalers fitted by preprocessing, so it
carries everything inference needs: ``predict`` takes windows in original units and answers in
original units. ``save(dir)`` writes a self-describing directory::

    model.json            model type, params, metadata (training seconds, best epoch, ...)
    feature_spec.json     the FeatureSpec enforced at inference
    input_scaler.json     fitted on the training part only
    target_scaler.json
    intervals.json        residual quantiles from validation (flts.models.intervals)
    ...                   model-specific state (weights.npz, state_dict.pt, model.onnx, ...)

and ``load_model(dir)`` rebuilds the right class from it. No pickles anywhere.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows, encode_inputs
from flts.exceptions import (
    ConfigurationError,
    DataValidationError,
    FeatureMismatchError,
    ModelError,
    ModelNotFittedError,
)
from flts.models.intervals import IntervalCalibration

MANIFEST = "model.json"
FORMAT_VERSION = 1


class Forecaster(ABC):
    """Base class: subclasses set ``model_type`` and implement ``_fit``, ``_predict`` and the
    two state hooks. ``params`` must be JSON-serialisable; unknown params are rejected."""

    model_type: ClassVar[str]
    #: Parameter names and defaults a subclass accepts.
    default_params: ClassVar[dict[str, Any]] = {}
    #: Each window's forecast is the same, bit for bit, whatever other windows share the
    #: call: no pooling of rows across windows, no batch-size-dependent arithmetic (BLAS
    #: matrix products sum in a different order for one row than for many). Only such
    #: models answer concurrent requests together (:mod:`flts.api.microbatch`).
    batch_invariant: ClassVar[bool] = False

    def __init__(
        self,
        spec: FeatureSpec,
        input_scaler: MinMaxScaler,
        target_scaler: MinMaxScaler,
        *,
        seed: int = 0,
        **params: Any,
    ) -> None:
        unknown = sorted(set(params) - set(self.default_params))
        if unknown:
            raise ConfigurationError(
                f"{self.model_type} does not accept parameters {unknown}; "
                f"known: {sorted(self.default_params)}"
            )
        if input_scaler.columns != spec.inputs or target_scaler.columns != spec.targets:
            raise ConfigurationError("scaler columns do not match the feature spec")
        self.spec = spec
        self.input_scaler = input_scaler
        self.target_scaler = target_scaler
        self.seed = seed
        self.params: dict[str, Any] = {**self.default_params, **params}
        self.metadata: dict[str, Any] = {}
        self.calibration: IntervalCalibration | None = None
        self.fitted = False
        #: Bytes of the saved directory this model was loaded from (0 if it was not): what
        #: a replica's bounded champion cache counts (``serving.max_resident_bytes``).
        self.saved_bytes = 0

    # ---- public API -------------------------------------------------------------------

    def fit(self, train: Windows, validation: Windows) -> Self:
        """Train on ``train``; use ``validation`` only for model selection (early stopping,
        regularisation). Records ``train_seconds`` in ``metadata``."""
        self._check_windows(train, need_targets=True)
        self._check_windows(validation, need_targets=True)
        started = time.perf_counter()
        self._fit(train, validation)
        self.metadata["train_seconds"] = round(time.perf_counter() - started, 3)
        self.metadata["train_windows"] = len(train)
        self.metadata["validation_windows"] = len(validation)
        self.fitted = True
        # Intervals from validation residuals only: the test split is the evaluator's.
        self.calibration = IntervalCalibration.fit(
            self.target_history(validation),
            validation.targets,
            self.predict(validation),
            self.spec.targets,
        )
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """Forecast ``(n, horizon, targets)`` in original units for windows in original units."""
        if not self.fitted:
            raise ModelNotFittedError(f"{self.model_type} model is not fitted")
        self._check_windows(windows, need_targets=False)
        prediction = self._predict(windows)
        expected = (len(windows), self.spec.horizon, len(self.spec.targets))
        if prediction.shape != expected:
            raise ModelError(f"{self.model_type} predicted {prediction.shape}, expected {expected}")
        return prediction

    def intervals(
        self, windows: Windows, forecast: np.ndarray, levels: tuple[float, ...]
    ) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """``level -> (lower, upper)`` around ``forecast``, this model's ``predict`` output
        for ``windows``; 422 for a model saved without calibration (never a made-up band)."""
        if self.calibration is None:
            raise DataValidationError(
                f"this {self.model_type} model was saved without interval calibration; "
                "retrain it to get intervals"
            )
        history = self.target_history(windows)
        return {level: self.calibration.bounds(history, forecast, level) for level in levels}

    def target_history(self, windows: Windows) -> np.ndarray:
        """The targets' own input rows of each window, ``(n, lags, targets)``, original units."""
        return windows.x[:, :, self.spec.target_positions]

    def save(self, directory: Path) -> None:
        if not self.fitted:
            raise ModelNotFittedError(f"cannot save an unfitted {self.model_type} model")
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "seed": self.seed,
            "params": self.params,
            "metadata": self.metadata,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (directory / "feature_spec.json").write_text(self.spec.model_dump_json(indent=2))
        self.input_scaler.save(directory / "input_scaler.json")
        self.target_scaler.save(directory / "target_scaler.json")
        if self.calibration is not None:
            self.calibration.save(directory)
        self._save_state(directory)

    # ---- helpers for subclasses -------------------------------------------------------

    def encode(self, windows: Windows) -> np.ndarray:
        """Scaled model inputs ``(n, lags, channels)`` (raw inputs plus time features)."""
        return encode_inputs(windows, self.spec, self.input_scaler)

    def scaled_targets(self, windows: Windows) -> np.ndarray:
        return self.target_scaler.transform(windows.targets)

    def decode(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled predictions (any shape ending in targets) back to original units."""
        return self.target_scaler.inverse_transform(
            scaled.reshape(-1, self.spec.horizon, len(self.spec.targets))
        )

    def _check_windows(self, windows: Windows, *, need_targets: bool) -> None:
        shape = windows.x.shape
        if len(shape) != 3 or shape[1:] != (self.spec.lags, len(self.spec.inputs)):
            raise FeatureMismatchError(
                f"windows of shape {shape} do not fit the feature spec "
                f"(n, {self.spec.lags}, {len(self.spec.inputs)})"
            )
        if need_targets:
            _ = windows.targets

    # ---- subclass hooks -----------------------------------------------------------------

    @abstractmethod
    def _fit(self, train: Windows, validation: Windows) -> None: ...

    @abstractmethod
    def _predict(self, windows: Windows) -> np.ndarray: ...

    @abstractmethod
    def _save_state(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_state(self, directory: Path) -> None: ...


def load_model(directory: Path) -> Forecaster:
    """Rebuild a saved forecaster of any registered type from its directory."""
    from flts.models.registry import model_class

    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"no {MANIFEST} in {directory}: not a saved FLTS model")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"model format {manifest.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    cls = model_class(manifest["model_type"])
    spec = FeatureSpec.model_validate_json((directory / "feature_spec.json").read_text())
    model = cls(
        spec,
        MinMaxScaler.load(directory / "input_scaler.json"),
        MinMaxScaler.load(directory / "target_scaler.json"),
        seed=manifest["seed"],
        **manifest["params"],
    )
    model.metadata = manifest["metadata"]
    model.calibration = IntervalCalibration.load(directory)
    model._load_state(directory)
    model.fitted = True
    model.saved_bytes = directory_bytes(directory)
    return model


def directory_bytes(directory: Path) -> int:
    """Total size of the regular files under ``directory``, on disk."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
