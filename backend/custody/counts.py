"""Reconcile a physical count of the vault or a bag against the ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend import changes
from backend.audit import service as audit
from backend.audit.models import AuditEvent
from backend.auth.caller import Caller
from backend.custody import service
from backend.custody.ledger import VAULT, bag
from backend.custody.models import CustodyEntry, Kind
from backend.custody.reports import holdings
from backend.custody.shifts import nurse_of
from backend.errors import Conflict, InvalidField, NotFound
from backend.flags.models import Flag, FlagOccurrence
from backend.products import service as products
from backend.runtime import Runtime
from safeguards import facts as f
from safeguards.findings import Subject, SubjectKind, dedup_key
from safeguards.rules.custody import COUNT_DISCREPANCY

# The audit action that records a count: the count's only record besides its flags and adjusts.
COUNTED = "custody.count"


@dataclass(frozen=True)
class CountedLot:
    """What the counter found of one lot; the expiry matters only for a lot new to the ledger."""

    product_id: uuid.UUID
    lot: str
    quantity_ug: int
    expiry: date | None = None


@dataclass(frozen=True)
class CountRequest:
    """A count of one holder's stock, with the reason for each discrepancy to adjust."""

    holder: str
    counted_at: datetime
    counts: list[CountedLot]
    reasons: dict[str, str] = field(default_factory=dict)
    id: uuid.UUID | None = None


@dataclass(frozen=True)
class LotCount:
    """One lot's ledger balance against its count, and what was done about a difference."""

    product_id: uuid.UUID
    lot: str
    ledger_ug: int
    counted_ug: int
    reason: str | None = None
    adjustment_id: uuid.UUID | None = None
    flag_id: uuid.UUID | None = None

    @property
    def difference_ug(self) -> int:
        """Return counted less ledger: positive when more was found than recorded."""
        return self.counted_ug - self.ledger_ug


@dataclass(frozen=True)
class Reconciliation:
    """A count reconciled lot by lot."""

    id: uuid.UUID
    holder: str
    counted_at: datetime
    lots: list[LotCount]

    @property
    def discrepancies(self) -> int:
        """Return how many lots did not match."""
        return sum(1 for lot in self.lots if lot.difference_ug)


def _holder(session: Session, caller: Caller, holder: str) -> str:
    if holder == VAULT:
        return VAULT
    try:
        return bag(nurse_of(session, caller, uuid.UUID(holder.removeprefix("bag:"))).id)
    except (ValueError, NotFound):
        raise InvalidField("holder", "`vault` or `bag:<nurse id>` of a nurse of this "
                                     "organisation") from None


def _counted(session: Session, caller: Caller,
             counts: list[CountedLot]) -> dict[tuple[uuid.UUID, str], CountedLot]:
    counted: dict[tuple[uuid.UUID, str], CountedLot] = {}
    for index, line in enumerate(counts):
        product = products.get(session, caller, line.product_id)
        if (product.id, line.lot) in counted:
            raise InvalidField(f"counts.{index}", f"lot {line.lot} is counted twice")
        counted[product.id, line.lot] = line
    return counted


def reconcile(session: Session, rt: Runtime, caller: Caller,
              request: CountRequest) -> Reconciliation:
    """Reconcile a count with the ledger as of it; flag differences, adjust those with reasons."""
    holder = _holder(session, caller, request.holder)
    now = rt.clock.now()
    if request.counted_at > now:
        raise InvalidField("counted_at", "must not be in the future")
    counted = _counted(session, caller, request.counts)
    ledger = {(h.product_id, h.lot): h for h in holdings(
        session, caller.organisation_id, request.counted_at, holder)}
    keys = sorted(ledger.keys() | counted.keys(), key=lambda key: (key[1], str(key[0])))
    if unknown := set(request.reasons) - {lot for _, lot in keys}:
        raise InvalidField("reasons", f"no lot {', '.join(sorted(unknown))} in this count")
    count = Reconciliation(request.id or uuid.uuid4(), holder, request.counted_at, [])
    lines = []
    for product_id, lot in keys:
        held, found = ledger.get((product_id, lot)), counted.get((product_id, lot))
        line = LotCount(product_id, lot, held.quantity_ug if held else 0,
                        found.quantity_ug if found else 0)
        if line.difference_ug:
            line = _discrepancy(session, rt, caller, count, line, request.reasons.get(lot),
                                found and found.expiry)
        lines.append(line)
    count = replace(count, lots=lines)
    audit.record(session, now, caller, COUNTED, "custody_count", count.id, detail={
        "holder": holder, "counted_at": request.counted_at.isoformat(),
        "lots": [{"product_id": str(line.product_id), "lot": line.lot,
                  "ledger_ug": line.ledger_ug, "counted_ug": line.counted_ug,
                  "adjustment_id": line.adjustment_id and str(line.adjustment_id)}
                 for line in count.lots]})
    return count


