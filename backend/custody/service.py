"""Record custody movements by kind, with the roles, witnesses, seals and signatures each needs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import changes
from backend.accounts.models import Role, User
from backend.accounts.service import dea_number_problem, organisation_zone
from backend.audit import service as audit
from backend.auth import limiter
from backend.auth.caller import Caller
from backend.custody import vault
from backend.custody.chain import plain_value
from backend.custody.deadlines import add_business_days
from backend.custody.forms import LOSS_TYPES, UNDETERMINED
from backend.custody.ledger import (
    VAULT,
    Attestation,
    InsufficientStock,
    Movement,
    append,
    bag,
    existing,
    lock_head,
)
from backend.custody.models import (
    CustodyBalance,
    CustodyCheckpoint,
    CustodyEntry,
    CustodyHead,
    CustodyRefusal,
    Kind,
    LossReport,
)
from backend.devices.signatures import verify_device_signature
from backend.errors import Forbidden, InvalidField, NotFound, SignatureInvalid, VigilError
from backend.mfa.policy import Action, require_fresh
from backend.policy.service import policy_for
from backend.products import service as products
from backend.runtime import Runtime
from backend.tenancy import hers, of_organisation, owned
from backend.visits.models import Visit
from safeguards import facts as f

PHARMACY = (Role.PHARMACIST,)
# Who may post each kind, and whether it must come signed from the poster's phone.
POSTERS: dict[Kind, tuple[tuple[Role, ...], bool]] = {
    Kind.RECEIVE: (PHARMACY, False), Kind.DISPENSE: (PHARMACY, False),
    Kind.ADJUST: (PHARMACY, False), Kind.DESTROY: (PHARMACY, False),
    Kind.ADMINISTER: ((Role.NURSE,), True), Kind.WASTE: ((Role.NURSE,), True),
    Kind.TRANSFER: ((Role.NURSE,), True), Kind.RETURN: ((Role.NURSE, Role.PHARMACIST), True),
    Kind.LOSS: ((Role.NURSE, Role.PHARMACIST), False),
}
WITNESSES = {Kind.WASTE: 1, Kind.DESTROY: 2}
# The kinds that write stock off or correct the ledger: a desk caller needs a fresh second
# factor for them (a stolen password must not destroy or write off a vault's stock).
STEP_UP = {Kind.DESTROY: Action.DESTROY, Kind.ADJUST: Action.ADJUST,
           Kind.LOSS: Action.REPORT_LOSS}


class WitnessRequired(VigilError):
    """A waste or destruction lacks the witnesses it needs, or one did not confirm."""

    status = 422
    code = "witness_required"


class SealMismatch(VigilError):
    """A return's seal is not that of a kit of its lot still out in the bag, holding as much."""

    status = 409
    code = "seal_mismatch"


# The refusals the rules see: a write stopped for its seal, its stock or its witnesses.
REFUSALS = (SealMismatch, InsufficientStock, WitnessRequired)


@dataclass(frozen=True)
class Witness:
    """A witness's confirmation: a signature from their phone, or their password."""

    user_id: uuid.UUID
    device_id: uuid.UUID | None = None
    signature: str | None = None
    password: str | None = None
    # When the witness's phone confirmed, by its clock; her signature covers it.
    attested_at: datetime | None = None

    @property
    def by_signature(self) -> bool:
        """Tell whether the witness confirms with their phone's signature."""
        return bool(self.device_id and self.signature)


@dataclass(frozen=True)
class EntryRequest:
    """A custody entry as posted; the kind decides which fields matter."""

    kind: Kind
    product_id: uuid.UUID
    lot: str
    expiry: date
    quantity_ug: int
    occurred_at: datetime
    id: uuid.UUID | None = None
    nurse_id: uuid.UUID | None = None
    holder: str | None = None
    patient_id: uuid.UUID | None = None
    visit_id: uuid.UUID | None = None
    corrects_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)
    witnesses: list[Witness] = field(default_factory=list)
    signature: str | None = None


def _require(request: EntryRequest, *names: str) -> None:
    for name in names:
        if not request.details.get(name):
            raise InvalidField(f"details.{name}", f"required for a {request.kind} entry")


