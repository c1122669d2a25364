"""Tampering with the stored ledger is caught by `verify`, which names where; the trigger and the
API refuse changes in the first place."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from backend.accounts.models import Role
from backend.cli import cli
from backend.custody import checkpoints
from backend.custody import verify as verifying
from backend.custody.chain import GENESIS, HASHED_FIELDS, entry_hash, sign_checkpoint, sign_entry
from backend.custody.models import (
    CustodyBalance,
    CustodyCheckpoint,
    CustodyEntry,
    CustodyHead,
    LossReport,
)
from backend.custody.verify import (
    Problem,
    Report,
    exported_checkpoints,
    last_verified,
    record_verified,
    verify,
)
from backend.jobs.scheduler import SCHEDULE
from backend.keys import KeyRing
from backend.phi.cipher import PhiCipher
from backend.phi.sealed import open_stored, sealed_values
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, World

DAY1 = "2026-11-03T15:00:00+00:00"
ENTRY = CustodyEntry.__table__
CHECKPOINT = CustodyCheckpoint.__table__
# Entries 4, 5, 7 and 11 come signed from the nurse's phone; checkpoints sign 6 and 12.
MIDWAY, END = 6, 12
# `Ledger.extend` appends three entries past the last checkpoint.
PAST, LAST = END + 2, END + 3
SERVER_MISMATCH = "the server's signature does not match the entry"
CHECKPOINT_MISMATCH = "differs from its signed checkpoint"


def _chain(pharmacy: Pharmacy) -> list[tuple[Role, dict]]:
    """Return twelve entries covering every kind but transfer, as (poster, body)."""
    visit = pharmacy.schedule(DAY1)
    assert visit.status_code == 201, visit.json
    nurse = str(pharmacy.nurse.id)

    def witness(role: Role) -> dict:
        return {"user_id": str(pharmacy.users[role].id), "password": PASSWORD}

    return [
        (Role.PHARMACIST, {"kind": "receive", "quantity_ug": 1_000_000, "details": SUPPLIER}),
        (Role.PHARMACIST, {"kind": "receive", "lot": "L2", "quantity_ug": 500_000,
                           "details": SUPPLIER}),
        (Role.PHARMACIST, {"kind": "dispense", "quantity_ug": 500_000, "nurse_id": nurse,
                           "details": {"seal_id": "S-1"}}),
        (Role.NURSE, {"kind": "administer", "quantity_ug": 35_000,
                      "patient_id": pharmacy.patient_id, "visit_id": visit.json["id"]}),
        (Role.NURSE, {"kind": "return", "quantity_ug": 100_000, "details": {"seal_id": "S-1"}}),
        (Role.PHARMACIST, {"kind": "adjust", "lot": "L2", "quantity_ug": 1_000,
                           "holder": "vault",
                           "details": {"reason": "recount", "direction": "down"}}),
        (Role.NURSE, {"kind": "waste", "quantity_ug": 15_000,
                      "witnesses": [witness(Role.PHARMACIST)]}),
        (Role.PHARMACIST, {"kind": "dispense", "lot": "L2", "quantity_ug": 200_000,
                           "nurse_id": nurse, "details": {"seal_id": "S-2"}}),
        (Role.PHARMACIST, {"kind": "loss", "quantity_ug": 5_000, "holder": "vault",
                           "details": {"circumstances": "vial dropped"}}),
        (Role.PHARMACIST, {"kind": "destroy", "quantity_ug": 10_000,
                           "details": {"method": "reverse distributor"},
                           "witnesses": [witness(Role.ADMIN), witness(Role.COMPLIANCE)]}),
        (Role.NURSE, {"kind": "return", "lot": "L2", "quantity_ug": 50_000,
                      "details": {"seal_id": "S-2"}}),
        (Role.PHARMACIST, {"kind": "receive", "quantity_ug": 250_000, "details": SUPPLIER}),
    ]


@dataclass
class Ledger:
    """A pharmacy's signed twelve-entry chain, and the means to tamper with it underneath."""

    pharmacy: Pharmacy
    app: Flask
    connection: Connection

    @property
    def org_id(self) -> uuid.UUID:
        """Return the pharmacy's organisation id."""
        return self.pharmacy.org.id

    @property
    def export_dir(self) -> Path:
        """Return where the app exports checkpoints."""
        return self.app.config["CHECKPOINT_DIR"]

    @property
    def keys(self) -> KeyRing:
        """Return the server's keys as the app holds them now."""
        return self.pharmacy.world.rt.keys

    @property
    def export_file(self) -> Path:
        """Return the organisation's checkpoint export file."""
        return self.export_dir / f"{self.org_id}.jsonl"

    def extend(self) -> None:
        """Append three entries past the last checkpoint, seq 13 to 15."""
        for response in (self.pharmacy.receive(1_000), self.pharmacy.dispense(2_000, seal="S-3"),
                         self.pharmacy.receive(3_000, lot="L2")):
            assert response.status_code == 201, response.json

    def sign(self) -> None:
        """Sign the chain head as the checkpoint job does."""
        session = self.pharmacy.world.session
        checkpoints.sign_head(session, self.pharmacy.world.rt, self.org_id, self.export_dir)
        session.commit()

    def verify(self, *, workers: int = 1, incremental: bool = False,
               record: bool = False) -> Report:
        """Verify through a fresh session, so nothing cached hides what the tampering did.

        With `record`, keep how far a passing walk verified, as the command and the scan do.
        """
        with self.app.extensions["vigil.db"].sessions(
                bind=self.connection, join_transaction_mode="create_savepoint") as session:
            report = verify(session, self.org_id, self.keys.verifying_keys(), self.export_dir,
                            workers=workers, incremental=incremental)
            if record:
                record_verified(session, self.pharmacy.world.rt.clock.now(), report)
                session.commit()
            return report

    def allow_changes(self) -> None:
        """Take the append-only triggers away, inside the test's transaction only."""
        for table in ("custody_entry", "custody_checkpoint"):
            if self.connection.dialect.name == "postgresql":
                self.connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                continue
            for verb in ("update", "delete"):
                self.connection.execute(text(f"DROP TRIGGER {table}_no_{verb}"))

    def where(self, seq: int) -> ColumnElement[bool]:
        """Return the condition that selects the entry at `seq`."""
        return (ENTRY.c.organisation_id == self.org_id) & (ENTRY.c.seq == seq)

    def entry(self, seq: int) -> dict:
        """Return the stored entry at `seq`."""
        return dict(self.connection.execute(select(ENTRY).where(self.where(seq))).mappings().one())

    def change(self, at: int, **values) -> None:
        """Overwrite columns of the entry at seq `at`."""
        self.connection.execute(update(ENTRY).where(self.where(at)).values(**values))

    def remove(self, seq: int) -> None:
        """Delete the entry at `seq`."""
        self.connection.execute(delete(ENTRY).where(self.where(seq)))

    def move_balance(self, holder: str, lot: str, delta: int) -> None:
        """Add `delta` µg to a stored balance, as a forger keeping balances in step would."""
        self.connection.execute(update(CustodyBalance).where(
            CustodyBalance.organisation_id == self.org_id, CustodyBalance.holder == holder,
            CustodyBalance.lot == lot).values(quantity_ug=CustodyBalance.quantity_ug + delta))

    def rehash_from(self, first: int, *, keys: KeyRing | None = None) -> dict[int, str]:
        """Recompute every hash from `first` to the end and move the head: a consistent forgery.

        With `keys` (the server's, stolen), re-sign each entry too. Return the new hash at each
        seq.
        """
        columns = [ENTRY.c[name] for name in HASHED_FIELDS if name != "details"]
        rows = self.connection.execute(select(*columns, ENTRY.c.details_enc).where(
            ENTRY.c.organisation_id == self.org_id, ENTRY.c.seq >= first)
            .order_by(ENTRY.c.seq)).mappings().all()
        digest = self.entry(first - 1)["entry_hash"] if first > 1 else GENESIS
        hashes = {}
        # A forger this thorough also holds the PHI keys, to read the details the hash covers.
        box = PhiCipher.from_keyring(self.pharmacy.world.rt.keys)
        for stored in rows:
            row = {**stored, "details": open_stored(box, CustodyEntry, "details", self.org_id,
                                                    stored["id"], stored["details_enc"])}
            previous, digest = digest, entry_hash(digest, row)
            signed = ({"server_key_id": keys.signing_key_id,
                       "server_signature": sign_entry(keys.signing_key, digest)} if keys else {})
            self.change(row["seq"], prev_hash=previous, entry_hash=digest, **signed)
            hashes[row["seq"]] = digest
        self.connection.execute(update(CustodyHead).where(
            CustodyHead.organisation_id == self.org_id).values(
                seq=rows[-1]["seq"] if rows else first - 1, head_hash=digest))
        return hashes

    def renumber(self, first: int, shift: int) -> None:
        """Move every entry from `first` on by `shift` seqs, one at a time (seq is unique)."""
        seqs = list(self.connection.scalars(select(ENTRY.c.seq).where(
            ENTRY.c.organisation_id == self.org_id, ENTRY.c.seq >= first).order_by(ENTRY.c.seq)))
        for seq in reversed(seqs) if shift > 0 else seqs:
            self.change(seq, seq=seq + shift)

    def excise(self, seq: int) -> None:
        """Delete the entry at `seq`, close the gap and re-hash: a deletion leaving no hole."""
        self.remove(seq)
        self.renumber(seq + 1, -1)
        self.rehash_from(seq)

    def copy_of(self, original: int, **values) -> dict:
        """Return a forged copy of the entry at seq `original` under a new id.

        Its details are encrypted again for the new row: a forger who did not hold the PHI
        keys could only copy a ciphertext that no longer decrypts where it is.
        """
        entry = self.entry(original)
        box = PhiCipher.from_keyring(self.pharmacy.world.rt.keys)
        details = open_stored(box, CustodyEntry, "details", self.org_id, entry["id"],
                              entry.pop("details_enc"))
        return sealed_values(box, CustodyEntry, {**entry, "id": uuid.uuid4(),
                                                 "details": details, **values})

    def slip_in(self, seq: int, **values) -> None:
        """Insert a forged copy of the entry at `seq` there, renumber the rest and re-hash."""
        forged = self.copy_of(seq, **values)
        self.renumber(seq, 1)
        self.connection.execute(insert(ENTRY).values(forged))
        self.rehash_from(seq)

    def rewrite_checkpoints(self, hashes: dict[int, str], *, with_key: bool) -> None:
        """Point the stored checkpoints at the forged hashes, re-signed only `with_key`."""
        rt = self.pharmacy.world.rt
        for checkpoint in self.connection.execute(select(CustodyCheckpoint).where(
                CustodyCheckpoint.organisation_id == self.org_id)).all():
            values = {"head_hash": hashes[checkpoint.seq]}
            if with_key:
                values["signature"] = sign_checkpoint(rt.keys.signing_key, self.org_id,
                                                      checkpoint.seq, values["head_hash"],
                                                      checkpoint.signed_at)
            self.connection.execute(update(CustodyCheckpoint).where(
                CustodyCheckpoint.id == checkpoint.id).values(**values))


