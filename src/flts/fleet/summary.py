"""The fleet at a glance: one row per station, sorted, filtered and paginated on the server,
and an overview of the whole fleet, for ``flts status``, the gateway's ``GET /v1/fleet`` and
the dashboard's fleet page alike.

A row joins, per identifier, its champion, the monitor's live figures for that champion and
its newest retraining trigger. What a build reads does not grow with the fleet:

* champions come from the promotion index (:mod:`flts.promotion.index`), whose entries carry
  each pointer's champion in brief; a build reads the index's top and only the parts that
  changed since the last build; only an entry without that summary (a damaged pointer) costs
  a read of its pointer; a part the store lost (:meth:`IndexReader.read`) costs one listing
  and the reads of that part's pointers per hash the top names of it (they are kept until
  that hash changes, which the part's next commit does by rebuilding it); and with no
  readable index at all the pointers are listed and read;
* live figures are the monitor's one ``live.json``;
* stations without a champion yet are found in the dataset metadata, which is written once
  and never changed: each ``meta.json`` is read once per process and remembered, so a build
  lists ``datasets/`` and reads only what is new;
* retraining triggers are read whole (:func:`flts.live.triggers.read_triggers`): there is one
  per drift or schedule event, not one per station.

The index is a hint that may lag a pointer by one interrupted write, until that identifier's
next commit rewrites its entry (replicas' full listings read the pointers but do not rewrite
the index); an overview may show that lag, ``flts status --identifier`` reads the pointer
itself. Rows are kept for ``cache_seconds``, so paging
through thousands of stations costs a sort in memory, not a build per page.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from flts.datasets import DATASETS_ROOT
from flts.exceptions import DataValidationError
from flts.live.monitor import read_figures
from flts.live.triggers import read_triggers
from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import ChampionSummary, DamagedIndexError, IndexReader, part_of
from flts.storage import ObjectStore

#: Columns the fleet can be sorted by.
FLEET_SORTS = (
    "identifier",
    "model_type",
    "evaluation_nrmse",
    "live_nrmse",
    "live_coverage",
    "age_seconds",
    "state",
)
#: Retraining states a row can be in (see :func:`retraining_state`).
FLEET_STATES = ("ok", "no champion", "retraining", "retrained", "kept", "refused")
#: Rows one page may hold.
MAX_PAGE = 500


def retraining_state(trigger: dict[str, Any] | None) -> str:
    """The state of an identifier's newest retraining trigger, in one word: ``ok`` (none),
    ``retraining`` (asked for, or prepared and not decided yet), ``retrained`` (a new champion
    came of it), ``kept`` (decided without a promotion) or ``refused`` (preprocess could not
    build the set)."""
    if trigger is None:
        return "ok"
    outcome = trigger.get("outcome") or {}
    if outcome.get("status") == "refused":
        return "refused"
    promoted = trigger.get("promoted")
    if promoted is None:
        return "retraining"
    return "retrained" if promoted else "kept"


def _age_seconds(moment: datetime, now: datetime) -> float:
    return max(0.0, (now - moment).total_seconds())


def _sort_key(column: str) -> Any:
    def key(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(column)
        if column == "live_coverage":
            value = min(value.values()) if value else None
        return (1, 0) if value is None else (0, value)

    return key


def _brief(promotion: Promotion) -> ChampionSummary:
    return ChampionSummary(
        model_type=promotion.model_type,
        config_hash=promotion.config_hash,
        promoted_at=promotion.promoted_at,
        nrmse=promotion.scores.get("nrmse"),
    )


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class FleetSummary:
    """The fleet's rows over one object store, rebuilt at most every ``cache_seconds``."""

    def __init__(self, store: ObjectStore, cache_seconds: float = 0.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.pointers = PromotionStore(store)  # the raw reader: no tracking server per row
        self.index = IndexReader(store)  # reads only the index parts that changed
        self._cached: tuple[float, list[dict[str, Any]], str | None] | None = None
        self._lock = threading.Lock()
        #: Lost index part -> (the top's hash of it, its identifiers' champions read from
        #: their pointers): kept until that hash changes, so a build lists once per change.
        self._lost: dict[str, tuple[str, dict[str, tuple[str, ChampionSummary]]]] = {}
        #: meta.json key -> its identifier (metadata is written once: read once).
        self._meta_identifiers: dict[str, str] = {}

    # ------------------------------------------------------------------ rows

    def rows(self) -> tuple[list[dict[str, Any]], str | None]:
        """Every identifier's row (by identifier) and when the monitor last wrote figures."""
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
                return cached[1], cached[2]
            rows, updated = self._build()
            self._cached = (time.monotonic(), rows, updated)
            return rows, updated

    def champions(self) -> dict[str, tuple[str, ChampionSummary]]:
        """identifier -> (champion run, its summary), from the promotion index."""
        try:
            entries = self.index.refresh()
        except (KeyError, DamagedIndexError):
            names = self.pointers.identifiers()
            found = {name: self.pointers.current(name) for name in names}
            return {n: (p.run_id, _brief(p)) for n, p in found.items() if p is not None}
        out = {}
        for name, entry in entries.items():
            if entry.champion is not None and entry.run_id is not None:
                out[name] = (entry.run_id, entry.champion)
                continue
            promotion = self.pointers.current(name)  # damaged pointer: its valid fallback
            if promotion is not None:
                out[name] = (promotion.run_id, _brief(promotion))
        for _digest, lost in self._lost_champions().values():
            out.update(lost)
        return out

    def _lost_champions(self) -> dict[str, tuple[str, dict[str, tuple[str, ChampionSummary]]]]:
        """The champions of the index parts the store lost, from their pointers: read once
        per hash the top names of each (the index has no entry for them, and a copy held
        before was stale), with one listing for all the parts read anew."""
        missing = self.index.missing
        kept = {
            p: self._lost[p]
            for p, d in missing.items()
            if p in self._lost and self._lost[p][0] == d
        }
        new = missing.keys() - kept.keys()
        if new:
            found: dict[str, dict[str, tuple[str, ChampionSummary]]] = {p: {} for p in new}
            for name in self.pointers.identifiers():  # those parts' pointers only are read
                part = part_of(name)
                if part not in new:
                    continue
                promotion = self.pointers.current(name)
                if promotion is not None:
                    found[part][name] = (promotion.run_id, _brief(promotion))
            kept.update({part: (missing[part], found[part]) for part in new})
        self._lost = kept
        return kept

    def _uploaded_identifiers(self) -> set[str]:
        """Identifiers with a stored dataset, reading each ``meta.json`` once per process."""
        keys = {k for k in self.store.list(DATASETS_ROOT) if k.endswith("/meta.json")}
        for key in keys - self._meta_identifiers.keys():
            try:
                self._meta_identifiers[key] = str(self.store.get_json(key)["identifier"])
            except (KeyError, ValueError, TypeError):  # removed while listing, or damaged
                continue
        for gone in self._meta_identifiers.keys() - keys:  # flts gc removed the dataset
            del self._meta_identifiers[gone]
        return set(self._meta_identifiers.values())

    def _build(self) -> tuple[list[dict[str, Any]], str | None]:
        now = datetime.now(UTC)
        monitored = read_figures(self.store) or {"figures": [], "updated_at": None}
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for figure in monitored["figures"]:
            key = (figure["identifier"], figure["run_id"])
            if key not in live or int(figure["step"]) < int(live[key]["step"]):
                live[key] = figure  # the shortest horizon step, as flts status shows
        newest_trigger: dict[str, dict[str, Any]] = {}
        for record in read_triggers(self.store):  # oldest first: the last one wins
            newest_trigger[str(record["identifier"])] = record
        champions = self.champions()
        rows = []
        for name in sorted(champions.keys() | self._uploaded_identifiers()):
            trigger = newest_trigger.get(name)
            row: dict[str, Any] = {
                "identifier": name,
                "run_id": None,
                "model_type": None,
                "config_hash": None,
                "promoted_at": None,
                "age_seconds": None,
                "evaluation_nrmse": None,
                "live_nrmse": None,
                "live_skill": None,
                "live_n": None,
                "live_coverage": None,
                "state": "no champion",
                "retraining": None,
            }
            if name in champions:
                run_id, champion = champions[name]
                figure = live.get((name, run_id)) or {}
                row.update(
                    run_id=run_id,
                    model_type=champion.model_type,
                    config_hash=champion.config_hash,
                    promoted_at=champion.promoted_at.isoformat(),
                    age_seconds=_age_seconds(champion.promoted_at, now),
                    evaluation_nrmse=champion.nrmse,
                    live_nrmse=figure.get("nrmse"),
                    live_skill=figure.get("skill"),
                    live_n=figure.get("n"),
                    live_coverage=figure.get("coverage") or None,
                    state=retraining_state(trigger),
                )
            if trigger is not None:
                outcome = trigger.get("outcome") or {}
                row["retraining"] = {
                    "reason": trigger.get("reason"),
                    "requested_at": trigger.get("requested_at"),
                    "outcome": outcome.get("status"),
                    "promoted": trigger.get("promoted"),
                }
            rows.append(row)
        return rows, monitored.get("updated_at")

    # ------------------------------------------------------------------ pages

    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        sort: str = "identifier",
        order: str = "asc",
        query: str = "",
        state: str = "",
    ) -> dict[str, Any]:
        """One page of the fleet: rows whose identifier or model type contains ``query``
        (case-insensitive) and, with ``state``, in that retraining state, sorted by
        ``sort`` (missing values last either way), with the overview of the whole fleet.
        Bad arguments are one :class:`DataValidationError` listing each."""
        problems = []
        if sort not in FLEET_SORTS:
            problems.append(f"sort must be one of {', '.join(FLEET_SORTS)}, got {sort!r}")
        if order not in ("asc", "desc"):
            problems.append(f"order must be 'asc' or 'desc', got {order!r}")
        if state and state not in FLEET_STATES:
            problems.append(f"state must be one of {', '.join(FLEET_STATES)}, got {state!r}")
        if not 1 <= limit <= MAX_PAGE:
            problems.append(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if offset < 0:
            problems.append(f"offset must not be negative, got {offset}")
        if problems:
            raise DataValidationError(*problems)
        rows, updated = self.rows()
        needle = query.strip().lower()
        chosen = [
            r
            for r in rows
            if (
                not needle
                or needle in r["identifier"].lower()
                or needle in str(r["model_type"] or "").lower()
            )
            and (not state or r["state"] == state)
        ]
        key = _sort_key(sort)
        present = [r for r in chosen if key(r)[0] == 0]
        absent = [r for r in chosen if key(r)[0] == 1]
        present.sort(key=key, reverse=order == "desc")
        ordered = present + absent
        return {
            "total": len(rows),
            "matched": len(ordered),
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "order": order,
            "live_updated_at": updated,
            "states": list(FLEET_STATES),
            "overview": overview(rows),
            "rows": ordered[offset : offset + limit],
        }


def overview(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole fleet in a few figures: stations per state and per champion model type, the
    spread of live and evaluation NRMSE, and the oldest champion."""
    live = sorted(r["live_nrmse"] for r in rows if r["live_nrmse"] is not None)
    evaluated = sorted(r["evaluation_nrmse"] for r in rows if r["evaluation_nrmse"] is not None)
    ages = [r["age_seconds"] for r in rows if r["age_seconds"] is not None]
    return {
        "stations": len(rows),
        "with_champion": sum(r["run_id"] is not None for r in rows),
        "states": dict(Counter(r["state"] for r in rows)),
        "model_types": dict(Counter(r["model_type"] for r in rows if r["model_type"])),
        "live_nrmse": {
            "stations": len(live),
            "median": _quantile(live, 0.5),
            "p90": _quantile(live, 0.9),
            "max": live[-1] if live else None,
        },
        "evaluation_nrmse": {
            "median": _quantile(evaluated, 0.5),
            "p90": _quantile(evaluated, 0.9),
        },
        "oldest_champion_seconds": max(ages) if ages else None,
    }
