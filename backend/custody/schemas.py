"""Request and response bodies for the custody ledger."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend.custody.models import Kind

SIGNING = (
    "Nurses sign with their registered phone: Ed25519 over the RFC 8785 canonical JSON of "
    "`{id, kind, product_id, lot, expiry, quantity_ug, from_holder, to_holder, visit_id, "
    "details, occurred_at}`, where holders are `vault`, `bag:<nurse id>`, `patient:<patient "
    "id>`, `waste`, and `occurred_at` is UTC with microseconds "
    "(`2026-11-03T15:00:00.000000+00:00`). A witness signs the same object.")


class WitnessSchema(Schema):
    """A witness's own confirmation: a signature from their phone, or their password."""

    user_id = fields.UUID(required=True)
    device_id = fields.UUID(load_default=None)
    signature = fields.String(load_default=None, validate=validate.Length(1, 100))
    password = fields.String(load_default=None, load_only=True,
                             validate=validate.Length(1, 1024))


class EntryCreateSchema(Schema):
    """A custody entry; its kind decides which fields it needs and who may post it."""

    id = fields.UUID(load_default=None, metadata={
        "description": "Client-made UUID: a retry with the same entry is answered, not doubled."})
    kind = fields.Enum(Kind, by_value=True, required=True)
    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    expiry = fields.Date(required=True)
    quantity_ug = fields.Integer(required=True, strict=True,
                                 validate=validate.Range(1, 1_000_000_000),
                                 metadata={"description": "Integer micrograms."})
    occurred_at = fields.AwareDateTime(required=True)
    nurse_id = fields.UUID(load_default=None, metadata={
        "description": "dispense: the receiving nurse; transfer: the other nurse; "
                       "return by a pharmacist: the returning nurse."})
    holder = fields.String(load_default=None, validate=validate.Length(1, 60), metadata={
        "description": "adjust and a pharmacist's loss: `vault` or `bag:<nurse id>`."})
    patient_id = fields.UUID(load_default=None)
    visit_id = fields.UUID(load_default=None)
    corrects_id = fields.UUID(load_default=None, metadata={
        "description": "The entry this one corrects (entries are never changed)."})
    details = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict,
                          metadata={"description": (
                              "receive: supplier_name, supplier_address, supplier_dea, invoice; "
                              "dispense, return: seal_id; adjust: reason, direction up|down; "
                              "loss: circumstances; destroy: method.")})
    witnesses = fields.List(fields.Nested(WitnessSchema), load_default=list, metadata={
        "description": "waste: one witness; destroy: two (DEA Form 41)."})
    signature = fields.String(load_default=None, validate=validate.Length(1, 100),
                              metadata={"description": SIGNING})


class VisitWasteSchema(Schema):
    """The waste of a visit's remainder: the custody fields a waste needs, and its witness."""

    id = fields.UUID(load_default=None, metadata={"description": "Client-made UUID."})
    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    expiry = fields.Date(required=True)
    quantity_ug = fields.Integer(required=True, strict=True,
                                 validate=validate.Range(1, 1_000_000_000))
    occurred_at = fields.AwareDateTime(required=True)
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
        {"user_id": c["user_id"], "method": c["method"]} for c in entry.confirmations])
    occurred_at = fields.AwareDateTime()
    received_at = fields.AwareDateTime()
    prev_hash = fields.String()
    entry_hash = fields.String()


