"""Install one image's extras into a fresh virtualenv and build every service entry point
there (``scripts/image_probe.py``): a runtime import that no extra of the image carries
fails here instead of at a container's start.

The extras are those of ``deploy/Dockerfile``'s targets, pinned by ``constraints.txt`` like
the image build. ``full`` is that target without torch and Prophet: their CPU wheels come
from the PyTorch index, which this check does not reach, and the model registry turns their
absence into an install hint; every other package of the full image is installed.

Usage: ``python scripts/image_check.py [--image inference|full ...] [--json-file OUT]``;
prints one JSON document (install seconds and the probe's result per image); exit status 1
when an entry point fails to import. ``make image-check`` runs it, and ``make deploy-check``
(so CI) runs that: a fresh virtualenv per image takes minutes, too long for the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The checkout: ``make image-check`` runs from its root.
ROOT = Path.cwd()
#: Image -> (pip extras, workers the image runs: ``name`` or ``train:MODEL``).
IMAGES: dict[str, tuple[str, list[str]]] = {
    "inference": (
        "onnx,serving,kafka,s3",
        ["observations", "monitor", "forecaster", "batch-inference"],
    ),
    "full": (
        "server,kafka,s3",
        [
            "preprocess",
            "evaluate",
            "batch-inference",
            "observations",
            "monitor",
            "forecaster",
            "train:RIDGE",
            "train:PERSISTENCE",
            "train:SEASONAL_NAIVE",
            "train:ENSEMBLE",
        ],
    ),
}


def check_image(image: str, venv: Path) -> dict[str, Any]:
    """Create ``venv``, install the image's extras from this checkout, run the probe."""
    extras, workers = IMAGES[image]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            f"{ROOT}[{extras}]",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = time.perf_counter() - started
    if install.returncode != 0:
        return {"extras": extras, "install_seconds": round(installed, 1), "error": install.stderr}
    probe = subprocess.run(
        [str(python), str(ROOT / "scripts" / "image_probe.py"), *workers],
        capture_output=True,
        text=True,
        cwd=venv,  # not the checkout: the installed package is what gets imported
        check=False,
    )
    lines = probe.stdout.strip().splitlines()
    return {
        "extras": extras,
        "install_seconds": round(installed, 1),
        "entry_points": json.loads(lines[-1]) if lines else {"probe": probe.stderr},
        "ok": probe.returncode == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", action="append", choices=sorted(IMAGES), default=None)
    parser.add_argument("--keep", type=Path, default=None, help="Build the venvs here.")
    parser.add_argument("--json-file", type=Path, default=None, help="Write the report here.")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        for image in args.image or sorted(IMAGES):
            report[image] = check_image(image, base / image)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_file is not None:
        args.json_file.write_text(text + "\n")
    return 0 if all(entry.get("ok") for entry in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
