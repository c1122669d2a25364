"""The unit of work: a request, a job run or a command commits once, here, or rolls back.

Services never commit. When the work returns, the rules judge what it noted (`changes`) and
their flags join the same transaction, which then commits. On any error — a 4xx included — the
work rolls back to the savepoint the unit opened before it, and only what the refusal itself
must keep is written (a failed password's count and audit row, a quarantined record and its
flag, the push log), then judged and committed in the same transaction. So a refusal's records
are in before the unit lets go of the database: SQLite's write lock, and the advisory locks
that make the password limit atomic (`backend.auth.limiter`), last until they are committed.
What a step kept and a caller then caught (a quarantined part of a session) is written too.
A read (GET, HEAD, OPTIONS) runs without the savepoint, which would cost it two of its few
round trips: a refused read keeps no audit row, so it rolls back whole, and anything it kept
is written in a unit of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from backend import changes, db, synced
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.errors import HTTP_CODES, VigilError
from backend.flags.service import Raised
from backend.runtime import Runtime, runtime
from backend.scan.judge import settle

log = logging.getLogger(__name__)
# A refused call that tried to change something is audited; a refused read is not (401s and
# 404s of reads would drown the trail, and reads of PHI are audited where they succeed).
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def judge_with(rt: Runtime) -> Callable[[Session], list[Raised]]:
    """Return the judge that `changes.settle` calls on a session of this app."""
    return lambda session: settle(session, rt)


# Where a session keeps the savepoint its unit's work runs in.
WORK = "vigil.work"


def begin(session: Session) -> Session:
    """Run the unit's work in a savepoint, which a refusal rolls back within the transaction."""
    work = session.info.get(WORK)
    if work is None or not work.is_active:
        session.info[WORK] = session.begin_nested()
    return session


def finish(session: Session, rt: Runtime) -> None:
    """Write what refused steps kept, judge what the unit noted, then commit it."""
    for writer in changes.kept(session):
        writer(session)
    settle(session, rt)
    work = session.info.pop(WORK, None)
    if work is not None and work.is_active:
        # Released first: the commit's own hooks (the sync index) run outside any savepoint.
        work.commit()
    session.commit()


def _back_to_start(session: Session) -> bool:
    """Roll the work back to its savepoint; tell whether the transaction is still usable."""
    work = session.info.pop(WORK, None)
    if work is None or session.get_nested_transaction() is not work:
        return False
    try:
        work.rollback()
    except DBAPIError:
        log.warning("could not roll back to the unit's savepoint", exc_info=True)
        return False
    return True


def abandon(sessions: sessionmaker[Session], session: Session, rt: Runtime) -> None:
    """Roll the unit's work back, then write, judge and commit what its refusal keeps."""
    writers = changes.kept(session)
    changes.take(session)
    for key in synced.KEYS:
        session.info.pop(key, None)
    if _back_to_start(session):
        for writer in writers:
            writer(session)
        finish(session, rt)
        return
    # The transaction itself failed (a lost connection, say): each record in a unit of its own.
    session.rollback()
    for writer in writers:
        with unit(sessions, rt) as kept:
            writer(kept)


@contextmanager
def unit(sessions: sessionmaker[Session], rt: Runtime) -> Iterator[Session]:
    """Yield a session for one unit of work; commit it at the end, or roll it back on error."""
    session = begin(sessions())
    try:
        yield session
        finish(session, rt)
    except BaseException:
        abandon(sessions, session, rt)
        raise
    finally:
        session.close()


def run_in_unit(sessions: sessionmaker[Session], rt: Runtime,
                work: Callable[[Session], Any]) -> Any:
    """Run `work` in a unit of its own and return what it returned."""
    with unit(sessions, rt) as session:
        return work(session)


class VigilFlask(Flask):
    """Flask whose every request is one unit of work around its view."""

    def dispatch_request(self) -> Any:
        """Run the view, then commit what it did; roll back and keep the refusal's records."""
        if request.method in WRITES:
            begin(db.session())
        try:
            answer = super().dispatch_request()
        except BaseException as error:
            _abandon_request(*_refusal_of(error))
            raise
        status = getattr(answer, "status_code", 200)
        if status >= 400:
            # A stored answer replayed, say: it changes nothing now.
            _abandon_request(status, None)
            return answer
        session = g.get("db_session")
        if session is not None:
            try:
                finish(session, runtime())
            except BaseException as error:
                _abandon_request(*_refusal_of(error))
                raise
        return answer


def _refusal_of(error: BaseException) -> tuple[int | None, str]:
    """Return the status and code an error is known to answer with, as far as is known here."""
    if isinstance(error, VigilError):
        return error.status, error.code
    if isinstance(error, HTTPException):
        return error.code, HTTP_CODES.get(error.code or 500, "error")
    # A database error is answered by its handler (409, 503 or 500): name its kind.
    return None, type(error).__name__


def _abandon_request(status: int | None, code: str | None) -> None:
    session = db.session()
    if request.method in WRITES and "caller" in g:
        changes.keep(session, _refusal_audit(g.caller, status, code))
    abandon(current_app.extensions["vigil.db"].sessions, session, runtime())


def _refusal_audit(caller: Caller, status: int | None, code: str | None) -> changes.Writer:
    now = runtime().clock.now()
    route = request.url_rule.rule if request.url_rule else request.path
    detail = {"method": request.method, "route": route, "status": status, "code": code}

    def write(session: Session) -> None:
        audit.record(session, now, caller, "request.refused", "route", route, detail=detail)

    return write
