"""A refused request changes nothing but the refusal's own records, whatever was sent.

Two organisations' users send invalid and forbidden requests across the API: at each other's
objects, at another nurse's, at ids that do not exist, in the wrong role, with bad values, bad
signatures and malformed sync pushes. Each answer must be a 4xx (a 5xx fails), and afterwards
every table must hold what it held before except what a refusal keeps (`backend.boundary`): the
refusal's audit row, a failed login's failure rows, a re-used refresh token's revocation, the
sync push log, a quarantined record with its flag — that only on the caller's own visit — and
a custody write refused for its seal, stock or witnesses, with the refusal case it raises or
grows. A refusal never writes a row of another organisation.

Hostile values that once reached the database and answered 500 (`HOSTILE_INPUTS`: times off the
calendar, integers beyond their columns, lone surrogates, NUL characters) are sent on their own,
each checked the same way.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from backend.accounts.models import Role
from backend.boundary import WRITES
from backend.errors import SignatureInvalid
from backend.flags.models import Flag
from backend.phi.cipher import PhiCipher
from backend.phi.sealed import open_stored
from backend.schema import metadata
from tests.factories import PASSWORD, SUPPLIER, Pharmacy, Phone, World, signed_payload

DAY1, DAY3 = "2026-11-03T15:00:00+00:00", "2026-11-05T15:00:00+00:00"
HOME = ("41.878100", "-87.629800")
AT_HOME = {"latitude": "41.878100", "longitude": "-87.629800", "accuracy_m": 12,
           "occurred_at": "2026-11-03T15:02:00+00:00"}
PRE = {"systolic": 122, "diastolic": 78, "heart_rate": 70, "spo2": 98, "respiratory_rate": 14,
       "moaas": 5, "decision": "go"}
DISCHARGE = {"moaas": 5, "state": "baseline", "adverse_event_category": "none"}
ABSENT = object()


# --- The town: two organisations, each a small practice ------------------------------------

@dataclass(frozen=True)
class Actor:
    """A signed-in user: who, of which organisation, and the headers that call as them."""

    user_id: uuid.UUID
    organisation_id: uuid.UUID
    headers: dict[str, str]


class Side:
    """One organisation: a user per role, two nurses with phones, a patient each with a plan
    and visits, stock in the vault and in a bag, a flag, a loss report, a rotated refresh token.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.pharmacy = pharmacy = Pharmacy(world)
        self.org, self.users, self.client = pharmacy.org, pharmacy.users, world.client
        self.nurse1, self.device1, self.phone1 = pharmacy.nurse, pharmacy.device_id, \
            pharmacy.phone
        self.nurse2 = world.user(self.org, Role.NURSE)
        self.device2, self.phone2 = world.device(self.org, self.nurse2)
        self.patient1 = pharmacy.patient_id
        self.patient2 = pharmacy.patient([self.nurse2], HOME)
        self.plan1 = pharmacy.plan()["id"]
        pharmacy.plan(patient_id=self.patient2)
        self.actors = self._sign_in()
        self._stock()
        self.visit1 = self._visit(self.patient1, self.nurse1, DAY1)
        self.visit1_done = self._visit(self.patient1, self.nurse1, DAY3)
        self.visit2 = self._visit(self.patient2, self.nurse2, DAY1)
        self.pre_dose_id = self._record_on_done_visit()
        self.flag = self._quarantine_flag()
        self.loss = self._loss()
        self.inventory = self._inventory()
        self.rotated_refresh, self.rotated_family = self._rotated_refresh_token()

    def _sign_in(self) -> dict[str, Actor]:
        def actor(user, device=None) -> Actor:
            return Actor(user.id, self.org.id, self.world.headers(self.org, user, device))

        actors = {role.value: actor(self.users[role]) for role in Role if role != Role.NURSE}
        return {**actors, "nurse": actor(self.nurse1, self.device1),
                "nurse2": actor(self.nurse2, self.device2), "unbound": actor(self.nurse1)}

    def _stock(self) -> None:
        for patient_id in (self.patient1, self.patient2):
            weighed = self.client.post(
                f"/api/v1/patients/{patient_id}/weights", headers=self.actors["admin"].headers,
                json={"weight_kg": "70", "measured_at": "2026-11-01T10:00:00+00:00"})
            assert weighed.status_code == 201, weighed.json
        received = self.pharmacy.receive(1_000_000)
        assert received.status_code == 201, received.json
        self.entry = received.json["id"]
        assert self.pharmacy.dispense(500_000).status_code == 201

    def _visit(self, patient_id: str, nurse, start: str) -> str:
        made = self.client.post("/api/v1/visits", headers=self.actors["admin"].headers, json={
            "patient_id": patient_id, "nurse_id": str(nurse.id), "scheduled_start": start})
        assert made.status_code == 201, made.json
        return made.json["id"]

    def _record_on_done_visit(self) -> str:
        """Record a pre-dose and a discharge on the nurse's second visit; return the pre-dose."""
        headers = self.actors["nurse"].headers
        pre = sign(self.phone1, PRE)
        for part, body in (("pre-dose", pre), ("discharge", sign(self.phone1, DISCHARGE))):
            stored = self.client.post(f"/api/v1/visits/{self.visit1_done}/{part}",
                                      headers=headers, json=body)
            assert stored.status_code == 201, stored.json
        return pre["id"]

    def _quarantine_flag(self) -> str:
        forged = self.client.post(f"/api/v1/visits/{self.visit1}/pre-dose",
                                  headers=self.actors["nurse"].headers,
                                  json=sign(Phone.new(), PRE))
        assert forged.status_code == 422, forged.json
        self.world.session.expire_all()
        return str(self.world.session.scalars(select(Flag.id).where(
            Flag.organisation_id == self.org.id)).one())

    def _loss(self) -> str:
        lost = self.pharmacy.post(Role.PHARMACIST, {
            "kind": "loss", "holder": "vault", "quantity_ug": 1_000,
            "details": {"circumstances": "vial dropped"}})
        assert lost.status_code == 201, lost.json
        losses = self.client.get("/api/v1/custody/losses",
                                 headers=self.actors["pharmacist"].headers)
        return losses.json[0]["id"]

    def _inventory(self) -> str:
        signed = self.client.post("/api/v1/custody/inventories",
                                  headers=self.actors["pharmacist"].headers,
                                  json={"kind": "biennial", "at": "close"})
        assert signed.status_code == 201, signed.json
        return signed.json["id"]

    def _rotated_refresh_token(self) -> tuple[str, uuid.UUID]:
        pair = self.world.login(self.org, self.users[Role.COMPLIANCE])
        rotated = self.client.post("/api/v1/auth/refresh",
                                   json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200, rotated.json
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        return pair["refresh_token"], uuid.UUID(claims["sid"])


def sign(phone: Phone, body: dict, **extra) -> dict:
    """Return `body` with a fresh id and time, signed by `phone` as the phone app signs it."""
    body = {"id": str(uuid.uuid4()), "occurred_at": DAY1, **body, **extra}
    try:
        return {**body, "signature": phone.sign(body)}
    except SignatureInvalid:
        # Numbers beyond canonical JSON cannot be signed: the phone could only send it so.
        return {**body, "signature": "AAAA"}


@pytest.fixture
def town(world: World) -> tuple[Side, Side]:
    return Side(world), Side(world)


# --- What a request may leave behind -------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """One request meant to be refused, and what its refusal may keep."""

    name: str
    method: str
    path: str
    actor: Actor | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = ABSENT
    data: bytes | None = None
    query: dict[str, Any] | None = None
    address: str = "127.0.0.1"
    # "login", "refresh" or "push": the refusals that keep rows of their own.
    kind: str = "api"
    # The caller's own visit: a record refused on it may be quarantined (on it, and only it).
    own_visit: str | None = None
    # The session that a re-used refresh token revokes.
    family: uuid.UUID | None = None
    # A read whose search may find nothing (200) rather than refuse its filter (4xx).
    may_find_nothing: bool = False

    def send(self, client):
        """Send the request."""
        headers = {**(self.actor.headers if self.actor else {}), **self.headers}
        options: dict[str, Any] = {"method": self.method, "headers": headers,
                                   "query_string": self.query,
                                   "environ_base": {"REMOTE_ADDR": self.address}}
        data = json.dumps(self.body).encode() if self.body is not ABSENT else self.data
        if data is not None:
            options.update(data=data, content_type="application/json")
        return client.open(self.path, **options)

    def audited(self) -> bool:
        """Tell whether the refusal must leave one `request.refused` row for its caller."""
        return self.actor is not None and self.method in WRITES

    def describe(self, response) -> str:
        """Say what was sent and what came back, for a failure message."""
        body = self.body if self.body is not ABSENT else (self.data or b"")[:200]
        return (f"[{self.name}] {self.method} {self.path} query={self.query} "
                f"headers={sorted(self.headers)} body={_clip(body)} -> "
                f"{response.status_code} {_clip(response.get_data(as_text=True))}")


def _clip(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


Rows = dict[str, dict[tuple, dict[str, Any]]]


def snapshot(connection) -> Rows:
    """Return every row of every table, by primary key, read through the test's connection."""
    rows: Rows = {}
    for table in metadata.sorted_tables:
        key = [c.name for c in table.primary_key.columns] or [c.name for c in table.columns]
        rows[table.name] = {tuple(row[name] for name in key): dict(row)
                            for row in connection.execute(table.select()).mappings()}
    return rows


@dataclass
class Difference:
    """What changed between two snapshots, by table."""

    added: dict[str, list[dict]]
    changed: dict[str, list[tuple[dict, dict]]]
    removed: dict[str, list[dict]]


def difference(before: Rows, after: Rows) -> Difference:
    """Return the rows added, changed and removed between `before` and `after`."""
    added, changed, removed = {}, {}, {}
    for name, old in before.items():
        new = after[name]
        if rows := [row for key, row in new.items() if key not in old]:
            added[name] = rows
        if rows := [(old[key], row) for key, row in new.items() if key in old
                    and old[key] != row]:
            changed[name] = rows
        if rows := [row for key, row in old.items() if key not in new]:
            removed[name] = rows
    return Difference(added, changed, removed)


def counts(rows: Rows) -> dict[str, int]:
    """Return each table's row count."""
    return {name: len(table) for name, table in rows.items()}


def sequences(rows: Rows) -> dict[str, int]:
    """Return each organisation's latest change-sequence value."""
    return {str(row["organisation_id"]): row["value"] for row in rows["sync_counter"].values()}


# The audit actions a refusal of each kind keeps besides `request.refused`.
KEPT_AUDIT = {"api": set(), "login": {"auth.login_failed"}, "refresh": {"auth.refresh_reuse"},
              "push": {"sync.push"}}


def unexpected(attempt: Attempt, diff: Difference) -> list[str]:
    """Return every change that `attempt`'s refusal may not have made."""
    problems = [f"{name}: {len(rows)} row(s) removed" for name, rows in diff.removed.items()]
    problems += [f"{name}: a row of another organisation {how} {_clip(row, 300)}"
                 for name, how, row in _rows_of_other_organisations(attempt, diff)]
    for name, rows in diff.added.items():
        problems += [f"{name}: row added {_clip(row, 300)}" for row in rows
                     if not _may_add(attempt, name, row, diff)]
    for name, pairs in diff.changed.items():
        problems += [f"{name}: row changed {_clip(old, 200)} -> {_clip(new, 200)}"
                     for old, new in pairs if not _may_change(attempt, name, old, new, diff)]
    refusals = sum(row["action"] == "request.refused" for row in diff.added.get("audit_event", []))
    if refusals != attempt.audited():
        problems.append(f"audit_event: {refusals} request.refused row(s), expected "
                        f"{int(attempt.audited())}")
    return problems


def _rows_of_other_organisations(attempt: Attempt, diff: Difference):
    """Yield the rows of another organisation than the caller's that were added or changed."""
    if attempt.actor is None:
        return
    mine = attempt.actor.organisation_id
    for name, rows in diff.added.items():
        yield from ((name, "added", row) for row in rows
                    if row.get("organisation_id", mine) not in (mine, None))
    for name, pairs in diff.changed.items():
        yield from ((name, "changed", new) for _old, new in pairs
                    if new.get("organisation_id", mine) not in (mine, None))


def _held(diff: Difference) -> set[str]:
    return {str(row["id"]) for row in diff.added.get("quarantined_event", [])}


def _may_add(attempt: Attempt, name: str, row: dict, diff: Difference) -> bool:
    caller = attempt.actor.user_id if attempt.actor else None
    if name == "audit_event":
        return _may_audit(attempt, row)
    if name == "login_failure":
        return attempt.kind == "login"
    if name == "sync_push":
        return attempt.kind == "push" and row["user_id"] == caller
    if name == "quarantined_event":
        # Only on the caller's own visit: never on another nurse's or organisation's.
        return (attempt.own_visit is not None and str(row["visit_id"]) == attempt.own_visit
                and row["user_id"] == caller)
    if name == "custody_refusal":
        # A custody write refused for its seal, stock or witnesses is kept as a fact.
        return row["actor_id"] == caller
    if name == "flag":
        return _kept_finding(row, diff)
    if name in ("flag_event", "flag_occurrence"):
        # The history and the occurrences of a case that a kept record raised or grew.
        return row["flag_id"] in _kept_cases(diff)
    if name == "sync_row":
        return bool(_held(diff))
    return False


def _kept_finding(flag: dict, diff: Difference) -> bool:
    """Tell whether a flag holds, as its latest occurrence, a record the refusal kept."""
    if flag["rule_id"] == "sync.quarantined_event":
        return str(flag["evidence"].get("quarantine_id")) in _held(diff)
    refused = {str(row["id"]) for row in diff.added.get("custody_refusal", [])}
    return (flag["rule_id"] == "custody.refusals_repeated"
            and bool(set(str(flag["evidence"].get("refusal_ids", "")).split(",")) & refused))


def _kept_cases(diff: Difference) -> set:
    """Return the flags raised or grown by what a refusal kept."""
    return ({flag["id"] for flag in diff.added.get("flag", [])}
            | {new["id"] for old, new in diff.changed.get("flag", [])
               if _kept_finding(new, diff)})


def _may_audit(attempt: Attempt, row: dict) -> bool:
    action = row["action"]
    if action == "auth.login_failed":
        return attempt.kind == "login"
    if action == "auth.refresh_reuse":
        return attempt.kind == "refresh" and row["object_id"] == str(attempt.family)
    if action == "request.refused" or action in KEPT_AUDIT[attempt.kind]:
        return attempt.actor is not None and row["user_id"] == attempt.actor.user_id
    return False


# What a case's flag may change when it gains an occurrence: its count, latest evidence and
# times, and the severity its repetition reached (its review state only by reopening).
CASE_GROWS = {"occurrences", "occurrence_key", "last_seen_at", "updated_at", "summary_enc",
              "evidence_enc", "summary", "evidence", "severity", "rule_version", "status",
              "assignee_id", "resolution", "resolved_at", "resolved_by_id", "subject_kind",
              "subject_id", "nurse_id", "patient_id", "shadow"}


def _may_change(attempt: Attempt, name: str, old: dict, new: dict, diff: Difference) -> bool:
    moved = {key for key in new if new[key] != old[key]}
    if name == "sync_counter":
        return bool(_held(diff)) and moved == {"value"}
    if name == "flag":
        # A case of quarantined records or refusals gains the occurrence the refusal kept.
        return _kept_finding(new, diff) and moved <= CASE_GROWS
    if name == "flag_occurrence":
        # An occurrence found again at a higher severity (refusals at one instant tie).
        return new["flag_id"] in _kept_cases(diff) and moved == {"severity"}
    if name == "token_family":
        # A re-used refresh token revokes its own session, and only that.
        return (attempt.kind == "refresh" and new["id"] == attempt.family
                and moved <= {"revoked_at", "revoked_reason"})
    return False


# --- The catalogue of refused requests -----------------------------------------------------

Draw = Callable[[st.SearchStrategy], Any]
Builder = Callable[[tuple[Side, Side], Draw], Attempt]
CATALOGUE: list[Builder] = []


def one(draw: Draw, *options):
    """Draw one of `options`."""
    return draw(st.sampled_from(options))


class Cases:
    """Which case of a request builder the sweep sends (None: a drawn one), and how many
    cases the builder that ran last has."""

    forced: int | None = None
    count = 1


def choose(draw: Draw, *cases: Callable[[], Attempt]) -> Attempt:
    """Return the attempt of one of `cases`: the one the sweep forces, or else a drawn one."""
    Cases.count = len(cases)
    if Cases.forced is None:
        return one(draw, *cases)()
    return cases[Cases.forced]()


def sides(town, draw: Draw) -> tuple[Side, Side]:
    """Draw which organisation is the caller's and which is the other."""
    return one(draw, town, town[::-1])


NUL_TEXT = ("\x00", "nul\x00inside")
LONE_SURROGATE = "\ud800"  # valid in JSON ("\\ud800"), not encodable as UTF-8
# Text a lookup may be given: NUL and lone surrogates once answered 500 (see HOSTILE_INPUTS).
LOOKUP_TEXT = ("", " ", "😀" * 30, "x" * 70_000, "'; DROP TABLE flag; --", "%00", "\\u0000",
               "\u202eright-to-left")
NASTY_TEXT = (*NUL_TEXT, LONE_SURROGATE, *LOOKUP_TEXT)
NOT_TEXT = (0, 1.5, True, None, [], {}, ["a"], {"a": 1})
ENORMOUS = (10**30, -(10**30), 2**63, 2**63 - 1, 2**31, -1, 0, 1e308)
# Not a number to any field; "12" and 1.5 only to a strict one (others take them as 12 and 1).
NOT_NUMBERS = ("twelve", "", None, True, [], {}, float("nan"), float("inf"))
NOT_STRICT_NUMBERS = ("12", 1.5, *NOT_NUMBERS)
BAD_DATETIMES = ("2026-13-01T10:00:00+00:00", "yesterday", "2026-11-03T15:00:00",
                 "2026-02-30T10:00:00+00:00", "", 1_700_000_000, None, "2026-11-03",
                 "2026-11-03T15:00:00+25:00")
# Valid ISO 8601, but off the calendar once in UTC: these once answered 500 (HOSTILE_INPUTS).
BEYOND_YEAR_9999, BEFORE_YEAR_1 = "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"
BAD_DATES = ("2026-13-01", "2026-02-30", "today", "", "0000-01-01", 20261103, None,
             "2026-11-03T10:00:00+00:00")
BAD_UUIDS = ("nope", "", 7, None, "00000000-0000-0000-0000-00000000000g", str(uuid.uuid4())[:-1])
GARBAGE_TOKENS = ("Bearer", "Bearer ", "Bearer not-a-token", "Basic dXNlcjpwYXNz",
                  "Bearer " + jwt.encode({"sub": str(uuid.uuid4()), "sid": str(uuid.uuid4()),
                                          "exp": 4_102_444_800}, "wrong-secret-" * 4,
                                         algorithm="HS256"),
                  "Bearer \x00", "bearer " + "A" * 5000)


def nowhere() -> str:
    """Return an id no object has."""
    return str(uuid.uuid4())


def call(method: str, path: str, actor: Actor | None = None, body: Any = ABSENT,
         **options) -> Attempt:
    """Return an attempt (named by the builder that makes it)."""
    return Attempt("", method, path, actor, body=body, **options)


def product_of(side: Side) -> str:
    return side.pharmacy.product_id


def dose_body(side: Side, **changes) -> dict:
    return {"product_id": product_of(side), "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": 35_000, "route": "IV",
            "infusion_started_at": "2026-11-03T15:10:00+00:00",
            "infusion_ended_at": "2026-11-03T15:50:00+00:00", **changes}


def parts(side: Side) -> dict[str, dict]:
    """Return a valid unsigned body of each single-record endpoint of a session."""
    return {"pre-dose": PRE, "dose": dose_body(side), "observations": {"moaas": 4},
            "discharge": DISCHARGE,
            "outcomes": {"instrument": "phq9", "items": {str(i): 1 for i in range(1, 10)}}}


def entry(side: Side, body: dict, phone: Phone | None = None) -> dict:
    """Return a custody entry of the side's first nurse, signed over its movement."""
    body = {"id": str(uuid.uuid4()), "occurred_at": DAY1, "product_id": product_of(side),
            "lot": "L1", "expiry": "2028-01-31", **body}
    return {**body, "signature": (phone or side.phone1).sign(signed_payload(side.pharmacy, body))}


def waste(side: Side, visit_id: str, witness: dict | None, phone: Phone | None = None,
          **changes) -> dict:
    """Return a visit's waste as POST /visits/<id>/waste takes it, signed by `phone`."""
    signed = {"id": str(uuid.uuid4()), "kind": "waste", "product_id": product_of(side),
              "lot": "L1", "expiry": "2028-01-31", "quantity_ug": 15_000, "occurred_at": DAY1,
              "visit_id": visit_id, **changes}
    try:
        signature = (phone or side.phone1).sign(signed_payload(side.pharmacy, signed))
    except SignatureInvalid:
        signature = "AAAA"
    body = {k: v for k, v in signed.items() if k not in ("kind", "visit_id")}
    return {**body, "signature": signature, "witnesses": [witness] if witness else []}


def witness(side: Side, password: str = PASSWORD) -> dict:
    return {"user_id": str(side.users[Role.PHARMACIST].id), "password": password}


def builder(function: Callable[[tuple[Side, Side], Draw], Attempt]) -> Builder:
    """Add `function` to the catalogue; its attempts carry its name."""
    def build(town, draw: Draw) -> Attempt:
        return replace(function(town, draw), name=function.__name__)

    build.__name__ = function.__name__
    CATALOGUE.append(build)
    return build


# Signing in.

@builder
def log_in_with_wrong_credentials(town, draw):
    me, them = sides(town, draw)
    names = [user.username for user in me.users.values()] + [them.nurse2.username]
    org = draw(st.sampled_from([me.org.slug, them.org.slug, "no-such-org", *LOOKUP_TEXT]))
    username = draw(st.sampled_from(names) | st.sampled_from(LOOKUP_TEXT)
                    | st.text(st.characters(exclude_characters="\x00"), max_size=12))
    password = draw(st.text(max_size=20).filter(lambda text: text != PASSWORD))
    return call("POST", "/api/v1/auth/login", kind="login",
                body={"org": org, "username": username, "password": password},
                address=one(draw, "127.0.0.1", "10.0.0.7", "10.0.0.8"))


@builder
def log_in_with_a_malformed_body(town, draw):
    me, _ = sides(town, draw)
    good = {"org": me.org.slug, "username": me.nurse1.username, "password": "not it at all"}
    body = one(draw, {}, [], "login", None, 42, {**good, "admin": True}, {**good, "org": 7},
               {**good, "password": None}, {**good, "device_id": "phone"},
               {k: v for k, v in good.items() if k != "username"},
               {**good, "username": "x" * 151}, {**good, "password": "p" * 1025})
    return call("POST", "/api/v1/auth/login", body=body, kind="login")


@builder
def log_in_bound_to_a_phone_not_hers(town, draw):
    me, them = sides(town, draw)
    device = one(draw, them.device1, me.device2, nowhere())
    return call("POST", "/api/v1/auth/login", kind="login", body={
        "org": me.org.slug, "username": me.nurse1.username, "password": PASSWORD,
        "device_id": str(device)})


@builder
def refresh_with_an_unknown_or_rotated_token(town, draw):
    me, _ = sides(town, draw)
    token = draw(st.sampled_from([me.rotated_refresh, *NUL_TEXT, *LOOKUP_TEXT])
                 | st.text(min_size=1, max_size=40))
    return call("POST", "/api/v1/auth/refresh", body={"refresh_token": token},
                kind="refresh", family=me.rotated_family)


def writes_anywhere(me: Side, them: Side) -> list[tuple[str, str, Any]]:
    """Return a write to each part of the API, as a nurse's or an admin's client sends it."""
    return [
        ("POST", "/api/v1/auth/logout", ABSENT),
        ("POST", "/api/v1/users", {"username": "new-user", "display_name": "N",
                                   "role": "nurse", "password": PASSWORD}),
        ("PATCH", f"/api/v1/users/{me.nurse2.id}", {"active": False}),
        ("DELETE", f"/api/v1/devices/{me.device1}", ABSENT),
        ("POST", f"/api/v1/visits/{me.visit1}/cancel", {"reason": "unwell"}),
        ("POST", f"/api/v1/visits/{me.visit1}/pre-dose", sign(me.phone1, PRE)),
        ("POST", f"/api/v1/visits/{me.visit1}/check-in", AT_HOME),
        ("POST", "/api/v1/custody/entries", entry(me, {"kind": "return", "quantity_ug": 1,
                                                        "details": {"seal_id": "S-1"}})),
        ("POST", f"/api/v1/flags/{me.flag}/notes", {"note": "seen"}),
        ("PATCH", "/api/v1/safeguards/policy", {"thresholds": {"evv_radius_m": "5000"}}),
        ("POST", "/api/v1/sync", {"changes": {}}),
        ("DELETE", f"/api/v1/patients/{them.patient1}/nurses/{them.nurse1.id}", ABSENT),
    ]


@builder
def write_without_a_valid_token(town, draw):
    me, them = sides(town, draw)
    method, path, body = one(draw, *writes_anywhere(me, them))
    authorization = one(draw, *GARBAGE_TOKENS, None)
    return call(method, path, body=body,
                headers={"Authorization": authorization} if authorization else {})


@builder
def use_a_route_or_method_that_does_not_exist(town, draw):
    me, _ = sides(town, draw)
    method, path = one(draw, ("DELETE", "/api/v1/visits"), ("PUT", "/api/v1/users"),
                       ("PATCH", f"/api/v1/flags/{me.flag}"), ("POST", "/api/v1/nothing"),
                       ("DELETE", "/api/v1/custody/entries"),
                       ("POST", f"/api/v1/visits/{me.visit1}/teleport"),
                       ("POST", "/api/v1/visits/not-a-uuid/cancel"),
                       ("PUT", f"/api/v1/plans/{me.plan1}/visits"))
    # Routing refuses it before any view authenticates the caller: nothing to audit.
    return call(method, path, body={"reason": "x"},
                headers=me.actors[one(draw, *me.actors)].headers)


@builder
def send_a_body_over_the_limit_or_not_json(town, draw):
    me, _ = sides(town, draw)
    role, path = one(draw, ("admin", "/api/v1/patients"), ("nurse", "/api/v1/sync"),
                     ("nurse", f"/api/v1/visits/{me.visit1}/session"),
                     ("pharmacist", "/api/v1/custody/entries"), ("admin", "/api/v1/users"))
    data = one(draw, json.dumps({"padding": "x" * 1_100_000}).encode(), b"{nope", b"",
               b"\xff\xfe\x00", b"[1,", b'{"a": 1}{"b": 2}', b"\x00")
    return call("POST", path, me.actors[role], data=data,
                kind="push" if path.endswith("/sync") else "api")


# Users and phones.

@builder
def add_a_user_refused(town, draw):
    me, _ = sides(town, draw)
    good = {"username": "new-user", "display_name": "New", "role": "nurse", "password": PASSWORD}
    role = one(draw, "admin", "prescriber", "pharmacist", "compliance", "nurse")
    if role != "admin":
        return call("POST", "/api/v1/users", me.actors[role], good)
    body = one(draw, {**good, "username": one(draw, *NASTY_TEXT, "Upper Case", "-lead",
                                              me.nurse1.username, *NOT_TEXT)},
               {**good, "role": one(draw, "god", "", None, 1)},
               {**good, "password": one(draw, "short", "", None, 12)},
               {**good, "superuser": True}, {k: v for k, v in good.items() if k != "role"},
               {**good, "display_name": one(draw, "", "d" * 201, *NOT_TEXT)})
    return call("POST", "/api/v1/users", me.actors["admin"], body)


@builder
def change_a_user_refused(town, draw):
    me, them = sides(town, draw)
    admin = me.actors["admin"]
    return choose(draw,
                  lambda: call("PATCH", f"/api/v1/users/{one(draw, them.nurse1.id, nowhere())}",
                               admin, {"display_name": "Renamed"}),
                  lambda: call("PATCH", f"/api/v1/users/{me.nurse2.id}", admin, one(
                      draw, {"role": "god"}, {"active": "maybe"}, {"display_name": ""},
                      {"password": PASSWORD}, {"active": None}, [], {"role": 3})),
                  lambda: call("PATCH", f"/api/v1/users/{me.users[Role.ADMIN].id}", admin,
                               one(draw, {"active": False}, {"role": "nurse"})),
                  lambda: call("PATCH", f"/api/v1/users/{me.nurse2.id}",
                               me.actors[one(draw, "nurse", "compliance", "prescriber")],
                               {"active": False}))


@builder
def register_a_phone_refused(town, draw):
    me, them = sides(town, draw)
    fresh = Phone.new().public_key_b64()
    key = one(draw, "not base64!", base64.b64encode(b"k" * 31).decode(),
              base64.b64encode(b"k" * 33).decode(), me.phone1.public_key_b64(),
              them.phone2.public_key_b64(), *NASTY_TEXT, *NOT_TEXT)
    return choose(draw,
                  lambda: call("POST", "/api/v1/devices", me.actors["nurse2"],
                               {"public_key": key, "label": "phone"}),
                  lambda: call("POST", "/api/v1/devices", me.actors["nurse2"], one(
                      draw, {"public_key": fresh}, {"public_key": fresh, "label": ""},
                      {"public_key": fresh, "label": "l" * 101, "colour": "red"},
                      {"public_key": fresh, "label": "phone", "id": "nope"})),
                  lambda: call("POST", "/api/v1/devices",
                               me.actors[one(draw, "admin", "compliance", "pharmacist")],
                               {"public_key": fresh, "label": "phone"}))


@builder
def revoke_a_phone_refused(town, draw):
    me, them = sides(town, draw)
    return choose(draw,
                  lambda: call("DELETE", f"/api/v1/devices/{one(draw, them.device1, nowhere())}",
                               me.actors[one(draw, "admin", "nurse")]),
                  lambda: call("DELETE", f"/api/v1/devices/{me.device2}", me.actors["nurse"]),
                  lambda: call("DELETE", f"/api/v1/devices/{me.device1}",
                               me.actors[one(draw, "pharmacist", "prescriber", "compliance")]))


# Patients, weights, nurses' assignments.

PATIENT = {"mrn": "MRN-NEW", "name": "New Patient", "date_of_birth": "1980-05-05"}


@builder
def register_a_patient_refused(town, draw):
    me, them = sides(town, draw)
    editor = me.actors[one(draw, "admin", "prescriber")]
    return choose(draw,
                  lambda: call("POST", "/api/v1/patients",
                               me.actors[one(draw, "nurse", "pharmacist", "compliance")], PATIENT),
                  lambda: call("POST", "/api/v1/patients", editor, {**PATIENT, "nurse_ids": [
                      str(one(draw, them.nurse1.id, me.users[Role.PHARMACIST].id, nowhere()))],
                      "name": one(draw, "Pat", *NASTY_TEXT)}),
                  lambda: call("POST", "/api/v1/patients", editor, one(
                      draw, {**PATIENT, "home_latitude": "41.1"},
                      {**PATIENT, "date_of_birth": one(draw, *BAD_DATES)},
                      {**PATIENT, "home_latitude": "91", "home_longitude": "0"},
                      {**PATIENT, "home_longitude": one(draw, "-181", "east", 1e308)},
                      {**PATIENT, "allergies": "none"}, {**PATIENT, "mrn": ""},
                      {**PATIENT, "name": one(draw, *NOT_TEXT)},
                      {k: v for k, v in PATIENT.items() if k != "mrn"},
                      {**PATIENT, "id": me.patient1})))


# What a reader may GET of a patient she may see.
PATIENT_READS = ("", "/weights", "/trajectory", "/fhir")


@builder
def touch_a_patient_not_hers_or_not_so(town, draw):
    me, them = sides(town, draw)
    reader = one(draw, "admin", "prescriber", "compliance")
    return choose(draw,
                  lambda: call("GET", f"/api/v1/patients/{one(draw, them.patient1, nowhere())}"
                               f"{one(draw, *PATIENT_READS)}", me.actors[reader]),
                  lambda: call("GET", f"/api/v1/patients/{me.patient2}"
                               f"{one(draw, *PATIENT_READS)}", me.actors["nurse"]),
                  lambda: call("PATCH", f"/api/v1/patients/{them.patient1}", me.actors["admin"],
                               {"name": one(draw, "Renamed", *NASTY_TEXT)}),
                  lambda: call("PATCH", f"/api/v1/patients/{me.patient1}",
                               me.actors[one(draw, "nurse", "pharmacist", "compliance")],
                               {"name": "Renamed"}),
                  lambda: call("PATCH", f"/api/v1/patients/{me.patient1}", me.actors["admin"], one(
                      draw, {"home_latitude": "41.8", "home_longitude": None},
                      {"home_latitude": "95"}, {"date_of_birth": one(draw, *BAD_DATES)},
                      {"mrn": "MRN-2"}, {"name": ""}, {"nurse_ids": []})),
                  lambda: call("POST", f"/api/v1/patients/{one(draw, them.patient1, nowhere())}"
                               "/nurses", me.actors["admin"], {"nurse_id": str(them.nurse2.id)}),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/nurses",
                               me.actors["admin"], {"nurse_id": one(
                                   draw, str(them.nurse1.id), str(me.users[Role.COMPLIANCE].id),
                                   *BAD_UUIDS)}),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/nurses",
                               me.actors[one(draw, "nurse", "pharmacist")],
                               {"nurse_id": str(me.nurse2.id)}),
                  lambda: call("DELETE", f"/api/v1/patients/{me.patient1}/nurses/"
                               f"{one(draw, me.nurse2.id, them.nurse1.id, nowhere())}",
                               me.actors["admin"]),
                  lambda: call("DELETE", f"/api/v1/patients/{them.patient1}/nurses/"
                               f"{them.nurse1.id}", me.actors["prescriber"]))


