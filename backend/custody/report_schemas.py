"""Bodies reckoned from the custody ledger: counts, losses and filings, statements, DEA reports."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from backend import bounded
from backend.custody.inventories import KINDS, SignedInventory
from backend.custody.ledger import MAX_MOVEMENT_UG
from backend.custody.reports import DispensingLog, Inventory, csv_text

NDC = "The product's National Drug Code, 11 digits as 5-4-2; blank if none is recorded."
STRENGTH = "Per mL or per device, in mg and µg: `50 mg/mL (50000 µg/mL)`."
PACKAGE = "The container's size with its unit (`10 mL per vial`), after its description."
ROLE = ("Their role: pharmacist, nurse, prescriber, compliance officer or administrator.")
FORM = "vial, ampoule, prefilled_syringe or nasal_device."
PER_CONTAINER = "mL or devices per container; `package` says it with its unit."
MG = "The quantity in milligrams, to 0.001."
UNITS = ("The quantity in dispensing units (`unit`), to 0.001: mL of the product's "
         "concentration, or devices.")
CONTAINERS = ("The whole containers (vials, devices) the quantity makes; null when it is not a "
              "whole number of them (an opened container).")
LOT = "The manufacturer's lot number."
EXPIRY = "The lot's expiry date."
AS_OF = "Entries the server recorded up to this time count; not in the future. Default: now."
AT = "`open` or `close`: at the opening or close of business (21 CFR 1304.11(a))."


class CountLineSchema(Schema):
    """What was found of one lot."""

    product_id = fields.UUID(required=True)
    lot = fields.String(required=True, validate=validate.Length(1, 40))
    quantity_ug = bounded.Integer(required=True, strict=True,
                                  validate=validate.Range(0, MAX_MOVEMENT_UG))
    expiry = bounded.Date(load_default=None, metadata={
        "description": "Needed only to adjust a lot the ledger has never held."})


class CountCreateSchema(Schema):
    """A physical count of the vault or one nurse's bag."""

    id = fields.UUID(load_default=None, metadata={
        "description": "Client-made UUID: a retried count makes no second adjustment."})
    holder = fields.String(required=True, validate=validate.Length(1, 60), metadata={
        "description": "`vault` or `bag:<nurse id>`."})
    counted_at = bounded.DateTime(required=True, metadata={
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
    filed_at = bounded.DateTime(required=True)


class StatementQuerySchema(Schema):
    """The period of a bag statement, by when the server recorded each movement."""

    since = bounded.DateTime(data_key="from", metadata={
        "description": "Default: the start of today in the organisation's timezone."})
    until = bounded.DateTime(data_key="to", metadata={"description": "Default: now."})


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
                             "description": "`csv`: text/csv (RFC 4180, UTF-8 with a "
                                            "byte-order mark, so µg reads right in a "
                                            "spreadsheet) with a header row; every row "
                                            "repeats the registrant, so it stands alone."})


class RecordRegistrantSchema(Schema):
    """The registrant every DEA record names: the organisation as its registration names it."""

    name = fields.String(metadata={"description": "The registrant's name."})
    dea_registration = fields.String(metadata={"description": "Its DEA registration number."})
    dea_expires_on = fields.Date(allow_none=True, metadata={
        "description": "When that registration expires; null if not recorded."})
    address = fields.String(metadata={
        "description": "The registered address on one line (street, city, state ZIP)."})
    address_line = fields.String(metadata={"description": "Street and number; blank if none."})
    city = fields.String(metadata={"description": "Blank if not recorded."})
    state = fields.String(metadata={"description": "Two-letter USPS code."})
    postal_code = fields.String(metadata={"description": "ZIP code; blank if not recorded."})
    phone = fields.String(metadata={"description": "Blank if not recorded."})


class DispensingQuerySchema(Schema):
    """The period of a dispensing log, by when each event occurred, and its format."""

    since = bounded.DateTime(data_key="from", required=True)
    until = bounded.DateTime(data_key="to", required=True)
    output = _format()


