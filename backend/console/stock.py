"""The pharmacist's stock: inventory, movements through the custody service, counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import flash, make_response, redirect, request, url_for
from werkzeug.wrappers import Response

from backend import bounded, db
from backend.accounts import service as accounts
from backend.accounts.models import Role
from backend.console.pages import (
    FormRefused,
    blp,
    caller,
    form_values,
    load,
    object_id,
    page,
    pager,
    render,
)
from backend.custody import counts, reports, service
from backend.custody.ledger import MAX_MOVEMENT_UG, VAULT, bag
from backend.custody.models import CustodyEntry, Kind
from backend.custody.report_schemas import CountCreateSchema, CountLineSchema
from backend.custody.resources import READERS, REPORT_READERS
from backend.custody.schemas import EntryCreateSchema
from backend.errors import NotFound, VigilError
from backend.products import service as products
from backend.runtime import runtime

# The entries API's readers, less nurses, who have no console.
LEDGER_READERS = tuple(role for role in READERS if role != Role.NURSE)
# A lot this close to its expiry is marked on the inventory, so it is used or returned first.
EXPIRING_WITHIN_DAYS = 30
PAGE = 20
# Where a refusal that names no field of its own belongs on a movement form.
BESIDE = {"insufficient_stock": "quantity_mg", "balance_limit": "quantity_mg",
          "seal_mismatch": "details.seal_id", "witness_required": "witnesses",
          "locked_out": "witnesses", "not_found": "product_id"}
# The kinds a desk records, in the order of the movements page's selector.
KIND_TITLES = {Kind.RECEIVE: "Receive from a supplier", Kind.DISPENSE: "Dispense to a nurse",
               Kind.RETURN: "Take a return", Kind.DESTROY: "Record a destruction",
               Kind.ADJUST: "Adjust with a reason"}
HOLDERS = {VAULT: "Vault", "supplier": "Supplier", "destruction": "Destruction",
           "count": "Count", "waste": "Waste", "loss": "Loss"}


class Milligrams(ma.fields.Decimal):
    """A quantity typed in mg, loaded as the API's whole micrograms."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        mg = super()._deserialize(value, attr, data, **kwargs)
        # Bounded before any arithmetic, so no exponent can overflow the decimal context.
        if not mg.is_finite() or mg.adjusted() > 12 or mg != mg.quantize(Decimal("0.001")):
            raise ma.ValidationError("Give mg with at most three decimals (whole µg).")
        return int(mg.scaleb(3))


def _in_mg(low_ug: int) -> ma.validate.Range:
    return ma.validate.Range(low_ug, MAX_MOVEMENT_UG, error=(
        f"Must be from {reports.milligrams(low_ug)} to {reports.milligrams(MAX_MOVEMENT_UG)} mg."))


class MovementForm(EntryCreateSchema):
    """The API's entry body as a desk form: mg rather than µg, and times typed in UTC."""

    quantity_ug = Milligrams(required=True, data_key="quantity_mg", validate=_in_mg(1))
    occurred_at = bounded.DateTime(required=True, default_timezone=UTC)


class CountLineForm(CountLineSchema):
    """A counted lot typed in mg, with the reason for its difference if there is one."""

    quantity_ug = Milligrams(required=True, data_key="quantity_mg", validate=_in_mg(0))
    reason = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 2000))


