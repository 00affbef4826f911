"""Retention: what ``flts gc`` deletes, and what it never deletes.

Five things grow with every upload, message and promotion; each has a rule in
:class:`~flts.settings.RetentionSettings` (``FLTS_RETENTION__*``):

==============  =======================================  ==========================================
kind            where                                    deleted when
==============  =======================================  ==========================================
``bus``         SQLite bus rows                          older than ``bus_days`` and consumed by
                                                         every group reading the topic (dead
                                                         letters only with ``dead_letters``);
                                                         Kafka: the broker's ``retention.ms``
``datasets``    ``datasets/<dataset_id>/``               uploaded over ``dataset_days`` ago and
                                                         not the data of a protected config
``processed``   ``processed/<config_hash>/``             written over ``processed_days`` ago and
                                                         not a protected config
``logs``        ``inference-logs/<identifier>/...``      older than ``log_days``, except the
                                                         newest log of each identifier
``model-cache`` ``<home>/cache/models/<run_id>/``        beyond the newest ``model_cache_keep``,
                                                         except the current champions and the
                                                         runs they replaced
==============  =======================================  ==========================================

**Protected, whatever the settings say**: every config hash a promotion pointer or history entry
names, for every identifier (a rollback may return to any of them, and batch inference runs a
champion over its config's test split), every config hash with a pending evaluation, and the
raw uploads those configs were processed from (matched by the content digest the processed
data records). If the promotion records cannot be read, nothing is deleted. Models themselves
live in the tracking store and are never touched; the local cache only saves downloads.

A directory without its ``meta.json`` (an upload or a preprocessing still being written) is
left alone. Deleting a directory removes ``meta.json`` first, so an interrupted gc leaves a
directory that reads as incomplete (preprocessing recomputes it, the gateway does not list it),
never one that looks complete with parts missing. :func:`apply` reads the protection again
just before deleting and skips whatever became protected since :func:`plan`.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from flts.bus import open_bus
from flts.bus.sqlite import SQLiteBus
from flts.data.processed import PROCESSED_ROOT, ProcessedKeys
from flts.datasets import DATASETS_ROOT
from flts.exceptions import ConfigurationError
from flts.promotion import PROMOTION_ROOT, PromotionStore, pending
from flts.services.batch_inference import LOGS_ROOT
from flts.settings import RetentionSettings, Settings
from flts.storage import ObjectStore

Kind = Literal["bus", "datasets", "processed", "logs", "model-cache"]
KINDS: tuple[Kind, ...] = ("bus", "datasets", "processed", "logs", "model-cache")
_LOG_STAMP = "%Y%m%dT%H%M%S%fZ"  # the time stamp batch inference names its logs with


@dataclass(frozen=True)
class Protected:
    """What the champions and their history need: config hashes, the training-data digests
    of those configs (``None`` when one of them cannot be traced to its upload, which then
    keeps every upload) and the run ids a replica's cache keeps."""

    config_hashes: frozenset[str]
    input_digests: frozenset[str] | None
    runs: frozenset[str]

    def covers(self, item: Item) -> bool:
        """Whether ``item`` must not be deleted (after all)."""
        if item.guard is None:
            return False
        if item.kind == "processed":
            return item.guard in self.config_hashes
        if item.kind == "datasets":
            return self.input_digests is None or item.guard in self.input_digests
        if item.kind == "model-cache":
            return item.guard in self.runs
        return False


@dataclass(frozen=True)
class Item:
    """One thing to delete (``action="delete"``) or deliberately kept (``"keep"``), and why.

    ``keys`` are object-store keys (``meta.json`` first), ``path`` a cache directory; ``guard``
    is what :class:`Protected` is asked about again before deleting (config hash, training
    digest or run id)."""

    kind: Kind
    target: str
    action: Literal["delete", "keep"]
    reason: str
    count: int = 1
    keys: tuple[str, ...] = ()
    path: Path | None = None
    guard: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "count": self.count,
        }


@dataclass
class Plan:
    """Everything :func:`plan` found, and notes (a backend with its own retention, ...)."""

    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def deletions(self) -> list[Item]:
        return [i for i in self.items if i.action == "delete"]


