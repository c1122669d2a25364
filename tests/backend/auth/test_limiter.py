"""One limiter for every password: a witness's confirmation counts and locks like a login."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from argon2 import PasswordHasher
from flask import Flask
from sqlalchemy import func, select, text

from backend.accounts.models import Role, User
from backend.audit.models import AuditEvent
from backend.auth import limiter
from backend.auth.models import LoginFailure
from tests.backend.administration.test_sessions import PRE
from tests.backend.administration.test_sessions import Session as Visit
from tests.backend.conftest import own_postgres_app
from tests.backend.sync.test_concurrent_phones import sqlite_app
from tests.factories import PASSWORD, Pharmacy, World, signed_payload

LOGIN = "/api/v1/auth/login"
ENTRIES = "/api/v1/custody/entries"
WRONG = "not the password"
# The nurse posts from her clinic; the failed logins of a guesser come from elsewhere.
CLINIC = "198.51.100.7"
ELSEWHERE = "203.0.113.9"
# Parallel guesses at one account, against a limit of 5 (and 20 per address).
BURST = 30


@pytest.fixture
def pharmacy(world: World) -> Pharmacy:
    """Return a pharmacy whose nurse carries stock to waste; its pharmacist is the witness."""
    pharmacy = Pharmacy(world)
    assert pharmacy.receive(100_000).status_code == 201
    assert pharmacy.dispense(50_000).status_code == 201
    return pharmacy


def witness_of(pharmacy: Pharmacy) -> User:
    """Return the user who witnesses the nurse's wastes."""
    return pharmacy.users[Role.PHARMACIST]


