"""Number every change to a synced row from one per-organisation sequence, in commit order.

Changes are collected as the ORM flushes (and from `note` for rows written by Core statements),
then numbered just before the transaction commits: the organisation's counter row is updated,
and its row lock is held until the commit. A second writer waits for that lock, so numbers are
taken in commit order, and a puller that reads the counter never sees a number whose rows are
not yet committed. The lock is held only for the last statements of a transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from backend.db import clock_of, upsert
from backend.patients.models import Patient, PatientNurse
from backend.plans.models import PlanPhase
from backend.sync.models import SyncCounter, SyncRevocation, SyncRow
from backend.sync.tables import BY_MODEL, BY_NAME, Audience
from backend.synced import (
    CHANGED,
    DELETED,
    DROPPED,
    GAINED,
    KEYS,
    KNOWN,
    LOST,
    PUSHED,
    forget_known,
)


def _collect(session: Session, _context: Any) -> None:
    changed = session.info.setdefault(CHANGED, defaultdict(set))
    for obj in session.new:
        if (table := BY_MODEL.get(type(obj))) is not None:
            changed[table.name].add(obj.id)
        elif isinstance(obj, PlanPhase):
            changed["plan_versions"].add(obj.version_id)
        elif isinstance(obj, PatientNurse) and obj.ended_at is None:
            session.info.setdefault(GAINED, set()).add(obj.patient_id)
    for obj in session.dirty:
        if not session.is_modified(obj, include_collections=False):
            continue
        if (table := BY_MODEL.get(type(obj))) is not None:
            changed[table.name].add(obj.id)
        elif isinstance(obj, PatientNurse) and obj.ended_at is not None:
            session.info.setdefault(LOST, set()).add(
                (obj.patient_id, obj.nurse_id))
    for obj in session.deleted:
        if (table := BY_MODEL.get(type(obj))) is not None:
            session.info.setdefault(DELETED, defaultdict(set))[table.name].add(obj.id)


def _forget(session: Session, transaction: Any) -> None:
    # A rolled-back savepoint's rows are simply not found when numbered; only the end of the
    # whole transaction clears what waits.
    if transaction.parent is None:
        for key in KEYS:
            session.info.pop(key, None)


def take(session: Session, organisation_id: uuid.UUID, count: int) -> int:
    """Take `count` numbers from the organisation's sequence; return the last one."""
    return session.execute(_upserts(session).counter, {
        "organisation": organisation_id, "count": count}).scalar_one()


def _stamp(session: Session) -> None:
    # Releasing a savepoint fires this too: number only at the real commit, so the counter's
    # lock is taken once, at the end.
    if session.in_nested_transaction():
        return
    # Commit would flush next; flush first so this transaction's last changes are collected.
    session.flush()
    if not any(session.info.get(key) for key in KEYS):
        return
    changed = session.info.pop(CHANGED, {})
    deleted = session.info.pop(DELETED, {})
    gained = session.info.pop(GAINED, set())
    lost = session.info.pop(LOST, set())
    dropped = session.info.pop(DROPPED, set())
    pushed = session.info.pop(PUSHED, {})
    now = clock_of(session).now()
    audiences = _audiences(session, changed, session.info.pop(KNOWN, {}))
    touched = _touched(session, gained)
    gone = [(name, record_id) for name, ids in deleted.items() for record_id in ids]
    revoked = _revoked(session, lost)
    by_org: dict[uuid.UUID, list] = defaultdict(list)
    for name, who in audiences:
        by_org[who.organisation_id].extend(_row_items(name, who,
                                                      pushed.get((name, who.record_id))))
    for organisation_id, name, record_id in touched:
        by_org[organisation_id].append(("touch", name, record_id))
    for organisation_id, name, record_id in _organisations(session, gone):
        by_org[organisation_id].append(("gone", name, record_id))
    for organisation_id, patient_id, nurse_id in revoked:
        by_org[organisation_id].append(("revoke", patient_id, nurse_id))
    for name, record_id, nurse_id, organisation_id in sorted(dropped, key=str):
        by_org[organisation_id].append(("drop", name, record_id, nurse_id))
    # Organisations in a fixed order, so two transactions never wait on each other's counter.
    for organisation_id in sorted(by_org, key=str):
        items = by_org[organisation_id]
        if _in_one_statement(session, items):
            _number_rows(session, organisation_id, items, now)
            continue
        last = take(session, organisation_id, len(items))
        _write(session, organisation_id, items, last - len(items) + 1, now)


