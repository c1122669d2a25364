"""A bounded, seeded schemathesis run over the whole API, for each role and for no token at all.

Each role calls every operation of the OpenAPI document from a seeded organisation, under a
fixed clock that keeps its token alive: valid and invalid requests that schemathesis generates,
and its coverage cases (each bound, type and format just in and just out). Parameters and body
fields named like the seeded objects (`visit_id`, `patient_id`, `lot`, ...) mostly take their
values, so requests get past 404 into the services; the nurse calls from her registered phone,
which signs what she posts; some requests carry the inputs that broke the server before (NUL,
lone surrogates, far dates, huge and non-finite numbers). Every answer must be below 500, carry
a status its operation documents itself (the catch-all `default` documents nothing) and match
the documented content type and body.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import content_type_conformance, response_schema_conformance
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from backend.accounts.models import Role
from backend.flags.service import raise_flag
from safeguards.findings import Subject, SubjectKind
from safeguards.rules.custody import COUNT_DISCREPANCY
from safeguards.rules.monitoring import INFUSION_SHORT
from tests.factories import Pharmacy, World, signed_payload

# The budget, per operation: generated requests per mode (valid, invalid) where the role is let
# in, and where it is refused before anything is read (401, 403); and at most this many of the
# operation's coverage cases, spread over all of them, sent by one role it lets in.
LET_IN_EXAMPLES = 8
REFUSED_EXAMPLES = 1
BOUNDARY_CASES = 32
# Out of this many draws, one keeps the generated value; the others take a seeded one.
SEEDED_SHARE = 3
# One request in HOSTILE_SHARE carries hostile values, each field of it one time in three.
HOSTILE_SHARE = 4
FAR_DATETIME = "9999-12-31T23:59:59-12:00"
# A URL cannot carry a lone surrogate (it has no UTF-8 spelling); a JSON string can.
BODY_CHARACTERS, QUERY_CHARACTERS = ("\x00", "\ud800"), ("\x00",)
ISO_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
ROLES: list[Role | None] = [*Role, None]


@dataclass
class Tally:
    """What one role's run sent and found."""

    operations: int = 0
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, name: str) -> str:
        """Return the role's figures in one line."""
        return (f"{name:>22}: {self.operations} operations, {self.requests} requests, "
                f"{len(self.server_errors)} server errors, {len(self.nonconforming)} "
                f"non-conforming, {self.seconds:.0f} s")


class FuzzClinic(Pharmacy):
    """A pharmacy with a plan, stock in the nurse's bag, visits, a loss report and flags."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.plan_id = self.plan()["id"]
        assert self.receive(5_000_000).status_code == 201
        assert self.dispense(500_000).status_code == 201
        self.spare = world.user(self.org, Role.PRESCRIBER)
        self.spare_device_id, _ = world.device(self.org, self.nurse)
        self.visit_ids = [self.schedule(f"2026-11-{day:02d}T15:00:00+00:00").json["id"]
                          for day in (2, 9)]
        lost = self.post(Role.PHARMACIST, {"kind": "loss", "holder": "vault", "quantity_ug": 1000,
                                           "details": {"circumstances": "a vial broke"}})
        assert lost.status_code == 201, lost.json
        losses = self.client.get("/api/v1/custody/losses", headers=self.as_(Role.PHARMACIST))
        self.loss_ids = [report["id"] for report in losses.json]
        subject = Subject(SubjectKind.ORGANISATION, str(self.org.id))
        self.flag_ids = [str(raise_flag(world.session, world.rt.clock.now(), self.org.id,
                                        rule.finding(subject, "Seeded.", {}, key=("fuzz",))).id)
                         for rule in (COUNT_DISCREPANCY, INFUSION_SHORT)]
        world.commit()

    def seeded(self) -> dict[str, list]:
        """Return the seeded values a parameter or body field of each name may take.

        Whatever would end a role's own session is out of reach: the admin edits and the nurse
        revokes a spare user and a spare phone, never their own.
        """
        nurse, compliance = str(self.nurse.id), str(self.users[Role.COMPLIANCE].id)
        return {
            "user_id": [str(self.spare.id)], "device_id": [str(self.spare_device_id)],
            "patient_id": [self.patient_id], "patient": [self.patient_id],
            "nurse_id": [nurse], "nurse": [nurse], "nurse_ids": [[nurse]],
            "assignee_id": [compliance], "assignee": [compliance],
            "product_id": [self.product_id], "plan_id": [self.plan_id],
            "visit_id": self.visit_ids, "loss_id": self.loss_ids, "flag_id": self.flag_ids,
            "rule_id": [COUNT_DISCREPANCY.id, INFUSION_SHORT.id], "rule": [COUNT_DISCREPANCY.id],
            "name": ["evv_radius_m", "min_interval_hours"],
            "holder": ["vault", f"bag:{nurse}"], "lot": ["L1"],
            "org": [self.org.slug], "username": [self.spare.username],
        }

    def headers_of(self, role: Role | None) -> dict[str, str]:
        """Return the caller's headers: the nurse logs in from her registered phone."""
        if role is None:
            return {}
        return self.as_(role, self.device_id if role == Role.NURSE else None)

    def sign(self, path: str, body: dict) -> None:
        """Sign `body` with the nurse's phone as her app would, where the operation wants it."""
        if "signature" not in body:
            return
        try:
            if path == "/api/v1/custody/entries":
                body["signature"] = self.phone.sign(signed_payload(self, body))
            elif path.startswith("/api/v1/visits/"):
                body["signature"] = self.phone.sign(
                    {name: value for name, value in body.items() if name != "signature"})
        except Exception:  # what the phone cannot sign goes as generated
            return


