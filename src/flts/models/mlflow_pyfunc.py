"""A saved FLTS model directory as an MLflow Model (``pyfunc`` flavour, ``onnx`` where it has one).

The directory :meth:`Forecaster.save` writes *is* the MLflow Model: :func:`save` puts MLflow's
files (``MLmodel``, the environment files, the input example) beside the FLTS files, so the run
stores the model once and ``digests.json`` (written after, over every file) covers both
(docs/architecture.md, rule 12). The ``python_function`` flavour names this module as its
loader (``loader_module``): MLflow imports it and calls :func:`_load_pyfunc` with the
directory, so nothing is pickled and loading needs only the serving dependencies (numpy,
pandas, ONNX Runtime for the neural models), the same runtime the inference API serves
(:func:`flts.models.serving.load_serving_model`), so ``predict`` gives the API's numbers.

Input: a DataFrame with the spec's time column and input columns (others are ignored), at
least ``lags`` rows on the spec's time grid; its last ``lags`` rows are the window. Several
windows at once: a ``window_id`` column, each id's rows (in order) being one history; the
answer keeps the ids' order of first appearance.

Output: one row per window and horizon step: ``window_id`` (when given), ``step`` (1 ..
horizon), the spec's time column (the forecast time) and one column per target, in original
units and clipped at 0 as the API answers; for a model calibrated for intervals also
``<target>_lower_<level>`` and ``<target>_upper_<level>`` at the levels of the ``intervals``
parameter (default :data:`DEFAULT_LEVELS`).
"""

from __future__ import annotations

import warnings
from importlib import metadata as distribution
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flts.data.reader import parse_times
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows, last_window
from flts.exceptions import DataValidationError, ModelError
from flts.models.intervals import check_levels, level_key
from flts.models.onnx_runtime import ONNX_FILE

if TYPE_CHECKING:
    from flts.models.base import Forecaster

#: Column naming the window each row belongs to, for several windows in one call.
WINDOW_COLUMN = "window_id"
#: Column of the forecast step (1 .. horizon) in the answer.
STEP_COLUMN = "step"
#: Interval levels answered when the call names none (the model must be calibrated).
DEFAULT_LEVELS: tuple[float, ...] = (80.0, 95.0)
#: Distributions the model environment needs to load and predict, besides FLTS itself.
_SERVING_DISTRIBUTIONS = ("mlflow", "numpy", "pandas", "pydantic", "onnxruntime")


def interval_columns(spec: FeatureSpec, levels: tuple[float, ...]) -> list[str]:
    """Names of the interval columns of an answer, per level then target, lower before upper."""
    return [
        f"{target}_{side}_{level_key(level)}"
        for level in levels
        for target in spec.targets
        for side in ("lower", "upper")
    ]


class FltsPyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: a serving-runtime forecaster and its spec."""

    def __init__(self, model: Forecaster) -> None:
        self.model = model
        self.spec = model.spec

    def predict(
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Forecasts for the window(s) in ``model_input`` (see the module doc)."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        ids, windows = self.windows(frame)
        prediction = self.model.predict(windows)
        if not np.isfinite(prediction).all():
            raise ModelError(f"{self.model.model_type} produced non-finite forecasts")
        forecast = np.clip(prediction, 0.0, None)
        levels = self._levels(params)
        horizon = self.spec.horizon
        columns: dict[str, Any] = {}
        if ids is not None:
            columns[WINDOW_COLUMN] = np.repeat(np.asarray(ids, dtype=object), horizon)
        columns[STEP_COLUMN] = np.tile(np.arange(1, horizon + 1, dtype=np.int64), len(windows))
        columns[self.spec.time_column] = windows.target_times.reshape(-1)
        for index, target in enumerate(self.spec.targets):
            columns[target] = forecast[:, :, index].reshape(-1)
        if levels:
            for level, (lower, upper) in self.model.intervals(windows, forecast, levels).items():
                for index, target in enumerate(self.spec.targets):
                    columns[f"{target}_lower_{level_key(level)}"] = lower[:, :, index].reshape(-1)
                    columns[f"{target}_upper_{level_key(level)}"] = upper[:, :, index].reshape(-1)
        return pd.DataFrame(columns)

    def _levels(self, params: dict[str, Any] | None) -> tuple[float, ...]:
        asked = (params or {}).get("intervals")
        if asked is None:
            return DEFAULT_LEVELS if self.model.calibration is not None else ()
        values = [asked] if isinstance(asked, int | float | np.generic) else list(asked)
        # MLflow may hand list parameters over as numpy scalars.
        return check_levels([v.item() if isinstance(v, np.generic) else v for v in values])

    def windows(self, frame: pd.DataFrame) -> tuple[list[Any] | None, Windows]:
        """The window ids (``None`` without the column) and the windows of ``frame``; every
        problem of every window in one :class:`DataValidationError`, as the API refuses."""
        spec = self.spec
        missing = [c for c in (spec.time_column, *spec.inputs) if c not in frame.columns]
        if missing:
            raise DataValidationError(f"missing columns: {missing}")
        groups: list[tuple[Any, pd.DataFrame]]
        ids: list[Any] | None
        if WINDOW_COLUMN in frame.columns:
            groups = [(key, part) for key, part in frame.groupby(WINDOW_COLUMN, sort=False)]
            ids = [key for key, _ in groups]
        else:
            groups, ids = [(None, frame)], None
        if not groups:
            raise DataValidationError("no rows: a window needs at least lags rows")
        problems: list[str] = []
        parts = [self._window(part, key, problems) for key, part in groups]
        if problems:
            raise DataValidationError(*problems)
        found = [part for part in parts if part is not None]
        return ids, Windows(
            x=np.concatenate([w.x for w in found]),
            y=None,
            input_times=np.concatenate([w.input_times for w in found]),
            target_times=np.concatenate([w.target_times for w in found]),
        )

    def _window(self, part: pd.DataFrame, key: Any, problems: list[str]) -> Windows | None:
        spec = self.spec
        where = "" if key is None else f"window {key!r}: "
        if len(part) < spec.lags:
            problems.append(f"{where}{len(part)} rows, a window needs at least {spec.lags}")
            return None
        values = part[list(spec.inputs)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        if not np.isfinite(values).all():
            bad = [
                c
                for c, ok in zip(spec.inputs, np.isfinite(values).all(axis=0), strict=False)
                if not ok
            ]
            problems.append(f"{where}missing or non-numeric values in {bad}")
            return None
        column = part[spec.time_column]
        if pd.api.types.is_datetime64_any_dtype(column):
            stamps = pd.to_datetime(column, utc=True)
            times = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        else:
            own: list[str] = []
            parsed = parse_times(column.astype(str).reset_index(drop=True), own, str)
            if parsed is None:
                problems.extend(f"{where}{problem}" for problem in own)
                return None
            times = parsed.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        steps = np.diff(times.view(np.int64))
        if not (steps == spec.step.value).all():
            problems.append(f"{where}times are not consecutive steps of {spec.frequency}")
            return None
        return last_window(values, times, spec)


def _load_pyfunc(path: str) -> FltsPyfuncModel:
    """MLflow's entry point (``loader_module``): the model in ``path``, its files checked
    against its own ``digests.json`` first (rule 12), on the API's serving runtime."""
    from flts.models.digests import verify
    from flts.models.serving import load_serving_model

    directory = Path(path)
    verify(directory, None)
    return FltsPyfuncModel(load_serving_model(directory))


# ----------------------------------------------------------------------------- writing