class DispensingEventSchema(Schema):
    """One event of the dispensing log, one CSV row, in these columns."""

    entry_id = fields.UUID(metadata={"description": "The ledger entry."})
    seq = fields.Integer(metadata={"description": "Its place in the ledger's chain."})
    date = fields.Date(metadata={"description": "In the organisation's timezone."})
    occurred_at = fields.AwareDateTime(metadata={"description": "When it happened."})
    kind = fields.String(metadata={"description": (
        "received, dispensed to nurse, transferred to nurse, administered, wasted, returned, "
        "count adjustment, lost or destroyed.")})
    substance = fields.String(metadata={"description": "The active ingredient."})
    product = fields.String(metadata={"description": "The product's name."})
    ndc = fields.String(metadata={"description": NDC})
    dea_schedule = fields.String(metadata={"description": "II, III, IV or V."})
    dosage_form = fields.String(metadata={"description": FORM})
    strength = fields.String(metadata={"description": STRENGTH})
    package = fields.String(metadata={"description": PACKAGE})
    units_per_container = fields.Decimal(as_string=True, metadata={"description": PER_CONTAINER})
    quantity_ug = fields.Integer(metadata={"description": "Micrograms of the substance."})
    quantity_mg = fields.Decimal(as_string=True, metadata={"description": MG})
    quantity_units = fields.Decimal(as_string=True, metadata={"description": UNITS})
    unit = fields.String(metadata={"description": "`mL` or `device`."})
    containers = fields.Integer(allow_none=True, metadata={"description": CONTAINERS})
    lot = fields.String(metadata={"description": LOT})
    expiry = fields.Date(metadata={"description": EXPIRY})
    from_holder = fields.String(metadata={
        "description": "Where the stock came from: `supplier`, `vault`, `bag:<nurse id>`, "
                       "`count`."})
    recipient = fields.String(metadata={
        "description": "The receiving holder; for an administration `patient:<surrogate id>`."})
    recipient_name = fields.String(metadata={
        "description": "The patient's name (PHI, decrypted: the read is audited), the nurse's "
                       "name, or the registrant's for the vault."})
    recipient_address = fields.String(metadata={"description": "The patient's address (PHI)."})
    supplier_name = fields.String(metadata={"description": "For a receipt: the supplier."})
    supplier_address = fields.String(metadata={"description": "For a receipt: its address."})
    supplier_dea = fields.String(metadata={
        "description": "For a receipt: its DEA registration number."})
    manner = fields.String(metadata={
        "description": "How stock was disposed of: waste, destruction, loss, count correction."})
    by_name = fields.String(metadata={
        "description": "Who dispensed, administered, etc., by full name."})
    by_role = fields.String(metadata={"description": ROLE})
    by_username = fields.String(metadata={"description": "Their sign-in name."})
    witness_names = fields.List(fields.String(), metadata={
        "description": "The witnesses' full names; in CSV, joined with `; `."})
    witness_roles = fields.List(fields.String(), metadata={
        "description": "Their roles, in the same order; in CSV, joined with `; `."})
    witness_usernames = fields.List(fields.String(), metadata={
        "description": "Their sign-in names, in the same order; in CSV, joined with `; `."})
    by_factor = fields.String(allow_none=True, metadata={
        "description": "For a destruction, adjustment or loss recorded at the desk: the "
                       "second factor its recorder proved (`totp`, `recovery_code`, "
                       "`webauthn`); null otherwise."})
    order_version_id = fields.UUID(attribute="order.plan_version_id", allow_none=True, metadata={
        "description": "For a dose and its waste: the plan version (the prescriber's order) "
                       "it followed; the order_ fields are null for other events."})
    order_version = fields.Integer(attribute="order.version", allow_none=True, metadata={
        "description": "That plan version's number."})
    order_signed_by = fields.String(attribute="order.signed_by", allow_none=True, metadata={
        "description": "The prescriber who signed that order, by full name."})
    order_signed_by_role = fields.String(attribute="order.signed_by_role", allow_none=True,
                                         metadata={"description": ROLE})
    order_signed_at = fields.AwareDateTime(attribute="order.signed_at", allow_none=True,
                                           metadata={"description": "null: written before "
                                                                    "orders were signed."})
    order_factor = fields.String(attribute="order.factor", allow_none=True, metadata={
        "description": "The second factor the prescriber signed with: `totp`, "
                       "`recovery_code`, `webauthn`."})


