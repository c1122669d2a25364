"""Recompute an organisation's chain and check every signature, checkpoint and balance."""

from __future__ import annotations

import base64
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.custody.chain import (
    GENESIS,
    HASHED_FIELDS,
    checkpoint_bytes,
    entry_hash,
    signed_payload,
)
from backend.custody.ledger import is_balanced
from backend.custody.models import CustodyBalance, CustodyCheckpoint, CustodyEntry, CustodyHead
from backend.devices.models import Device
from backend.devices.signatures import verify_with_key
from backend.errors import SignatureInvalid

BATCH = 5000


@dataclass(frozen=True)
class Problem:
    """The first thing that does not match, and where."""

    seq: int | None
    message: str


@dataclass(frozen=True)
class Report:
    """What verification found for one organisation."""

    organisation_id: uuid.UUID
    entries: int
    checkpoints: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        """Tell whether everything matched."""
        return self.problem is None


def _rows(session: Session, organisation_id: uuid.UUID, first: int = 1,
          last: int | None = None) -> Iterator[dict]:
    columns = [CustodyEntry.__table__.c[name] for name in
               (*HASHED_FIELDS, "prev_hash", "entry_hash") if name != "organisation_id"]
    where = [CustodyEntry.organisation_id == organisation_id, CustodyEntry.seq >= first]
    if last is not None:
        where.append(CustodyEntry.seq <= last)
    # Closed even when the walk stops at a mismatch: PostgreSQL streams through a server cursor.
    with session.execute(select(*columns).where(*where).order_by(CustodyEntry.seq)
            .execution_options(yield_per=BATCH)) as result:
        for row in result.mappings():
            yield {**row, "organisation_id": organisation_id}


class _Checker:
    """Walk the chain once, remembering the hash at every seq a checkpoint names."""

    def __init__(self, session: Session, organisation_id: uuid.UUID, wanted: set[int],
                 signatures_since: datetime | None = None) -> None:
        self.session, self.organisation_id, self.wanted = session, organisation_id, wanted
        self.signatures_since = signatures_since
        self.keys: dict[uuid.UUID, bytes] = {}
        self.hash_at: dict[int, str] = {0: GENESIS}
        self.balances: dict[tuple, int] = defaultdict(int)
        self.count, self.head = 0, GENESIS

    def start_after(self, seq: int, digest: str) -> None:
        """Begin the walk after entry `seq`, whose stored hash is `digest`."""
        self.count, self.head = seq, digest

    def walk(self, last: int | None = None) -> Problem | None:
        for row in _rows(self.session, self.organisation_id, self.count + 1, last):
            self.count += 1
            if problem := self._entry(row):
                return problem
        return None

    def _entry(self, row: dict) -> Problem | None:
        seq = row["seq"]
        if seq != self.count:
            return Problem(self.count, f"entry seq {self.count} is missing (found {seq})")
        if row["prev_hash"] != self.head:
            return Problem(seq, "prev_hash does not link to the entry before it")
        digest = entry_hash(self.head, row)
        if digest != row["entry_hash"]:
            return Problem(seq, "entry_hash does not match the entry's contents")
        recent = self.signatures_since is None or row["received_at"] >= self.signatures_since
        if row["device_id"] is not None and recent and not self._signature_ok(row):
            return Problem(seq, "the device signature does not match the entry")
        self.head = digest
        if seq in self.wanted:
            self.hash_at[seq] = digest
        for holder, sign in ((row["from_holder"], -1), (row["to_holder"], 1)):
            if is_balanced(holder):
                self.balances[holder, row["product_id"], row["lot"]] += sign * row["quantity_ug"]
        return None

    def _signature_ok(self, row: dict) -> bool:
        if row["device_id"] not in self.keys:
            self.keys[row["device_id"]] = self.session.get(Device, row["device_id"]).public_key
        try:
            verify_with_key(self.keys[row["device_id"]], signed_payload(row),
                            row["device_signature"] or "")
        except SignatureInvalid:
            return False
        return True