@builder
def weigh_a_patient_refused(town, draw):
    me, them = sides(town, draw)
    good = {"weight_kg": "70", "measured_at": "2026-11-01T10:00:00+00:00"}
    return choose(draw,
                  lambda: call("POST", f"/api/v1/patients/{one(draw, them.patient1, nowhere())}"
                               "/weights", me.actors["admin"], good),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/weights",
                               me.actors[one(draw, "nurse2", "pharmacist", "compliance")], good),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/weights",
                               me.actors["nurse"], one(
                                   draw, {**good, "weight_kg": one(
                                       draw, "1000", "19.999", "70.0001", "abc", 70, "-70", "",
                                       "1e3", "NaN", *NASTY_TEXT)},
                                   {**good, "measured_at": one(
                                       draw, "2027-01-01T00:00:00+00:00", *BAD_DATETIMES)},
                                   {**good, "scale": "bathroom"})))


# Plans and series.

def plan_body(side: Side, **changes) -> dict:
    return {"product_id": product_of(side), "route": "IV", "dose_ug_per_kg": 500,
            "max_dose_ug": 70_000, "infusion_minutes": 40, "starts_on": "2026-11-02", **changes}


@builder
def write_a_plan_refused(town, draw):
    me, them = sides(town, draw)
    prescriber = me.actors["prescriber"]
    bad = one(draw, {"route": "oral"}, {"dose_ug": 35_000}, {"dose_ug_per_kg": None},
              {"product_id": product_of(them)}, {"infusion_minutes": one(draw, 0, 601, *ENORMOUS)},
              {"starts_on": one(draw, *BAD_DATES)}, {"dose_ug_per_kg": 10_000},
              {"phases": [{"name": "late", "starts_on": "2027-01-01", "min_interval_hours": 48,
                           "max_per_7_days": 2, "max_per_28_days": 8}]},
              {"policy_overrides": {"no_such_threshold": "1"}}, {"colour": "red"},
              {"max_dose_ug": one(draw, *NOT_NUMBERS)})
    return choose(draw,
                  lambda: call("POST", f"/api/v1/patients/{one(draw, them.patient1, nowhere())}"
                               "/plans", prescriber, plan_body(me)),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/plans", prescriber,
                               plan_body(me, **one(draw, {}, bad))),
                  lambda: call("POST", f"/api/v1/patients/{me.patient1}/plans",
                               me.actors[one(draw, "admin", "nurse", "pharmacist")], plan_body(me)),
                  lambda: call("PUT", f"/api/v1/plans/{one(draw, them.plan1, nowhere())}",
                               prescriber, plan_body(me, change_reason="titrate")),
                  lambda: call("PUT", f"/api/v1/plans/{me.plan1}", prescriber,
                               plan_body(me, **bad, change_reason="titrate")),
                  lambda: call("PUT", f"/api/v1/plans/{me.plan1}", prescriber, plan_body(me)),
                  lambda: call("GET", f"/api/v1/plans/{them.plan1}",
                               me.actors[one(draw, "admin", "prescriber", "compliance")]),
                  lambda: call("GET", f"/api/v1/plans/{me.plan1}", me.actors["nurse2"]))