def _nurse(session: Session, caller: Caller, nurse_id: uuid.UUID | None, name: str) -> User:
    nurse = of_organisation(session, User, nurse_id, caller.organisation_id)
    if not nurse or nurse.role != Role.NURSE or not nurse.active:
        raise InvalidField(name, "must be an active nurse of this organisation")
    return nurse


def _holders(session: Session, caller: Caller, request: EntryRequest) -> tuple[str, str]:
    """Return (from, to) for the request's kind, checking the kind's own fields."""
    kind = request.kind
    if kind == Kind.RECEIVE:
        _require(request, "supplier_name", "supplier_address", "supplier_dea", "invoice")
        if problem := dea_number_problem(str(request.details["supplier_dea"]).upper()):
            raise InvalidField("details.supplier_dea", problem)
        return "supplier", VAULT
    if kind == Kind.DISPENSE:
        _require(request, "seal_id")
        return VAULT, bag(_nurse(session, caller, request.nurse_id, "nurse_id").id)
    if kind == Kind.TRANSFER:
        receiver = _nurse(session, caller, request.nurse_id, "nurse_id")
        if receiver.id == caller.user_id:
            raise InvalidField("nurse_id", "a transfer goes to another nurse")
        return bag(caller.user_id), bag(receiver.id)
    if kind == Kind.ADMINISTER:
        visit = of_organisation(session, Visit, request.visit_id, caller.organisation_id)
        if (not visit or visit.nurse_id != caller.user_id
                or visit.patient_id != request.patient_id):
            raise InvalidField("visit_id", "must be the caller's visit to this patient")
        return bag(caller.user_id), f"patient:{visit.patient_id}"
    if kind == Kind.WASTE:
        if request.visit_id is not None:
            # Only nurses post waste (POSTERS): a nurse has her own visits only.
            owned(session, caller, Visit, request.visit_id, what="visit",
                  nurse_sees=hers("nurse_id"))
        return bag(caller.user_id), "waste"
    if kind == Kind.RETURN:
        nurse_id = caller.user_id if caller.role == Role.NURSE else request.nurse_id
        return bag(_nurse(session, caller, nurse_id, "nurse_id").id), VAULT
    if kind == Kind.ADJUST:
        _require(request, "reason", "direction")
        if request.details["direction"] not in ("up", "down"):
            raise InvalidField("details.direction", "up (found more) or down (found less)")
        holder = _counted_holder(session, caller, request.holder)
        return ("count", holder) if request.details["direction"] == "up" else (holder, "count")
    if kind == Kind.LOSS:
        _require(request, "circumstances")
        if request.details.get("loss_type", UNDETERMINED) not in LOSS_TYPES:
            raise InvalidField("details.loss_type", f"one of {', '.join(LOSS_TYPES)}")
        holder = (bag(caller.user_id) if caller.role == Role.NURSE
                  else _counted_holder(session, caller, request.holder))
        return holder, "loss"
    _require(request, "method")
    return VAULT, "destruction"


def _counted_holder(session: Session, caller: Caller, holder: str | None) -> str:
    if holder == VAULT:
        return VAULT
    if holder and holder.startswith("bag:"):
        try:
            return bag(_nurse(session, caller, uuid.UUID(holder[4:]), "holder").id)
        except ValueError:
            pass
    raise InvalidField("holder", "`vault` or `bag:<nurse id>`")


def _open_kits(session: Session, caller: Caller, movement: Movement) -> dict[str, int]:
    """Return what each kit of the movement's lot still holds in its bag, by seal, oldest first.

    A kit is the stock dispensed to a bag under one seal: it holds what went out under that
    seal less what came back under it. Administered, wasted, transferred or lost stock names
    no kit, so no kit is charged with it; the bag's balance of the lot caps every return.
    """
    bag_holder = movement.from_holder
    kit_entries = session.scalars(select(CustodyEntry).where(
        CustodyEntry.organisation_id == caller.organisation_id,
        CustodyEntry.product_id == movement.product_id, CustodyEntry.lot == movement.lot,
        ((CustodyEntry.kind == Kind.DISPENSE) & (CustodyEntry.to_holder == bag_holder))
        | ((CustodyEntry.kind == Kind.RETURN) & (CustodyEntry.from_holder == bag_holder)))
        .order_by(CustodyEntry.seq))
    held: dict[str, int] = {}
    for entry in kit_entries:
        seal = entry.details.get("seal_id")
        sign = 1 if entry.kind == Kind.DISPENSE else -1
        held[seal] = held.get(seal, 0) + sign * entry.quantity_ug
    return {seal: held_ug for seal, held_ug in held.items() if held_ug > 0}