def _audiences(session: Session, changed: dict[str, set[uuid.UUID]],
               known: dict[tuple[str, uuid.UUID], tuple]) -> list[tuple[str, Audience]]:
    """Return each changed row's audience: as its writer told it, else read from its table."""
    out = []
    for name, ids in changed.items():
        unknown = []
        for record_id in ids:
            if (seen_by := known.get((name, record_id))) is not None:
                out.append((name, Audience(record_id, *seen_by)))
            else:
                unknown.append(record_id)
        if unknown:
            out.extend((name, who) for who in BY_NAME[name].audience(session, unknown))
    return out


def _row_items(name: str, who: Audience, pushed: tuple | None) -> list[tuple]:
    """Return the items that number one changed row: itself, and the server's amendment."""
    device_id, amended = pushed or (None, False)
    items: list[tuple] = [("row", name, who, device_id)]
    if amended:
        # The server stored the pushed record otherwise than the phone holds it: a second,
        # later number makes that phone's next pull send the server's version as updated.
        items.append(("touch", name, who.record_id))
    return items


def _touched(session: Session, patients: set[uuid.UUID]) -> list[tuple]:
    """Return every synced row of newly assigned patients, to be sent again as changed."""
    if not patients:
        return []
    return list(session.execute(select(SyncRow.organisation_id, SyncRow.table_name,
                                       SyncRow.record_id)
                                .where(SyncRow.patient_id.in_(patients),
                                       SyncRow.deleted.is_(False))))


def _revoked(session: Session, lost: set[tuple]) -> list[tuple]:
    out = []
    for patient_id, nurse_id in sorted(lost, key=str):
        patient = session.get(Patient, patient_id)
        out.append((patient.organisation_id, patient_id, nurse_id))
    return out


def _organisations(session: Session, gone: list[tuple[str, uuid.UUID]]) -> list[tuple]:
    out = []
    for name, record_id in gone:
        row = session.get(SyncRow, (name, record_id))
        if row is not None:
            out.append((row.organisation_id, name, record_id))
    return out


# PostgreSQL: the counter's upsert and the changed rows' upsert (`_upserts`) in one statement,
# the rows numbered in the order given. One round trip fewer under the counter's lock, and
# under the chain head's lock for a custody append, which holds it until this commit.
_NUMBER_ROWS = text("""WITH counter AS (
    INSERT INTO sync_counter AS c (organisation_id, value, horizon)
    VALUES (:organisation, :count, 0)
    ON CONFLICT (organisation_id) DO UPDATE SET value = c.value + :count
    RETURNING c.value)
INSERT INTO sync_row (table_name, record_id, organisation_id, seq, created_seq, deleted,
                      patient_id, nurse_id, peer_nurse_id, changed_at, origin_device_id)
SELECT i.table_name, i.record_id, :organisation, counter.value - :count + i.n,
       counter.value - :count + i.n, false, i.patient_id, i.nurse_id, i.peer_nurse_id, :now,
       i.origin_device_id
FROM counter, unnest(CAST(:names AS varchar[]), CAST(:ids AS uuid[]),
                     CAST(:patients AS uuid[]), CAST(:nurses AS uuid[]),
                     CAST(:peers AS uuid[]), CAST(:origins AS uuid[]))
    WITH ORDINALITY AS i(table_name, record_id, patient_id, nurse_id, peer_nurse_id,
                         origin_device_id, n)
ON CONFLICT (table_name, record_id) DO UPDATE SET
    seq = excluded.seq, patient_id = excluded.patient_id, nurse_id = excluded.nurse_id,
    deleted = false, peer_nurse_id = excluded.peer_nurse_id, changed_at = excluded.changed_at
""")


def _in_one_statement(session: Session, items: list[tuple]) -> bool:
    """Tell whether `_number_rows` can number these items: changed rows only, on PostgreSQL."""
    return (session.get_bind().dialect.name == "postgresql"
            and all(item[0] == "row" for item in items))