@builder
def schedule_a_series_refused(town, draw):
    me, them = sides(town, draw)
    good = {"nurse_id": str(me.nurse1.id), "first_start": "2026-11-04T15:00:00+00:00",
            "rrule": "FREQ=WEEKLY;COUNT=2"}
    return choose(draw,
                  lambda: call("POST", f"/api/v1/plans/{one(draw, them.plan1, nowhere())}/visits",
                               me.actors["admin"], good),
                  lambda: call("POST", f"/api/v1/plans/{me.plan1}/visits",
                               me.actors[one(draw, "nurse", "pharmacist", "compliance")], good),
                  lambda: call("POST", f"/api/v1/plans/{me.plan1}/visits",
                               me.actors[one(draw, "admin", "prescriber")], one(
                                   draw, good, {**good, "nurse_id": str(them.nurse1.id)},
                                   {**good, "nurse_id": str(me.nurse2.id)},
                                   {**good, "rrule": one(draw, "FREQ=DAILY", "FREQ=SECONDLY",
                                                         "FREQ=WEEKLY;COUNT=100000", "every week",
                                                         *NASTY_TEXT)},
                                   {**good, "first_start": one(draw, *BAD_DATETIMES)},
                                   {**good, "duration_minutes": one(draw, 0, 721, *ENORMOUS)},
                                   {**good, "colour": "red"})),
                  # Only a prescriber may pass a frequency limit.
                  lambda: call("POST", f"/api/v1/plans/{me.plan1}/visits", me.actors["admin"],
                               {**good, "override_reason": "please"}))