def _check_seal(session: Session, caller: Caller, movement: Movement) -> None:
    open_kits = _open_kits(session, caller, movement)
    presented = movement.details.get("seal_id")
    details = {"expected": list(open_kits), "presented": presented}
    if presented not in open_kits:
        raise SealMismatch("The kit's seal does not match the seal of a kit of this lot still "
                           "out in the bag.", details)
    if movement.quantity_ug > open_kits[presented]:
        raise SealMismatch(f"The kit sealed {presented} holds {open_kits[presented]} µg of this "
                           "lot: the seal does not match the rest.",
                           {**details, "held_ug": open_kits[presented]})


def _confirm(session: Session, rt: Runtime, caller: Caller, movement: Movement,
             witnesses: list[Witness], needed: int) -> list[dict[str, Any]]:
    ids = {w.user_id for w in witnesses}
    if len(witnesses) < needed or len(ids) < len(witnesses) or caller.user_id in ids:
        raise WitnessRequired(f"A {movement.kind} needs {needed} witness(es), each another "
                              "user of the organisation, who confirm it themselves.")
    users = [_witness(session, caller, w) for w in witnesses]
    # Every password's counters at once, in the limiter's one order: no two checks deadlock.
    limiter.guard(session, rt, [limiter.Attempt.of(session, user, caller.address)
                                for user, w in zip(users, witnesses, strict=True)
                                if w.password and not w.by_signature])
    return [_confirmation(session, rt, caller, movement, w, user)
            for w, user in zip(witnesses, users, strict=True)]


def _witness(session: Session, caller: Caller, witness: Witness) -> User:
    user = of_organisation(session, User, witness.user_id, caller.organisation_id)
    if not user or not user.active:
        raise WitnessRequired("A witness must be an active user of this organisation.")
    return user


def _confirmation(session: Session, rt: Runtime, caller: Caller, movement: Movement,
                  witness: Witness, user: User) -> dict[str, Any]:
    if witness.by_signature:
        attested = ({"attested_at": plain_value(witness.attested_at)}
                    if witness.attested_at is not None else {})
        try:
            verify_device_signature(session, organisation_id=caller.organisation_id,
                                    user_id=user.id, device_id=witness.device_id,
                                    payload={**movement.signed(), **attested},
                                    signature_b64=witness.signature)
        except SignatureInvalid as exc:
            raise WitnessRequired(f"The witness's signature failed: {exc.message}") from exc
        return {"user_id": str(user.id), "method": "device_signature",
                "device_id": str(witness.device_id), "signature": witness.signature, **attested}
    if witness.attested_at is not None:
        raise WitnessRequired("A witness's time is signed by her phone; a password has none.")
    if not witness.password:
        raise WitnessRequired("A witness confirms with their phone's signature or their password.")
    # A witness's password is a login's: limited, counted and audited alike (never the value).
    failed = partial(audit.record, now=rt.clock.now(), caller=caller,
                     action="custody.witness_failed", object_type="user", object_id=user.id,
                     detail={"kind": str(movement.kind), "entry_id": str(movement.id)})
    if not limiter.verify(session, rt, limiter.Attempt.of(session, user, caller.address),
                          user.password_hash, witness.password, audit=failed):
        raise WitnessRequired("The witness's password did not confirm the entry.")
    return {"user_id": str(user.id), "method": "password"}