@pytest.fixture
def ledger(world: World, app, connection) -> Ledger:
    """Return a pharmacy's twelve entries, signed at seq 6 and at seq 12, verifying clean."""
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    ledger = Ledger(pharmacy, app, connection)
    for seq, (role, body) in enumerate(_chain(pharmacy), start=1):
        response = pharmacy.post(role, body)
        assert response.status_code == 201, (seq, response.json)
        assert response.json["seq"] == seq
        if seq in (MIDWAY, END):
            ledger.sign()
    report = ledger.verify()
    assert (report.ok, report.entries, report.checkpoints) == (True, END, 2), report.problem
    return ledger


def _rewrite_receive(ledger: Ledger, seq: int, keys: KeyRing | None = None) -> dict[int, str]:
    """Add 1 mg to a receive, with the balance to match, and re-hash the tail and the head."""
    ledger.change(seq, quantity_ug=ledger.entry(seq)["quantity_ug"] + 1_000)
    entry = ledger.entry(seq)
    ledger.move_balance("vault", entry["lot"], 1_000)
    return ledger.rehash_from(seq, keys=keys)


def _delete_past_every_checkpoint(ledger: Ledger) -> None:
    assert ledger.pharmacy.receive(1_000).status_code == 201
    ledger.remove(END + 1)