# Visits.

@builder
def schedule_a_visit_refused(town, draw):
    me, them = sides(town, draw)
    # Between the nurse's two visits: inside the minimum interval of both.
    good = {"patient_id": me.patient1, "nurse_id": str(me.nurse1.id),
            "scheduled_start": "2026-11-04T15:00:00+00:00"}
    admin = me.actors["admin"]
    return choose(draw,
                  lambda: call("POST", "/api/v1/visits", admin, good),
                  lambda: call("POST", "/api/v1/visits", admin, {**good, "override_reason": "x"}),
                  lambda: call("POST", "/api/v1/visits",
                               me.actors[one(draw, "nurse", "pharmacist", "compliance")], good),
                  lambda: call("POST", "/api/v1/visits", admin, one(
                      draw, {**good, "patient_id": them.patient1},
                      {**good, "patient_id": me.patient2},
                      {**good, "nurse_id": str(one(draw, them.nurse1.id, me.nurse2.id))},
                      {**good, "patient_id": one(draw, *BAD_UUIDS)},
                      {**good, "scheduled_start": one(draw, *BAD_DATETIMES)},
                      {**good, "scheduled_start": "2026-12-01T15:00:00+00:00",
                       "scheduled_end": one(draw, "2026-12-01T14:00:00+00:00", *BAD_DATETIMES)},
                      {**good, "scheduled_start": "2026-10-01T15:00:00+00:00"},
                      {**good, "status": "completed"})))


@builder
def change_a_visit_refused(town, draw):
    me, them = sides(town, draw)
    elsewhere = one(draw, them.visit1, nowhere())
    move = {"scheduled_start": "2026-11-04T15:00:00+00:00"}
    return choose(draw,
                  lambda: call("POST", f"/api/v1/visits/{elsewhere}/cancel",
                               me.actors[one(draw, "admin", "prescriber", "nurse")],
                               {"reason": one(draw, "unwell", *NASTY_TEXT)}),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/cancel", me.actors["nurse2"],
                               {"reason": "unwell"}),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/cancel",
                               me.actors[one(draw, "pharmacist", "compliance")],
                               {"reason": "unwell"}),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/cancel", me.actors["admin"],
                               one(draw, {}, {"reason": ""}, {"reason": one(draw, *NOT_TEXT)},
                                   {"reason": "r" * 2001}, {"reason": "x", "notify": True})),
                  lambda: call("POST", f"/api/v1/visits/{elsewhere}/reschedule",
                               me.actors["admin"],
                               {"scheduled_start": "2026-12-01T15:00:00+00:00"}),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/reschedule",
                               me.actors[one(draw, "nurse", "pharmacist", "compliance")], move),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/reschedule",
                               me.actors["admin"], one(
                                   draw, move, {**move, "nurse_id": str(them.nurse1.id)},
                                   {"scheduled_start": one(draw, *BAD_DATETIMES)},
                                   {"scheduled_start": "2026-12-01T15:00:00+00:00",
                                    "scheduled_end": "2026-12-01T14:00:00+00:00"},
                                   {**move, "reason": "moved"})))


