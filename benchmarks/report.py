"""Where every benchmark's JSON report goes: one writer, so each ``--json-file`` behaves alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: Path | None, document: Any, *, sort_keys: bool = False) -> None:
    """Write ``document`` as indented JSON to ``path`` (its folder made), or nothing."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=sort_keys) + "\n")
