"""The complete table metadata, and Alembic runs against an engine: the only way to make schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from backend.accounts import models as _accounts  # noqa: F401  (registers tables)
from backend.administration import models as _administration  # noqa: F401
from backend.audit import models as _audit  # noqa: F401
from backend.auth import models as _auth  # noqa: F401
from backend.config import PROJECT_ROOT
from backend.console import models as _console  # noqa: F401
from backend.custody import models as _custody  # noqa: F401
from backend.db import Base
from backend.devices import models as _devices  # noqa: F401
from backend.flags import models as _flags  # noqa: F401
from backend.jobs import models as _jobs  # noqa: F401
from backend.mfa import models as _mfa  # noqa: F401
from backend.patients import models as _patients  # noqa: F401
from backend.phi.cipher import PhiCipher
from backend.plans import models as _plans  # noqa: F401
from backend.policy import models as _policy  # noqa: F401
from backend.products import models as _products  # noqa: F401
from backend.safeguards_api import models as _safeguards_api  # noqa: F401
from backend.sync import models as _sync  # noqa: F401
from backend.visits import models as _visits  # noqa: F401

metadata = Base.metadata
MIGRATIONS = PROJECT_ROOT / "migrations"
# Where a revision that encrypts or decrypts stored rows finds the PHI cipher.
PHI_CIPHER = "vigil.phi"


def _alembic(engine: Engine, connection=None, phi: PhiCipher | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["connection"] = connection
    cfg.attributes[PHI_CIPHER] = phi
    return cfg


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """Yield a connection in one transaction for Alembic.

    SQLite alters a table by copying it and dropping the old one, which foreign keys refuse
    while other tables' rows point at it; and it enforces them per connection, outside any
    transaction. So they are off while a migration runs there, and checked before it commits.
    """
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("the migration left rows whose foreign keys point at "
                                       "nothing; it was rolled back")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head", phi: PhiCipher | None = None) -> None:
    """Migrate the database up to `revision`; `phi` encrypts rows a revision must encrypt."""
    with _migrating(engine) as connection:
        command.upgrade(_alembic(engine, connection, phi), revision)


def downgrade(engine: Engine, revision: str, phi: PhiCipher | None = None) -> None:
    """Migrate the database down to `revision` (`base` removes everything)."""
    with _migrating(engine) as connection:
        command.downgrade(_alembic(engine, connection, phi), revision)


def heads() -> frozenset[str]:
    """Return the head revision(s) of the migration scripts: where `upgrade` leads."""
    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())


def current(engine: Engine) -> str | None:
    """Return the revision the database is at, or None when it is empty."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
