"""flts.client and the runnable example against the embedded system (gateway, preprocess,
trainers, evaluator and inference API as OS processes on loopback, behind API keys): upload
PobleSec, wait for its champion, forecast the test windows in batches, post observations and
forecast from them; the async client answers as the sync one, the OIP v2 and MLflow routes as
the native one."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from flts.client import AsyncFLTSClient, ConnectionFailed, FLTSClient, NotFound
from servers import wait_for

pytestmark = pytest.mark.e2e
DATA = Path("../shared/datasets")
STATION = "PobleSec"


def _example() -> ModuleType:
    """``examples/forecast_client.py`` of the checkout, imported as a module."""
    spec = importlib.util.spec_from_file_location(
        "forecast_client", Path("examples/forecast_client.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_client_and_example_against_the_system(system: dict[str, Any]) -> None:
    example = _example()
    key = system["key"]
    client = FLTSClient(system["api"], system["gateway"], api_key=key, timeout=120)
    with client:
        wait_for(
            lambda: client.datasets() is not None, 90, "the gateway", errors=(ConnectionFailed,)
        )
        wait_for(client.status, 90, "the inference API", errors=(ConnectionFailed,))
        champion = example.upload_and_wait(client, DATA, STATION, timeout=600)
        assert champion["identifier"] == STATION
        [dataset] = client.datasets(STATION)
        assert client.dataset(dataset["dataset_id"])["identifier"] == STATION
        with pytest.raises(NotFound):
            client.dataset("20240131T235959Z-0123456789ab")

        test = pd.read_csv(DATA / f"{STATION}_test.csv")
        table = example.forecast_vs_actual(client, test, STATION, windows=40)
        assert len(table) == 40
        assert np.isfinite(table.to_numpy()).all()
        assert (table["lower"] <= table["forecast"]).all()
        assert (table["forecast"] <= table["upper"]).all()
        times = pd.to_datetime(test["time"])
        actual = test.set_index(times)["down"].reindex(table.index)
        assert table["actual"].equals(actual)

        # The last window through the client, the native route, OIP v2 and MLflow scoring.
        lags = int(champion["feature_spec"]["lags"])
        history = test.tail(lags)
        frame = client.forecast(STATION, history)
        auth = {"Authorization": f"Bearer {key}"}
        records = history.to_dict(orient="records")
        native = httpx.post(
            f"{system['api']}/v1/forecast",
            json={"identifier": STATION, "history": records},
            headers=auth,
        ).json()
        [step] = native["forecast"]
        targets = list(champion["feature_spec"]["targets"])
        assert [frame[t].iloc[0] for t in targets] == [step[t] for t in targets]
        inputs = list(champion["feature_spec"]["inputs"])
        window = history[inputs].to_numpy().ravel().tolist()
        oip = httpx.post(
            f"{system['api']}/v2/models/{STATION}/infer",
            json={
                "inputs": [
                    {
                        "name": "window",
                        "shape": [lags, len(inputs)],
                        "datatype": "FP64",
                        "data": window,
                    },
                    {
                        "name": "end_time",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": [records[-1]["time"]],
                    },
                ]
            },
            headers=auth,
        )
        assert oip.status_code == 200, oip.text
        assert oip.json()["outputs"][0]["data"] == [step[t] for t in targets]
        scoring = httpx.post(
            f"{system['api']}/invocations",
            json={"dataframe_records": records, "params": {"identifier": STATION}},
            headers=auth,
        )
        assert scoring.json()["predictions"] == [step]
        assert oip.headers["X-Model-Run-Id"] == scoring.headers["X-Model-Run-Id"]
        assert frame.attrs["run_id"] == champion["run_id"]

        # Rows reported after the test file, then a forecast from the stored observations.
        step_size = times.iloc[-1] - times.iloc[-2]
        new = test.tail(lags).copy()
        new["time"] = [(times.iloc[-1] + step_size * (i + 1)).isoformat() for i in range(len(new))]
        summary = client.post_observations(STATION, new)
        assert summary["accepted"] == lags, summary
        stored = client.forecast(STATION)
        expected_time = pd.Timestamp(new["time"].iloc[-1]) + step_size
        assert stored.index[0] == (1, expected_time)

    async def forecast() -> pd.DataFrame:
        async with AsyncFLTSClient(system["api"], None, api_key=key) as asynchronous:
            return await asynchronous.forecast(STATION, history)

    pd.testing.assert_frame_equal(asyncio.run(forecast()), frame)
