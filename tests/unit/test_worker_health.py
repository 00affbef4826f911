"""Worker health server (/healthz, /readyz, /metrics) and handler instrumentation: probes
follow the consume loop's life, and events are counted consumed, failed, dead-lettered."""

from __future__ import annotations

import threading

import httpx
import pytest

from flts.bus.base import RetryPolicy
from flts.events import TRAINING_DATA, Event
from flts.exceptions import DataValidationError
from flts.services.context import ServiceContext
from flts.services.health import HealthServer, HealthState
from flts.services.metrics import WorkerMetrics, instrument, worker_metrics
from flts.services.runner import run_service
from helpers import memory_settings, training_event, write_data


def test_probes_follow_the_state_and_metrics_are_prometheus_text() -> None:
    state = HealthState()
    metrics = WorkerMetrics()
    metrics.training_duration.labels("RIDGE").observe(1.5)
    with HealthServer(state, metrics=metrics) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        state.mark_ready()
        assert httpx.get(f"{base}/readyz").status_code == 200
        response = httpx.get(f"{base}/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        assert 'flts_training_duration_seconds_count{model_type="RIDGE"} 1.0' in response.text
        state.mark_dead()
        assert httpx.get(f"{base}/healthz").status_code == 503
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.get(f"{base}/nope").status_code == 404


def _event(tmp_path_factory: pytest.TempPathFactory) -> Event:
    context = ServiceContext(memory_settings(tmp_path_factory.mktemp("h")))
    return training_event(write_data(context.store, "c0ffee00"))


def test_instrument_counts_success_retries_and_the_dead_letter(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    metrics = WorkerMetrics()
    retried: list[str] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0)
    calls = {"n": 0}

    def flaky(_event: Event) -> None:
        calls["n"] += 1
        raise OSError("store down")

    event = _event(tmp_path_factory)
    handler = instrument(
        flaky, service="train-ridge", policy=policy, metrics=metrics,
        on_retry=lambda e: retried.append(e.event_id),
    )  # fmt: skip
    for _ in range(3):
        with pytest.raises(OSError, match="store down"):
            handler(event)
    labels = ("train-ridge", TRAINING_DATA)
    assert metrics.failed.labels(*labels)._value.get() == 3
    assert metrics.dead_lettered.labels(*labels)._value.get() == 1
    assert len(retried) == 2  # the third failure is final, not a retry

    bad = instrument(
        lambda _e: (_ for _ in ()).throw(DataValidationError("bad")),
        service="preprocess", policy=policy, metrics=metrics,
    )  # fmt: skip
    with pytest.raises(DataValidationError, match="bad"):
        bad(event)
    assert metrics.dead_lettered.labels("preprocess", TRAINING_DATA)._value.get() == 1

    ok = instrument(lambda _e: None, service="evaluate", policy=policy, metrics=metrics)
    ok(event)
    assert metrics.consumed.labels("evaluate", TRAINING_DATA)._value.get() == 1


def test_run_service_marks_ready_exports_lag_and_counts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A real consume loop on the memory bus: ready while running, dead after, the event
    counted and the group's backlog exported."""
    context = ServiceContext(memory_settings(tmp_path_factory.mktemp("r")))
    event = _event(tmp_path_factory)
    context.bus.publish(TRAINING_DATA, event)
    context.bus.publish(TRAINING_DATA, training_event(write_data(context.store, "beefbeef")))
    seen: list[str] = []
    stop = threading.Event()

    class Service:
        topics = (TRAINING_DATA,)
        group = "health-test"

        def handle(self, e: Event) -> None:
            seen.append(e.event_id)
            if len(seen) == 2:
                stop.set()

    state = HealthState()
    before = worker_metrics().consumed.labels("health-test", TRAINING_DATA)._value.get()
    thread = threading.Thread(
        target=run_service, args=(Service(), context, stop), kwargs={"health": state,
        "poll_timeout": 0.05},
    )  # fmt: skip
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert len(seen) == 2
    assert not state.alive
    assert not state.ready
    after = worker_metrics().consumed.labels("health-test", TRAINING_DATA)._value.get()
    assert after - before == 2
    text = worker_metrics().render().decode()
    assert 'flts_consumer_pending_messages{group="health-test",topic="training-data"} 0.0' in text
    context.close()