def _truncate_and_rewind(ledger: Ledger) -> None:
    ledger.remove(END)
    ledger.remove(END - 1)
    ledger.connection.execute(update(CustodyHead).where(
        CustodyHead.organisation_id == ledger.org_id).values(
            seq=END - 2, head_hash=ledger.entry(END - 2)["entry_hash"]))


def _swap(ledger: Ledger, first: int, second: int) -> None:
    # Through a free seq: (organisation_id, seq) is unique at every statement.
    ledger.change(first, seq=-1)
    ledger.change(second, seq=first)
    ledger.change(-1, seq=second)


def _change_signed_entry(ledger: Ledger, seq: int, keys: KeyRing | None = None) -> None:
    entry = ledger.entry(seq)
    ledger.change(seq, quantity_ug=entry["quantity_ug"] + 1_000)
    ledger.move_balance(entry["from_holder"], entry["lot"], -1_000)
    ledger.rehash_from(seq, keys=keys)


def _strip_signature(ledger: Ledger, seq: int, keys: KeyRing | None = None) -> None:
    # Past the last checkpoint the signatures are all that vouch for a nurse's entry.
    entry = ledger.entry(seq)
    ledger.change(seq, quantity_ug=entry["quantity_ug"] - 1_000, device_id=None,
                  device_signature=None)
    ledger.move_balance(entry["from_holder"], entry["lot"], 1_000)
    ledger.move_balance(entry["to_holder"], entry["lot"], -1_000)
    ledger.rehash_from(seq, keys=keys)


def _forge_checkpoints(ledger: Ledger, *, with_key: bool) -> None:
    ledger.rewrite_checkpoints(_rewrite_receive(ledger, 2), with_key=with_key)


def _drop_checkpoint_rows(ledger: Ledger) -> None:
    _rewrite_receive(ledger, 2)
    ledger.connection.execute(delete(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == ledger.org_id))


def _drop_every_checkpoint(ledger: Ledger) -> None:
    """Delete the checkpoint rows and the export file, after a consistent rewrite."""
    _drop_checkpoint_rows(ledger)
    ledger.export_file.unlink()


def _checkpoint_head_changed(ledger: Ledger) -> None:
    ledger.connection.execute(update(CHECKPOINT).where(
        CHECKPOINT.c.organisation_id == ledger.org_id, CHECKPOINT.c.seq == MIDWAY)
        .values(head_hash="f" * 64))


def _checkpoint_signed_by_a_stranger(ledger: Ledger) -> None:
    stranger = Ed25519PrivateKey.generate()
    checkpoint = ledger.connection.execute(select(CHECKPOINT).where(
        CHECKPOINT.c.organisation_id == ledger.org_id, CHECKPOINT.c.seq == MIDWAY)).one()
    ledger.connection.execute(update(CHECKPOINT).where(CHECKPOINT.c.id == checkpoint.id).values(
        key_id="0123456789abcdef", signature=sign_checkpoint(
            stranger, ledger.org_id, MIDWAY, checkpoint.head_hash, checkpoint.signed_at)))


