"""The storage contract on a real S3 server (SeaweedFS, signatures enforced), with the store
rooted both at a bucket prefix (``s3://bucket/prefix``) and at a bucket (``s3://bucket``);
plus what only S3 owes: one PUT per pointer write, configuration from the standard AWS
variables or FLTS settings (and which wins), and rejected credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import fsspec
import pytest
from pydantic import ValidationError

import flts.storage
from flts.exceptions import DataValidationError
from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import read_index
from flts.settings import Settings
from flts.storage import ObjectStore
from servers.s3 import SeaweedFS

from .conftest import CONTRACT_BUCKET
from .storage_suite import POINTER, StorageContract, StoreFactory


@pytest.fixture
def prefix_url() -> str:
    return f"s3://{CONTRACT_BUCKET}/test-{uuid.uuid4().hex}"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AWS or FLTS S3 variables from the outer environment, and no cached s3fs instance
    built under another environment."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "FLTS_S3_ENDPOINT_URL",
        "FLTS_S3_ACCESS_KEY_ID",
        "FLTS_S3_SECRET_ACCESS_KEY",
        "FLTS_S3_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    return monkeypatch


class TestS3Store(StorageContract):
    @pytest.fixture(params=["bucket-prefix", "bucket-root"])
    def store_factory(
        self, request: pytest.FixtureRequest, seaweedfs: SeaweedFS, prefix_url: str
    ) -> StoreFactory:
        url = (
            prefix_url if request.param == "bucket-prefix" else f"s3://{seaweedfs.create_bucket()}"
        )
        options = seaweedfs.credentials.storage_options()
        return lambda: ObjectStore(url, **options)


def test_pointer_write_is_one_put_object_request(seaweedfs: SeaweedFS, prefix_url: str) -> None:
    store = ObjectStore(prefix_url, **seaweedfs.credentials.storage_options())
    calls: list[str] = []
    real = store.fs._call_s3

    async def spy(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return await real(method, *args, **kwargs)

    store.fs._call_s3 = spy
    try:
        store.put_json(POINTER, {"run_id": "r" * 32, "padding": "x" * 100_000}, atomic=True)
    finally:
        del store.fs._call_s3  # the instance is cached by fsspec: restore the class method
    assert calls == ["put_object"]


def test_pointer_too_large_for_one_put_is_refused(
    seaweedfs: SeaweedFS, prefix_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flts.storage, "SINGLE_PUT_LIMIT", 16)
    store = ObjectStore(prefix_url, **seaweedfs.credentials.storage_options())
    with pytest.raises(DataValidationError, match="too large for one atomic PUT"):
        store.put_atomic(POINTER, b"x" * 17)
    assert not store.exists(POINTER)


def test_readers_tolerate_a_missing_bucket(seaweedfs: SeaweedFS) -> None:
    store = ObjectStore(
        f"s3://flts-absent-{uuid.uuid4().hex[:8]}/p", **seaweedfs.credentials.storage_options()
    )
    with pytest.raises(KeyError):
        store.get(POINTER)
    assert not store.exists(POINTER)
    assert list(store.list("model-promotion")) == []


def test_wrong_secret_is_rejected(seaweedfs: SeaweedFS, prefix_url: str) -> None:
    options = {**seaweedfs.credentials.storage_options(), "secret": "not-the-secret"}
    store = ObjectStore(prefix_url, **options, skip_instance_cache=True)
    with pytest.raises(PermissionError):
        store.put("x", b"1")


def test_standard_aws_variables_configure_the_store(
    seaweedfs: SeaweedFS, prefix_url: str, aws_env: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.credentials.env().items():
        aws_env.setenv(name, value)
    settings = Settings(storage_url=prefix_url)
    assert settings.storage.options() == {}  # nothing from FLTS: botocore reads AWS_*
    store = ObjectStore(settings.storage.url, **settings.storage.options())
    store.put("via/env", b"1")
    assert store.get("via/env") == b"1"


def test_flts_settings_take_precedence_over_aws_variables(
    seaweedfs: SeaweedFS, prefix_url: str, aws_env: pytest.MonkeyPatch
) -> None:
    credentials = seaweedfs.credentials
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    aws_env.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    aws_env.setenv("FLTS_S3_ENDPOINT_URL", credentials.endpoint_url)
    aws_env.setenv("FLTS_S3_ACCESS_KEY_ID", credentials.access_key_id)
    aws_env.setenv("FLTS_S3_SECRET_ACCESS_KEY", credentials.secret_access_key)
    aws_env.setenv("FLTS_S3_REGION", "eu-west-1")
    settings = Settings(storage_url=prefix_url)
    options = settings.storage.options()
    assert options["client_kwargs"] == {"region_name": "eu-west-1"}
    assert "not-the-secret" not in str(settings.redacted())
    assert credentials.secret_access_key not in str(settings.redacted())
    store = ObjectStore(settings.storage.url, **options)
    store.put("via/settings", b"2")
    assert store.get("via/settings") == b"2"


def test_s3_settings_only_apply_to_s3_urls(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("FLTS_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    assert Settings(storage_url="memory://x").storage.options() == {}
    assert Settings(storage_url="s3://b/p").storage.options() == {
        "endpoint_url": "http://127.0.0.1:9"
    }


def test_half_a_key_pair_is_a_startup_error(aws_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="FLTS_S3_ACCESS_KEY_ID and FLTS_S3_SECRET"):
        Settings(storage_url="s3://b", s3_access_key_id="only-the-key")


def test_an_unchanged_conditional_read_is_one_request_without_a_body(
    seaweedfs: SeaweedFS, prefix_url: str
) -> None:
    """What a replica's promotion discovery costs per poll: one ``GetObject`` with
    ``If-None-Match`` answered ``304``, however large the index."""
    store = ObjectStore(prefix_url, **seaweedfs.credentials.storage_options())
    key = "model-promotion-index.json"
    store.put_if_absent(key, b"x" * 200_000)
    tag = store.get_versioned(key).tag
    calls: list[tuple[str, dict[str, Any]]] = []
    real = store.fs._call_s3

    async def spy(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, kwargs))
        return await real(method, *args, **kwargs)

    store.fs._call_s3 = spy
    try:
        assert store.get_if_changed(key, tag) is None
        assert [(m, k.get("IfNoneMatch")) for m, k in calls] == [("get_object", tag)]
        assert store.put_if_match(key, b"y" * 10, tag)
        changed = store.get_if_changed(key, tag)
    finally:
        del store.fs._call_s3  # the instance is cached by fsspec: restore the class method
    assert changed is not None
    assert changed.data == b"y" * 10


def test_promotions_keep_the_index_a_replica_polls_on_s3(
    seaweedfs: SeaweedFS, prefix_url: str
) -> None:
    """The pointer writer's index on a real S3 server: ETag compare-and-swap on write, and a
    replica's conditional read that answers "unchanged" until the next promotion."""
    promotions = PromotionStore(ObjectStore(prefix_url, **seaweedfs.credentials.storage_options()))
    for identifier, run_id in (("north", "run-1"), ("south", "run-2")):
        promotions.record(
            Promotion(
                run_id=run_id,
                model_type="RIDGE",
                config_hash="abcdef0123456789",
                identifier=identifier,
                promoted_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    first = read_index(promotions.store)
    assert first is not None
    assert first.entries == {name: promotions.etag(name) for name in ("north", "south")}
    assert read_index(promotions.store, first.tag) is None
    promotions.record(
        Promotion(
            run_id="run-3",
            model_type="RIDGE",
            config_hash="abcdef0123456789",
            identifier="north",
            promoted_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
    )
    second = read_index(promotions.store, first.tag)
    assert second is not None
    assert second.entries["north"] == promotions.etag("north") != first.entries["north"]
    assert second.entries["south"] == first.entries["south"]
