"""The phone's clock: its offset from the server's, reported with every sync, and its flag."""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import ValidationError
from sqlalchemy.orm import Session

from backend import bounded, changes
from backend.auth.caller import Caller
from backend.devices.models import Device
from backend.errors import InvalidField
from backend.runtime import Runtime
from backend.tenancy import of_organisation
from safeguards import facts as f

HEADER = "X-Device-Time"


def parse(value: str | None) -> datetime | None:
    """Return the phone's time from the header (ISO 8601 with offset, or epoch milliseconds)."""
    if value is None:
        return None
    try:
        if value.strip().lstrip("-").isdigit():
            moment = datetime.fromtimestamp(int(value) / 1000, UTC)
        else:
            moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidField(HEADER, "an ISO 8601 time with its UTC offset, or epoch milliseconds")
    try:
        return bounded.moment(moment)
    except ValidationError as refused:
        raise InvalidField(HEADER, refused.messages[0]) from None


def observe(session: Session, rt: Runtime, caller: Caller, device_time: datetime | None) -> None:
    """Keep the phone's offset from the server's clock; flag it when beyond policy."""
    if device_time is None or caller.device_id is None:
        return
    now = rt.clock.now()
    device = of_organisation(session, Device, caller.device_id, caller.organisation_id)
    if device is None:
        return
    offset_ms = round((device_time - now).total_seconds() * 1000)
    device.clock_offset_ms, device.clock_reported_at = offset_ms, now
    session.flush()
    changes.facts(session, caller.organisation_id, clocks=(f.DeviceClock(
        device_id=str(device.id), nurse_id=str(device.user_id), events=1,
        max_lead_seconds=0, reported_offset_seconds=int(offset_ms / 1000),
        last_received_at=now),))