@builder
def check_in_or_out_refused(town, draw):
    me, them = sides(town, draw)
    step = one(draw, "check-in", "check-out")
    far = {**AT_HOME, "latitude": "41.888100"}
    return choose(draw,
                  lambda: call("POST", f"/api/v1/visits/{one(draw, them.visit1, nowhere())}/{step}",
                               me.actors["nurse"], AT_HOME),
                  lambda: call("POST", f"/api/v1/visits/{me.visit2}/{step}", me.actors["nurse"],
                               AT_HOME),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/check-in", me.actors["unbound"],
                               AT_HOME),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/{step}",
                               me.actors[one(draw, "admin", "pharmacist")], AT_HOME),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/check-out", me.actors["nurse"],
                               AT_HOME),
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/check-in", me.actors["nurse"],
                               one(draw, far,
                                   {**AT_HOME, "latitude": one(draw, "95", "north", None)},
                                   {**AT_HOME, "accuracy_m": one(draw, -1, 100_001, *NOT_NUMBERS)},
                                   {**AT_HOME, "occurred_at": one(draw, *BAD_DATETIMES)},
                                   {**AT_HOME, "altitude": 3},
                                   {k: v for k, v in AT_HOME.items() if k != "latitude"})))


@builder
def read_a_visit_not_hers(town, draw):
    me, them = sides(town, draw)
    part = one(draw, "", "/evv", "/monitoring-record", "/fhir", "/session")
    return choose(draw,
                  lambda: call("GET", f"/api/v1/visits/{one(draw, them.visit1, nowhere())}{part}",
                               me.actors[one(draw, "admin", "compliance", "nurse")]),
                  lambda: call("GET", f"/api/v1/visits/{me.visit2}{part}",
                               me.actors[one(draw, "nurse", "unbound")]),
                  lambda: call("GET", f"/api/v1/visits/{me.visit1}{one(draw, '/evv', '/session')}",
                               me.actors["pharmacist"]),
                  lambda: call("GET", f"/api/v1/visits/{me.visit1}/monitoring-record",
                               me.actors["admin"], query={"format": one(draw, "xml", "", "CSV")}),
                  lambda: call("GET", "/api/v1/visits", me.actors["admin"], query=one(
                      draw, {"status": "lost"}, {"from": "yesterday"}, {"patient_id": "nope"},
                      {"colour": "red"})))


# A session's records, from the nurse's phone.

NURSES = {"nurse": "phone1", "nurse2": "phone2", "unbound": "phone1"}


@builder
def record_on_a_visit_not_hers(town, draw):
    me, them = sides(town, draw)
    part, body = one(draw, *parts(me).items())
    nurse = one(draw, *NURSES)
    hers = me.visit2 if nurse != "nurse2" else me.visit1
    visit = one(draw, them.visit1, them.visit2, hers, nowhere())
    # Signed by her own phone: only the visit is wrong, and nothing may be quarantined on it.
    signed = sign(getattr(me, NURSES[nurse]), body)
    return call("POST", f"/api/v1/visits/{visit}/{part}", me.actors[nurse], signed)


@builder
def record_a_forged_record_on_her_own_visit(town, draw):
    me, them = sides(town, draw)
    part, body = one(draw, *parts(me).items())
    visit = one(draw, me.visit1, me.visit1_done)
    signer = one(draw, me.phone2, them.phone1, Phone.new())
    signed = sign(me.phone1, body)
    if draw(st.booleans()):
        # Signed well, but from a session bound to no phone: held all the same.
        return call("POST", f"/api/v1/visits/{visit}/{part}", me.actors["unbound"], signed,
                    own_visit=visit)
    record = one(draw,
                 sign(signer, body),
                 {**signed, "signature": one(draw, "AAAA", "not base64!", "\x00", "😀")},
                 {**signed, "occurred_at": "2026-11-03T16:00:00+00:00"},
                 {**sign(signer, body), "id": me.pre_dose_id})
    return call("POST", f"/api/v1/visits/{visit}/{part}", me.actors["nurse"], record,
                own_visit=visit)


@builder
def record_an_impossible_record_on_her_own_visit(town, draw):
    me, _ = sides(town, draw)
    part, body = one(draw, *parts(me).items())
    impossible = {
        # First what only the service refuses, past the schema.
        "pre-dose": [{"cadss_items": {"1": 1}}, {"systolic": 400}, {"spo2": "98"}, {"moaas": 9},
                     {"decision": "maybe"}, {"diastolic": 130}, {"decision": "no_go"},
                     {"co_medications": ["gin"]}, {"heart_rate": one(draw, *ENORMOUS[:4])}],
        "dose": [{"quantity_ug": one(draw, 0, -5, 10**30, 2**63, "35000", 3.5)},
                 {"infusion_ended_at": "2026-11-03T15:00:00+00:00"}, {"expiry": "soon"},
                 {"lot": one(draw, "", "l" * 41)}, {"product_id": "nope"},
                 {"infusion_started_at": one(draw, *BAD_DATETIMES)}],
        "observations": [{"cadss_items": {"1": 1}},
                         {"cadss_items": {"1": 5, "2": 0, "6": 0, "7": 0, "15": 0, "22": 0}},
                         {"bprs_items": {"1": 0, "2": 1, "3": 1, "4": 1}},
                         {"moaas": -1}, {"systolic": 90, "diastolic": 95}],
        "discharge": [{"state": "gone"}, {"adverse_event_category": "bad"},
                      {"adverse_events": ""}],
        "outcomes": [{"items": {"1": 1}}, {"instrument": "bdi"}, {"items": {"1": 9}},
                     {"items": None}],
    }[part]
    record = sign(me.phone1, {**body, **one(draw, *impossible, {"colour": "red"},
                                             {"occurred_at": one(draw, *BAD_DATETIMES)})})
    if draw(st.booleans()):
        # What the schema itself refuses, whatever the signature says.
        record = one(draw, {**record, "id": "nope"}, {**record, "signature": ""},
                     {**record, "signature": "s" * 101},
                     {k: v for k, v in record.items() if k != "id"}, [record], None)
    return call("POST", f"/api/v1/visits/{me.visit1}/{part}", me.actors["nurse"], record)


@builder
def record_a_part_twice_or_under_a_taken_id(town, draw):
    me, them = sides(town, draw)
    part, body = one(draw, ("pre-dose", PRE), ("discharge", DISCHARGE))
    return choose(draw,
                  # Once per visit: her second visit has both already.
                  lambda: call("POST", f"/api/v1/visits/{me.visit1_done}/{part}",
                               me.actors["nurse"], sign(me.phone1, body)),
                  # A different record under an id already taken is quarantined on her visit.
                  lambda: call("POST", f"/api/v1/visits/{me.visit1_done}/pre-dose",
                               me.actors["nurse"], sign(me.phone1, {**PRE, "systolic": 150},
                                                        id=me.pre_dose_id),
                               own_visit=me.visit1_done),
                  # Even under another organisation's record's id: held in hers, not theirs.
                  lambda: call("POST", f"/api/v1/visits/{me.visit1}/pre-dose", me.actors["nurse"],
                               sign(me.phone1, PRE, id=them.pre_dose_id), own_visit=me.visit1))


@builder
def record_in_a_role_that_does_not(town, draw):
    me, _ = sides(town, draw)
    part, body = one(draw, *parts(me).items())
    return call("POST", f"/api/v1/visits/{me.visit1}/{part}",
                me.actors[one(draw, "admin", "prescriber", "pharmacist", "compliance")],
                sign(me.phone1, body))


def whole_session(side: Side, phone: Phone, visit_id: str, **parts_) -> dict:
    return {"pre_dose": sign(phone, PRE), "observations": [sign(phone, {"moaas": 4})],
            "discharge": sign(phone, DISCHARGE),
            "waste": waste(side, visit_id, witness(side), phone), **parts_}


@builder
def post_a_whole_session_refused(town, draw):
    me, them = sides(town, draw)
    nurse = one(draw, *NURSES)
    phone = getattr(me, NURSES[nurse])
    elsewhere = one(draw, them.visit1, them.visit2, nowhere(),
                    me.visit2 if nurse != "nurse2" else me.visit1)
    mine = me.visit1
    return choose(draw,
                  # A waste (and every other part) aimed at a visit not hers: nothing is held.
                  lambda: call("POST", f"/api/v1/visits/{elsewhere}/session", me.actors[nurse],
                               whole_session(me, phone, elsewhere, **one(
                                   draw, {}, {"observations": [sign(Phone.new(), {"moaas": 4})]},
                                   {"waste": waste(me, elsewhere, witness(them), phone)}))),
                  lambda: call("POST", f"/api/v1/visits/{mine}/session", me.actors["nurse"],
                               whole_session(me, me.phone1, mine, **one(
                                   draw, {"observations": [sign(me.phone1, {"systolic": 999})]},
                                   {"waste": {**waste(me, mine, None), "witnesses": []}},
                                   {"waste": {**waste(me, mine, witness(me)), "visit_id": mine}},
                                   {"pre_dose": [sign(me.phone1, PRE)]}, {"vitals": []},
                                   {"outcomes": sign(me.phone1, parts(me)["outcomes"])}))),
                  # Its discharge is taken already: refused whole, the forged pre-dose with it
                  # (held on her own visit, if at all).
                  lambda: call("POST", f"/api/v1/visits/{me.visit1_done}/session",
                               me.actors["nurse"], {
                                   "pre_dose": sign(Phone.new(), PRE),
                                   "discharge": sign(me.phone1, DISCHARGE)},
                               own_visit=me.visit1_done),
                  lambda: call("POST", f"/api/v1/visits/{mine}/session",
                               me.actors[one(draw, "admin", "pharmacist", "compliance")],
                               whole_session(me, me.phone1, mine)))


@builder
def waste_the_remainder_refused(town, draw):
    me, them = sides(town, draw)
    mine = me.visit1
    elsewhere = one(draw, them.visit1, me.visit2, nowhere())
    return choose(draw,
                  lambda: call("POST", f"/api/v1/visits/{elsewhere}/waste", me.actors["nurse"],
                               waste(me, elsewhere, witness(me))),
                  lambda: call("POST", f"/api/v1/visits/{mine}/waste", me.actors["nurse"], one(
                      draw, waste(me, mine, witness(them)), waste(me, mine, None),
                      waste(me, mine, witness(me, "wrong password")),
                      waste(me, mine, {"user_id": str(me.nurse1.id), "password": PASSWORD}),
                      waste(me, mine, witness(me), one(draw, me.phone2, them.phone1)),
                      waste(me, mine, witness(me), quantity_ug=one(draw, 999_999_999, 10**30, 0)),
                      waste(me, mine, witness(me), lot="NOT-IN-THE-BAG"))),
                  lambda: call("POST", f"/api/v1/visits/{mine}/waste", me.actors["unbound"],
                               waste(me, mine, witness(me))),
                  lambda: call("POST", f"/api/v1/visits/{mine}/waste",
                               me.actors[one(draw, "pharmacist", "admin")],
                               waste(me, mine, witness(me))))


