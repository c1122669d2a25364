"""Recompute an organisation's chain and check every signature, checkpoint and balance.

Each entry carries the server's signature over its hash, which covers every entry before it:
an entry changed, re-hashed, inserted or renumbered underneath the application no longer
matches the signature the server made when it appended it, so the walk names the first such
entry. Entries from before migration 0008 carry no signature; a signed checkpoint at or after
them must vouch for them instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Role
from backend.custody import doses
from backend.custody.chain import (
    GENESIS,
    HASHED_FIELDS,
    checkpoint_bytes,
    entry_hash,
    entry_signed_bytes,
    signed_payload,
)
from backend.custody.ledger import is_balanced
from backend.custody.models import CustodyBalance, CustodyCheckpoint, CustodyEntry, CustodyHead
from backend.custody.service import POSTERS
from backend.devices.models import Device
from backend.devices.signatures import verify_with_key
from backend.errors import SignatureInvalid
from backend.phi.cipher import PhiCipher, PhiIntegrityError
from backend.phi.sealed import cipher_of, open_stored

BATCH = 5000
SIGNATURE_COLUMNS = ("server_key_id", "server_signature", "signed_record")
# Kinds only a nurse's phone records: one stored without the phone's signature was stripped.
PHONE_KINDS = frozenset(kind for kind, (roles, signed) in POSTERS.items()
                        if signed and Role.PHARMACIST not in roles)
SERVER_MISMATCH = ("the server's signature does not match the entry: it was changed, re-hashed, "
                   "inserted or renumbered after it was appended")
CHECKPOINT_MISMATCH = ("the chain up to this seq differs from its signed checkpoint: an entry "
                       "at or before it was changed")
UNREADABLE = "<details do not decrypt at this place>"


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
               (*HASHED_FIELDS, "prev_hash", "entry_hash", *SIGNATURE_COLUMNS)
               if name not in ("organisation_id", "details")]
    where = [CustodyEntry.organisation_id == organisation_id, CustodyEntry.seq >= first]
    if last is not None:
        where.append(CustodyEntry.seq <= last)
    # Closed even when the walk stops at a mismatch: PostgreSQL streams through a server cursor.
    box = cipher_of(session)
    with session.execute(select(*columns, CustodyEntry.details_enc).where(*where)
                         .order_by(CustodyEntry.seq).execution_options(yield_per=BATCH)
                         ) as result:
        for row in result.mappings():
            yield {**row, "organisation_id": organisation_id,
                   "details": _details(box, organisation_id, row)}


def _details(box: PhiCipher, organisation_id: uuid.UUID, row: Mapping[str, Any]) -> Any:
    """Return an entry's details in clear, which its hash and signatures cover."""
    try:
        return open_stored(box, CustodyEntry, "details", organisation_id, row["id"],
                           row["details_enc"])
    except PhiIntegrityError:
        # Ciphertext changed or moved from another row: no hash can match it.
        return UNREADABLE


def _signature_matches(key: Ed25519PublicKey, signature: str | None, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature or "", validate=True), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass
class Evidence:
    """What vouches for the chain besides its entries: the signed checkpoints, by seq."""

    heads: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Checkpoint rows whose signature fails: they vouch for nothing.
    problems: list[Problem] = field(default_factory=list)
    # The highest seq a signed checkpoint covers: unsigned (pre-0008) entries must be below it.
    covered_to: int = 0

    @classmethod
    def gather(cls, rows: Iterable[CustodyCheckpoint], exported: Iterable[dict],
               keys: Mapping[str, Ed25519PublicKey]) -> Evidence:
        """Return the checkpoints that verify, and a problem for each stored one that does not."""
        evidence = cls()
        for checkpoint in rows:
            if problem := _checkpoint_signature_problem(checkpoint, keys):
                evidence.problems.append(problem)
                continue
            evidence.add(checkpoint.seq, checkpoint.head_hash)
        # The export file lives off the database: a database-only forger cannot add to it.
        for line in exported:
            evidence.add(line["seq"], line["head_hash"])
        return evidence

    def add(self, seq: int, head_hash: str) -> None:
        """Take one signed checkpoint as evidence."""
        self.heads[seq].add(head_hash)
        self.covered_to = max(self.covered_to, seq)


