"""Any sequence of custody operations keeps every balance whole and the chain verifiable."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.accounts.models import Role, User
from backend.auth.caller import Caller, FactorUse
from backend.custody import checkpoints, service
from backend.custody.chain import GENESIS, signed_payload
from backend.custody.ledger import VAULT, InsufficientStock, bag, is_balanced
from backend.custody.models import CustodyBalance, CustodyEntry, CustodyHead, Kind
from backend.custody.verify import verify
from backend.runtime import Runtime
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, Phone, World

DAY1 = "2026-11-03T15:00:00+00:00"
OCCURRED = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)
EXPIRY = date(2028, 1, 31)
NURSES = st.integers(0, 1)
LOTS = st.sampled_from(["L1", "L2"])
RECEIVED = st.integers(1, 1_000_000)
# A withdrawal picks one of the stocked (holder, lot) pairs it may draw on ...
PICKS = st.integers(0, 7)
# ... and takes this percentage of it: above 100, an overdraft.
SHARES = st.integers(1, 125)
# What each kind does to the stock the organisation holds (vault and bags together).
NET = {Kind.RECEIVE: 1, Kind.ADMINISTER: -1, Kind.WASTE: -1, Kind.DESTROY: -1, Kind.LOSS: -1}


@dataclass(frozen=True)
class Nurse:
    """A nurse as the service sees her, with her phone and her visit to her patient."""

    caller: Caller
    phone: Phone
    patient_id: uuid.UUID
    visit_id: uuid.UUID

    @property
    def bag(self) -> str:
        """Return her bag's holder name."""
        return bag(self.caller.user_id)


@dataclass(frozen=True)
class Stage:
    """An organisation with a pharmacist, two nurses with phones and visits, and witnesses."""

    connection: Connection
    rt: Runtime
    organisation_id: uuid.UUID
    product_id: uuid.UUID
    pharmacist: Caller
    nurses: tuple[Nurse, Nurse]
    witnesses: tuple[uuid.UUID, uuid.UUID]
    # The app's session factory: its sessions carry the PHI cipher the ledger's details need.
    sessions: sessionmaker[Session]


def _caller(user: User, device_id: uuid.UUID | None = None) -> Caller:
    return Caller(user.id, user.organisation_id, user.role, None, device_id, None)


def _nurse(pharmacy: Pharmacy, user: User, device_id: uuid.UUID, phone: Phone,
           patient_id: str) -> Nurse:
    visit = pharmacy.client.post("/api/v1/visits", headers=pharmacy.as_(Role.ADMIN), json={
        "patient_id": patient_id, "nurse_id": str(user.id), "scheduled_start": DAY1})
    assert visit.status_code == 201, visit.json
    return Nurse(_caller(user, device_id), phone, uuid.UUID(patient_id),
                 uuid.UUID(visit.json["id"]))


@pytest.fixture
def stage(world: World, connection) -> Stage:
    """Return a pharmacy with two nurses, each with a phone, a patient and a visit."""
    pharmacy = Pharmacy(world)
    pharmacy.plan()
    other = world.user(pharmacy.org, Role.NURSE)
    other_device, other_phone = world.device(pharmacy.org, other)
    other_patient = pharmacy.patient([other])
    pharmacy.plan(patient_id=other_patient)
    nurses = (_nurse(pharmacy, pharmacy.nurse, pharmacy.device_id, pharmacy.phone,
                     pharmacy.patient_id),
              _nurse(pharmacy, other, other_device, other_phone, other_patient))
    return Stage(connection, world.rt, pharmacy.org.id, uuid.UUID(pharmacy.product_id),
                 replace(_caller(pharmacy.users[Role.PHARMACIST]),
                         factor=FactorUse("totp", None, world.rt.clock.now())), nurses,
                 (pharmacy.users[Role.ADMIN].id, pharmacy.users[Role.COMPLIANCE].id),
                 world.app.extensions["vigil.db"].sessions)


def _state(session: Session, organisation_id: uuid.UUID) -> tuple:
    """Return the head, the balances and the number of entries, read from the database."""
    head = session.execute(select(CustodyHead.seq, CustodyHead.head_hash).where(
        CustodyHead.organisation_id == organisation_id)).one_or_none()
    balances = session.execute(select(
        CustodyBalance.holder, CustodyBalance.lot, CustodyBalance.quantity_ug).where(
            CustodyBalance.organisation_id == organisation_id)).all()
    entries = session.scalar(select(func.count()).select_from(CustodyEntry).where(
        CustodyEntry.organisation_id == organisation_id))
    # A refused first movement may leave a genesis head behind: the same empty chain.
    return (tuple(head or (0, GENESIS)), {(h, lot): q for h, lot, q in balances if q}, entries)


def _stock_by_ledger(session: Session, organisation_id: uuid.UUID) -> int:
    """Return received − administered − wasted − destroyed − lost ± adjusted, from the entries."""
    total = 0
    for kind, from_holder, quantity in session.execute(select(
            CustodyEntry.kind, CustodyEntry.from_holder, CustodyEntry.quantity_ug).where(
            CustodyEntry.organisation_id == organisation_id)):
        if kind == Kind.ADJUST:
            total += quantity if from_holder == "count" else -quantity
        else:
            total += NET.get(kind, 0) * quantity
    return total


