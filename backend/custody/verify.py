"""Recompute an organisation's chain and check every signature, checkpoint and balance.

Each entry carries the server's signature over its hash, which covers every entry before it:
an entry changed, re-hashed, inserted or renumbered underneath the application no longer
matches the signature the server made when it appended it, so the walk names the first such
entry. Entries from before migration 0008 carry no signature; a signed checkpoint at or after
them must vouch for them instead.

A signed checkpoint that the recomputed hashes reach vouches, by the same hash, for every entry
before it: the walk checks the entries' own server signatures (one Ed25519 verify each) only
past the last such checkpoint, and, when anything is amiss, again from the last checkpoint
before it, so it names the same first entry. PostgreSQL writes each entry's canonical bytes
around its details, which Python decrypts and hashes; stretches of a long chain may be walked
in parallel processes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import multiprocessing
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.orm import Session

from backend.accounts.models import Role
from backend.audit import service as audit
from backend.audit.models import AuditEvent
from backend.custody import doses
from backend.custody.chain import (
    GENESIS,
    HASHED_FIELDS,
    checkpoint_bytes,
    entry_hash,
    entry_signed_bytes,
    plain_value,
    signed_payload,
)
from backend.custody.ledger import is_balanced
from backend.custody.models import CustodyBalance, CustodyCheckpoint, CustodyEntry, CustodyHead
from backend.custody.service import POSTERS
from backend.devices.models import Device
from backend.devices.signatures import verify_with_key
from backend.errors import SignatureInvalid
from backend.phi.cipher import PhiCipher, PhiIntegrityError, Place
from backend.phi.sealed import cipher_of

BATCH = 10_000
SIGNATURE_COLUMNS = ("server_key_id", "server_signature", "signed_record")
# A full walk splits the chain into this many stretches per worker process, so that one slow
# stretch does not leave the other core idle.
STRETCHES_PER_WORKER = 4
# Shorter stretches cost more in queries and start-up than they save.
MIN_STRETCH = 1_000
PHONE_KINDS = frozenset(kind for kind, (roles, signed) in POSTERS.items()
                        if signed and Role.PHARMACIST not in roles)
SERVER_MISMATCH = ("the server's signature does not match the entry: it was changed, re-hashed, "
                   "inserted or renumbered after it was appended")
CHECKPOINT_MISMATCH = ("the chain up to this seq differs from its signed checkpoint: an entry "
                       "at or before it was changed")
UNREADABLE = "<details do not decrypt at this place>"
# The audit action that records how far a walk found the chain whole, for the next incremental.
VERIFIED = "ledger.verified"
TABLE = CustodyEntry.__tablename__
UUID_FIELDS = ("id", "organisation_id", "product_id", "actor_id", "device_id", "visit_id",
               "corrects_id")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode
# PostgreSQL writes each entry's canonical JSON around its details (the keys sorted: actor_id,
# confirmations, corrects_id, details, then the rest), so Python only decrypts and hashes.
# Where PostgreSQL's JSON escaping ever differed from Python's, the hash would not match and
# the walk recomputes that entry the reference way (`_reference_digest`).
POSTGRESQL_LINES = text(r"""
SELECT seq, id::text, prev_hash, entry_hash, server_key_id, server_signature, device_id::text,
       device_signature, kind, from_holder, to_holder, product_id::text, lot, quantity_ug,
       details_enc, confirmations::text,
       to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\:MI\:SS.US"+00:00"'),
       nullif(signed_record::text, 'null'),
       '{"actor_id":"' || actor_id::text || '","confirmations":',
       ',"corrects_id":' || coalesce(to_json(corrects_id)::text, 'null') || ',"details":',
       ',"device_id":' || coalesce(to_json(device_id)::text, 'null')
       || ',"device_signature":' || coalesce(to_json(device_signature)::text, 'null')
       || ',"expiry":"' || to_char(expiry, 'YYYY-MM-DD')
       || '","from_holder":' || to_json(from_holder)::text || ',"id":"' || id::text
       || '","kind":' || to_json(kind)::text || ',"lot":' || to_json(lot)::text
       || ',"occurred_at":"'
       || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\:MI\:SS.US"+00:00"')
       || '","organisation_id":"' || organisation_id::text
       || '","product_id":"' || product_id::text || '","quantity_ug":' || quantity_ug::text
       || ',"received_at":"'
       || to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\:MI\:SS.US"+00:00"')
       || '","seq":' || seq::text
       || ',"to_holder":' || to_json(to_holder)::text
       || ',"visit_id":' || coalesce(to_json(visit_id)::text, 'null') || '}'
