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
   The claim fixes the group's members once (identifier and config hash): whoever trains
   the group later, after an outage or a dead trainer, trains exactly those.
4. For each member it logs one run (that member's self-contained model, its model card, its
   validation scores) and publishes ``model-training`` SUCCESS for that (identifier, config
   hash), so the evaluator judges the GLOBAL candidate per station like any other. A model
   failure publishes FAILED for every member, so no evaluator waits for it.
5. ``groups/<group>/outcome.json`` records the run of each member and the members that were
   missing. A member whose event arrives after its group was claimed without it is reported
   FAILED with that reason (its station keeps its per-station candidates); a member that
   never arrives has no config hash to report on and is only named in the outcome.

Late members, whichever way the race goes. A member's handler looks for a claim, writes
its ready marker, then looks again; a claimant lists the ready markers, creates the claim,
then lists them again. A marker written after the claimant's first listing is therefore
seen either by the claimant's second listing or by the handler's second look (the claim
exists by then), and the member is reported late by at least one of them; the handler that
finds a claim writes no waiting marker. Both may report it: a late report first looks for
a GLOBAL run already terminal for that config hash and re-announces it instead of logging
another failed run. Two reports at the same moment may still log two failed runs; that is
harmless, as the evaluator takes one run per model type from the tracking store and decides
a config hash once (a report after the decision changes nothing).