def _stolen_key_rewrite(ledger: Ledger) -> None:
    """Rewrite a receipt and re-sign the entries and the checkpoint rows with the server's key."""
    ledger.rewrite_checkpoints(_rewrite_receive(ledger, 2, ledger.keys), with_key=True)


def _past_the_checkpoint(tamper: Callable[[Ledger], object]) -> Callable[[Ledger], None]:
    """Return `tamper` run after three entries were appended past the last checkpoint."""
    def apply(ledger: Ledger) -> None:
        ledger.extend()
        tamper(ledger)
    return apply


def _append_forged(ledger: Ledger, **values) -> None:
    """Append a copy of the last entry past the head, linked and hashed, and move the head."""
    ledger.connection.execute(insert(ENTRY).values(ledger.copy_of(LAST, seq=LAST + 1,
                                                                 **values)))
    ledger.rehash_from(LAST + 1)


def _forged_signature(ledger: Ledger) -> None:
    _append_forged(ledger)
    stranger = Ed25519PrivateKey.generate()
    ledger.change(LAST + 1, server_signature=sign_entry(
        stranger, ledger.entry(LAST + 1)["entry_hash"]))


def _strip_server_signatures(ledger: Ledger, first: int = 1) -> None:
    ledger.connection.execute(update(ENTRY).where(
        ENTRY.c.organisation_id == ledger.org_id, ENTRY.c.seq >= first).values(
            server_key_id=None, server_signature=None))


def _everything_unsigned_and_no_checkpoint(ledger: Ledger) -> None:
    _drop_every_checkpoint(ledger)
    _strip_server_signatures(ledger)


@dataclass(frozen=True)
class Tampering:
    """One change made underneath the application, and what `verify` must say about it."""

    name: str
    apply: Callable[[Ledger], object]
    seq: int | None
    says: str


TAMPERINGS = [
    Tampering("a quantity changed", lambda ledger: ledger.change(3, quantity_ug=400_000),
              3, "entry_hash does not match"),
    Tampering("an entry's encrypted details replaced by another entry's",
              lambda ledger: ledger.change(3, details_enc=ledger.entry(2)["details_enc"]),
              3, "entry_hash does not match"),
    Tampering("a middle row deleted", lambda ledger: ledger.remove(5), 5, "seq 5 is missing"),
    Tampering("the last row deleted", lambda ledger: ledger.remove(END), END,
              f"entry seq {END} is missing: a signed checkpoint covers seq {END}"),
    Tampering("the last two rows deleted and the head rewound", _truncate_and_rewind, END - 1,
              f"entry seq {END - 1} is missing: a signed checkpoint covers seq {END}"),
    Tampering("a row past every checkpoint deleted", _delete_past_every_checkpoint, END + 1,
              "the chain head says seq 13"),
    Tampering("two rows' seq swapped", lambda ledger: _swap(ledger, 7, 8), 7,
              "prev_hash does not link"),
    Tampering("an entry before the midway checkpoint rewritten, tail and head re-hashed",
              lambda ledger: _rewrite_receive(ledger, 2), 2, SERVER_MISMATCH),
    Tampering("an entry after the midway checkpoint rewritten, tail and head re-hashed",
              lambda ledger: _rewrite_receive(ledger, END), END, SERVER_MISMATCH),
    Tampering("a device-signed entry's quantity changed, tail re-hashed",
              lambda ledger: _change_signed_entry(ledger, 4), 4, SERVER_MISMATCH),
    Tampering("a device-signed entry changed and unsigned, tail and head re-hashed",
              lambda ledger: _strip_signature(ledger, 7), 7, SERVER_MISMATCH),
    Tampering("the checkpoint rows rewritten without the server key",
              lambda ledger: _forge_checkpoints(ledger, with_key=False), 2, SERVER_MISMATCH),
    Tampering("the checkpoint rows rewritten and re-signed with the server key",
              lambda ledger: _forge_checkpoints(ledger, with_key=True), 2, SERVER_MISMATCH),
    Tampering("the checkpoint rows deleted", _drop_checkpoint_rows, 2, SERVER_MISMATCH),
    Tampering("a balance edited", lambda ledger: ledger.move_balance("vault", "L1", 1), None,
              "balance of vault lot L1 is 835001 µg; the ledger says 835000 µg"),
    # Past the last checkpoint, where only the entries' own signatures vouch for them.
    Tampering("an entry past the last checkpoint changed",
              _past_the_checkpoint(lambda ledger: ledger.change(PAST, quantity_ug=1)),
              PAST, "entry_hash does not match"),
    Tampering("an entry past the last checkpoint changed, tail and head re-hashed",
              _past_the_checkpoint(lambda ledger: _rewrite_receive(ledger, PAST)),
              PAST, SERVER_MISMATCH),
    Tampering("an entry past the last checkpoint deleted, the rest renumbered and re-hashed",
              _past_the_checkpoint(lambda ledger: ledger.excise(PAST)), PAST, SERVER_MISMATCH),
    Tampering("an entry inserted past the last checkpoint, the rest renumbered and re-hashed",
              _past_the_checkpoint(lambda ledger: ledger.slip_in(PAST, quantity_ug=7)),
              PAST, SERVER_MISMATCH),
    Tampering("an unsigned entry appended past the head, and the head moved",
              _past_the_checkpoint(lambda ledger: _append_forged(
                  ledger, server_key_id=None, server_signature=None)),
              LAST + 1, "carries no server signature, though the entries before it do"),
    Tampering("an entry appended past the head, signed by another key under the server's id",
              _past_the_checkpoint(_forged_signature), LAST + 1, SERVER_MISMATCH),
    Tampering("the server signatures past the last checkpoint stripped",
              _past_the_checkpoint(lambda ledger: _strip_server_signatures(ledger, PAST)),
              PAST, "carries no server signature, though the entries before it do"),
    # The checkpoints themselves, and what is left when they are gone.
    Tampering("the checkpoint rows and the export file deleted", _drop_every_checkpoint, 2,
              SERVER_MISMATCH),
    Tampering("every server signature stripped, the checkpoint rows and export file deleted",
              _everything_unsigned_and_no_checkpoint, 1,
              "carries no server signature and no signed checkpoint covers it"),
    Tampering("an entry's signature naming a key the server never had",
              lambda ledger: ledger.change(3, server_key_id="0123456789abcdef"), 3,
              "signed by key 0123456789abcdef, which is not one of this server's keys"),
    Tampering("a checkpoint row's head hash changed", _checkpoint_head_changed, MIDWAY,
              "the checkpoint's signature does not verify"),
    Tampering("a checkpoint row re-signed by a key the server never had",
              _checkpoint_signed_by_a_stranger, MIDWAY,
              "signed by key 0123456789abcdef, which is not one of this server's keys"),
    Tampering("the server's key stolen: entries and checkpoint rows re-signed, not the export",
              _stolen_key_rewrite, MIDWAY, CHECKPOINT_MISMATCH),
    Tampering("the server's key stolen: a nurse's entry changed and the chain re-signed",
              lambda ledger: _change_signed_entry(ledger, 4, ledger.keys), 4,
              "the device signature does not match the entry"),
    Tampering("the server's key stolen: a nurse's waste unsigned and the chain re-signed",
              lambda ledger: _strip_signature(ledger, 7, ledger.keys), 7,
              "the waste entry carries no phone signature"),
]


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[t.name for t in TAMPERINGS])
def test_verify_names_where_the_ledger_was_tampered_with(ledger: Ledger, tampering: Tampering):
    ledger.allow_changes()
    tampering.apply(ledger)
    report = ledger.verify()
    assert not report.ok
    assert report.problem.seq == tampering.seq, report.problem
    assert tampering.says in report.problem.message, report.problem