def waste(pharmacy: Pharmacy, password: str | None, headers: dict, address: str = CLINIC,
          client=None):
    """Post a signed waste that names the witness with `password`, from `address`."""
    confirmation = {"user_id": str(witness_of(pharmacy).id)}
    if password is not None:
        confirmation["password"] = password
    body = {"id": str(uuid.uuid4()), "kind": "waste", "quantity_ug": 15_000,
            "occurred_at": "2026-11-02T14:00:00+00:00", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", "witnesses": [confirmation]}
    body["signature"] = pharmacy.phone.sign(signed_payload(pharmacy, body))
    return (client or pharmacy.client).post(ENTRIES, json=body, headers=headers,
                                            environ_base={"REMOTE_ADDR": address})


def login(pharmacy: Pharmacy, username: str, password: str, address: str = ELSEWHERE):
    """Try to log in to the pharmacy's organisation from `address`."""
    return pharmacy.client.post(LOGIN, json={"org": pharmacy.org.slug, "username": username,
                                             "password": password},
                                environ_base={"REMOTE_ADDR": address})


def _step(pharmacy: Pharmacy, headers: dict, step: str, index: int) -> None:
    witness = witness_of(pharmacy).username
    if step == "witness wrong":
        assert waste(pharmacy, WRONG, headers).status_code == 422
    elif step == "witness right":
        assert waste(pharmacy, PASSWORD, headers).status_code == 201
    elif step == "login wrong":
        assert login(pharmacy, witness, WRONG).status_code == 401
    elif step == "login right":
        assert login(pharmacy, witness, PASSWORD).status_code == 200
    else:
        # A guesser at the nurse's clinic, trying other accounts.
        assert login(pharmacy, f"guess-{index}", WRONG, address=CLINIC).status_code == 401


# Steps before the witness's last confirmation → that confirmation's status and error code.
# The limits are the defaults: 5 failures per account, 20 per address, in 15 minutes.
CASES = {
    "four wrong passwords leave the fifth check open":
        (["witness wrong"] * 4, PASSWORD, 201, None),
    "a fifth wrong password is still read, and refused as unconfirmed":
        (["witness wrong"] * 4, WRONG, 422, "witness_required"),
    "five wrong confirmations lock the witness out, right password or not":
        (["witness wrong"] * 5, PASSWORD, 429, "locked_out"),
    "five wrong logins lock the witness's confirmations":
        (["login wrong"] * 5, PASSWORD, 429, "locked_out"),
    "logins and confirmations count together":
        (["login wrong"] * 3 + ["witness wrong"] * 2, PASSWORD, 429, "locked_out"),
    "a right confirmation clears the account's count":
        (["witness wrong"] * 4 + ["witness right"] + ["witness wrong"] * 4, PASSWORD, 201, None),
    "a right login clears it too":
        (["witness wrong"] * 4 + ["login right"] + ["witness wrong"] * 4, PASSWORD, 201, None),
    "twenty failures from the nurse's address lock it, whatever the accounts":
        (["address guess"] * 20, PASSWORD, 429, "locked_out"),
    "nineteen do not": (["address guess"] * 19, PASSWORD, 201, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_witness_password_is_limited_like_a_login(pharmacy: Pharmacy, case: str):
    steps, password, status, code = CASES[case]
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    for index, step in enumerate(steps):
        _step(pharmacy, headers, step, index)
    answer = waste(pharmacy, password, headers)
    assert answer.status_code == status, (case, answer.json)
    if code:
        assert answer.json["error"]["code"] == code


def test_a_locked_witness_is_told_when_to_retry_and_confirms_after_the_window(
        pharmacy: Pharmacy, app, clock):
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    for _ in range(app.config["LOGIN_MAX_PER_ACCOUNT"]):
        assert waste(pharmacy, WRONG, headers).status_code == 422
    locked = waste(pharmacy, PASSWORD, headers)
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= app.config["LOGIN_WINDOW_SECONDS"] + 1
    assert locked.json["error"]["details"]["retry_after"] == int(locked.headers["Retry-After"])
    clock.advance(seconds=app.config["LOGIN_WINDOW_SECONDS"])
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    assert waste(pharmacy, PASSWORD, headers).status_code == 201


def test_wrong_confirmations_lock_the_witness_login(pharmacy: Pharmacy, app):
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    for _ in range(app.config["LOGIN_MAX_PER_ACCOUNT"]):
        assert waste(pharmacy, WRONG, headers).status_code == 422
    locked = login(pharmacy, witness_of(pharmacy).username, PASSWORD)
    assert locked.status_code == 429
    assert locked.json["error"]["code"] == "locked_out"


def _witness_failures(world: World) -> list[AuditEvent]:
    world.session.expire_all()
    return list(world.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "custody.witness_failed").order_by(AuditEvent.occurred_at)))


def test_each_failed_confirmation_is_audited_naming_the_witness_never_the_password(
        pharmacy: Pharmacy, world: World):
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    answers = [waste(pharmacy, f"guess number {n}", headers) for n in range(2)]
    assert [a.status_code for a in answers] == [422, 422]
    events = _witness_failures(world)
    assert len(events) == 2
    for event in events:
        assert (event.object_type, event.object_id) == ("user", str(witness_of(pharmacy).id))
        assert (event.user_id, event.address) == (pharmacy.nurse.id, CLINIC)
        assert event.detail["kind"] == "waste"
        assert "guess number" not in repr(
            {column.key: getattr(event, column.key) for column in AuditEvent.__table__.c})
    counted = world.session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.key.in_([f"{pharmacy.org.slug}:{witness_of(pharmacy).username}", CLINIC])))
    assert counted == 4


def test_a_confirmation_without_password_or_signature_is_not_a_guess(pharmacy: Pharmacy,
                                                                      world: World):
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    for _ in range(6):
        refused = waste(pharmacy, None, headers)
        assert refused.status_code == 422
        assert refused.json["error"]["code"] == "witness_required"
    assert _witness_failures(world) == []


def test_a_wrong_witness_password_in_a_stored_session_still_counts(world: World):
    # The session is stored and its waste kept in quarantine: the guess must count all the same.
    visit = Visit(world, stock_ug=0)
    pharmacy = visit.pharmacy
    body = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": pharmacy.product_id,
            "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 15_000,
            "occurred_at": "2026-11-03T16:00:00+00:00", "visit_id": visit.visit["id"]}
    signature = pharmacy.phone.sign(signed_payload(pharmacy, body))
    part = {**{k: v for k, v in body.items() if k not in ("kind", "visit_id")},
            "signature": signature,
            "witnesses": [{"user_id": str(witness_of(pharmacy).id), "password": WRONG}]}
    stored = visit.post("session", {"pre_dose": visit.signed(PRE), "waste": part})
    assert stored.status_code == 201, stored.json
    [held] = stored.json["quarantined"]
    assert held["reason"].startswith("witness_required")
    [event] = _witness_failures(world)
    assert event.object_id == str(witness_of(pharmacy).id)
    assert world.session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.key == f"{pharmacy.org.slug}:{witness_of(pharmacy).username}")) == 1


