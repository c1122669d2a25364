"""Model attributes kept as PHI ciphertext in `<name>_enc`, sealed at flush, opened when read.

A `Sealed` attribute reads and writes plaintext (text, or a JSON value), while its row stores
AES-GCM ciphertext bound to (organisation, table, name, row) in the column `<name>_enc`, as
every PHI value is. A value is encrypted when its row is flushed and decrypted the first time
it is read, so that a query loading a thousand rows decrypts nothing it does not show. A JSON
value may also keep the SHA-256 of its canonical bytes in `<name>_sha256`, so that a retried
record is compared with the stored one without decrypting it.

The cipher travels with the session, as its clock does (`backend.db.clock_of`): the app puts
it in every session's `info` and `install` attaches the flush hook to its session factory.
Core INSERTs bypass the ORM: they seal their values with `sealed_values`; column reads that
bypass it open theirs with `open_stored`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session, sessionmaker

from backend.db import new_id
from backend.phi.cipher import PhiCipher, Place

PHI = "vigil.phi"
_MISSING = object()


def cipher_of(session: Session) -> PhiCipher:
    """Return the PHI cipher of the app that made `session`."""
    try:
        return session.info[PHI]
    except KeyError:
        raise RuntimeError("this session carries no PHI cipher: make it with the app's "
                           "session factory") from None


def canonical_json(value: Any) -> str:
    """Return the sorted, compact JSON text a sealed JSON value is stored and digested as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """Return the hex SHA-256 of a JSON value's canonical text."""
    return _sha256(canonical_json(value))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Sealed:
    """A plaintext attribute whose value is stored encrypted in the column `<name>_enc`."""

    def __init__(self, *, as_json: bool = False, digested: bool = False) -> None:
        self.as_json, self.digested = as_json, digested

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.column = name, f"{name}_enc"
        self.digest_column = f"{name}_sha256" if self.digested else None
        self._pending, self._opened = f"_sealed_pending_{name}", f"_sealed_opened_{name}"

    def __get__(self, row: Any, owner: type | None = None) -> Any:
        if row is None:
            return self
        pending = row.__dict__.get(self._pending, _MISSING)
        if pending is not _MISSING:
            return pending
        stored = getattr(row, self.column)
        if stored is None:
            return None
        opened = row.__dict__.get(self._opened)
        if opened is not None and opened[0] == stored:
            return opened[1]
        value = self.loads(_cipher_for(row).decrypt(stored, self.place(row)))
        row.__dict__[self._opened] = (stored, value)
        return value

    def __set__(self, row: Any, value: Any) -> None:
        row.__dict__[self._pending] = value
        # Setting the column marks the row for the next flush, which seals the value.
        setattr(row, self.column, None)
        if self.digest_column:
            setattr(row, self.digest_column, None if value is None else digest(value))

    def place(self, row: Any) -> Place:
        """Return the place a row's value is bound to."""
        return Place(row.organisation_id, type(row).__tablename__, self.name, row.id)

    def dumps(self, value: Any) -> str:
        """Return the plaintext text of a value."""
        return canonical_json(value) if self.as_json else value

    def loads(self, text: str) -> Any:
        """Return the value of a plaintext text."""
        return json.loads(text) if self.as_json else text

    def seal_pending(self, row: Any, box: PhiCipher) -> None:
        """Encrypt a value set since the last flush into its column."""
        value = row.__dict__.pop(self._pending, _MISSING)
        if value is _MISSING:
            return
        if value is None:
            setattr(row, self.column, None)
            return
        if row.id is None:
            row.id = new_id()
        stored = box.encrypt(self.dumps(value), self.place(row))
        setattr(row, self.column, stored)
        row.__dict__[self._opened] = (stored, value)
        row.__dict__["_sealed_box"] = box


@cache
def sealed_attributes(model: type) -> tuple[Sealed, ...]:
    """Return the sealed attributes of a model class, its mixins' included."""
    found: dict[str, Sealed] = {}
    for klass in reversed(model.__mro__):
        found.update({name: value for name, value in vars(klass).items()
                      if isinstance(value, Sealed)})
    return tuple(found.values())


def _cipher_for(row: Any) -> PhiCipher:
    session = object_session(row)
    if session is not None and PHI in session.info:
        box = session.info[PHI]
        row.__dict__["_sealed_box"] = box
        return box
    box = row.__dict__.get("_sealed_box")
    if box is None:
        raise RuntimeError(f"{type(row).__name__} {row.id} was never in a session with a PHI "
                           "cipher; its sealed values cannot be read")
    return box


def _seal_flushed(session: Session, _context: Any, _instances: Any) -> None:
    rows = [row for row in (*session.new, *session.dirty) if sealed_attributes(type(row))]
    if not rows:
        return
    box = cipher_of(session)
    for row in rows:
        for attribute in sealed_attributes(type(row)):
            attribute.seal_pending(row, box)


def _remember_cipher(session: Session, row: Any) -> None:
    # Rows loaded in a session stay readable after it closes, as their other columns are.
    if sealed_attributes(type(row)) and PHI in session.info:
        row.__dict__["_sealed_box"] = session.info[PHI]


def install(factory: sessionmaker[Session]) -> None:
    """Seal the values set on rows at each flush of the factory's sessions."""
    event.listen(factory, "before_flush", _seal_flushed)
    event.listen(factory, "loaded_as_persistent", _remember_cipher)
    # A row inserted by Core and attached as stored (`custody.ledger.append` returns one).
    event.listen(factory, "detached_to_persistent", _remember_cipher)


def sealed_values(box: PhiCipher, model: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a Core INSERT's values with each sealed attribute's plaintext encrypted."""
    out = dict(values)
    for attribute in sealed_attributes(model):
        if attribute.name not in out:
            continue
        value = out.pop(attribute.name)
        place = Place(out["organisation_id"], model.__tablename__, attribute.name,
                      out["id"])
        if value is None:
            out[attribute.column] = None
            if attribute.digest_column:
                out[attribute.digest_column] = None
            continue
        plaintext = attribute.dumps(value)
        out[attribute.column] = box.encrypt(plaintext, place)
        if attribute.digest_column:
            # A JSON value's plaintext is the canonical text its digest hashes: made once.
            out[attribute.digest_column] = (_sha256(plaintext) if attribute.as_json
                                            else digest(value))
    return out


def open_stored(box: PhiCipher, model: type, name: str, organisation_id: uuid.UUID,
                row_id: uuid.UUID, stored: str | None) -> Any:
    """Return the plaintext of a value read from `<name>_enc` by a column query."""
    if stored is None:
        return None
    attribute = _by_name(model)[name]
    return attribute.loads(box.decrypt(stored, Place(organisation_id, model.__tablename__, name,
                                                     row_id)))


def _by_name(model: type) -> dict[str, Sealed]:
    return {attribute.name: attribute for attribute in sealed_attributes(model)}


def names(model: type) -> Iterator[str]:
    """Yield the names of a model's sealed attributes."""
    return (attribute.name for attribute in sealed_attributes(model))
