"""HTTP endpoints for the custody ledger."""

from __future__ import annotations

import uuid

from flask import Response
from flask.views import MethodView

from backend import db, examples
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.custody import counts, inventories, losses, reports, service, shifts
from backend.custody.report_schemas import (
    BagStatementSchema,
    CountCreateSchema,
    CountSchema,
    DispensingLogSchema,
    DispensingQuerySchema,
    FilingSchema,
    InventoryQuerySchema,
    InventorySchema,
    InventoryTakeSchema,
    LossSchema,
    SignedInventoryQuerySchema,
    SignedInventorySchema,
    SignedInventorySummarySchema,
    StatementQuerySchema,
    dispensing_csv,
    inventory_csv,
    signed_inventory_csv,
)
from backend.custody.schemas import (
    BalanceQuerySchema,
    BalanceSchema,
    CheckpointSchema,
    EntryCreateSchema,
    EntryQuerySchema,
    EntrySchema,
)
from backend.runtime import runtime

blp = Blueprint("custody", __name__, url_prefix="/custody", description=(
    "The controlled-substance chain of custody: an append-only, hash-chained ledger in integer "
    "micrograms. Error codes: `insufficient_stock`, `witness_required`, `seal_mismatch`, "
    "`signature_invalid`, `append_only`."))
READERS = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.NURSE)
REPORT_READERS = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE)
FILERS = (Role.PHARMACIST, Role.COMPLIANCE)
NO_SUCH_BAG = "`not_found`: no such bag (a nurse sees only her own)."


@blp.route("/entries")
class Entries(MethodView):
    """The ledger."""

    @requires(*READERS)
    @blp.arguments(EntryQuerySchema, location="query")
    @blp.response(200, EntrySchema(many=True))
    @blp.refusal(404, NO_SUCH_BAG)
    def get(self, query):
        """List entries in chain order by holder, lot, kind and time (a nurse: her bag's)."""
        return service.entries(db.session(), current_caller(), service.EntryFilter(**query))

    @requires(Role.PHARMACIST, Role.NURSE)
    @blp.arguments(EntryCreateSchema, example=examples.RECEIPT)
    @blp.response(201, EntrySchema)
    @blp.refusal(403, "`mfa_required`: a pharmacist's `destroy`, `adjust` or `loss` needs a "
                 "second factor proved within the organisation's step-up window (details."
                 "action `custody.destroy`, `custody.adjust`, `custody.loss_report`): confirm "
                 "one at POST /auth/step-up and post again. A nurse's entries are never "
                 "refused for this.")
    @blp.refusal(404, "`not_found`: no such product or visit in the caller's organisation.")
    @blp.refusal(409, "`insufficient_stock`, `balance_limit`, `seal_mismatch`, `append_only` "
                 "(another entry under this id), `conflict`.")
    @blp.refusal(429, "`locked_out`: too many wrong witness passwords for the witness's "
                 "account or this address; see Retry-After.")
    def post(self, body):
        """Record one entry: pharmacists receive, dispense, adjust, destroy; nurses administer,
        waste, transfer and return from their phone; either reports a loss."""
        session = db.session()
        entry = service.record(session, runtime(), current_caller(), body)
        return entry


@blp.route("/balances")
class Balances(MethodView):
    """What each holder holds."""

    @requires(*READERS)
    @blp.arguments(BalanceQuerySchema, location="query")
    @blp.response(200, BalanceSchema(many=True))
    @blp.refusal(404, NO_SUCH_BAG)
    def get(self, query):
        """List balances per holder and lot, kept in step with the ledger."""
        return service.balances(db.session(), current_caller(), query.get("holder"))


@blp.route("/checkpoints")
class Checkpoints(MethodView):
    """Signed checkpoints of the chain."""

    @requires(Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE)
    @blp.response(200, CheckpointSchema(many=True))
    def get(self):
        """List the server's signed checkpoints of the chain head, newest first."""
        return service.checkpoints(db.session(), current_caller())


@blp.route("/counts")
class Counts(MethodView):
    """Physical counts reconciled against the ledger."""

    @requires(Role.PHARMACIST)
    @blp.arguments(CountCreateSchema, example=examples.COUNT)
    @blp.response(201, CountSchema)
    @blp.refusal(403, "`mfa_required`: a count with a reason adjusts the ledger, which needs a "
                 "second factor proved within the organisation's step-up window (details."
                 "action `custody.adjust`): confirm one at POST /auth/step-up and post again.")
    @blp.refusal(404, "`not_found`: no such product in the caller's organisation.")
    def post(self, body):
        """Reconcile a count with the ledger: flag each discrepancy, adjust those with a reason."""
        session = db.session()
        lines = [counts.CountedLot(**line) for line in body.pop("counts")]
        count = counts.reconcile(session, runtime(), current_caller(),
                                 counts.CountRequest(counts=lines, **body))
        return count


@blp.route("/losses")
class Losses(MethodView):
    """Thefts and significant losses, with their DEA deadlines."""

    @requires(*REPORT_READERS)
    @blp.response(200, LossSchema(many=True))
    def get(self):
        """List loss reports, newest first, with each deadline and whether it is overdue."""
        return losses.losses(db.session(), runtime(), current_caller())


