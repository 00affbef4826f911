"""Which identifiers one inference replica serves (``serving.shard``).

A fleet of thousands of stations is spread over replicas by identifier: each replica (or
Kubernetes Deployment per shard) is told the identifiers it owns, loads and watches only
those, and answers a request for any other with 421 Misdirected Request naming the shard it
is (:class:`~flts.exceptions.MisdirectedError`), so a router that sent it to the wrong place
learns so at once instead of reading a 404 as "no such model".

Two forms:

* ``"k/n"``: shard ``k`` (0-based) of ``n`` by hash range: an identifier belongs to
  ``int(sha1(identifier)) mod n``. sha1 is stable across processes, hosts and Python versions
  (Python's own ``hash`` of a string is salted per process), so every replica and any
  router agree on the owner without talking to each other.
* ``"a,b,c"``: an explicit list (identifiers never contain a comma or a slash).

Unset: the replica owns every identifier (one replica serves the fleet).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flts.exceptions import ConfigurationError


def shard_of(identifier: str, count: int) -> int:
    """The hash-range shard (0-based, of ``count``) that owns ``identifier``."""
    digest = hashlib.sha1(identifier.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """The identifiers one replica owns: a hash range (``index``/``count``), a fixed set
    (``members``), or all of them (neither)."""

    index: int = 0
    count: int = 1
    members: frozenset[str] | None = None

    @classmethod
    def parse(cls, value: str | None, setting: str = "serving.shard") -> Shard:
        """``"k/n"``, ``"a,b,c"`` or ``None`` (everything); a malformed value is a
        :class:`~flts.exceptions.ConfigurationError` naming what is wrong (and ``setting``,
        the setting it came from: the monitor's ``live.monitor_shard`` has the same forms)."""
        if value is None or not value.strip():
            return cls()
        text = value.strip()
        if "/" in text:
            index_text, _, count_text = text.partition("/")
            try:
                index, count = int(index_text), int(count_text)
            except ValueError:
                raise ConfigurationError(
                    f"{setting} {value!r}: a hash range is 'k/n' with whole numbers"
                ) from None
            if count < 1 or not 0 <= index < count:
                raise ConfigurationError(f"{setting} {value!r}: needs n >= 1 and 0 <= k < n")
            return cls(index=index, count=count)
        members = frozenset(part.strip() for part in text.split(",") if part.strip())
        if not members:
            raise ConfigurationError(f"{setting} {value!r}: names no identifier")
        return cls(members=members)

    @property
    def everything(self) -> bool:
        return self.members is None and self.count == 1

    def owns(self, identifier: str) -> bool:
        if self.members is not None:
            return identifier in self.members
        return self.count == 1 or shard_of(identifier, self.count) == self.index

    def describe(self) -> str:
        """How a refusal names this shard."""
        if self.members is not None:
            return f"the shard of {len(self.members)} listed identifier(s)"
        return f"shard {self.index} of {self.count}"
