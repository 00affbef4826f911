"""Run every FLTS service as its own OS process and keep them running (``flts up``).

Each child is ``python -m flts <command>`` with the parent's environment plus its own
variables; output goes to ``<home>/logs/<name>.log``. A child that exits unexpectedly is
restarted with exponential backoff (up to ``max_restarts``); ``stop`` sends SIGTERM to all
(each finishes its current message) and SIGKILL to whatever is still alive after a grace
period.

The restart budget is for crash *loops*, not for a lifetime: a child that has stayed up for
``healthy_after`` seconds since its last start gets its restart count (and so its backoff)
reset, so a service that crashes once a day is restarted every day, while one that dies on
every start is given up on after ``max_restarts`` tries. Once the supervisor has given up on a
child, :attr:`Supervisor.gave_up` names it; ``flts up`` then stops everything and exits
non-zero, so whatever runs it (systemd, a container runtime, a shell script) sees the failure.
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

from flts.exceptions import ConfigurationError
from flts.settings import Settings


@dataclass
class ProcessSpec:
    """One service process: a name and the ``flts`` arguments that start it."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


#: Seconds a child must stay up for its restart count to start again from zero.
DEFAULT_HEALTHY_AFTER = 60.0


@dataclass
class _Child:
    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    restarts: int = 0
    next_start: float = 0.0
    started: float = field(default_factory=time.monotonic)
    gave_up: bool = False


def service_specs(
    settings: Settings,
    models: Sequence[str],
    *,
    serve_ports: Sequence[int] | None = None,
    batch_inference: bool = True,
) -> list[ProcessSpec]:
    """The embedded system: gateway, preprocess, a trainer per model type, evaluator, batch
    inference, the live monitor and forecaster, and one inference replica per port."""
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
    specs.append(ProcessSpec("monitor", ["worker", "monitor"]))
    specs.append(ProcessSpec("forecaster", ["worker", "forecaster"]))
    for i, port in enumerate(ports):
        name = f"serve-{i}"
        specs.append(ProcessSpec(name, ["serve", "--port", str(port), "--replica-id", name]))
    return specs


class Supervisor:
    """Starts the children of ``specs`` and restarts those that exit (see the module docstring).

    ``max_restarts`` restarts in a row at most, waiting ``restart_delay * 2**n`` seconds
    (capped at ``max_restart_delay``) before restart ``n + 1``; ``healthy_after`` seconds of
    uptime reset the count. ``program`` is the command the spec's arguments follow
    (``python -m flts``); tests run other programs under the same rules.
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        max_restarts: int = 5,
        healthy_after: float = DEFAULT_HEALTHY_AFTER,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        program: Sequence[str] | None = None,
    ) -> None:
        if max_restarts < 0 or healthy_after <= 0 or restart_delay < 0 or max_restart_delay < 0:
            raise ConfigurationError(
                "supervisor: max_restarts and the restart delays must be >= 0, healthy_after > 0"
            )
        self.specs = list(specs)
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.max_restarts = max_restarts
        self.healthy_after = healthy_after
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.program = list(program) if program is not None else [sys.executable, "-m", "flts"]
        self.children: dict[str, _Child] = {}

    def _spawn(self, spec: ProcessSpec, restarts: int = 0) -> _Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        process = subprocess.Popen(
            [*self.program, *spec.args],
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
        """Restart children that exited; returns messages about what happened.

        Call it regularly (``flts up`` does, every second): uptime is measured between calls.
        """
        messages = []
        now = time.monotonic()
        for name, child in list(self.children.items()):
            code = child.process.poll()
            if child.restarts and child.next_start == 0.0 and self._healthy(child, now):
                child.restarts = 0  # up long enough: past crashes no longer count
            if code is None or child.gave_up:
                continue
            if child.restarts >= self.max_restarts:
                child.gave_up = True
                messages.append(
                    f"{name} exited with {code}; gave up after {child.restarts} restarts "
                    f"(see {name}.log)"
                )
                continue
            if child.next_start == 0.0:
                delay = min(self.restart_delay * 2.0**child.restarts, self.max_restart_delay)
                child.next_start = now + delay
                messages.append(f"{name} exited with {code}; restarting (see {name}.log)")
            if now >= child.next_start:
                child.log.close()
                self.children[name] = self._spawn(child.spec, child.restarts + 1)
        return messages

    def _healthy(self, child: _Child, now: float) -> bool:
        return now - child.started >= self.healthy_after

    @property
    def gave_up(self) -> list[str]:
        """Children that exited with their restart budget spent; they stay down."""
        return [name for name, child in self.children.items() if child.gave_up]

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
