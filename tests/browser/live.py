"""A live Vigil server on a database of its own, seeded like the demo, for a real browser.

The app is the tests' app (`make_app`: a FixedClock the test moves, `VIGIL_ENV=test`, cheap
argon2) served by werkzeug on 127.0.0.1 at a free port, in a thread. The seed goes through the
services and the API, as a user would: the demo organisation (`vigil demo`, its logins pinned to
the tests' password), the nurse's phone, stock in the vault and her bag, a count that found
less than the ledger (a flag), another organisation whose ids must answer 404, and last an
authenticator app for each desk user, enrolled through the API, so that they sign in with a
second factor as desk users do.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import BaseWSGIServer, make_server

from backend import boundary, demo
from backend.accounts.models import Organisation, Role, User
from backend.clock import FixedClock
from backend.products.models import DrugProduct
from tests.backend.conftest import START, make_app
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, World

DESK_ROLES = (Role.ADMIN, Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER)
TOTP_STEP_SECONDS = 30


@dataclass
class Authenticator:
    """A seeded user's authenticator app, reading the live server's clock."""

    totp: pyotp.TOTP
    clock: FixedClock

    def next_code(self) -> str:
        """Return the code of the next 30-second step, moving the clock to it.

        The server accepts each step once, and tests sign in many times on a fixed clock: each
        sign-in waits for the next code, as a user would.
        """
        self.clock.advance(seconds=TOTP_STEP_SECONDS)
        return self.totp.at(self.clock.now())


@dataclass
class Seeded:
    """What the seed made: the demo organisation's ids, and another organisation's."""

    org: str
    usernames: dict[Role, str]
    user_ids: dict[Role, str]
    patient_id: str
    product_id: str
    device_id: str
    flag_id: str
    other_org: str = ""
    other: dict[str, str] = field(default_factory=dict)
    # The desk users' authenticator apps, by role.
    authenticators: dict[Role, Authenticator] = field(default_factory=dict)


class Api:
    """Calls to the live app's JSON API as one of the demo organisation's users."""

    def __init__(self, app: Flask, org: str, usernames: dict[Role, str],
                 authenticators: dict[Role, Authenticator] | None = None) -> None:
        self.client: FlaskClient = app.test_client()
        self.clock: FixedClock = app.extensions["vigil.runtime"].clock
        self.org, self.usernames = org, usernames
        self.authenticators = authenticators if authenticators is not None else {}

    def headers(self, role: Role, device_id: str | None = None) -> dict[str, str]:
        """Return the Authorization header of a fresh login as `role` (with its code if asked)."""
        body = {"org": self.org, "username": self.usernames[role], "password": PASSWORD}
        if device_id:
            body["device_id"] = device_id
        answer = self.client.post("/api/v1/auth/login", json=body)
        assert answer.status_code == 200, answer.json
        if answer.json.get("mfa_required"):
            answer = self.client.post("/api/v1/auth/login/factor", json={
                "challenge_token": answer.json["challenge_token"],
                "code": self.authenticators[role].next_code()})
            assert answer.status_code == 200, answer.json
        return {"Authorization": f"Bearer {answer.json['access_token']}"}

    def enrol(self, role: Role) -> Authenticator:
        """Add and confirm an authenticator app for the user with `role`, as they would."""
        headers = self.headers(role)
        begun = self.client.post("/api/v1/me/factors/totp", headers=headers,
                                 json={"label": "Phone"})
        assert begun.status_code == 201, begun.json
        app = Authenticator(pyotp.parse_uri(begun.json["otpauth_uri"]), self.clock)
        confirmed = self.client.post(f"/api/v1/me/factors/{begun.json['factor']['id']}/confirm",
                                     headers=headers, json={"code": app.totp.at(self.clock.now())})
        assert confirmed.status_code == 200, confirmed.json
        self.authenticators[role] = app
        return app

    def call(self, method: str, path: str, role: Role, body: Any = None, *,
             status: int = 200, **query: Any) -> Any:
        """Send one request as `role`; assert its status and return its JSON."""
        answer = self.client.open(f"/api/v1{path}", method=method, json=body,
                                  query_string=query or None, headers=self.headers(role))
        assert answer.status_code == status, (method, path, answer.get_data(as_text=True))
        return answer.json

    def entry(self, kind: str, quantity_ug: int, product_id: str, lot: str = "L-1001",
              expiry: str = "2028-06-30", **body: Any) -> dict:
        """Record a custody entry as the pharmacist."""
        return self.call("POST", "/custody/entries", Role.PHARMACIST, {
            "id": str(uuid.uuid4()), "kind": kind, "product_id": product_id, "lot": lot,
            "expiry": expiry, "quantity_ug": quantity_ug,
            "occurred_at": self.clock.now().isoformat(), **body}, status=201)

    def count(self, holder: str, product_id: str, counts: dict[str, int]) -> dict:
        """Record a physical count of `holder`, lot by lot, as the pharmacist."""
        return self.call("POST", "/custody/counts", Role.PHARMACIST, {
            "holder": holder, "counted_at": self.clock.now().isoformat(),
            "counts": [{"product_id": product_id, "lot": lot, "quantity_ug": quantity}
                       for lot, quantity in counts.items()]}, status=201)

    def discrepancy(self, product_id: str, lot: str = "L-1001") -> str:
        """Count the vault, one lot 1 mg short of the ledger; return the flag the count raised."""
        balances = self.call("GET", "/custody/balances", Role.PHARMACIST, holder="vault")
        # A count is of the whole holder: a lot left out would be counted as none.
        held = {row["lot"]: row["quantity_ug"] - (1_000 if row["lot"] == lot else 0)
                for row in balances if row["product_id"] == product_id}
        lines = self.count("vault", product_id, held)["lots"]
        [flag_id] = [line["flag_id"] for line in lines if line["lot"] == lot]
        assert flag_id, lines
        return flag_id


def seed(app: Flask) -> Seeded:
    """Seed the demo organisation and another one through the services and the API."""
    instance = Path(app.instance_path)
    # `vigil demo` reads each role's password from here; pinned, the seed is deterministic.
    (instance / demo.LOGINS_FILE).write_text(json.dumps({role.value: PASSWORD for role in Role}))
    runtime, sessions = app.extensions["vigil.runtime"], app.extensions["vigil.db"].sessions
    with boundary.unit(sessions, runtime) as session:
        demo.seed(session, runtime, instance)
        org = session.scalar(select(Organisation).where(Organisation.slug == demo.DEMO_SLUG))
        users = {user.role: user for user in session.scalars(
            select(User).where(User.organisation_id == org.id))}
        vial = session.scalar(select(DrugProduct).where(DrugProduct.organisation_id == org.id,
                                                    DrugProduct.ug_per_unit == 50_000))
        product_id = str(vial.id)
    api = Api(app, demo.DEMO_SLUG, {role: user.username for role, user in users.items()})
    patients = api.call("GET", "/patients", Role.ADMIN)
    patient_id = next(p["id"] for p in patients if p["mrn"] == demo.DEMO_PATIENTS[0][0])
    seeded = Seeded(org=demo.DEMO_SLUG, usernames=api.usernames,
                    user_ids={role: str(user.id) for role, user in users.items()},
                    patient_id=patient_id, product_id=product_id,
                    device_id=_phone(api), flag_id="")
    _stock(api, seeded)
    seeded.flag_id = api.discrepancy(seeded.product_id)
    _other_organisation(app, seeded)
    seeded.authenticators = {role: api.enrol(role) for role in DESK_ROLES}
    # Past everything the seed recorded, so a form's time (to the minute) comes after it.
    api.clock.advance(minutes=5)
    return seeded


def _phone(api: Api) -> str:
    from tests.factories import Phone

    nurse = api.headers(Role.NURSE)
    answer = api.client.post("/api/v1/devices", headers=nurse, json={
        "public_key": Phone.new().public_key_b64(), "label": "Demo nurse's phone"})
    assert answer.status_code == 201, answer.json
    return answer.json["id"]


def _stock(api: Api, seeded: Seeded) -> None:
    product, nurse = seeded.product_id, seeded.user_ids[Role.NURSE]
    api.call("POST", f"/patients/{seeded.patient_id}/weights", Role.ADMIN, {
        "weight_kg": "72.5", "measured_at": (api.clock.now() - timedelta(days=1)).isoformat()},
        status=201)
    api.entry("receive", 5_000_000, product, details=SUPPLIER)
    # A lot that expires within 30 days, which the inventory marks.
    soon = (api.clock.now() + timedelta(days=20)).date().isoformat()
    api.entry("receive", 1_000_000, product, lot="L-0999", expiry=soon,
              details={**SUPPLIER, "invoice": "INV-2"})
    api.entry("dispense", 500_000, product, nurse_id=nurse, details={"seal_id": "SEAL-0001"})
    # A visit this afternoon makes today her shift, which the bag reconciliation shows.
    api.call("POST", "/visits", Role.ADMIN, {
        "patient_id": seeded.patient_id, "nurse_id": nurse,
        "scheduled_start": (api.clock.now() + timedelta(hours=5)).isoformat()}, status=201)


def _other_organisation(app: Flask, seeded: Seeded) -> None:
    world = World(app)
    try:
        other = Pharmacy(world)
        assert other.receive(1_000_000).status_code == 201
        answer = other.client.post("/api/v1/custody/counts", headers=other.as_(Role.PHARMACIST),
                                   json={"holder": "vault", "counted_at": START.isoformat(),
                                         "counts": [{"product_id": other.product_id, "lot": "L1",
                                                     "quantity_ug": 999_000}]})
        assert answer.status_code == 201, answer.json
        seeded.other_org = other.org.slug
        seeded.other = {"patient": other.patient_id, "product": other.product_id,
                        "nurse": str(other.nurse.id), "user": str(other.users[Role.ADMIN].id),
                        "flag": answer.json["lots"][0]["flag_id"]}
    finally:
        world.session.close()


class LiveServer:
    """The app served over HTTP on 127.0.0.1 in a thread, from `start` until `stop`."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.clock: FixedClock = app.extensions["vigil.runtime"].clock
        self.url = ""
        self.seeded: Seeded | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def on(cls, database_url: str, instance: Path) -> LiveServer:
        """Return a server of the tests' app on `database_url` (migrated), not yet serving."""
        return cls(make_app(database_url, instance, FixedClock(START)))

    def start(self) -> LiveServer:
        """Serve in the background, at a free port."""
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="vigil-live",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the database."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
        self.app.extensions["vigil.db"].engine.dispose()

    def api(self, seeded: Seeded) -> Api:
        """Return API calls as the seeded organisation's users."""
        return Api(self.app, seeded.org, seeded.usernames, seeded.authenticators)