FROM custody_entry
WHERE organisation_id = :organisation_id AND seq BETWEEN :first AND :last
ORDER BY seq""")
# Beyond any seq: the upper bound of a walk to the end of the chain.
NO_END = 2**31 - 1


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
    # The last signed checkpoint the walk found the chain whole up to, as (seq, head hash).
    verified_to: tuple[int, str] | None = None
    # The seq an incremental walk started after: 0 for a full walk.
    since: int = 0

    @property
    def ok(self) -> bool:
        """Tell whether everything matched."""
        return self.problem is None


class _Line(NamedTuple):
    """One stored entry as the walk reads it: the canonical JSON in pieces around the details."""

    seq: int
    id: str
    prev_hash: str
    entry_hash: str
    server_key_id: str | None
    server_signature: str | None
    device_id: str | None
    device_signature: str | None
    kind: str
    from_holder: str
    to_holder: str
    product_id: str
    lot: str
    quantity_ug: int
    details_enc: str | None
    confirmations: str
    received_at: str
    # The JSON text of the record a phone signed, if any.
    signed_record: str | None
    front: str
    middle: str
    back: str


def _lines(session: Session, organisation_id: uuid.UUID, first: int,
           last: int | None) -> Iterator[_Line]:
    """Yield the entries from `first` to `last` in seq order, read in server-side batches."""
    bounds = {"organisation_id": organisation_id, "first": first,
              "last": NO_END if last is None else last}
    if session.get_bind().dialect.name == "postgresql":
        statement, line = POSTGRESQL_LINES, _Line._make
    else:
        columns = [CustodyEntry.__table__.c[name] for name in HASHED_FIELDS if name != "details"]
        statement = (select(*columns, CustodyEntry.details_enc, CustodyEntry.prev_hash,
                            CustodyEntry.entry_hash, *(CustodyEntry.__table__.c[name] for name in
                                                       SIGNATURE_COLUMNS))
                     .where(CustodyEntry.organisation_id == bindparam("organisation_id"),
                            CustodyEntry.seq.between(bindparam("first"), bindparam("last")))
                     .order_by(CustodyEntry.seq))
        line = _python_line
    # Closed even when the walk stops at a mismatch: PostgreSQL streams through a server cursor.
    with session.execute(statement, bounds, execution_options={"yield_per": BATCH}) as result:
        for row in result:
            yield line(row)



def _python_line(row: Any) -> _Line:
    """Return a line from an entry's typed columns, as PostgreSQL writes it in SQL."""
    fields = row._mapping
    plain = {name: plain_value(fields[name]) for name in HASHED_FIELDS if name != "details"}
    after = {name: value for name, value in plain.items() if name > "details"}
    return _Line(
        fields["seq"], plain["id"], fields["prev_hash"], fields["entry_hash"],
        fields["server_key_id"], fields["server_signature"], plain["device_id"],
        fields["device_signature"], fields["kind"], fields["from_holder"], fields["to_holder"],
        plain["product_id"], fields["lot"], fields["quantity_ug"], fields["details_enc"],
        _canonical(plain["confirmations"]), plain["received_at"],
        None if fields["signed_record"] is None else json.dumps(fields["signed_record"]),
        '{"actor_id":' + _canonical(plain["actor_id"]) + ',"confirmations":',
        ',"corrects_id":' + _canonical(plain["corrects_id"]) + ',"details":',
        "," + _canonical(after)[1:])


def _details_text(box: PhiCipher, organisation_id: str, line: _Line) -> str:
    """Return an entry's details as the canonical JSON text they were sealed as."""
    if line.details_enc is None:
        return "null"
    try:
        return box.decrypt(line.details_enc, Place(organisation_id, TABLE, "details", line.id))
    except PhiIntegrityError:
        # Ciphertext changed or moved from another row: no hash can match it.
        return _canonical(UNREADABLE)


def _fields(body: bytes, line: _Line) -> dict[str, Any]:
    """Return an entry's hashed fields from its canonical bytes, ids as UUIDs."""
    fields = json.loads(body)
    for name in UUID_FIELDS:
        if fields[name] is not None:
            fields[name] = uuid.UUID(fields[name])
    signed = line.signed_record
    return {**fields, "signed_record": None if signed is None else json.loads(signed)}


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