# Custody.

@builder
def post_a_custody_entry_refused(town, draw):
    me, them = sides(town, draw)
    stock = {"occurred_at": DAY1, "product_id": product_of(me), "lot": "L1",
             "expiry": "2028-01-31"}
    receive = {**stock, "kind": "receive", "quantity_ug": 1_000, "details": SUPPLIER}
    pharmacist = me.actors["pharmacist"]
    return choose(draw,
                  lambda: call("POST", "/api/v1/custody/entries", pharmacist, one(
                      draw, {**receive, "product_id": product_of(them),
                             "lot": one(draw, "L1", *NASTY_TEXT)},
                      {**receive, "quantity_ug": one(draw, *ENORMOUS, *NOT_STRICT_NUMBERS)},
                      {**receive, "details": one(draw, {}, {**SUPPLIER, "supplier_dea": "BAD"},
                                                 "supplier", [])},
                      {**receive, "expiry": one(draw, "2020-01-31", *BAD_DATES)},
                      {**receive, "occurred_at": one(draw, *BAD_DATETIMES)},
                      {**receive, "id": them.entry}, {**receive, "corrects_id": them.entry},
                      {**receive, "kind": "teleport"}, {**receive, "colour": "red"},
                      {**stock, "kind": "dispense", "quantity_ug": 1_000,
                       "nurse_id": str(one(draw, them.nurse1.id, me.users[Role.ADMIN].id)),
                       "details": {"seal_id": "S-9"}},
                      {**stock, "kind": "dispense", "quantity_ug": 999_999_999,
                       "nurse_id": str(me.nurse1.id), "details": {"seal_id": "S-9"}},
                      {**stock, "kind": "adjust", "quantity_ug": 1, "holder": one(
                          draw, f"bag:{them.nurse1.id}", "bag:nope", "shelf", *NASTY_TEXT),
                       "details": {"reason": "count", "direction": "up"}},
                      {**stock, "kind": "adjust", "quantity_ug": 1, "holder": "vault",
                       "details": {"reason": "count", "direction": "sideways"}},
                      {**stock, "kind": "destroy", "quantity_ug": 1, "details": {"method": "x"},
                       "witnesses": [witness(me)]})),
                  lambda: call("POST", "/api/v1/custody/entries", me.actors["nurse"], one(
                      draw, {**receive, "signature": "AAAA"},
                      entry(me, {"kind": "administer", "quantity_ug": 35_000,
                                 "patient_id": them.patient1, "visit_id": them.visit1}),
                      entry(me, {"kind": "administer", "quantity_ug": 35_000,
                                 "patient_id": me.patient2, "visit_id": me.visit2}),
                      entry(me, {"kind": "administer", "quantity_ug": 999_999_999,
                                 "patient_id": me.patient1, "visit_id": me.visit1}),
                      {**entry(me, {"kind": "administer", "quantity_ug": 35_000,
                                    "patient_id": me.patient1, "visit_id": me.visit1}),
                       "signature": None},
                      entry(me, {"kind": "waste", "quantity_ug": 1_000, "visit_id": them.visit1,
                                 "witnesses": [witness(me)]}),
                      entry(me, {"kind": "transfer", "quantity_ug": 1_000,
                                 "nurse_id": str(them.nurse1.id)}),
                      entry(me, {"kind": "return", "quantity_ug": 1_000,
                                 "details": {"seal_id": "S-9"}}),
                      entry(me, {"kind": "return", "quantity_ug": 1_000,
                                 "details": {"seal_id": "S-1"}}, phone=them.phone1))),
                  lambda: call("POST", "/api/v1/custody/entries",
                               me.actors[one(draw, "compliance", "admin", "prescriber")],
                               receive))


@builder
def count_stock_refused(town, draw):
    me, them = sides(town, draw)
    line = {"product_id": product_of(me), "lot": "L1", "quantity_ug": 499_000}
    good = {"holder": "vault", "counted_at": "2026-11-02T13:00:00+00:00", "counts": [line]}
    return choose(draw,
                  lambda: call("POST", "/api/v1/custody/counts", me.actors["pharmacist"], one(
                      draw, {**good, "holder": one(draw, f"bag:{them.nurse1.id}", "bag:nope",
                                                   "shelf", *NASTY_TEXT)},
                      {**good, "counted_at": one(draw, "2027-01-01T00:00:00+00:00",
                                                 "2026-11-03T15:00:00", "yesterday", None)},
                      {**good, "counts": [{**line, "quantity_ug": one(draw, -1, 10**30, "5")}]},
                      {**good, "counts": [line, line]}, {**good, "reasons": {"NOPE": "x"}},
                      {**good, "counts": "all"}, {**good, "colour": "red"})),
                  lambda: call("POST", "/api/v1/custody/counts",
                               me.actors[one(draw, "nurse", "compliance", "admin")], good))


@builder
def file_a_loss_refused(town, draw):
    me, them = sides(town, draw)
    good = {"filing": "dea_notice", "filed_at": "2026-11-02T13:59:00+00:00"}
    return choose(draw,
                  lambda: call("POST", f"/api/v1/custody/losses/{one(draw, them.loss, nowhere())}"
                               "/filings", me.actors["pharmacist"], good),
                  lambda: call("POST", f"/api/v1/custody/losses/{me.loss}/filings",
                               me.actors[one(draw, "pharmacist", "compliance")], one(
                                   draw, {**good, "filed_at": one(draw, "2027-01-01T00:00:00+00:00",
                                                                  "2026-01-01T00:00:00+00:00",
                                                                  *BAD_DATETIMES)},
                                   {**good, "filing": one(draw, "form_41", "", None)},
                                   {**good, "by": "fax"})),
                  lambda: call("POST", f"/api/v1/custody/losses/{me.loss}/filings",
                               me.actors[one(draw, "nurse", "admin", "prescriber")], good))


@builder
def read_custody_refused(town, draw):
    me, them = sides(town, draw)
    return choose(draw,
                  lambda: call("GET", f"/api/v1/custody/{one(draw, 'entries', 'balances')}",
                               me.actors["nurse"], query={"holder": one(
                                   draw, f"bag:{me.nurse2.id}", "vault", f"bag:{them.nurse1.id}")}),
                  lambda: call("GET", f"/api/v1/custody/bags/{one(draw, them.nurse1.id, nowhere())}"
                               "/statement", me.actors["pharmacist"]),
                  lambda: call("GET", f"/api/v1/custody/bags/{me.nurse2.id}/statement",
                               me.actors["nurse"]),
                  lambda: call("GET", "/api/v1/custody/reports/"
                               f"{one(draw, 'dispensing', 'inventory')}",
                               me.actors[one(draw, "nurse", "prescriber")]),
                  lambda: call("GET", "/api/v1/custody/reports/dispensing",
                               me.actors["pharmacist"], query=one(
                                   draw, {}, {"from": "yesterday", "to": "today"},
                                   {"from": "2026-11-01T00:00:00+00:00"},
                                   {"from": "2026-11-01T00:00:00+00:00",
                                    "to": "2026-11-03T00:00:00+00:00", "format": "pdf"})),
                  lambda: call("GET", "/api/v1/custody/entries", me.actors["pharmacist"],
                               query=one(draw, {"limit": 0}, {"limit": 5001}, {"kind": "teleport"},
                                         {"after_seq": -1}, {"from": "2026-11-03"})),
                  lambda: call("GET", "/api/v1/custody/checkpoints",
                               me.actors[one(draw, "nurse", "prescriber")]))


@builder
def take_an_inventory_refused(town, draw):
    me, them = sides(town, draw)
    good = {"kind": "biennial", "at": "close"}
    inventories = "/api/v1/custody/inventories"
    return choose(draw,
                  lambda: call("POST", inventories, me.actors["pharmacist"], one(
                      draw, {**good, "kind": one(draw, "annual", None, *NASTY_TEXT)},
                      {**good, "at": one(draw, "noon", None, 1)},
                      {**good, "as_of": one(draw, "2027-01-01T00:00:00+00:00",
                                            "2026-11-03T15:00:00", "yesterday", "",
                                            1_700_000_000)},
                      {**good, "colour": "red"}, {"at": "close"}, [good])),
                  lambda: call("POST", inventories,
                               me.actors[one(draw, "nurse", "compliance", "admin", "prescriber")],
                               good),
                  lambda: call("GET", f"{inventories}/{one(draw, them.inventory, nowhere())}",
                               me.actors[one(draw, "pharmacist", "compliance", "admin")],
                               query=one(draw, None, {"format": "csv"})),
                  lambda: call("GET", f"{inventories}/{me.inventory}",
                               me.actors[one(draw, "nurse", "prescriber")]),
                  lambda: call("GET", f"{inventories}/{me.inventory}", me.actors["admin"],
                               query={"format": "pdf"}))


# Flags, rules, policy, products.

@builder
def review_a_flag_refused(town, draw):
    me, them = sides(town, draw)
    reviewer = me.actors[one(draw, "compliance", "admin")]
    elsewhere = one(draw, them.flag, nowhere())
    actions = {"assign": {"assignee_id": str(me.users[Role.COMPLIANCE].id)},
               "notes": {"note": "looked"}, "resolve": {"resolution": "justified", "note": "ok"}}
    action = one(draw, *actions)
    body = actions[action]
    return choose(draw,
                  *(lambda verb=verb: call("POST", f"/api/v1/flags/{elsewhere}/{verb}", reviewer,
                                           actions[verb]) for verb in actions),
                  lambda: call("GET", f"/api/v1/flags/{elsewhere}", reviewer),
                  lambda: call("POST", f"/api/v1/flags/{me.flag}/{action}",
                               me.actors[one(draw, "nurse", "pharmacist", "prescriber")], body),
                  lambda: call("POST", f"/api/v1/flags/{me.flag}/assign", reviewer, {
                      "assignee_id": one(draw, str(them.users[Role.COMPLIANCE].id),
                                         str(me.nurse1.id), nowhere(), *BAD_UUIDS)}),
                  lambda: call("POST", f"/api/v1/flags/{me.flag}/notes", reviewer, {
                      "note": one(draw, "   ", "", "n" * 10_001, *NOT_TEXT)}),
                  # Open, not in review: it cannot be resolved yet.
                  lambda: call("POST", f"/api/v1/flags/{me.flag}/resolve", reviewer, one(
                      draw, {"resolution": "justified", "note": "fine"},
                      {"resolution": "maybe", "note": "fine"}, {"resolution": "justified"})),
                  lambda: call("GET", "/api/v1/flags", reviewer, query=one(
                      draw, {"status": "lost"}, {"limit": 0}, {"limit": 10**30},
                      {"offset": -1}, {"nurse": "nope"}, {"colour": "red"})))