def _attest(session: Session, caller: Caller, movement: Movement, request: EntryRequest,
            signed: bool) -> Attestation:
    # A pharmacist takes a return at the counter, not from a phone.
    if not signed or caller.role == Role.PHARMACIST:
        return Attestation(actor_id=caller.user_id)
    if caller.device_id is None or not request.signature:
        raise SignatureInvalid("This entry must be signed by the nurse's registered phone.",
                               {"reason": "unsigned"})
    verify_device_signature(session, organisation_id=caller.organisation_id,
                            user_id=caller.user_id, device_id=caller.device_id,
                            payload=movement.signed(), signature_b64=request.signature)
    return Attestation(caller.user_id, caller.device_id, request.signature)


def record(session: Session, rt: Runtime, caller: Caller, request: EntryRequest) -> CustodyEntry:
    """Record one custody entry after checking role, fields, stock, seal, witnesses, signature."""
    roles, signed = POSTERS[request.kind]
    if caller.role not in roles:
        raise Forbidden(f"The {caller.role} role may not post a {request.kind} entry.",
                        {"kind": request.kind, "allowed": sorted(roles)})
    # A desk caller's only: a nurse's entries (her loss as her waste) come from her phone,
    # often long after she signed in, and must never be lost to an expired window. Asked
    # before any witness's password is checked, so a refusal counts no guess.
    if request.kind in STEP_UP and caller.role != Role.NURSE:
        require_fresh(session, rt, caller, STEP_UP[request.kind])
    product = products.get(session, caller, request.product_id)
    now = rt.clock.now()
    if request.expiry < now.astimezone(organisation_zone(session, caller.organisation_id)).date() \
            and request.kind in (Kind.RECEIVE, Kind.DISPENSE):
        raise InvalidField("expiry", "the lot has expired")
    from_holder, to_holder = _holders(session, caller, request)
    if request.corrects_id is not None:
        get_entry(session, caller, request.corrects_id)
    movement = Movement(id=request.id or uuid.uuid4(), kind=request.kind, product_id=product.id,
                        lot=request.lot, expiry=request.expiry, quantity_ug=request.quantity_ug,
                        from_holder=from_holder, to_holder=to_holder,
                        occurred_at=request.occurred_at, details=request.details,
                        visit_id=request.visit_id, corrects_id=request.corrects_id)
    attestation = _attest(session, caller, movement, request, signed)
    try:
        entry, stored = _checked_append(session, rt, caller, request, movement, attestation,
                                        now)
    except REFUSALS as refused:
        # Refused and rolled back, yet a fact the rules must see: kept after the rollback.
        _keep_refusal(session, caller, movement, refused.code, now)
        raise
    if stored:
        # A retry: its loss report and audit event were written the first time.
        return entry
    if request.kind == Kind.LOSS:
        _open_loss_report(session, rt, caller, entry)
    # The DEA records name the factor a destruction, adjustment or loss was recorded with.
    factor = ({"factor": caller.factor.method}
              if request.kind in STEP_UP and caller.role != Role.NURSE else {})
    audit.record(session, now, caller, f"custody.{request.kind}", "custody_entry", entry.id,
                 detail={"seq": entry.seq, **factor})
    if request.kind in vault.NOTED:
        # The pharmacy rules weigh a receipt against its invoice, an adjustment against its
        # lot's receipts and count: judged with this write.
        vault.note(session, caller.organisation_id, entry, caller.role)
    if request.kind == Kind.WASTE and request.visit_id is not None:
        # The waste rules weigh it against the visit's dose: judged with this write.
        changes.patient(session, caller.organisation_id,
                        session.get(Visit, request.visit_id).patient_id)
    return entry


def _checked_append(session: Session, rt: Runtime, caller: Caller, request: EntryRequest,
                    movement: Movement, attestation: Attestation,
                    now: datetime) -> tuple[CustodyEntry, bool]:
    """Confirm the witnesses, the seal and the stock, and append; tell whether it was stored."""
    if needed := WITNESSES.get(request.kind):
        attestation = replace(attestation, confirmations=_confirm(
            session, rt, caller, movement, request.witnesses, needed))
    # Under the chain head's lock, a retry racing the first post of this id finds it stored.
    lock_head(session, caller.organisation_id)
    if (stored := existing(session, caller.organisation_id, movement)) is not None:
        return stored, True
    if request.kind == Kind.RETURN:
        # Under the lock, and after a retry is recognised: two returns racing for one kit
        # cannot both take what it holds, and a retry is not refused by its own first post.
        _check_seal(session, caller, movement)
    return append(session, caller.organisation_id, movement, attestation, now,
                  keys=rt.keys), False


