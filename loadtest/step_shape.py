"""The "step" scenario: 20 more users every minute up to 100, then one minute at 100.

Use together with the locustfile::

    locust -f loadtest/locustfile.py,loadtest/step_shape.py --headless -H URL FltsUser
"""

from __future__ import annotations

from locust import LoadTestShape

STEP_USERS = 20
STEP_SECONDS = 60
MAX_USERS = 100


class StepShape(LoadTestShape):
    """Adds ``STEP_USERS`` users every ``STEP_SECONDS`` s up to ``MAX_USERS``."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        steps = MAX_USERS // STEP_USERS
        if elapsed > (steps + 1) * STEP_SECONDS:
            return None
        users = min(MAX_USERS, (int(elapsed // STEP_SECONDS) + 1) * STEP_USERS)
        return users, float(STEP_USERS)
