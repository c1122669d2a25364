"""The `administer` movement a signed dose record implies: built at append, checked by verify.

The phone signs the dose record, not a ledger movement. The entry a dose makes keeps that
signature with the body it covers, so `verify` can derive the movement from the body again and
compare. The patient the dose went to is the visit's, which the dose does not name: that part
of the movement is vouched for by the server's signature alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from backend.custody.chain import signed_payload
from backend.custody.ledger import Movement, bag
from backend.custody.models import Kind

PATIENT = "patient:"


class SignedDose(Schema):
    """The fields of a signed dose record that decide its movement (not the clinical ones)."""

    class Meta:
        unknown = EXCLUDE

    id = fields.UUID(required=True)
    product_id = fields.UUID(required=True)
    lot = fields.String(required=True)
    expiry = fields.Date(required=True)
    quantity_ug = fields.Integer(required=True, strict=True)
    infusion_started_at = fields.AwareDateTime(required=True)
    # Present when the dose came by sync, where the phone signs its visit too.
    visit_id = fields.UUID(load_default=None)


def administered(body: Mapping[str, Any], nurse_id: uuid.UUID, patient_id: uuid.UUID,
                 visit_id: uuid.UUID) -> Movement:
    """Return the movement the signed dose `body` implies: from the nurse's bag to the patient."""
    return _movement(SignedDose().load(body), nurse_id, f"{PATIENT}{patient_id}", visit_id)


def _movement(dose: dict[str, Any], nurse_id: uuid.UUID, patient: str,
              visit_id: uuid.UUID) -> Movement:
    return Movement(id=uuid.uuid5(dose["id"], "administer"), kind=Kind.ADMINISTER,
                    product_id=dose["product_id"], lot=dose["lot"], expiry=dose["expiry"],
                    quantity_ug=dose["quantity_ug"], from_holder=bag(nurse_id), to_holder=patient,
                    occurred_at=dose["infusion_started_at"], visit_id=visit_id,
                    details={"dose_record_id": str(dose["id"])})


def implied(entry: Mapping[str, Any]) -> bool:
    """Tell whether a stored entry is exactly the movement its signed dose record implies."""
    try:
        dose = SignedDose().load(entry["signed_record"])
    except ValidationError:
        return False
    if (dose["visit_id"] not in (None, entry["visit_id"]) or entry["corrects_id"] is not None
            or not entry["to_holder"].startswith(PATIENT)):
        return False
    movement = _movement(dose, entry["actor_id"], entry["to_holder"], entry["visit_id"])
    return signed_payload(movement.fields()) == signed_payload(entry)
