"""Serving runtimes: the fastest way to run each saved model type, behind one interface.

* **LSTM, GRU, MLP, GLOBAL**: the ``model.onnx`` every torch model saves, run by ONNX Runtime
  with one intra-op thread (:class:`OnnxForecaster`). torch is never imported, so a serving process
  stays small and starts fast; the torch module is only the reference the graph is tested
  against.
* **RIDGE, PERSISTENCE, SEASONAL_NAIVE, ENSEMBLE**: their own numpy ``predict``.
* **PROPHET**: its own path (a cmdstan-fitted model per target) behind the same interface; it
  is slow per call, so its forecasts run in a worker thread under the 504 time limit.

:func:`load_serving_model` picks the runtime from the saved manifest; everything else
(validation, scaling, answers) is the shared :class:`~flts.models.Forecaster` contract.
:func:`inline_types` names the runtimes cheap enough to answer on the event loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows, time_features
from flts.exceptions import ModelError
from flts.models.base import FORMAT_VERSION, MANIFEST, Forecaster, directory_bytes, load_model
from flts.models.intervals import IntervalCalibration
from flts.models.onnx_runtime import ONNX_FILE, BoundRun, OnnxSession


class OnnxForecaster(Forecaster):
    """A saved torch forecaster served from its ONNX graph: ``encode`` -> ORT -> ``decode``,
    exactly the steps of the torch model's own ``predict``. Serving only: it cannot be fitted
    or saved (the training class owns the on-disk format)."""

    model_type: ClassVar[str] = "ONNX"
    #: ONNX Runtime's CPU kernels compute each window alone (tested for every served type).
    batch_invariant = True

    def __init__(
        self,
        spec: FeatureSpec,
        input_scaler: MinMaxScaler,
        target_scaler: MinMaxScaler,
        session: OnnxSession,
        *,
        seed: int = 0,
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(spec, input_scaler, target_scaler, seed=seed)
        self.params = dict(params or {})  # the training params, for descriptions only
        self.session = session
        self._single: BoundRun | None = None
        self._single_checked = False

    def _fit(self, train: Windows, validation: Windows) -> None:
        raise ModelError("an ONNX-served model cannot be trained; train its torch class")

    def _predict(self, windows: Windows) -> np.ndarray:
        if len(windows) == 1:
            single = self._single if self._single_checked else self._bind_single()
            # Another thread in the middle of a forecast holds the buffers: take the plain path.
            if single is not None and single.lock.acquire(blocking=False):
                try:
                    return self._predict_single(single, windows)
                finally:
                    single.lock.release()
        scaled = self.session.run(self.encode(windows))
        return self.decode(scaled)

    def _predict_single(self, single: BoundRun, windows: Windows) -> np.ndarray:
        """``encode`` -> ORT -> ``decode`` for one window through the pre-bound buffers, with
        the same arithmetic as the general path (float64 scaling, float32 graph, float64
        unscaling), so both give identical forecasts."""
        spec, inputs = self.spec, single.inputs
        scaler, width = self.input_scaler, len(spec.inputs)
        # (x - minimum) / scale in float64, cast into the bound float32 input on the way out
        np.divide(
            np.subtract(windows.x, scaler._offset),
            scaler._scale,
            out=inputs[..., :width] if spec.time_features else inputs,
            casting="same_kind",
        )
        if spec.time_features:
            inputs[..., width:] = time_features(windows.input_times, spec.time_features)
        single.run()
        target = self.target_scaler
        restored: np.ndarray = single.outputs * target._scale + target._offset
        return restored

    def _bind_single(self) -> BoundRun | None:
        """The batch-1 binding, made on the first one-window forecast; ``None`` (always the
        general path, with its errors) when the graph does not answer the spec's shape."""
        self._single_checked = True
        spec = self.spec
        input_shape = (1, spec.lags, spec.n_model_inputs)
        output_shape = (1, spec.horizon, len(spec.targets))
        try:
            probe = self.session.run(np.zeros(input_shape, dtype=np.float32))
        except Exception:  # the general path then reports the graph's own error
            return None
        if probe.shape != output_shape or probe.dtype != np.float32:
            return None
        self._single = self.session.bind(input_shape, output_shape)
        return self._single

    def _save_state(self, directory: Path) -> None:
        raise ModelError("an ONNX-served model cannot be saved; save its torch class")

    def _load_state(self, directory: Path) -> None:  # pragma: no cover - built by the loader
        raise ModelError("use load_serving_model to load an ONNX-served model")


class OnnxLSTM(OnnxForecaster):
    model_type = "LSTM"


class OnnxGRU(OnnxForecaster):
    model_type = "GRU"


class OnnxMLP(OnnxForecaster):
    model_type = "MLP"


class OnnxGlobal(OnnxForecaster):
    """One station's view of a group's shared network (its station index is in the graph)."""

    model_type = "GLOBAL"


#: Model types served from their ONNX graph, by manifest ``model_type``.
ONNX_TYPES: dict[str, type[OnnxForecaster]] = {
    "LSTM": OnnxLSTM,
    "GRU": OnnxGRU,
    "MLP": OnnxMLP,
    "GLOBAL": OnnxGlobal,
}


def load_serving_model(directory: Path, *, threads: int = 1) -> Forecaster:
    """The saved model in ``directory`` with its fastest serving runtime (see module doc).

    A torch model saved without ``model.onnx`` (an older format) falls back to torch.
    """
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"no {MANIFEST} in {directory}: not a saved FLTS model")
    manifest = json.loads(manifest_path.read_text())
    cls = ONNX_TYPES.get(str(manifest.get("model_type", "")).upper())
    if cls is None or not (directory / ONNX_FILE).is_file():
        return load_model(directory)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"model format {manifest.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    try:
        session = OnnxSession(directory / ONNX_FILE, threads=threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelError(f"cannot load the ONNX graph in {directory}: {exc}") from exc
    model = cls(
        FeatureSpec.model_validate_json((directory / "feature_spec.json").read_text()),
        MinMaxScaler.load(directory / "input_scaler.json"),
        MinMaxScaler.load(directory / "target_scaler.json"),
        session,
        seed=int(manifest.get("seed", 0)),
        params=dict(manifest.get("params", {})),
    )
    model.metadata = dict(manifest.get("metadata", {}))
    model.calibration = IntervalCalibration.load(directory)
    model.fitted = True
    model.saved_bytes = directory_bytes(directory)
    return model


def inline_types() -> frozenset[type[Forecaster]]:
    """Model classes cheap and bounded enough to run on the event loop (see
    :attr:`flts.api.holder.LoadedModel.inline`): a few numpy/ONNX operations per call."""
    from flts.models.baselines import Persistence, SeasonalNaive
    from flts.models.ridge import Ridge

    return frozenset({OnnxLSTM, OnnxGRU, OnnxMLP, OnnxGlobal, Ridge, Persistence, SeasonalNaive})
