"""End of shift: a nurse's bag statement per lot, and the finding when it is not back to zero."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from backend.accounts.models import Role, User
from backend.accounts.service import organisation_zone
from backend.auth.caller import Caller
from backend.custody.ledger import bag
from backend.custody.models import CustodyEntry, Kind
from backend.errors import InvalidField, NotFound
from backend.policy.service import policy_for
from backend.runtime import Runtime
from backend.tenancy import hers, owned
from backend.visits.models import Visit, VisitStatus
from safeguards import facts as f

# Each movement into or out of a bag, by kind, and the statement figure it adds to.
INCOMING = {Kind.DISPENSE: "dispensed_ug", Kind.TRANSFER: "transferred_in_ug",
            Kind.ADJUST: "adjusted_up_ug"}
OUTGOING = {Kind.ADMINISTER: "administered_ug", Kind.WASTE: "wasted_ug",
            Kind.RETURN: "returned_ug", Kind.TRANSFER: "transferred_out_ug",
            Kind.LOSS: "lost_ug", Kind.ADJUST: "adjusted_down_ug"}
# Far enough back to cover a local day and its deadline, so a late run still sees the shift.
LOOKBACK = timedelta(days=2)
SHIFT_OVER = (VisitStatus.COMPLETED, VisitStatus.MISSED)


@dataclass
class StatementLine:
    """One lot's movements through a bag over a period, and what is left of it."""

    product_id: uuid.UUID
    lot: str
    opening_ug: int = 0
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        [*INCOMING.values(), *OUTGOING.values()], 0))

    @property
    def remaining_ug(self) -> int:
        """Return the opening balance plus what came in less what went out."""
        return (self.opening_ug + sum(self.figures[name] for name in INCOMING.values())
                - sum(self.figures[name] for name in OUTGOING.values()))

    def as_evidence(self) -> dict[str, int | str]:
        """Return the line's figures as flat evidence keyed by lot."""
        figures = {"product_id": str(self.product_id), "opening_ug": self.opening_ug,
                   **self.figures, "remaining_ug": self.remaining_ug}
        return {f"{self.lot}.{name}": value for name, value in figures.items()}


@dataclass(frozen=True)
class BagStatement:
    """A nurse's bag over a period, lot by lot."""

    nurse_id: uuid.UUID
    holder: str
    since: datetime
    until: datetime
    lines: list[StatementLine]


def nurse_of(session: Session, caller: Caller, nurse_id: uuid.UUID) -> User:
    """Return a nurse of the caller's organisation (to a nurse: only herself), or raise NotFound."""
    nurse = owned(session, caller, User, nurse_id, what="nurse", nurse_sees=hers("id"))
    if nurse.role != Role.NURSE:
        raise NotFound("No such nurse.")
    return nurse


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """Return the first instant of `day` in `zone`, in UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def statement_lines(session: Session, organisation_id: uuid.UUID, nurse_id: uuid.UUID,
                    since: datetime, until: datetime) -> list[StatementLine]:
    """Return each lot's figures for a bag, by when the server recorded each movement."""
    holder = bag(nurse_id)
    # By received_at, not the phone's clock: a back-dated entry cannot slip out of a shift.
    moves = select(
        CustodyEntry.product_id, CustodyEntry.lot, CustodyEntry.kind,
        (CustodyEntry.to_holder == holder).label("incoming"),
        (CustodyEntry.received_at < since).label("opening"), CustodyEntry.quantity_ug,
    ).where(CustodyEntry.organisation_id == organisation_id,
            or_(CustodyEntry.from_holder == holder, CustodyEntry.to_holder == holder),
            CustodyEntry.received_at < until).subquery()
    # Grouped over a subquery: PostgreSQL would not match bound parameters in GROUP BY.
    keys = (moves.c.product_id, moves.c.lot, moves.c.kind, moves.c.incoming, moves.c.opening)
    lines: dict[tuple[uuid.UUID, str], StatementLine] = {}
    for product_id, lot, kind, incoming, opening, total in session.execute(
            select(*keys, func.sum(moves.c.quantity_ug)).group_by(*keys)):
        line = lines.setdefault((product_id, lot), StatementLine(product_id, lot))
        if opening:
            line.opening_ug += total if incoming else -total
        else:
            line.figures[(INCOMING if incoming else OUTGOING)[Kind(kind)]] += total
    return sorted(lines.values(), key=lambda line: (line.lot, str(line.product_id)))


def bag_statement(session: Session, rt: Runtime, caller: Caller, nurse_id: uuid.UUID,
                  since: datetime | None = None,
                  until: datetime | None = None) -> BagStatement:
    """Return a nurse's bag statement; by default from her organisation's midnight until now."""
    nurse = nurse_of(session, caller, nurse_id)
    now = rt.clock.now()
    zone = organisation_zone(session, caller.organisation_id)
    since = since or start_of_day(now.astimezone(zone).date(), zone)
    until = until or now
    if until <= since:
        raise InvalidField("to", "must be after from")
    return BagStatement(nurse.id, bag(nurse.id), since, until,
                        statement_lines(session, caller.organisation_id, nurse.id, since, until))


@dataclass(frozen=True)
class Shift:
    """A nurse's working day that is over: its local date and when her last visit ended."""

    nurse_id: uuid.UUID
    day: date
    ended_at: datetime


def _ended_shifts(session: Session, organisation_id: uuid.UUID, zone: ZoneInfo,
                  now: datetime, deadline: timedelta) -> list[Shift]:
    since = start_of_day((now - LOOKBACK).astimezone(zone).date(), zone)
    visits = session.execute(select(
        Visit.nurse_id, Visit.scheduled_start, Visit.scheduled_end, Visit.status,
        Visit.checked_out_at,
    ).where(Visit.organisation_id == organisation_id,
            Visit.status.not_in((VisitStatus.CANCELLED, VisitStatus.RESCHEDULED)),
            Visit.scheduled_start >= since, Visit.scheduled_start < now + timedelta(days=1)))
    days = defaultdict(list)
    for visit in visits:
        days[visit.nurse_id, visit.scheduled_start.astimezone(zone).date()].append(visit)
    shifts = []
    for (nurse_id, day), of_day in days.items():
        # A day is over when each visit is checked out or missed; a missed one ends on schedule.
        if all(visit.status in SHIFT_OVER for visit in of_day):
            ended = max(visit.checked_out_at or visit.scheduled_end for visit in of_day)
            if ended + deadline <= now:
                shifts.append(Shift(nurse_id, day, ended))
    return shifts


def ended_shifts(session: Session, organisation_id: uuid.UUID,
                 now: datetime) -> list[f.BagShift]:
    """Return each lot of each shift whose return deadline has passed, as the ledger stood then."""
    hours = int(policy_for(session, organisation_id).value("bag_return_deadline_hours"))
    zone = organisation_zone(session, organisation_id)
    found = []
    for shift in _ended_shifts(session, organisation_id, zone, now, timedelta(hours=hours)):
        deadline_at = shift.ended_at + timedelta(hours=hours)
        # The bag as the ledger stood at the deadline: stock dispensed for the next day
        # does not count against this one, and a late return does not excuse it.
        for line in statement_lines(session, organisation_id, shift.nurse_id,
                                    start_of_day(shift.day, zone), deadline_at):
            found.append(f.BagShift(
                nurse_id=str(shift.nurse_id), shift_day=shift.day.isoformat(), lot=line.lot,
                product_id=str(line.product_id), deadline=deadline_at,
                opening_ug=line.opening_ug, **line.figures,
                remaining_ug=line.remaining_ug))
    return found