@builder
def change_a_rule_or_threshold_refused(town, draw):
    me, _ = sides(town, draw)
    admin = me.actors["admin"]
    return choose(draw,
                  lambda: call("PATCH", "/api/v1/safeguards/rules/"
                               f"{one(draw, 'no.such_rule', 'x' * 300, '%00', 'a%00b')}",
                               me.actors[one(draw, "admin", "compliance")], {"mode": "shadow"}),
                  lambda: call("PATCH", "/api/v1/safeguards/rules/sync.quarantined_event",
                               me.actors[one(draw, "admin", "compliance")],
                               one(draw, {"mode": "on"}, {"mode": ""}, {"mode": 5}, {},
                                   {"mode": "shadow", "why": "x"})),
                  lambda: call("PATCH", "/api/v1/safeguards/rules/sync.quarantined_event",
                               me.actors[one(draw, "nurse", "prescriber", "pharmacist")],
                               {"mode": "disabled"}),
                  lambda: call("PATCH", "/api/v1/safeguards/policy", admin, one(
                      draw, {"thresholds": {"no_such_threshold": "1"}},
                      {"thresholds": {"min_interval_hours": one(
                          draw, "-1", "NaN", "2.5", "abc", "", "1e400", "Infinity", "1" * 41,
                          "\x00", 48)}},
                      {"thresholds": {}}, {"thresholds": "x"}, {},
                      {"thresholds": {"evv_radius_m": "300", "max_per_7_days_induction": "-2"}})),
                  lambda: call("PATCH", "/api/v1/safeguards/policy",
                               me.actors[one(draw, "prescriber", "compliance", "nurse")],
                               {"thresholds": {"evv_radius_m": "300"}}),
                  lambda: call("PUT", f"/api/v1/policy/{one(draw, 'no_such', '%00', 'x' * 300)}",
                               admin, {"value": "1"}),
                  lambda: call("PUT", "/api/v1/policy/min_interval_hours", admin, one(
                      draw, {"value": one(draw, "-1", "NaN", "2.5", "abc", "", 48)}, {},
                      {"value": "48", "reason": "x"})),
                  lambda: call("PUT", "/api/v1/policy/min_interval_hours",
                               me.actors[one(draw, "compliance", "prescriber")], {"value": "72"}))


@builder
def add_a_product_refused(town, draw):
    me, _ = sides(town, draw)
    good = {"name": "Ketamine 10 mg/mL", "active_ingredient": "ketamine", "dea_schedule": "III",
            "form": "vial", "ug_per_unit": 10_000, "units_per_container": "5",
            "allowed_routes": ["IV"], "home_administration_allowed": True}
    return choose(draw,
                  lambda: call("POST", "/api/v1/products",
                               me.actors[one(draw, "nurse", "prescriber", "compliance")], good),
                  lambda: call("POST", "/api/v1/products",
                               me.actors[one(draw, "admin", "pharmacist")], one(
                                   draw, {**good, "ug_per_unit": one(draw, 0, -1, "fifty",
                                                                     *NOT_NUMBERS)},
                                   {**good, "units_per_container": one(
                                       draw, "0", "-1", "abc", "1e30", "NaN")},
                                   {**good, "allowed_routes": one(draw, [], ["oral"], "IV")},
                                   {**good, "form": "pill"}, {**good, "dea_schedule": "IX"},
                                   {**good, "home_administration_allowed": "perhaps"},
                                   {**good, "name": one(draw, "", *NOT_TEXT)},
                                   {**good, "colour": "red"})))


# Sync.

ROW_ID = "5b0f7c1e-1111-4c4c-9d9d-000000000001"


def table(created=(), updated=(), deleted=()) -> dict:
    return {"created": list(created), "updated": list(updated), "deleted": list(deleted)}


def observation_row(side: Side, visit_id: str, phone: Phone | None = None, **columns) -> dict:
    row = {"id": str(uuid.uuid4()), "visit_id": visit_id, "occurred_at": DAY1, "moaas": 4,
           **columns}
    return {**row, "signature": (phone or side.phone1).sign(row), "_status": "created",
            "_changed": ""}


@builder
def pull_refused(town, draw):
    me, _ = sides(town, draw)
    return choose(draw,
                  lambda: call("GET", "/api/v1/sync",
                               me.actors[one(draw, "admin", "pharmacist", "compliance")],
                               query={"schema_version": 1}),
                  lambda: call("GET", "/api/v1/sync", me.actors[one(draw, "nurse", "unbound")],
                               query=one(draw, {}, {"schema_version": one(draw, 0, "x", 99, -1)},
                                         {"schema_version": 1, "last_pulled_at": one(
                                             draw, -1, "x", 10**9, 10**30)},
                                         {"schema_version": 1, "limit": one(draw, 0, 10_001)},
                                         {"schema_version": 1, "migration": one(
                                             draw, "{", "[]", '{"from": "x"}')},
                                         {"schema_version": 1, "colour": "red"})),
                  lambda: call("GET", "/api/v1/sync", me.actors["nurse"],
                               query={"schema_version": 1, "last_pulled_at": 10**9},
                               headers={"X-Device-Time": "2026-11-02T14:00:00+00:00"}),
                  lambda: call("GET", "/api/v1/sync", me.actors["nurse"],
                               query={"schema_version": 1},
                               headers={"X-Device-Time": one(draw, "yesterday", "2026-11-02T14:00",
                                                             "99999999999999999999", "")}))


@builder
def push_refused(town, draw):
    me, them = sides(town, draw)
    nurse = me.actors["nurse"]
    mine = observation_row(me, me.visit1)
    forged = observation_row(me, me.visit1, phone=Phone.new())
    visits_row = {"id": one(draw, them.visit1, me.visit2, nowhere()), "status": "checked_in",
                  "_status": "updated", "_changed": "status"}
    malformed = one(
        draw, [], None, "changes", {"changes": []}, {"changes": {}, "extra": 1},
        {"changes": {"nonsense": table()}},
        {"changes": {"observations": table([{"id": one(draw, *BAD_UUIDS)}])}},
        {"changes": {"observations": table([{**mine, "colour": "red"}])}},
        {"changes": {"observations": table([{**mine, "systolic": one(draw, "high", [], {},
                                                                     True)}])}},
        {"changes": {"observations": table([mine], updated=[mine])}},
        {"changes": {"doses": table(deleted=[ROW_ID])}},
        {"changes": {"observations": []}},
        {"changes": {"observations": {"created": {"id": ROW_ID}}}},
        {"changes": {"observations": {**table(), "moved": []}}},
        {"changes": {"observations": table(["row"])}},
        {"changes": {"visits": table(deleted=[one(draw, "nope", 5)])}})
    return choose(draw,
                  lambda: call("POST", "/api/v1/sync", nurse, malformed, kind="push"),
                  # Refused whole, the forged record in it with it: nothing is quarantined.
                  lambda: call("POST", "/api/v1/sync", nurse, {"changes": {
                      "observations": table([mine, forged]),
                      **one(draw, {"visits": table(updated=[visits_row])},
                            {"visits": table(created=[{**visits_row, "_status": "created"}])},
                            {"visits": table(deleted=[me.visit1])},
                            {"patients": table(updated=[{"id": me.patient1, "name": "X"}])},
                            {"products": table(created=[{"id": ROW_ID}])})}}, kind="push"),
                  lambda: call("POST", "/api/v1/sync", nurse,
                               {"changes": {"observations": table([mine, forged])}}, kind="push",
                               query=one(draw, {"last_pulled_at": one(draw, 10**9, -1, "x")},
                                         {"schema_version": one(draw, 0, 99)}),
                               headers=one(draw, {}, {"X-Device-Time": "yesterday"},
                                           {"Idempotency-Key": one(draw, "", "k" * 201)})),
                  lambda: call("POST", "/api/v1/sync", nurse, {"changes": {
                      "observations": table([mine, forged])}}, kind="push",
                               headers={"X-Device-Time": one(draw, "yesterday", "2026-11-02T14:00",
                                                             "99999999999999999999")}),
                  lambda: call("POST", "/api/v1/sync", nurse, malformed, kind="push",
                               headers={"Idempotency-Key": one(draw, *LOOKUP_TEXT)}),
                  lambda: call("POST", "/api/v1/sync",
                               me.actors[one(draw, "admin", "pharmacist", "compliance")],
                               {"changes": {"observations": table([mine])}}))


# Reads a role may not make.

@builder
def read_what_the_role_may_not(town, draw):
    me, _ = sides(town, draw)
    return choose(draw,
                  lambda: call("GET", one(draw, "/api/v1/users", "/api/v1/audit-events",
                                          "/api/v1/jobs/runs", "/api/v1/flags",
                                          "/api/v1/safeguards/rules", "/api/v1/custody/losses"),
                               me.actors[one(draw, "nurse", "unbound", "prescriber")]),
                  lambda: call("GET", "/api/v1/audit-events", me.actors["compliance"], query=one(
                      draw, {"since": "yesterday"}, {"user_id": "nope"}, {"colour": "red"},
                      {"limit": one(draw, 0, -1, 10**30)})),
                  lambda: call("GET", one(draw, "/api/v1/jobs/runs", "/api/v1/notifications"),
                               me.actors["admin"], query={"colour": "red"}))


# --- The property ---------------------------------------------------------------------------

EACH = 3  # examples of each case of each kind of request, on its own
MIXED = 100  # examples drawn from the whole catalogue, one after another


def refusal_problems(attempt: Attempt, town, connection) -> list[str]:
    """Send `attempt`; return what is wrong with its answer and with what it left behind."""
    before = snapshot(connection)
    response = attempt.send(town[0].client)
    after = snapshot(connection)
    status = response.status_code
    problems = [] if 400 <= status < 500 or (attempt.may_find_nothing and status == 200) else [
        f"answered {status}: a refusal is a 4xx, never a 5xx nor a success"]
    problems += unexpected(attempt, _with_evidence(difference(before, after), town[0].world.rt))
    if not problems:
        return []
    return [attempt.describe(response), *problems,
            f"row counts {_moved(counts(before), counts(after))}",
            f"change sequences {sequences(before)} -> {sequences(after)}"]