def machine_for(stage: Stage) -> type[RuleBasedStateMachine]:
    """Return a state machine that posts custody entries through the service on `stage`."""

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.example = stage.connection.begin_nested()
            self.session = stage.sessions(bind=stage.connection, expire_on_commit=False)
            self.export_dir = tempfile.TemporaryDirectory(prefix="vigil-checkpoints-")
            self.held: Counter[tuple[str, str]] = Counter()
            # What each kit still holds, by (bag, lot) and seal: a return is matched per kit.
            self.kits: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
            self.seq = 0
            self.bags = {nurse.bag: nurse for nurse in stage.nurses}

        def request(self, kind: Kind, lot: str, quantity_ug: int,
                    **fields) -> service.EntryRequest:
            return service.EntryRequest(kind=kind, product_id=stage.product_id, lot=lot,
                                        expiry=EXPIRY, quantity_ug=quantity_ug,
                                        occurred_at=OCCURRED, id=uuid.uuid4(), **fields)

        def stocked(self, holders: list[str], sealed: bool = False) -> list[tuple[str, str]]:
            """Return the (holder, lot) pairs of `holders` that hold stock, sealed kits only."""
            return sorted(key for key, held in self.held.items() if held > 0
                          and key[0] in holders and (+self.kits[key] or not sealed))

        def take(self, holders: list[str], pick: int, share: int,
                 sealed: bool = False) -> tuple[str, str, int]:
            """Return a holder, lot and amount to withdraw; 1 µg of an empty one if none holds."""
            stocked = self.stocked(holders, sealed)
            holder, lot = stocked[pick % len(stocked)] if stocked else (
                holders[pick % len(holders)], "L1")
            return holder, lot, max(1, self.held[holder, lot] * share // 100)

        def signed(self, nurse: Nurse, request: service.EntryRequest,
                   to_holder: str) -> service.EntryRequest:
            payload = signed_payload({**vars(request), "from_holder": nurse.bag,
                                      "to_holder": to_holder})
            return replace(request, signature=nurse.phone.sign(payload))

        def post(self, caller: Caller, request: service.EntryRequest, source: str,
                 target: str) -> bool:
            """Record the entry, or check that an overdraft is refused and changes nothing."""
            if is_balanced(source) and request.quantity_ug > self.held[source, request.lot]:
                before = _state(self.session, stage.organisation_id)
                with pytest.raises(InsufficientStock):
                    service.record(self.session, stage.rt, caller, request)
                assert _state(self.session, stage.organisation_id) == before
                event(f"{request.kind}: overdraft refused")
                return False
            entry = service.record(self.session, stage.rt, caller, request)
            event(f"{request.kind}: recorded")
            self.seq += 1
            assert (entry.seq, entry.from_holder, entry.to_holder) == (self.seq, source, target)
            for holder, sign in ((source, -1), (target, 1)):
                if is_balanced(holder):
                    self.held[holder, request.lot] += sign * request.quantity_ug
            return True

        @rule(lot=LOTS, quantity=RECEIVED)
        def receive(self, lot, quantity):
            self.post(stage.pharmacist, self.request(Kind.RECEIVE, lot, quantity,
                                                     details=SUPPLIER), "supplier", VAULT)

        @precondition(lambda self: self.stocked([VAULT]))
        @rule(pick=PICKS, share=SHARES, n=NURSES)
        def dispense(self, pick, share, n):
            nurse, seal = stage.nurses[n], f"S-{uuid.uuid4().hex[:8]}"
            _, lot, quantity = self.take([VAULT], pick, share)
            request = self.request(Kind.DISPENSE, lot, quantity, nurse_id=nurse.caller.user_id,
                                   details={"seal_id": seal})
            if self.post(stage.pharmacist, request, VAULT, nurse.bag):
                self.kits[nurse.bag, lot][seal] += quantity

        @precondition(lambda self: self.stocked(list(self.bags)))
        @rule(pick=PICKS, share=SHARES)
        def transfer(self, pick, share):
            holder, lot, quantity = self.take(list(self.bags), pick, share)
            nurse = self.bags[holder]
            other = next(other for other in stage.nurses if other is not nurse)
            request = self.request(Kind.TRANSFER, lot, quantity, nurse_id=other.caller.user_id)
            self.post(nurse.caller, self.signed(nurse, request, other.bag), nurse.bag, other.bag)

        @precondition(lambda self: self.stocked(list(self.bags)))
        @rule(pick=PICKS, share=SHARES)
        def administer(self, pick, share):
            holder, lot, quantity = self.take(list(self.bags), pick, share)
            nurse = self.bags[holder]
            patient = f"patient:{nurse.patient_id}"
            request = self.request(Kind.ADMINISTER, lot, quantity, patient_id=nurse.patient_id,
                                   visit_id=nurse.visit_id)
            self.post(nurse.caller, self.signed(nurse, request, patient), nurse.bag, patient)

        @precondition(lambda self: self.stocked(list(self.bags)))
        @rule(pick=PICKS, share=SHARES)
        def waste(self, pick, share):
            holder, lot, quantity = self.take(list(self.bags), pick, share)
            nurse = self.bags[holder]
            witness = service.Witness(stage.pharmacist.user_id, password=PASSWORD)
            request = self.request(Kind.WASTE, lot, quantity, witnesses=[witness])
            self.post(nurse.caller, self.signed(nurse, request, "waste"), nurse.bag, "waste")

        @precondition(lambda self: self.stocked(list(self.bags), sealed=True))
        @rule(pick=PICKS, share=SHARES)
        def return_kit(self, pick, share):
            holder, lot, quantity = self.take(list(self.bags), pick, share, sealed=True)
            nurse, kits = self.bags[holder], +self.kits[holder, lot]
            seal = sorted(kits)[pick % len(kits)]
            quantity = min(quantity, kits[seal])
            request = self.request(Kind.RETURN, lot, quantity, details={"seal_id": seal})
            if self.post(nurse.caller, self.signed(nurse, request, VAULT), holder, VAULT):
                self.kits[holder, lot][seal] -= quantity

        @precondition(lambda self: self.stocked(list(self.bags)))
        @rule(pick=PICKS, share=SHARES)
        def return_under_another_seal(self, pick, share):
            holder, lot, quantity = self.take(list(self.bags), pick, share)
            nurse = self.bags[holder]
            request = self.signed(nurse, self.request(Kind.RETURN, lot, quantity, details={
                "seal_id": "S-forged"}), VAULT)
            before = _state(self.session, stage.organisation_id)
            with pytest.raises(service.SealMismatch):
                service.record(self.session, stage.rt, nurse.caller, request)
            assert _state(self.session, stage.organisation_id) == before
            event("return: seal mismatch refused")

        @rule(pick=PICKS, share=SHARES, lot=LOTS, up=st.booleans())
        def adjust(self, pick, share, lot, up):
            holders = [VAULT, *self.bags]
            if up:
                holder, quantity = holders[pick % len(holders)], share * 1_000
            else:
                holder, lot, quantity = self.take(holders, pick, share)
            request = self.request(Kind.ADJUST, lot, quantity, holder=holder, details={
                "reason": "count", "direction": "up" if up else "down"})
            self.post(stage.pharmacist, request, *(("count", holder) if up else (holder, "count")))

        @precondition(lambda self: self.stocked([VAULT, *self.bags]))
        @rule(pick=PICKS, share=SHARES, by_nurse=st.booleans())
        def loss(self, pick, share, by_nurse):
            holder, lot, quantity = self.take([VAULT, *self.bags], pick, share)
            details = {"circumstances": "kit stolen"}
            if by_nurse and holder in self.bags:
                request = self.request(Kind.LOSS, lot, quantity, details=details)
                self.post(self.bags[holder].caller, request, holder, "loss")
            else:
                request = self.request(Kind.LOSS, lot, quantity, holder=holder, details=details)
                self.post(stage.pharmacist, request, holder, "loss")

        @precondition(lambda self: self.stocked([VAULT]))
        @rule(pick=PICKS, share=SHARES)
        def destroy(self, pick, share):
            _, lot, quantity = self.take([VAULT], pick, share)
            witnesses = [service.Witness(user_id, password=PASSWORD)
                         for user_id in stage.witnesses]
            request = self.request(Kind.DESTROY, lot, quantity, witnesses=witnesses,
                                   details={"method": "reverse distributor"})
            self.post(stage.pharmacist, request, VAULT, "destruction")

        @rule()
        def checkpoint(self):
            signed = checkpoints.sign_head(self.session, stage.rt, stage.organisation_id,
                                           Path(self.export_dir.name))
            assert signed is None or (signed.seq, signed.head_hash) == _state(
                self.session, stage.organisation_id)[0]

        @invariant()
        def balances_match_the_ledger(self):
            _, balances, entries = _state(self.session, stage.organisation_id)
            assert entries == self.seq
            assert all(quantity > 0 for quantity in balances.values()), balances
            assert balances == {key: q for key, q in self.held.items() if q}
            assert sum(balances.values()) == _stock_by_ledger(self.session,
                                                              stage.organisation_id)

        def teardown(self):
            try:
                # A fresh session: verify reads what is stored, not what this one cached.
                with stage.sessions(bind=stage.connection) as reader:
                    report = verify(reader, stage.organisation_id,
                                    stage.rt.keys.verifying_keys(),
                                    Path(self.export_dir.name))
                assert report.ok, report.problem
                assert report.entries == self.seq
            finally:
                self.session.close()
                self.example.rollback()
                self.export_dir.cleanup()

    return LedgerMachine


def test_custody_operations_keep_balances_whole_and_the_chain_verifiable(stage: Stage):
    run_state_machine_as_test(machine_for(stage), settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