def _number_rows(session: Session, organisation_id: uuid.UUID, items: list[tuple],
                 now: datetime) -> None:
    """Take the items' numbers and upsert their rows, as `take` then `_write` do."""
    audiences = [who for _kind, _name, who, _origin in items]
    session.execute(_NUMBER_ROWS, {
        "organisation": organisation_id, "count": len(items), "now": now,
        "names": [name for _kind, name, _who, _origin in items],
        "ids": [who.record_id for who in audiences],
        "patients": [who.patient_id for who in audiences],
        "nurses": [who.nurse_id for who in audiences],
        "peers": [who.peer_nurse_id for who in audiences],
        "origins": [origin for _kind, _name, _who, origin in items]})


def _write(session: Session, organisation_id: uuid.UUID, items: list[tuple], first: int,
           now: datetime) -> None:
    rows, moves, revocations, drops = [], [], [], []
    for seq, item in enumerate(items, start=first):
        kind = item[0]
        if kind == "row":
            _kind, name, who, origin = item
            rows.append({"table_name": name, "record_id": who.record_id,
                         "organisation_id": organisation_id, "seq": seq, "created_seq": seq,
                         "deleted": False, "patient_id": who.patient_id,
                         "nurse_id": who.nurse_id, "peer_nurse_id": who.peer_nurse_id,
                         "changed_at": now, "origin_device_id": origin})
        elif kind == "drop":
            drops.append({"table_name": item[1], "record_id": item[2],
                          "organisation_id": organisation_id, "seq": seq, "created_seq": seq,
                          "deleted": True, "patient_id": None, "nurse_id": item[3],
                          "peer_nurse_id": None, "changed_at": now})
        elif kind in ("touch", "gone"):
            moves.append({"table_name": item[1], "record_id": item[2], "seq": seq,
                          "deleted": kind == "gone", "changed_at": now})
        else:
            revocations.append(SyncRevocation(organisation_id=organisation_id,
                                              patient_id=item[1], nurse_id=item[2], seq=seq,
                                              revoked_at=now))
    if rows:
        session.execute(_upserts(session).rows, rows)
    if drops:
        # A record stored since under that id keeps its row: the phone gets it as an update.
        session.execute(upsert(session, SyncRow.__table__).on_conflict_do_nothing(), drops)
    if moves:
        # By primary key, in one executemany.
        session.execute(update(SyncRow), moves)
    if revocations:
        session.add_all(revocations)
        session.flush()


class _Upserts(NamedTuple):
    counter: Any
    rows: Any


# By dialect name: the statements below, once built.
_UPSERTS: dict[str, _Upserts] = {}


def _upserts(session: Session) -> _Upserts:
    """Return the counter's and the changed rows' upserts, built once per dialect."""
    # They run at every commit that changed a synced row, under the counter's lock, and
    # building them (`excluded` above all) costs more than running them.
    dialect = session.get_bind().dialect.name
    if dialect not in _UPSERTS:
        counter, rows = upsert(session, SyncCounter.__table__), upsert(session, SyncRow.__table__)
        _UPSERTS[dialect] = _Upserts(
            # One statement, which takes the counter row's lock as an UPDATE does: a commit
            # waits on it once, in a single round trip.
            counter.values(organisation_id=bindparam("organisation"), value=bindparam("count"),
                           horizon=0).on_conflict_do_update(
                index_elements=["organisation_id"],
                set_={"value": SyncCounter.value + bindparam("count")})
            .returning(SyncCounter.value),
            rows.on_conflict_do_update(
                index_elements=["table_name", "record_id"],
                set_={"seq": rows.excluded.seq, "patient_id": rows.excluded.patient_id,
                      "nurse_id": rows.excluded.nurse_id, "deleted": False,
                      "peer_nurse_id": rows.excluded.peer_nurse_id,
                      "changed_at": rows.excluded.changed_at}))
    return _UPSERTS[dialect]


def install(sessions: sessionmaker[Session]) -> None:
    """Listen to the sessions `sessions` makes: collect changes on flush, number them at commit."""
    event.listen(sessions, "after_flush", _collect)
    event.listen(sessions, "before_commit", _stamp)
    event.listen(sessions, "after_transaction_end", _forget)
    event.listen(sessions, "after_soft_rollback", forget_known)
