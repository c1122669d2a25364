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
# A visit over, whatever its outcome: each ends its nurse's shift for the bag's deadline.
SHIFT_OVER = (VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED)


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


def _through_bag(organisation_id: uuid.UUID, holder: str, until: datetime) -> tuple:
    # By received_at, not the phone's clock: a back-dated entry cannot slip out of a shift.
    return (CustodyEntry.organisation_id == organisation_id,
            or_(CustodyEntry.from_holder == holder, CustodyEntry.to_holder == holder),
            CustodyEntry.received_at < until)


def local_today(session: Session, rt: Runtime, organisation_id: uuid.UUID) -> date:
    """Return the organisation's calendar day now, in its timezone."""
    return rt.clock.now().astimezone(organisation_zone(session, organisation_id)).date()


def statement_lines(session: Session, organisation_id: uuid.UUID, nurse_id: uuid.UUID,
                    since: datetime, until: datetime) -> list[StatementLine]:
    """Return each lot's figures for a bag, by when the server recorded each movement."""
    holder = bag(nurse_id)
    moves = select(
        CustodyEntry.product_id, CustodyEntry.lot, CustodyEntry.kind,
        (CustodyEntry.to_holder == holder).label("incoming"),
        (CustodyEntry.received_at < since).label("opening"), CustodyEntry.quantity_ug,
    ).where(*_through_bag(organisation_id, holder, until)).subquery()
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


def statement_entries(session: Session, organisation_id: uuid.UUID, nurse_id: uuid.UUID,
                      since: datetime, until: datetime) -> list[CustodyEntry]:
    """Return the movements a statement of [since, until) counts, in chain order."""
    return list(session.scalars(select(CustodyEntry).where(
        *_through_bag(organisation_id, bag(nurse_id), until),
        CustodyEntry.received_at >= since).order_by(CustodyEntry.seq)))


@dataclass(frozen=True)
class Shift:
    """A nurse's working day: its local date, when her last visit ended (None: one is still
    open), and when the day is over for her bag even so (None: no visits)."""

    nurse_id: uuid.UUID
    day: date
    ended_at: datetime | None
    closes_at: datetime | None = None

    def deadline_at(self, deadline: timedelta) -> datetime | None:
        """Return when the bag must be back to zero, once the day's visits are over."""
        over = self.ended_at or self.closes_at
        return None if over is None else over + deadline

    def period(self, zone: ZoneInfo, deadline: timedelta,
               now: datetime) -> tuple[datetime, datetime]:
        """Return the span a statement of the shift covers, as the reconciliation job reads it."""
        # From the day's midnight to the return deadline (before it, to now); while a visit
        # is still to come, to the next midnight.
        end = self.deadline_at(deadline) or start_of_day(self.day + timedelta(days=1), zone)
        return start_of_day(self.day, zone), min(end, now)


@dataclass(frozen=True)
class VisitOutcome:
    """What a shift needs of one visit: its times and how it went."""

    status: VisitStatus
    scheduled_start: datetime
    scheduled_end: datetime
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    # When its status last changed: for a cancelled visit, when it was called off.
    updated_at: datetime


def visit_end(visit: VisitOutcome, zone: ZoneInfo) -> tuple[datetime | None, bool]:
    """Return when a visit stopped holding its nurse's bag open, and whether it is over.

    Whatever its outcome: checked out, called off (on its own day, once she checked in or
    before; on the doorstep), missed at its scheduled end. A visit called off before its day
    is no part of it (None). No visit holds the bag open past the later of its scheduled end
    and the next local midnight: one left open, or called off later, ends there.
    """
    day = visit.scheduled_start.astimezone(zone).date()
    latest = max(visit.scheduled_end, start_of_day(day + timedelta(days=1), zone))
    if visit.status == VisitStatus.COMPLETED:
        return visit.checked_out_at or visit.scheduled_end, True
    if visit.status == VisitStatus.MISSED:
        return visit.scheduled_end, True
    if visit.status == VisitStatus.CANCELLED:
        if visit.checked_in_at is None and visit.updated_at < start_of_day(day, zone):
            return None, True
        return min(visit.updated_at, latest), True
    return latest, False


def shift_of(nurse_id: uuid.UUID, day: date, visits: list[VisitOutcome],
             zone: ZoneInfo) -> Shift | None:
    """Return a nurse's shift of `day` from its visits: over when the last of them ends."""
    ends = [visit_end(visit, zone) for visit in visits]
    counted = [(at, over) for at, over in ends if at is not None]
    if not counted:
        return None
    closes_at = max(at for at, _ in counted)
    return Shift(nurse_id, day, closes_at if all(over for _, over in counted) else None,
                 closes_at)


def _shifts(session: Session, organisation_id: uuid.UUID, zone: ZoneInfo, first_day: date,
            until: datetime, nurse_id: uuid.UUID | None = None) -> list[Shift]:
    """Return each nurse's working day from `first_day`, of visits scheduled before `until`."""
    query = select(
        Visit.nurse_id, Visit.status, Visit.scheduled_start, Visit.scheduled_end,
        Visit.checked_in_at, Visit.checked_out_at, Visit.updated_at,
    ).where(Visit.organisation_id == organisation_id,
            Visit.status != VisitStatus.RESCHEDULED,
            Visit.scheduled_start >= start_of_day(first_day, zone),
            Visit.scheduled_start < until)
    if nurse_id is not None:
        query = query.where(Visit.nurse_id == nurse_id)
    days = defaultdict(list)
    for row in session.execute(query):
        visit = VisitOutcome(VisitStatus(row.status), *row[2:])
        days[row.nurse_id, visit.scheduled_start.astimezone(zone).date()].append(visit)
    return [shift for (nurse_id, day), of_day in days.items()
            if (shift := shift_of(nurse_id, day, of_day, zone)) is not None]


