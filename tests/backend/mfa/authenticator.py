"""A user's authenticator app, and enrolment through the API as a user would do it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyotp
from sqlalchemy import select

from backend.accounts.models import Organisation, User
from backend.audit.models import AuditEvent
from backend.clock import FixedClock
from tests.factories import World

FACTORS = "/api/v1/me/factors"
RECOVERY_CODES = "/api/v1/me/recovery-codes"


class Authenticator:
    """An authenticator app that read an enrolment's otpauth URI and shows codes by the clock."""

    def __init__(self, uri: str, clock: FixedClock) -> None:
        self.totp, self.clock = pyotp.parse_uri(uri), clock

    @property
    def secret(self) -> str:
        """Return the shared secret the URI carried."""
        return self.totp.secret

    def code(self, steps: int = 0) -> str:
        """Return the code shown now, or `steps` time steps from now."""
        return self.totp.at(self.clock.now(), counter_offset=steps)

    def wrong_code(self) -> str:
        """Return six digits that match no step the server accepts now."""
        near = {self.code(steps) for steps in (-1, 0, 1)}
        return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in near)


@dataclass
class Enrolled:
    """A signed-in user with a confirmed TOTP factor and the recovery codes it came with."""

    org: Organisation
    user: User
    headers: dict[str, str]
    factor_id: str
    app: Authenticator
    recovery_codes: list[str]


def begin(world: World, headers: dict, **body):
    """Begin a TOTP enrolment."""
    return world.client.post(f"{FACTORS}/totp", headers=headers, json=body)


def confirm(world: World, headers: dict, factor_id: str, code: str):
    """Confirm a pending factor with `code`."""
    return world.client.post(f"{FACTORS}/{factor_id}/confirm", headers=headers,
                             json={"code": code})


def enrol(world: World, clock: FixedClock, org: Organisation, user: User,
          headers: dict | None = None) -> Enrolled:
    """Enrol and confirm a TOTP factor for `user`, as they would with their phone."""
    headers = headers or world.headers(org, user)
    begun = begin(world, headers)
    assert begun.status_code == 201, begun.json
    app = Authenticator(begun.json["otpauth_uri"], clock)
    confirmed = confirm(world, headers, begun.json["factor"]["id"], app.code())
    assert confirmed.status_code == 200, confirmed.json
    # The World signs the user in with it from now on.
    world.authenticators[user.id] = app.totp
    return Enrolled(org, user, headers, begun.json["factor"]["id"], app,
                    confirmed.json["recovery_codes"])


def listed(world: World, headers: dict) -> dict:
    """Return the caller's factors as GET /me/factors answers."""
    response = world.client.get(FACTORS, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def audit_rows(world: World, *, user_id: uuid.UUID | None = None,
               action_prefix: str = "mfa.") -> list[AuditEvent]:
    """Return the second-factor audit rows, optionally those one user wrote, oldest first."""
    query = select(AuditEvent).where(AuditEvent.action.startswith(action_prefix))
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    return list(world.session.scalars(query.order_by(AuditEvent.occurred_at, AuditEvent.id)))