def _refused_nurse(caller: Caller, movement: Movement) -> uuid.UUID | None:
    """Return the nurse a refused write concerns: the bag's, else the poster if a nurse."""
    for holder in (movement.from_holder, movement.to_holder):
        if holder.startswith("bag:"):
            return uuid.UUID(holder.removeprefix("bag:"))
    return caller.user_id if caller.role == Role.NURSE else None


def _keep_refusal(session: Session, caller: Caller, movement: Movement, code: str,
                  now: datetime) -> None:
    """Have the unit keep the refusal as a fact, after its rollback, and judge her again."""
    nurse_id = _refused_nurse(caller, movement)
    fields = {"organisation_id": caller.organisation_id, "at": now, "actor_id": caller.user_id,
              "device_id": caller.device_id, "nurse_id": nurse_id, "kind": str(movement.kind),
              "code": code, "holder": movement.from_holder, "product_id": movement.product_id,
              "lot": movement.lot, "quantity_ug": movement.quantity_ug}

    def write(kept: Session) -> None:
        # A visit named by a refused write may be anything the caller sent: kept only if real.
        visit = of_organisation(kept, Visit, movement.visit_id, caller.organisation_id)
        kept.add(CustodyRefusal(**fields, visit_id=visit.id if visit else None))
        kept.flush()
        if nurse_id is None:
            return
        # Her refusals are judged as they come, over the policy's window and nothing else:
        # a refusal must not re-judge (and touch) the rest of her record.
        days = int(policy_for(kept, caller.organisation_id).value("refusals_window_days"))
        changes.facts(kept, caller.organisation_id, refusals=tuple(refusal_facts(
            kept, caller.organisation_id, now - timedelta(days=days), now, nurse_id)))

    changes.keep(session, write)


def refusal_facts(session: Session, organisation_id: uuid.UUID, since: datetime,
                  until: datetime, nurse_id: uuid.UUID | None = None) -> list[f.CustodyRefusal]:
    """Return the refused custody writes from `since` to `until` (of one nurse) as the rules
    see them: those that concern a nurse."""
    query = select(CustodyRefusal).where(
        CustodyRefusal.organisation_id == organisation_id, CustodyRefusal.nurse_id.is_not(None),
        CustodyRefusal.at >= since, CustodyRefusal.at <= until)
    if nurse_id is not None:
        query = query.where(CustodyRefusal.nurse_id == nurse_id)
    return [f.CustodyRefusal(id=str(row.id), nurse_id=str(row.nurse_id), at=row.at,
                             kind=row.kind, code=row.code, actor_id=str(row.actor_id),
                             device_id=_text(row.device_id), holder=row.holder, lot=row.lot,
                             visit_id=_text(row.visit_id), quantity_ug=row.quantity_ug)
            for row in session.scalars(query.order_by(CustodyRefusal.at))]


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _open_loss_report(session: Session, rt: Runtime, caller: Caller,
                      entry: CustodyEntry) -> LossReport:
    policy = policy_for(session, caller.organisation_id)
    # Deadlines run in the organisation's own days, so weekends and holidays are its own.
    discovered = entry.received_at.astimezone(organisation_zone(session, caller.organisation_id))
    report = LossReport(
        organisation_id=caller.organisation_id, entry_id=entry.id, discovered_at=discovered,
        notice_due_at=add_business_days(discovered,
                                        int(policy.value("loss_notice_business_days"))),
        form_106_due_at=discovered + timedelta(days=int(policy.value("form_106_days"))),
        circumstances=entry.details["circumstances"],
        loss_type=entry.details.get("loss_type", UNDETERMINED))
    session.add(report)
    session.flush()
    # The investigation starts now; the deadlines are watched by the loss_deadlines job.
    changes.loss(session, caller.organisation_id, report.id)
    return report


