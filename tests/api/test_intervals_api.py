"""Prediction intervals over HTTP: the single, row-batch and tensor forms answer the model's
own calibrated bands; bad levels and uncalibrated models are a 422 with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flts.data import FeatureSpec, last_window, prepare, validate_frame
from flts.data.spec import LTE_FEATURES, LTE_TARGETS
from flts.data.synthetic import synthetic_traffic
from flts.models import load_model, model_class
from flts.models.intervals import INTERVALS_FILE

from .support import Harness, history_records

HORIZON = 3


@pytest.fixture(scope="module")
def multi_step_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A RIDGE trained for three steps ahead, and a copy of it saved without calibration."""
    spec = FeatureSpec(horizon=HORIZON)
    prepared = prepare(validate_frame(synthetic_traffic(1_200, seed=2), spec), spec=spec)
    root = tmp_path_factory.mktemp("interval-runs")
    model = model_class("RIDGE")(spec, prepared.input_scaler, prepared.target_scaler)
    model.fit(prepared.train, prepared.validation).save(root / "run-ridge-h3")
    shutil.copytree(root / "run-ridge-h3", root / "run-ridge-bare")
    (root / "run-ridge-bare" / INTERVALS_FILE).unlink()
    return {p.name: p for p in root.iterdir()}


@pytest.fixture
def served(harness: Harness, multi_step_dirs: dict[str, Path]) -> Harness:
    harness.runs.dirs.update(multi_step_dirs)
    harness.promote("run-ridge-h3")
    harness.wait_serving("run-ridge-h3")
    return harness


def _expected(model_dir: Path, records: list[dict[str, object]], level: float) -> np.ndarray:
    """``(steps, targets, 2)`` bounds computed offline from the saved model."""
    model = load_model(model_dir)
    frame = pd.DataFrame(records)
    values = frame[list(model.spec.inputs)].to_numpy(np.float64)
    times = pd.to_datetime(frame["time"]).to_numpy(dtype="datetime64[ns]")
    window = last_window(values, times, model.spec)
    forecast = np.clip(model.predict(window), 0.0, None)
    lower, upper = model.intervals(window, forecast, (level,))[level]
    return np.stack([lower[0], upper[0]], axis=-1)


def test_single_forecast_answers_bands_per_step_and_target(
    served: Harness, multi_step_dirs: dict[str, Path]
) -> None:
    records = history_records(20)
    response = served.client.post(
        "/v1/forecast", json={"history": records, "horizon": HORIZON, "intervals": [80, 95]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["intervals"]) == {"80", "95"}
    forecast = body["forecast"]
    for key, level in (("80", 80.0), ("95", 95.0)):
        steps = body["intervals"][key]
        assert [s["time"] for s in steps] == [f["time"] for f in forecast]
        got = np.array([[s[t] for t in LTE_TARGETS] for s in steps])
        expected = _expected(multi_step_dirs["run-ridge-h3"], records, level)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
        for step, point in zip(steps, forecast, strict=True):
            for target in LTE_TARGETS:
                lower, upper = step[target]
                assert 0 <= lower <= point[target] <= upper
    inner, outer = body["intervals"]["80"], body["intervals"]["95"]
    for a, b in zip(inner, outer, strict=True):
        for target in LTE_TARGETS:
            assert b[target][0] <= a[target][0]
            assert a[target][1] <= b[target][1]


def test_without_intervals_the_answer_is_unchanged(served: Harness) -> None:
    response = served.client.post("/v1/forecast", json={"history": history_records(20)})
    assert response.status_code == 200
    assert "intervals" not in response.json()


def test_row_batch_answers_each_request_its_own_levels(served: Harness) -> None:
    records = history_records(20)
    response = served.client.post(
        "/v1/forecast/batch",
        json={
            "requests": [
                {"history": records, "horizon": 2, "intervals": [90]},
                {"history": records},
            ]
        },
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert list(first["intervals"]) == ["90"]
    assert len(first["intervals"]["90"]) == 2
    assert "intervals" not in second


def test_tensor_batch_answers_lower_and_upper_arrays(served: Harness) -> None:
    records = history_records(30)
    frame = pd.DataFrame(records)
    windows = [frame[list(LTE_FEATURES)].iloc[i : i + 10].to_numpy().tolist() for i in (0, 20)]
    end_times = [records[9]["time"], records[29]["time"]]
    response = served.client.post(
        "/v1/forecast/batch",
        json={
            "columns": list(LTE_FEATURES),
            "end_times": end_times,
            "windows": windows,
            "horizon": HORIZON,
            "intervals": [80],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    forecast = np.array(body["forecast"])
    lower = np.array(body["intervals"]["80"]["lower"])
    upper = np.array(body["intervals"]["80"]["upper"])
    assert lower.shape == upper.shape == forecast.shape == (2, HORIZON, len(LTE_TARGETS))
    assert (lower >= 0).all()
    assert (lower <= forecast).all()
    assert (forecast <= upper).all()


@pytest.mark.parametrize(
    ("levels", "reason"),
    [
        ([0], "intervals"),
        ([100], "intervals"),
        (["eighty"], "intervals"),
        ([80, 80], "unique"),
        (list(range(10, 100, 10)), "intervals"),
    ],
)
def test_bad_levels_are_a_422_with_the_reason(
    served: Harness, levels: list[object], reason: str
) -> None:
    response = served.client.post(
        "/v1/forecast", json={"history": history_records(20), "intervals": levels}
    )
    assert response.status_code == 422, response.text
    assert reason in response.text


def test_an_uncalibrated_model_refuses_intervals_instead_of_inventing_them(
    served: Harness,
) -> None:
    served.promote("run-ridge-bare", minutes=1)
    served.wait_serving("run-ridge-bare")
    records = history_records(20)
    response = served.client.post("/v1/forecast", json={"history": records, "intervals": [80]})
    assert response.status_code == 422
    assert "without interval calibration" in response.text
    assert served.client.post("/v1/forecast", json={"history": records}).status_code == 200
