"""Example request bodies for the OpenAPI document: one per main write, each a valid request.

A test loads every example through its operation's schema, so none drifts from the contract.
The ids and times are illustrative; the demo organisation's own ids come from its API.
"""

from __future__ import annotations

PRODUCT_ID = "5f3c1b9e-2d4a-4c8e-9f10-3a7b6c5d4e21"
PATIENT_ID = "0b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
NURSE_ID = "7c6b5a4f-3e2d-4c1b-9a0f-8e7d6c5b4a39"
VISIT_ID = "3e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b"

LOGIN = {"org": "demo", "username": "demo-nurse", "password": "correct horse battery staple",
         "device_id": "9a8f7e6d-5c4b-4a39-8271-6f5e4d3c2b1a"}
USER = {"username": "jrivera", "display_name": "J. Rivera, RN", "role": "nurse",
        "password": "a long passphrase of several words", "phone": "+1 555 0142",
        "email": "j.rivera@example.org"}
DEVICE = {"public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "label": "Pixel 8"}
PRODUCT = {"name": "Ketamine HCl 50 mg/mL, 10 mL vial", "active_ingredient": "ketamine",
           "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
           "units_per_container": "10.000", "allowed_routes": ["IV", "IM"],
           "home_administration_allowed": True, "ndc": "12345-6789-01",
           "package_description": "10 mL multi-dose vial, carton of 10", "rxnorm_code": "6130"}
PATIENT = {"mrn": "MRN-004211", "name": "Alex Example", "date_of_birth": "1979-04-12",
           "address": "12 Example Lane, Springfield", "phone": "+1 555 0100",
           "home_latitude": "39.781721", "home_longitude": "-89.650148",
           "nurse_ids": [NURSE_ID]}
PLAN = {"product_id": PRODUCT_ID, "route": "IV", "dose_ug_per_kg": 500, "max_dose_ug": 50_000,
        "infusion_minutes": 40, "starts_on": "2026-12-07"}
VISIT = {"patient_id": PATIENT_ID, "nurse_id": NURSE_ID,
         "scheduled_start": "2026-12-08T15:00:00-06:00"}
POSITION = {"latitude": "39.781700", "longitude": "-89.650100", "accuracy_m": 12,
            "occurred_at": "2026-12-08T14:58:40-06:00"}
RECEIPT = {"kind": "receive", "product_id": PRODUCT_ID, "lot": "KT24118", "expiry": "2028-03-31",
           "quantity_ug": 5_000_000, "occurred_at": "2026-12-07T09:15:00-06:00",
           "details": {"supplier": "Example Wholesale", "dea_form_222": "231456789"}}
INVENTORY = {"kind": "biennial", "as_of": "2026-12-07T17:00:00-06:00", "at": "close"}
COUNT = {"holder": "vault", "counted_at": "2026-12-07T17:00:00-06:00",
         "counts": [{"product_id": PRODUCT_ID, "lot": "KT24118", "quantity_ug": 4_500_000}]}
RESOLVE = {"resolution": "justified",
           "note": "Prescriber confirmed the dose change by phone; order on file."}
THRESHOLD = {"value": "300"}
