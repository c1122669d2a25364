"""Build organisations, users, devices and logins inside a test."""

from __future__ import annotations

import base64
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pyotp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from sqlalchemy import update
from sqlalchemy.orm import Session

from backend import boundary
from backend.accounts import service as accounts
from backend.accounts.models import DESK_ROLES, Organisation, Role, User
from backend.devices.signatures import canonical_bytes
from backend.mfa.models import FactorKind, SecondFactor
from backend.runtime import Runtime

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


@dataclass
class Phone:
    """A device's key pair, able to sign payloads as the phone app would."""

    private_key: Ed25519PrivateKey

    @classmethod
    def new(cls) -> Phone:
        """Return a phone with a fresh key pair."""
        return cls(Ed25519PrivateKey.generate())

    def public_key_b64(self) -> str:
        """Return the public key as the registration endpoint expects it."""
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, payload: object) -> str:
        """Return the base64 signature over the canonical bytes of `payload`."""
        return base64.b64encode(self.private_key.sign(canonical_bytes(payload))).decode()


class World:
    """Make objects through the services, in the test's transaction."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.rt: Runtime = app.extensions["vigil.runtime"]
        self.session: Session = app.extensions["vigil.db"].sessions()
        self.authenticators: dict[uuid.UUID, pyotp.TOTP] = {}

    def commit(self) -> None:
        """End the test's unit of work as a request would: judge what it noted, then commit."""
        boundary.finish(self.session, self.rt)

    def org(self, slug: str | None = None) -> Organisation:
        """Create an organisation."""
        org = accounts.create_organisation(
            self.session, self.rt, slug=slug or f"org-{next(_counter)}", name="Test Pharmacy",
            dea_registration="FV0000000", timezone="America/Chicago")
        self.commit()
        return org

    def user(self, org: Organisation, role: Role, username: str | None = None, *,
             factor: bool | None = None) -> User:
        """Create a user with the shared test password; a desk user with a TOTP factor."""
        user = accounts.create_user(
            self.session, self.rt, None, organisation_id=org.id,
            username=username or f"{role.value}-{next(_counter)}", display_name="Test User",
            role=role, password=PASSWORD)
        if role in DESK_ROLES if factor is None else factor:
            self.enrol(user)
        self.commit()
        return user

    def enrol(self, user: User) -> pyotp.TOTP:
        """Give `user` a confirmed TOTP factor, as if enrolled; return their authenticator."""
        factor = SecondFactor(user_id=user.id, organisation_id=user.organisation_id,
                              kind=FactorKind.TOTP, label="Test authenticator",
                              created_at=self.rt.clock.now(), confirmed_at=self.rt.clock.now())
        factor.secret = pyotp.random_base32()
        self.session.add(factor)
        self.session.flush()
        self.authenticators[user.id] = pyotp.TOTP(factor.secret)
        return self.authenticators[user.id]

    def totp(self, user: User) -> pyotp.TOTP:
        """Return the authenticator of a user the World enrolled."""
        return self.authenticators[user.id]

    def code(self, user: User) -> str:
        """Return `user`'s current code, usable again however often a test signs in.

        Tests sign in many times within one 30-second step of a fixed clock: the World forgets
        which step was used, which the server otherwise refuses (tests/backend/mfa prove that).
        """
        self.session.execute(update(SecondFactor).where(SecondFactor.user_id == user.id)
                             .values(last_used_step=None))
        self.commit()
        return self.totp(user).at(self.rt.clock.now())

    def login(self, org: Organisation, user: User, device_id: uuid.UUID | None = None) -> dict:
        """Log `user` in (with their second factor where one is asked) and return the tokens."""
        body = {"org": org.slug, "username": user.username, "password": PASSWORD}
        if device_id:
            body["device_id"] = str(device_id)
        response = self.client.post("/api/v1/auth/login", json=body)
        assert response.status_code == 200, response.json
        if response.json.get("mfa_required"):
            challenge = response.json["challenge_token"]
            if response.json["enrolment_required"]:
                begun = self.client.post("/api/v1/auth/login/enrol",
                                         json={"challenge_token": challenge})
                assert begun.status_code == 201, begun.json
                self.authenticators[user.id] = pyotp.parse_uri(begun.json["otpauth_uri"])
            response = self.client.post("/api/v1/auth/login/factor", json={
                "challenge_token": challenge, "code": self.code(user)})
            assert response.status_code == 200, response.json
        return response.json

    def headers(self, org: Organisation, user: User, device_id: uuid.UUID | None = None) -> dict:
        """Return the Authorization header of a fresh login."""
        return {"Authorization": f"Bearer {self.login(org, user, device_id)['access_token']}"}

    def device(self, org: Organisation, nurse: User) -> tuple[uuid.UUID, Phone]:
        """Register a phone for `nurse`; return its id and key pair."""
        phone = Phone.new()
        response = self.client.post("/api/v1/devices", headers=self.headers(org, nurse),
                                    json={"public_key": phone.public_key_b64(), "label": "phone"})
        assert response.status_code == 201, response.json
        return uuid.UUID(response.json["id"]), phone


RACEMIC_50 = {"name": "Ketamine HCl 50 mg/mL, 10 mL vial", "active_ingredient": "ketamine",
              "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
              "units_per_container": "10", "allowed_routes": ["IV", "IM"],
              "home_administration_allowed": True}
ESKETAMINE = {"name": "Esketamine 28 mg nasal device", "active_ingredient": "esketamine",
              "dea_schedule": "III", "form": "nasal_device", "ug_per_unit": 28_000,
              "units_per_container": "1", "allowed_routes": ["intranasal"],
              "home_administration_allowed": False}