def test_a_nurse_entry_unsigned_past_the_last_checkpoint_is_caught(ledger: Ledger):
    waste = ledger.pharmacy.post(Role.NURSE, {"kind": "waste", "quantity_ug": 1_000, "witnesses": [
        {"user_id": str(ledger.pharmacy.users[Role.PHARMACIST].id), "password": PASSWORD}]})
    assert waste.status_code == 201, waste.json
    ledger.allow_changes()
    _strip_signature(ledger, END + 1)
    report = ledger.verify()
    assert (report.problem.seq, report.problem.message.startswith(SERVER_MISMATCH)) == (
        END + 1, True), report.problem


def _verified_entries(ledger: Ledger) -> list[dict]:
    report = ledger.verify()
    assert report.ok, report.problem
    return [ledger.entry(seq) for seq in range(1, report.entries + 1)]


def test_every_entry_is_signed_by_the_server_over_its_hash(ledger: Ledger):
    ledger.extend()
    for entry in _verified_entries(ledger):
        assert entry["server_key_id"] == ledger.keys.signing_key_id
        ledger.keys.signing_key.public_key().verify(
            base64.b64decode(entry["server_signature"]),
            b"vigil custody entry " + entry["entry_hash"].encode())
    listed = ledger.pharmacy.client.get("/api/v1/custody/entries",
                                        headers=ledger.pharmacy.as_(Role.COMPLIANCE)).json
    assert {e["server_key_id"] for e in listed} == {ledger.keys.signing_key_id}
    assert all(e["server_signature"] for e in listed)


def _rotate(ledger: Ledger, *, keep_old: bool = True) -> tuple[str, str]:
    """Give the server a new signing key, keeping the old public key unless told not to."""
    rt, old = ledger.pharmacy.world.rt, ledger.keys
    retired = {old.signing_key_id: old.signing_public_key()} if keep_old else {}
    rotated = replace(rt, keys=replace(old, signing_key=Ed25519PrivateKey.generate(),
                                       retired_signing_keys=retired))
    ledger.app.extensions["vigil.runtime"] = ledger.pharmacy.world.rt = rotated
    return old.signing_key_id, rotated.keys.signing_key_id


def test_after_a_key_rotation_the_older_signatures_still_verify(ledger: Ledger):
    old, new = _rotate(ledger)
    ledger.extend()
    ledger.sign()
    report = ledger.verify()
    assert (report.ok, report.entries, report.checkpoints) == (True, LAST, 3), report.problem
    assert [ledger.entry(seq)["server_key_id"] for seq in (1, END, END + 1, LAST)] == [
        old, old, new, new]
    key_ids = ledger.connection.scalars(select(CHECKPOINT.c.key_id).where(
        CHECKPOINT.c.organisation_id == ledger.org_id).order_by(CHECKPOINT.c.seq)).all()
    assert key_ids == [old, old, new]
    exported = exported_checkpoints(ledger.export_dir, ledger.org_id)
    assert [line["key_id"] for line in exported] == [old, old, new]


