"""The GLOBAL trainer: one network per group of stations, one run per member.

A bulk upload's stations form a group (:mod:`flts.fleet.groups`); preprocess publishes one
``training-data`` event per member, each carrying the group. ``flts worker train --model
GLOBAL`` collects them and trains the group once:

1. A member already trained (a finished GLOBAL run for its identifier and config hash) is
   re-announced as SUCCESS, as every trainer does.
2. Otherwise the member is recorded as *ready*: ``groups/<group>/ready/<identifier>.json``
   holds its claim check (the event itself), and ``groups-waiting/<group>.json`` notes when
   the group's first member became ready. The event is acknowledged.
3. When every member of the manifest is ready, or ``training.group_wait_seconds`` after the
   first one (checked on every event and every few seconds by :meth:`tick`), one trainer
   claims the group by *creating* ``groups/<group>/claim.json`` (``ObjectStore.
   put_if_absent``: of two replicas exactly one trains, docs/architecture.md rule 13) and
   trains :func:`flts.models.global_mlp.fit_group` on the ready members' processed data.
4. For each member it logs one run (that member's self-contained model, its model card, its
   validation scores) and publishes ``model-training`` SUCCESS for that (identifier, config
   hash), so the evaluator judges the GLOBAL candidate per station like any other. A model
   failure publishes FAILED for every member, so no evaluator waits for it.
5. ``groups/<group>/outcome.json`` records the run of each member and the members that were
   missing. A member whose event arrives after its group was claimed without it is reported
   FAILED with that reason (its station keeps its per-station candidates); a member that
   never arrives has no config hash to report on and is only named in the outcome.

An event without a group trains a group of one at once, through the plain trainer's path.
Store and tracking outages propagate (the bus retries); the claim is released first, so the
retried event claims and trains again, re-announcing the members already logged. A trainer
process killed while it trains leaves its claim in place: delete ``claim.json`` and the
members' events are trained again when redelivered or republished (known gap, see
docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flts.data.processed import read_splits
from flts.evaluation import score
from flts.events import TrainingDataEvent, TrainingStatus
from flts.exceptions import DataValidationError, InfrastructureError
from flts.fleet.groups import GroupManifest, read_group
from flts.services.context import ServiceContext
from flts.services.metrics import worker_metrics
from flts.services.train import TRAINING_SEED, TrainService, processed_keys

log = logging.getLogger(__name__)

GLOBAL = "GLOBAL"
WAITING_PREFIX = "groups-waiting"
#: How often the runner calls :meth:`GlobalTrainService.tick` (groups past their wait).
TICK_SECONDS = 5.0


def group_prefix(group: str) -> str:
    return f"groups/{group}"


def ready_key(group: str, identifier: str) -> str:
    return f"{group_prefix(group)}/ready/{identifier}.json"


def claim_key(group: str) -> str:
    return f"{group_prefix(group)}/claim.json"


def outcome_key(group: str) -> str:
    return f"{group_prefix(group)}/outcome.json"


def waiting_key(group: str) -> str:
    return f"{WAITING_PREFIX}/{group}.json"


class GlobalTrainService(TrainService):
    """Collects a group's ``training-data`` events and trains the group once (module doc)."""

    tick_seconds = TICK_SECONDS

    def __init__(
        self,
        context: ServiceContext,
        model_type: str | None = GLOBAL,
        *,
        params: dict[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock`` (UTC now) is injectable so wait tests need no sleeping."""
        super().__init__(context, model_type or GLOBAL, params=params)
        if self.model_type != GLOBAL:
            raise DataValidationError(f"GlobalTrainService trains GLOBAL, not {self.model_type}")
        self.wait = timedelta(seconds=context.settings.training.group_wait_seconds)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ entry points

    def _handle(self, event: TrainingDataEvent) -> None:
        group = event.payload.group
        if group is None:  # a single upload: a group of one, trained now
            super()._handle(event)
            return
        done = self._finished_run(event.payload.config_hash, event.identifier)
        if done is not None:
            self._publish(
                event, TrainingStatus.SUCCESS, run_id=done.run_id, train_seconds=done.train_seconds
            )
            return
        with self._lock:
            manifest = read_group(self.context.store, group)
            if manifest is None or event.identifier not in manifest.members:
                where = "it has no manifest" if manifest is None else "it does not list it"
                self._report_failure(
                    event,
                    DataValidationError(f"{event.identifier} is in group {group}, but {where}"),
                )
                return
            claim = self._claim(group)
            if claim is not None:
                if claim["members"].get(event.identifier) != event.payload.config_hash:
                    self._late(event, group, claim)
                return  # the claimant trains (or trained) this member and reports it
            self.context.store.put_json(
                ready_key(group, event.identifier),
                {"ready_at": self._clock().isoformat(), "event": event.model_dump(mode="json")},
                atomic=True,
            )
            self.context.store.put_if_absent(
                waiting_key(group),
                json.dumps({"group": group, "first_ready_at": self._clock().isoformat()}).encode(),
            )
            log.info(
                "GLOBAL: %s of group %s is ready",
                event.identifier,
                group,
                extra={**self._log_context(event), "event": "group-member-ready"},
            )
            self._train_when_due(manifest)

    def tick(self) -> list[str]:
        """Train every waiting group that is complete or past its wait; the groups trained."""
        trained: list[str] = []
        with self._lock:
            for key in self.context.store.list(WAITING_PREFIX):
                group = key.rsplit("/", 1)[-1].removesuffix(".json")
                manifest = read_group(self.context.store, group)
                if manifest is None:
                    continue
                try:
                    if self._train_when_due(manifest):
                        trained.append(group)
                except InfrastructureError:
                    raise
                except Exception:  # one broken group must not block the others
                    log.exception("training group %s failed; retrying at the next tick", group)
        return trained

    # ------------------------------------------------------------------ coordination

    def _claim(self, group: str) -> dict[str, Any] | None:
        key = claim_key(group)
        if not self.context.store.exists(key):
            return None
        claim: dict[str, Any] = self.context.store.get_json(key)
        return claim

    def _ready(self, manifest: GroupManifest) -> dict[str, TrainingDataEvent]:
        """The ready members' claim checks, by identifier (members of the manifest only)."""
        ready: dict[str, TrainingDataEvent] = {}
        prefix = f"{group_prefix(manifest.group)}/ready"
        for key in self.context.store.list(prefix):
            record = self.context.store.get_json(key)
            event = TrainingDataEvent.model_validate(record["event"])
            if event.identifier in manifest.members:
                ready[event.identifier] = event
        return ready

    def _train_when_due(self, manifest: GroupManifest) -> bool:
        """Claim and train ``manifest``'s group if it is complete or past its wait."""
        group = manifest.group
        if not self.context.store.exists(waiting_key(group)) or self._claim(group) is not None:
            return False
        ready = self._ready(manifest)
        if not ready:
            return False
        complete = set(manifest.members) <= set(ready)
        if not complete:
            first = datetime.fromisoformat(
                self.context.store.get_json(waiting_key(group))["first_ready_at"]
            )
            if self._clock() - first < self.wait:
                return False
        missing = sorted(set(manifest.members) - set(ready))
        claim = {
            "group": group,
            "owner": uuid.uuid4().hex,
            "claimed_at": self._clock().isoformat(),
            "members": {i: e.payload.config_hash for i, e in sorted(ready.items())},
            "missing": missing,
        }
        if not self.context.store.put_if_absent(claim_key(group), json.dumps(claim).encode()):
            return False  # another trainer claimed it first
        try:
            self._train_group(manifest, ready, missing)
        except BaseException:
            # An outage (or a stop) mid-way: release the claim so the retry trains again.
            self.context.store.delete(claim_key(group))
            raise
        return True

    def _late(self, event: TrainingDataEvent, group: str, claim: dict[str, Any]) -> None:
        trained = len(claim["members"])
        self._report_failure(
            event,
            DataValidationError(
                f"{event.identifier} became ready after group {group} was claimed for "
                f"training at {claim['claimed_at']} with {trained} member(s); it has its "
                "per-station candidates only"
            ),
        )

    # ------------------------------------------------------------------ training

    def _train_group(
        self, manifest: GroupManifest, ready: dict[str, TrainingDataEvent], missing: list[str]
    ) -> None:
        """Train the group's network once, then log and announce one run per member."""
        from flts.models.global_mlp import fit_group

        group = manifest.group
        started = time.perf_counter()
        if missing:
            log.warning(
                "GLOBAL: group %s trains without %s (not ready after %.0fs)",
                group,
                ", ".join(missing),
                self.wait.total_seconds(),
                extra={"event": "group-members-missing", "model_type": GLOBAL},
            )
        for event in ready.values():
            self._publish(event, TrainingStatus.RUNNING)

        def loader(event: TrainingDataEvent) -> Any:
            return lambda: read_splits(self.context.store, processed_keys(event.payload)).windows()

        try:
            fit = fit_group(
                {i: loader(e) for i, e in ready.items()}, params=self.params, seed=TRAINING_SEED
            )
        except InfrastructureError:
            raise
        except Exception as exc:  # the model's (or the members' data's) fault: tell everyone
            for event in ready.values():
                self._report_failure(event, exc)
            self._record_outcome(group, {}, sorted(ready), missing, started)
            return
        runs: dict[str, str] = {}
        failed: list[str] = []
        for identifier, event in sorted(ready.items()):
            run_id = self._log_member(event, fit)
            if run_id is None:
                failed.append(identifier)
            else:
                runs[identifier] = run_id
        worker_metrics().training_duration.labels(GLOBAL).observe(time.perf_counter() - started)
        self._record_outcome(group, runs, failed, missing, started)

    def _log_member(self, event: TrainingDataEvent, fit: Any) -> str | None:
        """Log and announce one member's model; its run id, or ``None`` after FAILED."""
        done = self._finished_run(event.payload.config_hash, event.identifier)
        if done is not None:  # logged before an outage interrupted the group: re-announce
            self._publish(
                event, TrainingStatus.SUCCESS, run_id=done.run_id, train_seconds=done.train_seconds
            )
            return done.run_id
        splits = read_splits(self.context.store, processed_keys(event.payload))
        prepared = splits.windows()
        try:
            model = fit.forecaster(event.identifier, prepared)
            prediction = model.predict(prepared.validation)
            validation = score(prepared.validation.targets, prediction, prepared.spec.targets)
        except InfrastructureError:
            raise
        except Exception as exc:  # only model code runs here
            self._report_failure(event, exc)
            return None
        run_id = self._log_run(event, model, splits, prepared, validation)
        if run_id is None:
            return None
        seconds = model.metadata.get("train_seconds")
        log.info(
            "GLOBAL: %s logged (run %s)",
            event.identifier,
            run_id,
            extra={**self._log_context(event), "event": "training-succeeded", "run_id": run_id},
        )
        self._publish(
            event,
            TrainingStatus.SUCCESS,
            run_id=run_id,
            train_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        )
        return run_id

    def _record_outcome(
        self,
        group: str,
        runs: dict[str, str],
        failed: list[str],
        missing: list[str],
        started: float,
    ) -> None:
        """What became of each member, then the group stops waiting (in that order: a crash
        in between leaves a marker the next tick finds claimed and ignores)."""
        self.context.store.put_json(
            outcome_key(group),
            {
                "group": group,
                "finished_at": self._clock().isoformat(),
                "seconds": round(time.perf_counter() - started, 3),
                "runs": runs,
                "failed": failed,
                "missing": missing,
            },
            atomic=True,
        )
        self.context.store.delete(waiting_key(group))
        log.info(
            "GLOBAL: group %s done: %d run(s), %d failed, %d missing",
            group,
            len(runs),
            len(failed),
            len(missing),
            extra={"event": "group-trained", "model_type": GLOBAL},
        )