def protected(store: ObjectStore) -> Protected:
    """Read what must survive from the promotion pointers, their history and the pending
    evaluations; any record that cannot be read stops gc (it could be the one that matters)."""
    promotions = PromotionStore(store)
    hashes: set[str] = set()
    runs: set[str] = set()
    try:
        for identifier in promotions.identifiers():
            current = promotions.current(identifier)
            history = promotions.history(identifier)
            # A reader may skip a damaged entry; gc must not, it could name what matters.
            stored = store.list(f"{PROMOTION_ROOT}/{identifier}/history")
            if len(history) < sum(1 for k in stored if k.endswith(".json")):
                raise ConfigurationError(f"a history entry of {identifier!r} is damaged")
            for entry in [current, *history]:
                if entry is not None:
                    hashes.add(entry.config_hash)
            if current is not None:
                runs.add(current.run_id)
                if current.previous_run_id:
                    runs.add(current.previous_run_id)
        hashes.update(config_hash for _, config_hash in pending(store))
    except Exception as exc:
        raise ConfigurationError(
            f"cannot tell what the champions need ({type(exc).__name__}: {exc}); "
            "nothing was deleted"
        ) from exc
    digests: set[str] = set()
    traced = True
    for config_hash in hashes:
        try:
            meta = store.get_json(ProcessedKeys.for_hash(config_hash).meta_key)
        except KeyError:
            traced = False  # its upload cannot be told apart from the others: keep them all
            break
        digests.add(str(meta["input_digests"]["train"]))
    return Protected(frozenset(hashes), frozenset(digests) if traced else None, frozenset(runs))


def _older(stamp: str, now: datetime, days: float) -> bool:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment < now - timedelta(days=days)


