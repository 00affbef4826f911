"""The synthetic traffic generator's station shapes: defaults unchanged, each shape
parameter moves the series the way its name says, nonsense refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flts.data.synthetic import synthetic_traffic

ROWS = 7 * 720  # a week of 2-minute rows


def test_the_default_shape_is_the_series_without_shape_arguments() -> None:
    explicit = synthetic_traffic(
        ROWS,
        seed=4,
        level=1.0,
        daily_amplitude=0.45,
        peak_hour=15.0,
        weekend_factor=0.75,
        noise=0.15,
        burst_every=400,
        burst_scale=1.0,
    )
    pd.testing.assert_frame_equal(synthetic_traffic(ROWS, seed=4), explicit)


def _hourly_mean(frame: pd.DataFrame) -> pd.Series:
    hours = pd.to_datetime(frame["time"]).dt.hour
    return frame["down"].groupby(hours).mean()


def test_level_scales_traffic_and_users() -> None:
    base = synthetic_traffic(ROWS, seed=1)
    busy = synthetic_traffic(ROWS, seed=1, level=3.0)
    np.testing.assert_allclose(busy["down"], 3.0 * base["down"])
    assert busy["rnti_count"].mean() == pytest.approx(3.0 * base["rnti_count"].mean(), rel=0.01)


def test_peak_hour_and_weekend_factor_move_the_cycles() -> None:
    def quiet(peak_hour: float = 15.0, weekend_factor: float = 0.75) -> pd.DataFrame:
        return synthetic_traffic(
            ROWS,
            seed=2,
            noise=0.0,
            burst_scale=0.0,
            peak_hour=peak_hour,
            weekend_factor=weekend_factor,
        )

    assert _hourly_mean(quiet(peak_hour=9.0)).idxmax() in (8, 9)
    assert _hourly_mean(quiet(peak_hour=20.0)).idxmax() in (19, 20)
    frame = quiet(weekend_factor=0.5)
    weekend = pd.to_datetime(frame["time"]).dt.day_of_week >= 5
    ratio = frame.loc[weekend, "down"].mean() / frame.loc[~weekend, "down"].mean()
    assert ratio == pytest.approx(0.5, rel=0.02)


def test_noise_and_bursts_add_variation() -> None:
    calm = synthetic_traffic(ROWS, seed=3, noise=0.0, burst_scale=0.0)
    wild = synthetic_traffic(ROWS, seed=3, noise=0.4, burst_every=100, burst_scale=2.0)
    assert wild["down"].std() > 1.5 * calm["down"].std()


@pytest.mark.parametrize(
    "bad",
    [{"level": 0.0}, {"noise": -0.1}, {"burst_every": 0}, {"daily_amplitude": 0.6}],
)
def test_nonsense_shapes_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        synthetic_traffic(100, **bad)  # type: ignore[arg-type]
