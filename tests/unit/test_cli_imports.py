"""``flts --help`` stays light: building the app and every command's help imports none of the
heavy libraries (a fresh interpreter, so nothing a test imported earlier hides one), and the
CLI's copies of names owned elsewhere (kept to stay light) agree with their owners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Imported only by the commands that need them, never for help.
HEAVY = ("pandas", "numpy", "mlflow", "torch", "fastapi", "pyarrow", "uvicorn", "sklearn")

_PROBE = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from flts.cli import app

def paths(command, prefix):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from paths(sub, [*prefix, name])

runner = CliRunner()
failed = []
helped = 0
for path in paths(get_command(app), []):
    result = runner.invoke(app, [*path, "--help"])
    helped += 1
    if result.exit_code != 0 or "Usage" not in result.output:
        failed.append([path, result.exit_code, result.output[-300:]])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(","))
print(json.dumps({"helped": helped, "failed": failed, "heavy": heavy}))
"""


def test_help_of_every_command_imports_no_heavy_library() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["failed"] == []
    assert report["helped"] > 20  # every command and group was asked, not just the root
    assert report["heavy"] == [], "imported for --help: " + ", ".join(report["heavy"])


def test_cli_choices_match_their_owners() -> None:
    from flts import retention
    from flts.cli import _choices, dlq, up
    from flts.events import DLQ_PREFIX
    from flts.fleet.summary import FLEET_SORTS, FLEET_STATES
    from flts.models.registry import MODEL_TYPES
    from flts.security import SCOPES
    from flts.services.runner import WORKERS
    from flts.settings import DEFAULT_MODEL_TYPES
    from flts.supervisor import DEFAULT_HEALTHY_AFTER

    assert [m.value for m in _choices.ModelType] == list(MODEL_TYPES)
    assert [w.value for w in _choices.WorkerName] == list(WORKERS)
    assert [k.value for k in _choices.RetentionKind] == list(retention.KINDS)
    assert [s.value for s in _choices.KeyScope] == list(SCOPES)
    assert [s.value for s in _choices.FleetSort] == list(FLEET_SORTS)
    assert [s.value for s in _choices.FleetState] == list(FLEET_STATES)
    assert ",".join(DEFAULT_MODEL_TYPES) == _choices.DEFAULT_MODELS
    assert dlq.DLQ_PREFIX == DLQ_PREFIX
    assert up.DEFAULT_HEALTHY_AFTER == DEFAULT_HEALTHY_AFTER


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("ls", ["LSTM"]), ("RIDGE,g", ["RIDGE,GRU", "RIDGE,GLOBAL"]), ("ridge,", None), ("X", [])],
)
def test_models_completion_completes_the_last_item(typed: str, expected: list[str] | None) -> None:
    from flts.cli._choices import ModelType, complete_models

    offered = complete_models(typed)
    if expected is None:  # after a comma: every type but the ones already given
        assert offered == [f"ridge,{m.value}" for m in ModelType if m is not ModelType.RIDGE]
    else:
        assert offered == expected
