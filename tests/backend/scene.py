"""A practice with something to refuse at every endpoint, and row counts that prove it refused.

The hostile-input tests send one bad value at a time to a working practice: stock in the vault
and a nurse's bag, a plan, a visit the nurse may record on from her phone. `Scene.send` sends
a request as a role; `row_counts` and `changed` tell what a refusal left behind.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.errors import SignatureInvalid
from backend.schema import metadata
from backend.sync.models import SyncPush
from tests.factories import SUPPLIER, Pharmacy, World

DAY1 = "2026-11-03T15:00:00+00:00"
# Falls in year 10000 once in UTC: converting it was a 500.
PAST_9999 = "9999-12-31T23:59:59-12:00"
BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"
PRE_DOSE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98,
            "respiratory_rate": 14, "moaas": 5, "decision": "go"}
DISCHARGE = {"moaas": 5, "state": "baseline", "adverse_event_category": "none"}
AT_HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12,
           "occurred_at": "2026-11-03T15:02:00+00:00"}
PLAN = {"route": "IV", "dose_ug_per_kg": 500, "max_dose_ug": 70_000, "infusion_minutes": 40,
        "starts_on": "2026-11-02"}
# A request the tests send: method, path (with {placeholders} of the scene), role, body.
ADMIN, PRESCRIBER, PHARMACIST = Role.ADMIN, Role.PRESCRIBER, Role.PHARMACIST
NURSE, COMPLIANCE, PHONE, NOBODY = Role.NURSE, Role.COMPLIANCE, "phone", None


class Scene:
    """A pharmacy with stock, a plan, a weighed patient and a visit booked for its nurse."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pharmacy = pharmacy = Pharmacy(world)
        self.client = pharmacy.client
        self.plan = pharmacy.plan()
        assert pharmacy.receive(1_000_000).status_code == 201
        assert pharmacy.dispense(500_000).status_code == 201
        self.visit = pharmacy.schedule(DAY1).json
        weighed = self.client.post(f"/api/v1/patients/{pharmacy.patient_id}/weights",
                                   headers=pharmacy.as_(ADMIN),
                                   json={"weight_kg": "70", "measured_at": "2026-11-01T10:00Z"})
        assert weighed.status_code == 201, weighed.json
        # Signed in before any test counts rows: a login writes its own.
        self._headers: dict[Any, dict] = {
            role: pharmacy.as_(role) for role in (ADMIN, PRESCRIBER, PHARMACIST, NURSE,
                                                  COMPLIANCE)}
        self._headers[PHONE] = pharmacy.as_(NURSE, pharmacy.device_id)

    @property
    def ids(self) -> dict[str, str]:
        """Return what a path or body may name: {visit}, {plan}, {patient}, {product}, …"""
        pharmacy = self.pharmacy
        return {"visit": self.visit["id"], "plan": self.plan["id"],
                "patient": pharmacy.patient_id, "product": pharmacy.product_id,
                "nurse": str(pharmacy.nurse.id), "device": str(pharmacy.device_id)}

    def headers(self, role: Role | str | None) -> dict:
        """Return the headers of `role` (`PHONE`: the nurse on her registered phone)."""
        return {} if role is None else self._headers[role]

    def send(self, method: str, path: str, role: Role | str | None, body: Any = None, *,
             raw: bytes | None = None, query: dict | None = None, headers: dict | None = None):
        """Send one request; `raw` is sent as the JSON body byte for byte."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        return self.client.open(path.format(**self.ids), method=method, data=data,
                                content_type="application/json" if data is not None else None,
                                query_string=query,
                                headers={**self.headers(role), **(headers or {})})

    def signed(self, body: dict) -> dict:
        """Return `body` with an id, a time and the phone's signature, as the phone sends it."""
        body = {"id": str(uuid.uuid4()), "occurred_at": DAY1, **body}
        try:
            return {**body, "signature": self.pharmacy.phone.sign(body)}
        except (SignatureInvalid, ValueError, UnicodeEncodeError):
            # Canonical JSON cannot sign every bad value: the gate refuses it before any check.
            return {**body, "signature": "AAAA"}

    def entry(self, **values) -> dict:
        """Return a receipt into the vault, as a pharmacist posts it."""
        return {"id": str(uuid.uuid4()), "kind": "receive", "product_id": self.ids["product"],
                "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 1000,
                "occurred_at": DAY1, "details": SUPPLIER, **values}


def row_counts(connection) -> Counter:
    """Return every table's row count, read through the test's connection."""
    return Counter({table.name: connection.scalar(select(func.count()).select_from(table))
                    for table in metadata.sorted_tables})


def changed(before: Counter, after: Counter) -> dict[str, int]:
    """Return the tables whose row count changed, and by how much."""
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def refusal_records(role, method: str, *, logged_push: bool = False) -> dict[str, int]:
    """Return what a refusal keeps (docs/architecture.md): a caller's write its audit row, and
    a push refused once its body is read, the push log's row and its own audit row."""
    kept: dict[str, int] = {}
    if role is not None and method in {"POST", "PUT", "PATCH", "DELETE"}:
        kept[AuditEvent.__tablename__] = 1
    if logged_push:
        kept[AuditEvent.__tablename__] += 1
        kept[SyncPush.__tablename__] = 1
    return kept


def refused(response, status: int, code: str, field: str) -> dict:
    """Assert `response` is the one error shape with `status` and `code`, naming `field`."""
    assert response.status_code == status, response.get_data(as_text=True)[:600]
    error = response.json["error"]
    assert error["code"] == code, error
    assert field in error["details"].get("fields", {}), error
    return error