def test_after_a_key_rotation_a_change_under_the_old_key_is_still_named(ledger: Ledger):
    _rotate(ledger)
    ledger.extend()
    ledger.allow_changes()
    _rewrite_receive(ledger, 2)
    report = ledger.verify()
    assert (report.problem.seq, SERVER_MISMATCH in report.problem.message) == (2, True), \
        report.problem


def test_a_retired_key_dropped_from_the_keyring_fails_what_it_signed(ledger: Ledger):
    old, _new = _rotate(ledger, keep_old=False)
    ledger.extend()
    report = ledger.verify()
    assert report.problem == Problem(
        1, f"the entry is signed by key {old}, which is not one of this server's keys")


def _dose(ledger: Ledger, quantity_ug: int = 35_000) -> dict:
    """Post a signed dose for the pharmacy's visit; return the body the phone signed."""
    pharmacy = ledger.pharmacy
    visit_id = ledger.entry(4)["visit_id"]
    body = {"id": str(uuid.uuid4()), "occurred_at": "2026-11-03T15:55:00+00:00",
            "product_id": pharmacy.product_id, "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": quantity_ug, "route": "IV",
            "infusion_started_at": "2026-11-03T15:10:00-05:00",
            "infusion_ended_at": "2026-11-03T15:50:00-05:00"}
    response = pharmacy.client.post(f"/api/v1/visits/{visit_id}/dose",
                                    headers=pharmacy.as_(Role.NURSE, pharmacy.device_id),
                                    json={**body, "signature": pharmacy.phone.sign(body)})
    assert response.status_code == 201, response.json
    assert response.json["custody_entry_id"] == str(ledger.entry(END + 1)["id"])
    return body


def test_a_dose_binds_its_administer_entry_in_the_phones_signature(ledger: Ledger):
    body = _dose(ledger)
    entry = _verified_entries(ledger)[END]
    assert (entry["kind"], entry["quantity_ug"], entry["device_id"]) == (
        "administer", 35_000, ledger.pharmacy.device_id)
    assert entry["signed_record"] == body
    assert entry["device_signature"] == ledger.pharmacy.phone.sign(body)


def _swap_dose_body(ledger: Ledger) -> None:
    entry = ledger.entry(END + 1)
    ledger.change(END + 1, signed_record={**entry["signed_record"], "quantity_ug": 36_000},
                  quantity_ug=36_000)
    ledger.rehash_from(END + 1, keys=ledger.keys)


def _unbind_dose(ledger: Ledger) -> None:
    ledger.change(END + 1, device_id=None, device_signature=None, signed_record=None)
    ledger.rehash_from(END + 1, keys=ledger.keys)


DOSE_TAMPERINGS = [
    Tampering("the quantity changed", lambda ledger: _change_signed_entry(
        ledger, END + 1, ledger.keys), END + 1,
        "the movement is not the one its signed dose record implies"),
    Tampering("the bag it left swapped for another user's", lambda ledger: (ledger.change(
        END + 1, from_holder=f"bag:{ledger.pharmacy.users[Role.ADMIN].id}"),
        ledger.rehash_from(END + 1, keys=ledger.keys)), END + 1,
        "the movement is not the one its signed dose record implies"),
    Tampering("the signed dose record changed with it", _swap_dose_body, END + 1,
              "the device signature does not match the entry"),
    Tampering("the dose record dropped, the device signature kept",
              lambda ledger: (ledger.change(END + 1, signed_record=None),
                              ledger.rehash_from(END + 1, keys=ledger.keys)), END + 1,
              "the device signature does not match the entry"),
    Tampering("the phone's signature and the dose record removed", _unbind_dose, END + 1,
              "the administer entry carries no phone signature"),
]


@pytest.mark.parametrize("tampering", DOSE_TAMPERINGS, ids=[t.name for t in DOSE_TAMPERINGS])
def test_a_dose_administer_entry_rewritten_with_the_server_key_is_caught(ledger: Ledger,
                                                                        tampering: Tampering):
    _dose(ledger)
    ledger.allow_changes()
    tampering.apply(ledger)
    assert ledger.verify().problem == Problem(tampering.seq, tampering.says)


def _unsigned_before_signing(ledger: Ledger) -> None:
    """Make the stored chain look as it did before migration 0008: no server signatures."""
    ledger.allow_changes()
    _strip_server_signatures(ledger)


def test_entries_from_before_signing_are_vouched_for_by_a_checkpoint(ledger: Ledger):
    _unsigned_before_signing(ledger)
    assert ledger.verify().ok
    ledger.connection.execute(delete(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == ledger.org_id))
    # The export file alone still vouches for them.
    assert ledger.verify().ok
    ledger.extend()
    assert ledger.verify().ok


def test_a_change_before_signing_is_named_at_the_checkpoint_after_it(ledger: Ledger):
    _unsigned_before_signing(ledger)
    _rewrite_receive(ledger, 2)
    report = ledger.verify()
    assert (report.problem.seq, CHECKPOINT_MISMATCH in report.problem.message) == (
        MIDWAY, True), report.problem


