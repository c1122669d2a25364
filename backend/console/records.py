"""The pharmacist's records: bag reconciliation, losses and their DEA deadlines, reports.

Each page calls what its API endpoint calls, for the same roles: a nurse's shift through
`custody.shifts`, reckoned as the bag-reconciliation job reckons it (the difference shown is the
statement's own `remaining_ug`); losses and filings through `custody.losses`; the DEA records
through `custody.reports` and signed inventories through `custody.inventories`, whose CSV is the
API's own text, so a download from either is the same file.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import marshmallow as ma
from flask import flash, redirect, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from backend import bounded, db
from backend.accounts import service as accounts
from backend.accounts.service import organisation_zone
from backend.console import stock
from backend.console.pages import (
    FormRefused,
    attempt,
    blp,
    caller,
    form_values,
    load,
    object_id,
    page,
    pager,
    render,
    when,
)
from backend.console.service import DESK_ROLES
from backend.custody import inventories, losses, reports, shifts
from backend.custody import resources as custody_api
from backend.custody.report_schemas import (
    FilingSchema,
    dispensing_csv,
    inventory_csv,
    signed_inventory_csv,
)
from backend.errors import Conflict, InvalidField, NotFound
from backend.products import service as products
from backend.runtime import runtime

# Who may open what, as the API's matching endpoints allow (nurses have no console).
STATEMENT = frozenset(custody_api.READERS) & DESK_ROLES
REPORTS = frozenset(custody_api.REPORT_READERS) & DESK_ROLES
FILERS = frozenset(custody_api.FILERS) & DESK_ROLES
TAKERS = frozenset(inventories.TAKERS) & DESK_ROLES
PAGE_SIZE = 20
# A bag statement's figures after its opening balance: what came in, then what went out.
FIGURES = (("dispensed_ug", "Dispensed"), ("transferred_in_ug", "Transferred in"),
           ("adjusted_up_ug", "Adjusted up"), ("administered_ug", "Administered"),
           ("wasted_ug", "Wasted"), ("returned_ug", "Returned"),
           ("transferred_out_ug", "Transferred out"), ("lost_ug", "Lost"),
           ("adjusted_down_ug", "Adjusted down"))
# A signed inventory's kinds: what the form offers, and how a printed one is headed.
INVENTORY_KINDS = {"biennial": "Biennial: at least every two years",
                   "initial": "Initial: on first handling controlled substances",
                   "other": "Other: a substance newly scheduled, a new pharmacist in charge, "
                            "a check of our own"}
INVENTORY_TITLES = {"biennial": "Biennial inventory", "initial": "Initial inventory",
                    "other": "Inventory"}
FILING_TITLES = {"dea_notice": "Written notice to DEA (within 1 business day)",
                 "form_106": "DEA Form 106 (within 45 days)"}
# A period's days as the dispensing log's form names them, beside the API's names.
PERIOD_FIELDS = {"from": "since", "to": "until"}
HAS_OFFSET = re.compile(r"(Z|[+-]\d\d(:?\d\d)?)$")


class PageSchema(ma.Schema):
    """Which page of a list."""

    class Meta:
        unknown = ma.EXCLUDE

    limit = bounded.Integer(load_default=PAGE_SIZE, validate=ma.validate.Range(1, 200))
    offset = bounded.Integer(load_default=0, validate=ma.validate.Range(0))


class DaySchema(PageSchema):
    """A day of shifts, in the organisation's timezone (default: today)."""

    day = bounded.Date(load_default=None)


class PeriodSchema(ma.Schema):
    """The dispensing log's days, both included, in the organisation's timezone."""

    class Meta:
        unknown = ma.EXCLUDE

    since = bounded.Date(required=True)
    until = bounded.Date(required=True)


class InventoryDaySchema(ma.Schema):
    """The day of an inventory, at its opening or close of business (default: now)."""

    class Meta:
        unknown = ma.EXCLUDE

    as_of = bounded.Date(load_default=None)
    at = ma.fields.String(load_default="close", validate=ma.validate.OneOf(["open", "close"]))


class InventoryTakeSchema(InventoryDaySchema):
    """An inventory to take and sign: its kind, and its day's opening or close (default: now)."""

    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(inventories.KINDS))


