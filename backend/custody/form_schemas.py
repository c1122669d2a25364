"""Bodies of DEA Form 106 (theft or loss) and Form 41 (destruction), and a loss's completion."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from backend import bounded
from backend.custody.forms import LOSS_TYPES, UNDETERMINED
from backend.custody.reports import csv_text

TYPES = ", ".join(f"`{code}` ({label})" for code, label in LOSS_TYPES.items())
CSV_LIST = "In CSV, joined with `; `."


class LossDetailsSchema(Schema):
    """What a pharmacist or compliance officer completes on a loss report for Form 106."""

    loss_type = fields.String(validate=validate.OneOf(list(LOSS_TYPES)), metadata={
        "description": f"The type of theft or loss, as Form 106 asks: {TYPES}."})
    police_report_number = fields.String(allow_none=True, validate=validate.Length(1, 60),
                                         metadata={"description": "The police report's "
                                                                  "number; null: none."})
    police_agency = fields.String(allow_none=True, validate=validate.Length(1, 200), metadata={
        "description": "The police department the theft or loss was reported to; null: none."})
    police_reported_at = bounded.DateTime(allow_none=True, metadata={
        "description": "When it was reported to the police: not in the future, not before "
                       "the loss occurred; null: not reported."})

    @validates_schema
    def _something(self, data: dict[str, Any], **_kwargs) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.", "_schema")


class LossDetailsOutSchema(Schema):
    """A loss report's Form 106 details as they now stand."""

    id = fields.UUID(metadata={"description": "The loss report."})
    entry_id = fields.UUID(metadata={"description": "The `loss` ledger entry it reports."})
    discovered_at = fields.AwareDateTime(metadata={
        "description": "When the loss was discovered (recorded in the ledger)."})
    loss_type = fields.Function(lambda report: report.loss_type or UNDETERMINED, metadata={
        "description": f"The type of theft or loss: {TYPES}."})
    police_report_number = fields.String(allow_none=True, metadata={
        "description": "The police report's number, if reported."})
    police_agency = fields.String(allow_none=True, metadata={
        "description": "The police department it was reported to."})
    police_reported_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "When it was reported to the police."})


def _format() -> fields.String:
    return fields.String(data_key="format", load_default="json",
                         validate=validate.OneOf(["json", "csv"]), metadata={
                             "description": "`csv`: text/csv (RFC 4180, UTF-8 with a "
                                            "byte-order mark), a header row and one row per "
                                            "form, in the JSON's field names."})


class FormQuerySchema(Schema):
    """The format of one form's record."""

    output = _format()


class FormPeriodQuerySchema(Schema):
    """A period of forms and their format."""

    since = bounded.DateTime(data_key="from", required=True, metadata={
        "description": "From this time (included)."})
    until = bounded.DateTime(data_key="to", required=True, metadata={
        "description": "Up to this time (excluded); after `from`."})
    output = _format()


def _registrant() -> dict[str, fields.Field]:
    return {
        "registrant_name": fields.String(attribute="registrant.name", metadata={
            "description": "The registrant's name, as registered with DEA."}),
        "registrant_dea_registration": fields.String(attribute="registrant.dea_registration",
                                                     metadata={"description": "Its DEA "
                                                                              "number."}),
        "registrant_address": fields.String(attribute="registrant.address", metadata={
            "description": "Its registered address on one line (blank parts left out)."}),
        "registrant_phone": fields.String(attribute="registrant.phone", metadata={
            "description": "Its telephone number; blank if not kept."}),
    }


def _product() -> dict[str, fields.Field]:
    return {
        "substance": fields.String(attribute="product.substance", metadata={
            "description": "The controlled substance (active ingredient)."}),
        "product": fields.String(attribute="product.product", metadata={
            "description": "The product's trade or catalogue name."}),
        "ndc": fields.String(attribute="product.ndc", metadata={
            "description": "The National Drug Code, 11 digits as 5-4-2 (`00409-4276-01`); "
                           "blank for a product without one."}),
        "dea_schedule": fields.String(attribute="product.dea_schedule", metadata={
            "description": "The DEA schedule (II–V)."}),
        "dosage_form": fields.String(attribute="product.dosage_form", metadata={
            "description": "vial, ampoule, prefilled_syringe or nasal_device."}),
        "strength": fields.String(attribute="product.strength", metadata={
            "description": "Per dispensing unit, in mg and µg (`50 mg/mL (50000 µg/mL)`)."}),
        "package": fields.String(attribute="product.package", metadata={
            "description": "The package as labelled, with its size (`10 mL per vial`)."}),
        "container": fields.String(attribute="product.container", metadata={
            "description": "What one container is called (vial, ampoule, syringe, device)."}),
    }