def get_entry(session: Session, caller: Caller, entry_id: uuid.UUID) -> CustodyEntry:
    """Return one of the organisation's entries (a nurse: those of her bag)."""
    return owned(session, caller, CustodyEntry, entry_id, what="custody entry",
                 nurse_sees=_in_her_bag)


def _in_her_bag(session: Session, caller: Caller, entry: CustodyEntry) -> bool:
    return bag(caller.user_id) in (entry.from_holder, entry.to_holder)


@dataclass(frozen=True)
class EntryFilter:
    """Filters for listing entries."""

    holder: str | None = None
    lot: str | None = None
    kind: Kind | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 500
    after_seq: int = 0


def _nurse_holder(caller: Caller, holder: str | None) -> str | None:
    if caller.role != Role.NURSE:
        return holder
    if holder not in (None, bag(caller.user_id)):
        raise NotFound("A nurse sees only her own bag.")
    return bag(caller.user_id)


def entries(session: Session, caller: Caller, where: EntryFilter) -> list[CustodyEntry]:
    """Return the organisation's entries in chain order (a nurse: those of her bag)."""
    query = select(CustodyEntry).where(CustodyEntry.organisation_id == caller.organisation_id,
                                       CustodyEntry.seq > where.after_seq)
    if holder := _nurse_holder(caller, where.holder):
        query = query.where((CustodyEntry.from_holder == holder)
                            | (CustodyEntry.to_holder == holder))
    if where.lot:
        query = query.where(CustodyEntry.lot == where.lot)
    if where.kind:
        query = query.where(CustodyEntry.kind == where.kind)
    if where.since:
        query = query.where(CustodyEntry.occurred_at >= where.since)
    if where.until:
        query = query.where(CustodyEntry.occurred_at < where.until)
    return list(session.scalars(query.order_by(CustodyEntry.seq).limit(where.limit)))


def balances(session: Session, caller: Caller, holder: str | None) -> list[CustodyBalance]:
    """Return non-zero balances per holder and lot (a nurse: her bag's)."""
    query = select(CustodyBalance).where(CustodyBalance.organisation_id == caller.organisation_id,
                                         CustodyBalance.quantity_ug != 0)
    if holder := _nurse_holder(caller, holder):
        query = query.where(CustodyBalance.holder == holder)
    return list(session.scalars(query.order_by(CustodyBalance.holder, CustodyBalance.lot)))


def checkpoints(session: Session, caller: Caller,
                limit: int | None = None) -> list[CustodyCheckpoint]:
    """Return the organisation's signed checkpoints, newest first (the newest `limit`)."""
    return list(session.scalars(select(CustodyCheckpoint).where(
        CustodyCheckpoint.organisation_id == caller.organisation_id)
        .order_by(CustodyCheckpoint.seq.desc()).limit(limit)))


def chain_head(session: Session, caller: Caller) -> CustodyHead | None:
    """Return the head of the organisation's chain, or None before its first entry."""
    return session.get(CustodyHead, caller.organisation_id)


def recent_entries(session: Session, caller: Caller, *, limit: int,
                   offset: int = 0) -> list[CustodyEntry]:
    """Return a page of the organisation's entries, newest first (a nurse: her bag's)."""
    query = select(CustodyEntry).where(CustodyEntry.organisation_id == caller.organisation_id)
    if holder := _nurse_holder(caller, None):
        query = query.where((CustodyEntry.from_holder == holder)
                            | (CustodyEntry.to_holder == holder))
    return list(session.scalars(query.order_by(CustodyEntry.seq.desc())
                                .limit(limit).offset(offset)))


def bag_holders(session: Session, caller: Caller) -> list[User]:
    """Return the organisation's active nurses, who may be dispensed to, by name."""
    return list(session.scalars(select(User).where(
        User.organisation_id == caller.organisation_id, User.role == Role.NURSE,
        User.active.is_(True)).order_by(User.display_name, User.username)))


def possible_witnesses(session: Session, caller: Caller) -> list[User]:
    """Return who may witness the caller's entries: the organisation's other active users."""
    return list(session.scalars(select(User).where(
        User.organisation_id == caller.organisation_id, User.id != caller.user_id,
        User.active.is_(True)).order_by(User.display_name, User.username)))