class DispensingLogSchema(Schema):
    """The dispensing and disposal record of 21 CFR 1304.22(c) over a period."""

    registrant = fields.Nested(RecordRegistrantSchema, metadata={
        "description": "Whose record this is (21 CFR 1304.04)."})
    since = fields.AwareDateTime(data_key="from", metadata={
        "description": "The period's start: events that occurred from then..."})
    until = fields.AwareDateTime(data_key="to", metadata={"description": "...until before this."})
    events = fields.List(fields.Nested(DispensingEventSchema), metadata={
        "description": "In order of occurrence, then of the chain."})


class InventoryQuerySchema(Schema):
    """The moment of an inventory, whether at open or close of business, and its format."""

    as_of = bounded.DateTime(load_default=None, metadata={"description": AS_OF})
    at = fields.String(load_default="close", validate=validate.OneOf(["open", "close"]),
                       metadata={"description": AT})
    output = _format()


class InventoryLineSchema(Schema):
    """One holder's stock of one lot, one CSV row, in these columns."""

    holder = fields.String(metadata={"description": "`vault` or `bag:<nurse id>`."})
    holder_name = fields.String(metadata={
        "description": "The registrant's name for the vault, the nurse's for her bag."})
    product_id = fields.UUID(metadata={"description": "The product in the catalogue."})
    substance = fields.String(metadata={"description": "The active ingredient."})
    product = fields.String(metadata={"description": "The product's name."})
    ndc = fields.String(metadata={"description": NDC})
    dea_schedule = fields.String(metadata={"description": "II, III, IV or V."})
    dosage_form = fields.String(metadata={"description": FORM})
    strength = fields.String(metadata={"description": STRENGTH})
    package = fields.String(metadata={"description": PACKAGE})
    units_per_container = fields.Decimal(as_string=True, metadata={"description": PER_CONTAINER})
    lot = fields.String(metadata={"description": LOT})
    expiry = fields.Date(metadata={"description": EXPIRY})
    quantity_ug = fields.Integer(metadata={"description": "Micrograms of the substance."})
    quantity_mg = fields.Decimal(as_string=True, metadata={"description": MG})
    quantity_units = fields.Decimal(as_string=True, metadata={"description": UNITS})
    unit = fields.String(metadata={"description": "`mL` or `device`."})
    containers = fields.Integer(allow_none=True, metadata={"description": CONTAINERS})


class InventorySchema(Schema):
    """An inventory of controlled substances on hand (21 CFR 1304.11)."""

    registrant = fields.Nested(RecordRegistrantSchema, metadata={
        "description": "Whose inventory this is."})
    as_of = fields.AwareDateTime(metadata={"description": "The ledger as it stood then."})
    date = fields.Date(metadata={"description": "as_of's day in the organisation's timezone."})
    at = fields.String(metadata={"description": AT})
    taken_by = fields.String(metadata={"description": "Who took it, by full name."})
    taken_by_role = fields.String(metadata={"description": ROLE})
    lines = fields.List(fields.Nested(InventoryLineSchema), metadata={
        "description": "Each vault and bag lot with stock, by holder and lot."})


class InventoryTakeSchema(Schema):
    """An inventory to take and sign: which, as of when, at open or close of business."""

    kind = fields.String(required=True, validate=validate.OneOf(KINDS), metadata={
        "description": "`initial`: on first handling controlled substances (1304.11(b)); "
                       "`biennial`: at least every two years after (1304.11(c)); `other`: "
                       "any other occasion — a substance newly controlled or rescheduled "
                       "(1304.11(d)), a new pharmacist in charge, the registrant's own check."})
    as_of = bounded.DateTime(load_default=None, metadata={"description": AS_OF})
    at = fields.String(load_default="close", validate=validate.OneOf(["open", "close"]),
                       metadata={"description": AT})


