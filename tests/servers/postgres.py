"""A fresh PostgreSQL database per run, on a server that is already running.

PostgreSQL is not started here: CI machines and developers run one (this machine kind has it on
127.0.0.1:5432 with trust auth). What a test or ``make e2e`` needs is a database of its own, so
runs never see each other's MLflow tables; :func:`create_database` makes one with a unique name
and its ``Server.stop()`` drops it (``WITH (FORCE)``, so connections a killed MLflow server
left behind do not keep it alive).

Connection parameters default to the libpq variables (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``), then ``127.0.0.1:5432`` as ``postgres``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from urllib.parse import quote

from servers import Server


@dataclass(frozen=True)
class PostgresServer:
    """Where the PostgreSQL server is and whom to connect as."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str | None = None

    @classmethod
    def from_env(cls) -> PostgresServer:
        """Defaults overridden by the standard libpq environment variables."""
        return cls(
            host=os.environ.get("PGHOST", cls.host),
            port=int(os.environ.get("PGPORT", cls.port)),
            user=os.environ.get("PGUSER", cls.user),
            password=os.environ.get("PGPASSWORD") or None,
        )

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq connection string for psycopg."""
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}"]
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join([*parts, f"dbname={database}"])

    def sqlalchemy_url(self, database: str) -> str:
        """``postgresql+psycopg://user[:password]@host:port/database``: the form MLflow's
        ``--backend-store-uri`` takes (the driver must be named, psycopg 3 here)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{database}"


def create_database(prefix: str = "flts", *, server: PostgresServer | None = None) -> Server:
    """Create a database named ``<prefix>_<hex>`` and return a :class:`Server` whose ``url`` is
    its SQLAlchemy URL and whose ``stop()`` drops it."""
    import psycopg
    from psycopg import sql

    server = server or PostgresServer.from_env()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}".lower()
    with psycopg.connect(server.conninfo(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(server.conninfo(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return Server(name=f"postgres:{name}", url=server.sqlalchemy_url(name), cleanups=[drop])


def database_exists(name: str, *, server: PostgresServer | None = None) -> bool:
    """True when the server has a database called ``name``."""
    import psycopg

    server = server or PostgresServer.from_env()
    with psycopg.connect(server.conninfo(), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None
