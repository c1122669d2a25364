"""The authenticated caller of a request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from backend.accounts.models import Role


@dataclass(frozen=True)
class Caller:
    """Who is calling: user, organisation, role, and the device and address they call from."""

    user_id: uuid.UUID
    organisation_id: uuid.UUID
    role: Role
    family_id: uuid.UUID | None
    device_id: uuid.UUID | None
    address: str | None
