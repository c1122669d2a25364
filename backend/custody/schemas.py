"""Request and response bodies for the custody ledger's entries, balances and checkpoints."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from backend import bounded
from backend.custody.ledger import MAX_MOVEMENT_UG
from backend.custody.models import Kind
from backend.custody.service import EntryRequest, Witness

SIGNING = (
    "Nurses sign with their registered phone: Ed25519 over the RFC 8785 canonical JSON of "
    "`{id, kind, product_id, lot, expiry, quantity_ug, from_holder, to_holder, visit_id, "
    "details, occurred_at}`, where holders are `vault`, `bag:<nurse id>`, `patient:<patient "
    "id>`, `waste`, and `occurred_at` is UTC with microseconds "
    "(`2026-11-03T15:00:00.000000+00:00`). A witness signs the same object; one whose phone "
    "times its confirmation sends `attested_at` and signs the object with `attested_at` added, "
    "in the same UTC form.")
# What a receipt may state beside its own quantity; kept in its details (encrypted, hashed).
RECEIPT_QUANTITIES = ("ordered_ug", "invoiced_ug")


def _receipt_quantity(what: str) -> fields.Field:
    return bounded.Integer(load_default=None, strict=True,
                           validate=validate.Range(1, MAX_MOVEMENT_UG), metadata={
                               "description": f"receive only: integer micrograms {what}, kept "
                                              f"in details; a receipt of any other quantity "
                                              "raises `pharmacy.receipt_mismatch`."})


class WitnessSchema(Schema):
    """A witness's own confirmation: a signature from their phone, or their password."""

    user_id = fields.UUID(required=True)
    device_id = fields.UUID(load_default=None)
    signature = fields.String(load_default=None, validate=validate.Length(1, 100), metadata={
        "description": "The witness's phone's Ed25519 signature over the movement, as the "
                       "recording phone signs it; with `attested_at`, over the movement with "
                       "`attested_at` added to it."})
    password = fields.String(load_default=None, load_only=True,
                             validate=validate.Length(1, 1024))
    attested_at = bounded.DateTime(load_default=None, metadata={
        "description": "When the witness's phone confirmed (its clock, ISO 8601 with an "
                       "offset); only with `device_id` and `signature`, which then cover it. "
                       "A witness who watched the waste confirms as it happens: one who "
                       "confirms long after it raises `waste.witness_late`."})

    @validates_schema
    def _signed_time(self, data: dict[str, Any], **_kwargs) -> None:
        # Only the witness's own signature makes her time hers: a time beside a password is
        # whatever the recording phone said.
        if data.get("attested_at") and not (data.get("device_id") and data.get("signature")):
            raise ValidationError("is signed by the witness's phone: send it with device_id "
                                  "and signature", "attested_at")


class EntryCreateSchema(Schema):
    """A custody entry; its kind decides which fields it needs and who may post it."""

    id = fields.UUID(load_default=None, metadata={
        "description": "Client-made UUID: a retry with the same entry is answered, not doubled."})
    kind = fields.Enum(Kind, by_value=True, required=True)
    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    expiry = bounded.Date(required=True)
    quantity_ug = bounded.Integer(required=True, strict=True,
                                  validate=validate.Range(1, MAX_MOVEMENT_UG),
                                  metadata={"description": "Integer micrograms."})
    occurred_at = bounded.DateTime(required=True)
    nurse_id = fields.UUID(load_default=None, metadata={
        "description": "dispense: the receiving nurse; transfer: the other nurse; "
                       "return by a pharmacist: the returning nurse."})
    holder = fields.String(load_default=None, validate=validate.Length(1, 60), metadata={
        "description": "adjust and a pharmacist's loss: `vault` or `bag:<nurse id>`."})
    patient_id = fields.UUID(load_default=None)
    visit_id = fields.UUID(load_default=None)
    corrects_id = fields.UUID(load_default=None, metadata={
        "description": "The entry this one corrects (entries are never changed)."})
    ordered_ug = _receipt_quantity("on the purchase order (DEA Form 222 or CSOS)")
    invoiced_ug = _receipt_quantity("on the supplier's invoice or packing slip")
    details = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict,
                          metadata={"description": (
                              "receive: supplier_name, supplier_address, supplier_dea, invoice "
                              "(and ordered_ug, invoiced_ug when given above); "
                              "dispense, return: seal_id; adjust: reason, direction up|down; "
                              "loss: circumstances; destroy: method.")})
    witnesses = fields.List(fields.Nested(WitnessSchema), load_default=list, metadata={
        "description": "waste: one witness; destroy: two (DEA Form 41)."})
    signature = fields.String(load_default=None, validate=validate.Length(1, 100),
                              metadata={"description": SIGNING})

    @post_load
    def _request(self, data: dict[str, Any], **_kwargs) -> EntryRequest:
        # The API and sync both read entries here, so both hand the ledger the same request.
        witnesses = [Witness(**witness) for witness in data.pop("witnesses")]
        stated = {name: value for name in RECEIPT_QUANTITIES
                  if (value := data.pop(name, None)) is not None}
        if stated and data["kind"] != Kind.RECEIVE:
            raise ValidationError("Only a receipt states an ordered or invoiced quantity.",
                                  next(iter(stated)))
        return EntryRequest(witnesses=witnesses, **{**data, "details": {
            **data["details"], **stated}})