class CountForm(CountCreateSchema):
    """The API's count body as a desk form: each lot's reason beside it, times in UTC."""

    counted_at = bounded.DateTime(required=True, default_timezone=UTC)
    counts = ma.fields.List(ma.fields.Nested(CountLineForm), load_default=list)

    @ma.post_load
    def _reasons_by_lot(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        given = {line["lot"]: reason for line in data["counts"]
                 if (reason := line.pop("reason", None))}
        return {**data, "reasons": {**data["reasons"], **given}}


class ReasonForm(ma.Schema):
    """The reason for one lot's discrepancy in a recorded count."""

    product_id = ma.fields.UUID(required=True)
    lot = ma.fields.String(required=True, validate=ma.validate.Length(1, 40))
    reason = ma.fields.String(required=True, validate=ma.validate.Length(1, 2000))
    expiry = bounded.Date(load_default=None)


class PageSchema(ma.Schema):
    """Which page of a list to show."""

    limit = bounded.Integer(load_default=PAGE, validate=ma.validate.Range(1, 200))
    offset = bounded.Integer(load_default=0, validate=ma.validate.Range(0))


def _nested(values: Mapping[str, str]) -> dict[str, Any]:
    """Return a form's flat names (`details.seal_id`, `witnesses.0.user_id`) as a JSON body."""
    body: dict[str, Any] = {}
    for name, value in values.items():
        *path, last = name.split(".")
        node = body
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FormRefused(422, "Some fields need correcting.", {name: ["Not a field."]})
        if isinstance(node.get(last), dict):
            raise FormRefused(422, "Some fields need correcting.", {name: ["Not a field."]})
        node[last] = value
    return _listed(body)


def _listed(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isascii() and key.isdigit() for key in node):
        return [_listed(node[key]) for key in sorted(node, key=int)]
    return {key: _listed(value) for key, value in node.items()}


def _recorded(work: Callable[[], Any]) -> Any:
    """Run a custody service call; a refusal that names no field goes beside the one it means."""
    try:
        return work()
    except VigilError as error:
        refused = FormRefused.of(error)
        if not refused.fields and error.code in BESIDE:
            refused.fields[BESIDE[error.code]] = [error.message]
        raise refused from error


def _refused_page(template: str, refused: FormRefused, **context: Any) -> Response:
    # A Response, not a tuple: the unit of work sees its status and rolls the service back.
    return make_response(render(template, status=refused.status, refused=refused, **context))


def _page_of(args: Mapping[str, Any]) -> dict[str, int]:
    return load(PageSchema(), {name: args[name] for name in ("limit", "offset") if name in args})


def _now_in_form() -> str:
    """Return now in UTC to the minute, as a datetime-local field shows it."""
    return runtime().clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _people() -> dict[uuid.UUID, Any]:
    return {user.id: user for user in accounts.list_users(db.session(), caller())}


def _names(people: Mapping[uuid.UUID, Any]) -> Callable[[Any], str]:
    """Return a lookup of a user's display name by id (a UUID or its text)."""
    def name_of(raw: Any) -> str:
        person = people.get(raw if isinstance(raw, uuid.UUID) else object_id(str(raw)))
        return person.display_name if person else "an unknown user"
    return name_of


def holder_label(holder: str, people: Mapping[uuid.UUID, Any]) -> str:
    """Name a ledger holder: the vault, a nurse's bag by her name, or where stock went."""
    if holder.startswith("bag:"):
        return f"Bag of {_names(people)(holder.removeprefix('bag:'))}"
    if holder.startswith("patient:"):
        return "A patient"
    return HOLDERS.get(holder, holder)


def expiry_note(expiry: date, today: date) -> str | None:
    """Say how soon a lot expires when it is within the marked window, else None."""
    days = (expiry - today).days
    if days > EXPIRING_WITHIN_DAYS:
        return None
    if days < 0:
        return f"expired {-days} day{'s' if days != -1 else ''} ago"
    return "expires today" if days == 0 else f"expires in {days} day{'s' if days != 1 else ''}"


@blp.get("/inventory")
@page(*REPORT_READERS, menu=("Stock", "Inventory"))
def inventory():
    """Show the vault's and each bag's stock per product and lot, in mg and containers."""
    stock = reports.inventory(db.session(), runtime(), caller(), as_of=None, at="close")
    sections: dict[str, tuple[str, list[tuple[reports.InventoryLine, str | None]]]] = {}
    for line in sorted(stock.lines, key=lambda line: (line.holder != VAULT, line.holder_name,
                                                      line.holder, line.product, line.lot)):
        title = (f"Vault of {line.holder_name}" if line.holder == VAULT
                 else f"Bag of {line.holder_name}")
        sections.setdefault(line.holder, (title, []))[1].append(
            (line, expiry_note(line.expiry, stock.date)))
    return render("console/inventory.html", stock=stock, sections=list(sections.values()),
                  within=EXPIRING_WITHIN_DAYS)


def _choices(users: list[Any]) -> list[tuple[str, str]]:
    return [(str(user.id), f"{user.display_name} ({user.username}, {user.role})")
            for user in users]


def _forms(may_record: bool) -> dict[str, Any]:
    """Return the choices of the movement forms: products, nurses, holders and witnesses."""
    if not may_record:
        return {}
    session, who = db.session(), caller()
    nurses = service.bag_holders(session, who)
    return {"products": [(str(p.id), p.name) for p in products.catalogue(session, who)],
            "nurses": _choices(nurses), "holders": _holder_choices(nurses),
            "witnesses": _choices(service.possible_witnesses(session, who)),
            "directions": [("down", "Down: less was found"), ("up", "Up: more was found")]}


def _movement_page(kind: str, *, status: int = 200, refused: FormRefused | None = None,
                   values: Mapping[str, Any] | None = None) -> Response:
    session, who = db.session(), caller()
    query = _page_of(request.args)
    entries = service.recent_entries(session, who, limit=query["limit"] + 1,
                                     offset=query["offset"])
    may_record = who.role in service.POSTERS[Kind(kind)][0]
    people = _people()
    return make_response(render(
        "console/movements.html", status=status, refused=refused, kind=kind, titles=KIND_TITLES,
        may_record=may_record, choices=_forms(may_record),
        values=values or {"id": str(uuid.uuid4()), "occurred_at": _now_in_form()},
        entries=entries[:query["limit"]], name_of=_names(people), holder_label=holder_label,
        people=people, mg=reports.milligrams,
        product_names={p.id: p.name for p in products.catalogue(session, who)},
        pages=pager("console.movements", query["offset"], query["limit"],
                    len(entries) > query["limit"], {"kind": kind})))


def _kind_of(raw: str | None) -> str:
    return raw if raw in {kind.value for kind in KIND_TITLES} else Kind.RECEIVE.value


@blp.get("/movements")
@page(*LEDGER_READERS, menu=("Stock", "Movements"))
def movements():
    """Show the form of one kind of movement and the ledger's newest entries."""
    try:
        return _movement_page(_kind_of(request.args.get("kind")))
    except FormRefused as refused:
        return _refused_page("console/refused.html", refused, message=refused.message)


@blp.post("/movements")
@page(*service.PHARMACY)
def record_movement():
    """Record a movement through the custody service, as POST /api/v1/custody/entries does."""
    values: dict[str, Any] = {}
    try:
        values = form_values()
        entry_request = load(MovementForm(), _nested(values))
        entry = _recorded(lambda: service.record(db.session(), runtime(), caller(),
                                                 entry_request))
    except FormRefused as refused:
        kept = {name: value for name, value in values.items() if not name.endswith("password")}
        return _movement_page(_kind_of(values.get("kind")), status=refused.status,
                              refused=refused, values=kept)
    flash(f"Recorded {entry.kind} of {reports.milligrams(entry.quantity_ug)} mg of lot "
          f"{entry.lot} as ledger entry seq {entry.seq}, hash {entry.entry_hash}.")
    return redirect(url_for("console.movements", kind=entry.kind), code=303)


def _holder_choices(nurses: list[Any]) -> list[tuple[str, str]]:
    return [(VAULT, "Vault"), *((bag(nurse.id), f"Bag of {nurse.display_name}")
                                for nurse in nurses)]


def _countable(people: Mapping[uuid.UUID, Any]) -> list[tuple[str, str]]:
    """Return the holders a count may be of: the vault, and each bag that holds stock or
    belongs to an active nurse (a bag outlives its nurse's account until it is emptied)."""
    session, who = db.session(), caller()
    bags = ({balance.holder for balance in service.balances(session, who, None)}
            | {bag(nurse.id) for nurse in service.bag_holders(session, who)}) - {VAULT}
    named = sorted((holder_label(held, people), held) for held in bags)
    return [(VAULT, "Vault"), *((held, label) for label, held in named)]


@dataclass(frozen=True)
class Sheet:
    """A count sheet: the holder counted, the holders to choose from, and the lots it holds."""

    holder: str
    holders: list[tuple[str, str]]
    lots: list[Any]


def _sheet(holder: str, *, refused: bool = False) -> Sheet:
    """Return the count sheet of `holder`; read before a count, so a refusal shows it as it was.

    A holder that is no choice here is 404, or the vault's sheet beside a refused count of it.
    """
    session, who = db.session(), caller()
    holders = _countable(_people())
    if holder not in dict(holders):
        if not refused:
            raise NotFound("No such holder to count.")
        holder = VAULT
    return Sheet(holder, holders, service.balances(session, who, holder))


def _counts_page(sheet: Sheet, *, status: int = 200, refused: FormRefused | None = None,
                 values: Mapping[str, Any] | None = None) -> Response:
    session, who = db.session(), caller()
    query = _page_of(request.args)
    recent = counts.recorded_counts(session, who, limit=query["limit"] + 1,
                                    offset=query["offset"])
    catalogue = products.catalogue(session, who)
    people = _people()
    return make_response(render(
        "console/counts.html", status=status, refused=refused, sheet=sheet,
        products=[(str(p.id), p.name) for p in catalogue],
        product_names={p.id: p.name for p in catalogue},
        values=values or {"id": str(uuid.uuid4()), "counted_at": _now_in_form()},
        recent=recent[:query["limit"]], people=people, name_of=_names(people),
        holder_label=holder_label, mg=reports.milligrams,
        pages=pager("console.count_sheet", query["offset"], query["limit"],
                    len(recent) > query["limit"], {"holder": sheet.holder})))


@blp.get("/counts")
@page(Role.PHARMACIST, menu=("Stock", "Counts"))
def count_sheet():
    """Show a count sheet for the vault or a bag, and the recent counts with their results."""
    try:
        return _counts_page(_sheet(request.args.get("holder", VAULT)))
    except FormRefused as refused:
        return _refused_page("console/refused.html", refused, message=refused.message)


@blp.post("/counts")
@page(Role.PHARMACIST)
def record_count():
    """Reconcile a physical count with the ledger, as POST /api/v1/custody/counts does."""
    values: dict[str, Any] = {}
    sheet = None
    try:
        values = form_values()
        sheet = _sheet(values.get("holder", VAULT), refused=True)
        body = load(CountForm(), _nested(values))
        lines = [counts.CountedLot(**line) for line in body.pop("counts")]
        count = _recorded(lambda: counts.reconcile(db.session(), runtime(), caller(),
                                                   counts.CountRequest(counts=lines, **body)))
    except FormRefused as refused:
        return _counts_page(sheet or _sheet(VAULT), status=refused.status, refused=refused,
                            values=values)
    flash(f"Count recorded: {len(count.lots)} lot(s), {count.discrepancies} "
          f"discrepanc{'y' if count.discrepancies == 1 else 'ies'}.")
    return redirect(url_for("console.count_result", count_id=count.id), code=303)


def _count_page(count_id: uuid.UUID, *, status: int = 200, refused: FormRefused | None = None,
                values: Mapping[str, Any] | None = None) -> Response:
    session, who = db.session(), caller()
    recorded = counts.recorded_count(session, who, count_id)
    people = _people()
    return make_response(render(
        "console/count.html", status=status, refused=refused, values=values or {},
        recorded=recorded, people=people, name_of=_names(people), holder_label=holder_label,
        mg=reports.milligrams,
        product_names={p.id: p.name for p in products.catalogue(session, who)}))


@blp.get("/counts/<count_id>")
@page(Role.PHARMACIST)
def count_result(count_id: str):
    """Show one count lot by lot: its differences, their flags, and a reason form for each."""
    found = object_id(count_id)
    if found is None:
        raise NotFound("No such count.")
    return _count_page(found)


@blp.post("/counts/<count_id>/reasons")
@page(Role.PHARMACIST)
def explain_count(count_id: str):
    """Correct a lot of a count with a reason: the count is reconciled again under its id."""
    found = object_id(count_id)
    if found is None:
        raise NotFound("No such count.")
    values: dict[str, Any] = {}
    try:
        values = form_values()
        body = load(ReasonForm(), values)
        count = _recorded(lambda: counts.explain(db.session(), runtime(), caller(), found,
                                                 **body))
    except FormRefused as refused:
        return _count_page(found, status=refused.status, refused=refused, values=values)
    adjusted = next((line.adjustment_id for line in count.lots
                     if (line.product_id, line.lot) == (body["product_id"], body["lot"])), None)
    if adjusted is None:
        flash(f"Lot {body['lot']} no longer differs from the ledger as of the count.")
    else:
        entry: CustodyEntry = service.get_entry(db.session(), caller(), adjusted)
        flash(f"Lot {entry.lot} corrected by ledger entry seq {entry.seq}, hash "
              f"{entry.entry_hash}; its flag now records the reason.")
    return redirect(url_for("console.count_result", count_id=found), code=303)