def _checkpoint_signature_problem(checkpoint: CustodyCheckpoint,
                                  keys: Mapping[str, Ed25519PublicKey]) -> Problem | None:
    key = keys.get(checkpoint.key_id)
    if key is None:
        return Problem(checkpoint.seq, f"the checkpoint is signed by key {checkpoint.key_id}, "
                                       "which is not one of this server's keys")
    if not _signature_matches(key, checkpoint.signature, checkpoint_bytes(
            checkpoint.organisation_id, checkpoint.seq, checkpoint.head_hash,
            checkpoint.signed_at)):
        return Problem(checkpoint.seq, "the checkpoint's signature does not verify")
    return None


class _Checker:
    """Walk the chain once, checking each entry's link, hash, signatures and checkpoints."""

    def __init__(self, session: Session, organisation_id: uuid.UUID,
                 keys: Mapping[str, Ed25519PublicKey], evidence: Evidence,
                 signatures_since: datetime | None = None) -> None:
        self.session, self.organisation_id = session, organisation_id
        self.keys, self.evidence = keys, evidence
        self.signatures_since = signatures_since
        self.devices: dict[uuid.UUID, bytes] = {}
        self.balances: dict[tuple, int] = defaultdict(int)
        self.count, self.head = 0, GENESIS
        # Once one entry is server-signed, every later one must be.
        self.signing = False

    def start_after(self, seq: int, digest: str, signed: bool) -> None:
        """Begin the walk after entry `seq`, whose stored hash is `digest`."""
        self.count, self.head, self.signing = seq, digest, signed

    def walk(self, last: int | None = None) -> Problem | None:
        """Check the entries after the start, up to `last`; return the first problem."""
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
        if message := self._server_problem(row) or self._phone_problem(row):
            return Problem(seq, message)
        if self.evidence.heads.get(seq, {digest}) != {digest}:
            return Problem(seq, CHECKPOINT_MISMATCH)
        self.head = digest
        for holder, sign in ((row["from_holder"], -1), (row["to_holder"], 1)):
            if is_balanced(holder):
                self.balances[holder, row["product_id"], row["lot"]] += sign * row["quantity_ug"]
        return None

    def _server_problem(self, row: dict) -> str | None:
        if row["server_signature"] is None and row["server_key_id"] is None:
            if self.signing:
                return "the entry carries no server signature, though the entries before it do"
            if row["seq"] > self.evidence.covered_to:
                return "the entry carries no server signature and no signed checkpoint covers it"
            return None
        self.signing = True
        key = self.keys.get(row["server_key_id"])
        if key is None:
            return (f"the entry is signed by key {row['server_key_id']}, which is not one of "
                    "this server's keys")
        if not _signature_matches(key, row["server_signature"],
                                  entry_signed_bytes(row["entry_hash"])):
            return SERVER_MISMATCH
        return None

    def _phone_problem(self, row: dict) -> str | None:
        if row["device_id"] is None:
            if self.signing and row["kind"] in PHONE_KINDS:
                return f"the {row['kind']} entry carries no phone signature"
            return None
        if self.signatures_since is not None and row["received_at"] < self.signatures_since:
            # Checked on receipt; the nightly slices re-check only the recent ones.
            return None
        signed = row["signed_record"]
        if not self._device_signed(row["device_id"], signed if signed is not None
                                   else signed_payload(row), row["device_signature"]):
            return "the device signature does not match the entry"
        if signed is not None and not doses.implied(row):
            return "the movement is not the one its signed dose record implies"
        return None

    def _device_signed(self, device_id: uuid.UUID, payload: object,
                       signature: str | None) -> bool:
        if device_id not in self.devices:
            device = self.session.get(Device, device_id)
            self.devices[device_id] = device.public_key if device else b""
        try:
            verify_with_key(self.devices[device_id], payload, signature or "")
        except (SignatureInvalid, ValueError):
            return False
        return True


def _beyond_chain(checker: _Checker, seqs: Iterable[int]) -> Problem | None:
    """Name the first missing entry when a signed checkpoint covers more than the chain holds."""
    beyond = [seq for seq in seqs if seq > checker.count]
    if beyond:
        # Said plainly for the operator: after a restore, this is the backup being older than
        # the checkpoints kept off the database, and the entries in between are lost.
        return Problem(checker.count + 1, f"entry seq {checker.count + 1} is missing: a signed "
                                          f"checkpoint covers seq {max(beyond)}, the entries "
                                          f"end at {checker.count}; the chain went backwards "
                                          "(a backup older than the checkpoints was restored, "
                                          "or the last entries were removed)")
    return None


