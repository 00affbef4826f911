"""The global model type: one network trained across every station of a group.

The paper behind the Barcelona datasets compares a model per station with one *centralized*
model trained on every station's data; this is the centralized setting. A bulk upload's
stations form a group (:mod:`flts.fleet.groups`); :func:`fit_group` trains one
:class:`GlobalNet` on their pooled windows and returns, per station, a
:class:`GlobalForecaster` that serves that station alone.

Why it looks like this:

* **Scaling stays per station.** Each station's windows are scaled by its own training-split
  scalers (docs/architecture.md, rule 1), so pooled inputs and targets share the range [0, 1]
  without one station's volume dominating the loss, and every forecast is decoded with the
  station's own target scaler.
* **A learned station embedding** (``embedding_dim`` numbers per station, concatenated to the
  flattened window) lets the shared body learn what stations have in common while still
  telling them apart: the same window gives different forecasts at different stations.
* **Caps on sampled windows** (``max_windows_per_station`` and ``max_windows`` in total, and
  the same for validation) bound the cost of an epoch whatever the group's size: a group of
  1,000 stations of a week each trains in minutes on two cores, a group of three uses every
  window. The sample is drawn once, seeded, so a seed reproduces the model.
* **Early stopping on the pooled validation splits**: the mean over stations of each
  station's validation NRMSE in original units (the figure the evaluator ranks by), with the
  best epoch's weights restored, as :class:`~flts.models.neural.TorchForecaster` does
  (one rule for both: :class:`~flts.models.stopping.EarlyStopping`).
* **Each station's model is self-contained.** Its saved directory holds the shared weights,
  its own station index (a parameter), its scalers, feature spec and interval calibration
  (fitted on its own validation split), so inference replicas, batch inference, the MLflow
  pyfunc flavour and ONNX serving load it like any other model: the station index is a
  constant inside the module (:class:`StationNet`), so the network's one input is the window.

:meth:`GlobalForecaster.fit` on one station's windows trains a group of one (the same code).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows, encode_inputs
from flts.evaluation import score
from flts.exceptions import ConfigurationError, DataValidationError
from flts.models.intervals import IntervalCalibration
from flts.models.mlp import dense_body
from flts.models.neural import TorchForecaster, _torch_threads
from flts.models.stopping import EarlyStopping

log = logging.getLogger(__name__)


class MemberData(Protocol):
    """What pooled training reads of one station (a :class:`PreparedData` is one)."""

    @property
    def spec(self) -> FeatureSpec: ...
    @property
    def input_scaler(self) -> MinMaxScaler: ...
    @property
    def target_scaler(self) -> MinMaxScaler: ...
    @property
    def train(self) -> Windows: ...
    @property
    def validation(self) -> Windows: ...


@dataclass(frozen=True)
class StationData:
    """One station's windows and scalers, when there is no :class:`PreparedData` at hand."""

    spec: FeatureSpec
    input_scaler: MinMaxScaler
    target_scaler: MinMaxScaler
    train: Windows
    validation: Windows


#: Reads one member's data when it is needed (twice: sampling, then calibration), so a group
#: of a thousand stations never holds every station's windows at once.
MemberLoader = Callable[[], MemberData]


def in_memory(data: MemberData) -> MemberLoader:
    """A loader for data already in memory (a small group, a test)."""
    return lambda: data


class GlobalNet(nn.Module):
    """``[flatten(window), embedding(station)]`` -> ``layers`` x (Linear, ReLU, Dropout) ->
    Linear -> ``(n, horizon, targets)``."""

    def __init__(
        self,
        *,
        stations: int,
        embedding_dim: int,
        channels: int,
        lags: int,
        horizon: int,
        targets: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(stations, embedding_dim)
        self.body, width = dense_body(
            channels * lags + embedding_dim, hidden_size, num_layers, dropout
        )
        self.head = nn.Linear(width, horizon * targets)
        self.horizon = horizon
        self.targets = targets

    def forward(self, x: torch.Tensor, station: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x.flatten(1), self.embedding(station)], dim=1)
        out: torch.Tensor = self.head(self.body(features))
        return out.reshape(-1, self.horizon, self.targets)