def _query(schema: ma.Schema) -> tuple[dict, FormRefused | None]:
    """Read the query string through `schema`; on a refusal, its defaults and the refusal."""
    try:
        return load(schema, form_values(request.args)), None
    except FormRefused as refused:
        return schema.load({}), refused


def _names(session: Session) -> dict[str, Any]:
    """Return what the ledger's pages show by name: holders, users and products."""
    users = accounts.list_users(session, caller())
    people = {user.id: user for user in users}
    return {"holder": functools.partial(stock.holder_label, people=people), "people": people,
            "products": {p.id: p.name for p in products.catalogue(session, caller())},
            "kinds": reports.KIND_LABELS, "mg": reports.milligrams}


# Bag reconciliation


def _days(day: date, today: date) -> dict[str, date | None]:
    """Return the day shown and the days its links lead to (none after today)."""
    after = day + timedelta(days=1)
    return {"day": day, "previous_day": day - timedelta(days=1),
            "next_day": after if after <= today else None}


@blp.get("/bags")
@page(*STATEMENT, menu=("Stock", "Bags"))
def bags() -> Response:
    """Reconcile each nurse's bag over her shift of a day: dispensed against what went out."""
    session, rt = db.session(), runtime()
    query, refused = _query(DaySchema())
    today = shifts.local_today(session, rt, caller().organisation_id)
    day, statements = query["day"] or today, []
    if refused is None:
        try:
            statements = shifts.day_statements(session, rt, caller(), day,
                                               limit=query["limit"], offset=query["offset"])
        except InvalidField as error:
            refused = FormRefused.of(error)
    return render("console/bags.html", status=refused.status if refused else 200,
                  refused=refused, values={"day": request.args.get("day", day.isoformat())},
                  statements=statements, figures=FIGURES, query=query,
                  pages=pager("console.bags", query["offset"], query["limit"],
                              len(statements) == query["limit"], {"day": day.isoformat()}),
                  **_days(day, today), **_names(session))


@blp.get("/bags/<nurse_id>")
@page(*STATEMENT)
def bag_shift(nurse_id: str) -> Response:
    """Show a nurse's bag over her shift of a day, with each movement its statement counts."""
    nurse = object_id(nurse_id)
    if nurse is None:
        raise NotFound("No such nurse.")
    session, rt = db.session(), runtime()
    query, refused = _query(DaySchema())
    today = shifts.local_today(session, rt, caller().organisation_id)
    day, shift = query["day"] or today, None
    if refused is None:
        try:
            shift = shifts.shift_statement(session, rt, caller(), nurse, day)
        except InvalidField as error:
            refused = FormRefused.of(error)
    return render("console/bag.html", status=refused.status if refused else 200,
                  refused=refused, values={"day": request.args.get("day", day.isoformat())},
                  nurse=shift.nurse if shift else shifts.nurse_of(session, caller(), nurse),
                  shift=shift, figures=FIGURES, **_days(day, today), **_names(session))


# Losses


@dataclass(frozen=True)
class Deadline:
    """One filing DEA expects after a loss: when it is due, and whether it was filed."""

    filing: str
    title: str
    due_at: datetime
    filed_at: datetime | None
    overdue: bool
    countdown: str


def _span(length: timedelta) -> str:
    for unit, size in (("day", timedelta(days=1)), ("hour", timedelta(hours=1)),
                       ("minute", timedelta(minutes=1))):
        # Whole days from two days on; below that, hours, so a one-day notice counts down.
        if length >= size * (2 if unit == "day" else 1):
            count = length // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


def deadlines(loss: losses.Loss, now: datetime) -> list[Deadline]:
    """Return a loss's filings with their deadlines counting down from `now`."""
    found = []
    for filing, (due, filed) in losses.FILINGS.items():
        due_at, overdue = getattr(loss.report, due), filing in loss.overdue
        countdown = (f"overdue by {_span(now - due_at)}" if overdue
                     else f"due in {_span(due_at - now)}")
        found.append(Deadline(filing, FILING_TITLES[filing], due_at,
                              getattr(loss.report, filed), overdue, countdown))
    return found