The claim is a lease. It carries its holder (``owner``), ``renewed_at`` and
``lease_seconds``: the larger of ``training.group_wait_seconds`` and
``evaluation.deadline_seconds`` (by the deadline the evaluator stops waiting for the
holder anyway). The holder renews it by compare-and-swap (``put_if_match``) at every step
of the training (before and after the fit, before each member's run) once a quarter of the
lease has passed, and stops, reporting nothing more, if it finds the claim no longer its own.
A claim with no outcome that was released, or not renewed for a whole lease, is *resumed*:
another trainer (any event of the group, or :meth:`tick`) replaces it by compare-and-swap
with itself as holder, so one trainer resumes it, and trains the claimed members again
(members already logged are re-announced, never logged twice). This assumes the fit, the
longest step between two renewals, takes well under three quarters of the lease, and that
the trainers' clocks agree to well within it; otherwise a live holder is presumed gone, the
group is fitted twice, and the first holder stops at its next renewal.

An event without a group trains a group of one at once, through the plain trainer's path.
Store and tracking outages propagate (the bus retries); the holder first marks its claim
released (``released_at``), so the retried event or the next tick resumes it at once. If
that write fails too (the store is still down), the claim is resumed when its lease runs
out. A trainer process killed while it trains is the same case: its claim is resumed once
the lease has passed without a renewal.
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
from flts.storage import ObjectStore

log = logging.getLogger(__name__)

GLOBAL = "GLOBAL"
WAITING_PREFIX = "groups-waiting"
#: How often the runner calls :meth:`GlobalTrainService.tick` (groups past their wait).
TICK_SECONDS = 5.0
#: A holder renews its claim once this share of the lease has passed since it last did.
RENEW_SHARE = 0.25


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


class _ClaimLostError(Exception):
    """The claim this trainer held was resumed by another (its lease ran out) or removed."""


class _Holding:
    """A claim this trainer holds: renews it when due, and says when it is no longer ours."""

    def __init__(
        self, store: ObjectStore, group: str, claim: dict[str, Any], clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.group = group
        self.owner: str = claim["owner"]
        self.lease = timedelta(seconds=float(claim["lease_seconds"]))
        self.renewed_at = datetime.fromisoformat(claim["renewed_at"])
        self._clock = clock

    def keep(self) -> None:
        """Renew the claim if a quarter of its lease has passed (``_ClaimLostError`` if it is not
        ours any more): called between steps, so a live holder is never presumed dead."""
        now = self._clock()
        if now - self.renewed_at < self.lease * RENEW_SHARE:
            return
        key = claim_key(self.group)
        try:
            found = self.store.get_versioned(key)
        except KeyError:  # removed by an operator: whoever claims it next trains it
            raise _ClaimLostError(f"the claim of group {self.group} was removed") from None
        current = json.loads(found.data)
        if current.get("owner") != self.owner:
            raise _ClaimLostError(f"group {self.group} was resumed by {current.get('owner')}")
        current["renewed_at"] = now.isoformat()
        if not self.store.put_if_match(key, json.dumps(current).encode(), found.tag):
            raise _ClaimLostError(f"group {self.group}'s claim changed while it was renewed")
        self.renewed_at = now

    def release(self) -> None:
        """Mark the claim released so a retry resumes it at once; best effort (during an
        outage this write fails too, and the lease running out does the same, later)."""
        key = claim_key(self.group)
        try:
            found = self.store.get_versioned(key)
            current = json.loads(found.data)
            if current.get("owner") != self.owner:
                return
            current["released_at"] = self._clock().isoformat()
            self.store.put_if_match(key, json.dumps(current).encode(), found.tag)
        except Exception:  # the training error matters more; the lease covers this
            log.warning(
                "GLOBAL: could not release the claim of group %s; it is resumed after its "
                "lease (%.0fs since %s)",
                self.group,
                self.lease.total_seconds(),
                self.renewed_at.isoformat(),
                exc_info=True,
                extra={"event": "group-claim-not-released", "model_type": GLOBAL},
            )


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
        # A holder silent this long is presumed gone (module doc): never shorter than the wait,
        # and by the evaluation deadline nobody waits for its candidates any more.
        self.lease = max(self.wait, timedelta(seconds=context.settings.evaluation.deadline_seconds))
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
                self._claimed(event, manifest, claim)
                return
            self.context.store.put_json(
                ready_key(group, event.identifier),
                {"ready_at": self._clock().isoformat(), "event": event.model_dump(mode="json")},
                atomic=True,
            )
            # A trainer may have listed the ready members, without this one, and claimed the
            # group between the first look and the marker: look again (module doc).
            claim = self._claim(group)
            if claim is not None:
                self._claimed(event, manifest, claim)
                return
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
        try:
            claim: dict[str, Any] = self.context.store.get_json(claim_key(group))
        except KeyError:
            return None
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

    def _claimed(
        self, event: TrainingDataEvent, manifest: GroupManifest, claim: dict[str, Any]
    ) -> None:
        """An event of a claimed group: late unless the claim lists it; if it does, the
        holder reports it, or this trainer resumes a claim released or out of its lease."""
        if claim["members"].get(event.identifier) != event.payload.config_hash:
            self._late(event, manifest.group, claim)
        else:
            self._train_when_due(manifest)

    def _train_when_due(self, manifest: GroupManifest) -> bool:
        """Claim and train ``manifest``'s group if it is complete or past its wait, or resume
        its claim if that was released or its lease ran out."""
        group = manifest.group
        if not self.context.store.exists(waiting_key(group)):
            return False
        try:
            found = self.context.store.get_versioned(claim_key(group))
        except KeyError:
            found = None
        if found is not None:
            return self._resume(manifest, json.loads(found.data), found.tag)
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
        now = self._clock().isoformat()
        claim = {
            "group": group,
            "owner": uuid.uuid4().hex,
            "claimed_at": now,
            "renewed_at": now,
            "lease_seconds": self.lease.total_seconds(),
            "members": {i: e.payload.config_hash for i, e in sorted(ready.items())},
            "missing": sorted(set(manifest.members) - set(ready)),
        }
        if not self.context.store.put_if_absent(claim_key(group), json.dumps(claim).encode()):
            return False  # another trainer claimed it first
        return self._train_claimed(manifest, claim, ready)

    def _resume(self, manifest: GroupManifest, claim: dict[str, Any], tag: str) -> bool:
        """Take over a claim that was released or not renewed for its lease (module doc)."""
        group = manifest.group
        if self.context.store.exists(outcome_key(group)):
            # Trained: the waiting marker outlived it (a crash between the two writes).
            self.context.store.delete(waiting_key(group))
            return False
        now = self._clock()
        released = claim.get("released_at")
        renewed = datetime.fromisoformat(claim.get("renewed_at") or claim["claimed_at"])
        lease = timedelta(seconds=float(claim.get("lease_seconds", self.lease.total_seconds())))
        if released is None and now - renewed <= lease:
            return False  # its holder is training it
        taken = {
            **{k: v for k, v in claim.items() if k != "released_at"},
            "owner": uuid.uuid4().hex,
            "renewed_at": now.isoformat(),
            "lease_seconds": self.lease.total_seconds(),
        }
        if not self.context.store.put_if_match(claim_key(group), json.dumps(taken).encode(), tag):
            return False  # another trainer resumed (or its holder renewed) it first
        log.warning(
            "GLOBAL: resuming group %s from holder %s (%s)",
            group,
            claim.get("owner"),
            f"released at {released}" if released else f"silent since {renewed.isoformat()}",
            extra={"event": "group-claim-resumed", "model_type": GLOBAL},
        )
        members: dict[str, str] = taken["members"]
        ready = {
            identifier: event
            for identifier, event in self._ready(manifest).items()
            if members.get(identifier) == event.payload.config_hash
        }
        return self._train_claimed(manifest, taken, ready)

    def _train_claimed(
        self, manifest: GroupManifest, claim: dict[str, Any], ready: dict[str, TrainingDataEvent]
    ) -> bool:
        """Train a group this trainer holds the claim of; ``False`` if the claim was lost."""
        holding = _Holding(self.context.store, manifest.group, claim, self._clock)
        try:
            self._report_unclaimed(manifest, claim)
            missing = sorted(set(manifest.members) - set(ready))
            self._train_group(manifest, ready, missing, holding)
        except _ClaimLostError as lost:
            # Resumed by another trainer, which reports every member: stop here.
            log.warning(
                "GLOBAL: stopped training group %s: %s",
                manifest.group,
                lost,
                extra={"event": "group-claim-lost", "model_type": GLOBAL},
            )
            return False
        except BaseException:
            # An outage (or a stop) mid-way: release the claim so the retry resumes it.
            holding.release()
            raise
        return True

    def _report_unclaimed(self, manifest: GroupManifest, claim: dict[str, Any]) -> None:
        """Report late every member ready but not in the claim: its marker may have been
        written after the claimant listed the ready set (module doc)."""
        prefix = f"{group_prefix(manifest.group)}/ready"
        for key in self.context.store.list(prefix):
            identifier = key.removeprefix(f"{prefix}/").removesuffix(".json")
            if identifier not in manifest.members or identifier in claim["members"]:
                continue  # a claimed member whose marker changed reports itself (_claimed)
            record = self.context.store.get_json(key)
            self._late(TrainingDataEvent.model_validate(record["event"]), manifest.group, claim)

    def _late(self, event: TrainingDataEvent, group: str, claim: dict[str, Any]) -> None:
        """Report FAILED for a member the claim does not list, once per config hash: a run
        already terminal (reported before, e.g. by the other side of the race in the module
        doc, or for a redelivered event) is re-announced instead of logging another."""
        runs = self.context.tracker.runs_for(
            config_hash=event.payload.config_hash, identifier=event.identifier
        )
        reported = [r for r in runs if r.model_type == self.model_type and r.terminal]
        if reported:
            run = next((r for r in reported if r.finished), reported[-1])
            status = TrainingStatus.SUCCESS if run.finished else TrainingStatus.FAILED
            self._publish(
                event,
                status,
                run_id=run.run_id,
                error=None if run.finished else run.error,
                train_seconds=run.train_seconds if run.finished else None,
            )
            return
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
        self,
        manifest: GroupManifest,
        ready: dict[str, TrainingDataEvent],
        missing: list[str],
        holding: _Holding,
    ) -> None:
        """Train the group's network once, then log and announce one run per member
        (renewing the claim between steps: ``_ClaimLostError`` stops it)."""
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

        holding.keep()
        try:
            fit = fit_group(
                {i: loader(e) for i, e in ready.items()}, params=self.params, seed=TRAINING_SEED
            )
        except InfrastructureError:
            raise
        except Exception as exc:  # the model's (or the members' data's) fault: tell everyone
            holding.keep()
            for event in ready.values():
                self._report_failure(event, exc)
            self._record_outcome(group, {}, sorted(ready), missing, started)
            return
        runs: dict[str, str] = {}
        failed: list[str] = []
        for identifier, event in sorted(ready.items()):
            holding.keep()
            run_id = self._log_member(event, fit)
            if run_id is None:
                failed.append(identifier)
            else:
                runs[identifier] = run_id
        worker_metrics().training_duration.labels(GLOBAL).observe(time.perf_counter() - started)
        holding.keep()
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