class StationNet(nn.Module):
    """The shared network bound to one station: its only input is the encoded window, so
    prediction, the saved state and the ONNX graph are those of any torch forecaster."""

    station: torch.Tensor

    def __init__(self, net: GlobalNet, index: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("station", torch.tensor([index], dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded = self.net.embedding(self.station)  # (1, embedding_dim)
        features = torch.cat([x.flatten(1), embedded.expand(x.shape[0], -1)], dim=1)
        out: torch.Tensor = self.net.head(self.net.body(features))
        return out.reshape(-1, self.net.horizon, self.net.targets)


class GlobalForecaster(TorchForecaster):
    """One station's view of a network shared by its group (see the module doc)."""

    model_type = "GLOBAL"
    default_params: ClassVar[dict[str, Any]] = {
        **TorchForecaster.default_params,
        "hidden_size": 128,
        "num_layers": 3,
        "dropout": 0.1,
        "batch_size": 256,
        "max_epochs": 30,
        "patience": 5,
        "embedding_dim": 8,
        "max_windows_per_station": 20_000,
        "max_windows": 100_000,
        "max_validation_windows_per_station": 2_000,
        "max_validation_windows": 20_000,
        # Set by fit_group for each member; part of the saved params so load rebuilds it.
        "stations": 1,
        "station_index": 0,
    }

    def _validate_params(self) -> None:
        super()._validate_params()
        p = self.params
        for name in (
            "embedding_dim",
            "stations",
            "max_windows_per_station",
            "max_windows",
            "max_validation_windows_per_station",
            "max_validation_windows",
        ):
            if int(p[name]) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {p[name]}")
        if not 0 <= int(p["station_index"]) < int(p["stations"]):
            raise ConfigurationError(
                f"station_index {p['station_index']} is outside 0..{int(p['stations']) - 1}"
            )

    def _build_net(self) -> GlobalNet:
        p = self.params
        return GlobalNet(
            stations=int(p["stations"]),
            embedding_dim=int(p["embedding_dim"]),
            channels=self.spec.n_model_inputs,
            lags=self.spec.lags,
            horizon=self.spec.horizon,
            targets=len(self.spec.targets),
            hidden_size=int(p["hidden_size"]),
            num_layers=int(p["num_layers"]),
            dropout=float(p["dropout"]),
        )

    def _build_module(self) -> nn.Module:
        return StationNet(self._build_net(), int(self.params["station_index"]))

    def _fit(self, train: Windows, validation: Windows) -> None:
        """A group of one: the same pooled training on this station's windows alone."""
        prepared = StationData(self.spec, self.input_scaler, self.target_scaler, train, validation)
        params = {k: v for k, v in self.params.items() if k not in _MEMBER_PARAMS}
        fit = fit_group({"station": lambda: prepared}, params=params, seed=self.seed)
        self.params.update(stations=1, station_index=0)
        self.module = fit.module_for("station")
        self.metadata.update(fit.metadata_for("station"))


_MEMBER_PARAMS = ("stations", "station_index")


@dataclass
class _Sample:
    """One station's sampled, encoded windows (float32, scaled) and what scores them."""

    x: torch.Tensor
    y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_targets: np.ndarray  # original units, for the validation NRMSE
    target_scaler: MinMaxScaler
    train_windows: int
    validation_windows: int


@dataclass
class GroupFit:
    """The trained shared network and how to hand each member its own forecaster."""

    net: GlobalNet
    stations: list[str]
    spec: FeatureSpec
    params: dict[str, Any]
    seed: int
    metadata: dict[str, Any]
    sampled: dict[str, tuple[int, int]] = field(default_factory=dict)

    def index(self, identifier: str) -> int:
        return self.stations.index(identifier)

    def module_for(self, identifier: str) -> StationNet:
        module = StationNet(self.net, self.index(identifier))
        module.eval()
        return module

    def metadata_for(self, identifier: str) -> dict[str, Any]:
        train, validation = self.sampled[identifier]
        return {
            **self.metadata,
            "station": identifier,
            "station_index": self.index(identifier),
            "group_stations": len(self.stations),
            "sampled_train_windows": train,
            "sampled_validation_windows": validation,
        }

    def forecaster(self, identifier: str, prepared: MemberData) -> GlobalForecaster:
        """``identifier``'s fitted, calibrated forecaster (its own scalers and spec; the
        intervals from its own validation split only, docs/architecture.md rule 14)."""
        if prepared.spec != self.spec:
            raise DataValidationError(f"{identifier}'s feature spec differs from the group's")
        model = GlobalForecaster(
            prepared.spec,
            prepared.input_scaler,
            prepared.target_scaler,
            seed=self.seed,
            **{
                **self.params,
                "stations": len(self.stations),
                "station_index": self.index(identifier),
            },
        )
        model.module = self.module_for(identifier)
        model.metadata.update(self.metadata_for(identifier))
        model.metadata["train_windows"] = len(prepared.train)
        model.metadata["validation_windows"] = len(prepared.validation)
        model.fitted = True
        model.calibration = IntervalCalibration.fit(
            model.target_history(prepared.validation),
            prepared.validation.targets,
            model.predict(prepared.validation),
            prepared.spec.targets,
        )
        return model


def _sample_index(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, cap)`` window positions drawn without replacement, in time order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _per_station_cap(per_station: int, total: int, stations: int) -> int:
    return max(1, min(per_station, total // stations))


def fit_group(
    members: Mapping[str, MemberLoader],
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> GroupFit:
    """Train one :class:`GlobalNet` on the pooled windows of ``members`` (identifier ->
    loader of its prepared data). Every member must share one feature spec. Raises
    :class:`DataValidationError` naming the members that do not."""
    if not members:
        raise DataValidationError("a group needs at least one member")
    stations = sorted(members)
    started = time.perf_counter()
    first = members[stations[0]]()
    # A template model validates the params and provides the loss of every torch model.
    template = GlobalForecaster(
        first.spec,
        first.input_scaler,
        first.target_scaler,
        seed=seed,
        **{**dict(params or {}), "stations": len(stations), "station_index": 0},
    )
    p = template.params
    train_cap = _per_station_cap(
        int(p["max_windows_per_station"]), int(p["max_windows"]), len(stations)
    )
    val_cap = _per_station_cap(
        int(p["max_validation_windows_per_station"]),
        int(p["max_validation_windows"]),
        len(stations),
    )
    rng = np.random.default_rng(seed)
    samples: dict[str, _Sample] = {}
    mismatched: list[str] = []
    for identifier in stations:
        prepared = first if identifier == stations[0] else members[identifier]()
        if prepared.spec != first.spec:
            mismatched.append(identifier)
            continue
        samples[identifier] = _sample(prepared, train_cap, val_cap, rng)
    if mismatched:
        raise DataValidationError(
            f"stations {mismatched} have another feature spec than {stations[0]}; "
            "a group trains one network over one spec"
        )
    load_seconds = time.perf_counter() - started
    with torch.random.fork_rng(devices=[]), _torch_threads(int(p["threads"])):
        torch.manual_seed(seed)
        net = template._build_net()
        history, best_epoch = _train(template, net, [samples[s] for s in stations], rng)
    net.eval()
    metadata: dict[str, Any] = {
        "train_seconds": round(time.perf_counter() - started, 3),
        "group_load_seconds": round(load_seconds, 3),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": len(history) < int(p["max_epochs"]),
        "best_validation_nrmse": (
            history[best_epoch - 1]["validation_nrmse"] if best_epoch else math.nan
        ),
        "parameters": sum(t.numel() for t in net.parameters()),
        "pooled_train_windows": sum(len(s.x) for s in samples.values()),
        "history": history,
    }
    fit_params = {k: v for k, v in p.items() if k not in _MEMBER_PARAMS}
    log.info(
        "GLOBAL trained on %d stations in %.1fs (%d epochs, best %d)",
        len(stations),
        metadata["train_seconds"],
        len(history),
        best_epoch,
    )
    return GroupFit(
        net=net,
        stations=stations,
        spec=first.spec,
        params=fit_params,
        seed=seed,
        metadata=metadata,
        sampled={s: (len(samples[s].x), len(samples[s].val_x)) for s in stations},
    )


def _sample(
    prepared: MemberData, train_cap: int, val_cap: int, rng: np.random.Generator
) -> _Sample:
    """Sample and encode one station's windows with its own scalers (rule 1)."""
    train = prepared.train.take(_sample_index(len(prepared.train), train_cap, rng))
    validation = prepared.validation.take(_sample_index(len(prepared.validation), val_cap, rng))
    spec = prepared.spec

    def encoded(windows: Windows) -> torch.Tensor:
        return torch.as_tensor(
            encode_inputs(windows, spec, prepared.input_scaler), dtype=torch.float32
        )

    def targets(windows: Windows) -> torch.Tensor:
        scaled = prepared.target_scaler.transform(windows.targets)
        return torch.as_tensor(scaled, dtype=torch.float32)

    return _Sample(
        x=encoded(train),
        y=targets(train),
        val_x=encoded(validation),
        val_y=targets(validation),
        val_targets=validation.targets,
        target_scaler=prepared.target_scaler,
        train_windows=len(prepared.train),
        validation_windows=len(prepared.validation),
    )


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    order = torch.as_tensor(rng.permutation(n))
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _train(
    template: GlobalForecaster,
    net: GlobalNet,
    samples: list[_Sample],
    rng: np.random.Generator,
) -> tuple[list[dict[str, float]], int]:
    """Pooled mini-batch training with early stopping on the mean validation NRMSE; the
    best epoch's weights are left in ``net``. Returns the per-epoch history and best epoch."""
    p = template.params
    x = torch.cat([s.x for s in samples])
    y = torch.cat([s.y for s in samples])
    station = torch.cat(
        [torch.full((len(s.x),), i, dtype=torch.long) for i, s in enumerate(samples)]
    )
    optimizer = torch.optim.Adam(
        net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
    )
    loss_fn = template._loss_function(censored=bool(p["censored"]))
    batch_size, noise, clip = int(p["batch_size"]), float(p["input_noise"]), float(p["grad_clip"])
    stopping = EarlyStopping(
        net,
        optimizer,
        _validation_nrmse(net, samples, template.spec),
        patience=int(p["patience"]),
        decay_patience=int(p["lr_decay_patience"]),
    )
    history: list[dict[str, float]] = []
    for epoch in range(1, int(p["max_epochs"]) + 1):
        net.train()
        total = 0.0
        for index in _batches(len(x), batch_size, rng):
            inputs = x[index]
            if noise > 0.0:
                inputs = inputs + noise * torch.randn_like(inputs)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(inputs, station[index]), y[index])
            loss.backward()  # type: ignore[no-untyped-call]
            if clip > 0.0:
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            total += loss.detach().item() * len(index)
        nrmse = _validation_nrmse(net, samples, template.spec)
        record = {"epoch": float(epoch), "train_loss": total / len(x), "validation_nrmse": nrmse}
        history.append({k: round(v, 6) for k, v in record.items()})
        template._report(epoch, record)
        if stopping.update(epoch, nrmse):
            break
    stopping.restore()
    template._report(len(history), history[-1], finished=True)
    return history, stopping.best_epoch


def _validation_nrmse(net: GlobalNet, samples: Iterable[_Sample], spec: FeatureSpec) -> float:
    """Mean over stations of the validation NRMSE in original units (each station decoded
    with its own target scaler); the mean scaled MSE when no station has a finite NRMSE
    (e.g. all-zero traffic)."""
    net.eval()
    figures: list[float] = []
    errors: list[float] = []
    with torch.no_grad():
        for i, sample in enumerate(samples):
            if len(sample.val_x) == 0:
                continue
            scaled = net(sample.val_x, torch.full((len(sample.val_x),), i, dtype=torch.long))
            errors.append(float(((scaled - sample.val_y) ** 2).mean()))
            decoded = sample.target_scaler.inverse_transform(scaled.numpy().astype(np.float64))
            nrmse = score(sample.val_targets, decoded, spec.targets).nrmse
            if math.isfinite(nrmse):
                figures.append(nrmse)
    if figures:
        return float(np.mean(figures))
    return float(np.mean(errors)) if errors else math.inf
