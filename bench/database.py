"""Give a benchmark a migrated app on a fresh database.

The database is a temporary SQLite file, or the PostgreSQL database in BENCH_DATABASE_URL,
whose public schema is dropped and recreated first.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from backend import create_app, schema


def fresh_postgres(url: str) -> str:
    """Create the benchmark database if missing and empty its public schema; return the URL."""
    target = make_url(url)
    if target.get_backend_name() != "postgresql" or "bench" not in (target.database or ""):
        # The schema is dropped: refuse anything that is not plainly a benchmark database.
        raise SystemExit(f"BENCH_DATABASE_URL must name a PostgreSQL *bench* database: {url}")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                           {"name": target.database}):
            quoted = conn.dialect.identifier_preparer.quote(target.database)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
    admin.dispose()
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@contextmanager
def migrated_app(overrides: dict[str, Any] | None = None, *, instance: Path | None = None,
                 reuse: bool = False) -> Iterator[Flask]:
    """Yield a development app, with `overrides`, migrated on a fresh benchmark database.

    With `instance`, the app's generated keys are kept there rather than in a temporary folder;
    with `reuse` too, the PostgreSQL database is kept as an earlier run with them left it.
    """
    # Before create_app's own basicConfig, so migration chatter stays out of the figures.
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        postgres = os.environ.get("BENCH_DATABASE_URL")
        if postgres:
            url = postgres if reuse and instance else fresh_postgres(postgres)
        else:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": instance or Path(tmp) / "instance",
                          "VIGIL_ENV": "development", **(overrides or {})})
        engine = app.extensions["vigil.db"].engine
        try:
            schema.upgrade(engine)
            yield app
        finally:
            engine.dispose()


def describe(engine: Engine) -> str:
    """Name the database and its server version."""
    with engine.connect() as conn:
        version = ".".join(str(part) for part in conn.dialect.server_version_info or ())
    return f"{engine.dialect.name}+{engine.dialect.driver} {version}"
