"""The plain-number request collector exports what prometheus_client's own counter and
histogram would for the same observations (same series, bucket edges, counts and sums)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from flts.api.metrics import _BUCKETS, RequestStats


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_request_stats_match_the_library_collectors() -> None:
    labels = ("route", "method", "status", "model_type")
    reference = CollectorRegistry()
    counter = Counter("flts_http_requests", "r", labels, registry=reference)
    histogram = Histogram(
        "flts_http_request_duration_seconds", "d", labels, buckets=_BUCKETS, registry=reference
    )
    ours = CollectorRegistry()
    stats = RequestStats()
    ours.register(stats)

    rng = random.Random(7)
    keys = [("/v1/forecast", "POST", "200", "RIDGE"), ("unmatched", "GET", "404", "")]
    # bucket edges exactly (a value equal to an upper bound belongs to that bucket), values
    # past the last bound (+Inf only) and random ones
    values = [*_BUCKETS, 0.0, 30.0] + [rng.expovariate(200.0) for _ in range(500)]
    for value in values:
        key = rng.choice(keys)
        counter.labels(*key).inc()
        histogram.labels(*key).observe(value)
        stats.observe(key, value)

    expected, got = _samples(reference), _samples(ours)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(got[name] - value) < 1e-9, name
    text = generate_latest(ours).decode()
    assert 'le="0.001"' in text
    assert 'le="+Inf"' in text
