"""Following promotions: pointer polling, model-selected events, atomic swaps under load, the
stale-pointer fallback, and load failures that keep the previous model serving."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from flts.api import ModelHolder, PromotionModelSource, RefreshOutcome
from flts.events import ModelSelected, new_event
from flts.promotion import Promotion, PromotionStore
from flts.storage import ObjectStore

from .support import CONFIG_HASH, Harness, Runs, history_records


def test_promotion_is_served_within_a_poll_interval(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(pointer_poll_seconds=0.2)
    assert harness.client.get("/readyz").status_code == 503
    harness.promote("run-ridge")
    harness.wait_for(lambda: harness.client.get("/readyz").status_code == 200, timeout=2.0)
    assert harness.client.get("/readyz").json()["models"] == {"global": "run-ridge"}
    assert harness.serving_run() == "run-ridge"
    assert harness.runs.loads == ["run-ridge"]  # unchanged pointers are not reloaded


def test_model_selected_event_swaps_without_polling(
    harness_factory: Callable[..., Harness],
) -> None:
    # A poll interval far longer than the test: only the bus can trigger the swap.
    harness = harness_factory(follow_bus=True, pointer_poll_seconds=600.0)
    harness.wait_for(lambda: harness.app.watcher.polls >= 1)  # the start-up poll is over
    promotion = harness.promote("run-persistence", "PobleSec")
    assert harness.serving_run("PobleSec") is None
    event = new_event(
        ModelSelected(
            run_id=promotion.run_id,
            model_type=promotion.model_type,
            scores=promotion.scores,
            promoted_at=promotion.promoted_at,
        ),
        identifier="PobleSec",
        config_hash=CONFIG_HASH,
    )
    harness.context.bus.publish("model-selected", event)
    harness.wait_serving("run-persistence", "PobleSec")


def test_stale_pointer_falls_back_to_the_last_valid_run(harness: Harness) -> None:
    harness.promote("run-ridge", minutes=0)
    harness.wait_serving("run-ridge")
    harness.runs.deleted.add("run-persistence")  # the newest champion's run vanished
    harness.promote("run-persistence", minutes=1)
    # The poller saw the new pointer and judged its run; a full poll later nothing changed.
    harness.wait_for(lambda: "run-persistence" in harness.runs.checks)
    polls = harness.app.watcher.polls
    harness.wait_for(lambda: harness.app.watcher.polls >= polls + 2)
    assert harness.serving_run() == "run-ridge"
    assert "run-persistence" not in harness.runs.loads


def test_failed_load_keeps_the_previous_model_and_is_counted(harness: Harness) -> None:
    harness.promote("run-ridge", minutes=0)
    harness.wait_serving("run-ridge")
    harness.promote("broken", minutes=1)
    harness.wait_for(lambda: harness.runs.loads.count("broken") >= 2)  # retried each poll
    assert harness.serving_run() == "run-ridge"
    response = harness.client.post("/v1/forecast", json={"history": history_records(12)})
    assert response.status_code == 200
    assert response.headers["X-Model-Run-Id"] == "run-ridge"
    metrics = harness.client.get("/metrics").text
    assert 'flts_model_load_failures_total{identifier="global",model_type="PERSISTENCE"}' in (
        metrics
    )
    # Fixing the pointer recovers without a restart.
    harness.promote("run-persistence", minutes=2)
    harness.wait_serving("run-persistence")


def test_hot_swap_under_load_fails_no_request(harness: Harness) -> None:
    harness.promote("run-ridge", minutes=0)
    harness.wait_serving("run-ridge")
    body = {"history": history_records(12)}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            response = harness.client.post("/v1/forecast", json=body)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
                continue
            seen.append(response.headers["X-Model-Run-Id"])
            assert response.json()["model"]["run_id"] == seen[-1]

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        harness.wait_for(lambda: len(seen) >= 20)
        harness.promote("run-persistence", minutes=1)
        harness.wait_for(lambda: seen.count("run-persistence") >= 20)
    finally:
        stop.set()
        thread.join(10)
    assert failures == []
    counts = Counter(seen)
    assert counts["run-ridge"] >= 20
    assert counts["run-persistence"] >= 20
    switch = seen.index("run-persistence")
    assert set(seen[switch:]) == {"run-persistence"}  # never back to the old model


def test_in_flight_reference_survives_a_swap(runs: Runs) -> None:
    promotions = PromotionStore(ObjectStore("memory://api-holder-swap"), run_exists=runs.exists)
    holder = ModelHolder(PromotionModelSource(promotions, runs.load))
    assert holder.refresh("global") is RefreshOutcome.NO_CHAMPION
    assert not holder.ready

    def promote(run_id: str, model_type: str) -> None:
        promotions.record(
            Promotion(
                run_id=run_id,
                model_type=model_type,
                config_hash=CONFIG_HASH,
                promoted_at=datetime.now(UTC),
            )
        )

    promote("run-ridge", "RIDGE")
    assert holder.refresh("global") is RefreshOutcome.SWAPPED
    in_flight = holder.get("global")
    assert in_flight is not None
    promote("run-persistence", "PERSISTENCE")
    assert holder.refresh("global") is RefreshOutcome.SWAPPED
    assert holder.refresh("global") is RefreshOutcome.UNCHANGED
    # The request's own reference is untouched: same object, same model, same promotion.
    assert in_flight.promotion.run_id == "run-ridge"
    assert in_flight.model.model_type == "RIDGE"
    current = holder.get("global")
    assert current is not None
    assert current.promotion.run_id == "run-persistence"
    promote("broken", "RIDGE")
    assert holder.refresh("global") is RefreshOutcome.FAILED
    kept = holder.get("global")  # the previous model keeps serving, now marked degraded
    assert kept is not None
    assert (kept.model, kept.promotion) == (current.model, current.promotion)
    assert kept.degraded is not None
    assert kept.degraded.champion.run_id == "broken"
