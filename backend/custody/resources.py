"""HTTP endpoints for the custody ledger."""

from __future__ import annotations

from flask.views import MethodView

from backend import db
from backend.accounts.models import Role
from backend.api import Blueprint
from backend.auth.guard import current_caller, requires
from backend.custody import service
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


@blp.route("/entries")
class Entries(MethodView):
    """The ledger."""

    @requires(*READERS)
    @blp.arguments(EntryQuerySchema, location="query")
    @blp.response(200, EntrySchema(many=True))
    def get(self, query):
        """List entries in chain order by holder, lot, kind and time (a nurse: her bag's)."""
        return service.entries(db.session(), current_caller(), service.EntryFilter(**query))

    @requires(Role.PHARMACIST, Role.NURSE)
    @blp.arguments(EntryCreateSchema)
    @blp.response(201, EntrySchema)
    def post(self, body):
        """Record one entry: pharmacists receive, dispense, adjust, destroy; nurses administer,
        waste, transfer and return from their phone; either reports a loss."""
        session = db.session()
        witnesses = [service.Witness(**w) for w in body.pop("witnesses")]
        entry = service.record(session, runtime(), current_caller(),
                               service.EntryRequest(witnesses=witnesses, **body))
        session.commit()
        return entry


@blp.route("/balances")
class Balances(MethodView):
    """What each holder holds."""

    @requires(*READERS)
    @blp.arguments(BalanceQuerySchema, location="query")
    @blp.response(200, BalanceSchema(many=True))
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