def _expiry(session: Session, caller: Caller, line: LotCount, given: date | None) -> date:
    """Return the lot's expiry as the ledger knows it, else as the counter gave it."""
    known = session.scalar(select(CustodyEntry.expiry).where(
        CustodyEntry.organisation_id == caller.organisation_id,
        CustodyEntry.product_id == line.product_id, CustodyEntry.lot == line.lot).limit(1))
    if known is None and given is None:
        raise InvalidField("counts", f"give the expiry of lot {line.lot}: the ledger has "
                                     "never held it")
    return known or given


def _discrepancy(session: Session, rt: Runtime, caller: Caller, count: Reconciliation,
                 line: LotCount, reason: str | None, expiry: date | None) -> LotCount:
    """Flag a lot's difference; with a reason, also correct the ledger by an adjust entry."""
    adjustment = None
    if reason:
        # Derived from the count's id, so a retried count finds its adjustment already made.
        adjustment = service.record(session, rt, caller, service.EntryRequest(
            kind=Kind.ADJUST, id=uuid.uuid5(count.id, f"{line.product_id}/{line.lot}"),
            product_id=line.product_id, lot=line.lot,
            expiry=_expiry(session, caller, line, expiry),
            quantity_ug=abs(line.difference_ug), occurred_at=count.counted_at,
            holder=count.holder,
            details={"reason": reason, "direction": "up" if line.difference_ug > 0 else "down",
                     "count_id": str(count.id)}))
    nurse = count.holder.removeprefix("bag:") if count.holder.startswith("bag:") else None
    changes.facts(session, caller.organisation_id, counts=(
        f.Count(id=str(count.id), holder=count.holder, lot=line.lot,
                product_id=str(line.product_id), counted_at=count.counted_at,
                counted_by_id=str(caller.user_id), expected_ug=line.ledger_ug,
                counted_ug=line.counted_ug, nurse_id=nurse,
                adjustment_id=adjustment and str(adjustment.id), reason=reason),))
    # The answer names the flag: judge now rather than at the commit. None when the rule is off.
    flag_id = next((raised.flag.id for raised in changes.settle(session)
                    if raised.finding.rule_id == COUNT_DISCREPANCY.id
                    and raised.finding.evidence.get("count_id") == str(count.id)
                    and raised.finding.evidence.get("lot") == line.lot
                    and raised.finding.evidence.get("product_id") == str(line.product_id)), None)
    return replace(line, reason=reason, adjustment_id=adjustment and adjustment.id,
                   flag_id=flag_id)


@dataclass(frozen=True)
class RecordedCount:
    """A count as its audit record keeps it, with who counted and when it was recorded."""

    count: Reconciliation
    counted_by_id: uuid.UUID | None
    recorded_at: datetime


def _of_counts(caller: Caller) -> tuple:
    return (AuditEvent.organisation_id == caller.organisation_id, AuditEvent.action == COUNTED)


def recorded_counts(session: Session, caller: Caller, *, limit: int,
                    offset: int = 0) -> list[RecordedCount]:
    """Return a page of the organisation's counts, newest first, with adjustments and flags."""
    latest = func.max(AuditEvent.occurred_at)
    ids = list(session.scalars(select(AuditEvent.object_id).where(*_of_counts(caller))
                               .group_by(AuditEvent.object_id)
                               .order_by(latest.desc(), AuditEvent.object_id)
                               .limit(limit).offset(offset)))
    return _recorded(session, caller, ids)


