"""Register, list and revoke the phones whose signatures Vigil trusts."""

from __future__ import annotations

import base64
import binascii
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.accounts.models import Organisation, Role, User
from backend.audit import service as audit
from backend.auth.caller import Caller
from backend.auth.service import revoke_families
from backend.devices.models import Device
from backend.errors import Conflict, InvalidField
from backend.mfa.policy import Action, needs_factor, require_fresh
from backend.runtime import Runtime
from backend.tenancy import hers, owned


def decode_public_key(encoded: str) -> bytes:
    """Return the raw 32-byte Ed25519 key in `encoded` (base64), or refuse it."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField("public_key", "not valid base64") from exc
    if len(raw) != 32:
        raise InvalidField("public_key", "must be a raw 32-byte Ed25519 public key")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidField("public_key", "not an Ed25519 public key") from exc
    return raw


def register(session: Session, rt: Runtime, caller: Caller, *, public_key: str, label: str,
             device_id: uuid.UUID | None) -> Device:
    """Register the caller's phone under its Ed25519 public key."""
    # A registered phone signs custody entries as its nurse: where the organisation asks
    # nurses for a second factor, a password alone must not add one.
    if needs_factor(session.get(Organisation, caller.organisation_id),
                    session.get(User, caller.user_id)):
        require_fresh(session, rt, caller, Action.REGISTER_DEVICE)
    raw = decode_public_key(public_key)
    if session.scalar(select(Device.id).where(Device.public_key == raw)):
        raise Conflict("This public key is already registered.")
    if device_id is not None and session.get(Device, device_id) is not None:
        raise Conflict("A device with this id already exists.", {"id": str(device_id)})
    device = Device(id=device_id or uuid.uuid4(), organisation_id=caller.organisation_id,
                    user_id=caller.user_id, label=label, public_key=raw,
                    registered_at=rt.clock.now())
    session.add(device)
    session.flush()
    audit.record(session, device.registered_at, caller, "device.register", "device", device.id)
    return device


def visible_devices(session: Session, caller: Caller) -> list[Device]:
    """Return the devices the caller may see: all the organisation's, or a nurse's own."""
    query = select(Device).where(Device.organisation_id == caller.organisation_id)
    if caller.role == Role.NURSE:
        query = query.where(Device.user_id == caller.user_id)
    return list(session.scalars(query.order_by(Device.registered_at)))


def revoke(session: Session, rt: Runtime, caller: Caller, device_id: uuid.UUID) -> Device:
    """Revoke a device: its sessions end at once and its signatures stop verifying."""
    device = owned(session, caller, Device, device_id, what="device", nurse_sees=hers("user_id"))
    if device.revoked_at is None:
        now = rt.clock.now()
        device.revoked_at = now
        device.revoked_by_id = caller.user_id
        revoke_families(session, now, reason="device_revoked", device_id=device.id)
        audit.record(session, now, caller, "device.revoke", "device", device.id)
    return device
