"""Loss reports: their two DEA deadlines and the filings that meet them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.custody.models import CustodyEntry, LossReport
from backend.errors import Conflict, InvalidField
from backend.runtime import Runtime
from backend.tenancy import owned

# Each filing DEA expects after a theft or significant loss: its due and filed columns.
FILINGS = {"dea_notice": ("notice_due_at", "notice_filed_at"),
           "form_106": ("form_106_due_at", "form_106_filed_at")}


@dataclass(frozen=True)
class Loss:
    """A loss report with the entry that recorded the loss, and its deadlines as of now."""

    report: LossReport
    entry: CustodyEntry
    overdue: frozenset[str]


def overdue(report: LossReport, now: datetime) -> frozenset[str]:
    """Return the filings whose deadline passed by `now` without being filed."""
    return frozenset(name for name, (due, filed) in FILINGS.items()
                     if getattr(report, filed) is None and getattr(report, due) < now)


def losses(session: Session, rt: Runtime, caller: Caller) -> list[Loss]:
    """Return the organisation's loss reports, newest first, with what is overdue."""
    now = rt.clock.now()
    rows = session.execute(select(LossReport, CustodyEntry).join(
        CustodyEntry, CustodyEntry.id == LossReport.entry_id).where(
        LossReport.organisation_id == caller.organisation_id).order_by(
        LossReport.discovered_at.desc(), LossReport.id))
    return [Loss(report, entry, overdue(report, now)) for report, entry in rows]


def record_filing(session: Session, rt: Runtime, caller: Caller, loss_id: uuid.UUID, filing: str,
         filed_at: datetime) -> Loss:
    """Record that a DEA notice or Form 106 was filed for a loss; each is filed once."""
    report = owned(session, caller, LossReport, loss_id, what="loss report")
    if filing not in FILINGS:
        raise InvalidField("filing", f"one of {', '.join(FILINGS)}")
    due, filed = FILINGS[filing]
    now = rt.clock.now()
    if (already := getattr(report, filed)) is not None:
        raise Conflict(f"The {filing} was already filed at {already.isoformat()}.",
                       {"filing": filing, "filed_at": already.isoformat()})
    if filed_at > now:
        raise InvalidField("filed_at", "must not be in the future")
    if filed_at < report.discovered_at:
        raise InvalidField("filed_at", "is before the loss was discovered")
    setattr(report, filed, filed_at)
    session.flush()
    audit.record(session, now, caller, "custody.loss_filing", "loss_report", report.id,
                 detail={"filing": filing, "filed_at": filed_at.isoformat(),
                         "due_at": getattr(report, due).isoformat(),
                         "late": filed_at > getattr(report, due)})
    return Loss(report, session.get(CustodyEntry, report.entry_id), overdue(report, now))
