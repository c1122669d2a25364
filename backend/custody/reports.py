"""DEA records from the ledger: the dispensing log (21 CFR 1304.22(c)) and inventory (1304.11)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, Role, User
from backend.accounts.registrant import Registrant, registrant
from backend.accounts.service import organisation_zone
from backend.audit import service as audit
from backend.audit.models import AuditEvent
from backend.auth.caller import Caller
from backend.custody.ledger import VAULT
from backend.custody.models import CustodyEntry, Kind
from backend.errors import InvalidField
from backend.patients import service as patients
from backend.plans.models import PlanVersion
from backend.products import ndc, quantities
from backend.products.models import DrugProduct
from backend.products.quantities import milligrams as milligrams  # the console's, re-exported
from backend.runtime import Runtime
from backend.visits.models import Visit

KIND_LABELS = {Kind.RECEIVE: "received", Kind.DISPENSE: "dispensed to nurse",
               Kind.TRANSFER: "transferred to nurse", Kind.ADMINISTER: "administered",
               Kind.WASTE: "wasted", Kind.RETURN: "returned", Kind.ADJUST: "count adjustment",
               Kind.LOSS: "lost", Kind.DESTROY: "destroyed"}
PATIENT = "patient:"
BAG = "bag:"
BOM = "\ufeff"
# How a record names each role beside a person's full name.
ROLE_TITLES = {Role.ADMIN: "administrator", Role.PRESCRIBER: "prescriber",
               Role.PHARMACIST: "pharmacist", Role.NURSE: "nurse",
               Role.COMPLIANCE: "compliance officer"}


@dataclass(frozen=True)
class Holding:
    """What one holder held of one lot at a moment."""

    holder: str
    product_id: uuid.UUID
    lot: str
    expiry: date
    quantity_ug: int


def holdings(session: Session, organisation_id: uuid.UUID, as_of: datetime,
             holder: str | None = None) -> list[Holding]:
    """Return each vault or bag lot's non-zero holding from entries recorded by `as_of`."""
    recorded = (CustodyEntry.organisation_id == organisation_id,
                CustodyEntry.received_at <= as_of)
    lot = (CustodyEntry.product_id, CustodyEntry.lot, CustodyEntry.expiry)
    moves = union_all(
        select(CustodyEntry.to_holder.label("holder"), *lot,
               CustodyEntry.quantity_ug.label("quantity_ug")).where(
            *recorded, _held_by(CustodyEntry.to_holder, holder)),
        select(CustodyEntry.from_holder.label("holder"), *lot,
               (-CustodyEntry.quantity_ug).label("quantity_ug")).where(
            *recorded, _held_by(CustodyEntry.from_holder, holder)),
    ).subquery()
    held = func.sum(moves.c.quantity_ug)
    keys = (moves.c.holder, moves.c.product_id, moves.c.lot)
    rows = session.execute(select(*keys, func.max(moves.c.expiry), held).group_by(*keys)
                           .having(held != 0).order_by(*keys))
    return [Holding(*row) for row in rows]


def _held_by(column: Any, holder: str | None) -> Any:
    if holder is not None:
        return column == holder
    return or_(column == VAULT, column.startswith(BAG))


def product_columns(product: DrugProduct) -> dict[str, str]:
    """Return how every DEA record names a product: substance, NDC, schedule, form, sizes."""
    return {"substance": product.active_ingredient, "product": product.name,
            "ndc": ndc.formatted(product.ndc), "dea_schedule": product.dea_schedule,
            "dosage_form": product.form, "strength": quantities.strength(product),
            "package": quantities.package(product)}


def role_title(user: User) -> str:
    """Return how a record names the user's role ("pharmacist", "compliance officer")."""
    return ROLE_TITLES[Role(user.role)]


def _products(session: Session, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DrugProduct]:
    return {p.id: p for p in session.scalars(select(DrugProduct).where(
        DrugProduct.id.in_(set(ids))))}


def _users(session: Session, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, User]:
    return {u.id: u for u in session.scalars(select(User).where(User.id.in_(set(ids))))}


def _holder_id(holder: str, prefix: str) -> uuid.UUID | None:
    return uuid.UUID(holder.removeprefix(prefix)) if holder.startswith(prefix) else None


# The kinds a desk user records only with a fresh second factor (backend.custody.service).
FACTOR_KINDS = (Kind.DESTROY, Kind.ADJUST, Kind.LOSS)


@dataclass(frozen=True)
class DispensingEvent:
    """One ledger event with every field 21 CFR 1304.22(c) asks of its kind."""

    entry_id: uuid.UUID
    seq: int
    date: date
    occurred_at: datetime
    kind: str
    substance: str
    product: str
    ndc: str
    dea_schedule: str
    dosage_form: str
    strength: str
    package: str
    units_per_container: Decimal
    quantity_ug: int
    quantity_mg: Decimal
    quantity_units: Decimal
    unit: str
    containers: int | None
    lot: str
    expiry: date
    from_holder: str
    recipient: str
    recipient_name: str
    recipient_address: str
    supplier_name: str
    supplier_address: str
    supplier_dea: str
    manner: str
    by_name: str
    by_role: str
    by_username: str
    witness_names: list[str]
    witness_roles: list[str]
    witness_usernames: list[str]
    by_factor: str | None
    order: Order