def _checkpoint_problem(checker: _Checker, checkpoints: list[CustodyCheckpoint],
                        exported: list[dict], server_key: bytes) -> Problem | None:
    for checkpoint in checkpoints:
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(checkpoint.public_key)).verify(
                base64.b64decode(checkpoint.signature), checkpoint_bytes(
                    checkpoint.organisation_id, checkpoint.seq, checkpoint.head_hash,
                    checkpoint.signed_at))
        except (InvalidSignature, ValueError):
            return Problem(checkpoint.seq, "the checkpoint's signature does not verify")
        if base64.b64decode(checkpoint.public_key) != server_key:
            return Problem(checkpoint.seq, "the checkpoint was not signed by this server's key")
    for line in [*({"seq": c.seq, "head_hash": c.head_hash} for c in checkpoints), *exported]:
        if checker.hash_at.get(line["seq"]) != line["head_hash"]:
            return Problem(line["seq"], "the chain up to this seq differs from its signed "
                                        "checkpoint: an entry at or before it was changed")
    return None


def exported_checkpoints(export_dir: Path, organisation_id: uuid.UUID) -> list[dict]:
    """Return the checkpoints written to the organisation's append-only export file."""
    path = export_dir / f"{organisation_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _balance_problem(session: Session, organisation_id: uuid.UUID,
                     derived: dict[tuple, int]) -> Problem | None:
    stored = {(b.holder, b.product_id, b.lot): b.quantity_ug for b in session.scalars(
        select(CustodyBalance).where(CustodyBalance.organisation_id == organisation_id))}
    for key in sorted(set(stored) | set(derived), key=str):
        if stored.get(key, 0) != derived.get(key, 0):
            return Problem(None, f"balance of {key[0]} lot {key[2]} is {stored.get(key, 0)} µg; "
                                 f"the ledger says {derived.get(key, 0)} µg")
    return None


def verify(session: Session, organisation_id: uuid.UUID, server_key: bytes,
           export_dir: Path) -> Report:
    """Verify one organisation's ledger; the report names the first mismatch."""
    checkpoints = list(session.scalars(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == organisation_id).order_by(CustodyCheckpoint.seq)))
    exported = exported_checkpoints(export_dir, organisation_id)
    checker = _Checker(session, organisation_id,
                       {c.seq for c in checkpoints} | {line["seq"] for line in exported})
    head = session.get(CustodyHead, organisation_id)
    problem = (checker.walk()
               or _checkpoint_problem(checker, checkpoints, exported, server_key)
               or _head_problem(checker, head)
               or _balance_problem(session, organisation_id, checker.balances))
    return Report(organisation_id, checker.count, len(checkpoints), problem)


@dataclass(frozen=True)
class Slice:
    """Part of a chain to verify: entries `first` to `last`, signatures of the recent ones."""

    first: int
    last: int
    # Device signatures were checked on receipt; re-checking is for entries since then.
    signatures_since: datetime


def verify_slice(session: Session, organisation_id: uuid.UUID, server_key: bytes,
                 export_dir: Path, part: Slice) -> Report:
    """Verify a slice of one organisation's ledger: links, hashes, checkpoints, signatures.

    A changed entry no longer hashes to its stored hash, and re-hashing the chain after it
    breaks a signed checkpoint; so re-hashing a slice a night covers the whole chain in turn.
    """
    checkpoints = [checkpoint for checkpoint in session.scalars(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == organisation_id,
        CustodyCheckpoint.seq.between(part.first, part.last)).order_by(CustodyCheckpoint.seq))]
    exported = [line for line in exported_checkpoints(export_dir, organisation_id)
                if part.first <= line["seq"] <= part.last]
    checker = _Checker(session, organisation_id,
                       {c.seq for c in checkpoints} | {line["seq"] for line in exported},
                       part.signatures_since)
    if part.first > 1:
        checker.start_after(part.first - 1, session.scalar(select(CustodyEntry.entry_hash).where(
            CustodyEntry.organisation_id == organisation_id,
            CustodyEntry.seq == part.first - 1)) or "")
    head = session.get(CustodyHead, organisation_id)
    problem = (checker.walk(part.last)
               or _checkpoint_problem(checker, checkpoints, exported, server_key)
               or (_head_problem(checker, head) if head and part.last >= head.seq else None))
    return Report(organisation_id, checker.count - part.first + 1, len(checkpoints), problem)


def _head_problem(checker: _Checker, head: CustodyHead | None) -> Problem | None:
    seq, digest = (head.seq, head.head_hash) if head else (0, GENESIS)
    if (seq, digest) != (checker.count, checker.head):
        return Problem(seq, f"the chain head says seq {seq}; the entries end at "
                            f"{checker.count}: the last entries were removed or replaced")
    return None
