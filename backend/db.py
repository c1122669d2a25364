"""Give each request one SQLAlchemy session; hold the engine and the shared column types."""

from __future__ import annotations

import select
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Flask, current_app, g
from sqlalchemy import (
    DateTime,
    Engine,
    MetaData,
    Text,
    Uuid,
    cast,
    create_engine,
    event,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from backend.clock import Clock

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
CLOCK = "vigil.clock"
# Marks a pooled connection that holds session-level advisory locks, to release on its return.
ADVISORY = "vigil.advisory_locks"


class UTCDateTime(TypeDecorator[datetime]):
    """Store aware UTC datetimes; refuse naive ones; return aware ones on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Vigil stores aware UTC datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        # SQLite returns naive values; they were written as UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def id_text(session: Session, column: Any) -> Any:
    """Return SQL reading a UUID column as its text: PostgreSQL casts it, SQLite's type reads it."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(column, Text)
    return type_coerce(column, Uuid(as_uuid=False))


def ids_text(session: Session, *columns: Any) -> list[Any]:
    """Return SQL reading UUID columns as their text, each under its own name."""
    # A loader that turns tens of thousands of rows into facts spends more on making UUIDs
    # and printing them again than on its query.
    return [id_text(session, column).label(column.key) for column in columns]


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for Alembic."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid()}


# How long a SQLite transaction waits for the write lock before answering "database is locked":
# long enough to queue behind every request of a busy clinic (a 5,000-record push holds the lock
# for a few seconds), short enough that a phone gets an answer before its own HTTP timeout.
SQLITE_BUSY_TIMEOUT_MS = 15_000


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself so SAVEPOINTs and rollbacks behave (pysqlite quirk).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN, where SQLite waits the busy timeout for it.
        # A deferred transaction that reads, then writes after another writer committed, gets
        # SQLITE_BUSY at once instead: waiting cannot refresh its snapshot, so the busy handler
        # is skipped and two phones pulling together answer 500 "database is locked". Nearly
        # every request writes (audit rows, a phone's clock offset, login counters), so taking
        # the lock up front serialises little that was not already serial; WAL still lets
        # connections outside a transaction read. Savepoints nest inside as before.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _release_advisory_locks(dbapi_connection: Any, record: Any) -> None:
    if not record.info.pop(ADVISORY, False) or dbapi_connection is None:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_advisory_unlock_all()")
        cursor.close()
        # The statement opened a transaction: end it, so that the pool keeps an idle connection.
        dbapi_connection.rollback()
    except Exception:
        # A connection that cannot be cleaned is closed: PostgreSQL frees its locks with it.
        record.invalidate()


def _in_utc(dbapi_connection: Any, _record: Any) -> None:
    # psycopg returns timestamptz values in the session's time zone. Named "UTC", that zone is
    # datetime.UTC, which UTCDateTime converts in 0.1 µs; under Debian's default "Etc/UTC", or a
    # server's local zone, it is a ZoneInfo, and converting each value costs about 7 µs: seconds
    # over the half-million timestamps of a nightly scan.
    # Outside any transaction, so that no rollback undoes it: a session setting, not a unit of
    # work.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
    finally:
        dbapi_connection.autocommit = autocommit


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # pool_pre_ping's SELECT 1 costs a round trip on every checkout. Instead: a server that closed
    # an idle connection (a restart, pg_terminate_backend, an idle timeout) has sent its notice
    # or end of file, so the socket is readable; a live idle connection has nothing to read.
    # SQLAlchemy then discards the connection and checks out another.
    try:
        readable, _, _ = select.select([dbapi_connection.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError) as closed:
        raise DisconnectionError("the pooled connection is closed") from closed
    if readable:
        raise DisconnectionError("the server closed the pooled connection")


def build_engine(url: str) -> Engine:
    """Create the engine for `url`; SQLite gets foreign keys, WAL and queued writers."""
    # hide_parameters: a statement's values (PHI, search terms) stay out of its errors' text.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False},
                               hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    local_check = make_url(url).get_driver_name() == "psycopg"
    engine = create_engine(url, pool_pre_ping=not local_check, pool_size=10, max_overflow=20,
                           hide_parameters=True)
    if local_check:
        event.listen(engine, "connect", _in_utc)
        event.listen(engine, "checkout", _refuse_closed)
    event.listen(engine, "checkin", _release_advisory_locks)
    return engine


class Database:
    """Own the engine and the factory that makes one session per unit of work.

    `on_session` are called with each session factory made, to attach their listeners to it
    (and to nothing else in the process); every session carries the app's clock and `info`.
    """

    def __init__(self, url: str, clock: Clock,
                 on_session: Iterable[Callable[[sessionmaker[Session]], None]] = (),
                 info: dict[str, Any] | None = None) -> None:
        self.url = url
        self.info = {CLOCK: clock, **(info or {})}
        self.engine = build_engine(url)
        self._on_session = tuple(on_session)
        self.sessions = self._factory(bind=self.engine)

    def _factory(self, **options: Any) -> sessionmaker[Session]:
        factory = sessionmaker(expire_on_commit=False, info=dict(self.info), **options)
        for attach in self._on_session:
            attach(factory)
        return factory

    def use_connection(self, connection: Connection) -> None:
        """Bind sessions to `connection`, committing into savepoints (for tests)."""
        self.sessions = self._factory(bind=connection, join_transaction_mode="create_savepoint")

    def init_app(self, app: Flask) -> None:
        """Register the database on `app` and close each request's session after it."""
        app.extensions["vigil.db"] = self
        app.teardown_appcontext(self._close_session)

    @staticmethod
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def clock_of(session: Session) -> Clock:
    """Return the clock of the app that made `session`."""
    return session.info[CLOCK]


def session() -> Session:
    """Return this request's session, opening it on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["vigil.db"].sessions()
    return g.db_session


def hold_lock(session: Session, space: int, key: int) -> None:
    """Hold an exclusive lock on (space, key) until the session's transaction has ended.

    On PostgreSQL it is a session-level advisory lock, which a rolled-back savepoint does not
    release (a transaction-level one it would): it lasts until the unit's connection goes back
    to the pool, after the commit or rollback. SQLite needs none: a unit holds the database's
    write lock from BEGIN IMMEDIATE to its end.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    connection.info[ADVISORY] = True
    connection.execute(text("SELECT pg_advisory_lock(:space, :key)"),
                       {"space": space, "key": key})


def upsert(session: Session, table: Any) -> Any:
    """Return an INSERT for `table` that accepts `on_conflict_do_*` on either backend."""
    dialect = session.get_bind().dialect.name
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect](table)


def new_id() -> uuid.UUID:
    """Return a fresh random UUID."""
    return uuid.uuid4()