def test_entries_from_before_signing_past_the_last_checkpoint_fail(ledger: Ledger):
    ledger.allow_changes()
    ledger.extend()
    _strip_server_signatures(ledger)
    report = ledger.verify()
    assert report.problem.seq == END + 1, report.problem
    assert "no signed checkpoint covers it" in report.problem.message


def _ledger_cli(app: Flask, *args: str):
    return app.test_cli_runner().invoke(cli, ["ledger", *args])


def test_the_verify_command_reports_each_organisation_and_fails_on_a_mismatch(ledger: Ledger):
    clean = Pharmacy(ledger.pharmacy.world)
    assert clean.receive(1_000).status_code == 201
    ok = _ledger_cli(ledger.app, "verify")
    assert ok.exit_code == 0, ok.output
    assert f"{ledger.pharmacy.org.slug}: 12 entries, 2 checkpoints checked, OK" in ok.output
    assert f"{clean.org.slug}: 1 entries, 0 checkpoints checked, OK" in ok.output
    ledger.allow_changes()
    ledger.change(3, quantity_ug=400_000)
    failed = _ledger_cli(ledger.app, "verify")
    assert failed.exit_code == 1
    assert (f"{ledger.pharmacy.org.slug}: FAILED at seq 3: entry_hash does not match"
            in failed.output)
    assert f"{clean.org.slug}: 1 entries, 0 checkpoints checked, OK" in failed.output
    assert "1 organisation(s) failed verification" in failed.output
    only_clean = _ledger_cli(ledger.app, "verify", "--org", clean.org.slug)
    assert only_clean.exit_code == 0, only_clean.output
    assert ledger.pharmacy.org.slug not in only_clean.output


def test_the_verify_command_names_a_balance_mismatch(ledger: Ledger):
    ledger.move_balance("vault", "L1", 1)
    failed = _ledger_cli(ledger.app, "verify", "--org", ledger.pharmacy.org.slug)
    assert failed.exit_code == 1
    assert "FAILED at balances: balance of vault lot L1" in failed.output


def test_the_verify_command_refuses_an_unknown_organisation(app):
    result = _ledger_cli(app, "verify", "--org", "nowhere")
    assert result.exit_code != 0
    assert "nowhere" in result.output


def test_the_checkpoint_command_signs_only_heads_that_moved(ledger: Ledger):
    slug = ledger.pharmacy.org.slug
    unmoved = _ledger_cli(ledger.app, "checkpoint", "--org", slug)
    assert unmoved.exit_code == 0, unmoved.output
    assert "0 checkpoint(s) signed" in unmoved.output
    assert ledger.pharmacy.receive(1_000).status_code == 201
    moved = _ledger_cli(ledger.app, "checkpoint")
    assert moved.exit_code == 0, moved.output
    assert f"{slug}: signed seq 13" in moved.output
    assert "1 checkpoint(s) signed" in moved.output
    exported = (ledger.export_dir / f"{ledger.org_id}.jsonl").read_text().splitlines()
    assert len(exported) == 3
    report = ledger.verify()
    assert (report.ok, report.checkpoints) == (True, 3), report.problem


@pytest.mark.parametrize("statement", [
    lambda org_id: update(ENTRY).where(ENTRY.c.organisation_id == org_id).values(quantity_ug=1),
    lambda org_id: delete(ENTRY).where(ENTRY.c.organisation_id == org_id),
    lambda org_id: update(CHECKPOINT).where(CHECKPOINT.c.organisation_id == org_id).values(
        head_hash="f" * 64),
    lambda org_id: delete(CHECKPOINT).where(CHECKPOINT.c.organisation_id == org_id),
], ids=["update an entry", "delete an entry", "update a checkpoint", "delete a checkpoint"])
def test_the_database_refuses_to_change_a_stored_entry_or_checkpoint(ledger: Ledger, statement):
    with pytest.raises(DBAPIError, match="append_only"), ledger.connection.begin_nested():
        ledger.connection.execute(statement(ledger.org_id))
    assert ledger.verify().ok


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("table", ["custody_entry", "custody_checkpoint"])
def test_postgresql_refuses_to_truncate_the_ledger(ledger: Ledger, table: str):
    with pytest.raises(DBAPIError, match="append_only"), ledger.connection.begin_nested():
        ledger.connection.execute(text(f"TRUNCATE {table} CASCADE"))
    assert ledger.verify().ok


def test_checkpoints_are_signed_every_minute():
    assert {spec.name: spec.seconds for spec in SCHEDULE}["ledger_checkpoint"] == 60


def _entries(pharmacy: Pharmacy) -> list[dict]:
    return pharmacy.client.get("/api/v1/custody/entries",
                               headers=pharmacy.as_(Role.COMPLIANCE)).json