def exported_checkpoints(export_dir: Path, organisation_id: uuid.UUID) -> list[dict]:
    """Return the checkpoints written to the organisation's append-only export file."""
    path = export_dir / f"{organisation_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_exported(export_dir: Path, checkpoint: CustodyCheckpoint) -> bool:
    """Tell whether `checkpoint` is in its organisation's append-only export file."""
    return any((line["seq"], line["head_hash"]) == (checkpoint.seq, checkpoint.head_hash)
               for line in exported_checkpoints(export_dir, checkpoint.organisation_id))


def _balance_problem(session: Session, organisation_id: uuid.UUID,
                     derived: dict[tuple, int]) -> Problem | None:
    stored = {(b.holder, b.product_id, b.lot): b.quantity_ug for b in session.scalars(
        select(CustodyBalance).where(CustodyBalance.organisation_id == organisation_id))}
    for key in sorted(set(stored) | set(derived), key=str):
        if stored.get(key, 0) != derived.get(key, 0):
            return Problem(None, f"balance of {key[0]} lot {key[2]} is {stored.get(key, 0)} µg; "
                                 f"the ledger says {derived.get(key, 0)} µg")
    return None


def _server_keys(server_keys: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    return {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in server_keys.items()}


def _checkpoint_rows(session: Session, organisation_id: uuid.UUID,
                     *where) -> list[CustodyCheckpoint]:
    return list(session.scalars(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == organisation_id, *where)
        .order_by(CustodyCheckpoint.seq)))


def verify(session: Session, organisation_id: uuid.UUID, server_keys: Mapping[str, bytes],
           export_dir: Path) -> Report:
    """Verify one organisation's ledger; the report names the first mismatch.

    `server_keys` are the public keys whose signatures count, by key id: the server's current
    key and the ones it retired.
    """
    keys = _server_keys(server_keys)
    checkpoints = _checkpoint_rows(session, organisation_id)
    evidence = Evidence.gather(checkpoints, exported_checkpoints(export_dir, organisation_id),
                               keys)
    checker = _Checker(session, organisation_id, keys, evidence)
    problem = (checker.walk()
               or next(iter(evidence.problems), None)
               or _beyond_chain(checker, evidence.heads)
               or _head_problem(checker, session.get(CustodyHead, organisation_id))
               or _balance_problem(session, organisation_id, checker.balances))
    return Report(organisation_id, checker.count, len(checkpoints), problem)


@dataclass(frozen=True)
class Slice:
    """Part of a chain to verify: entries `first` to `last`, signatures of the recent ones."""

    first: int
    last: int
    # Device signatures were checked on receipt; re-checking is for entries since then.
    signatures_since: datetime


def verify_slice(session: Session, organisation_id: uuid.UUID, server_keys: Mapping[str, bytes],
                 export_dir: Path, part: Slice) -> Report:
    """Verify a slice of one organisation's ledger: links, hashes, checkpoints, signatures.

    Every entry's server signature is checked, so a slice a night covers the whole chain in
    turn; phones' signatures only for the entries received since `part.signatures_since`.
    """
    keys = _server_keys(server_keys)
    in_part = _checkpoint_rows(session, organisation_id,
                               CustodyCheckpoint.seq.between(part.first, part.last))
    # The latest checkpoint too: it says how far unsigned entries may be vouched for.
    latest = _checkpoint_rows(session, organisation_id, CustodyCheckpoint.seq > part.last)[-1:]
    evidence = Evidence.gather([*in_part, *latest],
                               exported_checkpoints(export_dir, organisation_id), keys)
    checker = _Checker(session, organisation_id, keys, evidence, part.signatures_since)
    if part.first > 1:
        before = session.execute(select(
            CustodyEntry.entry_hash, CustodyEntry.server_signature).where(
            CustodyEntry.organisation_id == organisation_id,
            CustodyEntry.seq == part.first - 1)).one_or_none()
        checker.start_after(part.first - 1, before.entry_hash if before else "",
                            before is not None and before.server_signature is not None)
    head = session.get(CustodyHead, organisation_id)
    problem = (checker.walk(part.last)
               or next(iter(evidence.problems), None)
               or _beyond_chain(checker, [seq for seq in evidence.heads if seq <= part.last])
               or (_head_problem(checker, head) if head and part.last >= head.seq else None))
    return Report(organisation_id, checker.count - part.first + 1, len(in_part), problem)


def _head_problem(checker: _Checker, head: CustodyHead | None) -> Problem | None:
    seq, digest = (head.seq, head.head_hash) if head else (0, GENESIS)
    if (seq, digest) != (checker.count, checker.head):
        return Problem(seq, f"the chain head says seq {seq}; the entries end at "
                            f"{checker.count}: the last entries were removed or replaced")
    return None