def input_example(model: Forecaster, example: Windows | None) -> pd.DataFrame:
    """The input example: the last window of ``example`` (real rows, e.g. the validation
    split's last window), or, without one, the scalers' mid-range on a grid from 2026."""
    spec = model.spec
    if example is not None and len(example):
        values = example.x[-1]
        times = example.input_times[-1]
    else:
        scaler = model.input_scaler
        middle = (np.asarray(scaler.minimum) + np.asarray(scaler.maximum)) / 2.0
        values = np.repeat(middle[None, :], spec.lags, axis=0)
        start = np.datetime64("2026-01-01T00:00:00", "ns")
        times = start + np.timedelta64(spec.step.value, "ns") * np.arange(spec.lags)
    frame = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=list(spec.inputs))
    frame.insert(0, spec.time_column, pd.to_datetime(np.asarray(times, dtype="datetime64[ns]")))
    # Plain object column labels: MLflow compares them with a range when it writes the
    # example, which pandas deprecates for its string (Arrow) index.
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return frame


def signature(model: Forecaster) -> Any:
    """The MLflow signature: the window's columns in, the forecast columns out, and the
    ``intervals`` parameter (levels) for a calibrated model."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    spec = model.spec
    # Window ids may be numbers or names: the column is only grouped on, never computed with.
    any_id = AnyType()  # type: ignore[no-untyped-call]  # MLflow leaves its __init__ untyped
    inputs = Schema(
        [
            ColSpec("datetime", spec.time_column),
            *(ColSpec("double", name) for name in spec.inputs),
            ColSpec(any_id, WINDOW_COLUMN, required=False),
        ]
    )
    calibrated = model.calibration is not None
    outputs = Schema(
        [
            ColSpec(any_id, WINDOW_COLUMN, required=False),
            ColSpec("long", STEP_COLUMN),
            ColSpec("datetime", spec.time_column),
            *(ColSpec("double", name) for name in spec.targets),
            *(
                ColSpec("double", name, required=False)
                for name in (interval_columns(spec, DEFAULT_LEVELS) if calibrated else [])
            ),
        ]
    )
    if not calibrated:
        return ModelSignature(inputs=inputs, outputs=outputs)
    params = ParamSchema([ParamSpec("intervals", "double", list(DEFAULT_LEVELS), (-1,))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _requirements() -> list[str]:
    """Pins of the serving distributions installed here (absent ones are left out)."""
    pins: list[str] = []
    for name in _SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={distribution.version(name)}")
        except distribution.PackageNotFoundError:
            continue
    return pins


def _import_pyfunc() -> Any:
    """``mlflow.pyfunc``, imported without the warning MLflow's own response types raise
    about their ``Any`` hints on first import (not ours to fix; with warnings as errors it
    would fail the first save of a process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Any type hint is inferred as AnyType.*")
        import mlflow.pyfunc
    return mlflow.pyfunc


def save(
    model: Forecaster,
    directory: Path,
    *,
    example: Windows | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``model`` to the new directory ``directory`` as an MLflow Model (module doc).

    MLflow writes its files first (it refuses a non-empty target), then the forecaster its
    own; the ``onnx`` flavour is added where the model saved a graph, and the model size is
    recorded over the whole directory. The caller writes ``digests.json`` afterwards.
    """
    mlflow_pyfunc = _import_pyfunc()
    from mlflow.models import Model

    mlflow_pyfunc.save_model(
        path=str(directory),
        loader_module=__name__,
        signature=signature(model),
        input_example=input_example(model, example),
        pip_requirements=_requirements(),
        metadata={"flts_model_type": model.model_type, **(metadata or {})},
    )
    model.save(directory)
    mlmodel_path = directory / "MLmodel"
    mlmodel = Model.load(str(mlmodel_path))
    if (directory / ONNX_FILE).is_file():
        try:
            onnx_version = distribution.version("onnx")
        except distribution.PackageNotFoundError:
            onnx_version = None
        mlmodel.add_flavor(
            "onnx",
            onnx_version=onnx_version,
            data=ONNX_FILE,
            providers=["CPUExecutionProvider"],
            code=None,
        )
    mlmodel.model_size_bytes = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    mlmodel.save(str(mlmodel_path))


def flavors(directory: Path) -> list[str]:
    """The flavours the MLflow Model in ``directory`` declares (none for a run logged
    before models had an ``MLmodel`` file)."""
    from mlflow.models import Model

    path = directory / "MLmodel"
    return sorted(Model.load(str(path)).flavors) if path.is_file() else []