def _losses_page(status: int = 200, refused: FormRefused | None = None,
                 values: dict | None = None, posted: uuid.UUID | None = None) -> Response:
    session, rt = db.session(), runtime()
    query, bad_page = _query(PageSchema())
    found = losses.losses(session, rt, caller())
    shown = found[query["offset"]:query["offset"] + query["limit"]]
    now = rt.clock.now()
    if not any(loss.report.id == posted for loss in shown):
        posted = None  # its refusal then shows at the top of the page
    return render("console/losses.html", status=bad_page.status if bad_page else status,
                  refused=refused or bad_page, values=values or {}, posted=posted,
                  losses=[(loss, deadlines(loss, now)) for loss in shown], now=now,
                  may_file=caller().role in FILERS, titles=FILING_TITLES,
                  query=query, pages=pager("console.loss_list", query["offset"], query["limit"],
                                          query["offset"] + query["limit"] < len(found)),
                  **_names(session))


@blp.get("/losses")
@page(*REPORTS, menu=("Stock", "Losses"))
def loss_list() -> Response:
    """List losses, newest first, with their DEA deadlines counting down."""
    return _losses_page()


def _in_utc(values: dict, name: str) -> dict:
    """Return the form with a time given without an offset read as UTC, as the label says."""
    given = values.get(name)
    if given and not HAS_OFFSET.search(given):
        return {**values, name: f"{given}+00:00"}
    return values


@blp.post("/losses/<loss_id>/filings")
@page(*FILERS)
def record_filing(loss_id: str) -> Response:
    """Record a DEA notice or Form 106 as filed, as POST /custody/losses/<id>/filings does."""
    loss_report = object_id(loss_id)
    if loss_report is None:
        raise NotFound("No such loss report.")
    values: dict = {}
    try:
        values = form_values()
        body = load(FilingSchema(), _in_utc(values, "filed_at"))
        try:
            filed = losses.record_filing(db.session(), runtime(), caller(), loss_report, **body)
        except (InvalidField, Conflict) as error:
            raise FormRefused.of(error) from error
    except FormRefused as refused:
        return _losses_page(refused.status, refused, values, loss_report)
    flash(f"Recorded: {FILING_TITLES[body['filing']]} for the loss of lot {filed.entry.lot} "
          f"(ledger entry {filed.entry.seq}), filed {when(body['filed_at'].astimezone(UTC))}.")
    return redirect(url_for("console.loss_list", **request.args.to_dict()), 303)


# Reports


def _download(text: str, filename: str) -> Response:
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _reports_page(refused: FormRefused | None = None) -> Response:
    session, rt = db.session(), runtime()
    today = shifts.local_today(session, rt, caller().organisation_id)
    values = {"since": today.replace(day=1).isoformat(), "until": today.isoformat(),
              "at": "close"} | request.args.to_dict()
    return render("console/reports.html", status=refused.status if refused else 200,
                  refused=refused, values=values)


@blp.get("/reports")
@page(*REPORTS, menu=("Stock", "Reports"))
def report_list() -> Response:
    """Offer the DEA records: the dispensing log over days, the inventory as of a day."""
    return _reports_page()


def _renamed(refused: FormRefused, names: dict[str, str]) -> FormRefused:
    """Return the refusal with the API's field names as the form names them."""
    if not names.keys() & refused.fields.keys():
        return refused
    # The service's message names the API's field; the form's own names show beside them.
    return FormRefused(refused.status, "Some fields need correcting.",
                       {names.get(name, name): messages
                        for name, messages in refused.fields.items()})


def _dispensing_log() -> tuple[dict, reports.DispensingLog]:
    """Read the log of the form's days, from Since's midnight to the midnight after Until."""
    session = db.session()
    period = load(PeriodSchema(), form_values(request.args))
    zone = organisation_zone(session, caller().organisation_id)
    since = shifts.start_of_day(period["since"], zone)
    until = shifts.start_of_day(period["until"] + timedelta(days=1), zone)
    try:
        return period, attempt(lambda: reports.dispensing_log(session, runtime(), caller(),
                                                              since, until))
    except FormRefused as refused:
        raise _renamed(refused, PERIOD_FIELDS) from refused


@blp.get("/reports/dispensing")
@page(*REPORTS)
def dispensing_report() -> Response:
    """Show the dispensing log of a period as a printable page; an audited PHI read."""
    try:
        period, log = _dispensing_log()
    except FormRefused as refused:
        return _reports_page(refused)
    return render("console/report_dispensing.html", log=log, period=period,
                  query=request.args.to_dict(), now=runtime().clock.now())