def _quantity(what: str) -> dict[str, fields.Field]:
    return {
        "quantity_ug": fields.Integer(attribute="amount.quantity_ug", metadata={
            "description": f"The quantity {what}, in integer micrograms."}),
        "quantity_mg": fields.Decimal(attribute="amount.quantity_mg", as_string=True, metadata={
            "description": "The same in milligrams, to 0.001."}),
        "quantity_units": fields.Decimal(attribute="amount.quantity_units", as_string=True,
                                         metadata={"description": "The same in dispensing "
                                                                  "units (mL or devices), to "
                                                                  "0.001."}),
        "unit": fields.String(attribute="amount.unit", metadata={
            "description": "The dispensing unit: mL or device."}),
        "containers": fields.Integer(attribute="amount.containers", allow_none=True, metadata={
            "description": "Whole containers, when the quantity is a whole number of them; "
                           "null (blank in CSV) for part of a container."}),
    }


def _lot() -> dict[str, fields.Field]:
    return {
        "lot": fields.String(attribute="entry.lot", metadata={"description": "The lot."}),
        "expiry": fields.Date(attribute="entry.expiry", metadata={
            "description": "The lot's expiry date."}),
        "entry_id": fields.UUID(attribute="entry.id", metadata={
            "description": "The ledger entry that recorded it."}),
        "seq": fields.Integer(attribute="entry.seq", metadata={
            "description": "Its place in the organisation's hash-chained ledger."}),
    }


def _recorder() -> dict[str, fields.Field]:
    return {
        "recorded_by_name": fields.String(attribute="recorded_by.name", metadata={
            "description": "Who recorded it in the ledger, by full name."}),
        "recorded_by_role": fields.String(attribute="recorded_by.role", metadata={
            "description": "Their role: pharmacist or nurse."}),
        "recorded_by_username": fields.String(attribute="recorded_by.username", metadata={
            "description": "Their username."}),
    }


Form106Schema = Schema.from_dict({
    "loss_id": fields.UUID(attribute="report.id", metadata={"description": "The loss report."}),
    **_registrant(),
    "discovered_at": fields.AwareDateTime(attribute="report.discovered_at", metadata={
        "description": "When the theft or loss was discovered (recorded in the ledger)."}),
    "discovered_on": fields.Date(metadata={
        "description": "The date of discovery, in the organisation's timezone (Form 106's "
                       "date of theft or loss, or of its discovery)."}),
    "occurred_at": fields.AwareDateTime(attribute="entry.occurred_at", metadata={
        "description": "When the loss happened or was found, as its recorder stated it."}),
    "occurred_on": fields.Date(metadata={
        "description": "That date, in the organisation's timezone."}),
    "loss_type": fields.String(metadata={"description": f"The type of theft or loss: {TYPES}."}),
    "loss_type_label": fields.Function(lambda form: LOSS_TYPES[form.loss_type], metadata={
        "description": "The type as the form words it."}),
    "police_reported": fields.Boolean(metadata={
        "description": "Whether it was reported to the police."}),
    "police_report": fields.String(metadata={
        "description": "The police report on one line (agency, number, when), or `not "
                       "reported`."}),
    "police_agency": fields.String(attribute="report.police_agency", allow_none=True, metadata={
        "description": "The police department it was reported to."}),
    "police_report_number": fields.String(attribute="report.police_report_number",
                                          allow_none=True, metadata={
                                              "description": "The police report's number."}),
    "police_reported_at": fields.AwareDateTime(attribute="report.police_reported_at",
                                               allow_none=True, metadata={
                                                   "description": "When it was reported to "
                                                                  "the police."}),
    "losses_in_24_months": fields.Integer(metadata={
        "description": "Thefts or losses the registrant discovered in the 24 months before "
                       "this one."}),
    **_product(),
    **_quantity("lost"),
    **_lot(),
    "lost_from": fields.String(attribute="entry.from_holder", metadata={
        "description": "The holder it was lost from: `vault` or `bag:<nurse id>`."}),
    "lost_from_name": fields.String(metadata={
        "description": "`Vault`, or the nurse whose bag it was lost from, by full name."}),
    "circumstances": fields.String(attribute="report.circumstances", metadata={
        "description": "What happened, as recorded (PHI: decrypted, and the read audited)."}),
    **_recorder(),
    "notice_due_at": fields.AwareDateTime(attribute="report.notice_due_at", metadata={
        "description": "When the written notice to DEA is due (one business day after "
                       "discovery)."}),
    "notice_filed_at": fields.AwareDateTime(attribute="report.notice_filed_at", allow_none=True,
                                            metadata={"description": "When it was filed; "
                                                                     "null: not yet."}),
    "form_106_due_at": fields.AwareDateTime(attribute="report.form_106_due_at", metadata={
        "description": "When Form 106 is due (45 days after discovery)."}),
    "form_106_filed_at": fields.AwareDateTime(attribute="report.form_106_filed_at",
                                              allow_none=True, metadata={
                                                  "description": "When it was filed; null: "
                                                                 "not yet."}),
}, name="Form106")
Form106Schema.__doc__ = "One theft or loss with every field DEA Form 106 asks; one CSV row."


