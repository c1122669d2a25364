"""Count stored PHI values per key id, and re-encrypt them under the active key batch by batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from backend.audit import service as audit
from backend.keys import KeyRing
from backend.phi.cipher import PhiCipher
from backend.phi.registry import EncryptedColumns, encrypted_columns
from backend.runtime import Runtime


class StoredKeyId(FunctionElement[str]):
    """SQL for the key id a stored value names: the text between its first and second dots."""

    type = String()
    inherit_cache = True


@compiles(StoredKeyId)
def _key_id(element: StoredKeyId, compiler: SQLCompiler, **kw: Any) -> str:
    return f"split_part({compiler.process(element.clauses, **kw)}, '.', 2)"


@compiles(StoredKeyId, "sqlite")
def _key_id_sqlite(element: StoredKeyId, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite has no split_part.
    value = compiler.process(element.clauses, **kw)
    rest = f"substr({value}, instr({value}, '.') + 1)"
    return f"substr({rest}, 1, instr({rest}, '.') - 1)"


@dataclass(frozen=True)
class KeyCount:
    """How many values of one encrypted column name one key id."""

    table: str
    column: str
    key_id: str
    values: int


def key_counts(session: Session) -> list[KeyCount]:
    """Return the number of stored values per key id, for every encrypted column."""
    counts = []
    for declared in encrypted_columns():
        for name in declared.names:
            stored = getattr(declared.model, declared.attribute(name))
            key_id = StoredKeyId(stored)
            rows = session.execute(select(key_id, func.count()).where(stored.is_not(None))
                                   .group_by(key_id).order_by(key_id))
            counts += [KeyCount(declared.table, name, kid, values) for kid, values in rows]
    return counts


def unknown_key_ids(counts: Iterable[KeyCount], keys: KeyRing) -> list[str]:
    """Return the key ids stored values name that are not configured."""
    return sorted({count.key_id for count in counts} - set(keys.phi_keys))


def unused_key_ids(counts: Iterable[KeyCount], keys: KeyRing) -> list[str]:
    """Return the configured key ids, other than the active one, that no value names any more."""
    return sorted(set(keys.phi_keys) - {count.key_id for count in counts} - {keys.phi_active})


def _stale(declared: EncryptedColumns, prefix: str) -> ColumnElement[bool]:
    # substr rather than LIKE: LIKE ignores case in SQLite and treats _ in key ids as a wildcard.
    columns = [getattr(declared.model, declared.attribute(name)) for name in declared.names]
    return or_(*(and_(column.is_not(None), func.substr(column, 1, len(prefix)) != prefix)
                 for column in columns))


def stale_count(session: Session, keys: KeyRing) -> int:
    """Return how many rows still hold a value under a key other than the active one."""
    prefix = PhiCipher.from_keyring(keys).active_prefix
    return sum(session.scalar(select(func.count()).select_from(declared.model)
                              .where(_stale(declared, prefix)))
               for declared in encrypted_columns())


def rotate_batch(session: Session, rt: Runtime, batch_size: int) -> int:
    """Re-encrypt up to `batch_size` rows still under an old key; return the values moved."""
    box = PhiCipher.from_keyring(rt.keys)
    for declared in encrypted_columns():
        model = declared.model
        # Locked so that a concurrent edit cannot be overwritten with the value read here.
        rows = session.scalars(select(model).where(_stale(declared, box.active_prefix))
                               .order_by(model.id).limit(batch_size).with_for_update()).all()
        if rows:
            return _reencrypt(session, rt, box, declared, rows)
    return 0


def _reencrypt(session: Session, rt: Runtime, box: PhiCipher, declared: EncryptedColumns,
               rows: Sequence[Any]) -> int:
    moved: Counter = Counter()
    for row in rows:
        for name in declared.names:
            stored = getattr(row, declared.attribute(name))
            if stored is not None and not stored.startswith(box.active_prefix):
                place = declared.place(row, name)
                setattr(row, declared.attribute(name), box.encrypt(box.decrypt(stored, place),
                                                                   place))
                moved[row.organisation_id] += 1
    now = rt.clock.now()
    for organisation_id, values in moved.items():
        audit.record(session, now, None, "phi.rotate", declared.table,
                     organisation_id=organisation_id,
                     detail={"key_id": box.active, "values": values})
    session.flush()
    return sum(moved.values())