def hostile(value: object, chance: random.Random, characters: tuple[str, ...]) -> object:
    """Return `value` with some of its leaves made hostile, as a careless client sends them."""
    if isinstance(value, dict):
        return {name: hostile(item, chance, characters) for name, item in value.items()}
    if isinstance(value, list):
        return [hostile(item, chance, characters) for item in value]
    if chance.randrange(3):
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return chance.choice([2**64, -(2**63) - 1])
    if isinstance(value, float):
        return chance.choice([math.nan, math.inf])
    if isinstance(value, str) and ISO_DATETIME.match(value):
        return FAR_DATETIME
    return f"{value}{chance.choice(characters)}"


class AppErrors(logging.Handler):
    """Keep the exception behind each logged 500: its type, the app's deepest frame, its text."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Remember the exception of an unhandled error."""
        if not record.exc_info or record.exc_info[1] is None:
            return
        error = record.exc_info[1]
        frames = [frame for frame in traceback.extract_tb(error.__traceback__)
                  if "/backend/" in frame.filename]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        self.last = f"{type(error).__name__}{where}: {str(error).splitlines()[0][:160]}"


def documented_status(_ctx, response, case) -> None:
    """Fail on a status the operation does not document itself; `default` documents nothing."""
    documented = {code for code in case.operation.definition.raw.get("responses", {})
                  if code != "default"}
    if str(response.status_code) not in documented:
        raise AssertionError(f"status {response.status_code} is not documented "
                             f"(documented: {', '.join(sorted(documented))})")


CHECKS = [documented_status, content_type_conformance, response_schema_conformance]


def let_in(operation, role: Role | None) -> bool:
    """Tell whether `role` gets past the operation's guard (no token is enough for login)."""
    roles = operation.definition.raw.get("x-roles")
    return roles is None or (role is not None and role.value in roles)


def coverage_role(operation) -> Role | None:
    """Return the one role that sends the operation's coverage cases: one it lets in."""
    roles = operation.definition.raw.get("x-roles")
    if roles is None:
        return None
    return Role(roles[zlib.crc32(operation.label.encode()) % len(roles)])


def ending_last(operation) -> int:
    """Order operations so that what ends the session or a visit comes after the rest."""
    path = operation.path
    if path == "/api/v1/auth/logout":
        return 3
    if operation.method == "delete" or path.endswith(("/cancel", "/reschedule")):
        return 2
    return 1 if path.endswith("/check-out") else 0


def request_line(case, response) -> str:
    """Return the request and its answer, for the report."""
    try:
        request = case.as_curl_command()
    except Exception:  # a body curl cannot spell is shown as data
        request = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"
    return (f"{case.operation.label} -> {response.status_code}: {request}\n"
            f"      answer: {response.text[:300]}")


