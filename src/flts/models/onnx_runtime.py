"""Run an exported neural forecaster with ONNX Runtime, without importing torch.

The serving layer loads ``model.onnx`` from a saved model directory and feeds it the same
encoded windows the torch module saw (``Forecaster.encode``: scaled inputs plus time features).
This module deliberately imports only numpy and onnxruntime so that an inference image can
leave out torch (hundreds of MB) and still serve LSTM/GRU/MLP models.

The exported graph has one input ``inputs`` of shape ``(batch, lags, channels)`` and one output
``outputs`` of shape ``(batch, horizon, targets)``, both float32 and in *scaled* units; decode
with the model's target scaler (``MinMaxScaler.inverse_transform``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

#: File name of the exported graph inside a saved model directory.
ONNX_FILE = "model.onnx"
#: Names of the graph's input and output, shared with the exporter in ``flts.models.neural``.
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"


def resolve_onnx_path(path: str | Path) -> Path:
    """Accept either a saved model directory or the ``.onnx`` file itself."""
    path = Path(path)
    return path / ONNX_FILE if path.is_dir() else path


class OnnxSession:
    """A loaded ONNX graph of a forecaster; ``run`` maps encoded windows to scaled outputs.

    Threads default to 1: a forecast is a handful of tiny matrix products, so intra-op
    parallelism costs more in synchronisation than it gains, and a serving box runs several
    replicas side by side.
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import onnxruntime as ort  # deferred: only serving needs it, keep imports cheap

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        self.path = resolve_onnx_path(path)
        self._session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def bind(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> BoundRun:
        """A :class:`BoundRun` of this graph for one fixed batch shape."""
        return BoundRun(self._session, input_shape, output_shape)

    def run(self, encoded: np.ndarray) -> np.ndarray:
        """Scaled forecasts ``(n, horizon, targets)`` (float32) for ``(n, lags, channels)``."""
        batch = np.ascontiguousarray(encoded, dtype=np.float32)
        if batch.ndim != 3:
            raise ValueError(f"expected encoded windows (n, lags, channels), got {batch.shape}")
        (output,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return np.asarray(output)


class BoundRun:
    """One batch shape of a graph with its input and output buffers bound once (ORT IO
    binding): write encoded windows into :attr:`inputs`, call :meth:`run`, read
    :attr:`outputs`. This skips the per-call input validation, feed dictionary and output
    allocation of ``InferenceSession.run``, a sizeable part of a batch-1 forecast.

    The buffers are shared state: hold :attr:`lock` from filling :attr:`inputs` to reading
    :attr:`outputs` (callers that find it taken use :meth:`OnnxSession.run` instead).
    """

    def __init__(
        self, session: Any, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> None:
        import onnxruntime as ort

        self.inputs = np.zeros(input_shape, dtype=np.float32)
        self.outputs = np.zeros(output_shape, dtype=np.float32)
        self.lock = threading.Lock()
        # The OrtValues wrap the numpy buffers without copying; keep them alive with the binding.
        self._values = (
            ort.OrtValue.ortvalue_from_numpy(self.inputs),
            ort.OrtValue.ortvalue_from_numpy(self.outputs),
        )
        self._binding = session.io_binding()
        self._binding.bind_ortvalue_input(INPUT_NAME, self._values[0])
        self._binding.bind_ortvalue_output(OUTPUT_NAME, self._values[1])
        self._run = session.run_with_iobinding

    def run(self) -> None:
        """Run the graph on :attr:`inputs`; the scaled forecasts land in :attr:`outputs`."""
        self._run(self._binding)


def onnx_predict(path: str | Path, encoded: np.ndarray) -> np.ndarray:
    """One-shot convenience: load the graph at ``path`` and run it on ``encoded`` windows.

    Serving code that answers many requests should keep an :class:`OnnxSession` instead.
    """
    return OnnxSession(path).run(encoded)
