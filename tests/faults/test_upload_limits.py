"""Uploads under pressure, against a real gateway process on the SQLite bus: a burst of 50 at
once loses nothing (each 201 is stored and announced once, each refusal is a 503 with
Retry-After that stored nothing, and a refused upload goes through when retried), and two
maximum-size uploads at once stay under the memory limit the Helm chart gives the gateway."""

from __future__ import annotations

import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from flts.bus import open_bus
from flts.data.hashing import content_digest
from flts.data.synthetic import synthetic_traffic
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, Event
from flts.settings import GatewaySettings
from servers import Server, free_port, spawn
from servers.client import healthy

CHART_VALUES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "flts" / "values.yaml"
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def chart_memory_limit() -> int:
    """The gateway's memory limit in the Helm chart's default values, in bytes."""
    limit = str(
        yaml.safe_load(CHART_VALUES.read_text())["gateway"]["resources"]["limits"]["memory"]
    )
    return int(limit[:-2]) * _UNITS[limit[-2:]]


def answers(url: str) -> bool:
    try:
        return healthy(url)
    except httpx.HTTPError:
        return False


def start_gateway(home: Path, **settings: str) -> Server:
    """``flts gateway`` as its own process, with ``FLTS_GATEWAY__<NAME>`` overrides."""
    port = free_port()
    env = {
        **os.environ,
        "FLTS_HOME": str(home),
        "FLTS_GATEWAY__HOST": "127.0.0.1",
        "FLTS_GATEWAY__PORT": str(port),
        **{f"FLTS_GATEWAY__{name.upper()}": value for name, value in settings.items()},
    }
    url = f"http://127.0.0.1:{port}"
    return spawn(
        "gateway",
        [sys.executable, "-m", "flts", "gateway"],
        url=url,
        log_dir=home / "logs",
        env=env,
        ready=lambda: answers(url),
        timeout=90,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def post(url: str, train: bytes, name: str, timeout: float = 300) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/datasets",
        files={"train": (name, train, "text/csv")},
        data={"identifier": "Station1"},
        timeout=timeout,
    )


def announced(home: Path) -> list[DatasetUploadedEvent]:
    """Every ``dataset-uploaded`` event on the gateway's bus, read by a fresh group."""
    events: list[Event] = []
    bus = open_bus(f"sqlite:///{home / 'bus.db'}")
    try:
        bus.consume(DATASET_UPLOADED, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.5)
    finally:
        bus.close()
    return [e for e in events if isinstance(e, DatasetUploadedEvent)]


def test_fifty_concurrent_uploads_are_all_accounted_for(home: Path) -> None:
    """One slot and a short wait, so a burst of 50 must be partly refused."""
    files = {
        f"upload-{i}.csv": synthetic_traffic(600, seed=i).to_csv(index=False).encode()
        for i in range(50)
    }
    with start_gateway(home, max_concurrent_uploads="1", upload_wait_seconds="0.2") as gateway:
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = dict(
                zip(files, pool.map(lambda n: post(gateway.url, files[n], n), files), strict=True)
            )
        accepted = {n: r.json()["dataset_id"] for n, r in answers.items() if r.status_code == 201}
        refused = [n for n, r in answers.items() if r.status_code != 201]
        assert accepted, "not one upload of the burst went through"
        assert refused, "the burst never hit the limit: the test proves nothing"
        for name in refused:
            answer = answers[name]
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
        # Stored and announced: exactly the accepted ones, byte for byte, once each.
        listed = httpx.get(f"{gateway.url}/v1/datasets").json()["datasets"]
        assert sorted(d["dataset_id"] for d in listed) == sorted(accepted.values())
        for name, dataset_id in accepted.items():
            stored = httpx.get(f"{gateway.url}/v1/datasets/{dataset_id}/train.csv")
            assert stored.content == files[name]
        events = announced(home)
        assert sorted(e.payload.dataset_id for e in events) == sorted(accepted.values())
        assert {e.payload.digest for e in events} == {content_digest(files[n]) for n in accepted}

        # Nothing is lost for the client either: a refused upload retried goes through.
        for name in refused:
            answer = post(gateway.url, files[name], name)
            assert answer.status_code == 201, answer.text
            accepted[name] = answer.json()["dataset_id"]
    events = announced(home)
    assert len(events) == len(files)
    assert {e.payload.digest for e in events} == {content_digest(d) for d in files.values()}


def memory_status(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (the kernel's high-water mark of the resident
    set, so no peak between two samples is missed) of a process, in bytes (Linux ``/proc``)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024  # reported in kB
    return fields


@pytest.fixture(scope="module")
def max_size_csv() -> bytes:
    """A valid traffic CSV just under the default upload limit (~300k rows)."""
    limit = GatewaySettings().max_upload_bytes
    frame = synthetic_traffic(305_000, seed=5, missing_fraction=0.01)
    data = frame.to_csv(index=False).encode()
    while len(data) > limit:
        frame = frame.iloc[: int(len(frame) * 0.99)]
        data = frame.to_csv(index=False).encode()
    assert len(data) > 0.95 * limit
    return data


def test_two_maximum_size_uploads_fit_in_the_gateway_memory_limit(
    home: Path, max_size_csv: bytes
) -> None:
    """Default settings (two slots): both uploads are parsed at the same time."""
    limit = chart_memory_limit()
    with start_gateway(home) as gateway:
        assert gateway.process is not None
        idle = memory_status(gateway.process.pid)["VmRSS"]
        with ThreadPoolExecutor(2) as pool:
            started = time.monotonic()
            answers = list(
                pool.map(lambda n: post(gateway.url, max_size_csv, n), ["a.csv", "b.csv"])
            )
            seconds = time.monotonic() - started
        peak = memory_status(gateway.process.pid)["VmHWM"]
        for answer in answers:
            assert answer.status_code == 201, answer.text
            assert answer.json()["train"]["digest"] == content_digest(max_size_csv)
        stored = httpx.get(f"{gateway.url}/v1/datasets/{answers[0].json()['dataset_id']}/train.csv")
        assert stored.content == max_size_csv
    mib = 2**20
    print(
        f"\ntwo {len(max_size_csv) / mib:.0f} MiB uploads in {seconds:.1f} s: gateway RSS idle "
        f"{idle / mib:.0f} MiB, peak {peak / mib:.0f} MiB (limit {limit / mib:.0f} MiB)"
    )
    assert peak < limit