@blp.get("/reports/dispensing.csv")
@page(*REPORTS)
def dispensing_csv_download() -> Response:
    """Download the dispensing log of a period as the API's CSV; an audited PHI read."""
    try:
        period, log = _dispensing_log()
    except FormRefused as refused:
        return _reports_page(refused)
    return _download(dispensing_csv(log),
                     f"dispensing-{period['since']}-to-{period['until']}.csv")


def _as_of(session: Session, day: date | None, at: str) -> datetime | None:
    """Return the moment of a day's inventory: its midnight (open) or the next one (close)."""
    if day is None:
        return None
    zone = organisation_zone(session, caller().organisation_id)
    return shifts.start_of_day(day + timedelta(days=1 if at == "close" else 0), zone)


def _inventory() -> reports.Inventory:
    """Read the inventory of the form's day, as of its opening or close (default: now)."""
    session = db.session()
    asked = load(InventoryDaySchema(), form_values(request.args))
    as_of = _as_of(session, asked["as_of"], asked["at"])
    return attempt(lambda: reports.inventory(session, runtime(), caller(), as_of, asked["at"]))


@blp.get("/reports/inventory")
@page(*REPORTS)
def inventory_report() -> Response:
    """Show the inventory of the vault and every bag as a printable page."""
    try:
        stock = _inventory()
    except FormRefused as refused:
        return _reports_page(refused)
    return render("console/report_inventory.html", stock=stock, query=request.args.to_dict(),
                  now=runtime().clock.now())


@blp.get("/reports/inventory.csv")
@page(*REPORTS)
def inventory_csv_download() -> Response:
    """Download the inventory as the API's CSV."""
    try:
        stock = _inventory()
    except FormRefused as refused:
        return _reports_page(refused)
    return _download(inventory_csv(stock), f"inventory-{stock.date}-{stock.at}.csv")


# Signed inventories


def _inventories_page(status: int = 200, refused: FormRefused | None = None,
                      values: dict | None = None) -> Response:
    return render("console/inventories.html", status=status, refused=refused,
                  values=values or {"at": "close", "kind": "biennial"},
                  inventories=inventories.records(db.session(), caller()),
                  may_take=caller().role in TAKERS, kinds=INVENTORY_KINDS)


@blp.get("/reports/inventories")
@page(*REPORTS)
def inventory_list() -> Response:
    """List the signed inventories, each checked against its hash; a pharmacist takes one."""
    return _inventories_page()


@blp.post("/reports/inventories")
@page(*TAKERS)
def take_inventory() -> Response:
    """Take and sign an inventory, as POST /custody/inventories does (a fresh factor)."""
    session, values = db.session(), {}
    try:
        values = form_values()
        asked = load(InventoryTakeSchema(), values)
        as_of = _as_of(session, asked["as_of"], asked["at"])
        taken = attempt(lambda: inventories.take(session, runtime(), caller(), asked["kind"],
                                                 as_of, asked["at"]))
    except FormRefused as refused:
        return _inventories_page(refused.status, refused, values)
    lines = len(taken.lines)
    flash(f"Signed the {taken.kind} inventory as of {when(taken.as_of)}, {taken.at} of "
          f"business: {lines} line{'' if lines == 1 else 's'}.")
    return redirect(url_for("console.signed_inventory", inventory_id=taken.id), 303)


def _signed_inventory(inventory_id: str) -> inventories.SignedInventory:
    found = object_id(inventory_id)
    if found is None:
        raise NotFound("No such inventory.")
    return inventories.get(db.session(), caller(), found)


@blp.get("/reports/inventories/<inventory_id>")
@page(*REPORTS)
def signed_inventory(inventory_id: str) -> Response:
    """Show a signed inventory as a printable page, with its signature and whether it verifies."""
    return render("console/inventory_record.html", signed=_signed_inventory(inventory_id),
                  kinds=INVENTORY_KINDS, titles=INVENTORY_TITLES, now=runtime().clock.now())


@blp.get("/reports/inventories/<inventory_id>.csv")
@page(*REPORTS)
def signed_inventory_csv_download(inventory_id: str) -> Response:
    """Download a signed inventory as the API's CSV."""
    signed = _signed_inventory(inventory_id)
    return _download(signed_inventory_csv(signed),
                     f"inventory-{signed.kind}-{signed.date}-{signed.at}.csv")