class Clinic:
    """An organisation with one user per role, a patient with a nurse, and a home-safe product."""

    def __init__(self, world: World, home=("41.878100", "-87.629800")) -> None:
        self.world, self.client = world, world.client
        self.org = world.org()
        self.users = {role: world.user(self.org, role) for role in Role}
        self.nurse = self.users[Role.NURSE]
        self.prescriber = self.users[Role.PRESCRIBER]
        self.patient_id = self.patient([self.nurse], home)
        self.product_id = self.product(RACEMIC_50)

    def as_(self, role: Role, device_id: uuid.UUID | None = None) -> dict:
        """Return headers of a fresh login of the clinic's user with `role`."""
        return self.world.headers(self.org, self.users[role], device_id)

    def patient(self, nurses: list[User], home=None) -> str:
        """Register a patient assigned to `nurses`, optionally with a home location."""
        response = self.client.post("/api/v1/patients", headers=self.as_(Role.ADMIN), json={
            "mrn": f"MRN-{next(_counter)}", "name": "Pat Test", "date_of_birth": "1970-01-01",
            "nurse_ids": [str(n.id) for n in nurses]})
        assert response.status_code == 201, response.json
        patient_id = response.json["id"]
        if home:
            from backend.patients.models import Patient

            patient = self.world.session.get(Patient, uuid.UUID(patient_id))
            patient.home_latitude, patient.home_longitude = (Decimal(v) for v in home)
            self.world.commit()
        return patient_id

    def product(self, body: dict) -> str:
        """Add a product to the catalogue."""
        response = self.client.post("/api/v1/products", headers=self.as_(Role.PHARMACIST),
                                    json={**body, "name": f"{body['name']} #{next(_counter)}"})
        assert response.status_code == 201, response.json
        return response.json["id"]

    def plan(self, patient_id: str | None = None, product_id: str | None = None,
             **overrides) -> dict:
        """Write a plan (0.5 mg/kg IV over 40 min, default phases from policy)."""
        body = {"product_id": product_id or self.product_id, "route": "IV",
                "dose_ug_per_kg": 500, "max_dose_ug": 70_000, "infusion_minutes": 40,
                "starts_on": "2026-11-02", **overrides}
        response = self.client.post(f"/api/v1/patients/{patient_id or self.patient_id}/plans",
                                    headers=self.as_(Role.PRESCRIBER), json=body)
        assert response.status_code == 201, response.json
        return response.json

    def schedule(self, start: str, role: Role = Role.ADMIN, **body):
        """Try to schedule a visit for the clinic's patient and nurse."""
        return self.client.post("/api/v1/visits", headers=self.as_(role), json={
            "patient_id": self.patient_id, "nurse_id": str(self.nurse.id),
            "scheduled_start": start, **body})


SUPPLIER = {"supplier_name": "Example Wholesale Inc.", "supplier_address": "1 Depot Rd, Elk Grove",
            "supplier_dea": "RW0000000", "invoice": "INV-1"}


class Pharmacy(Clinic):
    """A clinic with a vault, a nurse's phone, and helpers that post custody entries."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.device_id, self.phone = world.device(self.org, self.nurse)

    def post(self, role: Role, body: dict, *, sign_with: Phone | None = None):
        """Post a custody entry as `role` (a nurse from her phone, signing the entry)."""
        body = {"occurred_at": "2026-11-02T14:00:00+00:00", "product_id": self.product_id,
                "lot": "L1", "expiry": "2028-01-31", **body}
        body.setdefault("id", str(uuid.uuid4()))
        headers = self.as_(role, self.device_id if role == Role.NURSE else None)
        if role == Role.NURSE and "signature" not in body:
            body["signature"] = (sign_with or self.phone).sign(signed_payload(self, body))
        return self.client.post("/api/v1/custody/entries", headers=headers, json=body)

    def receive(self, quantity_ug: int, lot: str = "L1"):
        """Receive stock into the vault."""
        return self.post(Role.PHARMACIST, {"kind": "receive", "lot": lot,
                                           "quantity_ug": quantity_ug, "details": SUPPLIER})

    def dispense(self, quantity_ug: int, lot: str = "L1", seal: str = "S-1"):
        """Dispense a kit from the vault to the clinic's nurse."""
        return self.post(Role.PHARMACIST, {"kind": "dispense", "lot": lot,
                                           "quantity_ug": quantity_ug,
                                           "nurse_id": str(self.nurse.id),
                                           "details": {"seal_id": seal}})


def signed_payload(pharmacy: Pharmacy, body: dict) -> dict:
    """Return what the nurse's phone signs for `body` (the server derives the same)."""
    from backend.custody.chain import signed_payload as payload

    holders = {"administer": (f"bag:{pharmacy.nurse.id}", f"patient:{body.get('patient_id')}"),
               "waste": (f"bag:{pharmacy.nurse.id}", "waste"),
               "return": (f"bag:{pharmacy.nurse.id}", "vault"),
               "transfer": (f"bag:{pharmacy.nurse.id}", f"bag:{body.get('nurse_id')}")}
    from_holder, to_holder = holders[body["kind"]]
    return payload({**body, "from_holder": from_holder, "to_holder": to_holder,
                    "visit_id": body.get("visit_id"), "details": body.get("details", {}),
                    "occurred_at": datetime.fromisoformat(body["occurred_at"]),
                    "expiry": body["expiry"]})