@pytest.mark.parametrize(("role", "body"), [
    (Role.PHARMACIST, {"kind": "receive", "quantity_ug": 7_000, "details": SUPPLIER}),
    (Role.PHARMACIST, {"kind": "loss", "quantity_ug": 7_000, "holder": "vault",
                       "details": {"circumstances": "vial cracked"}}),
    (Role.NURSE, {"kind": "return", "lot": "L2", "quantity_ug": 7_000,
                  "details": {"seal_id": "S-2"}}),
], ids=["receive", "loss", "signed return"])
def test_an_identical_retry_returns_the_stored_entry(ledger: Ledger, role, body):
    pharmacy = ledger.pharmacy
    body = {**body, "id": str(uuid.uuid4())}
    first = pharmacy.post(role, body)
    assert first.status_code == 201, first.json
    retry = pharmacy.post(role, body)
    # The resource answers a retry as it answered the first post.
    assert retry.status_code == 201, retry.json
    assert retry.json == first.json
    assert [e["id"] for e in _entries(pharmacy)].count(body["id"]) == 1
    assert ledger.verify().ok
    reports = pharmacy.world.session.scalar(select(func.count()).select_from(LossReport).where(
        LossReport.organisation_id == ledger.org_id))
    assert reports == (2 if body["kind"] == "loss" else 1)


def test_a_different_entry_under_a_stored_id_is_refused(ledger: Ledger):
    pharmacy = ledger.pharmacy
    body = {"id": str(uuid.uuid4()), "kind": "receive", "quantity_ug": 7_000,
            "details": SUPPLIER}
    assert pharmacy.post(Role.PHARMACIST, body).status_code == 201
    before = _entries(pharmacy)
    changed = pharmacy.post(Role.PHARMACIST, {**body, "quantity_ug": 7_001})
    assert changed.status_code == 409
    assert changed.json["error"]["code"] == "append_only"
    assert changed.json["error"]["details"] == {"id": body["id"]}
    stolen = pharmacy.post(Role.PHARMACIST, {**body, "id": str(_entries(pharmacy)[0]["id"])})
    assert stolen.status_code == 409
    assert stolen.json["error"]["code"] == "append_only"
    assert _entries(pharmacy) == before


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[t.name for t in TAMPERINGS])
def test_a_walk_in_stretches_reports_what_one_walk_does(ledger: Ledger, tampering: Tampering,
                                                        monkeypatch):
    # Stretches of one entry: every boundary falls somewhere a tampering could be.
    monkeypatch.setattr(verifying, "MIN_STRETCH", 1)
    ledger.allow_changes()
    tampering.apply(ledger)
    assert ledger.verify(workers=3) == ledger.verify()


def _recorded(ledger: Ledger) -> tuple[int, str] | None:
    return last_verified(ledger.pharmacy.world.session, ledger.org_id)


def test_a_passing_walk_records_the_last_checkpoint_it_reached(ledger: Ledger):
    assert _recorded(ledger) is None
    report = ledger.verify(record=True)
    assert report.verified_to == (END, ledger.entry(END)["entry_hash"]) == _recorded(ledger)
    ledger.extend()
    ledger.sign()
    again = ledger.verify(incremental=True, record=True)
    assert (again.ok, again.since, again.entries) == (True, END, LAST), again.problem
    assert _recorded(ledger) == (LAST, ledger.entry(LAST)["entry_hash"])


def test_an_incremental_walk_catches_a_change_after_the_last_verified_checkpoint(
        ledger: Ledger):
    ledger.verify(record=True)
    ledger.extend()
    ledger.allow_changes()
    _rewrite_receive(ledger, PAST)
    report = ledger.verify(incremental=True, record=True)
    assert (report.since, report.problem.seq) == (END, PAST), report.problem
    assert SERVER_MISMATCH in report.problem.message
    # A failing walk moves the record nowhere.
    assert _recorded(ledger) == (END, ledger.entry(END)["entry_hash"])


def test_a_change_before_the_last_verified_checkpoint_is_left_to_the_full_walk(ledger: Ledger):
    ledger.verify(record=True)
    ledger.extend()
    ledger.allow_changes()
    ledger.change(3, details_enc=ledger.entry(2)["details_enc"])
    incremental = ledger.verify(incremental=True)
    assert (incremental.ok, incremental.since) == (True, END), incremental.problem
    full = ledger.verify()
    assert full.problem.seq == 3, full.problem
    assert "entry_hash does not match" in full.problem.message


def test_an_incremental_walk_trusts_no_record_its_checkpoint_does_not_bear_out(ledger: Ledger):
    ledger.verify(record=True)
    ledger.allow_changes()
    # A database-only forger rewrote the chain from seq 2 and the record with it.
    hashes = _rewrite_receive(ledger, 2)
    record_verified(ledger.pharmacy.world.session, ledger.pharmacy.world.rt.clock.now(),
                    replace(ledger.verify(), problem=None, verified_to=(END, hashes[END])))
    report = ledger.verify(incremental=True)
    assert (report.since, report.problem.seq) == (0, 2), report.problem
    assert SERVER_MISMATCH in report.problem.message


def test_the_verify_command_walks_from_the_last_verified_checkpoint(ledger: Ledger):
    slug = ledger.pharmacy.org.slug
    full = _ledger_cli(ledger.app, "verify", "--org", slug, "--incremental")
    assert full.exit_code == 0, full.output
    assert f"{slug}: 12 entries, 2 checkpoints checked, OK" in full.output
    ledger.extend()
    incremental = _ledger_cli(ledger.app, "verify", "--org", slug, "--incremental")
    assert incremental.exit_code == 0, incremental.output
    assert (f"{slug}: {LAST} entries, 2 checkpoints, walked from seq {END + 1} checked, OK"
            in incremental.output)