@blp.route("/losses/<uuid:loss_id>/filings")
class LossFilings(MethodView):
    """What was filed with DEA about a loss."""

    @requires(*FILERS)
    @blp.arguments(FilingSchema)
    @blp.response(201, LossSchema)
    @blp.refusal(409, "`conflict`: this filing is already recorded.")
    def post(self, body, loss_id: uuid.UUID):
        """Record the written DEA notice or Form 106 as filed; each is filed once."""
        session = db.session()
        loss = losses.record_filing(session, runtime(), current_caller(), loss_id, **body)
        return loss


@blp.route("/bags/<uuid:nurse_id>/statement")
class Statement(MethodView):
    """A nurse's bag, lot by lot."""

    @requires(*READERS)
    @blp.arguments(StatementQuerySchema, location="query")
    @blp.response(200, BagStatementSchema)
    def get(self, query, nurse_id: uuid.UUID):
        """Show a bag's movements and remainder per lot over a period (a nurse: her own bag)."""
        return shifts.bag_statement(db.session(), runtime(), current_caller(), nurse_id,
                                    **query)


def _csv(text: str, name: str) -> Response:
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


# Documents the CSV beside the JSON (the description of the last one documented wins).
CSV = {"schema": {"type": "string"}, "content_type": "text/csv", "success": True}


@blp.route("/reports/dispensing")
class DispensingReport(MethodView):
    """The dispensing log of 21 CFR 1304.22(c)."""

    @requires(*REPORT_READERS)
    @blp.arguments(DispensingQuerySchema, location="query")
    @blp.response(200, DispensingLogSchema)
    @blp.alt_response(200, description=(
        "The log; with `format=csv`, its events as text/csv (RFC 4180) with a header row."),
        **CSV)
    def get(self, query):
        """List each custody event of a period with what 1304.22(c) asks; an audited PHI read."""
        session = db.session()
        output = query.pop("output")
        log = reports.dispensing_log(session, runtime(), current_caller(), **query)
        if output == "csv":
            return _csv(dispensing_csv(log), "dispensing")
        return log


@blp.route("/reports/inventory")
class InventoryReport(MethodView):
    """The inventory of 21 CFR 1304.11."""

    @requires(*REPORT_READERS)
    @blp.arguments(InventoryQuerySchema, location="query")
    @blp.response(200, InventorySchema)
    @blp.alt_response(200, description=(
        "The inventory; with `format=csv`, one text/csv row per holder and lot, each with the "
        "registrant, the inventory's date, open/close and who took it."), **CSV)
    def get(self, query):
        """Show the vault's and each bag's stock per lot as the ledger stood at `as_of`."""
        output = query.pop("output")
        stock = reports.inventory(db.session(), runtime(), current_caller(), **query)
        if output == "csv":
            return _csv(inventory_csv(stock), "inventory")
        return stock


@blp.route("/inventories")
class Inventories(MethodView):
    """Inventories taken and signed (21 CFR 1304.11), kept as they were signed."""

    @requires(*REPORT_READERS)
    @blp.response(200, SignedInventorySummarySchema(many=True))
    def get(self):
        """List the signed inventories, the latest as_of first, each checked against its hash."""
        return inventories.records(db.session(), current_caller())

    @requires(*inventories.TAKERS)
    @blp.arguments(InventoryTakeSchema, example=examples.INVENTORY)
    @blp.response(201, SignedInventorySchema)
    @blp.refusal(403, "`forbidden`: only a pharmacist takes and signs an inventory. "
                 "`mfa_required`: signing needs a second factor proved within the "
                 "organisation's step-up window (details.action `custody.inventory_sign`): "
                 "confirm one at POST /auth/step-up and post again.")
    @blp.refusal(422, "`validation_error`: a bad kind or at, or an as_of in the future.")
    def post(self, body):
        """Take the inventory of the vault and every bag as the ledger stood at `as_of`, and
        sign it: each line is stored as taken, with the SHA-256 of the whole; audited."""
        session, caller = db.session(), current_caller()
        taken = inventories.take(session, runtime(), caller, **body)
        return inventories.get(session, caller, taken.id)


@blp.route("/inventories/<uuid:inventory_id>")
class InventoryDetail(MethodView):
    """One signed inventory."""

    @requires(*REPORT_READERS)
    @blp.arguments(SignedInventoryQuerySchema, location="query")
    @blp.response(200, SignedInventorySchema)
    @blp.alt_response(200, description=(
        "The signed inventory; with `format=csv`, one text/csv row per line, each with the "
        "registrant, the inventory's id, kind, date, open/close, signer and hash."), **CSV)
    def get(self, query, inventory_id: uuid.UUID):
        """Show a signed inventory as it was stored, with whether it still matches its hash."""
        signed = inventories.get(db.session(), current_caller(), inventory_id)
        if query["output"] == "csv":
            return _csv(signed_inventory_csv(signed), f"inventory-{signed.date}-{signed.at}")
        return signed
