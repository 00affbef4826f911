"""The bus contract on ``memory://``, plus URL-to-backend lookup."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flts.bus import BACKENDS, Bus, open_bus, register_backend
from flts.bus.memory import MemoryBus
from flts.bus.sqlite import SQLiteBus
from flts.exceptions import ConfigurationError

from .bus_suite import BusContract, BusFactory, training_event


class TestMemoryBus(BusContract):
    @pytest.fixture
    def bus_factory(self) -> Iterator[BusFactory]:
        # A unique broker name per test: buses from one factory share state, tests do not.
        url = f"memory://contract-{uuid.uuid4().hex}"
        opened: list[Bus] = []

        def factory() -> Bus:
            opened.append(open_bus(url))
            return opened[-1]

        yield factory
        for bus in opened:
            bus.close()


def test_anonymous_memory_buses_are_isolated() -> None:
    with open_bus("memory://") as a, open_bus("memory://") as b:
        a.publish("t", training_event(1))
        assert a.pending("g", "t") == 1
        assert b.pending("g", "t") == 0


def test_closing_a_bus_hands_back_its_claims() -> None:
    """In memory a consumer 'dies' with its bus: the message goes to the next consumer."""
    url = f"memory://{uuid.uuid4().hex}"
    first = open_bus(url)
    first.publish("t", training_event(1))
    claimed = first._poll(["t"], "g", "c1", timeout=1)
    assert claimed is not None
    first.close()
    with open_bus(url) as second:
        again = second._poll(["t"], "g", "c2", timeout=1)
        assert again is not None
        assert (again.offset, again.delivery_count) == (claimed.offset, 2)


@pytest.mark.parametrize(("url", "cls"), [("memory://", MemoryBus), ("MEMORY://x", MemoryBus)])
def test_open_bus_picks_the_backend_by_scheme(url: str, cls: type[Bus]) -> None:
    with open_bus(url) as bus:
        assert type(bus) is cls


def test_open_bus_sqlite(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("bus") / "bus.db"
    with open_bus(f"sqlite:///{path}") as bus:  # tmp paths are absolute: four slashes
        assert isinstance(bus, SQLiteBus)
        assert bus.path == path


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown bus scheme 'rabbit'.*memory, sqlite"):
        open_bus("rabbit://localhost")


def test_url_without_scheme_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="has no scheme"):
        open_bus("/tmp/bus.db")


def test_registered_backend_with_missing_dependency_gives_install_hint() -> None:
    register_backend(
        "fakekafka", "flts_no_such_module:Bus", extra="kafka", package="flts_no_such_module"
    )
    try:
        with pytest.raises(Exception, match=r"pip install 'flts\[kafka\]'"):
            open_bus("fakekafka://localhost:9092")
    finally:
        del BACKENDS["fakekafka"]


def test_register_backend_refuses_to_clobber() -> None:
    with pytest.raises(ConfigurationError, match="already registered"):
        register_backend("memory", "elsewhere:Bus")


def test_a_record_with_fields_of_the_wrong_type_is_dead_lettered() -> None:
    """Only code that bypasses ``publish`` can store one; it must not stop the group."""
    with open_bus("memory://") as bus:
        bus._publish("t", "ElBorn", "text, not bytes", {})  # type: ignore[arg-type]
        bus._publish("t", "ElBorn", b"{}", {"n": 1})  # type: ignore[dict-item]
        good = training_event(1)
        bus.publish("t", good)
        got: list[str] = []
        stats = bus.consume("t", "g", lambda e: got.append(e.event_id), max_messages=3, max_idle=5)
        assert got == [good.event_id]
        assert stats.dead_lettered == 2
        text, numbers = bus.dead_letters("t")
        assert text.value == b"text, not bytes"
        assert "value is str, not bytes" in text.error
        assert "headers are not string pairs" in numbers.error
        assert numbers.headers["x-dlq-raw-headers"] == "{'n': 1}"
