"""The one-pass decoding of single forecasts (``forms.decode_numeric`` and
``forms.numeric_windows``, the route's path for bodies of JSON numbers) accepts nothing the
two-step path refuses, and gives the same windows for everything it accepts; any other
spelling is left to the two-step path."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pytest

from flts.api import forms
from flts.data.spec import FeatureSpec

from .support import history_records, request_windows
from .test_validation import CASES

SPEC = FeatureSpec()
FORM = forms.row_form(SPEC)


def numeric(document: Any) -> Any:
    """The windows of the one-pass path, ``"declined"`` when it leaves the body to the
    two-step path, ``"refused"`` when it refuses it."""
    call = forms.decode_numeric(orjson.dumps(document), FORM)
    if call is None:
        return "declined"
    try:
        return forms.numeric_windows([call], SPEC)
    except forms.RejectedError:
        return "refused"


def two_step(document: Any) -> Any:
    try:
        return request_windows([document], SPEC)
    except forms.RejectedError:
        return "refused"


def same_windows(windows: Any, expected: Any) -> None:
    for name in ("x", "input_times", "target_times"):
        np.testing.assert_array_equal(getattr(windows, name), getattr(expected, name))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_inputs_are_never_accepted(name: str) -> None:
    """What the two-step forms refuse, the one-pass path refuses or declines; what they take
    (a bad identifier is the service's to refuse), it declines or takes the same way."""
    mutate, _ = CASES[name]
    document = mutate(history_records(12))
    expected = two_step(copy.deepcopy(document))
    found = numeric(document)
    if isinstance(expected, str):
        assert found in ("declined", "refused")
    elif found != "declined":
        same_windows(found, expected)


@pytest.mark.parametrize(
    "document",
    [
        {"history": history_records(10)},
        {"history": history_records(40), "horizon": 1},
        {"identifier": "global", "history": history_records(12, offset=7), "intervals": [80]},
    ],
)
def test_accepted_bodies_give_the_two_step_windows(document: dict[str, Any]) -> None:
    windows = numeric(document)
    assert not isinstance(windows, str)
    same_windows(windows, two_step(document))


def test_several_calls_give_the_two_step_windows() -> None:
    documents = [{"history": history_records(10 + k % 2, offset=3 * k)} for k in range(6)]
    calls = [forms.decode_numeric(orjson.dumps(document), FORM) for document in documents]
    same_windows(forms.numeric_windows(calls, SPEC), request_windows(documents, SPEC))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["history"][2].update(down="12.5"),  # numeric string, as in CSV files
        lambda d: d["history"][4].update(up=None),  # missing value
        lambda d: d["history"][1].pop("up"),  # absent value
        lambda d: d.update(horizon=1.0),  # lax scalars of the envelope
        lambda d: d.update(history=None),  # the stored observations
        lambda d: d.pop("history"),
    ],
)
def test_other_spellings_are_left_to_the_two_step_path(change: Any) -> None:
    document: dict[str, Any] = {"history": history_records(12)}
    change(document)
    assert numeric(document) == "declined"


def test_numbers_too_large_for_a_float_are_refused() -> None:
    """``1e999`` is a JSON number no float holds: left to the two-step path, which refuses it."""
    document = {"history": history_records(12)}
    body = orjson.dumps(document).replace(b'"down":', b'"down":1e999,"x":', 1)
    assert forms.decode_numeric(body, FORM) is None
    with pytest.raises(forms.RejectedError):
        forms.row_windows([forms.decode(forms.ForecastCall, body)], SPEC)