class Run:
    """One role's run over every operation, on one database."""

    def __init__(self, clinic: FuzzClinic, role: Role | None, database: str) -> None:
        self.clinic, self.role, self.database = clinic, role, database
        self.headers, self.seeded = clinic.headers_of(role), clinic.seeded()
        self.app_errors = AppErrors()
        self.tally = Tally()

    def all(self, schema) -> Tally:
        """Run every operation; the ones that end the caller's session or a visit go last."""
        started = time.monotonic()
        operations = sorted((result.ok() for result in schema.get_all_operations()),
                            key=ending_last)
        logger = logging.getLogger("backend.errors")
        logger.addHandler(self.app_errors)
        try:
            for operation in operations:
                self.operation(operation)
        finally:
            logger.removeHandler(self.app_errors)
        self.tally.operations = len(operations)
        self.tally.seconds = time.monotonic() - started
        return self.tally

    def operation(self, operation) -> None:
        """Send a bounded, seeded sample of valid and invalid requests to `operation`."""
        examples = LET_IN_EXAMPLES if let_in(operation, self.role) else REFUSED_EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Each database gets its own sample, the same on every run.
            key = f"{self.database} {self.role} {operation.label} {mode.value}"

            @seed(zlib.crc32(key.encode()))
            @settings(max_examples=examples, database=None, deadline=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode),
                   chance=st.randoms(use_true_random=False))
            def probe(case, chance) -> None:
                self.send(case, chance)

            try:
                probe()
            except Unsatisfiable:
                continue  # an operation with no input has no invalid request to send
        if coverage_role(operation) == self.role:
            self.boundaries(operation)

    def boundaries(self, operation) -> None:
        """Send a spread of schemathesis' coverage cases for `operation`."""
        schema = operation.schema
        chance = random.Random(f"{self.database} {operation.label}")
        # Methods the operation does not have are Flask's 405, not the document's.
        cases = [case for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode),
            generation_config=schema.config.generation_for(operation=operation))
            if case.method.lower() == operation.method.lower()]
        for case in cases[::-(-len(cases) // BOUNDARY_CASES)]:
            self.send(case, chance)

    def send(self, case, chance: random.Random) -> None:
        """Aim the case at the seeded objects, send it and judge the answer."""
        self.seed(case, chance)
        self.judge(case, case.call(headers=self.headers))

    def seed(self, case, chance: random.Random) -> None:
        """Give most fields named like a seeded object its value; make some requests hostile."""
        containers = [case.path_parameters, case.query,
                      case.body if isinstance(case.body, dict) else None]
        for values in filter(None, containers):
            for name in sorted(values.keys() & self.seeded.keys()):
                if chance.randrange(SEEDED_SHARE):
                    values[name] = chance.choice(self.seeded[name])
        if isinstance(case.body, dict | list) and not chance.randrange(HOSTILE_SHARE):
            # As bytes: client libraries refuse to spell NaN in JSON, which Python's parser reads.
            case.body = json.dumps(hostile(case.body, chance, BODY_CHARACTERS)).encode()
        elif self.role == Role.NURSE and isinstance(case.body, dict) and chance.randrange(2):
            self.clinic.sign(case.operation.path, case.body)
        if case.query and not chance.randrange(HOSTILE_SHARE):
            case.query = hostile(case.query, chance, QUERY_CHARACTERS)

    def judge(self, case, response) -> None:
        """Count the answer; keep what each server error or non-conforming answer was."""
        self.tally.requests += 1
        if response.status_code >= 500:
            cause, self.app_errors.last = self.app_errors.last or "no exception logged", None
            self.tally.server_errors.append(f"{request_line(case, response)}\n      {cause}")
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            self.tally.nonconforming.append(request_line(case, response) + "".join(
                f"\n      {failure.title}: {failure.message[:400]}"
                for failure in group.exceptions))


TALLIES: dict[str, Tally] = {}


@pytest.fixture(scope="module", autouse=True)
def figures(request):
    """Print each role's figures after the run, whatever its outcome."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter and capture and TALLIES:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_sep("-", "schemathesis over the API, per database and role")
            for name, tally in TALLIES.items():
                reporter.write_line(tally.line(name))


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.value if role else "anonymous")
def test_every_generated_request_is_answered_as_documented(app, world, database_url, role):
    database = database_url.partition(":")[0].partition("+")[0]
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    # Without a token, generated Authorization headers try garbage tokens; with one, the
    # role's own token goes on every request.
    schema.config.generation.update(with_security_parameters=role is None)
    tally = Run(FuzzClinic(world), role, database).all(schema)
    TALLIES[f"{database} {role.value if role else 'anonymous'}"] = tally
    assert not tally.server_errors, "\n".join(tally.server_errors)
    assert not tally.nonconforming, "\n".join(tally.nonconforming)
