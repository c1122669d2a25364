"""The phone-side schema: each synced table, its columns, who may see its rows, and its rows.

A column is a WatermelonDB column: `string`, `number` or `boolean`. Times and dates are ISO 8601
strings; nested values (scales' items, phases, witnesses) are JSON strings, because that is what
WatermelonDB stores. Append-only tables take their columns from the API schema that validates
them, so the phone schema cannot drift from what the server accepts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import Select, bindparam, null, select
from sqlalchemy.orm import Session

from backend.administration import schemas as clinical
from backend.administration.models import (
    Discharge,
    DoseRecord,
    Observation,
    OutcomeScore,
    PreDose,
)
from backend.custody.ledger import bag_nurse
from backend.custody.models import CustodyEntry
from backend.patients.models import PATIENT_PHI, Patient
from backend.phi.cipher import PhiCipher
from backend.plans.models import PlanVersion, TreatmentPlan
from backend.products.models import DrugProduct
from backend.runtime import Runtime
from backend.visits import schemas as visit_schemas
from backend.visits.models import EvvEvent, Visit

# The phone schema's version. Bump it with every change to a synced table or column, and
# raise MUTABLE_SINCE when older phones may no longer write mutable tables.
# 2: discharges gain ready_to_leave_at and respiratory_depression (optional, so schema-1
# phones still push their discharges without them).
SCHEMA_VERSION = 2
MUTABLE_SINCE = 1
# Columns every pushed record carries that are WatermelonDB's own bookkeeping, not data.
BOOKKEEPING = ("_status", "_changed")


class Access(StrEnum):
    """What a phone may do with a table."""

    REFERENCE = "reference"
    MUTABLE = "mutable"
    APPEND_ONLY = "append_only"


@dataclass(frozen=True)
class Column:
    """One WatermelonDB column."""

    name: str
    type: str
    optional: bool = False
    json: bool = False
    description: str = ""


@dataclass(frozen=True)
class Audience:
    """Who may see one record: its organisation, patient, and the nurses whose stock it is."""

    record_id: uuid.UUID
    organisation_id: uuid.UUID
    patient_id: uuid.UUID | None = None
    nurse_id: uuid.UUID | None = None
    peer_nurse_id: uuid.UUID | None = None


Rows = Callable[["SyncTable", Session, Runtime, Sequence[uuid.UUID]], list[dict[str, Any]]]
AudienceOf = Callable[[Session, Sequence[uuid.UUID]], list["Audience"]]


@dataclass(frozen=True)
class SyncTable:
    """A synced table: its name on the phone, its model, access, columns and row builders."""

    name: str
    model: type
    access: Access
    columns: tuple[Column, ...]
    description: str
    audience: AudienceOf
    rows: Rows
    writable: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    def column(self, name: str) -> Column | None:
        """Return the column called `name`, if the table has one."""
        return self._by_name.get(name)

    def read(self, session: Session, rt: Runtime,
             ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
        """Return the WatermelonDB raw records of the rows with `ids`."""
        return self.rows(self, session, rt, ids)


def _wire(value: Any) -> Any:
    if isinstance(value, date):  # and datetime, a date too
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def _json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def record(table: SyncTable, row_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    """Return the WatermelonDB raw record for `values`, every column present."""
    out: dict[str, Any] = {"id": str(row_id)}
    for column in table.columns:
        value = values.get(column.name)
        out[column.name] = _json(value) if column.json else _wire(value)
    return out


def _load(session: Session, model: type, ids: Sequence[uuid.UUID]) -> list[Any]:
    return list(session.scalars(select(model).where(model.id.in_(ids))))


def _scalar_rows(table: SyncTable, session: Session, _rt: Runtime,
                 ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Build rows by reading each column of the same name from the model."""
    return [record(table, row.id, {c.name: getattr(row, c.name) for c in table.columns})
            for row in _load(session, table.model, ids)]


