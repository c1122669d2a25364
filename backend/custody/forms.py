"""DEA Form 106 (theft or loss) and Form 41 (destruction) records, each field as the form asks.

Form 106 (21 CFR 1301.76(b)) reads a loss report and the ledger entry that recorded the loss;
the type of loss and the police report are completed on the report after it opens, as the
investigation learns them. Form 41 (21 CFR 1304.21(e), part 1317) reads a `destroy` entry and
the witnesses who confirmed it. Both decrypt the entry's details (and Form 106 the report's
circumstances): every read is audited.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, User
from backend.accounts.registrant import Registrant, registrant
from backend.accounts.service import organisation_zone
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.custody.ledger import VAULT
from backend.custody.models import CustodyEntry, Kind, LossReport
from backend.custody.reports import factors, product_columns, role_title
from backend.errors import InvalidField, NotFound
from backend.products import quantities
from backend.products.models import DrugProduct
from backend.products.quantities import Amount
from backend.runtime import Runtime
from backend.tenancy import of_organisation, owned

# The types of theft or loss Form 106 offers, and `undetermined` while it is investigated.
LOSS_TYPES = {"night_break_in": "Night break-in", "armed_robbery": "Armed robbery",
              "employee_pilferage": "Employee pilferage",
              "customer_theft": "Customer or patient theft",
              "lost_in_transit": "Lost in transit", "other": "Other (see circumstances)",
              "undetermined": "Undetermined (under investigation)"}
UNDETERMINED = "undetermined"
# What may be completed on a loss report after it opens (PATCH /custody/losses/<id>).
DETAILS = ("loss_type", "police_report_number", "police_agency", "police_reported_at")
# Form 106 asks how many thefts or losses the registrant had in the 24 months before.
LOOKBACK = timedelta(days=730)
BAG = "bag:"


@dataclass(frozen=True)
class Person:
    """Someone a form names: by full name, then role and username."""

    name: str
    role: str
    username: str

    @classmethod
    def of(cls, user: User) -> Person:
        """Return how a form names `user`."""
        return cls(user.display_name, role_title(user), user.username)


@dataclass(frozen=True)
class Form106:
    """One theft or loss with every field DEA Form 106 asks."""

    registrant: Registrant
    report: LossReport
    entry: CustodyEntry
    product: dict[str, str]
    amount: Amount
    lost_from_name: str
    recorded_by: Person
    discovered_on: date
    occurred_on: date
    losses_in_24_months: int

    @property
    def loss_type(self) -> str:
        """Return the type of theft or loss; a report from before types were kept is open."""
        return self.report.loss_type or UNDETERMINED

    @property
    def police_reported(self) -> bool:
        """Tell whether the theft or loss was reported to the police."""
        return any(getattr(self.report, name) is not None for name in DETAILS[1:])

    @property
    def police_report(self) -> str:
        """Return the police report on one line, or `not reported`."""
        if not self.police_reported:
            return "not reported"
        report = self.report
        when = report.police_reported_at and report.police_reported_at.isoformat()
        parts = (report.police_agency, report.police_report_number and
                 f"report {report.police_report_number}", when and f"reported {when}")
        return ", ".join(filter(None, parts))


@dataclass(frozen=True)
class Form41:
    """One destruction with every field DEA Form 41 asks."""

    registrant: Registrant
    entry: CustodyEntry
    product: dict[str, str]
    amount: Amount
    destroyed_on: date
    place: str
    witnesses: list[Person]
    recorded_by: Person
    recorded_by_factor: str | None

    @property
    def method(self) -> str:
        """Return how the stock was destroyed, as the entry recorded it."""
        return self.entry.details["method"]


@dataclass(frozen=True)
class Forms:
    """The forms of a period: losses discovered, or destructions done, in [since, until)."""

    since: datetime
    until: datetime
    forms: list[Any]


def _product_columns(product: DrugProduct) -> dict[str, str]:
    """Return how a form names a product: as every DEA record does, and its container."""
    return {**product_columns(product), "container": quantities.container(product)}


# Form 106


def complete_loss(session: Session, rt: Runtime, caller: Caller, loss_id: uuid.UUID,
                  change: dict[str, Any]) -> LossReport:
    """Set a loss report's type and police report as the investigation learns them; audited."""
    report = owned(session, caller, LossReport, loss_id, what="loss report", for_update=True)
    now = rt.clock.now()
    if (reported_at := change.get("police_reported_at")) is not None:
        if reported_at > now:
            raise InvalidField("police_reported_at", "must not be in the future")
        # The police may be called before anyone records the loss in Vigil (discovery is
        # when the entry reached the server), but never before the loss itself.
        if reported_at < session.get(CustodyEntry, report.entry_id).occurred_at:
            raise InvalidField("police_reported_at", "is before the loss occurred")
    before = {name: getattr(report, name) for name in DETAILS}
    for name, value in change.items():
        setattr(report, name, value)
    session.flush()
    audit.record(session, now, caller, "custody.loss_details", "loss_report", report.id,
                 detail={name: {"from": _plain(before[name]), "to": _plain(getattr(report, name))}
                         for name in DETAILS if before[name] != getattr(report, name)})
    return report


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def form_106(session: Session, rt: Runtime, caller: Caller, loss_id: uuid.UUID) -> Form106:
    """Return the Form 106 record of one loss; its circumstances are an audited PHI read."""
    report = owned(session, caller, LossReport, loss_id, what="loss report")
    audit.record(session, rt.clock.now(), caller, "custody.form_106", "loss_report", report.id,
                 detail={"entry_id": str(report.entry_id)})
    return _forms_106(session, caller, [report])[0]