Form41Schema = Schema.from_dict({
    **_registrant(),
    "destroyed_at": fields.AwareDateTime(attribute="entry.occurred_at", metadata={
        "description": "When the stock was destroyed."}),
    "destroyed_on": fields.Date(metadata={
        "description": "The date of destruction, in the organisation's timezone."}),
    "method": fields.String(metadata={"description": "The method of destruction."}),
    "place": fields.String(metadata={
        "description": "Where it was destroyed: the entry's `place`, else the registrant's "
                       "address."}),
    **_product(),
    **_quantity("destroyed"),
    **_lot(),
    "witness_names": fields.Function(lambda form: [w.name for w in form.witnesses], metadata={
        "description": f"The witnesses who confirmed it (two at least), by full name. "
                       f"{CSV_LIST}"}),
    "witness_roles": fields.Function(lambda form: [w.role for w in form.witnesses], metadata={
        "description": f"Their roles, in the same order. {CSV_LIST}"}),
    "witness_usernames": fields.Function(lambda form: [w.username for w in form.witnesses],
                                         metadata={"description": f"Their usernames, in the "
                                                                  f"same order. {CSV_LIST}"}),
    **_recorder(),
    "recorded_by_factor": fields.String(allow_none=True, metadata={
        "description": "The second factor the recorder proved (`totp`, `recovery_code`, "
                       "`webauthn`), from the destruction's audit row."}),
}, name="Form41")
Form41Schema.__doc__ = "One destruction with every field DEA Form 41 asks; one CSV row."


class Forms106Schema(Schema):
    """The Form 106 records of the losses discovered in a period."""

    since = fields.AwareDateTime(data_key="from", metadata={"description": "From (included)."})
    until = fields.AwareDateTime(data_key="to", metadata={"description": "To (excluded)."})
    forms = fields.List(fields.Nested(Form106Schema), metadata={
        "description": "One per loss, by time of discovery."})


class Forms41Schema(Schema):
    """The Form 41 records of the destructions done in a period."""

    since = fields.AwareDateTime(data_key="from", metadata={"description": "From (included)."})
    until = fields.AwareDateTime(data_key="to", metadata={"description": "To (excluded)."})
    forms = fields.List(fields.Nested(Form41Schema), metadata={
        "description": "One per destruction, by time of destruction."})


def forms_csv(schema: type[Schema], forms: list[Any]) -> str:
    """Return forms as CSV: a header of the schema's fields, one row per form."""
    rows = schema(many=True).dump(forms)
    return csv_text(rows, list(schema().fields))
