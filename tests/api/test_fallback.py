"""A champion that cannot be loaded: a fresh replica becomes ready on the newest loadable
promotion, says so in /readyz and /metrics, and serves the champion once it is repaired."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flts.api import PromotionModelSource, create_app

from .support import Harness, LiveServer


def test_fresh_replica_serves_the_newest_loadable_promotion_until_the_champion_loads(
    harness_factory: Callable[..., Harness], saved_models: dict[str, Path]
) -> None:
    harness = harness_factory(pointer_poll_seconds=0.05)
    harness.promote("run-ridge", minutes=0)
    harness.promote("run-persistence", minutes=1)
    harness.promote("broken", minutes=2)  # the champion: a directory without a model
    source = PromotionModelSource(harness.promotions, harness.runs.load)
    app = create_app(harness.context, replica_id="fresh", follow_bus=False, source=source)
    with LiveServer(app) as client:  # a fresh replica of the same stores
        harness.wait_for(lambda: client.get("/readyz").status_code == 200)
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert ready["models"] == {"global": "run-persistence"}  # the newest that loads
        info = ready["degraded"]["global"]
        assert (info["champion_run_id"], info["serving_run_id"]) == ("broken", "run-persistence")
        assert "no model.json" in info["reason"]
        assert 'serving_run_id="run-persistence"} 1.0' in client.get("/metrics").text
        assert client.get("/v1/models/champion").json()["run_id"] == "run-persistence"

        harness.runs.dirs["broken"] = saved_models["run-ridge"]  # repaired
        harness.wait_for(lambda: client.get("/readyz").json()["status"] == "ready")
        assert client.get("/readyz").json()["models"] == {"global": "broken"}
        assert "flts_model_degraded{" not in client.get("/metrics").text


def test_replica_with_nothing_loadable_stays_unready(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(pointer_poll_seconds=0.05)
    harness.promote("broken")
    harness.wait_for(lambda: len(harness.runs.loads) >= 2)  # polled and retried
    assert harness.client.get("/readyz").status_code == 503
