"""The model card: the description of a run's registry version, in Markdown.

Written in two parts by the two services that know them. The trainer writes the training
part when it registers the version (:func:`training_card`): the data (identifier, dataset
content digests, rows and time range per split), the spec, the recipe and parameters, the
validation scores and the lineage (run id, config hash, correlation id, the champion it was
trained against). The evaluator adds the evaluation part (:func:`with_evaluation`): test
scores overall and per horizon step, the persistence baseline, and the decision with its
reason. The evaluation part starts at :data:`EVALUATION_HEADING` and is replaced whole, so
writing it again (a re-judged decision, a second evaluator) leaves one, current section.

Processed data is keyed by content, not by upload (one config hash serves every upload of
the same bytes and recipe), so the card names the dataset by its content digests; the
correlation id leads back to the upload that started the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from flts.data.prepare import Splits
    from flts.evaluation import Scores
    from flts.models.base import Forecaster
    from flts.promotion.decisions import Decision

#: Where the evaluator's part of a card starts.
EVALUATION_HEADING = "## Evaluation"
# MLflow keeps descriptions in a text column; stay well inside any store's limit.
_MAX_CHARS = 5000


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _span(frame: pd.DataFrame | None) -> str:
    if frame is None or len(frame) == 0:
        return "no rows"
    return f"{len(frame)} rows, {frame.index.min().isoformat()} .. {frame.index.max().isoformat()}"


@dataclass(frozen=True)
class TrainingFacts:
    """What the trainer knows of a run when it registers the version."""

    run_id: str
    identifier: str
    config_hash: str
    correlation_id: str
    input_digests: dict[str, str]
    parent_run_id: str | None


def training_card(facts: TrainingFacts, model: Forecaster, splits: Splits, scores: Scores) -> str:
    """The training part of the card (see module doc)."""
    spec = model.spec
    parameters = json.dumps({"seed": model.seed, **model.params}, sort_keys=True, default=str)
    digests = ", ".join(
        f"{role} `{digest[:16]}`" for role, digest in sorted(facts.input_digests.items())
    )
    lines = [
        f"# {model.model_type} for {facts.identifier}",
        "",
        "## Data",
        f"- identifier: `{facts.identifier}`",
        f"- dataset (content digests): {digests or 'not recorded'}",
        f"- train: {_span(splits.train)}",
        f"- validation: {_span(splits.validation)}",
        f"- test: {_span(splits.test)}",
        "",
        "## Spec",
        f"- inputs: {', '.join(spec.inputs)}",
        f"- targets: {', '.join(spec.targets)}",
        f"- lags {spec.lags}, horizon {spec.horizon}, every {spec.frequency}"
        + (f", time features {', '.join(spec.time_features)}" if spec.time_features else ""),
        "",
        "## Recipe",
        f"- recipe: `{json.dumps(splits.recipe.model_dump(mode='json'), sort_keys=True)}`",
        f"- parameters: `{parameters}`",
        "",
        "## Validation (trainer, informational)",
        f"- NRMSE {_figure(scores.nrmse)}, MAE5 {_figure(scores.mae5)}, "
        f"RMSE5 {_figure(scores.rmse5)} on {scores.n_windows} windows",
        "",
        "## Lineage",
        f"- run: `{facts.run_id}`",
        f"- config hash: `{facts.config_hash}`",
        f"- correlation id: `{facts.correlation_id}`",
        f"- champion when trained: `{facts.parent_run_id or 'none'}`",
    ]
    return "\n".join(lines)[:_MAX_CHARS]


def evaluation_section(decision: Decision, run_id: str) -> str:
    """The evaluator's part of the card of ``run_id``, from the decision that judged it."""
    entry = next((e for e in decision.leaderboard if e.run_id == run_id), None)
    lines = [EVALUATION_HEADING]
    if entry is None:
        lines.append(f"- not judged in decision {decision.config_hash[:12]}")
        return "\n".join(lines)
    lines.append(
        f"- test: NRMSE {_figure(entry.nrmse)}, MAE5 {_figure(entry.mae5)}, "
        f"RMSE5 {_figure(entry.rmse5)}, MASE {_figure(entry.mase)} on "
        f"{decision.test_windows} windows (status {entry.status})"
    )
    for step, figures in sorted(entry.horizon.items()):
        lines.append(
            f"  - step {step}: NRMSE {_figure(figures.nrmse)}, MAE5 {_figure(figures.mae5)}"
        )
    baseline: dict[str, Any] = decision.baseline or {}
    lines.append(f"- persistence baseline: NRMSE {_figure(baseline.get('nrmse'))}")
    verdict = "promoted" if entry.promoted else "not promoted"
    code = "" if decision.reason_code is None else f" [{decision.reason_code.value}]"
    lines.append(f"- decision: {verdict}{code}: {entry.reason or 'no reason recorded'}")
    lines.append(f"- decided at {decision.decided_at.isoformat()}")
    previous = decision.previous_champion or {}
    lines.append(f"- champion judged against: `{previous.get('run_id') or 'none'}`")
    return "\n".join(lines)


def with_evaluation(card: str | None, section: str) -> str:
    """``card`` with its evaluation part replaced by ``section`` (added when absent)."""
    head = (card or "").split(f"\n{EVALUATION_HEADING}", 1)[0].rstrip()
    if head.startswith(EVALUATION_HEADING):
        head = ""
    text = f"{head}\n\n{section}" if head else section
    return text[:_MAX_CHARS]
