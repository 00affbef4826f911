"""The serving process's collector policy (flts.api.heap): long-lived objects frozen, a
replaced model still freed."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from flts.api import heap


class Cyclic:
    """Stands for a replaced model: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    if heap.freeze_long_lived in gc.callbacks:
        gc.callbacks.remove(heap.freeze_long_lived)
    gc.unfreeze()


def test_settle_heap_frees_what_was_frozen_and_freezes_the_rest() -> None:
    old = Cyclic()
    gone = weakref.ref(old)
    gc.freeze()  # the previous swap froze it
    del old
    gc.collect()
    assert gone() is not None  # frozen: the collector no longer sees it
    heap.settle_heap()
    assert gone() is None
    assert gc.get_freeze_count() > 0
    assert gc.get_objects(generation=2) == []


def test_many_survivors_of_a_full_collection_are_frozen() -> None:
    heap.install()
    heap.install()
    assert gc.callbacks.count(heap.freeze_long_lived) == 1
    gc.freeze()
    imported = [[i] for i in range(heap.LONG_LIVED_SURVIVORS * 2)]  # e.g. a lazy import
    gc.collect()
    # Frozen objects sit in the permanent generation, which gc.get_objects() leaves out (the
    # freeze count alone drifts as other frozen objects of the process die meanwhile).
    collectable = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in collectable for o in imported)


def test_a_few_survivors_are_left_to_the_collector() -> None:
    heap.install()
    gc.freeze()
    in_flight = [[i] for i in range(100)]
    gc.collect()
    collectable = {id(o) for o in gc.get_objects()}
    assert all(id(o) in collectable for o in in_flight)


def test_settling_is_throttled_with_one_trailing_run(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[float] = []
    monkeypatch.setattr(heap, "settle_heap", lambda: runs.append(time.monotonic()))
    throttle = heap.SettleThrottle(interval=0.3)
    for _ in range(20):  # a burst of swaps: cold loads and evictions of a fleet
        throttle()
    assert len(runs) == 1
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(runs) == 2  # the burst's end is settled too, once
    assert runs[1] - runs[0] >= 0.29
    time.sleep(0.4)
    assert len(runs) == 2