@dataclass(frozen=True)
class _After:
    """Where a walk starts: after entry `seq`, whose hash is `digest`."""

    seq: int = 0
    digest: str = GENESIS
    # Whether that entry is server-signed: once one is, every later one must be.
    signed: bool = False


@dataclass
class _Walked:
    """What a walk over part of the chain found; what a worker process sends back."""

    problem: Problem | None
    count: int
    head: str
    # Quantities moved, by (from holder, to holder, product id, lot): balances, summed late.
    moves: Counter[tuple[str, str, str, str]]


class _Checker:
    """Walk the chain once, checking each entry's link, hash, signatures and checkpoints.

    Up to `vouched_to`, a signed checkpoint the walk's hashes reach vouches for every entry
    before it, so the entries' own server signatures are not checked there: only their key.
    """

    def __init__(self, session: Session, box: PhiCipher, organisation_id: uuid.UUID,
                 keys: Mapping[str, Ed25519PublicKey], evidence: Evidence, after: _After,
                 vouched_to: int = 0, signatures_since: datetime | None = None) -> None:
        self.session, self.box, self.organisation_id = session, box, organisation_id
        # The ciphertext's place names the organisation as text: made once, not per entry.
        self.place_id = str(organisation_id)
        self.keys, self.evidence, self.vouched_to = keys, evidence, vouched_to
        self.signatures_since = (None if signatures_since is None
                                 else plain_value(signatures_since))
        self.devices: dict[str, bytes] = {}
        self.moves: Counter[tuple[str, str, str, str]] = Counter()
        self.count, self.head, self.signing = after.seq, after.digest, after.signed
        self.raw_head = bytes.fromhex(after.digest) if after.digest else b""

    def walk(self, last: int | None = None) -> Problem | None:
        """Check the entries after the start, up to `last`; return the first problem."""
        for line in _lines(self.session, self.organisation_id, self.count + 1, last):
            self.count += 1
            if problem := self._entry(line):
                return problem
        return None

    def walked(self, problem: Problem | None) -> _Walked:
        """Return what the walk found, to send back or merge."""
        return _Walked(problem, self.count, self.head, self.moves)

    def _entry(self, line: _Line) -> Problem | None:
        seq = line.seq
        if seq != self.count:
            return Problem(self.count, f"entry seq {self.count} is missing (found {seq})")
        if line.prev_hash != self.head:
            return Problem(seq, "prev_hash does not link to the entry before it")
        confirmations = line.confirmations
        if confirmations != "[]":
            confirmations = _canonical(json.loads(confirmations))
        body = (line.front + confirmations + line.middle
                + _details_text(self.box, self.place_id, line) + line.back).encode()
        link = hashlib.sha256(self.raw_head + body)
        digest = link.hexdigest()
        if digest != line.entry_hash:
            if self._reference_digest(body) != line.entry_hash:
                return Problem(seq, "entry_hash does not match the entry's contents")
            digest, link = line.entry_hash, None
        if message := self._server_problem(line) or self._phone_problem(line, body):
            return Problem(seq, message)
        if self.evidence.heads.get(seq, {digest}) != {digest}:
            return Problem(seq, CHECKPOINT_MISMATCH)
        self.head = digest
        self.raw_head = link.digest() if link is not None else bytes.fromhex(digest)
        self.moves[line.from_holder, line.to_holder, line.product_id, line.lot] += \
            line.quantity_ug
        return None

    def _reference_digest(self, body: bytes) -> str:
        """Return the entry's hash as `chain.entry_hash` computes it from the values read."""
        return entry_hash(self.head, json.loads(body))

    def _server_problem(self, line: _Line) -> str | None:
        if line.server_signature is None and line.server_key_id is None:
            if self.signing:
                return "the entry carries no server signature, though the entries before it do"
            if line.seq > self.evidence.covered_to:
                return "the entry carries no server signature and no signed checkpoint covers it"
            return None
        self.signing = True
        key = self.keys.get(line.server_key_id)
        if key is None:
            return (f"the entry is signed by key {line.server_key_id}, which is not one of "
                    "this server's keys")
        if line.seq > self.vouched_to and not _signature_matches(
                key, line.server_signature, entry_signed_bytes(line.entry_hash)):
            return SERVER_MISMATCH
        return None

    def _phone_problem(self, line: _Line, body: bytes) -> str | None:
        if line.device_id is None:
            if self.signing and line.kind in PHONE_KINDS:
                return f"the {line.kind} entry carries no phone signature"
            return None
        if self.signatures_since is not None and line.received_at < self.signatures_since:
            # Checked on receipt; the nightly slices re-check only the recent ones.
            return None
        fields = _fields(body, line)
        signed = fields["signed_record"]
        if not self._device_signed(line.device_id, signed if signed is not None
                                   else signed_payload(fields), line.device_signature):
            return "the device signature does not match the entry"
        if signed is not None and not doses.implied(fields):
            return "the movement is not the one its signed dose record implies"
        return None

    def _device_signed(self, device_id: str, payload: object, signature: str | None) -> bool:
        if device_id not in self.devices:
            device = self.session.get(Device, uuid.UUID(device_id))
            self.devices[device_id] = device.public_key if device else b""
        try:
            verify_with_key(self.devices[device_id], payload, signature or "")
        except (SignatureInvalid, ValueError):
            return False
        return True