class CountingHasher(PasswordHasher):
    """The app's password hasher, counting how many passwords it verified."""

    def __init__(self, hasher: PasswordHasher) -> None:
        super().__init__(hasher.time_cost, hasher.memory_cost, hasher.parallelism,
                         hasher.hash_len, hasher.salt_len, type=hasher.type)
        self.verified = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        """Verify as argon2 does, and count it."""
        with self._lock:
            self.verified += 1
        return super().verify(hash, password)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres_only)])
def burst_app(request, tmp_path, instance_path) -> Iterator[Flask]:
    """Yield an app whose requests really commit, whose hasher counts its verifications."""
    if request.param == "postgresql":
        with own_postgres_app(instance_path, "limit") as app:
            yield _counting(app)
        return
    app = _counting(sqlite_app(tmp_path))
    yield app
    app.extensions["vigil.db"].engine.dispose()


def _counting(app: Flask) -> Flask:
    rt = app.extensions["vigil.runtime"]
    app.extensions["vigil.runtime"] = replace(rt, passwords=CountingHasher(rt.passwords))
    return app


def burst(app: Flask, send) -> list[tuple[int, str | None]]:
    """Send BURST requests at once, each through `send(client)`; return status and code."""
    start = threading.Barrier(BURST)

    def one(_: int) -> tuple[int, str | None]:
        client = app.test_client()
        start.wait()
        response = send(client)
        return response.status_code, (response.json.get("error") or {}).get("code")

    app.extensions["vigil.runtime"].passwords.verified = 0
    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(one, range(BURST), timeout=120))


def _held_advisory_locks(app: Flask) -> int:
    with app.extensions["vigil.db"].engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return 0
        return conn.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"space": limiter.LOCK_SPACE})


def _counted(app: Flask, key: str) -> int:
    with app.extensions["vigil.db"].sessions() as session:
        return session.scalar(select(func.count()).select_from(LoginFailure).where(
            LoginFailure.scope == "account", LoginFailure.key == key))


def test_a_burst_of_wrong_logins_has_at_most_the_limit_evaluated(burst_app: Flask):
    world = World(burst_app)
    org = world.org()
    user = world.user(org, Role.NURSE)
    limit = burst_app.config["LOGIN_MAX_PER_ACCOUNT"]
    answers = burst(burst_app, lambda client: client.post(LOGIN, json={
        "org": org.slug, "username": user.username, "password": WRONG},
        environ_base={"REMOTE_ADDR": ELSEWHERE}))
    world.session.close()
    assert burst_app.extensions["vigil.runtime"].passwords.verified == limit
    assert sorted(answers) == ([(401, "invalid_credentials")] * limit
                               + [(429, "locked_out")] * (BURST - limit)), answers
    assert _counted(burst_app, f"{org.slug}:{user.username}") == limit
    assert _held_advisory_locks(burst_app) == 0


def test_a_burst_of_wrong_witness_passwords_has_at_most_the_limit_evaluated(burst_app: Flask):
    pharmacy = Pharmacy(World(burst_app))
    headers = pharmacy.as_(Role.NURSE, pharmacy.device_id)
    limit = burst_app.config["LOGIN_MAX_PER_ACCOUNT"]
    # Each a different waste, so none is a retry of another; refused before any stock moves.
    answers = burst(burst_app, lambda client: waste(pharmacy, WRONG, headers, client=client))
    pharmacy.world.session.close()
    assert burst_app.extensions["vigil.runtime"].passwords.verified == limit
    assert sorted(answers) == ([(422, "witness_required")] * limit
                               + [(429, "locked_out")] * (BURST - limit)), answers
    witness = witness_of(pharmacy)
    assert _counted(burst_app, f"{pharmacy.org.slug}:{witness.username}") == limit
    with burst_app.extensions["vigil.db"].sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "custody.witness_failed",
            AuditEvent.object_id == str(witness.id))) == limit
    assert _held_advisory_locks(burst_app) == 0
