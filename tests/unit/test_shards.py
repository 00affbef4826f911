"""Shard ownership (``serving.shard``): hash ranges that every process agrees on, explicit
lists, and malformed settings refused at start-up."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from flts.exceptions import ConfigurationError
from flts.settings import ServingSettings
from flts.shards import Shard, shard_of

NAMES = [f"cell-{number:05d}" for number in range(2_000)]


def test_every_identifier_has_exactly_one_owner_and_shards_are_balanced() -> None:
    shards = [Shard.parse(f"{index}/4") for index in range(4)]
    owners = Counter(sum(shard.owns(name) for shard in shards) for name in NAMES)
    assert owners == {1: len(NAMES)}
    sizes = Counter(shard_of(name, 4) for name in NAMES)
    assert sorted(sizes) == [0, 1, 2, 3]
    assert all(400 <= size <= 600 for size in sizes.values()), sizes


def test_the_hash_is_the_same_in_another_process() -> None:
    # Python's own str hash is salted per process; a router and the replicas must agree.
    code = (
        "from flts.shards import shard_of; print([shard_of(f'cell-{n:05d}', 7) for n in range(50)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert other.strip() == str([shard_of(name, 7) for name in NAMES[:50]])


def test_a_list_owns_exactly_its_members() -> None:
    shard = Shard.parse(" north, south ,")
    assert shard.owns("north")
    assert shard.owns("south")
    assert not shard.owns("east")
    assert not shard.everything


def test_unset_owns_everything() -> None:
    for value in (None, "", "0/1"):
        shard = Shard.parse(value)
        assert all(shard.owns(name) for name in NAMES[:20])


@pytest.mark.parametrize("value", ["2/2", "-1/3", "1/0", "a/3", "1/2/3", " , "])
def test_malformed_shards_are_refused_with_the_reason(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"serving\.shard"):
        Shard.parse(value)
    with pytest.raises(ValidationError, match=r"serving\.shard"):
        ServingSettings(shard=value)
