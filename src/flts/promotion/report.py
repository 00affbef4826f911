"""The evaluation report on each candidate's MLflow run: test metrics, a figure, the card.

After the judge has decided a config hash, the evaluator puts what it measured where people
look (:func:`report_decision`), for every candidate it scored:

* metrics ``test_<figure>`` (``nrmse``, ``mae5``, ``rmse5``, ``mase``, ``wql``) and per
  summary horizon step ``test_<figure>_h<step>`` (``test_nrmse_h1``, ``test_mae5_h15``: the
  steps the gate compares), and interval coverage ``test_coverage_<level>``;
* the figure ``evaluation/forecast_vs_actual.png``: step-1 forecast against the actual
  values over the end of the test split, one panel per target (matplotlib's object API,
  no pyplot, so no global state and no display);
* the evaluation part of the model card on the run's registry version
  (:mod:`flts.model_card`).

Everything is derived from the decision and the judge's own forecasts, so nothing is scored
twice, and writing it again (a re-judged decision, a second evaluator) writes the same values
(the timestamp is the decision's) and replaces the same file and card section. Tracking
outages propagate, to be waited out like every tracking call; anything else that goes wrong
here (a figure that cannot be drawn) is logged and skipped: a report never holds up a
decision.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from flts.exceptions import UnavailableError
from flts.model_card import evaluation_section, with_evaluation

if TYPE_CHECKING:
    from flts.promotion.backends import Backends
    from flts.promotion.decisions import Decision, HorizonFigures, LeaderboardEntry
    from flts.promotion.judge import TestForecasts

log = logging.getLogger(__name__)

#: Figures of a leaderboard line logged as ``test_<name>`` (and per step ``_h<step>``).
_FIGURES = ("nrmse", "mae5", "rmse5", "mase", "wql")
#: Test windows drawn in the figure (the newest ones): a day of 2-minute steps.
FIGURE_WINDOWS = 720
FIGURE_PATH = "evaluation/forecast_vs_actual.png"
#: Resolution of the saved figure: 80 dpi keeps the panels readable at a third less CPU and
#: file size than matplotlib's 100 (the figure is drawn once per candidate of a fleet).
FIGURE_DPI = 80
#: Panel height (inches) per target, and the margins as figure fractions: a fixed layout
#: instead of matplotlib's constrained one, which cost half the drawing time.
_PANEL_INCHES = 1.8
_MARGINS = {"left": 0.09, "right": 0.98, "bottom": 0.06, "hspace": 0.25}


def test_metrics(entry: LeaderboardEntry) -> dict[str, float]:
    """The run metrics of one scored leaderboard line (see module doc)."""
    metrics: dict[str, float] = {}

    def add(figures: HorizonFigures, suffix: str) -> None:
        for name in _FIGURES:
            value = getattr(figures, name)
            if value is not None:
                metrics[f"test_{name}{suffix}"] = float(value)

    add(entry, "")
    for step, figures in sorted(entry.horizon.items()):
        add(figures, f"_h{step}")
    for level, value in sorted(entry.coverage.items()):
        metrics[f"test_coverage_{level}"] = float(value)
    return metrics


def forecast_figure(
    forecasts: TestForecasts, run_id: str, title: str, windows: int = FIGURE_WINDOWS
) -> Any | None:
    """Step-1 forecast vs actual over the newest ``windows`` test windows, one panel per
    target; ``None`` without the judge's forecast of this run or without matplotlib."""
    prediction = forecasts.predictions.get(run_id)
    test = forecasts.windows
    if prediction is None or test is None or test.y is None:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:  # the image has no matplotlib: metrics and card still go on the run
        return None
    times = test.target_times[-windows:, 0]
    actual = test.y[-windows:, 0, :]
    predicted = np.clip(prediction[-windows:, 0, :], 0.0, None)
    targets = forecasts.targets
    height = _PANEL_INCHES * len(targets) + 0.6
    figure = Figure(figsize=(10, height))
    figure.subplots_adjust(top=1.0 - 0.45 / height, **_MARGINS)
    axes = figure.subplots(len(targets), 1, sharex=True, squeeze=False)[:, 0]
    for index, (axis, target) in enumerate(zip(axes, targets, strict=True)):
        axis.plot(times, actual[:, index], color="black", linewidth=0.8, label="actual")
        axis.plot(times, predicted[:, index], color="tab:orange", linewidth=0.8, label="forecast")
        axis.set_ylabel(target)
        if index == 0:
            axis.legend(loc="upper right", fontsize="small")
    figure.suptitle(title)
    return figure


def _with_section(card: str | None, *, section: str) -> str:
    return with_evaluation(card, section)


def report_decision(
    backends: Backends,
    decision: Decision,
    forecasts: TestForecasts | None,
    *,
    figures: bool = True,
) -> None:
    """Log the decision's test metrics, figure and card section on each scored candidate's
    run (module doc)."""
    tracker = backends.tracker
    for entry in decision.leaderboard:
        if entry.status != "SUCCESS" or entry.run_id is None:
            continue
        run_id = entry.run_id
        figure = None
        if figures and forecasts is not None:
            try:
                title = f"{entry.model_type} {decision.identifier} {decision.config_hash[:12]}"
                figure = forecast_figure(forecasts, run_id, title)
            except Exception:  # drawing is never worth a decision
                log.warning("could not draw the forecast of run %s", run_id, exc_info=True)
        try:
            tracker.log_evaluation(
                run_id,
                test_metrics(entry),
                timestamp=decision.decided_at,
                figure=figure,
                figure_path=FIGURE_PATH,
                figure_dpi=FIGURE_DPI,
            )
            section = evaluation_section(decision, run_id)
            tracker.edit_version_description(
                run_id, decision.identifier, functools.partial(_with_section, section=section)
            )
        except UnavailableError:
            raise  # an outage: the caller waits it out and reports again
        except Exception as exc:
            if type(exc).__module__.startswith("mlflow"):
                log.warning("could not report the evaluation on run %s: %s", run_id, exc)
                continue
            raise