def recorded_count(session: Session, caller: Caller, count_id: uuid.UUID) -> RecordedCount:
    """Return one of the organisation's counts, or raise NotFound."""
    found = _recorded(session, caller, [str(count_id)])
    if not found:
        raise NotFound("No such count.")
    return found[0]


def _recorded(session: Session, caller: Caller, ids: list[str]) -> list[RecordedCount]:
    events: dict[str, list[AuditEvent]] = {}
    for event in session.scalars(select(AuditEvent).where(
            *_of_counts(caller), AuditEvent.object_id.in_(ids))
            .order_by(AuditEvent.occurred_at, AuditEvent.id)):
        events.setdefault(event.object_id, []).append(event)
    found = [_as_recorded(events[count_id]) for count_id in ids if count_id in events]
    adjustments = {entry.id: entry for entry in session.scalars(select(CustodyEntry).where(
        CustodyEntry.organisation_id == caller.organisation_id,
        CustodyEntry.id.in_([line.adjustment_id for record in found
                             for line in record.count.lots if line.adjustment_id])))}
    # A lot's shortfalls are one case: the count's flag is the case that holds it.
    flags = {(key, occurrence): flag_id for key, occurrence, flag_id in session.execute(
        select(Flag.dedup_key, FlagOccurrence.occurrence_key, Flag.id)
        .join(FlagOccurrence, FlagOccurrence.flag_id == Flag.id).where(
            Flag.organisation_id == caller.organisation_id,
            Flag.dedup_key.in_([_flag_key(record.count, line) for record in found
                                for line in record.count.lots]),
            FlagOccurrence.occurrence_key.in_([str(record.count.id) for record in found])))}
    return [replace(record, count=replace(record.count, lots=[
        replace(line, flag_id=flags.get((_flag_key(record.count, line), str(record.count.id))),
                reason=line.adjustment_id and adjustments[line.adjustment_id].details["reason"])
        for line in record.count.lots])) for record in found]


def _as_recorded(events: list[AuditEvent]) -> RecordedCount:
    """Return a count from its audit events: the first, with adjustments a retry added."""
    first = events[0]
    adjusted = {(lot["product_id"], lot["lot"]): uuid.UUID(lot["adjustment_id"])
                for event in reversed(events) for lot in event.detail["lots"]
                if lot.get("adjustment_id")}
    lots = [LotCount(uuid.UUID(lot["product_id"]), lot["lot"], lot["ledger_ug"],
                     lot["counted_ug"], adjustment_id=adjusted.get((lot["product_id"], lot["lot"])))
            for lot in first.detail["lots"]]
    count = Reconciliation(uuid.UUID(first.object_id), first.detail["holder"],
                           datetime.fromisoformat(first.detail["counted_at"]), lots)
    return RecordedCount(count, first.user_id, first.occurred_at)


def _flag_key(count: Reconciliation, line: LotCount) -> str:
    # The count discrepancy rule's own key for the case of one holder's lot; the count is an
    # occurrence of it, under its id.
    return dedup_key(COUNT_DISCREPANCY.id, Subject(SubjectKind.LOT, line.lot),
                     (count.holder, str(line.product_id)))


def explain(session: Session, rt: Runtime, caller: Caller, count_id: uuid.UUID, *,
            product_id: uuid.UUID, lot: str, reason: str,
            expiry: date | None = None) -> Reconciliation:
    """Give the reason for a count's discrepancy: the count is reconciled again under its id.

    As a retried POST of the count with this reason: the lot is corrected by an adjust entry
    and its flag re-raised saying so; earlier corrections are found, never made twice.
    """
    count = recorded_count(session, caller, count_id).count
    line = next((line for line in count.lots
                 if (line.product_id, line.lot) == (product_id, lot)), None)
    if line is None or not line.difference_ug:
        raise InvalidField("lot", f"lot {lot} has no discrepancy in this count")
    if line.adjustment_id is not None:
        raise Conflict(f"Lot {lot} of this count is already corrected.",
                       {"adjustment_id": str(line.adjustment_id)})
    reasons = {other.lot: other.reason for other in count.lots if other.reason}
    lots = [CountedLot(other.product_id, other.lot, other.counted_ug,
                       expiry if other is line else None) for other in count.lots]
    return reconcile(session, rt, caller, CountRequest(
        count.holder, count.counted_at, lots, reasons | {lot: reason}, count.id))