class SignedInventorySummarySchema(Schema):
    """A signed inventory without its lines, as the list shows it."""

    id = fields.UUID(metadata={"description": "The signed inventory."})
    kind = fields.String(metadata={"description": "`initial`, `biennial` or `other`."})
    as_of = fields.AwareDateTime(metadata={"description": "The ledger as it stood then."})
    date = fields.Date(metadata={"description": "as_of's day in the organisation's timezone."})
    at = fields.String(metadata={"description": AT})
    taken_by_id = fields.UUID(metadata={"description": "The pharmacist who took and signed it."})
    taken_by = fields.String(metadata={"description": "Their full name."})
    taken_by_role = fields.String(metadata={"description": ROLE})
    taken_by_username = fields.String(metadata={"description": "Their sign-in name."})
    signed_at = fields.AwareDateTime(metadata={"description": "When it was signed."})
    signature_method = fields.String(allow_none=True, metadata={
        "description": "The second factor it was signed with: `totp`, `recovery_code`, "
                       "`webauthn`."})
    signature_factor_id = fields.UUID(allow_none=True, metadata={
        "description": "Which of the signer's factors."})
    content_hash = fields.String(metadata={
        "description": "Hex SHA-256 of the RFC 8785 canonical JSON of the inventory as signed: "
                       "its id, organisation, kind, as_of, at, signer, signed_at, factor and "
                       "lines."})
    verified = fields.Boolean(metadata={
        "description": "Whether the stored inventory still hashes to content_hash; false "
                       "means it was changed after signing."})


class SignedInventorySchema(SignedInventorySummarySchema):
    """A signed inventory (21 CFR 1304.11): the stock as taken, who signed it, and its hash."""

    registrant = fields.Nested(RecordRegistrantSchema, metadata={
        "description": "The registrant as it is recorded now."})
    lines = fields.List(fields.Nested(InventoryLineSchema), metadata={
        "description": "Each vault and bag lot as it stood at as_of, stored when signed."})


class SignedInventoryQuerySchema(Schema):
    """How to give a signed inventory."""

    output = _format()


def _rows(dumped: dict, heading: dict[str, str], rows: str,
          columns: Schema) -> tuple[list[dict], list[str]]:
    """Return each of `rows` led by the registrant and the record's own `heading` fields.

    Every row names the registrant (and the record it belongs to), so a row copied out of
    the file still says whose record it is.
    """
    registrant = dumped["registrant"]
    lead = {"registrant_name": registrant["name"], "registrant_address": registrant["address"],
            "registrant_dea": registrant["dea_registration"]} | {
        column: dumped[name] for column, name in heading.items()}
    return [{**lead, **row} for row in dumped[rows]], [*lead, *columns.fields]


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


def dispensing_csv(log: DispensingLog) -> str:
    """Return the log's events as CSV, one row per event, each naming the registrant."""
    return csv_text(*_rows(DispensingLogSchema().dump(log), {}, "events",
                           DispensingEventSchema()))


def inventory_csv(stock: Inventory) -> str:
    """Return the inventory as CSV, one row per holder and lot."""
    # Each row carries the inventory's date and open/close, as 1304.11 asks of it.
    return csv_text(*_rows(InventorySchema().dump(stock),
                           _same("date", "at", "as_of", "taken_by", "taken_by_role"), "lines",
                           InventoryLineSchema()))


def signed_inventory_csv(signed: SignedInventory) -> str:
    """Return a signed inventory as CSV, one row per line, each naming what was signed."""
    heading = {"inventory_id": "id"} | _same(
        "kind", "date", "at", "as_of", "taken_by", "taken_by_role", "signed_at",
        "signature_method", "content_hash")
    return csv_text(*_rows(SignedInventorySchema().dump(signed), heading, "lines",
                           InventoryLineSchema()))