@dataclass(frozen=True)
class Order:
    """The signed plan version a dose or its waste followed: the prescriber's order."""

    plan_version_id: uuid.UUID | None = None
    version: int | None = None
    signed_by: str | None = None
    signed_by_role: str | None = None
    signed_by_username: str | None = None
    signed_at: datetime | None = None
    factor: str | None = None


# What an event that followed no order (a receipt, a count) shows: every order field null.
NO_ORDER = Order()


@dataclass(frozen=True)
class DispensingLog:
    """The registrant's dispensing and disposal record over a period."""

    registrant: Registrant
    since: datetime
    until: datetime
    events: list[DispensingEvent]


@dataclass(frozen=True)
class Recipient:
    """Who or what received stock, by name and address where the record needs them."""

    name: str = ""
    address: str = ""


def _manner(entry: CustodyEntry) -> str:
    details = entry.details
    if entry.kind == Kind.WASTE:
        return details.get("method") or "partial dose wasted before a witness"
    if entry.kind == Kind.DESTROY:
        return details["method"]
    if entry.kind == Kind.LOSS:
        return details["circumstances"]
    if entry.kind == Kind.ADJUST:
        return f"count correction ({details['direction']}): {details['reason']}"
    return ""


def _recipients(session: Session, rt: Runtime, caller: Caller, organisation: Organisation,
                entries: list[CustodyEntry]) -> dict[str, Recipient]:
    """Name each receiving holder; patients' names and addresses are PHI reads, each audited."""
    holders = {entry.to_holder for entry in entries}
    names = {VAULT: Recipient(organisation.name)}
    nurses = _users(session, filter(None, (_holder_id(h, BAG) for h in holders)))
    names |= {f"{BAG}{nurse.id}": Recipient(nurse.display_name) for nurse in nurses.values()}
    for patient_id in sorted(filter(None, (_holder_id(h, PATIENT) for h in holders)), key=str):
        patient = patients.read(session, rt, caller, patient_id)
        names[f"{PATIENT}{patient_id}"] = Recipient(patient.name, patient.address or "")
    return names


def _orders(session: Session, entries: list[CustodyEntry]) -> dict[uuid.UUID, Order]:
    """Return, by visit, the plan version its dose followed and who signed it, and how."""
    visits = {entry.visit_id for entry in entries if entry.visit_id is not None}
    if not visits:
        return {}
    rows = session.execute(
        select(Visit.id, PlanVersion, User)
        .join(PlanVersion, PlanVersion.id == Visit.plan_version_id)
        .join(User, User.id == PlanVersion.prescriber_id).where(Visit.id.in_(visits)))
    # Versions written before orders were signed keep their prescriber, with no signature.
    return {visit_id: Order(version.id, version.version, signer.display_name,
                            role_title(signer), signer.username, version.signed_at,
                            version.signature_method)
            for visit_id, version, signer in rows}


def factors(session: Session, entries: list[CustodyEntry]) -> dict[str, str]:
    """Return, by entry id, the second factor its desk recorder proved (destroy, adjust, loss)."""
    ids = [str(entry.id) for entry in entries if entry.kind in FACTOR_KINDS]
    if not ids:
        return {}
    rows = session.execute(select(AuditEvent.object_id, AuditEvent.detail).where(
        AuditEvent.organisation_id == entries[0].organisation_id,
        AuditEvent.object_type == "custody_entry",
        AuditEvent.action.in_([f"custody.{kind}" for kind in FACTOR_KINDS]),
        AuditEvent.object_id.in_(ids)))
    return {object_id: detail["factor"] for object_id, detail in rows
            if detail and "factor" in detail}


def _event(entry: CustodyEntry, product: DrugProduct, people: Mapping[uuid.UUID, User],
           recipient: Recipient, zone: ZoneInfo, order: Order,
           factor: str | None) -> DispensingEvent:
    actor = people[entry.actor_id]
    witnesses = [people[uuid.UUID(c["user_id"])] for c in entry.confirmations]
    return DispensingEvent(
        entry_id=entry.id, seq=entry.seq, date=entry.occurred_at.astimezone(zone).date(),
        occurred_at=entry.occurred_at, kind=KIND_LABELS[Kind(entry.kind)],
        **product_columns(product), units_per_container=product.units_per_container,
        **asdict(quantities.amount(product, entry.quantity_ug)), lot=entry.lot,
        expiry=entry.expiry, from_holder=entry.from_holder, recipient=entry.to_holder,
        recipient_name=recipient.name, recipient_address=recipient.address,
        supplier_name=entry.details.get("supplier_name", ""),
        supplier_address=entry.details.get("supplier_address", ""),
        supplier_dea=entry.details.get("supplier_dea", ""), manner=_manner(entry),
        by_name=actor.display_name, by_role=role_title(actor), by_username=actor.username,
        witness_names=[witness.display_name for witness in witnesses],
        witness_roles=[role_title(witness) for witness in witnesses],
        witness_usernames=[witness.username for witness in witnesses],
        by_factor=factor, order=order)