def _directories(store: ObjectStore, root: str) -> dict[str, list[str]]:
    """``root/<name>/...`` keys grouped by ``name``."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for key in store.list(root):
        grouped[key.split("/")[1]].append(key)
    return grouped


def _meta_first(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(keys, key=lambda k: (not k.endswith("/meta.json"), k)))


def plan_datasets(
    store: ObjectStore, keep: Protected, rules: RetentionSettings, now: datetime
) -> list[Item]:
    items: list[Item] = []
    for dataset_id, keys in sorted(_directories(store, DATASETS_ROOT).items()):
        meta_key = f"{DATASETS_ROOT}/{dataset_id}/meta.json"
        if meta_key not in keys:
            continue  # still being written (or announced): not ours to judge
        meta = store.get_json(meta_key)
        digest = str(meta["train"]["digest"])
        target = f"{DATASETS_ROOT}/{dataset_id}/"
        if keep.input_digests is None:
            items.append(
                Item(
                    "datasets",
                    target,
                    "keep",
                    "a protected config's processed data is gone, "
                    "so its upload cannot be told apart: every upload is kept",
                )
            )
        elif digest in keep.input_digests:
            items.append(Item("datasets", target, "keep", "data of a champion or history entry"))
        elif _older(str(meta["uploaded_at"]), now, rules.dataset_days):
            items.append(
                Item(
                    "datasets",
                    target,
                    "delete",
                    f"uploaded over {rules.dataset_days:g} days ago, used by no champion",
                    count=len(keys),
                    keys=_meta_first(keys),
                    guard=digest,
                )
            )
    return items


def plan_processed(
    store: ObjectStore, keep: Protected, rules: RetentionSettings, now: datetime
) -> list[Item]:
    items: list[Item] = []
    for config_hash, keys in sorted(_directories(store, PROCESSED_ROOT).items()):
        processed = ProcessedKeys.for_hash(config_hash)
        target = f"{processed.prefix}/"
        if processed.meta_key not in keys:
            continue  # preprocessing still writing it (or crashed: it recomputes)
        if config_hash in keep.config_hashes:
            items.append(
                Item(
                    "processed",
                    target,
                    "keep",
                    "config of a champion, history entry or pending evaluation",
                )
            )
            continue
        created = str(store.get_json(processed.meta_key)["created_at"])
        if _older(created, now, rules.processed_days):
            items.append(
                Item(
                    "processed",
                    target,
                    "delete",
                    f"written over {rules.processed_days:g} days ago, used by no champion",
                    count=len(keys),
                    keys=_meta_first(keys),
                    guard=config_hash,
                )
            )
    return items


def _log_time(key: str) -> datetime | None:
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, _LOG_STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def plan_logs(store: ObjectStore, rules: RetentionSettings, now: datetime) -> list[Item]:
    cutoff = now - timedelta(days=rules.log_days)
    items: list[Item] = []
    for _, keys in sorted(_directories(store, LOGS_ROOT).items()):
        logs = sorted(k for k in keys if k.endswith(".json"))
        if not logs:
            continue
        newest = logs[-1]  # what `flts status` shows as the live error
        folders: dict[str, list[str]] = defaultdict(list)
        for key in logs[:-1]:
            moment = _log_time(key)
            if moment is not None and moment < cutoff:
                folders[key.rsplit("/", 1)[0]].append(key)
        items.append(Item("logs", newest, "keep", "newest log of the identifier"))
        for folder, old in sorted(folders.items()):
            items.append(
                Item(
                    "logs",
                    f"{folder}/",
                    "delete",
                    f"older than {rules.log_days:g} days",
                    count=len(old),
                    keys=tuple(old),
                )
            )
    return items


def model_cache_dir(settings: Settings) -> Path:
    """Where :meth:`flts.tracking.Tracker.model_dir` keeps downloaded models."""
    return settings.home.expanduser() / "cache" / "models"


def plan_model_cache(cache: Path, keep: Protected, rules: RetentionSettings) -> list[Item]:
    if not cache.is_dir():
        return []
    # Dot-names are downloads in progress (renamed into place when complete).
    saved = [d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")]
    saved.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    items: list[Item] = []
    newest = 0
    for directory in saved:
        if directory.name in keep.runs:
            items.append(
                Item(
                    "model-cache",
                    str(directory),
                    "keep",
                    "current champion or the run it replaced",
                    path=directory,
                )
            )
        elif newest < rules.model_cache_keep:
            newest += 1
            items.append(
                Item(
                    "model-cache",
                    str(directory),
                    "keep",
                    f"among the newest {rules.model_cache_keep}",
                    path=directory,
                )
            )
        else:
            items.append(
                Item(
                    "model-cache",
                    str(directory),
                    "delete",
                    f"not a champion nor among the newest {rules.model_cache_keep}",
                    path=directory,
                    guard=directory.name,
                )
            )
    return items


def plan_bus(url: str, rules: RetentionSettings, now: datetime) -> tuple[list[Item], list[str]]:
    bus = open_bus(url)
    try:
        if not isinstance(bus, SQLiteBus):
            return [], [
                f"bus {url.split('://', 1)[0]}: no rows of ours to delete (Kafka keeps topics "
                "for the broker's retention.ms; memory:// lives as long as its process)"
            ]
        report = bus.prune(_bus_cutoff(now, rules), dead_letters=rules.dead_letters, dry_run=True)
    finally:
        bus.close()
    reason = f"older than {rules.bus_days:g} days, consumed by every group"
    items = [Item("bus", topic, "delete", reason, count=n) for topic, n in report.messages.items()]
    items += [
        Item("bus", topic, "keep", f"not yet consumed by group {group!r}", count=n)
        for (group, topic), n in report.held_back.items()
    ]
    notes = [] if rules.dead_letters else ["bus: dead letters (dlq.*) are kept"]
    if report.processed_events:
        notes.append(f"bus: {report.processed_events} idempotency records of that age go too")
    return items, notes


def _bus_cutoff(now: datetime, rules: RetentionSettings) -> float:
    return (now - timedelta(days=rules.bus_days)).timestamp()


def plan(
    settings: Settings,
    store: ObjectStore,
    *,
    kinds: Iterable[Kind] = KINDS,
    now: datetime | None = None,
) -> Plan:
    """What gc would delete now, and the notable things it keeps."""
    now = now or datetime.now(UTC)
    rules = settings.retention
    wanted = set(kinds)
    keep = protected(store)
    result = Plan()
    if "bus" in wanted:
        items, notes = plan_bus(settings.bus.url, rules, now)
        result.items += items
        result.notes += notes
    if "datasets" in wanted:
        result.items += plan_datasets(store, keep, rules, now)
    if "processed" in wanted:
        result.items += plan_processed(store, keep, rules, now)
    if "logs" in wanted:
        result.items += plan_logs(store, rules, now)
    if "model-cache" in wanted:
        result.items += plan_model_cache(model_cache_dir(settings), keep, rules)
    return result


def apply(
    settings: Settings, store: ObjectStore, planned: Plan, *, now: datetime | None = None
) -> list[Item]:
    """Delete what ``planned`` lists, re-checking protection first; returns what was deleted
    (bus items with the counts actually deleted). Something that became protected since the
    plan is skipped."""
    now = now or datetime.now(UTC)
    keep = protected(store)
    done: list[Item] = []
    for item in planned.deletions:
        if keep.covers(item) or item.kind == "bus":
            continue
        if item.path is not None:
            shutil.rmtree(item.path, ignore_errors=True)
        for key in item.keys:
            store.delete(key)
        done.append(item)
    if any(item.kind == "bus" for item in planned.deletions):
        done += _prune_bus(settings, now)
    return done


def _prune_bus(settings: Settings, now: datetime) -> list[Item]:
    rules = settings.retention
    bus = open_bus(settings.bus.url)
    try:
        assert isinstance(bus, SQLiteBus)  # only an SQLite bus plans deletions
        report = bus.prune(_bus_cutoff(now, rules), dead_letters=rules.dead_letters)
    finally:
        bus.close()
    reason = f"older than {rules.bus_days:g} days, consumed by every group"
    return [Item("bus", topic, "delete", reason, count=n) for topic, n in report.messages.items()]
