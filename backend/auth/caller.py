"""The authenticated caller of a request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from backend.accounts.models import Role


@dataclass(frozen=True)
class FactorUse:
    """The second factor a caller last proved: how (totp, recovery_code, webauthn) and when."""

    method: str
    factor_id: uuid.UUID | None
    # None for a process that acts for people in code, not a person's proof: the simulator
    # and the demo's seed (method `simulated`, `demo`), which no request can be.
    proved_at: datetime | None

    @classmethod
    def standing(cls, method: str) -> FactorUse:
        """Return the standing factor of a trusted process acting in code."""
        return cls(method, None, None)


@dataclass(frozen=True)
class Caller:
    """Who is calling: user, organisation, role, and the device and address they call from."""

    user_id: uuid.UUID
    organisation_id: uuid.UUID
    role: Role
    family_id: uuid.UUID | None
    device_id: uuid.UUID | None
    address: str | None
    # The second factor the session last proved, or None: sensitive actions ask for a fresh one.
    factor: FactorUse | None = None
