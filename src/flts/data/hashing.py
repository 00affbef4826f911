"""Config hash: one SHA-256 over all that changes the processed data (docs/architecture.md, rule 4).

Covered: the recipe (with its version), the feature spec (with its version), a digest of each
input file's *content* (not its name or path), and the sampling seed. The canonical JSON that
was hashed is returned too, to be stored next to the hash so anyone can see what it covers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flts.data.spec import FeatureSpec, Recipe

_CHUNK = 1 << 20


def content_digest(source: bytes | Path | Iterable[bytes]) -> str:
    """``sha256:<hex>`` of a file's bytes (path, bytes, or an iterable of chunks)."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    elif isinstance(source, Path):
        with source.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    else:
        for chunk in source:
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _canonical(value: Any) -> Any:
    """Normalise values whose spelling must not change the hash.

    Integral floats become ints (``5.0`` and ``5`` are the same percentile) and other floats
    go through ``repr`` so ``0.80`` and ``0.8`` agree; tuples become lists.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else float(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"cannot hash value of type {type(value).__name__}")


def canonical_json(document: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, normalised numbers: same meaning, same bytes."""
    return json.dumps(_canonical(document), sort_keys=True, separators=(",", ":"))


def config_hash(
    *,
    recipe: Recipe,
    spec: FeatureSpec,
    input_digests: Mapping[str, str],
    seed: int,
) -> tuple[str, str]:
    """Return ``(hex_hash, canonical_json)`` for this processing configuration.

    ``input_digests`` maps a role (``"train"``, ``"test"``) to a content digest; file names
    are deliberately absent so renaming a file does not change the hash.
    """
    document = {
        "recipe": recipe.model_dump(mode="json"),
        "feature_spec": spec.model_dump(mode="json"),
        "inputs": dict(input_digests),
        "seed": seed,
    }
    text = canonical_json(document)
    return hashlib.sha256(text.encode()).hexdigest(), text