def forms_106(session: Session, rt: Runtime, caller: Caller, since: datetime,
              until: datetime) -> Forms:
    """Return the Form 106 record of every loss discovered in [since, until); audited."""
    _check_period(since, until)
    reports = list(session.scalars(select(LossReport).where(
        LossReport.organisation_id == caller.organisation_id,
        LossReport.discovered_at >= since, LossReport.discovered_at < until,
    ).order_by(LossReport.discovered_at, LossReport.id)))
    audit.record(session, rt.clock.now(), caller, "custody.form_106", "organisation",
                 caller.organisation_id, detail={
                     "from": since.isoformat(), "to": until.isoformat(),
                     "losses": [str(report.id) for report in reports]})
    return Forms(since, until, _forms_106(session, caller, reports))


def _forms_106(session: Session, caller: Caller, reports: list[LossReport]) -> list[Form106]:
    entries = _by_id(session, CustodyEntry, (report.entry_id for report in reports))
    products = _by_id(session, DrugProduct, (entry.product_id for entry in entries.values()))
    people = _by_id(session, User, [entry.actor_id for entry in entries.values()] + [
        uuid.UUID(entry.from_holder.removeprefix(BAG)) for entry in entries.values()
        if entry.from_holder.startswith(BAG)])
    the_registrant = registrant(session.get(Organisation, caller.organisation_id))
    zone = organisation_zone(session, caller.organisation_id)
    forms = []
    for report in reports:
        entry = entries[report.entry_id]
        product = products[entry.product_id]
        forms.append(Form106(
            registrant=the_registrant, report=report, entry=entry,
            product=_product_columns(product), amount=quantities.amount(product, entry.quantity_ug),
            lost_from_name=_holder_name(entry.from_holder, people),
            recorded_by=Person.of(people[entry.actor_id]),
            discovered_on=report.discovered_at.astimezone(zone).date(),
            occurred_on=entry.occurred_at.astimezone(zone).date(),
            losses_in_24_months=_losses_before(session, report)))
    return forms


def _holder_name(holder: str, people: dict[uuid.UUID, User]) -> str:
    if holder == VAULT:
        return "Vault"
    return people[uuid.UUID(holder.removeprefix(BAG))].display_name


def _losses_before(session: Session, report: LossReport) -> int:
    """Return how many thefts or losses the registrant discovered in the 24 months before."""
    return session.scalar(select(func.count()).select_from(LossReport).where(
        LossReport.organisation_id == report.organisation_id,
        LossReport.discovered_at >= report.discovered_at - LOOKBACK,
        LossReport.discovered_at < report.discovered_at))


# Form 41


def form_41(session: Session, rt: Runtime, caller: Caller, entry_id: uuid.UUID) -> Form41:
    """Return the Form 41 record of one `destroy` entry; an audited read of its details."""
    entry = of_organisation(session, CustodyEntry, entry_id, caller.organisation_id)
    if entry is None or entry.kind != Kind.DESTROY:
        raise NotFound("No such destruction.")
    audit.record(session, rt.clock.now(), caller, "custody.form_41", "custody_entry", entry.id,
                 detail={"seq": entry.seq})
    return _forms_41(session, caller, [entry])[0]


def forms_41(session: Session, rt: Runtime, caller: Caller, since: datetime,
             until: datetime) -> Forms:
    """Return the Form 41 record of every destruction done in [since, until); audited."""
    _check_period(since, until)
    entries = list(session.scalars(select(CustodyEntry).where(
        CustodyEntry.organisation_id == caller.organisation_id,
        CustodyEntry.kind == Kind.DESTROY,
        CustodyEntry.occurred_at >= since, CustodyEntry.occurred_at < until,
    ).order_by(CustodyEntry.occurred_at, CustodyEntry.seq)))
    audit.record(session, rt.clock.now(), caller, "custody.form_41", "organisation",
                 caller.organisation_id, detail={
                     "from": since.isoformat(), "to": until.isoformat(),
                     "destructions": [entry.seq for entry in entries]})
    return Forms(since, until, _forms_41(session, caller, entries))


def _forms_41(session: Session, caller: Caller, entries: list[CustodyEntry]) -> list[Form41]:
    products = _by_id(session, DrugProduct, (entry.product_id for entry in entries))
    people = _by_id(session, User, [entry.actor_id for entry in entries] + [
        uuid.UUID(c["user_id"]) for entry in entries for c in entry.confirmations])
    the_registrant = registrant(session.get(Organisation, caller.organisation_id))
    zone = organisation_zone(session, caller.organisation_id)
    proved = factors(session, entries)
    forms = []
    for entry in entries:
        product = products[entry.product_id]
        forms.append(Form41(
            registrant=the_registrant, entry=entry, product=_product_columns(product),
            amount=quantities.amount(product, entry.quantity_ug),
            destroyed_on=entry.occurred_at.astimezone(zone).date(),
            # Destroyed on the premises unless the entry names where (a reverse distributor).
            place=entry.details.get("place") or the_registrant.address,
            witnesses=[Person.of(people[uuid.UUID(c["user_id"])]) for c in entry.confirmations],
            recorded_by=Person.of(people[entry.actor_id]),
            recorded_by_factor=proved.get(str(entry.id))))
    return forms


# Both


def _check_period(since: datetime, until: datetime) -> None:
    if until <= since:
        raise InvalidField("to", "must be after from")


def _by_id(session: Session, model: type, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {row.id: row for row in session.scalars(select(model).where(model.id.in_(wanted)))}