def _ended_shifts(session: Session, organisation_id: uuid.UUID, zone: ZoneInfo,
                  now: datetime, deadline: timedelta) -> list[Shift]:
    first_day = (now - LOOKBACK).astimezone(zone).date()
    return [shift for shift in _shifts(session, organisation_id, zone, first_day,
                                       now + timedelta(days=1))
            if (deadline_at := shift.deadline_at(deadline)) and deadline_at <= now]


def return_deadline(session: Session, organisation_id: uuid.UUID) -> timedelta:
    """Return how long after her last visit a nurse's bag must be back to zero (policy)."""
    return timedelta(hours=int(policy_for(session, organisation_id).value(
        "bag_return_deadline_hours")))


def ended_shifts(session: Session, organisation_id: uuid.UUID,
                 now: datetime) -> list[f.BagShift]:
    """Return each lot of each shift whose return deadline has passed, as the ledger stood then."""
    deadline = return_deadline(session, organisation_id)
    zone = organisation_zone(session, organisation_id)
    found = []
    for shift in _ended_shifts(session, organisation_id, zone, now, deadline):
        # The bag as the ledger stood at the deadline: stock dispensed for the next day
        # does not count against this one, and a late return does not excuse it.
        since, deadline_at = shift.period(zone, deadline, now)
        for line in statement_lines(session, organisation_id, shift.nurse_id, since,
                                    deadline_at):
            found.append(f.BagShift(
                nurse_id=str(shift.nurse_id), shift_day=shift.day.isoformat(), lot=line.lot,
                product_id=str(line.product_id), deadline=deadline_at,
                opening_ug=line.opening_ug, **line.figures,
                remaining_ug=line.remaining_ug))
    return found


@dataclass(frozen=True)
class ShiftStatement:
    """A nurse's bag over her shift of a day, and the movements its statement counts."""

    nurse: User
    shift: Shift
    deadline_at: datetime | None
    closed: bool
    statement: BagStatement
    entries: list[CustodyEntry]

    def entries_of(self, line: StatementLine) -> list[CustodyEntry]:
        """Return the movements of `line`'s lot that the statement counts."""
        return [entry for entry in self.entries
                if (entry.product_id, entry.lot) == (line.product_id, line.lot)]


def _begun(rt: Runtime, day: date, zone: ZoneInfo) -> date:
    if start_of_day(day, zone) >= rt.clock.now():
        raise InvalidField("day", "must not be in the future")
    return day


def _shift_statement(session: Session, rt: Runtime, caller: Caller, nurse: User, shift: Shift,
                     zone: ZoneInfo, deadline: timedelta) -> ShiftStatement:
    now = rt.clock.now()
    since, until = shift.period(zone, deadline, now)
    statement = bag_statement(session, rt, caller, shift.nurse_id, since, until)
    deadline_at = shift.deadline_at(deadline)
    return ShiftStatement(
        nurse, shift, deadline_at, deadline_at is not None and deadline_at <= now, statement,
        statement_entries(session, caller.organisation_id, shift.nurse_id, since, until))


def shift_statement(session: Session, rt: Runtime, caller: Caller, nurse_id: uuid.UUID,
                    day: date) -> ShiftStatement:
    """Return a nurse's bag over her shift of `day`, reckoned as the reconciliation job does."""
    nurse = nurse_of(session, caller, nurse_id)
    zone = organisation_zone(session, caller.organisation_id)
    day = _begun(rt, day, zone)
    shifts = _shifts(session, caller.organisation_id, zone, day,
                     start_of_day(day + timedelta(days=1), zone), nurse.id)
    shift = shifts[0] if shifts else Shift(nurse.id, day, None)
    return _shift_statement(session, rt, caller, nurse, shift, zone,
                            return_deadline(session, caller.organisation_id))


def day_statements(session: Session, rt: Runtime, caller: Caller, day: date, limit: int = 50,
                   offset: int = 0) -> list[ShiftStatement]:
    """Return the bag of each nurse with visits on `day`, by name, reckoned as the job does."""
    zone = organisation_zone(session, caller.organisation_id)
    day = _begun(rt, day, zone)
    shifts = _shifts(session, caller.organisation_id, zone, day,
                     start_of_day(day + timedelta(days=1), zone))
    nurses = {user.id: user for user in session.scalars(
        select(User).where(User.id.in_([shift.nurse_id for shift in shifts])))}
    shifts.sort(key=lambda shift: (nurses[shift.nurse_id].display_name, str(shift.nurse_id)))
    deadline = return_deadline(session, caller.organisation_id)
    return [_shift_statement(session, rt, caller, nurses[shift.nurse_id], shift, zone, deadline)
            for shift in shifts[offset:offset + limit]]
