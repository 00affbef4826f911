"""Run every FLTS service as its own OS process and keep them running (``flts up``).

Each child is ``python -m flts <command>`` with the parent's environment plus its own
variables; output goes to ``<home>/logs/<name>.log``. A child that exits unexpectedly is
restarted with exponential backoff (up to ``max_restarts``); ``stop`` sends SIGTERM to all
(each finishes its current message) and SIGKILL to whatever is still alive after a grace
period.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from flts.settings import Settings


@dataclass
class ProcessSpec:
    """One service process: a name and the ``flts`` arguments that start it."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    restarts: int = 0
    next_start: float = 0.0


def service_specs(
    settings: Settings,
    models: Sequence[str],
    *,
    serve_ports: Sequence[int] | None = None,
    batch_inference: bool = True,
) -> list[ProcessSpec]:
    """The embedded system: gateway, preprocess, a trainer per model type, evaluator, batch
    inference and one inference replica per port."""
    ports = list(serve_ports or [settings.serving.port])
    specs = [
        ProcessSpec("gateway", ["gateway"]),
        ProcessSpec("preprocess", ["worker", "preprocess"]),
        *[
            ProcessSpec(f"train-{m.lower()}", ["worker", "train", "--model", m.upper()])
            for m in models
        ],
        ProcessSpec("evaluate", ["worker", "evaluate"]),
    ]
    if batch_inference:
        specs.append(ProcessSpec("batch-inference", ["worker", "batch-inference"]))
    for i, port in enumerate(ports):
        name = f"serve-{i}"
        specs.append(ProcessSpec(name, ["serve", "--port", str(port), "--replica-id", name]))
    return specs


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        max_restarts: int = 5,
    ) -> None:
        self.specs = list(specs)
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.max_restarts = max_restarts
        self.children: dict[str, _Child] = {}

    def _spawn(self, spec: ProcessSpec, restarts: int = 0) -> _Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "flts", *spec.args],
            env={**self.env, **spec.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return _Child(spec, process, log, restarts)

    def start(self) -> None:
        for spec in self.specs:
            self.children[spec.name] = self._spawn(spec)

    def kill(self, name: str) -> None:
        """SIGKILL one child (tests use this to simulate a crash); ``check`` restarts it."""
        self.children[name].process.kill()
        self.children[name].process.wait()

    def check(self) -> list[str]:
        """Restart children that exited; returns messages about what happened."""
        messages = []
        now = time.monotonic()
        for name, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            if child.restarts >= self.max_restarts:
                messages.append(
                    f"{name} exited with {code}; gave up after {child.restarts} restarts"
                )
                continue
            if child.next_start == 0.0:
                child.next_start = now + min(2.0**child.restarts, 30.0)
                messages.append(f"{name} exited with {code}; restarting (see {name}.log)")
            if now >= child.next_start:
                child.log.close()
                self.children[name] = self._spawn(child.spec, child.restarts + 1)
        return messages

    def alive(self) -> dict[str, bool]:
        return {name: child.process.poll() is None for name, child in self.children.items()}

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM everyone, wait up to ``grace`` seconds, then SIGKILL the rest."""
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + grace
        for child in self.children.values():
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.log.close()
