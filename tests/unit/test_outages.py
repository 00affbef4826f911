"""Outages: which errors count as an unreachable backend (real client-library errors, and the
translation points of the object store and the tracking server against a closed port), the
backoff schedule, and the consume loop waiting an outage out without dead-lettering."""

from __future__ import annotations

import errno
import random
import threading
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from s3fs.errors import translate_boto_error  # type: ignore[import-untyped]

from contract.bus_suite import training_event
from flts.bus import RetryPolicy, open_bus
from flts.bus.base import _Outage
from flts.events import Event
from flts.exceptions import (
    BusError,
    DataValidationError,
    InfrastructureError,
    UnavailableError,
)
from flts.settings import BusSettings, Settings
from flts.storage import ObjectStore
from flts.transient import is_transient, translated
from servers import free_port


def _client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    """``exc`` as Python leaves it when raised while handling ``cause``."""
    try:
        try:
            raise cause
        except BaseException:
            raise exc  # noqa: B904 - the implicit context is the point
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        OSError(errno.EHOSTUNREACH, "no route to host"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        _client_error("SlowDown", 503),
        _client_error("Whatever", 502),
        translate_boto_error(_client_error("InternalError", 500)),  # s3fs: OSError(EREMOTEIO)
        translate_boto_error(_client_error("ServiceUnavailable", 503)),  # s3fs: OSError(EBUSY)
        _raised(MlflowException("API request failed"), ConnectionRefusedError("refused")),
        BusError("broker gone"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unreachable_backends_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "no such object"),
        PermissionError(errno.EACCES, "denied"),
        KeyError("datasets/x"),
        ValueError("bad value"),
        DataValidationError("bad data"),
        _client_error("AccessDenied", 403),
        translate_boto_error(_client_error("NoSuchKey", 404)),
        MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST),
        _raised(ValueError("handler bug"), KeyError("missing")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_verdicts_and_bugs_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_translated_turns_only_transient_errors_into_one_class() -> None:
    expected = pytest.raises(InfrastructureError, match="object store read k unavailable")
    with expected as caught, translated("object store", "read k"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert isinstance(caught.value, UnavailableError)
    assert caught.value.http_status == 503
    assert caught.value.headers()["Retry-After"]
    with pytest.raises(FileNotFoundError), translated("object store"):
        raise FileNotFoundError("gone")


def test_the_object_store_translates_a_closed_port() -> None:
    store = ObjectStore(
        "s3://bucket/prefix",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        key="k",
        secret="s",
        config_kwargs={"retries": {"max_attempts": 1}},  # botocore's; s3fs still retries
        skip_instance_cache=True,
    )
    for call in (
        lambda: store.get("a"),
        lambda: store.put("a", b"x"),
        lambda: list(store.list("p")),
    ):
        with pytest.raises(InfrastructureError, match="object store"):
            call()


def test_the_tracking_server_translates_a_closed_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.tracking import Tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = Settings(home=tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InfrastructureError, match="tracking server"):
        Tracker(settings).runs_for(config_hash="a" * 64, identifier="global")


# ---------------------------------------------------------------------- backoff schedule


def test_outage_delays_double_to_the_cap_with_half_of_each_step_random() -> None:
    policy = RetryPolicy(outage_base_delay=1.0, outage_max_delay=30.0)
    rng = random.Random(7)
    steps = [1, 2, 4, 8, 16, 30, 30, 30]
    for wait, step in enumerate(steps, start=1):
        delays = [policy.outage_delay(wait, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (wait, min(delays), max(delays))
        assert max(delays) - min(delays) > step / 4  # jittered, not a fixed value
    assert policy.outage_delay(10_000, rng) <= 30.0  # no overflow far into an outage


def test_the_outage_budget_bounds_the_waits_then_gives_up() -> None:
    outage = _Outage(RetryPolicy(outage_budget=0.3, outage_base_delay=10, outage_max_delay=10))
    error = InfrastructureError("store down")
    first = outage.next_delay(error)
    assert first <= 0.3  # never sleeps past the budget
    time.sleep(0.35)
    with pytest.raises(InfrastructureError):
        outage.next_delay(error)
    outage.reset()
    assert outage.next_delay(error) > 0  # a new outage has a new budget


def test_outage_settings_validate_and_reach_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from flts.services.runner import retry_policy

    settings = BusSettings(outage_budget_seconds=600, outage_max_delay_seconds=12)
    policy = retry_policy(settings)
    assert (policy.outage_budget, policy.outage_max_delay) == (600, 12)
    with pytest.raises(ValueError, match="outage_max_delay_seconds"):
        BusSettings(outage_base_delay_seconds=5, outage_max_delay_seconds=1)
    monkeypatch.setenv("FLTS_BUS__OUTAGE_BUDGET_SECONDS", "700")
    settings_from_env = Settings(home=Path("x"), bus_url="memory://")
    assert settings_from_env.bus.outage_budget_seconds == 700  # the flat URL name kept it


# ---------------------------------------------------------------------- the consume loop

FAST = RetryPolicy(max_attempts=2, outage_budget=30, outage_base_delay=0.01, outage_max_delay=0.02)


def test_an_outage_longer_than_every_attempt_is_waited_out_without_a_dead_letter() -> None:
    failures = 10  # far more than max_attempts
    calls: list[int] = []

    def handler(_event: Event) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise InfrastructureError("object store read x unavailable")

    with open_bus("memory://") as bus:
        bus.publish("topic-a", training_event(1))
        stats = bus.consume("topic-a", "g", handler, retry=FAST, max_idle=0.5)
        assert (stats.handled, stats.dead_lettered, stats.retries) == (1, 0, 0)
        assert stats.outage_waits == failures
        assert bus.dead_letters("topic-a") == []
        assert bus.pending("g", "topic-a") == 0


def test_a_spent_budget_hands_the_message_back_and_ends_the_loop() -> None:
    policy = RetryPolicy(outage_budget=0.2, outage_base_delay=0.05, outage_max_delay=0.05)

    def down(_event: Event) -> None:
        raise InfrastructureError("tracking server unavailable")

    name = f"memory://{uuid.uuid4().hex}"
    with open_bus(name) as bus:
        bus.publish("topic-a", training_event(1))
        with pytest.raises(InfrastructureError):
            bus.consume("topic-a", "g", down, retry=policy, max_idle=5)
        assert bus.dead_letters("topic-a") == []
        handled: list[Event] = []
        stats = bus.consume("topic-a", "g", handled.append, max_idle=0.3)
        assert stats.handled == 1
        assert len(handled) == 1


def test_a_stop_during_an_outage_wait_returns_at_once_and_keeps_the_message() -> None:
    stop = threading.Event()
    policy = RetryPolicy(outage_budget=600, outage_base_delay=60, outage_max_delay=60)

    def down(_event: Event) -> None:
        threading.Timer(0.2, stop.set).start()
        raise BusError("broker gone")

    with open_bus("memory://") as bus:
        bus.publish("topic-a", training_event(1))
        started = time.monotonic()
        stats = bus.consume("topic-a", "g", down, retry=policy, stop=stop)
        assert time.monotonic() - started < 5  # not the 30-60 s backoff step
        assert stats.messages == 0
        assert stats.outage_waits == 1
        assert bus.pending("g", "topic-a") == 1