@dataclass(frozen=True)
class _Walk:
    """One organisation's walk: what it checks against, and where it starts and stops."""

    organisation_id: uuid.UUID
    keys: Mapping[str, Ed25519PublicKey]
    evidence: Evidence
    after: _After = _After()
    last: int | None = None
    signatures_since: datetime | None = None

    def checker(self, session: Session, box: PhiCipher, after: _After,
                vouched_to: int) -> _Checker:
        """Return a checker for this walk starting `after`."""
        return _Checker(session, box, self.organisation_id, self.keys, self.evidence, after,
                        vouched_to, self.signatures_since)

    def vouched_to(self, below: float = float("inf")) -> int:
        """Return the last checkpoint in the walk before seq `below`, or where it starts."""
        last = NO_END if self.last is None else self.last
        return max((seq for seq in self.evidence.heads
                    if self.after.seq < seq <= last and seq < below), default=self.after.seq)


# Set in each worker process when the pool starts it (forked: nothing secret is pickled).
_worker: dict[str, Any] = {}


def _start_worker(engine: Engine, box: PhiCipher, walk: _Walk) -> None:
    # The parent's pooled connections are not this process's to use or close.
    engine.dispose(close=False)
    _worker.update(engine=engine, box=box, walk=walk)


def _walk_stretch(first: int, last: int | None, vouched_to: int) -> _Walked:
    """Walk entries `first` to `last` in a worker process, on a connection of its own."""
    walk: _Walk = _worker["walk"]
    with Session(_worker["engine"]) as session:
        return _stretch(session, _worker["box"], walk, first, last, vouched_to)


def _stretch(session: Session, box: PhiCipher, walk: _Walk, first: int, last: int | None,
             vouched_to: int) -> _Walked:
    """Walk entries `first` to `last`, starting from the stored entry before `first`."""
    after = walk.after if first == walk.after.seq + 1 else _stored_after(
        session, walk.organisation_id, first - 1)
    checker = walk.checker(session, box, after, vouched_to)
    return checker.walked(checker.walk(last))


def _stored_after(session: Session, organisation_id: uuid.UUID, seq: int) -> _After:
    before = session.execute(select(
        CustodyEntry.entry_hash, CustodyEntry.server_signature).where(
        CustodyEntry.organisation_id == organisation_id, CustodyEntry.seq == seq)).one_or_none()
    if before is None:
        return _After(seq, "", False)
    return _After(seq, before.entry_hash, before.server_signature is not None)