def dispensing_log(session: Session, rt: Runtime, caller: Caller, since: datetime,
                   until: datetime) -> DispensingLog:
    """Return every ledger event that occurred in [since, until), as 1304.22(c) records it."""
    if until <= since:
        raise InvalidField("to", "must be after from")
    entries = list(session.scalars(select(CustodyEntry).where(
        CustodyEntry.organisation_id == caller.organisation_id,
        CustodyEntry.occurred_at >= since, CustodyEntry.occurred_at < until,
    ).order_by(CustodyEntry.occurred_at, CustodyEntry.seq)))
    organisation = session.get(Organisation, caller.organisation_id)
    products = _products(session, (entry.product_id for entry in entries))
    people = _users(session, [entry.actor_id for entry in entries] + [
        uuid.UUID(c["user_id"]) for entry in entries for c in entry.confirmations])
    recipients = _recipients(session, rt, caller, organisation, entries)
    zone = organisation_zone(session, caller.organisation_id)
    orders, proved = _orders(session, entries), factors(session, entries)
    events = [_event(entry, products[entry.product_id], people,
                     recipients.get(entry.to_holder, Recipient()), zone,
                     orders.get(entry.visit_id, NO_ORDER), proved.get(str(entry.id)))
              for entry in entries]
    audit.record(session, rt.clock.now(), caller, "custody.dispensing_log", "organisation",
                 caller.organisation_id, detail={
                     "from": since.isoformat(), "to": until.isoformat(), "events": len(events),
                     "patients": sum(holder.startswith(PATIENT) for holder in recipients)})
    return DispensingLog(registrant(organisation), since, until, events)


@dataclass(frozen=True)
class InventoryLine:
    """One holder's stock of one lot, in µg, mg, dispensing units and whole containers."""

    holder: str
    holder_name: str
    product_id: uuid.UUID
    substance: str
    product: str
    ndc: str
    dea_schedule: str
    dosage_form: str
    strength: str
    package: str
    units_per_container: Decimal
    lot: str
    expiry: date
    quantity_ug: int
    quantity_mg: Decimal
    quantity_units: Decimal
    unit: str
    containers: int | None


@dataclass(frozen=True)
class Inventory:
    """The stock on hand at a moment, dated and marked open or close of business (1304.11)."""

    registrant: Registrant
    as_of: datetime
    date: date
    at: str
    taken_by: str
    taken_by_role: str
    lines: list[InventoryLine]


def _inventory_line(holding: Holding, product: DrugProduct, holder_name: str) -> InventoryLine:
    return InventoryLine(
        holder=holding.holder, holder_name=holder_name, product_id=product.id,
        **product_columns(product), units_per_container=product.units_per_container,
        lot=holding.lot, expiry=holding.expiry,
        **asdict(quantities.amount(product, holding.quantity_ug)))


def inventory_lines(session: Session, organisation: Organisation,
                    as_of: datetime) -> list[InventoryLine]:
    """Return each vault and bag lot's stock as the ledger stood at `as_of`."""
    held = holdings(session, organisation.id, as_of)
    products = _products(session, (h.product_id for h in held))
    nurses = _users(session, filter(None, (_holder_id(h.holder, BAG) for h in held)))
    names = {VAULT: organisation.name} | {
        f"{BAG}{nurse.id}": nurse.display_name for nurse in nurses.values()}
    return [_inventory_line(h, products[h.product_id], names[h.holder]) for h in held]


def checked_as_of(rt: Runtime, as_of: datetime | None) -> datetime:
    """Return the moment of an inventory (default now), refusing one in the future."""
    now = rt.clock.now()
    if as_of is not None and as_of > now:
        raise InvalidField("as_of", "must not be in the future")
    return as_of or now


def inventory(session: Session, rt: Runtime, caller: Caller, as_of: datetime | None,
              at: str) -> Inventory:
    """Return the stock of the vault and every bag as the ledger stood at `as_of` (default now)."""
    as_of = checked_as_of(rt, as_of)
    organisation = session.get(Organisation, caller.organisation_id)
    taker = session.get(User, caller.user_id)
    zone = organisation_zone(session, caller.organisation_id)
    return Inventory(
        registrant=registrant(organisation), as_of=as_of, date=as_of.astimezone(zone).date(),
        at=at, taken_by=taker.display_name, taken_by_role=role_title(taker),
        lines=inventory_lines(session, organisation, as_of))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return "; ".join(value) if isinstance(value, list) else value


def csv_text(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> str:
    """Return `rows` as RFC 4180 CSV (CRLF, minimal quoting) under a header of `columns`."""
    # Every CSV Vigil gives (API and console) starts with a byte-order mark: without it,
    # spreadsheets read UTF-8 as their local code page and µg turns into Âµg.
    out = io.StringIO()
    out.write(BOM)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({name: _cell(row[name]) for name in columns} for row in rows)
    return out.getvalue()