def _signed_rows(table: SyncTable, session: Session, _rt: Runtime,
                 ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Build rows from exactly what the phone signed, with its signature."""
    return [record(table, row.id, {**row.signed_body, "visit_id": row.visit_id,
                                   "signature": row.device_signature})
            for row in _load(session, table.model, ids)]


def _patient_rows(table: SyncTable, session: Session, rt: Runtime,
                  ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    box = PhiCipher.from_keyring(rt.keys)
    out = []
    for patient in _load(session, Patient, ids):
        values: dict[str, Any] = {"home_latitude": patient.home_latitude,
                                  "home_longitude": patient.home_longitude}
        for name in PATIENT_SYNCED_PHI:
            stored = getattr(patient, PATIENT_PHI.attribute(name))
            values[name] = None if stored is None else box.decrypt(
                stored, PATIENT_PHI.place(patient, name))
        out.append(record(table, patient.id, values))
    return out


def _plan_version_rows(table: SyncTable, session: Session, _rt: Runtime,
                       ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    out = []
    for version in _load(session, PlanVersion, ids):
        phases = [{"ordinal": p.ordinal, "name": p.name, "starts_on": p.starts_on.isoformat(),
                   "dose_ug_per_kg": p.dose_ug_per_kg, "dose_ug": p.dose_ug,
                   "min_interval_hours": p.min_interval_hours,
                   "max_per_7_days": p.max_per_7_days, "max_per_28_days": p.max_per_28_days}
                  for p in version.phases]
        values = {c.name: getattr(version, c.name, None) for c in table.columns}
        out.append(record(table, version.id, {
            **values, "patient_id": version.plan.patient_id, "phases": phases}))
    return out


def _evv_rows(table: SyncTable, session: Session, _rt: Runtime,
             ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    out = []
    for event in _load(session, EvvEvent, ids):
        values = event.signed_body or {c.name: getattr(event, c.name, None)
                                       for c in table.columns}
        out.append(record(table, event.id, {**values, "visit_id": event.visit_id,
                                                 "signature": event.device_signature}))
    return out


def _custody_rows(table: SyncTable, session: Session, _rt: Runtime,
                  ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    out = []
    for entry in _load(session, CustodyEntry, ids):
        values = {c.name: getattr(entry, c.name, None) for c in table.columns}
        # In the shape a phone pushes them, signatures included: a phone sent its own entry
        # back as an update keeps its witnesses' signatures, and may push it again unchanged.
        values["witnesses"] = [{"user_id": c["user_id"], "device_id": c.get("device_id"),
                                "signature": c.get("signature"),
                                **({"attested_at": c["attested_at"]}
                                   if "attested_at" in c else {})}
                               for c in entry.confirmations or []]
        values["signature"] = entry.device_signature
        out.append(record(table, entry.id, values))
    return out


def _schema_columns(schema: type[Schema], *, skip: Iterable[str] = ()) -> tuple[Column, ...]:
    """Return a WatermelonDB column for each field of an API schema."""
    out = [Column("visit_id", "string", description="The visit this record belongs to.")]
    for name, item in schema().fields.items():
        if name == "id" or name in skip:
            continue
        nested = isinstance(item, fields.Dict | fields.List | fields.Nested)
        kind = ("number" if isinstance(item, fields.Number)
                else "boolean" if isinstance(item, fields.Boolean) else "string")
        description = (item.metadata or {}).get("description", "")
        out.append(Column(name, kind, optional=not item.required, json=nested,
                          description=("JSON. " if nested else "") + description))
    return tuple(out)


def _scoped(query: Select) -> AudienceOf:
    """Return an audience reader for a query of (id, organisation, patient) by `ids`."""
    def audience(session: Session, ids: Sequence[uuid.UUID]) -> list[Audience]:
        return [Audience(*row) for row in session.execute(query.where(
            query.selected_columns[0].in_(ids)))]
    return audience


def _signed_audience(model: type) -> AudienceOf:
    return _scoped(select(model.id, Visit.organisation_id, Visit.patient_id)
                   .join(Visit, Visit.id == model.visit_id))


# Built once: every commit that appends to the ledger reads it, under the chain head's lock.
_CUSTODY_HOLDERS = select(CustodyEntry.id, CustodyEntry.organisation_id,
                          CustodyEntry.from_holder, CustodyEntry.to_holder).where(
    CustodyEntry.id.in_(bindparam("ids", expanding=True)))


def _custody_audience(session: Session, ids: Sequence[uuid.UUID]) -> list[Audience]:
    return [Audience(entry_id, organisation_id, None, bag_nurse(giver), bag_nurse(taker))
            for entry_id, organisation_id, giver, taker in session.execute(
                _CUSTODY_HOLDERS, {"ids": list(ids)})]


PATIENT_SYNCED_PHI = ("mrn", "name", "date_of_birth", "address", "phone", "emergency_contact")

PRODUCTS: SyncTable = SyncTable(
    "products", DrugProduct, Access.REFERENCE,
    (Column("name", "string"), Column("active_ingredient", "string"),
     Column("dea_schedule", "string"), Column("form", "string"), Column("unit", "string"),
     Column("ug_per_unit", "number"), Column("units_per_container", "number"),
     Column("allowed_routes", "string", json=True, description="JSON list of routes."),
     Column("home_administration_allowed", "boolean")),
    "The organisation's drug products.",
    _scoped(select(DrugProduct.id, DrugProduct.organisation_id, null())),
    _scalar_rows)

PATIENTS: SyncTable = SyncTable(
    "patients", Patient, Access.REFERENCE,
    (Column("mrn", "string"), Column("name", "string"), Column("date_of_birth", "string"),
     Column("address", "string", optional=True), Column("phone", "string", optional=True),
     Column("emergency_contact", "string", optional=True),
     Column("home_latitude", "number", optional=True),
     Column("home_longitude", "number", optional=True)),
    "The nurse's assigned patients, PHI decrypted for her alone (each pull is audited).",
    _scoped(select(Patient.id, Patient.organisation_id, Patient.id)),
    _patient_rows)

PLAN_VERSIONS: SyncTable = SyncTable(
    "plan_versions", PlanVersion, Access.REFERENCE,
    (Column("patient_id", "string"), Column("plan_id", "string"), Column("version", "number"),
     Column("product_id", "string"), Column("route", "string"),
     Column("dose_ug_per_kg", "number", optional=True),
     Column("dose_ug", "number", optional=True), Column("max_dose_ug", "number"),
     Column("infusion_minutes", "number"),
     Column("phases", "string", json=True, description="JSON list of the version's phases: "
            "ordinal, name, starts_on, dose, minimum interval, 7- and 28-day limits.")),
    "Each assigned patient's treatment plan versions with their phases.",
    _scoped(select(PlanVersion.id, TreatmentPlan.organisation_id, TreatmentPlan.patient_id)
            .join(TreatmentPlan, TreatmentPlan.id == PlanVersion.plan_id)),
    _plan_version_rows)

VISITS: SyncTable = SyncTable(
    "visits", Visit, Access.MUTABLE,
    (Column("patient_id", "string"), Column("nurse_id", "string"),
     Column("plan_version_id", "string"), Column("phase_ordinal", "number"),
     Column("scheduled_start", "string"), Column("scheduled_end", "string"),
     Column("status", "string", description="scheduled, checked_in, completed, missed, "
            "cancelled or rescheduled; check-in and check-out move it, as evv_events."),
     Column("status_reason", "string", optional=True),
     Column("checked_in_at", "string", optional=True, description="Server receipt time."),
     Column("checked_out_at", "string", optional=True, description="Server receipt time.")),
    "Visits to the nurse's assigned patients. The phone may update status, checked_in_at and "
    "checked_out_at; the server derives them from the evv_events pushed with them.",
    _scoped(select(Visit.id, Visit.organisation_id, Visit.patient_id)),
    _scalar_rows,
    writable=frozenset({"status", "checked_in_at", "checked_out_at"}))

EVV_EVENTS: SyncTable = SyncTable(
    "evv_events", EvvEvent, Access.APPEND_ONLY,
    (Column("visit_id", "string"),
     Column("kind", "string", description="check_in or check_out."),
     Column("latitude", "number"), Column("longitude", "number"),
     Column("accuracy_m", "number"),
     Column("occurred_at", "string", description="The phone's clock."),
     Column("reason", "string", optional=True,
            description="Required when the phone is outside the home's radius."),
     Column("signature", "string", optional=True,
            description="Ed25519 signature of the phone over the row's other columns.")),
    "Check-ins and check-outs at the patient's home (EVV).",
    _signed_audience(EvvEvent), _evv_rows)


def _signed_table(name: str, model: type, schema: type[Schema], description: str) -> SyncTable:
    return SyncTable(name, model, Access.APPEND_ONLY, _schema_columns(schema), description,
                     _signed_audience(model), _signed_rows)


PRE_DOSES = _signed_table("pre_doses", PreDose, clinical.PreDoseSchema,
                          "Pre-dose assessments: vitals, baselines, decision.")
DOSES = _signed_table("doses", DoseRecord, clinical.DoseSchema,
                      "Doses given; each moves stock out of the nurse's bag.")
OBSERVATIONS = _signed_table("observations", Observation, clinical.ObservationSchema,
                             "Timed observations after the dose.")
DISCHARGES = _signed_table("discharges", Discharge, clinical.DischargeSchema,
                           "The end of monitoring.")
OUTCOME_SCORES = _signed_table("outcome_scores", OutcomeScore, clinical.OutcomeSchema,
                               "PHQ-9 and MADRS scores.")

CUSTODY_ENTRIES: SyncTable = SyncTable(
    "custody_entries", CustodyEntry, Access.APPEND_ONLY,
    (Column("kind", "string", description="On push: waste, transfer or return."),
     Column("product_id", "string"), Column("lot", "string"), Column("expiry", "string"),
     Column("quantity_ug", "number"),
     Column("from_holder", "string", optional=True, description="Set by the server; the "
            "phone that pushed the entry gets it in an update."),
     Column("to_holder", "string", optional=True,
            description="For a transfer: `bag:<nurse id>` of the receiving nurse."),
     Column("occurred_at", "string"), Column("visit_id", "string", optional=True),
     Column("corrects_id", "string", optional=True),
     Column("details", "string", optional=True, json=True, description="JSON object."),
     Column("witnesses", "string", optional=True, json=True,
            description="JSON list of {user_id, device_id, signature} confirmations, pulled "
            "with their signatures; one confirmed by password has neither device nor "
            "signature. A witness's phone may add `attested_at`, when it confirmed, which "
            "its signature then covers (see `POST /api/v1/custody/entries`)."),
     Column("signature", "string", optional=True, description="Ed25519 signature of the "
            "phone over the ledger movement, as for `POST /api/v1/custody/entries`.")),
    "Custody entries of the nurse's own bag, in and out.",
    _custody_audience, _custody_rows)

# Tables whose rows every nurse of the organisation sees; other rows need a patient or a bag.
ORG_WIDE = ("products",)
# Pull order: what a record refers to comes before it.
TABLES: tuple[SyncTable, ...] = (PRODUCTS, PATIENTS, PLAN_VERSIONS, VISITS, EVV_EVENTS,
                                 PRE_DOSES, DOSES, OBSERVATIONS, DISCHARGES, OUTCOME_SCORES,
                                 CUSTODY_ENTRIES)
BY_NAME = {table.name: table for table in TABLES}
BY_MODEL = {table.model: table for table in TABLES}
# Schemas that validate pushed append-only records, by table.
PUSH_SCHEMAS: dict[str, type[Schema]] = {
    "pre_doses": clinical.PreDoseSchema, "doses": clinical.DoseSchema,
    "observations": clinical.ObservationSchema, "discharges": clinical.DischargeSchema,
    "outcome_scores": clinical.OutcomeSchema, "evv_events": visit_schemas.PositionSchema}
