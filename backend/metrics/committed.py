"""Count what a unit of work did only once its transaction has committed.

A push or a flag is counted where it happens, but the count waits in the session until the
commit: a refused request rolls its work back to a savepoint and still commits what the refusal
keeps, so counting at the call, or at any commit, would count work that never happened. A
savepoint rolled back drops what was counted inside it; the outermost commit applies the rest.
"""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

PENDING = "vigil.metrics.pending"


def count(session: Session, counter: Counter, amount: float = 1, **labels: str) -> None:
    """Add `amount` to `counter` at `labels` when the session's transaction commits."""
    if amount:
        within = session.get_nested_transaction() or session.get_transaction()
        session.info.setdefault(PENDING, []).append((within, counter, amount, labels))


def install(sessions: sessionmaker[Session]) -> None:
    """Apply counts at each commit of `sessions`' sessions; drop those rolled back."""
    event.listen(sessions, "after_commit", _apply)
    event.listen(sessions, "after_soft_rollback", _drop)
    # A session closed without committing keeps nothing for a later transaction.
    event.listen(sessions, "after_transaction_end", _forget)


def _apply(session: Session) -> None:
    if session.in_nested_transaction():
        # Released savepoints fire this event too; their counts wait for the outermost commit.
        return
    for _within, counter, amount, labels in session.info.pop(PENDING, ()):
        (counter.labels(**labels) if labels else counter).inc(amount)


def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(PENDING, None)


def _drop(session: Session, previous_transaction: SessionTransaction) -> None:
    if PENDING in session.info:
        session.info[PENDING] = [pending for pending in session.info[PENDING]
                                 if not _inside(pending[0], previous_transaction)]


def _inside(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    """Tell whether `transaction` is `ended` or nested in it (None: the outermost one)."""
    if transaction is None:
        return ended.parent is None
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False