def _with_evidence(diff: Difference, rt) -> Difference:
    """Return `diff` with each added or changed flag's evidence decrypted, as stored only
    encrypted."""
    box = PhiCipher.from_keyring(rt.keys)
    changed = [row for pair in diff.changed.get("flag", []) for row in pair]
    for row in [*diff.added.get("flag", []), *changed]:
        row["evidence"] = open_stored(box, Flag, "evidence", row["organisation_id"], row["id"],
                                      row["evidence_enc"])
    return diff


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, str]:
    return {name: f"{before[name]} -> {after[name]}" for name in before
            if before[name] != after[name]}


def refuse(town, connection, catalogue: list[Builder], examples: int, tried: Counter) -> None:
    """Send `examples` requests drawn from `catalogue`; each must be refused, keeping only its
    own records. The first that is not fails the test, as it was sent."""
    first: list[str] = []

    # No shrinking: a replay would meet the records the failing request left behind.
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=[
                  HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(data=st.data())
    def refused_cleanly(data):
        build = data.draw(st.sampled_from(catalogue), label="request")
        attempt = build(town, data.draw)
        tried[attempt.name] += 1
        problems = refusal_problems(attempt, town, connection)
        if problems and not first:
            first.append("\n".join(problems))
        assert not problems, "\n".join(problems)

    try:
        refused_cleanly()
    except Exception:
        if first:
            raise AssertionError(first[0]) from None
        raise


def test_a_refused_request_changes_nothing_but_its_own_records(town, connection):
    tried: Counter = Counter()
    try:
        # Each case of each kind on its own, so that every one is sent whatever the draws...
        for build in CATALOGUE:
            Cases.count, Cases.forced = 1, 0
            while Cases.forced < Cases.count:
                refuse(town, connection, [build], EACH, tried)
                Cases.forced += 1
        # ...then all of them in one sequence, each refusal's records there for the next one.
        Cases.forced = None
        refuse(town, connection, CATALOGUE, MIXED, tried)
    finally:
        Cases.forced = None
    assert set(tried) == {build.__name__ for build in CATALOGUE}


# --- Hostile inputs: values that once answered 500 -----------------------------------------

@dataclass(frozen=True)
class Hostile:
    """Requests carrying one class of hostile value, and what it once did."""

    reason: str
    attempts: Callable[[Side, Side], list[Attempt]]

NUL = "nul\x00inside"
MALFORMED_PUSH = {"changes": {"nonsense": table()}}


def _login(org: str, username: str, password: str | None = None) -> Attempt:
    return call("POST", "/api/v1/auth/login", kind="login",
                body={"org": org, "username": username, "password": password or "wrong"})


def _off_the_calendar(me: Side, _them: Side) -> list[Attempt]:
    admin, nurse = me.actors["admin"], me.actors["nurse"]
    return [
        call("POST", "/api/v1/visits", admin, {"patient_id": me.patient1,
                                               "nurse_id": str(me.nurse1.id),
                                               "scheduled_start": BEYOND_YEAR_9999}),
        call("POST", f"/api/v1/visits/{me.visit1}/reschedule", admin,
             {"scheduled_start": BEFORE_YEAR_1}),
        call("POST", f"/api/v1/plans/{me.plan1}/visits", admin, {
            "nurse_id": str(me.nurse1.id), "first_start": BEYOND_YEAR_9999,
            "rrule": "FREQ=WEEKLY;COUNT=2"}),
        call("POST", f"/api/v1/visits/{me.visit1}/check-in", nurse,
             {**AT_HOME, "occurred_at": BEYOND_YEAR_9999}),
        call("POST", f"/api/v1/visits/{me.visit1}/observations", nurse,
             sign(me.phone1, {"moaas": 4}, occurred_at=BEFORE_YEAR_1)),
        call("POST", f"/api/v1/patients/{me.patient1}/weights", admin,
             {"weight_kg": "70", "measured_at": BEFORE_YEAR_1}),
        call("POST", "/api/v1/custody/counts", me.actors["pharmacist"],
             {"holder": "vault", "counted_at": BEFORE_YEAR_1, "counts": []}),
        call("GET", "/api/v1/audit-events", me.actors["compliance"],
             query={"since": BEYOND_YEAR_9999}),
        call("GET", "/api/v1/visits", admin, query={"from": BEFORE_YEAR_1}),
    ]


def _beyond_the_columns(me: Side, _them: Side) -> list[Attempt]:
    product = {"name": "Ketamine 10 mg/mL", "active_ingredient": "ketamine",
               "dea_schedule": "III", "form": "vial", "ug_per_unit": 10_000,
               "units_per_container": "5", "allowed_routes": ["IV"],
               "home_administration_allowed": True}
    prescriber, admin = me.actors["prescriber"], me.actors["admin"]
    return [
        call("PUT", f"/api/v1/plans/{me.plan1}", prescriber,
             plan_body(me, max_dose_ug=2**31, change_reason="titrate")),
        call("PUT", f"/api/v1/plans/{me.plan1}", prescriber,
             plan_body(me, dose_ug_per_kg=None, dose_ug=2**63, change_reason="titrate")),
        call("POST", "/api/v1/products", admin, {**product, "ug_per_unit": 2**31}),
        call("POST", "/api/v1/products", admin,
             {**product, "name": "Ketamine 20 mg/mL", "units_per_container": "12345678901"}),
        call("POST", "/api/v1/sync", me.actors["nurse"], {"changes": {}}, kind="push",
             query={"last_pulled_at": 2**63}),
        call("GET", "/api/v1/flags", me.actors["compliance"], query={"offset": 10**30},
             may_find_nothing=True),
        call("GET", "/api/v1/custody/entries", me.actors["pharmacist"],
             query={"after_seq": 10**30}, may_find_nothing=True),
    ]


def _lone_surrogates(me: Side, _them: Side) -> list[Attempt]:
    return [
        _login(LONE_SURROGATE, me.nurse1.username),
        _login(me.org.slug, LONE_SURROGATE),
        _login(me.org.slug, me.nurse1.username, LONE_SURROGATE),
        call("POST", "/api/v1/auth/refresh", body={"refresh_token": LONE_SURROGATE},
             kind="refresh"),
        call("POST", "/api/v1/sync", me.actors["nurse"], MALFORMED_PUSH, kind="push",
             headers={"Idempotency-Key": LONE_SURROGATE}),
        call("POST", f"/api/v1/visits/{me.visit1}/cancel", me.actors["admin"],
             {"reason": LONE_SURROGATE}),
    ]


def _nul_in_lookups(me: Side, _them: Side) -> list[Attempt]:
    return [
        _login(NUL, me.nurse1.username),
        _login(me.org.slug, NUL),
        call("POST", "/api/v1/sync", me.actors["nurse"], MALFORMED_PUSH, kind="push",
             headers={"Idempotency-Key": NUL}),
        call("GET", "/api/v1/audit-events", me.actors["compliance"], query={"action": NUL},
             may_find_nothing=True),
        call("GET", "/api/v1/flags", me.actors["compliance"], query={"rule": NUL},
             may_find_nothing=True),
    ]


def _nul_in_stored_text(me: Side, _them: Side) -> list[Attempt]:
    return [
        call("POST", f"/api/v1/visits/{me.visit1}/cancel", me.actors["admin"], {"reason": NUL}),
        call("POST", f"/api/v1/flags/{me.flag}/notes", me.actors["compliance"], {"note": NUL}),
        call("POST", "/api/v1/users", me.actors["admin"], {
            "username": "new-user", "display_name": NUL, "role": "nurse",
            "password": PASSWORD}),
    ]


HOSTILE_INPUTS = {
    "timestamps_off_the_calendar": Hostile(
        "AwareDateTime takes a time whose offset carries it past 9999-12-31 or before "
        "0001-01-01 in UTC; storing it as UTC (db.UTCDateTime) or adding a duration "
        "overflows: 500, not 422", _off_the_calendar),
    "integers_beyond_their_columns": Hostile(
        "integers without an upper bound reach the database: plan max_dose_ug/dose_ug and "
        "product ug_per_unit over int4 (PostgreSQL 500, SQLite stores them), over int8 (500 on "
        "both), units_per_container over Numeric(10, 3), the sync push's last_pulled_at over "
        "int8 in the push log, /flags offset and /custody/entries after_seq: 500",
        _beyond_the_columns),
    "lone_surrogates": Hostile(
        "a lone surrogate (JSON \"\\ud800\") in a login, a refresh token, an Idempotency-Key "
        "or stored text cannot be encoded for the database or hashed: 500, not 4xx",
        _lone_surrogates),
    "nul_in_lookups": Hostile(
        "a NUL character in a login's org or username, an Idempotency-Key or a filter "
        "reaches a PostgreSQL query: 500 there (SQLite answers 401, 400 or [])",
        _nul_in_lookups),
    "nul_in_stored_text": Hostile(
        "a NUL character in text that is stored (a cancellation reason, a flag note, a "
        "display name) is refused by PostgreSQL (500) and stored by SQLite (2xx); the API "
        "should refuse it (422) on both", _nul_in_stored_text),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INPUTS))
def test_a_hostile_input_is_refused_cleanly(name, town, connection):
    problems = []
    for attempt in HOSTILE_INPUTS[name].attempts(*town):
        problems += refusal_problems(replace(attempt, name=name), town, connection)
    assert not problems, "\n".join(problems)


def test_a_record_pushed_under_another_organisations_id_leaves_theirs_alone(town, connection):
    me, them = town
    row = {"id": them.pre_dose_id, "visit_id": me.visit1, "occurred_at": DAY1, **PRE,
           "cadss_items": None, "cadss_total": None, "co_medications": "[]",
           "decision_reason": None, "bp_justification": None}
    row = {**row, "signature": me.phone1.sign(row), "_status": "created", "_changed": ""}
    push = call("POST", "/api/v1/sync", me.actors["nurse"],
                {"changes": {"pre_doses": table([row])}}, kind="push", own_visit=me.visit1)
    before = snapshot(connection)
    response = push.send(me.client)
    after = snapshot(connection)
    assert response.status_code == 200, response.json
    assert [held["record_id"] for held in response.json["quarantined"]] == [them.pre_dose_id]
    theirs = list(_rows_of_other_organisations(push, difference(before, after)))
    assert theirs == [], theirs
