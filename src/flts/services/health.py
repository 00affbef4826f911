"""A tiny HTTP server thread for pipeline workers: ``/healthz``, ``/readyz`` and ``/metrics``.

Workers have no HTTP API of their own, yet Kubernetes probes and Prometheus need one. The
stdlib :class:`~http.server.ThreadingHTTPServer` costs no dependency and no event loop, and
runs beside the consume loop in a daemon thread (``flts worker NAME --metrics-port 9100`` or
``FLTS_METRICS_PORT``).

* ``/healthz`` (liveness): 200 while the process and its consume loop are alive; 503 once the
  loop has died, so the kubelet restarts a worker whose loop ended without the process exiting.
* ``/readyz`` (readiness): 200 once the service is built (configuration checked, model type
  known) and its consume loop is running; 503 before that and while shutting down.
* ``/metrics``: the process's :class:`~flts.services.metrics.WorkerMetrics` in the Prometheus
  text format.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from flts.services.metrics import WorkerMetrics, worker_metrics

log = logging.getLogger(__name__)


class HealthState:
    """What the probes report; the runner flips it as the worker starts and stops."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._dead = threading.Event()

    def mark_ready(self) -> None:
        self._ready.set()

    def mark_dead(self) -> None:
        self._ready.clear()
        self._dead.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        return not self._dead.is_set()


class HealthServer:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        state: HealthState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics or worker_metrics()
        handler = _handler_class(state, self.metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        log.info("health and metrics on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(state: HealthState, metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "flts-health"

        def do_GET(self) -> None:  # http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = state.alive
                self._reply(200 if ok else 503, b"ok\n" if ok else b"consume loop ended\n")
            elif path == "/readyz":
                ok = state.ready
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            elif path == "/metrics":
                self._reply(200, metrics.render(), metrics.content_type)
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the JSON logs

    return Handler