class VisitWasteSchema(Schema):
    """The waste of a visit's remainder: the custody fields a waste needs, and its witness."""

    id = fields.UUID(load_default=None, metadata={"description": "Client-made UUID."})
    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    expiry = bounded.Date(required=True)
    quantity_ug = bounded.Integer(required=True, strict=True,
                                  validate=validate.Range(1, MAX_MOVEMENT_UG))
    occurred_at = bounded.DateTime(required=True)
    details = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)
    witnesses = fields.List(fields.Nested(WitnessSchema), required=True,
                            validate=validate.Length(1), metadata={
                                "description": "One witness, who confirms it themselves."})
    signature = fields.String(required=True, validate=validate.Length(1, 100),
                              metadata={"description": SIGNING})


class EntrySchema(Schema):
    """A ledger entry as stored, with its place in the chain."""

    id = fields.UUID()
    seq = fields.Integer()
    kind = fields.String()
    product_id = fields.UUID()
    lot = fields.String()
    expiry = fields.Date()
    quantity_ug = fields.Integer()
    from_holder = fields.String()
    to_holder = fields.String()
    actor_id = fields.UUID()
    device_id = fields.UUID(allow_none=True)
    visit_id = fields.UUID(allow_none=True)
    corrects_id = fields.UUID(allow_none=True)
    details = fields.Dict()
    witnesses = fields.Function(lambda entry: [
        {"user_id": c["user_id"], "method": c["method"],
         **({"attested_at": c["attested_at"]} if "attested_at" in c else {})}
        for c in entry.confirmations])
    occurred_at = fields.AwareDateTime()
    received_at = fields.AwareDateTime()
    prev_hash = fields.String()
    entry_hash = fields.String()
    server_key_id = fields.String(allow_none=True, metadata={
        "description": "The id of the server key that signed `entry_hash` at append (null on "
                       "entries from before signing began)."})
    server_signature = fields.String(allow_none=True, metadata={
        "description": "The server's Ed25519 signature, base64, over `vigil custody entry ` "
                       "followed by `entry_hash`."})


class EntryQuerySchema(Schema):
    """Filters for listing entries."""

    holder = fields.String(validate=validate.Length(1, 60))
    lot = fields.String(validate=validate.Length(1, 40))
    kind = fields.Enum(Kind, by_value=True)
    since = bounded.DateTime(data_key="from")
    until = bounded.DateTime(data_key="to")
    limit = bounded.Integer(load_default=500, validate=validate.Range(1, 5000))
    after_seq = bounded.Integer(load_default=0, validate=validate.Range(0), metadata={
        "description": "Page by seq: return entries after this one."})


class BalanceQuerySchema(Schema):
    """Filters for balances."""

    holder = fields.String(validate=validate.Length(1, 60))


class BalanceSchema(Schema):
    """What one holder holds of one lot."""

    holder = fields.String()
    product_id = fields.UUID()
    lot = fields.String()
    expiry = fields.Date()
    quantity_ug = fields.Integer()


class CheckpointSchema(Schema):
    """A signed checkpoint of the chain head."""

    seq = fields.Integer()
    head_hash = fields.String()
    signed_at = fields.AwareDateTime()
    signature = fields.String()
    public_key = fields.String()
    key_id = fields.String(metadata={"description": "The id of the server key that signed it."})
