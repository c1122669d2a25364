"""Build organisations, users, devices and logins inside a test."""

from __future__ import annotations

import base64
import itertools
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from sqlalchemy.orm import Session

from backend.accounts import service as accounts
from backend.accounts.models import Organisation, Role, User
from backend.devices.signatures import canonical_bytes
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

    def org(self, slug: str | None = None) -> Organisation:
        """Create an organisation."""
        org = accounts.create_organisation(
            self.session, self.rt, slug=slug or f"org-{next(_counter)}", name="Test Pharmacy",
            dea_registration="FV0000000", timezone="America/Chicago")
        self.session.commit()
        return org

    def user(self, org: Organisation, role: Role, username: str | None = None) -> User:
        """Create a user with the shared test password."""
        user = accounts.create_user(
            self.session, self.rt, None, organisation_id=org.id,
            username=username or f"{role.value}-{next(_counter)}", display_name="Test User",
            role=role, password=PASSWORD)
        self.session.commit()
        return user

    def login(self, org: Organisation, user: User, device_id: uuid.UUID | None = None) -> dict:
        """Log `user` in and return the token pair."""
        body = {"org": org.slug, "username": user.username, "password": PASSWORD}
        if device_id:
            body["device_id"] = str(device_id)
        response = self.client.post("/api/v1/auth/login", json=body)
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
