"""Config hash: same meaning gives the same hash; any content change gives another."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from flts.data import FeatureSpec, Recipe, canonical_json, config_hash, content_digest


def _hash(**overrides: object) -> str:
    arguments: dict[str, object] = {
        "recipe": Recipe(),
        "spec": FeatureSpec(),
        "input_digests": {"train": "sha256:aa", "test": "sha256:bb"},
        "seed": 0,
    }
    arguments.update(overrides)
    return config_hash(**arguments)[0]  # type: ignore[arg-type]


def test_key_order_does_not_matter() -> None:
    assert _hash(input_digests={"test": "sha256:bb", "train": "sha256:aa"}) == _hash()


def test_float_spelling_does_not_matter() -> None:
    a = Recipe.model_validate_json('{"train_fraction": 0.80, "clip_percentiles": [5, 95]}')
    b = Recipe.model_validate_json('{"train_fraction": 8e-1, "clip_percentiles": [5.0, 95.00]}')
    assert _hash(recipe=a) == _hash(recipe=b) == _hash()


def test_every_ingredient_changes_the_hash() -> None:
    base = _hash()
    assert _hash(input_digests={"train": "sha256:ab", "test": "sha256:bb"}) != base
    assert _hash(seed=1) != base
    assert _hash(recipe=Recipe(clip_percentiles=(10.0, 90.0))) != base
    assert _hash(spec=FeatureSpec(lags=12)) != base
    assert _hash(spec=FeatureSpec(version=2)) != base


def test_canonical_json_is_returned_and_parses_back() -> None:
    digest, text = config_hash(
        recipe=Recipe(), spec=FeatureSpec(), input_digests={"train": "sha256:aa"}, seed=3
    )
    document = json.loads(text)
    assert document["seed"] == 3
    assert document["inputs"] == {"train": "sha256:aa"}
    assert len(digest) == 64


def test_content_digest_sees_content_not_names(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(b"time,down\n")
    second.write_bytes(b"time,down\n")
    assert content_digest(first) == content_digest(second) == content_digest(b"time,down\n")
    second.write_bytes(b"time,down\n1")
    assert content_digest(first) != content_digest(second)
    assert content_digest([b"time,", b"down\n"]) == content_digest(first)


@given(st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False)))
def test_canonical_json_ignores_insertion_order(mapping: dict[str, float]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert canonical_json(mapping) == canonical_json(reordered)