def _bounds(session: Session, walk: _Walk, parts: int) -> list[tuple[int, int | None]]:
    """Split the walk into `parts` stretches of seqs; the last one runs to the chain's end."""
    end = walk.last if walk.last is not None else session.scalar(
        select(func.coalesce(func.max(CustodyEntry.seq), 0)).where(
            CustodyEntry.organisation_id == walk.organisation_id))
    size = max(MIN_STRETCH, -(-(end - walk.after.seq) // parts))
    firsts = list(range(walk.after.seq + 1, end + 1, size)) or [walk.after.seq + 1]
    return [(first, next_first - 1) for first, next_first in itertools.pairwise(firsts)] + [
        (firsts[-1], walk.last)]


def _fast_pass(session: Session, box: PhiCipher, walk: _Walk,
               workers: int) -> tuple[_Walked, float | None]:
    """Walk every stretch; return what they found together and the first seq in doubt.

    The stretches are walked in `workers` processes when the session is on a PostgreSQL
    engine (each opens its own connection), else one after the other here.
    """
    vouched_to = walk.vouched_to()
    bounds = _bounds(session, walk, workers * STRETCHES_PER_WORKER if workers > 1 else 1)
    bind = session.get_bind()
    if workers > 1 and isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_start_worker,
                                 initargs=(bind, box, walk)) as pool:
            parts = list(pool.map(_walk_stretch, [first for first, _last in bounds],
                                  [last for _first, last in bounds],
                                  [vouched_to] * len(bounds)))
    else:
        parts = [_stretch(session, box, walk, first, last, vouched_to)
                 for first, last in bounds]
    moves: Counter[tuple[str, str, str, str]] = Counter()
    for part, (_first, last) in zip(parts, bounds, strict=True):
        if part.problem is not None:
            return part, part.problem.seq
        if last is not None and part.count < last:
            # The stretch ended early: an entry is missing, which the exact walk names.
            return part, part.count + 1
        moves.update(part.moves)
    whole = _Walked(None, parts[-1].count, parts[-1].head, moves)
    # A checkpoint past the chain's end vouches for nothing the walk reached.
    return whole, (whole.count + 1 if vouched_to > whole.count else None)


def _walk_chain(session: Session, walk: _Walk, workers: int = 1) -> _Walked:
    """Walk the chain, trusting matched checkpoints for server signatures; name the first fault.

    When anything is amiss, the stretch from the last checkpoint before it is walked again
    checking every server signature, so the report names the same entry a walk checking
    every signature would.
    """
    box = cipher_of(session)
    walked, doubt = _fast_pass(session, box, walk, workers)
    if doubt is None:
        return walked
    checker = walk.checker(session, box, walk.after, walk.vouched_to(below=doubt))
    return checker.walked(checker.walk(walk.last))


def _balances(moves: Mapping[tuple[str, str, str, str], int]) -> dict[tuple, int]:
    """Return what each balanced holder holds of each lot, from the quantities moved."""
    balances: dict[tuple, int] = defaultdict(int)
    for (source, target, product_id, lot), quantity in moves.items():
        for holder, sign in ((source, -1), (target, 1)):
            if is_balanced(holder):
                balances[holder, uuid.UUID(str(product_id)), lot] += sign * quantity
    return balances


def _beyond_chain(checker: _Walked, seqs: Iterable[int]) -> Problem | None:
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


def _moves_up_to(session: Session, organisation_id: uuid.UUID,
                 seq: int) -> Counter[tuple[str, str, str, str]]:
    """Return the quantities moved by the entries up to `seq`, summed by the database."""
    entry = CustodyEntry
    return Counter({(source, target, str(product_id), lot): quantity
                    for source, target, product_id, lot, quantity in session.execute(
                        select(entry.from_holder, entry.to_holder, entry.product_id, entry.lot,
                               func.sum(entry.quantity_ug))
                        .where(entry.organisation_id == organisation_id, entry.seq <= seq)
                        .group_by(entry.from_holder, entry.to_holder, entry.product_id,
                                  entry.lot))})


def _server_keys(server_keys: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    return {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in server_keys.items()}


def _checkpoint_rows(session: Session, organisation_id: uuid.UUID,
                     *where) -> list[CustodyCheckpoint]:
    return list(session.scalars(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == organisation_id, *where)
        .order_by(CustodyCheckpoint.seq)))


def last_verified(session: Session, organisation_id: uuid.UUID) -> tuple[int, str] | None:
    """Return the checkpoint the last passing walk recorded it verified to, as (seq, hash)."""
    events = session.scalars(select(AuditEvent).where(
        AuditEvent.object_type == "organisation", AuditEvent.object_id == str(organisation_id),
        AuditEvent.action == VERIFIED).order_by(AuditEvent.occurred_at.desc()).limit(10)).all()
    if not events:
        return None
    # Walks recorded in the same instant: the one that reached furthest.
    event = max((event for event in events if event.occurred_at == events[0].occurred_at),
                key=lambda event: event.detail["seq"])
    return event.detail["seq"], event.detail["head_hash"]


def record_verified(session: Session, now: datetime, report: Report) -> None:
    """Record how far a passing walk verified the chain, where the next incremental starts."""
    if report.ok and report.verified_to is not None:
        seq, head_hash = report.verified_to
        audit.record(session, now, None, VERIFIED, "organisation", report.organisation_id,
                     organisation_id=report.organisation_id,
                     detail={"seq": seq, "head_hash": head_hash, "since": report.since})


def verified_through(session: Session, organisation_id: uuid.UUID,
                     server_keys: Mapping[str, bytes], export_dir: Path) -> int:
    """Return the seq of the last verified checkpoint if it still holds, else 0."""
    keys = _server_keys(server_keys)
    evidence = Evidence.gather(_checkpoint_rows(session, organisation_id),
                               exported_checkpoints(export_dir, organisation_id), keys)
    return _start(session, organisation_id, evidence, incremental=True).seq


def _start(session: Session, organisation_id: uuid.UUID, evidence: Evidence,
           incremental: bool) -> _After:
    """Return where the walk starts: after the last verified checkpoint if it still holds."""
    mark = last_verified(session, organisation_id) if incremental else None
    if mark is None:
        return _After()
    seq, digest = mark
    stored = _stored_after(session, organisation_id, seq)
    # Only a checkpoint that still verifies, over the entry still stored there, is a start:
    # otherwise the whole chain is walked, which names what changed.
    if evidence.heads.get(seq) != {digest} or stored.digest != digest:
        return _After()
    return stored


def verify(session: Session, organisation_id: uuid.UUID, server_keys: Mapping[str, bytes],
           export_dir: Path, *, workers: int = 1, incremental: bool = False) -> Report:
    """Verify one organisation's ledger; the report names the first mismatch.

    `server_keys` are the public keys whose signatures count, by key id: the server's current
    key and the ones it retired. With `workers` above one on PostgreSQL, stretches of the
    chain are walked in that many processes. `incremental` starts after the checkpoint the
    last passing walk recorded (`record_verified`), whose signature and entry still hold; the
    entries before it are trusted as verified then, their balances summed by the database.
    """
    keys = _server_keys(server_keys)
    checkpoints = _checkpoint_rows(session, organisation_id)
    evidence = Evidence.gather(checkpoints, exported_checkpoints(export_dir, organisation_id),
                               keys)
    walk = _Walk(organisation_id, keys, evidence,
                 _start(session, organisation_id, evidence, incremental))
    walked = _walk_chain(session, walk, workers)
    moves = walked.moves
    if walk.after.seq:
        moves = moves + _moves_up_to(session, organisation_id, walk.after.seq)
    problem = (walked.problem
               or next(iter(evidence.problems), None)
               or _beyond_chain(walked, evidence.heads)
               or _head_problem(walked, session.get(CustodyHead, organisation_id))
               or _balance_problem(session, organisation_id, _balances(moves)))
    return Report(organisation_id, walked.count, len(checkpoints), problem,
                  _verified_to(evidence, walked.count), walk.after.seq)


def _verified_to(evidence: Evidence, count: int) -> tuple[int, str] | None:
    seq = max((seq for seq in evidence.heads if seq <= count), default=None)
    return None if seq is None else (seq, next(iter(evidence.heads[seq])))


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

    Every entry's server signature counts, so a slice a night covers the whole chain in
    turn; phones' signatures only for the entries received since `part.signatures_since`.
    """
    keys = _server_keys(server_keys)
    in_part = _checkpoint_rows(session, organisation_id,
                               CustodyCheckpoint.seq.between(part.first, part.last))
    # The latest checkpoint too: it says how far unsigned entries may be vouched for.
    latest = _checkpoint_rows(session, organisation_id, CustodyCheckpoint.seq > part.last)[-1:]
    evidence = Evidence.gather([*in_part, *latest],
                               exported_checkpoints(export_dir, organisation_id), keys)
    after = (_stored_after(session, organisation_id, part.first - 1) if part.first > 1
             else _After())
    walked = _walk_chain(session, _Walk(organisation_id, keys, evidence, after, part.last,
                                        part.signatures_since))
    head = session.get(CustodyHead, organisation_id)
    problem = (walked.problem
               or next(iter(evidence.problems), None)
               or _beyond_chain(walked, [seq for seq in evidence.heads if seq <= part.last])
               or (_head_problem(walked, head) if head and part.last >= head.seq else None))
    return Report(organisation_id, walked.count - part.first + 1, len(in_part), problem,
                  _verified_to(evidence, walked.count), part.first - 1)


def _head_problem(checker: _Walked, head: CustodyHead | None) -> Problem | None:
    seq, digest = (head.seq, head.head_hash) if head else (0, GENESIS)
    if (seq, digest) != (checker.count, checker.head):
        return Problem(seq, f"the chain head says seq {seq}; the entries end at "
                            f"{checker.count}: the last entries were removed or replaced")
    return None