class EntryQuerySchema(Schema):
    """Filters for listing entries."""

    holder = fields.String(validate=validate.Length(1, 60))
    lot = fields.String(validate=validate.Length(1, 40))
    kind = fields.Enum(Kind, by_value=True)
    since = fields.AwareDateTime(data_key="from")
    until = fields.AwareDateTime(data_key="to")
    limit = fields.Integer(load_default=500, validate=validate.Range(1, 5000))
    after_seq = fields.Integer(load_default=0, validate=validate.Range(0), metadata={
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


class CountLineSchema(Schema):
    """What was found of one lot."""

    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    quantity_ug = fields.Integer(required=True, strict=True,
                                 validate=validate.Range(0, 1_000_000_000))
    expiry = fields.Date(load_default=None, metadata={
        "description": "Needed only to adjust a lot the ledger has never held."})


class CountCreateSchema(Schema):
    """A physical count of the vault or one nurse's bag."""

    id = fields.UUID(load_default=None, metadata={
        "description": "Client-made UUID: a retried count makes no second adjustment."})
    holder = fields.String(required=True, validate=validate.Length(1, 60), metadata={
        "description": "`vault` or `bag:<nurse id>`."})
    counted_at = fields.AwareDateTime(required=True, metadata={
        "description": "When the stock was counted: the ledger is read as of this time."})
    counts = fields.List(fields.Nested(CountLineSchema), required=True, metadata={
        "description": "Lots the ledger holds but the count omits are counted as 0."})
    reasons = fields.Dict(keys=fields.String(validate=validate.Length(1, 40)),
                          values=fields.String(validate=validate.Length(1, 2000)),
                          load_default=dict, metadata={"description": (
                              "Lot → reason. A discrepancy with a reason is corrected by an "
                              "`adjust` entry; without one it is only reported and flagged.")})


class LotCountSchema(Schema):
    """One lot's ledger balance, count and difference."""

    product_id = fields.UUID()
    lot = fields.String()
    ledger_ug = fields.Integer()
    counted_ug = fields.Integer()
    difference_ug = fields.Integer(metadata={"description": "Counted less ledger."})
    reason = fields.String(allow_none=True)
    adjustment_id = fields.UUID(allow_none=True, metadata={
        "description": "The `adjust` entry that corrected the ledger, if a reason was given."})
    flag_id = fields.UUID(allow_none=True)


class CountSchema(Schema):
    """A reconciled count."""

    id = fields.UUID()
    holder = fields.String()
    counted_at = fields.AwareDateTime()
    discrepancies = fields.Integer()
    lots = fields.List(fields.Nested(LotCountSchema))


class LossSchema(Schema):
    """A theft or significant loss and its DEA deadlines (21 CFR 1301.76(b))."""

    id = fields.UUID(attribute="report.id")
    entry_id = fields.UUID(attribute="entry.id")
    holder = fields.String(attribute="entry.from_holder")
    product_id = fields.UUID(attribute="entry.product_id")
    lot = fields.String(attribute="entry.lot")
    quantity_ug = fields.Integer(attribute="entry.quantity_ug")
    discovered_at = fields.AwareDateTime(attribute="report.discovered_at")
    circumstances = fields.String(attribute="report.circumstances")
    notice_due_at = fields.AwareDateTime(attribute="report.notice_due_at")
    notice_filed_at = fields.AwareDateTime(attribute="report.notice_filed_at", allow_none=True)
    notice_overdue = fields.Function(lambda loss: "dea_notice" in loss.overdue)
    form_106_due_at = fields.AwareDateTime(attribute="report.form_106_due_at")
    form_106_filed_at = fields.AwareDateTime(attribute="report.form_106_filed_at",
                                             allow_none=True)
    form_106_overdue = fields.Function(lambda loss: "form_106" in loss.overdue)


class FilingSchema(Schema):
    """A filing made to DEA about a loss."""

    filing = fields.String(required=True, validate=validate.OneOf(["dea_notice", "form_106"]),
                           metadata={"description": "`dea_notice`: the written notice due "
                                                    "within 1 business day; `form_106`: DEA "
                                                    "Form 106, due within 45 days."})
    filed_at = fields.AwareDateTime(required=True)


class StatementQuerySchema(Schema):
    """The period of a bag statement, by when the server recorded each movement."""

    since = fields.AwareDateTime(data_key="from", metadata={
        "description": "Default: the start of today in the organisation's timezone."})
    until = fields.AwareDateTime(data_key="to", metadata={"description": "Default: now."})


class StatementLineSchema(Schema):
    """One lot through the bag: opening + in − out = remaining."""

    product_id = fields.UUID()
    lot = fields.String()
    opening_ug = fields.Integer()
    dispensed_ug = fields.Integer(attribute="figures.dispensed_ug")
    transferred_in_ug = fields.Integer(attribute="figures.transferred_in_ug")
    adjusted_up_ug = fields.Integer(attribute="figures.adjusted_up_ug")
    administered_ug = fields.Integer(attribute="figures.administered_ug")
    wasted_ug = fields.Integer(attribute="figures.wasted_ug")
    returned_ug = fields.Integer(attribute="figures.returned_ug")
    transferred_out_ug = fields.Integer(attribute="figures.transferred_out_ug")
    lost_ug = fields.Integer(attribute="figures.lost_ug")
    adjusted_down_ug = fields.Integer(attribute="figures.adjusted_down_ug")
    remaining_ug = fields.Integer()


class BagStatementSchema(Schema):
    """A nurse's bag over a period, lot by lot."""

    nurse_id = fields.UUID()
    holder = fields.String()
    since = fields.AwareDateTime(data_key="from")
    until = fields.AwareDateTime(data_key="to")
    lines = fields.List(fields.Nested(StatementLineSchema))


def _format() -> fields.String:
    return fields.String(data_key="format", load_default="json",
                         validate=validate.OneOf(["json", "csv"]), metadata={
                             "description": "`csv`: text/csv (RFC 4180) with a header row."})


class DispensingQuerySchema(Schema):
    """The period of a dispensing log, by when each event occurred, and its format."""

    since = fields.AwareDateTime(data_key="from", required=True)
    until = fields.AwareDateTime(data_key="to", required=True)
    output = _format()


class DispensingEventSchema(Schema):
    """One event of the dispensing log, one CSV row, in these columns."""

    entry_id = fields.UUID()
    seq = fields.Integer()
    date = fields.Date(metadata={"description": "In the organisation's timezone."})
    occurred_at = fields.AwareDateTime()
    kind = fields.String(metadata={"description": (
        "received, dispensed to nurse, transferred to nurse, administered, wasted, returned, "
        "count adjustment, lost or destroyed.")})
    substance = fields.String()
    product = fields.String()
    dea_schedule = fields.String()
    dosage_form = fields.String()
    strength = fields.String(metadata={"description": "µg per mL or per device."})
    units_per_container = fields.Decimal(as_string=True)
    quantity_ug = fields.Integer()
    quantity_mg = fields.Decimal(as_string=True)
    lot = fields.String()
    expiry = fields.Date()
    from_holder = fields.String()
    recipient = fields.String(metadata={
        "description": "The receiving holder; for an administration `patient:<surrogate id>`."})
    recipient_name = fields.String(metadata={
        "description": "The patient's name (PHI, decrypted: the read is audited), the nurse's "
                       "name, or the registrant's for the vault."})
    recipient_address = fields.String(metadata={"description": "The patient's address (PHI)."})
    supplier_name = fields.String()
    supplier_address = fields.String()
    supplier_dea = fields.String()
    manner = fields.String(metadata={
        "description": "How stock was disposed of: waste, destruction, loss, count correction."})
    by_username = fields.String(metadata={"description": "Who dispensed, administered, etc."})
    witness_usernames = fields.List(fields.String(), metadata={
        "description": "In CSV, joined with `; `."})


class DispensingLogSchema(Schema):
    """The dispensing and disposal record of 21 CFR 1304.22(c) over a period."""

    organisation = fields.String()
    dea_registration = fields.String()
    since = fields.AwareDateTime(data_key="from")
    until = fields.AwareDateTime(data_key="to")
    events = fields.List(fields.Nested(DispensingEventSchema))


class InventoryQuerySchema(Schema):
    """The moment of an inventory, whether at open or close of business, and its format."""

    as_of = fields.AwareDateTime(load_default=None, metadata={
        "description": "Entries the server recorded up to this time count. Default: now."})
    at = fields.String(load_default="close", validate=validate.OneOf(["open", "close"]),
                       metadata={"description": "Open or close of business (21 CFR 1304.11)."})
    output = _format()


class InventoryLineSchema(Schema):
    """One holder's stock of one lot, one CSV row, in these columns."""

    holder = fields.String()
    holder_name = fields.String()
    substance = fields.String()
    product = fields.String()
    dea_schedule = fields.String()
    dosage_form = fields.String()
    strength = fields.String()
    units_per_container = fields.Decimal(as_string=True)
    lot = fields.String()
    expiry = fields.Date()
    quantity_ug = fields.Integer()
    quantity_mg = fields.Decimal(as_string=True)
    quantity_units = fields.Decimal(as_string=True, metadata={
        "description": "mL or devices, to 0.001."})
    unit = fields.String()
    containers = fields.Decimal(as_string=True, metadata={
        "description": "Full-container equivalents, to 0.001 (an opened one is a fraction)."})


class InventorySchema(Schema):
    """An inventory of controlled substances on hand (21 CFR 1304.11)."""

    organisation = fields.String()
    dea_registration = fields.String()
    as_of = fields.AwareDateTime()
    date = fields.Date()
    at = fields.String()
    taken_by = fields.String()
    lines = fields.List(fields.Nested(InventoryLineSchema))
